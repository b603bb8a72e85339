#!/usr/bin/env python3
"""Writes its sections of BENCHMARKS.md and bench/loss-vs-rate.svg from bench/results/*.json
(bench/run.py). Each generated section sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
and is replaced there (appended at the end when its markers are missing); everything outside the
markers is hand-written (findings, experiments, runs of other scripts) and kept as it is.
No dependencies beyond the Python standard library; the SVG is written by hand."""
import json
import sys
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SVG = ROOT / "bench" / "loss-vs-rate.svg"


def load(name):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{round(v):,}"


def ratio(a, b):
    if a is None or not b:
        return "n/a"
    return f"{a / b:.3f}x" if a / b >= 0.01 else f"{a / b:.1e}x"


def mib(kib):
    return f"{kib / 1024:,.1f} MiB" if kib else "n/a"


# ---------------------------------------------------------------- SVG


def svg_plot(series, kernel_rate, path):
    """Loss fraction (%) against offered calls/s (log scale), one line per series."""
    W, H, L, R, T, B = 760, 420, 70, 200, 30, 60
    pts = [p for _, s in series for p in s]
    if not pts:
        return False
    xs = [x for x, _ in pts] + ([kernel_rate] if kernel_rate else [])
    x0, x1 = math.log10(min(xs) / 1.5), math.log10(max(xs) * 1.5)
    sx = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: T + (1 - y / 100) * (H - T - B)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="18" font-size="14">Spans lost vs offered rate (gotel pipeline, synthetic records)</text>']
    for y in range(0, 101, 20):
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{sy(y)}" y2="{sy(y)}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 8}" y="{sy(y) + 4}" text-anchor="end">{y}%</text>')
    e = math.floor(x0)
    while e <= x1:
        for m in (1, 2, 5):
            x = m * 10 ** e
            if x0 <= math.log10(x) <= x1:
                o.append(f'<line x1="{sx(x)}" x2="{sx(x)}" y1="{T}" y2="{H - B}" stroke="#eee"/>')
                label = f"{x / 1000:g}k" if x < 1e6 else f"{x / 1e6:g}M"
                o.append(f'<text x="{sx(x)}" y="{H - B + 16}" text-anchor="middle">{label}</text>')
        e += 1
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 20}" text-anchor="middle">offered traced calls per second (log scale)</text>')
    o.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">spans lost</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    if kernel_rate:
        kx = sx(kernel_rate)
        o.append(f'<line x1="{kx}" x2="{kx}" y1="{T}" y2="{H - B}" stroke="#555" stroke-dasharray="5,4"/>')
        o.append(f'<text x="{kx + 4}" y="{T + 14}" fill="#555">kernel limit, 2 CPUs</text>')
        o.append(f'<text x="{kx + 4}" y="{T + 28}" fill="#555">({kernel_rate / 1000:.0f}k calls/s)</text>')
    for i, (name, s) in enumerate(series):
        c = colors[i % len(colors)]
        s = sorted(s)
        o.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            c, " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)))
        for x, y in s:
            o.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>')
        ly = T + 20 + 18 * i
        o.append(f'<line x1="{W - R + 12}" x2="{W - R + 32}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{W - R + 38}" y="{ly + 4}">{name}</text>')
    o.append("</svg>")
    path.write_text("\n".join(o) + "\n")
    return True


# ---------------------------------------------------------------- sections


