#!/usr/bin/env python3
"""What gotel's built-in hooks cost the traced program, as same-run ratios to the
floor, the bare traps. bench/goapps/builtins runs a net/http server and a raw keep-alive client
in one process on CPU 0 (every trap a request causes is in its time); gotel, the floor tool and
this script run on CPU 1. Rounds are interleaved; each figure is the best of its rounds.

    bench/hooks.py [--rounds 5] [--requests 3000] [--goroutines 20000] [--before GOTEL] [--breakdown-only]

Rows: an HTTP request with the client's default headers and with 20 more; with 20 more and a
5 KB cookie after them (the header block exceeds the 4 KiB read buffer, so the traceparent is
gone from it and gotel walks the request's http.Header map instead); a handler that answers
from a goroutine it starts (gRPC runs each stream in its own goroutine); starting a goroutine
(`go func(){ wg.Done() }()`, gotel tracing one unrelated function). Columns: untraced; the floor
(empty eBPF programs at the same places: `net/http.serverHandler.ServeHTTP` entry + RETs; with
the RETs of `runtime.newproc1`, the traps gotel places); gotel as shipped; gotel with
GOTEL_GOROUTINE_PARENTS=off; and optionally another gotel build (--before) for comparison.
Also the OTLP protobuf size of one HTTP server span, from the console exporter's OTLP/JSON, and
where gotel's cost goes: extra runs per build and row with kernel.bpf_stats_enabled=1 give each
of its programs' runs per operation and ns per run (BPF_OBJ_GET_INFO_BY_FD on gotel's program
fds), and gotel's own CPU per operation (schedstat of its threads); `--breakdown-only` prints
just that.
Writes bench/results/hooks.json and its section of BENCHMARKS.md (between the `hooks` markers;
bench/report.py renders the same section when it rewrites the file). Root only (uprobes).
"""
import argparse
import ctypes
import json
import os
import subprocess
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "bench" / ".build"
GO = os.environ.get("GO", "/usr/local/go/bin/go")
TARGET_CPU, SIDE_CPU = "0", "1"
SERVE = "net/http.serverHandler.ServeHTTP"
NEWPROC = "runtime.newproc1"


def log(msg):
    print(f"hooks: {msg}", file=sys.stderr, flush=True)


def build(apps=("builtins", "floor")):
    BUILD.mkdir(parents=True, exist_ok=True)
    for app in apps:
        subprocess.run([GO, "build", "-o", str(BUILD / app), "."], cwd=ROOT / "bench" / "goapps" / app, check=True)


def wait_for(path, procs, timeout=120):
    deadline = time.time() + timeout
    while not Path(path).exists():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[:4]} exited ({p.returncode}) before {path} appeared")
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {path}")
        time.sleep(0.01)


LIBC = ctypes.CDLL(None, use_errno=True)
SYS_BPF, SYS_PIDFD_GETFD, BPF_OBJ_GET_INFO_BY_FD = 321, 438, 15  # amd64
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def bpf_objects(pid, kind):
    """(our copy of the fd, its BPF_OBJ_GET_INFO_BY_FD bytes) for each eBPF object of `kind`
    ("prog" or "map") process `pid` holds; the caller closes the fd. Nothing when `pid` is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != f"anon_inode:bpf-{kind}":
                    continue
            except OSError:
                continue
            local = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if local < 0:
                continue
            info = ctypes.create_string_buffer(256)
            attr = ctypes.create_string_buffer(struct.pack("IIQ", local, len(info), ctypes.addressof(info)), 16)
            if LIBC.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, attr, 16) < 0:
                os.close(local)
                continue
            yield local, info.raw
    finally:
        os.close(pidfd)


def bpf_programs(pid):
    """{name: [run_time_ns, run_cnt]} of the eBPF programs process `pid` holds, from
    BPF_OBJ_GET_INFO_BY_FD on a copy of each fd (run time is only counted while
    kernel.bpf_stats_enabled is 1). Names are the kernel's, cut to 15 characters."""
    progs, seen = {}, set()
    for local, info in bpf_objects(pid, "prog"):
        os.close(local)
        prog_id = struct.unpack_from("I", info, 4)[0]
        if prog_id in seen:
            continue
        seen.add(prog_id)
        name = info[64:80].split(b"\0")[0].decode()
        run_ns, runs = struct.unpack_from("QQ", info, 192)
        acc = progs.setdefault(name, [0, 0])
        acc[0] += run_ns
        acc[1] += runs
    return progs


