#!/usr/bin/env python3
"""gotel's own CPU per HTTP server span: bench/goapps/serve (GET /r1) on CPU 0 under wrk (1 thread,
8 connections, CPU 1), gotel --pid on CPU 1 with its built-in units only, exporting over OTLP
http/protobuf to bench/goapps/sink (CPU 1). The figure is gotel's CPU time (utime + stime) over
the load divided by the spans the sink received; every run checks that the sink received a span
per request (within the requests wrk had in flight at its end), or the run is invalid.

Several gotel binaries are compared with rounds interleaved (A B A B ...), because this VM's
state moves from one minute to the next:

    sudo bench/span_cpu.py --gotel /tmp/gotel-before --gotel target/release/gotel --rounds 3

Prints a markdown table (median and each round). Needs root, `wrk`, and the bench's Go programs
(bench/run.py builds them into bench/.build)."""
import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BUILD, SIDE_CPU, TARGET_CPU, Sink, gotel_env, wait_file, wrk  # noqa: E402
from hooks import cpu_ns  # noqa: E402


def one_round(gotel, seconds):
    sink = Sink()
    port_file = BUILD / "span-cpu.port"
    port_file.unlink(missing_ok=True)
    serve = subprocess.Popen(["taskset", "-c", TARGET_CPU, str(BUILD / "serve"), "-port-file", str(port_file)])
    tracer = None
    try:
        wait_file(port_file, serve)
        port = int(port_file.read_text().split()[0])
        ready = BUILD / "span-cpu.ready"
        ready.unlink(missing_ok=True)
        # A short batch delay: the last batch (under 512 spans) arrives before the count is read.
        env = dict(gotel_env(sink, "http/protobuf", "", ready), OTEL_BSP_SCHEDULE_DELAY="200")
        tracer = subprocess.Popen(["taskset", "-c", SIDE_CPU, gotel, "--pid", str(serve.pid)], env=env,
                                  stderr=subprocess.DEVNULL)
        wait_file(ready, tracer)
        spans0, cpu0 = sink.count(), cpu_ns(tracer.pid)
        load = wrk(port, "/r1", seconds)
        spans = sink.wait_settled(expect=spans0 + load["requests"]) - spans0
        cpu = cpu_ns(tracer.pid) - cpu0
        if load["errors"] or spans < load["requests"] or spans > load["requests"] + 16:
            raise SystemExit(f"invalid run: {load['requests']} requests, {spans} spans, {load['errors']} errors")
        return cpu / 1000 / spans, load["rps"]
    finally:
        for p in (tracer, serve):
            if p:
                p.terminate()
                p.wait()
        sink.proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gotel", action="append", required=True, help="a gotel binary (give two or more to compare)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/span_cpu.py: run as root (uprobes)")
    runs = {g: [] for g in args.gotel}
    for _ in range(args.rounds):
        for g in args.gotel:
            runs[g].append(one_round(g, args.seconds))
    print("| gotel | us of gotel CPU per span, median | rounds | requests/s (median) |")
    print("| --- | --- | --- | --- |")
    for g, r in runs.items():
        us = [u for u, _ in r]
        print(f"| {g} | {statistics.median(us):.2f} | {' / '.join(f'{u:.2f}' for u in us)} | "
              f"{statistics.median(q for _, q in r):,.0f} |")


if __name__ == "__main__":
    main()