def main():
    meta = load("meta") or {}
    m = meta.get("machine", {})
    out = [("report-head",), "# gotel benchmarks", ""]
    out += [
        "What tracing a Go function with gotel costs the traced program, and how much gotel itself can carry.",
        "Every figure below is produced by one command and stated **as a ratio to a floor measured in the",
        "same run** (a bare uprobe running an empty eBPF program), because absolute uprobe costs vary by",
        "an order of magnitude between machines (about 1-3 us per hit on bare metal, about 15 us on this VM).",
        "",
        "```sh",
        f"{meta.get('command', 'bench/run.sh')}        # bench/run.sh --quick for a 3-4 minute run",
        "```",
        "",
        f"* Date: {meta.get('date', '?')}; run took {fmt(meta.get('seconds'))} s"
        + (" (**quick mode**: fewer calls and rounds)" if meta.get("quick") else "") + ".",
        f"* Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, {m.get('memory', '?')} RAM, "
        f"kernel {m.get('kernel', '?')}, virtualization: {m.get('virtualization') or 'none detected'}.",
        f"* {m.get('go', '')}; gotel {m.get('gotel_commit', '?')}; {m.get('wrk', '')}.",
        f"* Load average when the run started: {m.get('loadavg', '?')} (other work on the machine adds noise;",
        "  the ratios compare setups measured back to back, interleaved over rounds).",
        "* Layout: the measured Go program runs alone on CPU 0 (`taskset`); gotel, the OTLP receiver",
        "  (`bench/goapps/sink`, counts spans and keeps nothing), the floor tool and wrk share CPU 1.",
        "  So a traced call's cost shows up as time on CPU 0, and gotel's own work is measured",
        "  separately (its CPU time and memory).",
        "",
    ]
    goals = []

    # ---- 1. cost per call
    cost = load("cost")
    floor_ret = None
    if cost:
        c = cost["result"]
        runs = c["runs"]
        best = {k: min(r["ns_per_call"] for r in v) for k, v in runs.items() if v}
        med = {k: statistics.median(r["ns_per_call"] for r in v) for k, v in runs.items() if v}
        floor_ret, floor_entry = best.get("bare uprobe, entry + RET"), best.get("bare uprobe, entry")
        floor_runs = runs.get("bare uprobe, entry + RET", [])

        def round_ratio(name):
            """Median over rounds of (this setup / bare entry + RET) within the same round."""
            rs = [a["ns_per_call"] / b["ns_per_call"] for a, b in zip(runs[name], floor_runs) if b["ns_per_call"]]
            return f"{statistics.median(rs):.3f}x" if rs else "n/a"

        out += [("report-cost",), "## 1. Cost per traced call", "",
                f"`bench/goapps/loop`: one goroutine calls `main.work` (7 parameters, a leaf function of a",
                f"few ns) {fmt(c['calls'])} times in a tight loop; {c['rounds']} rounds, each running every setup once, in",
                "turn. Time per call is measured inside the program (attach time excluded). The main figure",
                "is the best round of each setup (the least disturbed by other work on the machine); the",
                "median of per-round ratios is shown too. The floor is `bench/goapps/floor`: an empty eBPF",
                "program (`r0 = 0; exit`) attached through the uprobe PMU to the same addresses gotel uses",
                "(the function's entry, and every RET), filtered on the same process. gotel exports over",
                f"OTLP `{c['protocol']}` to the receiver while the loop runs.", "",
                "| setup | ns per call, best (median) | best vs bare entry + RET | per-round ratio, median | vs bare entry | spans received / calls | gotel CPU (s) | gotel RSS peak / steady |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, v in runs.items():
            last = v[-1]
            rec = f"{fmt(sum(r.get('received', 0) for r in v))} / {fmt(sum(r['calls'] for r in v))}" if "received" in last else ""
            cpu = fmt(statistics.median(r["gotel_cpu_seconds"] for r in v if r.get("gotel_cpu_seconds") is not None), 2) if "gotel_cpu_seconds" in last else ""
            rss = f"{mib(max(r['peak_rss_kib'] for r in v))} / {mib(statistics.median(r['steady_rss_kib'] for r in v))}" if "peak_rss_kib" in last else ""
            out.append(f"| {name} | {fmt(best[name], 1)} ({fmt(med[name], 1)}) | "
                       f"{ratio(best[name], floor_ret)} | {round_ratio(name)} | {ratio(best[name], floor_entry)} | {rec} | {cpu} | {rss} |")
        worst = max((best[k] for k in best if k.startswith("gotel")), default=None)
        if worst and floor_ret:
            goals.append(("Per-span cost within 1.15x of two bare uprobe hits (entry + RET)",
                          f"worst gotel setup {worst / floor_ret:.3f}x (best rounds)", worst / floor_ret <= 1.15))
        out += ["", f"A bare entry hit costs {fmt(floor_entry)} ns here and the RET hit about",
                f"{fmt(floor_ret - floor_entry if floor_ret and floor_entry else None)} ns more: the trap dominates. gotel's kernel work (goroutine state, ids,",
                "value capture, the ring-buffer record) is the part of the ratio above 1. The spans-received",
                "column counts what reached the receiver (see section 2 for losses).", ""]
        lost_cost = [(k, r) for k, v in runs.items() for r in v if "received" in r and r["received"] < r["calls"]]
        if lost_cost:
            out += [f"Spans were lost in {len(lost_cost)} of these runs (see section 2): "
                    + "; ".join(f"{k}: {fmt(r['received'])}/{fmt(r['calls'])} received, summary lost_queue_full="
                                f"{r.get('summary', {}).get('lost_queue_full', '?')}, export failures logged" for k, r in lost_cost[:3]) + ".", ""]

    # ---- 2. fast loop
    fast = load("fast")
    if fast:
        out += [("report-loss",), "## 2. No span lost when one goroutine calls a traced function as fast as it can", "",
                "Same loop, `main.work` traced without attributes, gotel with its defaults except the",
                "protocol; spans counted by the receiver against the calls the program made.", "",
                "| protocol | calls | ns per call | spans received | kernel: lost_ring_buffer_full | gotel: lost_queue_full | lost_export_failed | verdict |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in fast["result"]:
            s = r.get("summary", {})
            ok = r["received"] >= r["calls"]
            out.append(f"| {r['protocol']} | {fmt(r['calls'])} | {fmt(r['ns_per_call'])} | {fmt(r['received'])} | "
                       f"{s.get('lost_ring_buffer_full', '?')} | {s.get('lost_queue_full', '?')} | {s.get('lost_export_failed', '?')} | "
                       f"{'no loss' if ok else '**LOST ' + fmt(r['calls'] - r['received']) + '**'} |")
            goals.append((f"No span lost at full speed, one goroutine ({r['protocol']})",
                          f"{fmt(r['received'])}/{fmt(r['calls'])} received", ok))
        out.append("")

    # ---- 3. service
    svc = load("service")
    if svc:
        s = svc["result"]
        modes = s["modes"]
        base = modes.get("untraced", {})
        out += [("report-service",), "## 3. A real service: net/http under wrk", "",
                "`bench/goapps/serve`: a net/http server (one CPU, so GOMAXPROCS=1) whose handler calls 1, 5",
                "or 20 small functions (`GET /r1`, `/r5`, `/r20`). wrk: 1 thread, 8 connections,",
                f"{s['seconds']} s per path after a 1 s warm-up, on loopback; {s.get('rounds', 1)} round(s) of every setup in turn, each",
                "row the setup's best round (highest requests/s; all rounds in bench/results/service.json):",
                "",
                "* **untraced**;",
                f"* **gotel**: `--pid`, `GOTEL_PROBES=main.step01;...;main.step20` plus gotel's built-in HTTP",
                f"  server span, OTLP `{s['protocol_gotel']}`: 1 + N spans per request;",
                "* **gotel, steps only**: the same with `GOTEL_LIBRARIES=none` (no HTTP server span): N spans",
                "  per request, which separates the cost of gotel's built-in HTTP server instrumentation;",
                "* **OTel Go SDK**: `otelhttp.NewHandler` plus one manual `tracer.Start`/`End` per step",
                "  function (the same 1 + N spans), batch span processor with its defaults, OTLP/HTTP to the same receiver.",
                "",
                "| path | setup | requests/s | vs untraced | p50 ms | p90 ms | p99 ms |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for path in ("/r1", "/r5", "/r20"):
            for mode, label in (("untraced", "untraced"), ("gotel", "gotel"), ("gotel-steps-only", "gotel, steps only"),
                                ("otel-go-sdk", "OTel Go SDK")):
                r = modes.get(mode, {}).get(path)
                if not r:
                    continue
                b = base.get(path, {}).get("rps")
                out.append(f"| {path} | {label} | {fmt(r['rps'])} | {ratio(r['rps'], b)} | {fmt(r['p50_ms'], 3)} | "
                           f"{fmt(r['p90_ms'], 3)} | {fmt(r['p99_ms'], 3)} |")
        out.append("")
        for mode, label in (("gotel", "gotel"), ("gotel-steps-only", "gotel, steps only"), ("otel-go-sdk", "OTel Go SDK")):
            r = modes.get(mode)
            if not r:
                continue
            extra = 0 if mode == "gotel-steps-only" else 1
            reqs = r.get("requests_all_rounds") or {p: r[p]["requests"] for p in ("/r1", "/r5", "/r20") if p in r}
            expected = sum(reqs[p] * (extra + n) for p, n in (("/r1", 1), ("/r5", 5), ("/r20", 20)) if p in reqs)
            line = (f"* {label}: {fmt(r.get('received'))} spans received, all rounds, for about {fmt(expected)} expected "
                    f"(wrk's completed requests x ({extra} + N), warm-ups excluded, so an undercount)")
            if r.get("summary"):
                sm = r["summary"]
                line += (f"; gotel summary: calls {fmt(sm.get('calls'))}, spans {fmt(sm.get('spans'))}, exported {fmt(sm.get('exported'))}, "
                         f"lost_queue_full {fmt(sm.get('lost_queue_full'))}, lost_ring_buffer_full {fmt(sm.get('lost_ring_buffer_full'))}")
            out.append(line + ".")
        out += ["", "gotel's price per request is (1 + N) x (entry + RET hits); the SDK's is a few microseconds of Go",
                "per span. With uprobes at ~15 us per hit on this VM, a request that does microseconds of work",
                "pays proportionally more under gotel; on bare metal (1-3 us per hit) the same ratio shrinks",
                "accordingly. What gotel offers in exchange: no code change and no rebuild.", ""]

    # ---- 4. capacity
    cap = load("capacity")
    series = []
    if cap:
        out += [("report-capacity",), "## 4. Capacity of gotel itself (synthetic records)", "",
                "`cargo bench -p gotel --bench pipeline` (sidecar/benches/pipeline.rs) drives gotel's own code",
                "through its library API: `events::parse` -> `SpanFactory::on_record` -> `export::Pipeline`",
                "(bounded queue, batching, OTLP export) with the plan gotel builds for `main.work` of",
                "bench/goapps/loop, fed with synthetic ring-buffer records (the kernel's exact layout) so the",
                "kernel is not the limit. Every thread of the bench is pinned to one CPU (\"one core of gotel\");",
                "the receiver runs on the other. Heap allocations are counted by a counting global allocator.", ""]
        for proto, res in cap["result"].items():
            if proto == "export_stall":
                continue
            st = res.get("settings", {})
            out += [f"### OTLP {proto}", "",
                    f"Settings: queue {st.get('OTEL_BSP_MAX_QUEUE_SIZE')}, batch {st.get('OTEL_BSP_MAX_EXPORT_BATCH_SIZE')}, "
                    f"ring buffer {fmt(st.get('GOTEL_RING_BUFFER_BYTES'))} bytes, drain every {st.get('GOTEL_DRAIN_INTERVAL_MS')} ms (gotel's defaults).", "",
                    "| attributes | records -> spans: ns per span | heap allocations per span (records -> spans) | end to end: spans/s on one CPU | CPU ms per 100k spans | allocations per span (end to end) | export failures | peak RSS |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for v in res["variants"]:
                f, t = v["factory"], v["throughput"]
                out.append(f"| {v['attributes']} | {fmt(f['ns_per_span'])} | {f['allocs_per_span']:.1f} | {fmt(t['spans_per_sec'])} | "
                           f"{fmt(t['cpu_ms_per_100k_spans'])} | {t['allocs_per_span']:.1f} | {t['export_failures']} | {mib(t['hwm_kib'])} |")
            out.append("")
            for v in res["variants"]:
                if not v["sweep"]:
                    continue
                series.append((f"{proto}, {v['attributes']} attrs",
                               [(p["offered_calls_per_sec"], 100 * p["lost_fraction"]) for p in v["sweep"]]))
                out += [f"Loss sweep, {v['attributes']} attributes ({proto}): a producer thread on the other CPU offers calls at a fixed rate into a",
                        "simulated ring buffer of the configured size, drained on gotel's timer exactly like `session::drain` (no back-pressure).", "",
                        "| offered calls/s | records/s | lost | lost: ring full | lost: queue full | lost: export failed | max ring backlog (calls) | gotel CPU |",
                        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
                for p in v["sweep"]:
                    out.append(f"| {fmt(p['offered_calls_per_sec'])} | {fmt(p['offered_records_per_sec'])} | {100 * p['lost_fraction']:.2f}% | "
                               f"{fmt(p['lost_ring_buffer_full'])} | {fmt(p['lost_queue_full'])} | {fmt(p['lost_export_failed'])} | "
                               f"{fmt(p['max_ring_backlog_calls'])} / {fmt(p['ring_capacity_calls'])} | {100 * p['gotel_cpu_util']:.0f}% |")
                first = v.get("first_loss_calls_per_sec")
                out += ["", f"First loss at {fmt(first) if first else 'no offered rate'} calls/s "
                        f"(last lossless: {fmt(v.get('last_lossless_calls_per_sec'))} calls/s).", ""]
        kernel_rate = 2 * 1e9 / floor_ret if floor_ret else None
        if svg_plot(series, kernel_rate, SVG):
            out += ["![spans lost vs offered rate](bench/loss-vs-rate.svg)", ""]
        if kernel_rate:
            out += [f"The kernel can trap at most about {fmt(kernel_rate)} traced calls/s on this machine (2 CPUs doing nothing but",
                    f"traced calls at {fmt(floor_ret)} ns per entry + RET, section 1): the dashed line.", ""]
            for proto, res in cap["result"].items():
                for v in res.get("variants", []) if proto != "export_stall" else []:
                    t = v["throughput"]
                    goals.append((f"gotel not the bottleneck below the kernel's rate ({proto}, {v['attributes']} attrs)",
                                  f"{fmt(t['spans_per_sec'])} spans/s on one CPU vs {fmt(kernel_rate)} calls/s",
                                  t["spans_per_sec"] >= kernel_rate))
                    if v["sweep"]:
                        first = v.get("first_loss_calls_per_sec")
                        goals.append((f"Loses nothing below the kernel's rate ({proto}, {v['attributes']} attrs)",
                                      f"first loss at {fmt(first) if first else 'none'} calls/s",
                                      first is None or first > kernel_rate))

    stall = cap and cap["result"].get("export_stall")
    if stall:
        out += ["### OTLP/HTTP export stalls", "",
                f"`cargo bench -p gotel --bench export_stall`: {stall['exports_per_mode']} exports of {stall['batch']} spans, back to back, with",
                "the OTLP/HTTP exporter as gotel builds it, driven three ways: from a dedicated thread, from a task",
                "per export on a tokio worker, and from one long-lived task on a worker (gotel's `export_loop`).",
                "An export that takes over a second is a stall; a mode still waiting at the deadline is hung.", "",
                "| mode | exports | p50 ms | p99 ms | max ms | stalls > 1 s | failures |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in stall["results"]:
            if r.get("hung"):
                out.append(f"| {r['mode']} | **hung** after {r['exports_completed']} | | | | | |")
            else:
                out.append(f"| {r['mode']} | {r['exports']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['stalls_over_1s']} | {r['failures']} |")
        out.append("")
        ok = all(not r.get("hung") and r.get("stalls_over_1s", 1) == 0 for r in stall["results"])
        goals.append(("No OTLP/HTTP export stall (regression check)", "none in any mode" if ok else "stalls or hangs, see section 4", ok))

    # ---- 5. startup
    su = load("startup")
    if su:
        r = su["result"]
        runs = [x for x in r["runs"] if x["seconds_to_attached"] is not None]
        out += [("report-startup",), "## 5. Startup on a large binary", "",
                f"`{Path(r['binary']).name}`: {r['size_bytes'] / 1e6:.0f} MB, {fmt(r['text_symbols'])} text symbols, "
                f"{r['dwarf_bytes'] / 1e6:.0f} MB of DWARF sections (as stored, compressed), built with full DWARF.",
                f"gotel launches it (`gotel -- BINARY`) with `GOTEL_PROBES='{r['probes']}'` plus its built-in HTTP",
                "instrumentations; time from starting gotel to its ready file (`GOTEL_READY_FILE`, written once",
                "every uprobe is attached), and gotel's memory (VmHWM peak; VmRSS 1 s after attaching).", "",
                "| run | seconds to attached | gotel's own log (ms) | peak RSS | RSS after attach |", "| --- | --- | --- | --- | --- |"]
        for i, x in enumerate(r["runs"]):
            out.append(f"| {i + 1} | {fmt(x['seconds_to_attached'], 3)} | {fmt(x['gotel_logged_ms'])} | {mib(x['peak_rss_kib'])} | {mib(x.get('rss_1s_after_attach_kib'))} |")
        out.append("")

    # ---- built-in hooks: sections bench/hooks.py, paired.py and grpc_hooks.py render themselves
    sys.path.insert(0, str(ROOT / "bench"))

    import importlib

    def own_section(script, res, marker):
        """`bench/<script>.py`'s section for its result `res`, between its markers."""
        return [(marker,), *importlib.import_module(script).section(res)]

    hooks = load("hooks")
    if hooks:
        out += own_section("hooks", hooks, "hooks")
        floor = "floor: all gotel's traps"
        ratios = [v["gotel"] / v[floor] for v in hooks.get("us", {}).values() if v.get("gotel") and v.get(floor)]
        if ratios:
            goals.append(("Built-in hooks within 1.10x of their floor (all gotel's traps), every row",
                          " / ".join(f"{r:.2f}x" for r in ratios) + f" (best of {hooks.get('rounds')} rounds; medians in \"Built-in hooks\")",
                          max(ratios) <= 1.10))
    paired = load("paired")
    if paired:
        out += own_section("paired", paired, "paired")
        medians = [r["median"] for r in paired.get("rows", {}).values()]
        if medians:
            goals.append(("Built-in hooks within 1.10x of gotel's own traps in the same process (bench/paired.py), "
                          "every row and the Caddy holdout",
                          " / ".join(f"{m:.3f}x" for m in medians) + f" (median of {paired.get('pairs')} pairs per row)",
                          max(medians) <= 1.10))
    peer = load("peer")
    if peer:
        from peer import MARKER as PEER, added, render as peer_section

        out += [(PEER,), *peer_section(peer)]
        shares = {shape: added(runs) for shape, runs in peer.get("shapes", {}).items()}
        if shares:
            goals.append(("An HTTP request costs the service about half of what opentelemetry-go-instrumentation adds, "
                          "or less (bench/peer.py: server CPU added, gotel / peer)",
                          " / ".join(f"{v:.2f}x ({k})" for k, v in shares.items()), max(shares.values()) <= 0.55))
    grpc_hooks = load("grpc_hooks")
    if grpc_hooks:
        out += own_section("grpc_hooks", grpc_hooks, "grpc-hooks")

    # ---- goals
    if goals:
        g = ["## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
        g += [f"| {a} | {b} | {'yes' if ok else '**no**'} |" for a, b, ok in goals]
        g.append("")
        # At the end of the header block.
        cut = out.index(("report-cost",)) if ("report-cost",) in out else len(out)
        out[cut:cut] = g

    # Section 7 comes from its own run (bench/propagation.sh) and keeps its own date.
    if load("propagation"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from propagation import MARKER, render
        out += [(MARKER,), *render(load("propagation"))]

    write_blocks(ROOT / "BENCHMARKS.md", out)
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


def write_blocks(path, out):
    """Puts each block of `out` (a `(name,)` tuple, then its lines) between its markers in the
    file at `path`, leaving every line outside them as it is; a block whose markers are missing
    is appended."""
    blocks, name = {}, None
    for line in out:
        if isinstance(line, tuple):
            name = line[0]
            blocks[name] = []
        elif name is not None:
            blocks[name].append(line)
    doc = path.read_text() if path.exists() else ""
    for name, lines in blocks.items():
        while lines and lines[-1] == "":
            lines.pop()
        begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
        text = "\n".join(lines) + "\n"
        if begin in doc and end in doc:
            a, b = doc.index(begin) + len(begin), doc.index(end)
            doc = doc[:a] + text + doc[b:]
        else:
            doc = doc.rstrip() + "\n\n" + begin + text + end + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    main()
