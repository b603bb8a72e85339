#!/usr/bin/env python3
"""Runs every benchmark measurement and writes bench/results/*.json; bench/report.py turns
them into BENCHMARKS.md. Started by bench/run.sh, which builds the programs first.

Layout on the 2-CPU machine: the measured Go program runs on CPU 0 (taskset); gotel, the OTLP
receiver, the floor tool and wrk run on CPU 1, so what a traced call costs the target shows as
time on CPU 0 and gotel's own work is measured separately (its CPU time and RSS).
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "bench" / ".build"
RESULTS = ROOT / "bench" / "results"
# A private copy, taken when the run starts: a rebuild of target/ during the run must not change
# the binary half-way through.
GOTEL_SRC = Path(os.environ.get("GOTEL_BIN", ROOT / "target" / "release" / "gotel"))
GOTEL = BUILD / "gotel"
TARGET_CPU, SIDE_CPU = "0", "1"

SPECS = {
    "gotel, 0 attributes": "main.work",
    "gotel, 2 attributes": "main.work(id=id, name=name)",
    "gotel, 8 attributes": "main.work(id=id, name=name, customer=o.Customer.Name, note=o.Note, "
    "qty=qty, urgent=urgent, tag=tag, items=len(items))",
}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers


class Sink:
    """bench/goapps/sink: counts spans received over OTLP/HTTP and OTLP/gRPC."""

    def __init__(self):
        port_file = BUILD / "sink.port"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SIDE_CPU, str(BUILD / "sink"), "-port-file", str(port_file)],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(200):
            if port_file.exists():
                break
            time.sleep(0.02)
        self.http, self.grpc = (int(p) for p in port_file.read_text().split())

    def endpoint(self, protocol):
        return f"http://127.0.0.1:{self.grpc if protocol == 'grpc' else self.http}"

    def count(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/count", timeout=5) as r:
            return json.loads(r.read())["spans"]

    def wait_settled(self, expect=None, timeout=15.0):
        """Spans received, once the count stops moving (or reaches `expect`)."""
        last, since = -1, time.time()
        deadline = time.time() + timeout
        while time.time() < deadline:
            n = self.count()
            if expect is not None and n >= expect:
                return n
            if n != last:
                last, since = n, time.time()
            elif time.time() - since > 1.0:
                return n
            time.sleep(0.1)
        return self.count()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every 50 ms; keeps the last VmHWM (peak)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.hwm, self.stop_flag = pid, [], 0, False

    def run(self):
        while not self.stop_flag:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            f = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", status, re.M))
            if "VmRSS" in f:
                self.samples.append(int(f["VmRSS"]))
                self.hwm = max(self.hwm, int(f.get("VmHWM", 0)))
            time.sleep(0.05)

    def result(self):
        self.stop_flag = True
        s = self.samples
        steady = statistics.median(s[len(s) // 2:]) if s else 0
        return {"peak_rss_kib": self.hwm, "steady_rss_kib": steady}


def cpu_seconds(pid):
    """utime + stime of a live process, in seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def summary_fields(text):
    """key=value pairs of gotel's "session summary" log line."""
    for line in text.splitlines():
        if "session summary" in line:
            clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", clean)}
    return {}


def gotel_env(sink, protocol, probes, ready):
    env = dict(os.environ)
    env.update(
        GOTEL_PROBES=probes,
        GOTEL_READY_FILE=str(ready),
        GOTEL_LOG="info",
        NO_COLOR="1",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint(protocol),
    )
    return env


def wait_file(path, proc=None, timeout=60):
    deadline = time.time() + timeout
    while not Path(path).exists():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {path} appeared")
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {path}")
        time.sleep(0.005)


# ---------------------------------------------------------------- 1. cost per traced call


