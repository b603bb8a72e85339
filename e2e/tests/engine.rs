//! gotel's engine, end to end, as root against the real kernel.
//!
//! For a normal, a stripped (`-ldflags=-s -w`) and a PIE build of `e2e/goapps/engine`, in launch
//! mode (`gotel -- ./engine ...`) and in `--pid` mode: the program's output is unchanged, every
//! call that returned is exactly one span, with the right parent, trace and duration, and nothing
//! is mis-paired across goroutines, panics, `runtime.Goexit` or stack growth. Spans go to a real
//! OTLP receiver (`otlp-sink`) over gRPC or HTTP/protobuf, or to stdout with the console exporter.
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); without either every
//! test fails (never skips).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use gotel_e2e::check::{check_spans, RunInfo};
use gotel_e2e::sink::{flatten_request, parse_console_line};
use gotel_e2e::{
    build_go, go_bin, gotel_command, private_copy, require_environment, run, Expectation, Export, FlatSpan, Proc, Sink,
    Variant,
};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const APP: &str = "engine";
/// The engine's workload in every test (about 2000 spans).
const ARGS: &[&str] = &[
    "-workers",
    "4",
    "-iters",
    "50",
    "-depth",
    "300",
    "-deep",
    "12",
    "-guards",
    "3",
    "-quitters",
    "8",
    "-fanout",
    "6",
    "-catch",
    "9",
    "-blockers",
    "200",
];

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const SPAN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the untraced program does.
struct Reference {
    stdout: String,
    code: Option<i32>,
    expect: Expectation,
}

fn binary(variant: Variant) -> PathBuf {
    binary_with(&go_bin(), variant)
}

fn binary_with(go: &Path, variant: Variant) -> PathBuf {
    build_go(go, APP, variant).expect("go build")
}

/// Runs the untraced program once per variant and extra arguments.
fn reference(variant: Variant, extra: &[&str]) -> &'static Reference {
    reference_with(&go_bin(), variant, extra)
}

fn reference_with(go: &Path, variant: Variant, extra: &[&str]) -> &'static Reference {
    type Key = (PathBuf, Variant, Vec<String>);
    static REFS: OnceLock<std::sync::Mutex<HashMap<Key, &'static Reference>>> = OnceLock::new();
    let refs = REFS.get_or_init(Default::default);
    let mut refs = refs.lock().unwrap_or_else(|e| e.into_inner());
    let key = (go.to_path_buf(), variant, extra.iter().map(|s| s.to_string()).collect());
    if let Some(r) = refs.get(&key) {
        return r;
    }
    let bin = binary_with(go, variant);
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("expect.json");
    let mut cmd = Command::new(&bin);
    cmd.args(ARGS).args(extra).arg("-expect").arg(&exp);
    let (st, stdout, stderr) = run("engine (untraced)", cmd, RUN_TIMEOUT).unwrap();
    assert!(stdout.ends_with("done\n"), "untraced engine failed: {st}\n{stdout}\n{stderr}");
    let r: &'static Reference =
        Box::leak(Box::new(Reference { stdout, code: st.code(), expect: Expectation::load(&exp).unwrap() }));
    refs.insert(key, r);
    r
}

fn engine_source() -> &'static str {
    static SRC: OnceLock<String> = OnceLock::new();
    SRC.get_or_init(|| std::fs::read_to_string(gotel_e2e::goapp_dir(APP).join("main.go")).unwrap())
}

fn info<'a>(
    variant: Variant,
    expect: &'a Expectation,
    counts: std::collections::BTreeMap<String, i64>,
    pid: Option<u32>,
    transport: &'a str,
    t0: SystemTime,
    t1: SystemTime,
) -> RunInfo<'a> {
    RunInfo {
        label: format!("{} build via {transport}", variant.name()),
        expect,
        counts,
        pid,
        transport,
        t0,
        t1,
        service: "gotel-e2e",
        executable: APP,
        source_suffix: "goapps/engine/main.go",
        source: engine_source(),
        line_slack: 0,
    }
}

