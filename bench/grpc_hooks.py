#!/usr/bin/env python3
"""What gotel's built-in gRPC units (grpc_server, grpc_client, trace_context.grpc) cost a unary
grpc-go call, as same-run ratios to the floor, the bare traps: bench/hooks.py's method and code
(`measure`, `span_bytes`, `ratio_table`) on bench/goapps/grpc, a grpc-go client and server in
one process on CPU 0 (plaintext HTTP/2 over 127.0.0.1, sequential calls on one connection,
each carrying a traceparent in its metadata), so every trap a call causes, on both sides, is in
its time. Rounds are interleaved; each figure is the best of its rounds.

    bench/grpc_hooks.py [--rounds 7] [--calls 3000]

Columns: untraced; *floor: span*, empty eBPF programs at the entry and RETs of the two span
functions (`(*ClientConn).Invoke`, `(*Server).handleStream`); *floor: all gotel's traps*, empty
programs at every site gotel attaches to for these units (TRAPS, the table in the section);
gotel as shipped; gotel with GOTEL_GOROUTINE_PARENTS=off. Also the OTLP protobuf size of one
gRPC server and one client span. Writes bench/results/grpc_hooks.json and its section of
BENCHMARKS.md (between the `grpc-hooks` markers). Root only (uprobes).
"""
import argparse
import json
import os
import sys
import time

from hooks import NEWPROC, ROOT, build, log, measure, ratio_table, span_bytes, write_section

GRPC = "google.golang.org/grpc"
TRANSPORT = f"{GRPC}/internal/transport"
INVOKE = f"{GRPC}.(*ClientConn).Invoke"
HANDLE = f"{GRPC}.(*Server).handleStream"

# Every site gotel attaches the gRPC units to (grpc-go 1.64; `writeStatus` from 1.70), with
# the traps one unary call takes there: (symbol, entry, RETs, traps per call, side, why,
# what removing it would take).
TRAPS = [
    (INVOKE, True, True, 2, "client", "the CLIENT span: start, and end with the returned error's status",
     "nothing (the span itself)"),
    (HANDLE, True, True, 2, "server", "the SERVER span: start with the method, end",
     "nothing (the span itself)"),
    (f"{TRANSPORT}.(*http2Server).WriteStatus", True, False, 1, "server",
     "helper: the status code and message (arguments at entry); the server keeps the status nowhere "
     "handleStream could read it at its RET (`Stream.status` is only set on the client side). It ends at "
     "entry (PLAN_ENDS_AT_ENTRY: all its reads are arguments), so its RETs are not trapped",
     "the entry trap: only if the span moved to processUnaryRPC/processStreamingRPC and "
     "read the handler's error there (more layouts to follow)"),
    (f"{TRANSPORT}.(*http2Server).operateHeaders", True, False, 1, "server",
     "incoming traceparent, from the HEADERS frame's decoded fields (no metadata map walk)",
     "read the traceparent from the stream's context metadata at handleStream's entry (a map walk "
     "in the kernel, which the unit avoids on purpose)"),
    (NEWPROC, False, True, 1, "server",
     "goroutine hand-off: grpc-go handles each stream on a goroutine it starts; the RET gives that "
     "goroutine the traceparent adopted at operateHeaders (and the reader's context, if any, as parent)",
     "key the adopted context by the `*Stream` operateHeaders gets and look it up at handleStream's "
     "entry (then GOTEL_GOROUTINE_PARENTS=off would cost gRPC no trap)"),
    (f"{GRPC}.newClientStreamWithParams", False, True, 1, "client",
     "helper for stream spans (NewStream): the `*clientStream` at its RET; a unary call goes "
     "through it too (Invoke -> newClientStream), where the span ignores it. It starts at its RETs "
     "(COOKIE_STARTS_AT_RETURN: it reads nothing at entry), so its entry is not trapped",
     "for unary calls, if the stream span read NewStream's returned stream when it is a bare "
     "`*clientStream` (no interceptor)"),
    (f"{GRPC}.(*clientStream).finish", True, False, 1, "client",
     "closer for stream spans: ends the span NewStream left open; a unary call's stream finishes "
     "too, with nothing to close. It ends at entry (the error is read there), so its RETs are not trapped",
     "the entry trap: only with the change above"),
    (f"{GRPC}.(*ClientConn).NewStream", True, True, 0, "client", "stream CLIENT spans (not taken by unary calls)",
     "—"),
]
SPAN_FLOOR = [(INVOKE, True, True), (HANDLE, True, True)]
ROW = "unary gRPC call, client and server in one process"
PERF = "perf-event uprobes"
OLD_FLOOR = f"floor: all, at function starts, {PERF}"
KINDS = ["untraced", "floor: span", "floor: all gotel's traps", OLD_FLOOR, "gotel", "gotel, parents off",
         f"gotel, {PERF}"]