def run_loop(kind, calls, sink=None, protocol="http/protobuf", spec=None):
    """One run of bench/goapps/loop on CPU 0 under `kind` of instrumentation."""
    ready = BUILD / "loop.ready"
    ready.unlink(missing_ok=True)
    cmd = ["taskset", "-c", TARGET_CPU, str(BUILD / "loop"), "-n", str(calls)]
    if kind == "none":
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out)
    loop = subprocess.Popen(cmd + ["-wait-file", str(ready)], stdout=subprocess.PIPE, text=True)
    extra = {}
    if kind.startswith("floor"):
        floor = subprocess.Popen(
            ["taskset", "-c", SIDE_CPU, str(BUILD / "floor"), "-bin", str(BUILD / "loop"), "-sym", "main.work",
             "-pid", str(loop.pid), "-ready", str(ready)] + (["-ret"] if kind == "floor-ret" else []),
            stdout=subprocess.PIPE, text=True,
        )
        out = loop.communicate(timeout=600)[0]
        extra = json.loads(floor.communicate(timeout=30)[0] or "{}")
    else:
        before = sink.count()
        g = subprocess.Popen(
            ["taskset", "-c", SIDE_CPU, str(GOTEL), "--pid", str(loop.pid)],
            env=gotel_env(sink, protocol, spec, ready), stderr=subprocess.PIPE, text=True,
        )
        rss = RssSampler(g.pid)
        rss.start()
        t0 = time.time()
        err_lines = []
        reader = threading.Thread(target=lambda: err_lines.extend(g.stderr), daemon=True)
        reader.start()
        wait_file(ready, g)
        extra["attach_seconds"] = time.time() - t0
        out = loop.communicate(timeout=900)[0]
        cpu = cpu_seconds(g.pid)
        g.wait(timeout=120)
        reader.join(timeout=5)
        extra.update(rss.result())
        extra["gotel_cpu_seconds"] = cpu
        extra["summary"] = summary_fields("".join(err_lines))
        extra["received"] = sink.wait_settled(before + calls, timeout=20) - before
        extra["protocol"] = protocol
        if not extra["summary"]:
            extra["stderr_tail"] = "".join(err_lines[-5:])
    res = json.loads(out)
    res.update(extra)
    return res


def bench_cost(args, sink):
    calls = args.calls
    kinds = [("no probe", "none", None), ("bare uprobe, entry", "floor-entry", None),
             ("bare uprobe, entry + RET", "floor-ret", None)]
    kinds += [(name, "gotel", spec) for name, spec in SPECS.items()]
    runs = {name: [] for name, _, _ in kinds}
    for r in range(args.rounds):
        for name, kind, spec in kinds:
            n = calls * 20 if kind == "none" else calls
            res = run_loop(kind, n, sink, args.protocol, spec)
            runs[name].append(res)
            log(f"cost round {r + 1}/{args.rounds}: {name}: {res['ns_per_call']:.0f} ns/call"
                + (f", spans received {res['received']}/{n}" if "received" in res else ""))
    return {"calls": calls, "rounds": args.rounds, "protocol": args.protocol, "runs": runs}


# ---------------------------------------------------------------- 2. no loss at full speed


def bench_fast_loop(args, sink):
    out = []
    for protocol in ("http/protobuf", "grpc"):
        res = run_loop("gotel", args.fast_calls, sink, protocol, "main.work")
        s = res.get("summary", {})
        res["lost"] = args.fast_calls - res["received"]
        log(f"fast loop ({protocol}): {args.fast_calls} calls, {res['received']} spans received, summary {s}")
        out.append(res)
    return out


# ---------------------------------------------------------------- 3. a real service


def wrk(port, path, seconds, headers=()):
    """wrk on CPU 1 (1 thread, 8 connections) against `path`, each request with `headers`."""
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing: apt-get install wrk (bench/run.sh and bench/peer.sh install it)")
    extra = [arg for h in headers for arg in ("-H", h)]
    out = subprocess.run(
        ["taskset", "-c", SIDE_CPU, "wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", *extra,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout

    def dur(s):
        v, unit = re.match(r"([\d.]+)(\w+)", s).groups()
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    pct = {p: dur(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": pct.get("50"), "p75_ms": pct.get("75"), "p90_ms": pct.get("90"), "p99_ms": pct.get("99"),
        # Socket errors and answers other than 2xx/3xx.
        "errors": sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        + (int(non2xx.group(1)) if non2xx else 0),
    }


def service_round(args, sink, mode, paths, probes):
    """One process of bench/goapps/serve under `mode`, every path loaded once."""
    port_file = BUILD / "serve.port"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ)
    cmd = ["taskset", "-c", TARGET_CPU, str(BUILD / "serve"), "-port-file", str(port_file)]
    if mode == "otel-go-sdk":
        cmd.append("-sdk")
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint("http/protobuf"), OTEL_SERVICE_NAME="serve")
    serve = subprocess.Popen(cmd, env=env)
    wait_file(port_file, serve)
    port = int(port_file.read_text())
    g, err_lines, reader = None, [], None
    if mode.startswith("gotel"):
        ready = BUILD / "serve.ready"
        ready.unlink(missing_ok=True)
        genv = gotel_env(sink, args.protocol, probes, ready)
        if mode == "gotel-steps-only":
            genv["GOTEL_LIBRARIES"] = "none"  # no built-in HTTP server span: the N step spans only
        g = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(GOTEL), "--pid", str(serve.pid)],
                             env=genv, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: err_lines.extend(g.stderr), daemon=True)
        reader.start()
        wait_file(ready, g)
    before = sink.count()
    res = {}
    for path, n in paths:
        wrk(port, path, 1)  # warm-up: connections, caches, GC pacing
        res[path] = wrk(port, path, args.service_seconds)
        r = res[path]
        log(f"service {mode} {path}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms")
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=30)
    if g is not None:
        g.wait(timeout=60)
        reader.join(timeout=5)
        res["summary"] = summary_fields("".join(err_lines))
    if mode != "untraced":
        res["received"] = sink.wait_settled(timeout=15) - before
    return res