def cpu_ns(pid):
    """CPU time of every thread of `pid` so far, in ns (schedstat)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
            except (OSError, ValueError):
                pass
    except OSError:
        pass
    return total


def gotel_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTEL_"))}
    env.update(OTEL_TRACES_EXPORTER="none", GOTEL_LOG="warn", NO_COLOR="1")
    env.update(extra)
    return env


def start_floors(binary, pid, floors, like_gotel, tag="floor"):
    """The floor tool on CPU 1, one per (symbol, at its entry, at its RETs) of `floors`, bare traps
    in process `pid` of `binary` (placed and attached as gotel does with `like_gotel`); returns the
    processes and the files each writes once attached."""
    side, readies = [], []
    for sym, entry, rets in floors:
        ready = BUILD / f"{tag}-{len(side)}.ready"
        ready.unlink(missing_ok=True)
        args = ["-bin", str(binary), "-sym", sym, "-pid", str(pid), "-ready", str(ready)]
        args += (["-ret"] if rets else []) + ([] if entry else ["-noentry"]) + (["-multi", "-prologue"] if like_gotel else [])
        side.append(subprocess.Popen(["taskset", "-c", SIDE_CPU, str(BUILD / "floor"), *args],
                                     stdout=subprocess.DEVNULL, env={**os.environ, "GO": GO}))
        readies.append(ready)
    return side, readies


def measure(app, app_args, floors=(), gotel=None, extra_env=None, like_gotel=False, costs=None):
    """One run of bench/goapps/`app` with `app_args` on CPU 0, untraced, under bare traps
    (`floors`: (symbol, at its entry, at its RETs) triples) or under gotel
    binary `gotel` (`extra_env` added to its environment); returns the ns the app printed. With
    `like_gotel` the bare traps are placed and attached as gotel does on kernels from 6.10: the
    entry trap after the stack-check prologue (not at the first instruction, which the kernel
    steps out of line), as uprobe_multi links (not perf events). With `costs` (a dict) and gotel,
    fills it with gotel's user-space CPU ns and its programs' {name: [run ns, runs]} over the run
    (run ns are 0 unless kernel.bpf_stats_enabled is 1)."""
    wait = BUILD / f"{app}.go"
    wait.unlink(missing_ok=True)
    proc = subprocess.Popen(["taskset", "-c", TARGET_CPU, str(BUILD / app), *app_args, "-wait-file", str(wait)],
                            stdout=subprocess.PIPE, text=True)
    # taskset execs the program: attach only once the process runs it.
    deadline = time.time() + 10
    while not os.readlink(f"/proc/{proc.pid}/exe").endswith(app) and time.time() < deadline:
        time.sleep(0.002)
    side, readies = start_floors(BUILD / app, proc.pid, floors, like_gotel)
    if gotel:
        ready = BUILD / "gotel.ready"
        ready.unlink(missing_ok=True)
        env = gotel_env({"GOTEL_READY_FILE": str(ready), "GOTEL_PROBES": "main.unrelated", **(extra_env or {})})
        side.append(subprocess.Popen(["taskset", "-c", SIDE_CPU, str(gotel), "--pid", str(proc.pid)], env=env,
                                     stderr=subprocess.PIPE, text=True))
        readies.append(ready)
    for r in readies:
        wait_for(r, [proc, *side])
    g = side[-1] if gotel else None
    before = (cpu_ns(g.pid), bpf_programs(g.pid)) if g and costs is not None else None
    wait.touch()
    out = proc.communicate(timeout=600)[0]
    if before:
        # The process has exited: what gotel did for it is done or in its ring buffer; give the
        # consumer a moment to drain it before reading its CPU time.
        after, cpu = bpf_programs(g.pid), cpu_ns(g.pid)
        for _ in range(20):
            time.sleep(0.05)
            now = cpu_ns(g.pid)
            if now <= cpu or g.poll() is not None:
                break
            cpu = now
        costs["cpu_ns"] = cpu - before[0]
        costs["programs"] = {k: [v[0] - before[1].get(k, [0, 0])[0], v[1] - before[1].get(k, [0, 0])[1]]
                             for k, v in after.items() if v[1] > before[1].get(k, [0, 0])[1]}
    for p in side:
        if p.args[2].endswith("floor"):
            p.send_signal(2)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
    return json.loads(out)["ns"]


def run(app_args, kind, gotel, before, costs=None):
    """One run of the builtins app under `kind`; returns ns per request / goroutine start."""
    is_go = "go" in app_args
    floors = {"floor: span": [(SERVE, True, True)],
              "floor: all gotel's traps": ([] if is_go else [(SERVE, True, True)]) + [(NEWPROC, False, True)]}.get(kind, [])
    binary = {"gotel": gotel, "gotel, parents off": gotel, "gotel before": before}.get(kind)
    extra = {"GOTEL_GOROUTINE_PARENTS": "off"} if kind == "gotel, parents off" else {}
    # Bare traps placed and attached as gotel places them (after the stack check, as uprobe_multi
    # links): a trap at the first instruction costs more and would flatter the ratio.
    return measure("builtins", app_args, floors, binary, extra, like_gotel=True, costs=costs)


def breakdown(app_args, n, binary):
    """Where gotel `binary`'s cost goes in one run of the builtins app (not a timed round: the
    kernel's run-time counters are on, which adds two clock reads per program run): per
    program, runs per operation and ns per run; gotel's own CPU (ring-buffer consumer and span
    building, on the other CPU; no export: `gotel_env` sets OTEL_TRACES_EXPORTER=none) per
    operation."""
    old = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1")
    try:
        costs = {}
        run([*app_args, "-n", str(n)], "gotel", binary, None, costs)
    finally:
        BPF_STATS.write_text(old)
    # The app runs a few untimed operations besides its n timed ones: runs per operation are
    # rounded to what n operations explain.
    progs = {name: {"runs_per_op": runs / n, "ns_per_run": ns / runs}
             for name, (ns, runs) in sorted(costs.get("programs", {}).items()) if runs}
    return {"programs": progs, "cpu_us_per_op": costs.get("cpu_ns", 0) / n / 1000}


ROWS = {
    "HTTP request, client's default headers": ["-mode", "http", "-headers", "1"],
    "HTTP request, 20 more headers": ["-mode", "http", "-headers", "20"],
    "HTTP request, 20 more headers and a 5 KB cookie (traceparent from http.Header)":
        ["-mode", "http", "-headers", "20", "-cookie", "5000"],
    "HTTP request answered from a goroutine per request": ["-mode", "http", "-headers", "1", "-spawn"],
    "starting a goroutine": ["-mode", "go"],
}
KINDS = ["untraced", "floor: span", "floor: all gotel's traps", "gotel", "gotel, parents off", "gotel before"]


def varint_len(v):
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


def field(tag, payload_len):
    return varint_len(tag << 3) + varint_len(payload_len) + payload_len


def any_value_len(v):
    if "stringValue" in v:
        s = len(v["stringValue"].encode())
        return field(1, s)
    if "intValue" in v:
        i = int(v["intValue"])
        return varint_len(1 << 3) + varint_len(i if i >= 0 else i + (1 << 64))
    if "boolValue" in v:
        return 2
    raise ValueError(v)


def span_len(s):
    """OTLP protobuf size of one Span message (with its tag and length in ScopeSpans)."""
    n = field(1, 16) + field(2, 8)
    if s.get("parentSpanId"):
        n += field(4, 8)
    if s.get("flags"):
        n += varint_len(16 << 3) + 4
    n += field(5, len(s["name"].encode()))
    if s.get("kind"):
        n += 2
    n += 2 * (1 + 8)
    for kv in s.get("attributes", []):
        n += field(9, field(1, len(kv["key"].encode())) + field(2, any_value_len(kv["value"])))
    st = s.get("status") or {}
    body = (field(2, len(st["message"].encode())) if st.get("message") else 0) + (2 if st.get("code") else 0)
    if body:
        n += field(15, body)
    return field(2, n)


def span_bytes(binary, app="builtins", app_args=("-mode", "http", "-n", "20"), kinds=(2,)):
    """Bytes of the spans of OTLP kinds `kinds` (2: SERVER, 3: CLIENT) that gotel `binary`
    exports for a few operations of bench/goapps/`app`: {kind: {spans, bytes, attributes}}, or
    the one entry when `kinds` has one kind."""
    wait = BUILD / f"{app}.go"
    wait.unlink(missing_ok=True)
    ready = BUILD / "gotel.ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([str(BUILD / app), *app_args, "-wait-file", str(wait)], stdout=subprocess.DEVNULL)
    env = gotel_env({"GOTEL_READY_FILE": str(ready), "GOTEL_PROBES": "main.unrelated",
                     "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    g = subprocess.Popen([str(binary), "--pid", str(proc.pid)], env=env, stdout=subprocess.PIPE, text=True)
    wait_for(ready, [proc, g])
    wait.touch()
    proc.wait(timeout=60)
    out = g.communicate(timeout=120)[0]
    sizes = {k: [] for k in kinds}
    attrs = {}
    for line in out.splitlines():
        try:
            req = json.loads(line)
        except ValueError:
            continue
        for rs in req.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    if s.get("kind") in sizes:
                        sizes[s["kind"]].append(span_len(s))
                        attrs[s["kind"]] = [kv["key"] for kv in s.get("attributes", [])]
    res = {k: {"spans": len(v), "bytes": round(sum(v) / max(len(v), 1)), "attributes": attrs.get(k)}
           for k, v in sizes.items()}
    return res[kinds[0]] if len(kinds) == 1 else res


def breakdowns(builds, rounds, requests, goroutines):
    """{build: {row: breakdown}}, each figure the lowest of `rounds` runs (a busy machine only
    adds to them)."""
    out = {who: {} for who in builds}
    for r in range(rounds):
        for row, args in ROWS.items():
            n = goroutines if "go" in args else requests
            for who, binary in builds.items():
                b = breakdown(args, n, binary)
                best = out[who].setdefault(row, b)
                best["cpu_us_per_op"] = min(best["cpu_us_per_op"], b["cpu_us_per_op"])
                for name, p in b["programs"].items():
                    q = best["programs"].setdefault(name, p)
                    q["ns_per_run"] = min(q["ns_per_run"], p["ns_per_run"])
                log(f"breakdown {r + 1}/{rounds}: {row}: {who}: " + ", ".join(
                    f"{k} {v['ns_per_run']:.0f} ns" for k, v in b["programs"].items()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--goroutines", type=int, default=20000)
    ap.add_argument("--gotel", default=os.environ.get("GOTEL_BIN", ROOT / "target" / "release" / "gotel"))
    ap.add_argument("--before", help="another gotel build to compare with (e.g. the previous release)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from bench/results/hooks.json")
    ap.add_argument("--breakdown-only", action="store_true", help="only print where gotel's cost goes, per row")
    a = ap.parse_args()
    if a.render:
        write(json.loads((ROOT / "bench" / "results" / "hooks.json").read_text()))
        return
    if os.geteuid() != 0:
        sys.exit("hooks: must run as root (uprobes)")
    if not a.skip_build:
        build()
    builds = {"gotel": a.gotel, **({"gotel before": a.before} if a.before else {})}
    if a.breakdown_only:
        for who, by_row in breakdowns(builds, a.rounds, a.requests, a.goroutines).items():
            for row, b in by_row.items():
                log(f"{row}: {who}: {json.dumps(b)}")
        return
    kinds = [k for k in KINDS if k != "gotel before" or a.before]
    best = {row: {} for row in ROWS}
    for r in range(a.rounds):
        for row, args in ROWS.items():
            n = a.goroutines if "go" in args else a.requests
            for kind in kinds:
                if row.startswith("starting") and kind == "floor: span":
                    continue
                ns = run([*args, "-n", str(n)], kind, a.gotel, a.before)
                best[row][kind] = min(ns, best[row].get(kind, ns))
                log(f"round {r + 1}/{a.rounds}: {row}: {kind}: {ns / 1000:.2f} us")
    # Where gotel's cost goes: extra runs with the kernel's run-time counters on (not timed).
    result_breakdown = breakdowns(builds, a.rounds, a.requests, a.goroutines)
    sizes = {"gotel": span_bytes(a.gotel)}
    if a.before:
        sizes["gotel before"] = span_bytes(a.before)
    result = {"rounds": a.rounds, "requests": a.requests, "goroutines": a.goroutines, "us": {
        row: {k: v / 1000 for k, v in kinds_.items()} for row, kinds_ in best.items()}, "span_bytes": sizes,
        "breakdown": result_breakdown}
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load"] = Path("/proc/loadavg").read_text().split()[:3]
    result["gotel"] = str(a.gotel)
    result["before"] = a.before
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "hooks.json").write_text(json.dumps(result, indent=1) + "\n")
    write(result)


def write(result):
    """Rewrites this script's section of BENCHMARKS.md and prints it."""
    write_section(section(result), "hooks")


