#!/usr/bin/env python3
"""gotel side by side with opentelemetry-go-instrumentation (`go.opentelemetry.io/auto`, the peer
issue #15 compares with): what each costs one net/http server per request, same run. Started by
bench/peer.sh (which builds the programs and the peer); writes bench/results/peer.json and its
section of BENCHMARKS.md (between the `peer` markers).

Setups, each round in turn (bench/on_off.py), for each request shape:
  untraced   bench/goapps/serve, GET /r1 (the handler calls one small function)
  gotel      gotel --pid SERVE, GOTEL_PROBES empty: its built-in units only (the HTTP server span)
  gotel, goroutine parents off   the same with GOTEL_GOROUTINE_PARENTS=off (no runtime.newproc1
             trap: net/http starts a goroutine per request for its background read)
  gotel, paused (its traps only)   gotel attached as in `gotel`, its `PAUSED` map set before the
             warm-up (bench/paired.py's switch): every uprobe program returns at once, so the
             server pays exactly gotel's traps. gotel / this is the issue's floor ratio in server
             CPU, over seconds of load (bench/paired.py measures it in latency, batch by batch).
  peer       the peer's CLI with OTEL_GO_AUTO_TARGET_PID=SERVE, its net/http server probe only
Request shapes (wrk -H): a `traceparent` only (plus wrk's Host), and the same with 20 more
browser-like header lines. The server runs alone on CPU 0; wrk (1 thread, 8 connections), the
tracer and the OTLP receiver (bench/goapps/sink) share CPU 1. The figure: the server's CPU time
(utime + stime of its threads, where the traps' handlers run) per request, and requests/s.

Why the peer runs with one probe: every other probe of v0.24.0 (HTTP client, gRPC, database,
Kafka, the auto SDK) writes into the traced process with `bpf_probe_write_user`, which a kernel in
lockdown (this one) refuses, and the peer then loads nothing at all ("program uprobe_writeSubset:
load program: invalid argument"). Its net/http server probe reads only: the same span gotel's
HTTP server unit makes, an HTTP server span per request with the incoming `traceparent`.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import on_off  # noqa: E402
import paired  # noqa: E402
from hooks import cpu_ns, write_section  # noqa: E402
from run import BUILD, SIDE_CPU, TARGET_CPU, Sink, gotel_env, summary_fields, wait_file, wrk  # noqa: E402

GOTEL = BUILD / "gotel-peer"
PAUSED_MODE = "gotel, paused (its traps only)"
MODES = ("untraced", "gotel", "gotel, goroutine parents off", PAUSED_MODE, "peer")
MARKER = "peer"
PATH = "/r1"  # the handler calls one small function
TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# What a browser adds (bench/goapps/builtins -headers 20 has the same kind of lines).
MORE = [f"X-Header-{i:02}: value-{i:02}-abcdefghijklmnopqrstuvwxyz" for i in range(20)]
SHAPES = {"traceparent only": [TRACEPARENT], "traceparent and 20 more headers": [TRACEPARENT, *MORE]}


def patch(path):
    """Keeps only the net/http server probe in the peer's probe list (see the module doc)."""
    p = Path(path)
    s = p.read_text()
    m = re.search(r"\tp := \[\]probe\.Probe\{\n(.*?)\n\t\}\n", s, re.S)
    if not m or "httpServer.New(c.logger, Version())," not in m.group(1):
        raise SystemExit(f"bench: the peer's probe list is not where it was in v0.24.0 ({path})")
    others = [line.strip().rstrip(",").split("(")[0] for line in m.group(1).splitlines() if "httpServer.New" not in line]
    kept = ("\t// gotel bench/peer.py: the net/http server probe only (the others write with\n"
            "\t// bpf_probe_write_user, which a kernel in lockdown refuses).\n"
            "\tp := []probe.Probe{\n\t\thttpServer.New(c.logger, Version()),\n\t}\n"
            f"\t_ = []any{{{', '.join(others)}}}\n")
    p.write_text(s[:m.start()] + kept + s[m.end():])