def bench_service(args, sink):
    """Rounds of every mode in turn (interleaved, so load from elsewhere hits all modes alike);
    per mode and path the best round (highest requests/s) is reported."""
    paths = [("/r1", 1), ("/r5", 5), ("/r20", 20)]
    probes = ";".join(f"main.step{i:02d}" for i in range(1, 21))
    modes = ("untraced", "gotel", "gotel-steps-only", "otel-go-sdk")
    rounds = {m: [] for m in modes}
    for r in range(args.service_rounds):
        for mode in modes:
            log(f"service round {r + 1}/{args.service_rounds}: {mode}")
            rounds[mode].append(service_round(args, sink, mode, paths, probes))
    results = {}
    for mode, rs in rounds.items():
        best = {path: max((x[path] for x in rs), key=lambda w: w["rps"]) for path, _ in paths}
        for path, _ in paths:
            best[path] = dict(best[path], rps_rounds=[x[path]["rps"] for x in rs])
        if mode != "untraced":
            best["received"] = sum(x.get("received", 0) for x in rs)
            # Spans expected: wrk's completed requests (all rounds, warm-ups excluded) x spans per request.
            best["requests_all_rounds"] = {path: sum(x[path]["requests"] for x in rs) for path, _ in paths}
        if mode.startswith("gotel"):
            best["summary"] = {k: sum(x.get("summary", {}).get(k, 0) for x in rs)
                               for k in ("calls", "spans", "exported", "lost_queue_full", "lost_ring_buffer_full")}
        results[mode] = best
    return {"seconds": args.service_seconds, "rounds": args.service_rounds, "connections": 8,
            "protocol_gotel": args.protocol, "protocol_sdk": "http/protobuf", "modes": results}


# ---------------------------------------------------------------- 4. capacity


def bench_capacity(args, sink):
    out = {}
    # gotel's default protocol in full; gRPC for comparison.
    plans = [("http/protobuf", "0,2,8", "0,8", args.capacity_spans), ("grpc", "0,8", "0", args.capacity_spans // 2)]
    for protocol, attrs, sweep, spans in plans:
        path = RESULTS / f"capacity-{protocol.replace('/', '-')}.json"
        env = dict(os.environ)
        env.update(
            BENCH_GO_BINARY=str(BUILD / "loop"), BENCH_OUT=str(path), BENCH_SPANS=str(spans),
            BENCH_SWEEP_SECS=str(args.sweep_seconds), BENCH_RATES=args.rates, BENCH_ATTRS=attrs,
            BENCH_SWEEP_ATTRS=sweep, BENCH_CPU=TARGET_CPU, BENCH_PRODUCER_CPU=SIDE_CPU,
            OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint(protocol),
        )
        log(f"capacity ({protocol}): {spans} spans per throughput run, sweep {args.rates}")
        t0 = time.time()
        subprocess.run([os.environ["PIPELINE_BENCH"]], env=env, check=True)
        out[protocol] = json.loads(path.read_text())
        out[protocol]["wall_seconds"] = time.time() - t0
    # Single OTLP/HTTP exports, back to back: does any stall (the blocking-client stall that lost
    # spans before the exporter moved to the async client)?
    path = RESULTS / "export-stall.json"
    env = dict(os.environ)
    env.update(BENCH_OUT=str(path), BENCH_EXPORTS=str(args.stall_exports), BENCH_DEADLINE_SECS="45",
               OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint("http/protobuf"))
    log(f"export stalls: {args.stall_exports} OTLP/HTTP exports of 512 spans per mode")
    subprocess.run(["taskset", "-c", TARGET_CPU, os.environ["EXPORT_STALL_BENCH"]], env=env, check=True)
    out["export_stall"] = json.loads(path.read_text())
    return out


# ---------------------------------------------------------------- 5. startup


def bench_startup(args, sink):
    big = Path(os.environ["BENCH_BIG_BINARY"])
    runs = []
    # One function with DWARF-resolved attributes, plus gotel's built-in HTTP instrumentations.
    default = ("main.F1(name=r.Name, s=s, k=k)" if big.name.startswith("bigbin")
               else "net/http.(*Client).do(method=req.Method, path=req.URL.Path)")
    spec = os.environ.get("BENCH_BIG_PROBES", default)
    for i in range(args.startup_runs):
        ready = BUILD / "big.ready"
        ready.unlink(missing_ok=True)
        env = gotel_env(sink, args.protocol, spec, ready)
        t0 = time.time()
        g = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(GOTEL), "--", str(big)],
                             env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        rss = RssSampler(g.pid)
        rss.start()
        err_lines = []
        reader = threading.Thread(target=lambda: err_lines.extend(g.stderr), daemon=True)
        reader.start()
        try:
            wait_file(ready, g, timeout=120)
            attached = time.time() - t0
        except RuntimeError as e:
            attached = None
            log(f"startup: {e}")
        time.sleep(1.0)
        r = rss.result()
        try:
            after = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{g.pid}/status").read_text()).group(1))
        except (OSError, AttributeError):
            after = None
        g.send_signal(signal.SIGTERM)
        try:
            g.wait(timeout=30)
        except subprocess.TimeoutExpired:
            g.kill()
            g.wait()
        reader.join(timeout=5)
        text = "".join(err_lines)
        m = re.search(r"attached.*?\bms=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", text))
        runs.append({"seconds_to_attached": attached, "gotel_logged_ms": int(m.group(1)) if m else None,
                     "peak_rss_kib": r["peak_rss_kib"], "rss_1s_after_attach_kib": after,
                     "log_tail": None if attached else text[-800:]})
        log(f"startup run {i + 1}: attached after {attached and round(attached, 3)} s, peak RSS {r['peak_rss_kib']} KiB")
    sections = subprocess.run(["readelf", "-SW", str(big)], capture_output=True, text=True).stdout
    dwarf = sum(int(m.group(1), 16) for m in re.finditer(r"\.(?:z?debug_\w+)\s+\w+\s+\w+\s+\w+\s+(\w+)", sections))
    funcs = subprocess.run([os.environ.get("GO", "go"), "tool", "nm", str(big)], capture_output=True, text=True).stdout
    return {"binary": str(big), "size_bytes": big.stat().st_size, "dwarf_bytes": dwarf,
            "text_symbols": sum(1 for l in funcs.splitlines() if re.search(r"\s[Tt]\s", l)),
            "probes": spec, "runs": runs}


