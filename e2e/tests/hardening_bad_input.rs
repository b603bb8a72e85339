//! Hardening, as root against the real kernel: bad input.
//!
//! * **Bad input** (`bad_*`, `no_capability_*`): every case ends with one clear message on stderr,
//!   the documented exit code (2 configuration, 3 target, 4 environment) and never a panic; in
//!   launch mode the program is never run.
//!
//! A Go older than 1.18 cannot be built here (the oldest toolchain is 1.19); its check is driven
//! by a binary whose build-info version is patched (`bad_target_go_too_old_simulated`).
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); without root each
//! test is skipped with one line (a failure under `GOTEL_TEST_REQUIRE_ALL=1`, as `tools/test.sh`
//! runs them). Every wait is bounded, every address is 127.0.0.1, every process is killed when
//! its handle drops. Run with `--test-threads=1`. Helpers: `gotel_e2e::hardening`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gotel_e2e::hardening::*;
use gotel_e2e::{gotel_bin, gotel_command, private_copy, require_environment, run, Export, Proc};

// ---------------------------------------------------------------------------------------------
// (a) Bad input
// ---------------------------------------------------------------------------------------------

/// Runs gotel expecting it to fail with `code`; checks the one message and returns stderr.
fn expect_failure(label: &str, cmd: Command, code: i32, needles: &[&str]) -> String {
    let (st, stdout, stderr) = run(label, cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(st.code(), Some(code), "{label}: gotel exited with {st}, expected {code}\nstderr:\n{stderr}");
    assert_no_panic(label, &stderr);
    for n in needles {
        assert!(stderr.contains(n), "{label}: stderr lacks {n:?}:\n{stderr}");
    }
    // One message: a single `gotel: ...` line; the error log line, if any, says the same thing.
    let msgs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("gotel: ")).collect();
    assert_eq!(msgs.len(), 1, "{label}: expected exactly one `gotel: ` message:\n{stderr}");
    let msg = msgs[0].trim_start_matches("gotel: ");
    assert!(msg.len() > 20, "{label}: message too terse: {msg:?}");
    for l in stderr.lines().filter(|l| l.contains(" ERROR ")) {
        let text = l.split_once(" ERROR ").unwrap().1.trim();
        assert!(text.ends_with(msg) || msg.ends_with(text), "{label}: a second, different error: {l:?} vs {msg:?}");
    }
    // Launch mode: the program must never have run (it prints on stdout when it does).
    assert!(stdout.is_empty(), "{label}: the target ran (stdout {stdout:?})");
    stderr
}

fn gotel_none(probes: &str) -> Command {
    let mut cmd = gotel_command(&Export::Console, probes);
    cmd.env("OTEL_TRACES_EXPORTER", "none");
    cmd
}

#[test]
fn bad_target_not_a_go_program() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    // Launch mode.
    let mut cmd = gotel_none("main.work");
    cmd.args(["--", "/bin/sleep", "5"]);
    expect_failure("launch /bin/sleep", cmd, 3, &["not a Go program"]);
    // By pid.
    let sleep = private_copy(Path::new("/bin/sleep"), dir.path()).unwrap();
    let mut s = Command::new(&sleep);
    s.arg("30");
    let sp = Proc::spawn("sleep", s).unwrap();
    let mut cmd = gotel_none("main.work");
    cmd.arg("--pid").arg(sp.pid().to_string());
    expect_failure("--pid sleep", cmd, 3, &["not a Go program"]);
    // By executable (the running copy is found, then refused).
    let mut cmd = gotel_none("main.work");
    cmd.arg("--exe").arg(&sleep);
    expect_failure("--exe sleep", cmd, 3, &["not a Go program"]);
}

#[test]
fn bad_target_not_a_program() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let real = std::fs::read(stress_bin()).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text file", b"#!/bin/sh\necho hello\n".to_vec(), "not an ELF program"),
        ("empty file", Vec::new(), "not an ELF program"),
        ("ELF header only", real[..64].to_vec(), ""),
        ("truncated at 4 KiB", real[..4096].to_vec(), ""),
        ("truncated at half", real[..real.len() / 2].to_vec(), ""),
    ];
    for (label, bytes, needle) in cases {
        let f = dir.path().join(label.replace(' ', "_"));
        std::fs::write(&f, &bytes).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = gotel_none("main.work");
        cmd.arg("--").arg(&f);
        let needles: Vec<&str> = [needle].into_iter().filter(|n| !n.is_empty()).collect();
        let err = expect_failure(label, cmd, 3, &needles);
        assert!(err.contains(&f.display().to_string()), "{label}: the message does not name the file:\n{err}");
    }
}

