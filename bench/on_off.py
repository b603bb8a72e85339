"""The skeleton the unit-on-vs-off benchmarks share (bench/propagation.py, bench/same_node.py,
bench/same_node_grpc.py): the same client under a few setups, every setup once per round, in
turn, so that the machine's drift falls on all of them alike; results in bench/results/NAME.json
and a section of BENCHMARKS.md; a run whose setups did not do what they say (injection when off,
no context stored when on, failed requests) is written but exits 1 as invalid.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from run import BUILD, RESULTS, ROOT, SIDE_CPU, log, machine, wait_file


def args(render_help="rewrite the section from its results file"):
    """--quick (fewer and shorter rounds) and --render-only."""
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--render-only", action="store_true", help=render_help)
    return p.parse_args()


def load(name):
    return json.loads((RESULTS / f"{name}.json").read_text())


def start(command, quick, gotel_copy):
    """Copies the gotel under test (GOTEL_BIN, default target/release/gotel) to `gotel_copy` and
    returns the run's metadata (finished by [`finish`])."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(os.environ.get("GOTEL_BIN", ROOT / "target" / "release" / "gotel")), gotel_copy)
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command + (" --quick" if quick else ""),
            "machine": machine(), "started": time.time()}


def propclient_server(name):
    """bench/goapps/propclient as the untraced server on CPU 1: (process, port)."""
    port_file = BUILD / f"{name}-server.port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(["taskset", "-c", SIDE_CPU, str(BUILD / "propclient"), "-role", "server",
                               "-port-file", str(port_file)])
    wait_file(port_file, server)
    return server, int(port_file.read_text())


def rounds(name, n, modes, one_run, describe):
    """{setup: [its result in each round]}: `one_run(setup)` for every setup once per round, in
    turn; each result logged with `describe(result)`."""
    runs = {m: [] for m in modes}
    for rnd in range(n):
        for mode in modes:
            res = one_run(mode)
            runs[mode].append(res)
            log(f"{name} round {rnd + 1}/{n}: {mode}: {describe(res)}")
    return runs


def per_round(runs, num, den, f):
    """`f(num's result, den's result)` round by round."""
    return [f(x, y) for x, y in zip(runs[num], runs[den])]


def finish(name, meta, result, write_section, bad, what):
    """Writes bench/results/`name`.json and the section (`write_section(result)`); exits 1 when
    `bad` (the setups that did not do what they say) is not empty."""
    meta["seconds"] = time.time() - meta.pop("started")
    result["meta"] = meta
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    write_section(result)
    log(f"done in {meta['seconds']:.0f} s; wrote bench/results/{name}.json and {what}")
    if bad:
        log("INVALID RUN (the setups did not do what they say):\n  " + "\n  ".join(bad))
        sys.exit(1)
