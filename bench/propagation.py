#!/usr/bin/env python3
"""What `GOTEL_PROPAGATION=inject` through the socket costs a traced HTTP client:
requests/s and latency with injection on vs off, measured in the same run, interleaved over rounds.
Started by bench/propagation.sh (which builds the programs); writes bench/results/propagation.json
and its section of BENCHMARKS.md (between the `propagation` markers).

Setups, each round in turn:
  untraced              bench/goapps/propclient -role client, no gotel (the floor)
  gotel, inject off     gotel --pid CLIENT, GOTEL_PROPAGATION=none: uprobes, CLIENT spans, export
  gotel, inject on      the same with GOTEL_PROPAGATION=inject: + the dial uprobe, SOCK_OPS on the
                        client's cgroup, SK_MSG on every write of its enrolled sockets, 70 bytes
                        pushed into each request
The client runs alone on CPU 0 in a cgroup of its own (the one gotel's SOCK_OPS attaches to); the
server (untraced, counts the traceparent values it receives), gotel and the OTLP receiver share
CPU 1. The figure of interest is the ratio inject on / inject off; both pay the same uprobes.
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import on_off  # noqa: E402
from hooks import write_section  # noqa: E402
from run import BUILD, SIDE_CPU, TARGET_CPU, Sink, gotel_env, log, summary_fields, wait_file  # noqa: E402

GOTEL = BUILD / "gotel-propagation"
MODES = ("untraced", "gotel, inject off", "gotel, inject on")
MARKER = "propagation"


def cgroup_dir():
    """A cgroup v2 directory for the client (made here, removed at the end)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "cgroup2":
            d = Path(f[1]) / f"gotel-bench-propagation-{os.getpid()}"
            d.mkdir(exist_ok=True)
            return d
    raise SystemExit("bench: no cgroup2 mount: the socket path needs cgroup v2")


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


def one_run(args, sink, cg, port, mode):
    """One client process under `mode`; returns its figures and what the server saw."""
    ready = BUILD / "propclient.ready"
    ready.unlink(missing_ok=True)
    cmd = ["taskset", "-c", TARGET_CPU, str(BUILD / "propclient"), "-role", "client",
           "-url", f"http://127.0.0.1:{port}/item", "-c", str(args.connections),
           "-d", f"{args.seconds}s", "-warmup", "1s"]
    if mode != "untraced":
        cmd += ["-wait-file", str(ready)]
    before = stats(port)
    join = lambda: (cg / "cgroup.procs").write_text("0")  # noqa: E731
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=join)
    g, err_lines, reader = None, [], None
    if mode != "untraced":
        env = gotel_env(sink, "http/protobuf", "main.get", ready)
        env.update(GOTEL_PROPAGATION="inject" if mode.endswith("on") else "none", OTEL_SERVICE_NAME="propclient")
        g = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(GOTEL), "--pid", str(client.pid)],
                             env=env, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: err_lines.extend(g.stderr), daemon=True)
        reader.start()
        try:
            wait_file(ready, g)
        except RuntimeError:
            for proc in (g, client):
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            raise RuntimeError(f"{mode}: gotel did not attach; its log:\n{''.join(err_lines)[-3000:]}") from None
    out = client.communicate(timeout=300)[0]
    res = json.loads(out)
    if g is not None:
        g.wait(timeout=120)
        reader.join(timeout=5)
        text = "".join(err_lines)
        res["summary"] = summary_fields(text)
        res["coverage"] = next((line.split("GOTEL_PROPAGATION=inject: ", 1)[1] for line in text.splitlines()
                                if "GOTEL_PROPAGATION=inject: " in line and "HTTP/1.x" in line), None)
        res["socket"] = next((dict(summary_fields(line.replace("propagation through the socket", "session summary")))
                              for line in text.splitlines() if "propagation through the socket" in line), {})
        if g.returncode != 0:
            res["gotel_stderr_tail"] = text[-1500:]
    after = stats(port)
    res["server"] = {k: after[k] - before[k] for k in after}
    return res