/// Waits for `want` spans, then a little longer to catch any extra (duplicate) span.
fn collect_spans(sink: &Sink, want: usize) -> Vec<FlatSpan> {
    let t = std::time::Instant::now();
    sink.wait_spans(want, SPAN_TIMEOUT).unwrap();
    let spans = sink.wait_quiet(Duration::from_millis(500), SPAN_TIMEOUT).unwrap();
    eprintln!("{} spans received (want {want}) after {:?}", spans.len(), t.elapsed());
    spans
}

fn sink_export(sink: &Sink, transport: &str) -> Export {
    match transport {
        "grpc" => Export::Grpc(sink.grpc_endpoint()),
        "http" => Export::HttpProtobuf(sink.http_endpoint()),
        t => panic!("transport {t}"),
    }
}

/// `gotel [env] -- ./engine ARGS`: launch mode.
fn launch_mode(variant: Variant, transport: &str) {
    launch_mode_with(variant, transport, &[]);
}

/// Launch mode with extra program arguments; gotel must exit with the program's exit code.
fn launch_mode_with(variant: Variant, transport: &str, extra: &[&str]) {
    launch_mode_go(&go_bin(), variant, transport, extra);
}

/// A launch-mode run that has ended: the program's expectation, and the sink that got the spans.
struct Launched {
    expect: Expectation,
    t0: SystemTime,
    t1: SystemTime,
    sink: Sink,
    _dir: tempfile::TempDir,
}

