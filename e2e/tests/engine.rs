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
    build_go, go_bin, gotel_command, private_copy, require_environment, run, Expectation, Export,
    FlatSpan, Proc, Sink, Variant,
};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const APP: &str = "engine";
/// The engine's workload in every test (about 2000 spans).
const ARGS: &[&str] = &["-workers", "4", "-iters", "50", "-depth", "300", "-deep", "12", "-guards", "3", "-quitters", "8", "-fanout", "6"];

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const SPAN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the untraced program does.
struct Reference {
    stdout: String,
    expect: Expectation,
}

fn binary(variant: Variant) -> PathBuf {
    build_go(&go_bin(), APP, variant).expect("go build")
}

/// Runs the untraced program once per variant.
fn reference(variant: Variant) -> &'static Reference {
    static REFS: OnceLock<std::sync::Mutex<HashMap<Variant, &'static Reference>>> = OnceLock::new();
    let refs = REFS.get_or_init(Default::default);
    let mut refs = refs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = refs.get(&variant) {
        return r;
    }
    let bin = binary(variant);
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("expect.json");
    let mut cmd = Command::new(&bin);
    cmd.args(ARGS).arg("-expect").arg(&exp);
    let (st, stdout, stderr) = run("engine (untraced)", cmd, RUN_TIMEOUT).unwrap();
    assert!(st.success(), "untraced engine failed: {st}\n{stderr}");
    assert!(stdout.ends_with("done\n"), "untraced engine output: {stdout}");
    let r: &'static Reference = Box::leak(Box::new(Reference {
        stdout,
        expect: Expectation::load(&exp).unwrap(),
    }));
    refs.insert(variant, r);
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
    require_environment().unwrap();
    let r = reference(variant);
    let dir = tempfile::tempdir().unwrap();
    let bin = private_copy(&binary(variant), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let exp_path = dir.path().join("expect.json");

    let mut cmd = gotel_command(&sink_export(&sink, transport), &r.expect.probes_env());
    cmd.arg("--").arg(&bin).args(ARGS).arg("-expect").arg(&exp_path);
    let t0 = SystemTime::now();
    let (st, stdout, stderr) = run("gotel", cmd, RUN_TIMEOUT).unwrap();
    let t1 = SystemTime::now();
    assert!(st.success(), "gotel -- engine exited with {st}\nstderr:\n{stderr}");
    assert_eq!(stdout, r.stdout, "traced program's stdout differs from the untraced run");
    let expect = Expectation::load(&exp_path).unwrap();
    assert_eq!(expect.counts, r.expect.counts, "traced program did different work");

    let spans = collect_spans(&sink, Expectation::total(&expect.counts));
    check_spans(
        &spans,
        &info(variant, &expect, expect.counts.clone(), None, transport, t0, t1),
    );
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
    let r = reference(variant);
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
    let attached = gotel_e2e::wait_until(Duration::from_secs(30), || {
        ready.exists() || gotel.try_wait().ok().flatten().is_some()
    });
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

/// `gotel --pid PID` on a program that is already running.
fn pid_mode(variant: Variant, transport: &str) {
    require_environment().unwrap();
    let r = reference(variant);
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let t0 = SystemTime::now();
    let mut a = attach(variant, dir.path(), &sink_export(&sink, transport), false);
    let pid = a.program.pid();
    let expect = finish(&mut a, r);
    let t1 = SystemTime::now();
    let counts = expect.counts_without_startup();
    let spans = collect_spans(&sink, Expectation::total(&counts));
    check_spans(&spans, &info(variant, &expect, counts, Some(pid), transport, t0, t1));
}

#[test]
fn launch_normal_http_protobuf() {
    launch_mode(Variant::Normal, "http");
}

#[test]
fn launch_stripped_grpc() {
    launch_mode(Variant::Stripped, "grpc");
}

#[test]
fn launch_pie_http_protobuf() {
    launch_mode(Variant::Pie, "http");
}

#[test]
fn pid_normal_grpc() {
    pid_mode(Variant::Normal, "grpc");
}

#[test]
fn pid_stripped_http_protobuf() {
    pid_mode(Variant::Stripped, "http");
}

#[test]
fn pid_pie_grpc() {
    pid_mode(Variant::Pie, "grpc");
}

/// `gotel --exe PATH` started before the program: finds it once it runs.
#[test]
fn exe_normal_http_protobuf() {
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant);
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let t0 = SystemTime::now();
    let mut a = attach(variant, dir.path(), &Export::HttpProtobuf(sink.http_endpoint()), true);
    let pid = a.program.pid();
    let expect = finish(&mut a, r);
    let t1 = SystemTime::now();
    // --exe keeps waiting for the next process of that executable; SIGTERM, even right after the
    // target exited, flushes and ends it with 0.
    assert!(a.gotel.try_wait().unwrap().is_none(), "gotel --exe exited when its first target did");
    a.gotel.signal(libc::SIGTERM);
    let gst = a.gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(gst.success(), "gotel --exe exited with {gst} on SIGTERM\nstderr:\n{}", a.gotel.stderr_string());
    let counts = expect.counts_without_startup();
    let spans = collect_spans(&sink, Expectation::total(&counts));
    check_spans(&spans, &info(variant, &expect, counts, Some(pid), "http", t0, t1));
}

