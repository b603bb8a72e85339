#!/usr/bin/env python3
"""What `join.same_node` costs a traced HTTP client: its one trap per request at
`net/http.(*persistConn).roundTrip`, which stores the CLIENT span's context under the connection.
Started by bench/same_node.sh (which builds the programs); writes bench/results/same_node.json and
its section of BENCHMARKS.md (between the `same-node` markers).

Setups, each round in turn (interleaved):
  untraced            bench/goapps/propclient -role client, no gotel (the floor)
  gotel, join off     gotel --node selecting the client, GOTEL_LIBRARIES=http.client
  gotel, join on      the same with GOTEL_LIBRARIES=http.client,join.same_node
The client runs alone on CPU 0; the untraced server, gotel and the OTLP receiver share CPU 1. The
server is not traced, so every stored context waits in the LRU map until it is evicted: the
client's worst case (a traced server only adds a lookup inside its existing span trap).
"""
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import on_off  # noqa: E402
from hooks import write_section  # noqa: E402
from run import BUILD, SIDE_CPU, TARGET_CPU, Sink, gotel_env  # noqa: E402

GOTEL = BUILD / "gotel-same-node"
CLIENT = BUILD / "propclient-same-node"
MODES = ("untraced", "gotel, join off", "gotel, join on")
MARKER = "same-node"


def one_run(args, sink, port, mode):
    ready = BUILD / "same-node.ready"
    ready.unlink(missing_ok=True)
    g, lines = None, []
    if mode != "untraced":
        libraries = "http.client,join.same_node" if mode.endswith("on") else "http.client"
        g, lines = node_gotel(GOTEL, CLIENT, sink, "main.get", libraries, "propclient")
    cmd = ["taskset", "-c", TARGET_CPU, str(CLIENT), "-role", "client", "-url", f"http://127.0.0.1:{port}/item",
           "-c", str(args.connections), "-d", f"{args.seconds}s", "-warmup", "1s", "-wait-file", str(ready)]
    time.sleep(0.5)
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if g is not None:
        wait_attached(g, lines, client, mode)
    ready.write_text("go\n")
    res = json.loads(client.communicate(timeout=300)[0])
    if g is not None:
        res["offered"] = stop_gotel(g, lines)
        res["joined_unit"] = "join.same_node: HTTP/1 server spans join" in "".join(lines)
    return res


def node_gotel(gotel, exe, sink, probes, libraries, service):
    """gotel (`gotel`) in node mode on CPU 1 selecting `exe`, injection off, with `libraries`;
    its stderr lines collected as they come: (process, lines)."""
    env = gotel_env(sink, "http/protobuf", probes, BUILD / f"{exe.name}.watching")
    env.update(GOTEL_PROPAGATION="none", OTEL_SERVICE_NAME=service, GOTEL_LIBRARIES=libraries)
    g = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(gotel), "--node", "--select", f"exe={exe}"],
                         env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(g.stderr), daemon=True).start()
    return g, lines


def wait_attached(g, lines, client, mode):
    """Until gotel `g` (stderr `lines`) attached to `client`; both killed if it does not."""
    deadline = time.time() + 60
    while not any(f"attached pid={client.pid}" in line for line in list(lines)):
        if time.time() > deadline or g.poll() is not None:
            client.kill()
            g.kill()
            raise RuntimeError(f"{mode}: gotel did not attach:\n{''.join(lines)[-3000:]}")
        time.sleep(0.01)


def stop_gotel(g, lines):
    """Stops gotel `g`; the contexts it stored (`same_node_offered` of its session summaries)."""
    g.terminate()
    g.wait(timeout=120)
    time.sleep(0.2)
    return sum(int(x.split("=")[1]) for x in "".join(lines).split() if x.startswith("same_node_offered="))