/// `gotel [env] -- ./engine ARGS extra` on a build made with the Go toolchain `go`, tracing
/// `probes` (the engine's own list when `None`) into a fresh sink over `transport`. gotel must
/// exit with the untraced program's exit code, and the program print and do the same.
fn launch(go: &Path, variant: Variant, transport: &str, probes: Option<&str>, extra: &[&str]) -> Launched {
    require_environment().unwrap();
    let r = reference_with(go, variant, extra);
    let dir = tempfile::tempdir().unwrap();
    let bin = private_copy(&binary_with(go, variant), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let exp_path = dir.path().join("expect.json");

    let probes = probes.map_or_else(|| r.expect.probes_env(), str::to_string);
    let mut cmd = gotel_command(&sink_export(&sink, transport), &probes);
    cmd.arg("--").arg(&bin).args(ARGS).args(extra).arg("-expect").arg(&exp_path);
    let t0 = SystemTime::now();
    let (st, stdout, stderr) = run("gotel", cmd, RUN_TIMEOUT).unwrap();
    let t1 = SystemTime::now();
    assert_eq!(
        st.code(),
        r.code,
        "gotel -- engine exited with {st}, want the program's {:?}\nstderr:\n{stderr}",
        r.code
    );
    assert_eq!(stdout, r.stdout, "traced program's stdout differs from the untraced run");
    let expect = Expectation::load(&exp_path).unwrap();
    assert_eq!(expect.counts, r.expect.counts, "traced program did different work");
    Launched { expect, t0, t1, sink, _dir: dir }
}

/// Launch mode on a build made with the Go toolchain `go`.
fn launch_mode_go(go: &Path, variant: Variant, transport: &str, extra: &[&str]) {
    let Launched { expect, t0, t1, sink, _dir } = launch(go, variant, transport, None, extra);
    let spans = collect_spans(&sink, Expectation::total(&expect.counts));
    let mut info = info(variant, &expect, expect.counts.clone(), None, transport, t0, t1);
    if go.to_string_lossy().contains("go-1.19") {
        info.line_slack = 2; // no declaration lines in Go 1.19 binaries
        info.label = format!("Go 1.19 {}", info.label);
    }
    check_spans(&spans, &info);
    // Launch mode misses nothing: the first call of main is there.
    assert_eq!(spans.iter().filter(|s| s.name == "main.first").count(), 1);
}

/// The engine started waiting, gotel attached by pid (`--pid`, or `--exe` when `by_exe`).
struct Attached {
    program: Proc,
    gotel: Proc,
    release: PathBuf,
    exp_path: PathBuf,
    by_exe: bool,
}

fn attach(variant: Variant, dir: &Path, export: &Export, by_exe: bool) -> Attached {
    let r = reference(variant, &[]);
    let bin = private_copy(&binary(variant), dir).unwrap();
    let release = dir.join("release");
    let ready = dir.join("ready");
    let exp_path = dir.join("expect.json");
    let mut pcmd = Command::new(&bin);
    pcmd.args(ARGS).arg("-wait-file").arg(&release).arg("-expect").arg(&exp_path);
    let mut program = Proc::spawn("engine", pcmd).unwrap();
    // main.first has run: it is not traced in this mode.
    program.wait_stderr_line("engine: waiting", Duration::from_secs(30)).unwrap();

    let mut gcmd = gotel_command(export, &r.expect.probes_env());
    if by_exe {
        gcmd.arg("--exe").arg(&bin);
    } else {
        gcmd.arg("--pid").arg(program.pid().to_string());
    }
    gcmd.arg("--ready-file").arg(&ready);
    let mut gotel = Proc::spawn("gotel", gcmd).unwrap();
    // Polled every millisecond: a test may signal gotel right after it says it is ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready.exists() && gotel.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let attached = ready.exists();
    assert!(
        ready.exists(),
        "gotel did not create its ready file (attached={attached}, exit={:?})\nstderr:\n{}",
        gotel.try_wait().ok().flatten(),
        gotel.stderr_string()
    );
    Attached { program, gotel, release, exp_path, by_exe }
}

/// Releases the program and waits for it and (unless `--exe`, which waits for the next process)
/// for gotel to exit; returns the expectation.
fn finish(a: &mut Attached, r: &Reference) -> Expectation {
    std::fs::write(&a.release, b"go").unwrap();
    let st = a.program.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(st.success(), "traced engine exited with {st}\nstderr:\n{}", a.program.stderr_string());
    assert_eq!(a.program.stdout_string(), r.stdout, "traced program's stdout differs from the untraced run");
    if !a.by_exe {
        // gotel exits 0 by itself once the target exited and everything is flushed.
        let gst = a.gotel.wait_timeout(Duration::from_secs(60)).unwrap();
        assert!(gst.success(), "gotel exited with {gst} after its target exited\nstderr:\n{}", a.gotel.stderr_string());
    }
    let expect = Expectation::load(&a.exp_path).unwrap();
    assert_eq!(expect.counts, r.expect.counts, "traced program did different work");
    expect
}

/// A fresh sink, and the engine waiting with gotel attached (see `attach`) exporting there.
struct PidRun {
    a: Attached,
    r: &'static Reference,
    variant: Variant,
    transport: &'static str,
    pid: u32,
    t0: SystemTime,
    sink: Sink,
    dir: tempfile::TempDir,
}

fn pid_run(variant: Variant, transport: &'static str, by_exe: bool) -> PidRun {
    require_environment().unwrap();
    let r = reference(variant, &[]);
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let t0 = SystemTime::now();
    let a = attach(variant, dir.path(), &sink_export(&sink, transport), by_exe);
    let pid = a.program.pid();
    PidRun { a, r, variant, transport, pid, t0, sink, dir }
}

impl PidRun {
    /// The program's calls after gotel attached, up to `t1`, are exactly the spans, each right.
    fn check(&self, expect: &Expectation, t1: SystemTime) {
        let counts = expect.counts_without_startup();
        let spans = collect_spans(&self.sink, Expectation::total(&counts));
        check_spans(&spans, &info(self.variant, expect, counts, Some(self.pid), self.transport, self.t0, t1));
    }
}

/// `gotel --pid PID` on a program that is already running.
fn pid_mode(variant: Variant, transport: &'static str) {
    let mut p = pid_run(variant, transport, false);
    let expect = finish(&mut p.a, p.r);
    p.check(&expect, SystemTime::now());
}

#[test]
fn launch_normal_http_protobuf() {
    gotel_e2e::require!(Root, Go);
    launch_mode(Variant::Normal, "http");
}

#[test]
fn launch_stripped_grpc() {
    gotel_e2e::require!(Root, Go);
    launch_mode(Variant::Stripped, "grpc");
}

#[test]
fn launch_pie_http_protobuf() {
    gotel_e2e::require!(Root, Go);
    launch_mode(Variant::Pie, "http");
}

/// The program's exit code comes back from gotel, and `os.Exit` loses no span.
#[test]
fn launch_exit_code_passes_through() {
    gotel_e2e::require!(Root, Go);
    let r = reference(Variant::Normal, &["-exit", "7"]);
    assert_eq!(r.code, Some(7));
    launch_mode_with(Variant::Normal, "grpc", &["-exit", "7"]);
}

/// A traced call made by a deferred `recover` function while the panicking traced frames are
/// still on the stack: its span's parent must be a span that exists (safeCall, or explode if
/// gotel exported unwound calls), never a call that produced no span.
#[test]
fn launch_traced_call_in_deferred_recover() {
    gotel_e2e::require!(Root, Go);
    launch_mode_with(Variant::Normal, "http", &["-unwind-calls"]);
}

/// `GOTEL_PROBES=main.*`: every function of the program, closures, goroutine wrappers and
/// deferred-call wrappers included, and recursion deeper than gotel's per-goroutine frame limit
/// (`main.recurse`). The panic and Goexit paths, covered above, are off here.
#[test]
fn launch_glob_every_function_of_main() {
    gotel_e2e::require!(Root, Go);
    let extra = ["-guards", "0", "-catch", "0", "-quitters", "0"];
    let Launched { expect, t0, t1, sink, _dir } = launch(&go_bin(), Variant::Normal, "http", Some("main.*"), &extra);
    // Functions never nested deeper than the frame limit: exactly one span per return.
    let mut want = expect.counts.clone();
    want.remove("main.bottom"); // called 300 frames down a traced recursion: not traced
    want.insert("main.main".into(), 1);
    want.insert("main.writeExpect".into(), 1);
    let spans = collect_spans(&sink, Expectation::total(&want));
    let mut problems = gotel_e2e::check::structural_problems(&spans, t0, t1);
    let mut got: std::collections::BTreeMap<&str, i64> = Default::default();
    for s in &spans {
        *got.entry(s.name.as_str()).or_default() += 1;
        if !s.name.starts_with("main.") {
            problems.push(format!("span {:?} is not in package main", s.name));
        }
    }
    for (name, n) in &want {
        let have = got.get(name.as_str()).copied().unwrap_or(0);
        if have != *n {
            problems.push(format!("{name}: {have} spans, want {n}"));
        }
    }
    // main.main is the one root of the main goroutine; everything it calls directly is its child.
    let main_id = spans.iter().find(|s| s.name == "main.main").map(|s| s.span_id.clone()).unwrap_or_default();
    for s in spans
        .iter()
        .filter(|s| ["main.first", "main.catcher", "main.fanout", "main.writeExpect"].contains(&s.name.as_str()))
    {
        if s.parent_span_id != main_id {
            problems
                .push(format!("{} {}: parent {:?}, want main.main {main_id:?}", s.name, s.span_id, s.parent_span_id));
        }
    }
    // The traced recursion deeper than the frame limit: some frames traced, each under a
    // recurse / grow / shrinker span.
    let recurse = got.get("main.recurse").copied().unwrap_or(0);
    if !(3..=3 * 301).contains(&recurse) {
        problems.push(format!("main.recurse: {recurse} spans"));
    }
    assert!(problems.is_empty(), "{} spans, problems:\n  {}", spans.len(), problems.join("\n  "));
}

// Older Go toolchains (Debian's, from tools/install-deps.sh): other pclntab layouts, other
// runtimes. Each must be installed; a missing one fails the test.

#[test]
fn launch_go1_19_normal() {
    gotel_e2e::require!(Root, Go, GoVersion("1.19"));
    launch_mode_go(&gotel_e2e::go_version_bin("1.19").unwrap(), Variant::Normal, "http", &[]);
}

#[test]
fn launch_go1_19_stripped() {
    gotel_e2e::require!(Root, Go, GoVersion("1.19"));
    launch_mode_go(&gotel_e2e::go_version_bin("1.19").unwrap(), Variant::Stripped, "grpc", &[]);
}

#[test]
fn launch_go1_21_pie() {
    gotel_e2e::require!(Root, Go, GoVersion("1.21"));
    launch_mode_go(&gotel_e2e::go_version_bin("1.21").unwrap(), Variant::Pie, "http", &[]);
}

#[test]
fn launch_go1_22_stripped() {
    gotel_e2e::require!(Root, Go, GoVersion("1.22"));
    launch_mode_go(&gotel_e2e::go_version_bin("1.22").unwrap(), Variant::Stripped, "grpc", &[]);
}

#[test]
fn launch_go1_23_normal() {
    gotel_e2e::require!(Root, Go, GoVersion("1.23"));
    launch_mode_go(&gotel_e2e::go_version_bin("1.23").unwrap(), Variant::Normal, "http", &[]);
}

#[test]
fn pid_normal_grpc() {
    gotel_e2e::require!(Root, Go);
    pid_mode(Variant::Normal, "grpc");
}

#[test]
fn pid_stripped_http_protobuf() {
    gotel_e2e::require!(Root, Go);
    pid_mode(Variant::Stripped, "http");
}

#[test]
fn pid_pie_grpc() {
    gotel_e2e::require!(Root, Go);
    pid_mode(Variant::Pie, "grpc");
}

/// Another process of the same executable file (same inode), running at the same time, is not
/// traced by `gotel --pid` on the first one.
#[test]
fn pid_other_process_of_same_file_untouched() {
    gotel_e2e::require!(Root, Go);
    let mut p = pid_run(Variant::Normal, "grpc", false);
    // The same file, started after gotel attached, released together with the traced one.
    let other_dir = p.dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let mut ocmd = Command::new(p.dir.path().join(APP));
    ocmd.args(ARGS).arg("-wait-file").arg(&p.a.release).arg("-expect").arg(other_dir.join("expect.json"));
    let mut other = Proc::spawn("engine-other", ocmd).unwrap();
    other.wait_stderr_line("engine: waiting", Duration::from_secs(30)).unwrap();
    let expect = finish(&mut p.a, p.r);
    let ost = other.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(ost.success(), "untraced engine exited with {ost}");
    assert_eq!(other.stdout_string(), p.r.stdout);
    // Every span must carry the traced pid (checked for each span) and the counts must be exact.
    p.check(&expect, SystemTime::now());
}

/// `gotel --exe PATH` started before the program: finds it once it runs.
#[test]
fn exe_normal_http_protobuf() {
    gotel_e2e::require!(Root, Go);
    let mut p = pid_run(Variant::Normal, "http", true);
    let expect = finish(&mut p.a, p.r);
    let t1 = SystemTime::now();
    let a = &mut p.a;
    // --exe keeps waiting for the next process of that executable; SIGTERM, even soon after the
    // target exited, flushes and ends it with 0.
    std::thread::sleep(Duration::from_millis(300));
    if let Some(st) = a.gotel.try_wait().unwrap() {
        panic!(
            "gotel --exe exited ({st}) after its first target did, instead of waiting for the next\nstderr:\n{}",
            a.gotel.stderr_string()
        );
    }
    a.gotel.signal(libc::SIGTERM);
    let gst = a.gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        gst.success(),
        "gotel --exe ended with {gst} (SIGTERM was sent 300 ms after its target exited)\nstderr:\n{}",
        a.gotel.stderr_string()
    );
    p.check(&expect, t1);
}

