//! Names and return points, end to end, as root against the real kernel, on
//! `e2e/goapps/wrappers`: `(*T)` in a probe spec is part of the name (`main.(*Mutex).Lock` never
//! traces `main.(*RWMutex).Lock`), `gotel --list` shows matches and refusals without attaching,
//! probe files take one entry per line and their errors name the file and line, and a function
//! that leaves by a tail jump (`main.(*Ptr).Work`, a promoted-method wrapper ending in
//! `JMP main.(*Inner).Work`) gives OK spans, not ERROR spans "unwound by a panic".
//!
//! Needs root, Go and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); without root or Go
//! each test skips with one line (fails under `GOTEL_TEST_REQUIRE_ALL=1`, as `tools/test.sh` runs).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gotel_e2e::{build_go, go_bin, gotel_bin, gotel_command, require_environment, run, Export, Sink, Variant};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const CALLS: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(60);

fn binary(variant: Variant) -> PathBuf {
    build_go(&go_bin(), "wrappers", variant).expect("go build")
}

/// Runs `wrappers -n CALLS` under gotel with `probes`; returns the spans and gotel's stderr.
fn traced(variant: Variant, probes: &str) -> (Vec<gotel_e2e::FlatSpan>, String) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(SINK.as_ref(), dir.path()).unwrap();
    let mut cmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), probes);
    cmd.env("GOTEL_LIBRARIES", "none").arg("--").arg(binary(variant)).args(["-n", &CALLS.to_string()]);
    let (status, stdout, stderr) = run("gotel", cmd, TIMEOUT).unwrap();
    assert!(status.success(), "gotel failed: {status:?}\n{stderr}");
    assert!(stdout.contains(&format!("ptr.work={CALLS} mutex.lock={CALLS} rwmutex.lock={CALLS}")), "{stdout}");
    let spans = sink.wait_quiet(Duration::from_millis(500), TIMEOUT).unwrap();
    (spans, stderr)
}

fn count(spans: &[gotel_e2e::FlatSpan], name: &str) -> usize {
    spans.iter().filter(|s| s.name == name).count()
}

#[test]
fn tail_jump_wrapper_spans_are_ok() {
    gotel_e2e::require!(Root, Go);
    for variant in [Variant::Normal, Variant::Stripped] {
        let (spans, stderr) = traced(variant, "main.(*Ptr).Work; main.(*Inner).Work");
        assert_eq!(count(&spans, "main.(*Ptr).Work"), CALLS, "{variant:?}: {stderr}");
        assert_eq!(count(&spans, "main.(*Inner).Work"), CALLS, "{variant:?}: {stderr}");
        for s in &spans {
            assert_ne!(s.status_code, 2, "{variant:?}: ERROR span {} ({}): {stderr}", s.name, s.status_message);
            assert!(!s.attributes.contains_key("gotel.unwound"), "{variant:?}: unwound {}", s.name);
            assert!(s.end_unix_nano >= s.start_unix_nano);
        }
        assert!(!stderr.contains("no RET"), "{variant:?}: a false warning: {stderr}");
    }
}

#[test]
fn results_of_a_tail_jump_are_refused() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let mut cmd = gotel_command(&Export::Console, "main.(*Ptr).Work(r=ret0)");
    cmd.arg("--").arg(binary(Variant::Normal));
    let (status, _, stderr) = run("gotel", cmd, TIMEOUT).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tail jump") && stderr.contains("`r`"), "{stderr}");
}

#[test]
fn receiver_names_are_exact() {
    gotel_e2e::require!(Root, Go);
    let (spans, stderr) = traced(Variant::Normal, "main.(*Mutex).Lock");
    assert_eq!(count(&spans, "main.(*Mutex).Lock"), CALLS, "{stderr}");
    assert_eq!(count(&spans, "main.(*RWMutex).Lock"), 0, "(*Mutex) globbed (*RWMutex)");
    // A glob outside the receiver still globs.
    let (spans, stderr) = traced(Variant::Normal, "main.(*Mutex).*; main.(*RW*).Lock");
    assert_eq!(count(&spans, "main.(*Mutex).Lock"), CALLS, "{stderr}");
    assert_eq!(count(&spans, "main.(*RWMutex).Lock"), CALLS, "{stderr}");
}