/// `OTEL_TRACES_EXPORTER=console`: one OTLP/JSON ExportTraceServiceRequest per stdout line.
#[test]
fn console_exporter_pid_normal() {
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant);
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut a = attach(variant, dir.path(), &Export::Console, false);
    let pid = a.program.pid();
    let expect = finish(&mut a, r);
    let t1 = SystemTime::now();
    let out = a.gotel.stdout_string();
    let mut spans = Vec::new();
    for (i, line) in out.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line {i} is not JSON ({e}): {line:.300}"));
        // The OTLP/HTTP JSON mapping: camelCase keys, hex ids, int64 as strings.
        let rs = &v["resourceSpans"][0];
        assert!(rs["resource"]["attributes"].is_array(), "line {i}: no resourceSpans[0].resource.attributes: {line:.300}");
        let sp = &rs["scopeSpans"][0]["spans"][0];
        let tid = sp["traceId"].as_str().unwrap_or_else(|| panic!("line {i}: no traceId: {line:.300}"));
        assert!(tid.len() == 32 && tid.bytes().all(|b| b.is_ascii_hexdigit()), "traceId {tid:?} is not hex");
        let sid = sp["spanId"].as_str().unwrap_or_else(|| panic!("line {i}: no spanId: {line:.300}"));
        assert!(sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_hexdigit()), "spanId {sid:?} is not hex");
        assert!(sp["startTimeUnixNano"].is_string() || sp["startTimeUnixNano"].is_u64(), "line {i}: startTimeUnixNano: {line:.300}");
        assert!(sp["endTimeUnixNano"].is_string() || sp["endTimeUnixNano"].is_u64(), "line {i}: endTimeUnixNano: {line:.300}");
        assert!(sp.get("trace_id").is_none() && sp.get("start_time_unix_nano").is_none(), "snake_case keys: {line:.300}");
        let req = parse_console_line(line).unwrap_or_else(|e| panic!("line {i} is not an ExportTraceServiceRequest: {e}"));
        spans.extend(flatten_request(&req, "console"));
    }
    let counts = expect.counts_without_startup();
    check_spans(&spans, &info(variant, &expect, counts, Some(pid), "console", t0, t1));
}

/// SIGTERM detaches: gotel exits 0, and the program then runs untraced with unchanged output.
#[test]
fn pid_sigterm_detaches() {
    require_environment().unwrap();
    let variant = Variant::Normal;
    let r = reference(variant);
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut a = attach(variant, dir.path(), &Export::Grpc(sink.grpc_endpoint()), false);
    a.gotel.signal(libc::SIGTERM);
    let gst = a.gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(gst.success(), "gotel exited with {gst} on SIGTERM\nstderr:\n{}", a.gotel.stderr_string());
    std::fs::write(&a.release, b"go").unwrap();
    let st = a.program.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(st.success(), "engine exited with {st} after gotel detached");
    assert_eq!(a.program.stdout_string(), r.stdout);
    std::thread::sleep(Duration::from_millis(500));
    let spans = sink.spans().unwrap();
    assert!(spans.is_empty(), "{} spans after detaching, e.g. {:?}", spans.len(), spans.first());
}