/// `OTEL_TRACES_EXPORTER=console`: one OTLP/JSON ExportTraceServiceRequest per stdout line.
#[test]
fn console_exporter_pid_normal() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant, &[]);
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut a = attach(variant, dir.path(), &Export::Console, false);
    let pid = a.program.pid();
    let expect = finish(&mut a, r);
    let t1 = SystemTime::now();
    let out = a.gotel.stdout_string();
    let mut spans = Vec::new();
    for (i, line) in out.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout line {i} is not JSON ({e}): {line:.300}"));
        // The OTLP/HTTP JSON mapping: camelCase keys, hex ids, int64 as strings.
        let rs = &v["resourceSpans"][0];
        assert!(
            rs["resource"]["attributes"].is_array(),
            "line {i}: no resourceSpans[0].resource.attributes: {line:.300}"
        );
        let sp = &rs["scopeSpans"][0]["spans"][0];
        let tid = sp["traceId"].as_str().unwrap_or_else(|| panic!("line {i}: no traceId: {line:.300}"));
        assert!(tid.len() == 32 && tid.bytes().all(|b| b.is_ascii_hexdigit()), "traceId {tid:?} is not hex");
        let sid = sp["spanId"].as_str().unwrap_or_else(|| panic!("line {i}: no spanId: {line:.300}"));
        assert!(sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_hexdigit()), "spanId {sid:?} is not hex");
        assert!(
            sp["startTimeUnixNano"].is_string() || sp["startTimeUnixNano"].is_u64(),
            "line {i}: startTimeUnixNano: {line:.300}"
        );
        assert!(
            sp["endTimeUnixNano"].is_string() || sp["endTimeUnixNano"].is_u64(),
            "line {i}: endTimeUnixNano: {line:.300}"
        );
        assert!(
            sp.get("trace_id").is_none() && sp.get("start_time_unix_nano").is_none(),
            "snake_case keys: {line:.300}"
        );
        let req =
            parse_console_line(line).unwrap_or_else(|e| panic!("line {i} is not an ExportTraceServiceRequest: {e}"));
        spans.extend(flatten_request(&req, "console"));
    }
    let counts = expect.counts_without_startup();
    check_spans(&spans, &info(variant, &expect, counts, Some(pid), "console", t0, t1));
}

