//! Leaving fast whatever was attached, as root against the real kernel.
//!
//! The target is a Go program generated here (`write_target`): N `//go:noinline` functions with
//! three RETs each (four uprobes per function), all called in a hot loop that prints its call rate
//! every half second. gotel traces every one of them (`main.f*`), then gets SIGTERM.
//!
//! * `sigterm_with_thousands_of_uprobes_exits_in_seconds`: 600 functions, 2,402 uprobes; spans
//!   arrive; gotel exits within 20 s of SIGTERM (perf-event uprobes took 0.12 s each to remove:
//!   about 5 minutes here) and the target keeps running at a quarter of its speed before attach
//!   or better. `GOTEL_UPROBE_MULTI=off` in the test's environment is forwarded to gotel: the
//!   test then fails on the exit bound, as the old code did.
//! * `bench_attach_detach` (ignored; `bench/detach.sh`): attach and detach times for several
//!   uprobe counts, uprobe_multi and perf events, as the table in BENCHMARKS.md.
//!
//! Needs root, Go and a built gotel (`GOTEL_BIN`). Run with `--test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use gotel_e2e::{go_bin, gotel_command, require_environment, run, Export, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
/// Uprobes per generated function: its entry and three RETs.
const UPROBES_PER_FUNCTION: usize = 4;
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// Writes and builds a Go program with `n` functions `main.f00000`... into `dir`.
fn write_target(dir: &Path, n: usize) -> Result<PathBuf> {
    let mut src = String::from("package main\n\nimport (\n\t\"fmt\"\n\t\"time\"\n)\n\nvar sink uint64\n\n");
    for i in 0..n {
        // Three returns that the compiler keeps as three RET instructions.
        src.push_str(&format!(
            "//go:noinline\nfunc f{i:05}(x uint64) uint64 {{\n\tif x&1 == 0 {{\n\t\treturn x*{m} + 1\n\t}}\n\
             \tif x&2 == 0 {{\n\t\treturn x ^ {i}\n\t}}\n\treturn x + 7\n}}\n\n",
            m = i + 3
        ));
    }
    src.push_str("var fns = []func(uint64) uint64{\n");
    for i in 0..n {
        src.push_str(&format!("\tf{i:05},\n"));
    }
    src.push_str(
        "}\n\nfunc main() {\n\tlast := time.Now()\n\tvar calls uint64\n\tfor {\n\t\tfor _, f := range fns {\n\
         \t\t\tsink += f(sink)\n\t\t}\n\t\tcalls += uint64(len(fns))\n\t\tif now := time.Now(); now.Sub(last) >= \
         500*time.Millisecond {\n\t\t\tfmt.Printf(\"rate %.0f\\n\", float64(calls)/now.Sub(last).Seconds())\n\
         \t\t\tlast, calls = now, 0\n\t\t}\n\t}\n}\n",
    );
    std::fs::write(dir.join("main.go"), src)?;
    std::fs::write(dir.join("go.mod"), "module detachtarget\n\ngo 1.21\n")?;
    let out = dir.join("target");
    let mut cmd = Command::new(go_bin());
    cmd.arg("build").arg("-o").arg(&out).arg(".");
    cmd.current_dir(dir).env("GOTOOLCHAIN", "local").env("CGO_ENABLED", "0");
    let (st, so, se) = run("go build detach target", cmd, Duration::from_secs(300))?;
    if !st.success() {
        bail!("go build of the generated target failed: {st}\n{so}{se}");
    }
    Ok(out)
}

