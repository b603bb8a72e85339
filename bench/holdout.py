#!/usr/bin/env python3
"""What gotel's built-in HTTP server span costs a server nobody here wrote: Caddy (v2.11.9, from
tools/build-thirdparty.sh's cache) answering `caddy respond` on 127.0.0.1, and a kept-alive Go
client (bench/goapps/hit) sending sequential GETs with a traceparent, both on CPU 0 (so every
trap a request causes is in its time); the floor tool and gotel on CPU 1. Columns as in
bench/hooks.py: untraced; *floor: span* (bare traps at `net/http.serverHandler.ServeHTTP`'s
entry and RETs, placed and attached as gotel places them); *floor: all gotel's traps* (plus
the RETs of `runtime.newproc1`); gotel (built-in spans only). Rounds are interleaved; each
figure is the best of its rounds. Prints a Markdown table. Root only (uprobes).

    bench/holdout.py [--rounds 7] [--requests 3000] [--gotel target/release/gotel] [--caddy PATH]
"""
import argparse
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from hooks import BUILD, NEWPROC, ROOT, SERVE, SIDE_CPU, TARGET_CPU, build, gotel_env, log, start_floors, wait_for

KINDS = ["untraced", "floor: span", "floor: all gotel's traps", "gotel"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_caddy(caddy, port):
    """`caddy respond` on 127.0.0.1:`port`, on the target CPU, once it accepts connections."""
    server = subprocess.Popen(["taskset", "-c", TARGET_CPU, caddy, "respond", "--listen", f"127.0.0.1:{port}", "hello"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("caddy did not listen")
            time.sleep(0.05)


def one(kind, caddy, gotel, requests):
    """ns per request of one run under `kind`."""
    port = free_port()
    server = start_caddy(caddy, port)
    side = []
    try:
        floors = {"floor: span": [(SERVE, True, True)],
                  "floor: all gotel's traps": [(SERVE, True, True), (NEWPROC, False, True)]}.get(kind, [])
        side, readies = start_floors(caddy, server.pid, floors, True, tag="holdout-floor")
        if kind == "gotel":
            ready = BUILD / "holdout-gotel.ready"
            ready.unlink(missing_ok=True)
            side.append(subprocess.Popen(["taskset", "-c", SIDE_CPU, gotel, "--pid", str(server.pid)],
                                         env=gotel_env({"GOTEL_READY_FILE": str(ready)}),
                                         stderr=subprocess.DEVNULL))
            readies.append(ready)
        for r in readies:
            wait_for(r, [server, *side])
        out = subprocess.run(["taskset", "-c", TARGET_CPU, str(BUILD / "hit"), "-url", f"http://127.0.0.1:{port}/",
                              "-n", str(requests)], capture_output=True, text=True, check=True).stdout
        return json.loads(out)["ns"]
    finally:
        for p in [*side, server]:
            p.terminate()
        for p in [*side, server]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--gotel", default=str(ROOT / "target" / "release" / "gotel"))
    ap.add_argument("--caddy", default="/var/cache/gotel/caddy-2.11.9/caddy")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("holdout: must run as root (uprobes)")
    build(("hit", "floor"))
    best = {}
    for r in range(a.rounds):
        for kind in KINDS:
            ns = one(kind, a.caddy, a.gotel, a.requests)
            best[kind] = min(ns, best.get(kind, ns))
            log(f"round {r + 1}/{a.rounds}: caddy: {kind}: {ns / 1000:.2f} us")
    us = {k: v / 1000 for k, v in best.items()}
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end: {load}; "
          f"best of {a.rounds} interleaved rounds, {a.requests} requests each.")
    print("\n| us per request | " + " | ".join(KINDS) + " | gotel / floor (all traps) | gotel / floor (span) |")
    print("| --- " * (len(KINDS) + 3) + "|")
    print("| Caddy `respond`, Go client with a traceparent | " + " | ".join(f"{us[k]:.2f}" for k in KINDS)
          + f" | {us['gotel'] / us['floor: all gotel' + chr(39) + 's traps']:.2f}x | {us['gotel'] / us['floor: span']:.2f}x |")


if __name__ == "__main__":
    main()