def render(r):
    """The markdown section (list of lines) from a result."""
    m = r["meta"]
    best = r["best"]
    off, on = best["gotel, inject off"], best["gotel, inject on"]
    pr = r["per_round_ratio_on_off"]
    out = ["## 7. Trace context through the socket: injection on vs off", "",
           "```sh", m["command"], "```", "",
           f"* Date: {m['date']}; run took {m['seconds']:.0f} s. Kernel {m['machine']['kernel']}, "
           f"{m['machine']['cpus']} CPUs; {m['machine']['go']}; gotel {m['machine']['gotel_commit']}.",
           f"* Load average when the run started: {m['machine']['loadavg']}.",
           *([f"* gotel's start-up line (inject on): `{r['coverage']}`."] if r.get("coverage") else []),
           f"* `bench/goapps/propclient`: {r['connections']} goroutines, each sending `GET /item` back to back over its own",
           f"  kept-alive connection to an untraced net/http server on 127.0.0.1, {r['seconds']} s per run after a 1 s",
           "  warm-up; the client alone on CPU 0 in a cgroup of its own, server, gotel and the OTLP receiver on",
           f"  CPU 1. gotel traces `main.get` (the client's request function) plus its built-in CLIENT span.",
           f"  {r['rounds']} rounds, each running every setup once, in turn; each row is the setup's best round",
           "  (highest requests/s), the ratios beside it are per round (median).", "",
           "| setup | requests/s | p50 ms | p99 ms | requests/s vs inject off | per-round ratio (median) | requests that arrived with one `traceparent` / none | failed |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode in MODES:
        b = best[mode]
        ratio = f"{b['rps'] / off['rps']:.3f}x"
        med = {"untraced": r["per_round_ratio_untraced_off"], "gotel, inject off": [1.0] * len(pr),
               "gotel, inject on": pr}[mode]
        srv = b["server"]
        out.append(f"| {mode} | {b['rps']:,.0f} | {b['p50_ms']:.3f} | {b['p99_ms']:.3f} | {ratio} | "
                   f"{statistics.median(med):.3f}x | {srv['tp1']:,} / {srv['tp0']:,} | {b['errors']} |")
    out += ["",
            f"Injection on costs the traced client {100 * (1 - statistics.median(pr)):.1f}% of its requests/s "
            f"(per-round ratios on/off: {', '.join(f'{x:.3f}' for x in pr)}); p50 {on['p50_ms']:.3f} vs "
            f"{off['p50_ms']:.3f} ms, p99 {on['p99_ms']:.3f} vs {off['p99_ms']:.3f} ms (best rounds).",
            "The client is CPU-bound on CPU 0, so 1 / (requests/s) is its CPU time per request: injection adds "
            f"{statistics.median(r['per_round_extra_us']):.0f} us per request (per-round median; "
            f"{1e6 / off['rps']:.0f} us with injection off, {1e6 / best['untraced']['rps']:.0f} us untraced): the uprobe on",
            "`net/http.(*Request).write` that stores the context, and the SK_MSG program on each write of an enrolled",
            "socket (the `tcp_bpf` send path, pull and push of 70 bytes).",
            f"gotel's socket counters over the inject-on runs: {json.dumps(r['socket_totals'])}.",
            "The server counts the `traceparent` values of every request it received (warm-up included):",
            "with injection on each request must carry exactly one, with it off none."]
    return out


def main():
    a = on_off.args()
    if a.render_only:
        write_section(render(on_off.load("propagation")), MARKER)
        return
    a.seconds, a.rounds, a.connections = (3, 2, 8) if a.quick else (5, 5, 8)
    meta = on_off.start("bench/propagation.sh", a.quick, GOTEL)
    sink = Sink()
    cg = cgroup_dir()
    server, port = on_off.propclient_server("propagation")

    def describe(res):
        if "gotel_stderr_tail" in res:
            log(f"gotel exited non-zero:\n{res['gotel_stderr_tail']}")
        return (f"{res['rps']:,.0f} req/s, p50 {res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms, errors {res['errors']}, "
                f"server saw {res['server']}" + (f", socket {res['socket']}" if res.get("socket") else ""))

    try:
        runs = on_off.rounds("propagation", a.rounds, MODES, lambda mode: one_run(a, sink, cg, port, mode), describe)
    finally:
        server.terminate()
        server.wait()
        sink.stop()
        # The last client leaves the cgroup a moment after it is reaped.
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    ratio = lambda num, den: on_off.per_round(runs, num, den, lambda x, y: x["rps"] / y["rps"])  # noqa: E731
    socket_totals = {}
    for x in runs["gotel, inject on"]:
        for k, v in x.get("socket", {}).items():
            socket_totals[k] = socket_totals.get(k, 0) + v
    result = {"seconds": a.seconds, "rounds": a.rounds, "connections": a.connections, "runs": runs,
              "best": {m: max(rs, key=lambda x: x["rps"]) for m, rs in runs.items()},
              "per_round_ratio_on_off": ratio("gotel, inject on", "gotel, inject off"),
              "per_round_ratio_untraced_off": ratio("untraced", "gotel, inject off"),
              "socket_totals": socket_totals,
              "per_round_extra_us": on_off.per_round(runs, "gotel, inject on", "gotel, inject off",
                                                     lambda x, y: 1e6 / x["rps"] - 1e6 / y["rps"]),
              "coverage": next((x["coverage"] for x in runs["gotel, inject on"] if x.get("coverage")), None)}
    # The run is only valid if injection happened exactly when it should.
    bad = [f"{m} round {i + 1}: server saw {x['server']}, errors {x['errors']}"
           for m, rs in runs.items() for i, x in enumerate(rs)
           if x["errors"] or x["server"]["tp_many"]
           or (m.endswith("on") and x["server"]["tp0"]) or (not m.endswith("on") and x["server"]["tp1"])]
    on_off.finish("propagation", meta, result, lambda r: write_section(render(r), MARKER), bad,
                  "BENCHMARKS.md section 7")


if __name__ == "__main__":
    main()