# ---------------------------------------------------------------- main


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {
        "cpu": sh("lscpu | sed -n 's/^Model name:\\s*//p' | head -1"),
        "cpus": os.cpu_count(),
        "kernel": sh("uname -r"),
        "memory": sh("free -h | awk '/Mem:/{print $2}'"),
        "virtualization": sh("systemd-detect-virt 2>/dev/null || lscpu | sed -n 's/^Hypervisor vendor:\\s*//p'"),
        "go": sh(f"{os.environ.get('GO', 'go')} version"),
        "gotel_commit": sh(f"git -C {ROOT} rev-parse --short HEAD") + (" (+ uncommitted changes)" if sh(f"git -C {ROOT} status --porcelain -- sidecar shared sidecar-ebpf") else ""),
        "wrk": sh("wrk -v 2>&1 | head -1 | cut -d' ' -f1-2"),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="cost,fast,service,capacity,startup")
    p.add_argument("--protocol", default="http/protobuf", help="gotel's OTLP protocol (its default: http/protobuf)")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    q = a.quick
    a.calls = 40_000 if q else 60_000
    a.rounds = 2 if q else 5
    a.fast_calls = 100_000 if q else 300_000
    a.service_seconds = 3 if q else 4
    a.service_rounds = 1 if q else 3
    a.capacity_spans = 100_000 if q else 400_000
    a.sweep_seconds = 1 if q else 2
    a.rates = "10000,40000,160000,640000" if q else "5000,10000,20000,40000,80000,160000,320000,640000"
    a.startup_runs = 1 if q else 3
    a.stall_exports = 300 if q else 1000
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(GOTEL_SRC, GOTEL)
    for var, name in (("PIPELINE_BENCH", "pipeline-bench"), ("EXPORT_STALL_BENCH", "export-stall-bench")):
        shutil.copy2(os.environ[var], BUILD / name)
        os.environ[var] = str(BUILD / name)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "quick": q, "command": "bench/run.sh" + (" --quick" if q else ""),
            "machine": machine()}
    started = time.time()
    sink = Sink()
    try:
        for part, fn in [("cost", bench_cost), ("fast", bench_fast_loop), ("service", bench_service),
                         ("capacity", bench_capacity), ("startup", bench_startup)]:
            if part not in a.only.split(","):
                continue
            log(f"== {part}")
            t0 = time.time()
            res = fn(a, sink)
            (RESULTS / f"{part}.json").write_text(json.dumps({"seconds": time.time() - t0, "result": res}, indent=1))
    finally:
        sink.stop()
    meta["seconds"] = time.time() - started
    (RESULTS / "meta.json").write_text(json.dumps(meta, indent=1))
    log(f"done in {meta['seconds']:.0f} s")
    if not a.no_report:
        subprocess.run([sys.executable, str(ROOT / "bench" / "report.py")], check=True)


if __name__ == "__main__":
    main()