// A Go older than the register ABI (< 1.18) cannot be built here (the oldest toolchain installed
// is 1.19), so a real old binary is not tested. The test below patches the version in a copy's
// build info (`go1.X.Y` -> `go1.16.Y`, same length) to drive gotel's version check instead.
#[test]
fn bad_target_go_too_old_simulated() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let mut bytes = std::fs::read(stress_bin()).unwrap();
    // The build info's version string, "go1.NN.P".
    let ver = {
        let pos = bytes.windows(4).position(|w| w == b"go1.").expect("no go1. in the binary");
        let len = bytes[pos..].iter().take(16).position(|b| !(b.is_ascii_alphanumeric() || *b == b'.')).unwrap();
        String::from_utf8_lossy(&bytes[pos..pos + len]).into_owned()
    };
    let minor_len = ver[4..].split('.').next().unwrap().len();
    assert_eq!(minor_len, 2, "unexpected Go version {ver}");
    let old = format!("go1.16{}", &ver[6..]);
    let mut patched = 0;
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(ver.len()).position(|w| w == ver.as_bytes()) {
        bytes[i + p..i + p + ver.len()].copy_from_slice(old.as_bytes());
        patched += 1;
        i += p + ver.len();
    }
    assert!(patched > 0);
    let f = dir.path().join("oldgo");
    std::fs::write(&f, &bytes).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = gotel_none("main.work");
    cmd.arg("--").arg(&f).args(["-mode", "steady", "-n", "1"]);
    expect_failure("go1.16 build", cmd, 3, &["go1.16", "1.18"]);
}

#[test]
fn bad_config_unknown_symbol_lists_closest() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let mut cmd = gotel_none("main.tick;main.wrok");
    cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    let err = expect_failure("unknown symbol", cmd, 2, &["main.wrok", "closest", "main.work"]);
    assert!(!err.contains("attached"), "probes were attached before the spec was checked:\n{err}");
}

#[test]
fn bad_config_malformed_probes_show_position() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    for spec in [
        "main.work(x=",
        "main.work(=x)",
        "main.work(x=arg0",
        "main.tick;main.work((",
        "main.work(x=len()",
        "main.work(a b)",
        "(",
        "main.work(x=arg0:nosuchtype)",
    ] {
        let mut cmd = gotel_none(spec);
        cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
        let err = expect_failure(&format!("GOTEL_PROBES={spec}"), cmd, 2, &[]);
        // The position: the entry, and a caret under the offending column.
        assert!(err.contains("entry") || err.contains(spec), "GOTEL_PROBES={spec}: no entry named:\n{err}");
        if !spec.contains(':') {
            let caret = err.lines().find(|l| l.trim() == "^");
            assert!(caret.is_some(), "GOTEL_PROBES={spec}: no caret line showing the position:\n{err}");
        }
    }
    // An empty spec is a configuration error too.
    let mut cmd = gotel_none(" ; ");
    cmd.arg("--").arg(&bin);
    expect_failure("GOTEL_PROBES=' ; '", cmd, 2, &[]);
}

#[test]
fn bad_config_unknown_parameter_and_field() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let mut cmd = gotel_none("main.work(v=nope)");
    cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    expect_failure("unknown parameter", cmd, 2, &["nope", "x int"]);
    let mut cmd = gotel_none("main.gate(v=entered.nofield)");
    cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    expect_failure("unknown field", cmd, 2, &["nofield", "entered"]);
    let mut cmd = gotel_none("main.work(v=ret7)");
    cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    expect_failure("result out of range", cmd, 2, &["ret7"]);
}

