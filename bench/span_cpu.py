#!/usr/bin/env python3
"""gotel's own CPU per HTTP server span, builds compared: bench/peer.py's `gotel` setup (one
run = bench/peer.py one_run: bench/goapps/serve `GET /r1` on CPU 0 under wrk with a
`traceparent`, gotel --pid with its built-in units only, OTLP http/protobuf to the bench's
receiver; wrk, gotel and the receiver on CPU 1), run for each gotel binary given, rounds
interleaved (A B A B ...) because this VM's state moves from one minute to the next. The figure
is peer.py's *tracer CPU per request* (gotel's utime + stime over the timed window; one span per
request). A run in which gotel lost a span is invalid (peer.py's check).

    sudo bench/span_cpu.py --gotel /tmp/gotel-before --gotel target/release/gotel --rounds 4

Prints a markdown table (median and each round). Needs root, `wrk`, and the bench's Go programs
(bench/peer.sh or bench/run.sh build them into bench/.build)."""
import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer  # noqa: E402
from run import Sink  # noqa: E402

SHAPE = "traceparent only"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gotel", action="append", required=True, help="a gotel binary (give two or more to compare)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/span_cpu.py: run as root (uprobes)")
    sink = Sink()
    runs = {g: [] for g in args.gotel}
    try:
        for _ in range(args.rounds):
            for g in args.gotel:
                res = peer.one_run(args, sink, SHAPE, "gotel", gotel=g)
                if res["errors"] or peer.lost(res):
                    raise SystemExit(f"invalid run of {g}: {res}")
                runs[g].append(res)
    finally:
        sink.proc.kill()
    print("| gotel | us of gotel CPU per span, median | rounds | requests/s (median) |")
    print("| --- | --- | --- | --- |")
    for g, rs in runs.items():
        us = [x["tracer_us"] for x in rs]
        print(f"| {g} | {statistics.median(us):.2f} | {' / '.join(f'{u:.2f}' for u in us)} | "
              f"{statistics.median(x['rps'] for x in rs):,.0f} |")


if __name__ == "__main__":
    main()
