#!/usr/bin/env python3
"""Node mode: what each traced process costs in kernel memory and attach time (BENCHMARKS.md §9).

    bench/node_memory.py [--targets 1,4] [--before GOTEL] [--ring 1048576]

N copies of a small Go program (e2e/goapps/stress, a traced function called every 5 ms) run
under one node-mode gotel (`--node --select exe=DIR/t*`, GOTEL_PROBES=main.tick, export off).
Once every target is attached (plus 3 s), the kernel memory gotel holds is summed from
/proc/GOTEL/fdinfo: `memlock` over the distinct BPF map ids and program ids (programs count
their JITed image). Also the programs' count and each target's attach time (gotel's `attached`
log line, `ms`). Prints one Markdown row per build and N. Root only.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GO = os.environ.get("GO", "/usr/local/go/bin/go")


def build_stress(out):
    subprocess.run([GO, "build", "-o", str(out), "."], cwd=ROOT / "e2e" / "goapps" / "stress", check=True)


def kernel_objects(pid):
    maps, progs = {}, {}
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            info = fd.read_text()
        except OSError:
            continue
        fields = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
        mem = int(fields.get("memlock", "0").strip() or 0)
        if "map_id" in fields:
            maps[int(fields["map_id"])] = mem
        elif "prog_id" in fields:
            progs[int(fields["prog_id"])] = mem
    return maps, progs


def measure(gotel, n, ring, stress, work):
    d = Path(tempfile.mkdtemp(dir=work))
    for i in range(n):
        shutil.copy(stress, d / f"t{i}")
    env = dict(os.environ, GOTEL_PROBES="main.tick", OTEL_TRACES_EXPORTER="none",
               GOTEL_RING_BUFFER_BYTES=str(ring), GOTEL_LOG="info")
    log = open(d / "gotel.log", "w+")
    g = subprocess.Popen([gotel, "--node", "--select", f"exe={d}/t*"], env=env, stderr=log, stdout=log)
    targets = []
    try:
        time.sleep(1.5)
        for i in range(n):
            targets.append(subprocess.Popen([str(d / f"t{i}"), "-mode", "steady", "-n", "100000",
                                             "-interval-ms", "5"], stdout=subprocess.DEVNULL))
        deadline = time.time() + 60
        while time.time() < deadline:
            text = (d / "gotel.log").read_text()
            if len(re.findall(r"\battached\b(?! as)", text)) >= n:
                break
            time.sleep(0.2)
        time.sleep(3)
        text = (d / "gotel.log").read_text()
        attach_ms = [float(m.group(1)) for line in text.splitlines()
                     if re.search(r"\battached\b", line) and "uprobes attached" not in line
                     for m in [re.search(r"\bms=([0-9.]+)", line)] if m]
        maps, progs = kernel_objects(g.pid)
        return sum(maps.values()), len(maps), sum(progs.values()), len(progs), attach_ms
    finally:
        for t in targets:
            t.kill()
        g.terminate()
        try:
            g.wait(30)
        except subprocess.TimeoutExpired:
            g.kill()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="1,4")
    ap.add_argument("--before")
    ap.add_argument("--ring", type=int, default=1 << 20)
    ap.add_argument("--gotel", default=str(ROOT / "target" / "release" / "gotel"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("node_memory: needs root (uprobes)")
    work = Path(tempfile.mkdtemp())
    os.chmod(work, 0o755)
    stress = work / "stress"
    build_stress(stress)
    builds = ([("before", a.before)] if a.before else []) + [("gotel", a.gotel)]
    mib = lambda b: b / (1 << 20)
    print("| build | targets | maps | map memory | programs | program memory | attach ms per target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in [int(x) for x in a.targets.split(",")]:
        for name, path in builds:
            mem, nmaps, pmem, nprogs, ms = measure(path, n, a.ring, stress, work)
            ms_text = ", ".join(f"{x:.0f}" for x in ms)
            print(f"| {name} | {n} | {nmaps} | {mib(mem):.1f} MiB | {nprogs} | {mib(pmem):.2f} MiB | {ms_text} |",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