#[test]
fn bad_config_settings_and_missing_target() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    for (k, v) in [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-3"),
    ] {
        let mut cmd = gotel_command(&Export::Grpc("http://127.0.0.1:9".into()), "main.work");
        cmd.env(k, v).arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
        expect_failure(&format!("{k}={v}"), cmd, 2, &[k]);
    }
    // Values clap parses: its own one-message error, exit 2, the program never runs.
    let mut cmd = gotel_none("main.work");
    cmd.env("GOTEL_MAX_GOROUTINES", "-1").arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    let (st, out, err) = run("GOTEL_MAX_GOROUTINES=-1", cmd, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(2), "GOTEL_MAX_GOROUTINES=-1: exit {st}\n{err}");
    assert!(err.contains("max-goroutines") && err.matches("error:").count() == 1, "GOTEL_MAX_GOROUTINES=-1:\n{err}");
    assert!(out.is_empty(), "the target ran");
    assert_no_panic("GOTEL_MAX_GOROUTINES=-1", &err);
    // No target at all.
    expect_failure("no target", gotel_none("main.work"), 2, &["no target"]);
    // No such pid: a target error.
    let mut cmd = gotel_none("main.work");
    cmd.args(["--pid", "4194000"]);
    expect_failure("no such pid", cmd, 3, &["4194000"]);
}

/// Exporter settings are configuration too: refused with exit 2 before the program runs.
/// (Regression: these were once checked only after the launched program had been released.)
#[test]
fn bad_config_exporter_checked_before_target_runs() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let mut failed = Vec::new();
    for (k, v) in [
        ("OTEL_TRACES_EXPORTER", "bogus"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not-a-url"),
    ] {
        let mut cmd = gotel_command(&Export::HttpProtobuf("http://127.0.0.1:9".into()), "main.work");
        cmd.env(k, v).arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
        let (st, out, err) = run(&format!("{k}={v}"), cmd, Duration::from_secs(30)).unwrap();
        assert_no_panic(k, &err);
        assert_eq!(st.code(), Some(2), "{k}={v}: exit {st}\n{err}");
        if !out.is_empty() {
            failed.push(format!("{k}={v}: the program ran before the setting was refused (stdout {out:?})"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// setpriv prefix that runs a command as nobody with no capabilities.
fn as_nobody(cmd: Command) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]);
    c.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

#[test]
fn no_capability_nonroot() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    assert!(Path::new("/usr/bin/setpriv").exists() || which("setpriv"), "setpriv (util-linux) is needed for this test");
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let g = gotel_bin();
    // Every directory up to gotel must be searchable by nobody.
    let mut p = g.parent();
    while let Some(d) = p {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by other users; nobody cannot run {}",
            d.display(),
            g.display()
        );
        p = d.parent();
    }
    let mut cmd = gotel_none("main.work");
    cmd.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    expect_failure("nonroot launch", as_nobody(cmd), 4, &["CAP_SYS_ADMIN"]);

    // A root-owned process by pid, as nobody: CAP_SYS_PTRACE is named.
    let mut s = Command::new(&bin);
    s.args(["-mode", "steady", "-n", "1", "-wait-file"]).arg(dir.path().join("never"));
    let mut target = Proc::spawn("stress", s).unwrap();
    target.wait_stderr_line("stress: waiting", Duration::from_secs(20)).unwrap();
    let mut cmd = gotel_none("main.work");
    cmd.arg("--pid").arg(target.pid().to_string());
    expect_failure("nonroot --pid of root's process", as_nobody(cmd), 4, &["CAP_SYS_PTRACE"]);
    assert!(target.try_wait().unwrap().is_none(), "the target died");
}

fn which(p: &str) -> bool {
    std::env::var_os("PATH").map(|path| std::env::split_paths(&path).any(|d| d.join(p).exists())).unwrap_or(false)
}

#[test]
fn no_capability_root_without_sys_admin() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    assert!(which("capsh"), "capsh (libcap2-bin) is needed for this test");
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let mut g = gotel_none("main.work");
    g.arg("--").arg(&bin).args(["-mode", "steady", "-n", "1"]);
    let mut line = String::from("exec");
    for a in std::iter::once(g.get_program()).chain(g.get_args()) {
        line.push_str(&format!(" '{}'", a.to_string_lossy()));
    }
    let mut cmd = Command::new("capsh");
    cmd.arg("--drop=cap_sys_admin").arg("--").arg("-c").arg(line);
    for (k, v) in g.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    expect_failure("root without CAP_SYS_ADMIN", cmd, 4, &["CAP_SYS_ADMIN"]);
}