def write_section(lines, marker):
    """Puts `lines` between the `marker` comments of BENCHMARKS.md (appended when absent) and
    prints them."""
    text = "\n".join(lines)
    bench = ROOT / "BENCHMARKS.md"
    doc = bench.read_text()
    begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
    if begin in doc and end in doc:
        a_, b_ = doc.index(begin) + len(begin), doc.index(end)
        bench.write_text(doc[:a_] + text + "\n" + doc[b_:])
    else:
        bench.write_text(doc.rstrip() + "\n\n" + begin + text + "\n" + end + "\n")
    print(text)


def section(res):
    """The BENCHMARKS.md section for a result of this script."""
    out = ["## Built-in hooks", "",
           "What gotel's built-in HTTP server span and goroutine hook cost the traced program, per request",
           "or goroutine start, against the floor: empty eBPF programs at the same places, same run.",
           "Client and server share CPU 0, so every trap a request causes is counted.", "",
           "```sh", f"bench/hooks.py --rounds {res['rounds']} --requests {res['requests']} "
           f"--goroutines {res['goroutines']}" + (" --before GOTEL" if res.get("before") else ""), "```", "",
           f"* Date: {res.get('date', '?')}; load average at the end: {' '.join(res.get('load', []))}; best of "
           f"{res['rounds']} interleaved rounds.",
           "* *floor: span* = bare traps at `net/http.serverHandler.ServeHTTP`'s entry and RETs (the two "
           "traps of a span), placed and attached as gotel places them (entry after the stack-check "
           "prologue, uprobe_multi links)" + ("" if res.get("like_gotel", True) else " [not in this run: first instruction, perf events]")
           + "; *floor: all gotel's traps* adds bare traps at the RETs of "
           "`runtime.newproc1` (net/http starts a goroutine per request for its background read, and the "
           "goroutine rows start one more).",
           ]
    if res.get("before"):
        out.append("* *gotel before*: " + res.get("before_doc", "the build before these changes (a trap per header "
                                                        "line read, two traps per goroutine start)."))
    out.append("")
    out.append(table(res))
    out.append("")
    return out