def render(r):
    m, best, pr = r["meta"], r["best"], r["per_round_ratio_on_off"]
    off = best["gotel, join off"]
    out = ["## 8. Same-node join (`join.same_node`): on vs off", "",
           "```sh", m["command"], "```", "",
           f"* Date: {m['date']}; run took {m['seconds']:.0f} s. Kernel {m['machine']['kernel']}, "
           f"{m['machine']['cpus']} CPUs; {m['machine']['go']}; load average when the run started: "
           f"{m['machine'].get('loadavg', '?')}.",
           f"* `bench/goapps/propclient`: {r['connections']} goroutines sending `GET /item` back to back over kept-alive",
           f"  connections to an untraced server on 127.0.0.1, {r['seconds']} s per run after a 1 s warm-up; the client",
           "  alone on CPU 0, server, gotel (node mode, selecting the client) and the OTLP receiver on CPU 1; gotel",
           f"  traces `main.get` and the CLIENT span. {r['rounds']} interleaved rounds; rows are each setup's best round.", "",
           "| setup | requests/s | p50 ms | p99 ms | requests/s vs join off | per-round ratio (median) | contexts stored |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode in MODES:
        b = best[mode]
        med = {"untraced": r["per_round_ratio_untraced_off"], "gotel, join off": [1.0] * len(pr), "gotel, join on": pr}[mode]
        out.append(f"| {mode} | {b['rps']:,.0f} | {b['p50_ms']:.3f} | {b['p99_ms']:.3f} | {b['rps'] / off['rps']:.3f}x | "
                   f"{statistics.median(med):.3f}x | {b.get('offered', 0):,} |")
    out += ["",
            f"join.same_node costs the traced client {100 * (1 - statistics.median(pr)):.1f}% of its requests/s (per-round "
            f"ratios on/off: {', '.join(f'{x:.3f}' for x in pr)}): {statistics.median(r['per_round_extra_us']):.1f} us of CPU "
            f"per request (per-round median; {1e6 / off['rps']:.0f} us with it off, {1e6 / best['untraced']['rps']:.0f} us "
            "untraced), the trap at `persistConn.roundTrip` and one map update. Off (every gotel outside node mode, or",
            "`GOTEL_LIBRARIES` without it) the program is not loaded or attached and the map has one entry: nothing.",
            "The server side adds no trap: a lookup inside the server span's entry, only when the request has no `traceparent`.",
            *([f"The per-round ratios spread from {min(pr):.2f} to {max(pr):.2f}: the machine was too busy for this run to "
               "resolve a cost of one trap (a few us); run it again on a quiet machine."] if max(pr) - min(pr) > 0.2 else []),
            ""]
    return out


def main():
    a = on_off.args()
    if a.render_only:
        write_section(render(on_off.load("same_node")), MARKER)
        return
    a.seconds, a.rounds, a.connections = (3, 2, 8) if a.quick else (5, 5, 8)
    meta = on_off.start("bench/same_node.sh", a.quick, GOTEL)
    shutil.copy2(BUILD / "propclient", CLIENT)
    sink = Sink()
    server, port = on_off.propclient_server("same-node")
    try:
        runs = on_off.rounds("same-node", a.rounds, MODES, lambda mode: one_run(a, sink, port, mode),
                             lambda res: f"{res['rps']:,.0f} req/s, p50 {res['p50_ms']:.3f} ms, errors {res['errors']}, "
                             f"contexts stored {res.get('offered', 0)}")
    finally:
        server.terminate()
        server.wait()
        sink.stop()
    ratio = lambda num, den: on_off.per_round(runs, num, den, lambda x, y: x["rps"] / y["rps"])  # noqa: E731
    result = {"seconds": a.seconds, "rounds": a.rounds, "connections": a.connections, "runs": runs,
              "best": {m: max(rs, key=lambda x: x["rps"]) for m, rs in runs.items()},
              "per_round_ratio_on_off": ratio("gotel, join on", "gotel, join off"),
              "per_round_ratio_untraced_off": ratio("untraced", "gotel, join off"),
              "per_round_extra_us": on_off.per_round(runs, "gotel, join on", "gotel, join off",
                                                     lambda x, y: 1e6 / x["rps"] - 1e6 / y["rps"])}
    bad = [f"{m} round {i + 1}" for m, rs in runs.items() for i, x in enumerate(rs)
           if x["errors"] or (m.endswith("on") and not x.get("offered")) or (m.endswith("off") and x.get("offered"))]
    on_off.finish("same_node", meta, result, lambda r: write_section(render(r), MARKER), bad, "BENCHMARKS.md section 8")


if __name__ == "__main__":
    main()