/// Launch mode with the console exporter: the program's stdout stays its own, byte for byte its
/// untraced output; the spans go to gotel's stderr, one OTLP/JSON line per batch.
#[test]
fn launch_console_leaves_stdout_to_the_program() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant, &[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = private_copy(&binary(variant), dir.path()).unwrap();
    let mut cmd = gotel_command(&Export::Console, &r.expect.probes_env());
    cmd.arg("--").arg(&bin).args(ARGS);
    let mut gotel = Proc::spawn("gotel", cmd).unwrap();
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited with {st}\nstderr:\n{stderr}");
    assert_eq!(gotel.stdout_string(), r.stdout, "stdout is the program's output alone");
    let spans: usize =
        stderr.lines().filter_map(|l| parse_console_line(l).ok()).map(|q| flatten_request(&q, "console").len()).sum();
    assert!(spans > 0, "no span lines on stderr:\n{stderr:.2000}");
}

/// Launch mode, SIGTERM to gotel: passed on to the program (which dies of it, as Go programs do),
/// spans of the calls that returned are flushed, gotel ends.
#[test]
fn launch_sigterm_is_passed_on_and_spans_flushed() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant, &[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = private_copy(&binary(variant), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let never = dir.path().join("never-released");
    let mut cmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), &r.expect.probes_env());
    cmd.arg("--").arg(&bin).args(ARGS).arg("-wait-file").arg(&never);
    let mut gotel = Proc::spawn("gotel", cmd).unwrap();
    // main.first has returned and the inflight goroutines are blocked inside inflight.
    gotel.wait_stderr_line("engine: waiting", Duration::from_secs(30)).unwrap();
    let child: Vec<u32> = std::fs::read_to_string(format!("/proc/{}/task/{}/children", gotel.pid(), gotel.pid()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(child.len(), 1, "gotel's children: {child:?}");
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(40)).unwrap();
    // README: detach, flush, exit 0 (the child's own status would be 128+15 = 143).
    assert!(matches!(st.code(), Some(0) | Some(143)), "gotel exited with {st}\nstderr:\n{}", gotel.stderr_string());
    assert!(
        !Path::new(&format!("/proc/{}", child[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", child[0])).unwrap_or_default().contains(") Z "),
        "the program (pid {}) is still running after gotel ended",
        child[0]
    );
    let spans = sink.wait_spans(1, SPAN_TIMEOUT).unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["main.first"], "only main.first returned before the SIGTERM");
}

/// SIGTERM detaches: gotel exits 0, and the program then runs untraced with unchanged output.
#[test]
fn pid_sigterm_detaches() {
    gotel_e2e::require!(Root, Go);
    let mut p = pid_run(Variant::Normal, "grpc", false);
    let (a, r) = (&mut p.a, p.r);
    a.gotel.signal(libc::SIGTERM);
    let gst = a.gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(gst.success(), "gotel exited with {gst} on SIGTERM\nstderr:\n{}", a.gotel.stderr_string());
    std::fs::write(&a.release, b"go").unwrap();
    let st = a.program.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(st.success(), "engine exited with {st} after gotel detached");
    assert_eq!(a.program.stdout_string(), r.stdout);
    std::thread::sleep(Duration::from_millis(500));
    let spans = p.sink.spans().unwrap();
    assert!(spans.is_empty(), "{} spans after detaching, e.g. {:?}", spans.len(), spans.first());
}