def ratio_table(us, kinds):
    """Markdown table of `us` ({row: {kind: us}}), columns `kinds` that occur, and gotel's ratios
    to the floors "floor: all gotel's traps" and "floor: span"."""
    cols = [k for k in kinds if any(k in r for r in us.values())]
    lines = ["| us per operation | " + " | ".join(cols) + " | gotel / floor (all traps) | gotel / floor (span) |",
             "| --- |" + " --- |" * (len(cols) + 2)]
    for row, v in us.items():
        cells = [f"{v[k]:.2f}" if k in v else "—" for k in cols]
        floor_all = v.get("floor: all gotel's traps")
        floor_span = v.get("floor: span")
        r1 = f"{v['gotel'] / floor_all:.2f}x" if floor_all else "—"
        r2 = f"{v['gotel'] / floor_span:.2f}x" if floor_span else "—"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {r1} | {r2} |")
    return lines


PROGRAMS = ["gotel_http_entry", "gotel_entry", "gotel_return", "gotel_newproc_return", "gotel_newproc_entry"]


def full_name(name):
    """The program's name: the kernel keeps 15 characters."""
    return next((p for p in PROGRAMS if p.startswith(name)), name)


def breakdown_table(res):
    """Markdown lines: per row and build, each program's runs per operation x ns per run, their
    total, and gotel's own CPU per operation."""
    bd = res.get("breakdown")
    if not bd:
        return []
    progs = []
    for by_row in bd.values():
        for b in by_row.values():
            for name in b["programs"]:
                if full_name(name) not in progs:
                    progs.append(full_name(name))
    progs.sort(key=lambda p: PROGRAMS.index(p) if p in PROGRAMS else len(PROGRAMS))
    lines = ["| per operation | build | " + " | ".join(f"`{p}`: runs x ns" for p in progs)
             + " | programs, us | gotel's own CPU, us |", "| --- | --- |" + " --- |" * (len(progs) + 2)]
    for row in res["us"]:
        for who, by_row in bd.items():
            b = by_row.get(row)
            if not b:
                continue
            named = {full_name(k): v for k, v in b["programs"].items()}
            cells, total = [], 0.0
            for p in progs:
                v = named.get(p)
                # Programs that ran for a few untimed operations only are left out.
                if not v or v["runs_per_op"] < 0.01:
                    cells.append("—")
                    continue
                cells.append(f"{v['runs_per_op']:.2f} x {v['ns_per_run']:.0f}")
                total += v["runs_per_op"] * v["ns_per_run"] / 1000
            lines.append(f"| {row} | {who} | " + " | ".join(cells) + f" | {total:.2f} | {b['cpu_us_per_op']:.2f} |")
    return lines