#[test]
fn list_shows_matches_and_refusals_without_attaching() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let bin = binary(Variant::Normal);
    let mut cmd = Command::new(gotel_bin());
    cmd.env_remove("GOTEL_PROBES")
        .arg("--list")
        .arg("main.(*Mutex).Lock; main.(*Ptr).Work; main.(*Mutx).Lock; main.(*Inner).Work(x=nope)")
        .arg("--exe")
        .arg(&bin);
    let (status, stdout, stderr) = run("gotel", cmd, TIMEOUT).unwrap();
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(&format!("{name}\t"))).map(str::to_string);
    let mutex = line("main.(*Mutex).Lock").unwrap_or_else(|| panic!("{stdout}"));
    assert!(mutex.contains("entry +0x") && mutex.contains("1 RET"), "{mutex}");
    assert!(line("main.(*RWMutex).Lock").is_none(), "{stdout}");
    let ptr = line("main.(*Ptr).Work").unwrap_or_else(|| panic!("{stdout}"));
    assert!(ptr.contains("0 RET + 1 tail jump"), "{ptr}");
    let inner = line("main.(*Inner).Work").unwrap_or_else(|| panic!("{stdout}"));
    assert!(inner.contains("REFUSED") && inner.contains("nope"), "{inner}");
    assert!(
        stdout.contains("REFUSED: probe `main.(*Mutx).Lock`") && stdout.contains("closest: main.(*Mutex).Lock"),
        "{stdout}"
    );
    assert!(stdout.contains("2 functions would be traced, 2 refused"), "{stdout}");
    // The same through a command after `--`, which is not run.
    let mut cmd = Command::new(gotel_bin());
    cmd.env_remove("GOTEL_PROBES").args(["--list", "main.(*Mutex).Lock", "--"]).arg(&bin).arg("-n=bad");
    let (status, stdout, _) = run("gotel", cmd, TIMEOUT).unwrap();
    assert!(status.success() && stdout.contains("1 functions would be traced, 0 refused"), "{stdout}");
}

#[test]
fn probe_files_take_lines_and_errors_name_them() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probes.txt");
    std::fs::write(&file, "# one per line\nmain.(*Mutex).Lock\nmain.(*RWMutex).Lock\n").unwrap();
    let sink = Sink::start(SINK.as_ref(), dir.path()).unwrap();
    let mut cmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), "");
    cmd.env_remove("GOTEL_PROBES").env("GOTEL_LIBRARIES", "none").arg("--probes-file").arg(&file);
    cmd.arg("--").arg(binary(Variant::Normal)).args(["-n", &CALLS.to_string()]);
    let (status, _, stderr) = run("gotel", cmd, TIMEOUT).unwrap();
    assert!(status.success(), "{stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(500), TIMEOUT).unwrap();
    assert_eq!(count(&spans, "main.(*Mutex).Lock"), CALLS, "{stderr}");
    assert_eq!(count(&spans, "main.(*RWMutex).Lock"), CALLS, "{stderr}");

    std::fs::write(&file, "main.(*Mutex).Lock\n\nmain.(*RWMutex).Lock(x=)\n").unwrap();
    let mut cmd = gotel_command(&Export::Console, "");
    cmd.env_remove("GOTEL_PROBES").arg("--probes-file").arg(&file).arg("--").arg(binary(Variant::Normal));
    let (status, _, stderr) = run("gotel", cmd, TIMEOUT).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let want = format!("{} line 3, entry 2: expected", file.display());
    assert!(stderr.contains(&want) && !stderr.contains("GOTEL_PROBES"), "{stderr}");
}
