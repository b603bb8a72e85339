//! Hardening, as root against the real kernel: stress.
//!
//! * **Stress** (`stress_*`): 10k goroutines inside traced calls, deep stack growth, panics and
//!   recover, `runtime.Goexit`, heavy GC, goroutines migrating between threads. The program
//!   (`e2e/goapps/stress`) prints the same stdout and exits with the same code with and without
//!   tracing; every call is one span (a call unwound by a panic or Goexit an ERROR span marked
//!   `gotel.unwound`); gotel's goroutine map, scraped from
//!   `/metrics` during and after the work, stays below `GOTEL_MAX_GOROUTINES`.
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); without root each
//! test is skipped with one line (a failure under `GOTEL_TEST_REQUIRE_ALL=1`, as `tools/test.sh`
//! runs them). Every wait is bounded, every address is 127.0.0.1, every process is killed when
//! its handle drops. Run with `--test-threads=1`. Helpers: `gotel_e2e::hardening`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use gotel_e2e::hardening::*;
use gotel_e2e::{private_copy, require_environment, wait_until, Export, FlatSpan, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");

// ---------------------------------------------------------------------------------------------
// (c) Target safety under stress
// ---------------------------------------------------------------------------------------------

struct StressRun {
    summary: BTreeMap<String, u64>,
    expect: StressExpect,
    spans: Vec<FlatSpan>,
    /// gotel_goroutines_tracked while the program worked, and after it finished (held).
    tracked_during: Vec<f64>,
    tracked_after: Vec<f64>,
    stderr: String,
}

/// Runs `stress ARGS` untraced, then under gotel (launch mode, every function traced, spans to
/// the sink), holding the program after its work so the map can be scraped "after". Checks that
/// stdout and the exit code are the same.
fn stress_run(args: &[&str], env: &[(&str, &str)], max_goroutines: u32) -> StressRun {
    require_environment().unwrap();
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["-exit", "3"]);
    let (ref_st, ref_out, ref_exp) = reference(&args, env);
    assert_eq!(ref_st.code(), Some(3));

    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let exp = dir.path().join("expect.json");
    let hold = dir.path().join("hold");
    let (exp_s, hold_s) = (exp.display().to_string(), hold.display().to_string());
    args.extend(["-expect", &exp_s, "-hold-file", &hold_s]);
    let mut genv: Vec<(&str, &str)> = env.to_vec();
    let maxg = max_goroutines.to_string();
    genv.push(("GOTEL_MAX_GOROUTINES", &maxg));
    let (mut gotel, maddr) = launch(&Export::Grpc(sink.grpc_endpoint()), &bin, &args, &genv);
    let scraper = Scraper::start(maddr);
    assert!(
        wait_until(RUN_TIMEOUT, || exp.exists() || gotel.try_wait().ok().flatten().is_some()),
        "the program did not finish its work"
    );
    assert!(exp.exists(), "gotel exited early\n{}", gotel.stderr_string());
    let t_done = Instant::now();
    // Two metric refreshes (every second) after the work.
    std::thread::sleep(Duration::from_millis(2300));
    let tracked_after = scraper.samples_since(t_done + Duration::from_millis(1100), "gotel_goroutines_tracked");
    let tracked_during = scraper.series("gotel_goroutines_tracked");
    std::fs::write(&hold, b"go").unwrap();
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    drop(scraper);
    let stderr = gotel.stderr_string();
    assert_no_panic("gotel", &stderr);
    assert_eq!(st.code(), ref_st.code(), "traced exit status {st} differs from untraced {ref_st}\n{stderr}");
    assert_eq!(gotel.stdout_string(), ref_out, "traced stdout differs from the untraced run");
    let expect = StressExpect::load(&exp);
    assert_eq!(expect.counts, ref_exp.counts, "the traced program did different work");
    // At least every returned call is a span (calls that never returned are spans too).
    let spans = sink.wait_spans(expect.returned() as usize, SPAN_TIMEOUT).unwrap();
    let spans = if spans.len() >= expect.returned() as usize {
        sink.wait_quiet(Duration::from_millis(300), SPAN_TIMEOUT).unwrap()
    } else {
        spans
    };
    let summary = the_summary(&stderr);
    assert!(!tracked_during.is_empty() && !tracked_after.is_empty(), "no /metrics samples");
    for v in tracked_during.iter().chain(&tracked_after) {
        assert!(*v <= max_goroutines as f64, "gotel_goroutines_tracked {v} > GOTEL_MAX_GOROUTINES {max_goroutines}");
    }
    StressRun { summary, expect, spans, tracked_during, tracked_after, stderr }
}

fn is_unwound(s: &FlatSpan) -> bool {
    s.attributes.get("gotel.unwound").and_then(|v| v.as_bool()) == Some(true)
}