def table(res):
    lines = ratio_table(res["us"], KINDS)
    lines.append("")
    for row, v in res["us"].items():
        if "gotel before" in v:
            lines.append(f"- {row}: the build before costs {v['gotel before'] / v['gotel']:.1f}x what gotel costs now "
                         f"({v['gotel before'] - v['untraced']:.0f} vs {v['gotel'] - v['untraced']:.0f} us above untraced).")
    load = " ".join(res.get("load", [])) or "?"
    lines.append(f"- The floors are themselves noisy on this 2-CPU VM (load average {load} at the end): one bare "
                 "trap more or less moves a row by about as much as the spread between rounds, so a single run's "
                 "ratios within about 0.9-1.2x are not told apart; a ratio below 1 (gotel cheaper than its floor) "
                 "is that noise, not a saving. More rounds (the best of each) steady it.")
    for who, s in res["span_bytes"].items():
        lines.append(f"- {who}: {s['bytes']} bytes per HTTP server span (OTLP protobuf, {s['spans']} spans): "
                     + ", ".join(s["attributes"] or []))
    bd = breakdown_table(res)
    if bd:
        lines += ["", "Where gotel's cost goes, per operation: each of its programs' runs x ns per run "
                  "(kernel.bpf_stats_enabled=1, in the traced program's time on CPU 0; the lowest of "
                  f"{res['rounds']} extra runs per build and row, not the timed ones: the counters add two "
                  "clock reads per run), and gotel's own CPU (ring-buffer consumer and span building, on CPU 1, "
                  "schedstat of its threads; no export: these runs set OTEL_TRACES_EXPORTER=none; gotel's CPU with an "
                  "OTLP export is bench/peer.py's *tracer CPU*).", ""] + bd
    # Free text kept with the result (what a run showed that the figures alone do not say).
    notes = res.get("notes") or []
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