def one_run(args, sink, shape, mode, gotel=GOTEL):
    """One server process under `mode`, loaded with requests of `shape`; the gotel modes run
    the binary `gotel` (bench/span_cpu.py compares builds with it)."""
    port_file = BUILD / "peer-serve.port"
    port_file.unlink(missing_ok=True)
    serve = subprocess.Popen(["taskset", "-c", TARGET_CPU, str(BUILD / "serve"), "-port-file", str(port_file)])
    tracer, lines = None, []
    try:
        wait_file(port_file, serve)
        port = int(port_file.read_text())
        before_spans = sink.count()
        if mode.startswith("gotel"):
            ready = BUILD / "peer-gotel.ready"
            ready.unlink(missing_ok=True)
            env = gotel_env(sink, "http/protobuf", "", ready)
            if mode.endswith("parents off"):
                env["GOTEL_GOROUTINE_PARENTS"] = "off"
            tracer = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(gotel), "--pid", str(serve.pid)],
                                      env=env, stderr=subprocess.PIPE, text=True)
            threading.Thread(target=lambda: lines.extend(tracer.stderr), daemon=True).start()
            wait_file(ready, tracer)
            if mode == PAUSED_MODE:
                fd = paired.gotel_map(tracer.pid, "PAUSED")
                paired.set_paused(fd, True)
                os.close(fd)
        elif mode == "peer":
            env = dict(os.environ, OTEL_GO_AUTO_TARGET_PID=str(serve.pid), OTEL_SERVICE_NAME="serve",
                       OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                       OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint("http/protobuf"))
            tracer = subprocess.Popen(["taskset", "-c", SIDE_CPU, args.peer], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=lambda: lines.extend(tracer.stdout), daemon=True).start()
            # The peer says nothing when it is attached: wait until its spans arrive.
            deadline = time.time() + 60
            while sink.count() == before_spans:
                wrk(port, PATH, 1, SHAPES[shape])
                if tracer.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the peer did not trace:\n{''.join(lines)[-3000:]}")
        wrk(port, PATH, 1, SHAPES[shape])  # warm-up: connections, caches, GC pacing
        spans_before, cpu_before = sink.count(), cpu_ns(serve.pid)
        tracer_cpu = cpu_ns(tracer.pid) if tracer else 0
        res = wrk(port, PATH, args.seconds, SHAPES[shape])
        res["server_us"] = (cpu_ns(serve.pid) - cpu_before) / 1000 / res["requests"]
        res["tracer_us"] = (cpu_ns(tracer.pid) - tracer_cpu) / 1000 / res["requests"] if tracer else 0.0
        if mode == PAUSED_MODE:
            res["spans"] = sink.count() - spans_before
        elif tracer is not None:
            res["spans"] = sink.wait_settled(timeout=15) - spans_before
        return res
    finally:
        for p in (tracer, serve):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        if mode.startswith("gotel") and "res" in locals():
            time.sleep(0.2)
            res["summary"] = summary_fields("".join(lines))


def invalid(mode, x):
    """Whether a gotel run is invalid: spans lost when it ran, calls traced when it was paused."""
    if mode == PAUSED_MODE:
        return x.get("summary", {}).get("calls", 1) != 0 or x["spans"] != 0
    return lost(x)


def lost(x):
    """Whether gotel lost spans in run `x`: its own counters (every span it made exported, none
    dropped), or the receiver's count far below the requests (it counts whole export batches of
    512, so the timed window's edges move it by a batch either way)."""
    sm = x.get("summary", {})
    dropped = sum(sm.get(k, 0) for k in ("lost_ring_buffer_full", "lost_queue_full", "lost_export_failed"))
    return dropped > 0 or sm.get("exported") != sm.get("spans") or x["spans"] < x["requests"] - 1024


def added(runs):
    """gotel's added server CPU per request over the peer's (medians over rounds)."""
    med = {mode: statistics.median(x["server_us"] for x in rs) for mode, rs in runs.items()}
    return (med["gotel"] - med["untraced"]) / (med["peer"] - med["untraced"])


def over_traps(runs):
    """gotel's server CPU per request over that with its programs paused (medians over rounds)."""
    med = {mode: statistics.median(x["server_us"] for x in rs) for mode, rs in runs.items()}
    return med["gotel"] / med[PAUSED_MODE] if PAUSED_MODE in med else None