/// Calls entered minus calls returned, per function (the calls unwound by panic or Goexit).
fn unwound_counts(e: &StressExpect) -> BTreeMap<String, i64> {
    e.entries
        .iter()
        .map(|(k, v)| (k.clone(), v - e.counts.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Every call is exactly one span: a call that returned is a span, a call unwound by a panic
/// or `runtime.Goexit` is an ERROR span marked `gotel.unwound`; nothing is lost.
fn assert_exact(r: &StressRun, label: &str) {
    let s = &r.summary;
    let (unwound, returned): (Vec<FlatSpan>, Vec<FlatSpan>) = r.spans.iter().cloned().partition(is_unwound);
    assert_eq!(
        count_by_name(&returned),
        r.expect.nonzero(),
        "{label}: spans per function vs calls that returned\n{}",
        r.stderr
    );
    assert_eq!(
        count_by_name(&unwound),
        unwound_counts(&r.expect),
        "{label}: gotel.unwound spans per function vs calls that never returned"
    );
    let ids: HashSet<&str> = r.spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), r.spans.len(), "{label}: duplicate span ids");
    let entered = r.expect.entered();
    assert_eq!(field(s, "calls"), entered, "{label}: calls seen vs entered: {s:?}");
    assert_eq!(field(s, "spans"), entered, "{label}: {s:?}");
    assert_eq!(field(s, "exported"), entered, "{label}: {s:?}");
    assert_eq!(field(s, "unwound_calls_exported_as_errors"), entered - r.expect.returned(), "{label}: {s:?}");
    for k in [
        "lost_ring_buffer_full",
        "lost_queue_full",
        "lost_export_failed",
        "not_traced_depth_overflow",
        "unmatched_returns",
        "malformed_records",
    ] {
        assert_eq!(field(s, k), 0, "{label}: {k}: {s:?}");
    }
    for sp in &r.spans {
        assert!(sp.end_unix_nano >= sp.start_unix_nano, "{label}: negative duration {sp:?}");
        if is_unwound(sp) {
            assert_eq!(sp.status_code, 2, "{label}: an unwound call's span is not an error: {sp:?}");
        }
    }
}

#[test]
fn stress_10k_goroutines_bounded_map() {
    gotel_e2e::require!(Root, Go);
    let r = stress_run(&["-mode", "goroutines", "-n", "10000", "-peak-ms", "2500"], &[], 16384);
    assert_exact(&r, "10k goroutines");
    // The map showed the 10k goroutines inside gate() at once, and emptied afterwards.
    let peak = r.tracked_during.iter().cloned().fold(0.0, f64::max);
    assert!(peak >= 9000.0, "peak gotel_goroutines_tracked {peak}: the 10k goroutines in traced calls were not seen");
    let after = r.tracked_after.iter().cloned().fold(0.0, f64::max);
    assert!(after <= 16.0, "gotel_goroutines_tracked stays at {after} after every traced call returned");
}

/// More goroutines in traced calls than `GOTEL_MAX_GOROUTINES`: the map stays at its bound, the
/// program is unharmed, and the calls whose state was evicted are counted, not silently lost.
#[test]
fn stress_goroutines_over_map_limit() {
    gotel_e2e::require!(Root, Go);
    let r = stress_run(&["-mode", "goroutines", "-n", "10000", "-peak-ms", "1500"], &[], 1024);
    let s = &r.summary;
    let peak = r.tracked_during.iter().cloned().fold(0.0, f64::max);
    assert!(peak >= 512.0, "peak gotel_goroutines_tracked {peak}");
    assert_eq!(field(s, "calls"), r.expect.entered(), "{s:?}");
    // Each call is a span, or a return whose entry was evicted (counted).
    assert_eq!(field(s, "spans") + field(s, "unmatched_returns"), r.expect.entered(), "calls unaccounted for: {s:?}");
    assert!(field(s, "unmatched_returns") > 0, "with 10k goroutines and 1024 slots something must be evicted: {s:?}");
    assert_eq!(r.spans.len() as u64, field(s, "spans"), "spans delivered vs summary {s:?}");
    assert_eq!(field(s, "exported"), field(s, "spans"), "{s:?}");
}

#[test]
fn stress_deep_stacks_panics_goexit() {
    gotel_e2e::require!(Root, Go);
    let r = stress_run(&["-mode", "deep,panic,goexit"], &[], 16384);
    assert_exact(&r, "deep/panic/goexit");
    // The workload did unwind calls (panics, Goexit): all of them are spans too (assert_exact).
    assert!(r.expect.entered() > r.expect.returned());
    let grow = r.spans.iter().filter(|s| s.name == "main.grow").count();
    assert_eq!(grow as i64, r.expect.counts["main.grow"]);
}

#[test]
fn stress_heavy_gc_and_migration() {
    gotel_e2e::require!(Root, Go);
    let r = stress_run(&["-mode", "gc,migrate"], &[("GOGC", "1"), ("GOMAXPROCS", "4")], 16384);
    assert_exact(&r, "gc/migrate");
    // Goroutines did migrate: hop spans ran on more than one thread.
    let threads: HashSet<i64> =
        r.spans.iter().filter(|s| s.name == "main.hop").filter_map(|s| s.attr_i64("thread.id")).collect();
    assert!(threads.len() >= 2, "main.hop ran on {} thread(s)", threads.len());
}