/// Calls per second the target printed, in order.
fn rates(target: &Proc) -> Vec<f64> {
    target.stdout_string().lines().filter_map(|l| l.strip_prefix("rate ")?.trim().parse().ok()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `key=value` of a log line, as a number.
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(|c: char| c.is_whitespace()).next()?.trim_matches('"').parse().ok()
}

struct Run {
    uprobes: usize,
    method: &'static str,
    attach_ms: f64,
    exit_after_sigterm: Duration,
    rate_before: f64,
    rate_after: f64,
}

/// Starts the target with `functions` functions, attaches gotel to all of them, sends SIGTERM
/// after `traced_for`, and measures. `check` runs while attached.
fn attach_and_leave(
    functions: usize,
    mut gotel: Command,
    traced_for: Duration,
    exit_bound: Duration,
    check: impl FnOnce() -> Result<()>,
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let bin = write_target(dir.path(), functions)?;
    let mut target = Proc::spawn("target", Command::new(&bin))?;
    if !gotel_e2e::wait_until(Duration::from_secs(20), || rates(&target).len() >= 4) {
        bail!("the target printed no rates: {}", target.stderr_string());
    }
    let rate_before = median(rates(&target).split_off(1));
    gotel.arg("--pid").arg(target.pid().to_string());
    let mut g = Proc::spawn("gotel", gotel)?;
    let attached = g.wait_stderr_line("attached pid=", Duration::from_secs(120))?;
    let how = g.stderr_string();
    let method = if how.contains("attached as uprobe_multi links") { "uprobe_multi" } else { "perf events" };
    let attach_ms = how
        .lines()
        .find(|l| l.contains("uprobes attached as"))
        .and_then(|l| field(l, "ms"))
        .context("no `uprobes attached` line")?;
    let uprobes = field(&attached, "uprobes").context("no uprobes= in the attached line")? as usize;
    check()?;
    std::thread::sleep(traced_for);
    let sent = Instant::now();
    g.signal(libc::SIGTERM);
    let status = g.wait_timeout(exit_bound).with_context(|| {
        format!("gotel ({method}, {uprobes} uprobes) did not exit within {exit_bound:?} of SIGTERM")
    })?;
    let exit_after_sigterm = sent.elapsed();
    if !status.success() {
        bail!("gotel exited with {status} after SIGTERM:\n{}", g.stderr_string());
    }
    // Back to speed within seconds: the best half second of the next ten.
    let seen = rates(&target).len();
    let best_after = |t: &Proc| rates(t)[seen..].iter().copied().fold(0.0, f64::max);
    gotel_e2e::wait_until(Duration::from_secs(10), || best_after(&target) >= rate_before / 4.0);
    if target.try_wait()?.is_some() || rates(&target).len() <= seen {
        bail!("the target stopped working after gotel left:\n{}", target.stderr_string());
    }
    let rate_after = best_after(&target);
    if rate_after < rate_before / 4.0 {
        eprintln!("target rates (calls/s), SIGTERM after line {seen}: {:?}", rates(&target));
    }
    Ok(Run { uprobes, method, attach_ms, exit_after_sigterm, rate_before, rate_after })
}

#[test]
fn sigterm_with_thousands_of_uprobes_exits_in_seconds() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut gotel = gotel_command(&Export::Grpc(sink.grpc_endpoint()), "main.f*");
    // Every call is traced in the kernel; exporting one in a thousand keeps the sink calm.
    gotel.env("OTEL_TRACES_SAMPLER", "traceidratio").env("OTEL_TRACES_SAMPLER_ARG", "0.001");
    if let Ok(v) = std::env::var("GOTEL_UPROBE_MULTI") {
        gotel.env("GOTEL_UPROBE_MULTI", v);
    }
    let run = attach_and_leave(600, gotel, Duration::from_secs(2), EXIT_BOUND, || {
        let spans = sink.wait_spans(1, Duration::from_secs(30))?;
        let foreign: Vec<_> = spans.iter().filter(|s| !s.name.starts_with("main.f")).map(|s| &s.name).collect();
        if !foreign.is_empty() {
            bail!("spans of functions that were not traced: {foreign:?}");
        }
        Ok(())
    })
    .unwrap();
    eprintln!(
        "{} uprobes ({}): attach {:.0} ms, exit {:.2?} after SIGTERM; target {:.0} calls/s before, {:.0} after",
        run.uprobes, run.method, run.attach_ms, run.exit_after_sigterm, run.rate_before, run.rate_after
    );
    assert!(run.uprobes >= 2000, "only {} uprobes attached", run.uprobes);
    assert!(
        run.rate_after >= run.rate_before / 4.0,
        "the target runs at {:.0} calls/s after gotel left, {:.0} before",
        run.rate_after,
        run.rate_before
    );
}

/// `DETACH_BENCH` = `mode:count,count;mode:count...` (mode `on` = uprobe_multi, `off` = perf
/// events); default `on:200,2000,10000;off:200,500`. Prints one table row per run.
#[test]
#[ignore = "benchmark: bench/detach.sh"]
fn bench_attach_detach() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let plan = std::env::var("DETACH_BENCH").unwrap_or_else(|_| "on:200,2000,10000;off:200,500".into());
    println!("| method | uprobes | attach | per uprobe | exit after SIGTERM | per uprobe |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for part in plan.split(';') {
        let (mode, counts) = part.split_once(':').expect("mode:counts");
        for count in counts.split(',') {
            let count: usize = count.trim().parse().expect("a count");
            let mut gotel = gotel_command(&Export::Console, "main.f*");
            gotel.env("OTEL_TRACES_EXPORTER", "none").env("GOTEL_UPROBE_MULTI", mode);
            let functions = count.div_ceil(UPROBES_PER_FUNCTION);
            let run = attach_and_leave(functions, gotel, Duration::from_secs(2), Duration::from_secs(3600), || Ok(()))
                .unwrap();
            let exit = run.exit_after_sigterm.as_secs_f64();
            println!(
                "| {} | {} | {:.3} s | {:.1} µs | {:.2} s | {:.2} ms |",
                run.method,
                run.uprobes,
                run.attach_ms / 1e3,
                run.attach_ms * 1e3 / run.uprobes as f64,
                exit,
                exit * 1e3 / run.uprobes as f64
            );
        }
    }
}