def run(kind, calls, gotel):
    all_ = [t[:3] for t in TRAPS]
    floors = {"floor: span": SPAN_FLOOR, "floor: all gotel's traps": all_, OLD_FLOOR: all_}.get(kind, [])
    binary = gotel if kind.startswith("gotel") else None
    extra = {"gotel, parents off": {"GOTEL_GOROUTINE_PARENTS": "off"},
             f"gotel, {PERF}": {"GOTEL_UPROBE_MULTI": "off"}}.get(kind, {})
    return measure("grpc", ["-n", str(calls)], floors, binary, extra, like_gotel=PERF not in kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--gotel", default=os.environ.get("GOTEL_BIN", ROOT / "target" / "release" / "gotel"))
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from bench/results/grpc_hooks.json")
    a = ap.parse_args()
    out = ROOT / "bench" / "results" / "grpc_hooks.json"
    if a.render:
        write_section(section(json.loads(out.read_text())), "grpc-hooks")
        return
    if os.geteuid() != 0:
        sys.exit("grpc_hooks: must run as root (uprobes)")
    if not a.skip_build:
        build(("grpc", "floor"))
    best = {}
    rounds = {k: [] for k in KINDS}
    for r in range(a.rounds):
        for kind in KINDS:
            ns = run(kind, a.calls, a.gotel)
            rounds[kind].append(ns / 1000)
            best[kind] = min(ns, best.get(kind, ns))
            log(f"round {r + 1}/{a.rounds}: grpc: {kind}: {ns / 1000:.2f} us")
    sizes = span_bytes(a.gotel, "grpc", ("-n", "20"), (2, 3))
    result = {"rounds": a.rounds, "calls": a.calls, "us": {ROW: {k: v / 1000 for k, v in best.items()}},
              "us_per_round": rounds, "span_bytes": {"server": sizes[2], "client": sizes[3]},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load": open("/proc/loadavg").read().split()[:3], "gotel": str(a.gotel),
              "traps": sum(t[3] for t in TRAPS)}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_section(section(result), "grpc-hooks")


def section(res):
    """The BENCHMARKS.md section for a result of this script."""
    v = res["us"][ROW]
    base, span, all_, gotel = (v[k] for k in ("untraced", "floor: span", "floor: all gotel's traps", "gotel"))
    now = sum(t[3] for t in TRAPS)
    # The traps of the timed run (results before this field: 12, the table before the helpers
    # and closers that read at one side only were trapped there only).
    timed = res.get("traps", 12)
    per_trap = (all_ - base) / timed
    out = ["### Built-in gRPC hooks", "",
           "What gotel's built-in gRPC units (`grpc_server`, `grpc_client`, `trace_context.grpc`) cost one",
           "unary grpc-go call (v1.64.1), client and server in one process on CPU 0 (bench/goapps/grpc:",
           "plaintext HTTP/2 over 127.0.0.1, calls one after another on one connection, each with a",
           "`traceparent` in its metadata), against the floor: empty eBPF programs at the same places, same run.",
           "", "```sh", f"bench/grpc_hooks.py --rounds {res['rounds']} --calls {res['calls']}", "```", "",
           f"* Date: {res['date']}; load average at the end: {' '.join(res['load'])}; best of {res['rounds']} "
           "interleaved rounds.",
           "* *floor: span* = bare traps at the entry and RETs of `(*ClientConn).Invoke` and `(*Server).handleStream` "
           "(the two traps of each side's span); *floor: all gotel's traps* = bare traps at every site of the "
           "table below (entry, RETs or both, as gotel attaches them). Both floors place and attach their traps as "
           "gotel does (bench/goapps/floor `-prologue -multi`): the entry trap after the stack-check prologue, "
           "one uprobe_multi link per function.",
           f"* *{OLD_FLOOR}*: the same traps placed as bench/hooks.py's HTTP floors place theirs (the entry at "
           "the function's first instruction, one perf event per trap).",
           "* *gotel, parents off*: GOTEL_GOROUTINE_PARENTS=off; *gotel, perf-event uprobes*: GOTEL_UPROBE_MULTI=off.",
           "", *ratio_table(res["us"], KINDS), "",
           f"- All of gotel's traps cost {all_ - base:.1f} us per call over untraced (about {per_trap:.1f} us per "
           f"trap); the spans' four alone {span - base:.1f} us; gotel {gotel - base:.1f} us: its programs' work "
           f"(reads, pairing, records) adds {gotel - all_:.1f} us to its traps' {all_ - base:.1f}.",
           f"- Where a trap sits matters as much as how many there are: the same twelve traps at the functions' "
           f"first instructions through perf events cost {v[OLD_FLOOR] - base:.1f} us, "
           f"{(v[OLD_FLOOR] - base) / (all_ - base):.1f}x their cost where gotel places them (the first instruction, "
           "the stack check `CMPQ SP, 0x10(R14)`, is stepped out of line, a second trap; after the prologue it is "
           "usually `PUSHQ BP`, which recent x86 kernels emulate; the attach mechanism is not it: see the next "
           "column pair). bench/hooks.py's HTTP floors are placed the old way, "
           "so they overstate the floor of the HTTP rows above; gotel itself attached by perf events "
           f"(GOTEL_UPROBE_MULTI=off) costs {v[f'gotel, {PERF}'] / gotel:.2f}x gotel.",
           "- The floors are themselves noisy on this shared 2-CPU VM: ratios within about 0.8-1.3x are not told "
           "apart here (see the HTTP rows above).",
           "- *gotel, parents off* drops the `runtime.newproc1` trap, and with it the hand-off of the incoming "
           "traceparent to the stream's goroutine: the server spans lose their remote parent (a start with "
           "GOTEL_GOROUTINE_PARENTS=off counted grpc_traceparent_adopted=205, grpc_context_handed_off=0, and the "
           "server spans started new traces), so it is no option for a traced gRPC server today.",
           ]
    for side, s in res["span_bytes"].items():
        out.append(f"- {s['bytes']} bytes per gRPC {side} span (OTLP protobuf, {s['spans']} spans): "
                   + ", ".join(s["attributes"] or []))
    if timed == now:
        history = ("12 before helpers and closers that read at one side only were trapped there only: the RETs of "
                   "WriteStatus and finish and the entry of newClientStreamWithParams are no longer trapped")
    else:
        history = (f"{timed} in the timed run above: helpers and closers that read at one side only are now trapped "
                   "there only, so the RETs of WriteStatus and finish and the entry of newClientStreamWithParams are "
                   f"no longer trapped, about {(timed - now) * per_trap:.0f} us per call at that run's "
                   f"{per_trap:.1f} us per trap; not re-timed")
    out += ["", f"Traps per unary call: {now}, of which 4 are the spans' own ({history}). A unary call would take "
            "none of the client's two stream traps if the stream span read NewStream's result; the newproc1 trap "
            "stays while the incoming context travels by goroutine hand-off.", "",
            "| site | traps per call | side | why | what removing it would take |", "| --- | --- | --- | --- | --- |"]
    for sym, entry, rets, n, side, why, remove in TRAPS:
        where = " + ".join(w for w, on in (("entry", entry), ("RETs", rets)) if on)
        out.append(f"| `{sym.replace(GRPC, 'grpc')}` ({where}) | {n} | {side} | {why} | {remove} |")
    out.append("")
    return out


if __name__ == "__main__":
    main()