def render(r):
    m = r["meta"]
    out = ["### Side by side with opentelemetry-go-instrumentation (bench/peer.py)", "",
           "What each costs one net/http server per request, same run: `bench/goapps/serve` (`GET /r1`) under wrk",
           "(1 thread, 8 connections) untraced, traced by gotel's built-in HTTP server span (`GOTEL_PROBES` empty), the same",
           "with goroutine parents off (`GOTEL_GOROUTINE_PARENTS=off`: no trap at `runtime.newproc1`, which net/http calls",
           "once per request for its background read; the README says what that gives up), and",
           f"traced by the peer, `go.opentelemetry.io/auto` {r['peer_version']} built here from its module, with its net/http",
           "server probe only (every other probe of it writes into the process with `bpf_probe_write_user`, which this",
           "kernel in lockdown refuses, and the peer then loads nothing). The server alone on CPU 0; wrk, the tracer and the",
           "OTLP receiver on CPU 1. *server CPU*: utime + stime of the server's threads (where the traps' handlers run)",
           "per request; *tracer CPU*: the tracer's own process per request. *gotel, paused*: gotel attached with its",
           "`PAUSED` map set (every uprobe program returns at once): the server pays gotel's traps and nothing else, the",
           "floor of the issue's ratio, here in server CPU over seconds of load. It overstates gotel's share: CPU 1",
           "(wrk, the tracer, the receiver) saturates first when gotel's user space runs there, the server then idles",
           "between requests (fewer requests per wake-up, more CPU each), which it does not when paused (*server CPU",
           "busy*: requests/s times CPU per request). bench/paired.py, one CPU for client and server, is the measure of the floor ratio.", "",
           "```sh", m["command"], "```", "",
           f"* Date: {m['date']}; run took {m['seconds']:.0f} s. Kernel {m['machine']['kernel']}, "
           f"{m['machine']['cpus']} CPUs; {m['machine']['go']}; load average when the run started: "
           f"{m['machine'].get('loadavg', '?')}. {r['rounds']} interleaved rounds of {r['seconds']} s; medians over rounds.", "",
           "| requests | setup | server CPU us per request | added over untraced | requests/s | server CPU busy | tracer CPU us per request | spans per request |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for shape, runs in r["shapes"].items():
        med = {mode: {k: statistics.median(x[k] for x in rs) for k in ("server_us", "rps", "tracer_us")}
               for mode, rs in runs.items()}
        base = med["untraced"]["server_us"]
        for mode in (m for m in MODES if m in runs):
            v = med[mode]
            spans = statistics.median(x["spans"] / x["requests"] for x in runs[mode]) if mode != "untraced" else None
            out.append(f"| {shape} | {mode} | {v['server_us']:.1f} | "
                       + ("—" if mode == "untraced" else f"{v['server_us'] - base:.1f} us") + f" | {v['rps']:,.0f} | "
                       + f"{v['rps'] * v['server_us'] / 1e4:.0f}% | "
                       + ("—" if mode == "untraced" else f"{v['tracer_us']:.1f}") + " | "
                       + ("—" if spans is None else f"{spans:.2f}") + " |")
        out.append(f"| {shape} | gotel / peer, added server CPU | **{added(runs):.2f}x** | | | | | |")
        if over_traps(runs) is not None:
            out.append(f"| {shape} | gotel / its traps only, server CPU | **{over_traps(runs):.3f}x** | | | | | |")
    out += ["", "*spans per request*: spans the receiver got over the requests wrk counted in the timed window (the",
            "receiver counts whole export batches, so the window's edges move it by a few percent either way). A gotel run",
            "that dropped a span (its own counters) is invalid; the peer's figures are shown as they come."]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--peer", help="the peer's CLI (bench/peer.sh builds it)")
    ap.add_argument("--patch", help="patch the peer's instrumentation.go at this path and exit (bench/peer.sh)")
    a = ap.parse_args()
    if a.patch:
        patch(a.patch)
        return
    if a.render_only:
        write_section(render(on_off.load("peer")), MARKER)
        return
    a.seconds, a.rounds = (3, 2) if a.quick else (5, 5)
    meta = on_off.start("bench/peer.sh", a.quick, GOTEL)
    sink = Sink()
    shapes = {}
    try:
        for shape in SHAPES:
            shapes[shape] = on_off.rounds(f"peer, {shape}", a.rounds, MODES, lambda mode: one_run(a, sink, shape, mode),
                                          lambda res: f"server {res['server_us']:.1f} us/request, {res['rps']:,.0f} req/s, "
                                          f"tracer {res['tracer_us']:.1f} us/request, spans {res.get('spans', '-')}, "
                                          f"errors {res['errors']}")
    finally:
        sink.stop()
    version = re.search(r"otelauto-httpserver-(v[\d.]+)", a.peer or "")
    result = {"seconds": a.seconds, "rounds": a.rounds, "peer_version": version.group(1) if version else "?",
              "shapes": shapes}
    bad = [f"{shape}: {mode} round {i + 1}: {x['errors']} errors, {x.get('spans')} spans for {x['requests']} requests"
           for shape, runs in shapes.items() for mode, rs in runs.items() for i, x in enumerate(rs)
           if x["errors"] or (mode.startswith("gotel") and invalid(mode, x))]
    on_off.finish("peer", meta, result, lambda r: write_section(render(r), MARKER), bad, "its BENCHMARKS.md section")


if __name__ == "__main__":
    main()
