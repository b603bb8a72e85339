//! Hardening (issue 6), as root against the real kernel: bad input, faults and stress.
//!
//! * **Bad input** (`bad_*`, `no_capability_*`): every case ends with one clear message on stderr,
//!   the documented exit code (2 configuration, 3 target, 4 environment) and never a panic; in
//!   launch mode the program is never run.
//! * **Faults** (`collector_*`, `queue_overflow_*`, `exe_follows_*`, `target_exits_*`): the
//!   collector down at start, down mid-run, an export queue too small, a restarted target
//!   (`--exe`), a target exiting with spans in flight. gotel keeps running, loses nothing when
//!   it can hold it, and counts (summary line, `/metrics`) what it cannot.
//! * **Stress** (`stress_*`): 10k goroutines inside traced calls, deep stack growth, panics and
//!   recover, `runtime.Goexit`, heavy GC, goroutines migrating between threads. The program
//!   (`e2e/goapps/stress`) prints the same stdout and exits with the same code with and without
//!   tracing; every call is one span (a call unwound by a panic or Goexit an ERROR span marked
//!   `gotel.unwound`); gotel's goroutine map, scraped from
//!   `/metrics` during and after the work, stays below `GOTEL_MAX_GOROUTINES`.
//!
//! A Go older than 1.18 cannot be built here (the oldest toolchain is 1.19); its check is driven
//! by a binary whose build-info version is patched (`bad_target_go_too_old_simulated`).
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); without either every
//! test fails (never skips). Every wait is bounded, every address is 127.0.0.1, every process is
//! killed when its handle drops. Run with `--test-threads=1`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use gotel_e2e::{
    build_go, go_bin, gotel_bin, gotel_command, private_copy, read_spans, require_environment, run, wait_until, Export,
    FlatSpan, Proc, Sink, Variant,
};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const APP: &str = "stress";
/// Every traced function of the stress program.
const PROBES: &str = "main.work;main.gate;main.descend;main.grow;main.safe;main.boom;main.boom2;\
                      main.quit;main.quitInner;main.alloc;main.hop;main.tick";

const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const SPAN_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

fn stress_bin() -> PathBuf {
    build_go(&go_bin(), APP, Variant::Normal).expect("go build e2e/goapps/stress")
}

/// A temp dir every user can enter (the non-root cases run programs from it).
fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The stress program's `-expect` file.
#[derive(Debug, Deserialize)]
struct StressExpect {
    /// Calls that returned normally, per function: the spans expected.
    counts: BTreeMap<String, i64>,
    /// Calls entered, per function.
    entries: BTreeMap<String, i64>,
}

impl StressExpect {
    fn load(p: &Path) -> StressExpect {
        let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("parse {}: {e}: {s}", p.display()))
    }
    fn returned(&self) -> u64 {
        self.counts.values().sum::<i64>() as u64
    }
    fn entered(&self) -> u64 {
        self.entries.values().sum::<i64>() as u64
    }
    fn nonzero(&self) -> BTreeMap<String, i64> {
        self.counts.iter().filter(|(_, v)| **v > 0).map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The fields of gotel's `session summary` lines (one per traced process), in order.
fn summaries(stderr: &str) -> Vec<BTreeMap<String, u64>> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("session summary"))
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| v.parse::<u64>().ok().map(|v| (k.to_string(), v)))
                .collect()
        })
        .collect()
}

fn the_summary(stderr: &str) -> BTreeMap<String, u64> {
    let s = summaries(stderr);
    assert_eq!(s.len(), 1, "expected one `session summary` line in gotel's stderr:\n{stderr}");
    s.into_iter().next().unwrap()
}

fn field(s: &BTreeMap<String, u64>, k: &str) -> u64 {
    *s.get(k).unwrap_or_else(|| panic!("session summary has no field {k}: {s:?}"))
}

fn assert_no_panic(who: &str, stderr: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "{who}: stderr contains {bad:?}:\n{stderr}");
    }
}

/// A free 127.0.0.1 port (nobody listens on it once this returns).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `GET path` over HTTP/1.0 (bounded): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    c.set_write_timeout(Some(Duration::from_secs(3)))?;
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    c.take(1 << 20).read_to_end(&mut buf)?;
    let s = String::from_utf8_lossy(&buf).into_owned();
    let status =
        s.split_whitespace().nth(1).and_then(|x| x.parse().ok()).ok_or_else(|| anyhow!("bad HTTP reply {s:.200}"))?;
    let body = s.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// gotel's `/metrics`, as name -> value.
fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}: {body}");
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| v.trim().parse().ok().map(|v| (k.to_string(), v)))
        .collect())
}

/// One scrape of `/metrics`: when, and each series' value.
type Sample = (Instant, BTreeMap<String, f64>);

/// Scrapes `/metrics` every 100 ms in the background and keeps every sample.
struct Scraper {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Ok(m) = scrape(addr) {
                    sa.lock().unwrap().push((Instant::now(), m));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Scraper { stop, samples, thread: Some(thread) }
    }

    /// Values of one metric, in order.
    fn series(&self, name: &str) -> Vec<f64> {
        self.samples.lock().unwrap().iter().filter_map(|(_, m)| m.get(name).copied()).collect()
    }

    fn samples_since(&self, t: Instant, name: &str) -> Vec<f64> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= t)
            .filter_map(|(_, m)| m.get(name).copied())
            .collect()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An `otlp-sink` on fixed addresses (to start it late, or again after killing it).
fn sink_at(grpc: SocketAddr, http: SocketAddr, out: &Path) -> Proc {
    let mut cmd = Command::new(SINK);
    cmd.arg("--grpc").arg(grpc.to_string()).arg("--http").arg(http.to_string()).arg("--out").arg(out);
    let mut p = Proc::spawn("otlp-sink", cmd).unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        p.stdout_string().contains('\n') || p.try_wait().ok().flatten().is_some()
    });
    assert!(
        up && p.stdout_string().contains(&grpc.to_string()),
        "otlp-sink did not start on {grpc}/{http}: stdout {:?} stderr {}",
        p.stdout_string(),
        p.stderr_string()
    );
    p
}

/// Spans in several sink files, deduplicated by span id (an export retried after the sink died
/// between storing a batch and answering may deliver it twice: OTLP is at-least-once).
fn unique_spans(files: &[&Path]) -> (Vec<FlatSpan>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut total = 0;
    for f in files {
        for s in read_spans(f).unwrap() {
            total += 1;
            if seen.insert(s.span_id.clone()) {
                out.push(s);
            }
        }
    }
    (out, total)
}

fn count_by_name(spans: &[FlatSpan]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for s in spans {
        *m.entry(s.name.clone()).or_default() += 1;
    }
    m
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Untraced run of the stress program: (exit status, stdout, expectation).
fn reference(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, StressExpect) {
    let dir = tempdir();
    let exp = dir.path().join("expect.json");
    let mut cmd = Command::new(stress_bin());
    cmd.args(args).arg("-expect").arg(&exp);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (st, stdout, stderr) = run("stress (untraced)", cmd, RUN_TIMEOUT).unwrap();
    assert!(!stdout.is_empty(), "untraced stress printed nothing; stderr:\n{stderr}");
    (st, stdout, StressExpect::load(&exp))
}

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

// ---------------------------------------------------------------------------------------------
// (b) Faults
// ---------------------------------------------------------------------------------------------

/// gotel in launch mode on the stress program, with metrics on a free port.
fn launch(export: &Export, bin: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let maddr = free_addr();
    let mut cmd = gotel_command(export, PROBES);
    cmd.env("GOTEL_METRICS_ADDR", maddr.to_string());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.arg("--").arg(bin).args(args);
    (Proc::spawn("gotel", cmd).unwrap(), maddr)
}

/// The collector is down when gotel starts and comes up 2 s later: every span is delivered.
#[test]
fn collector_down_at_start_then_up() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let exp = dir.path().join("expect.json");
    let args = ["-mode", "steady", "-n", "300", "-interval-ms", "10", "-expect", exp.to_str().unwrap()];
    let (mut gotel, maddr) = launch(&Export::Grpc(format!("http://{grpc}")), &bin, &args, &[]);
    gotel.wait_stderr_line("attached", Duration::from_secs(30)).unwrap();
    // Down for at least 2 s, and until /metrics shows a failed attempt.
    let t = Instant::now();
    let failed = wait_until(Duration::from_secs(10), || {
        scrape(maddr).map(|m| m["gotel_export_failures_total"] >= 1.0).unwrap_or(false)
    });
    assert!(failed, "no failed export attempt on /metrics while the collector was down\n{}", gotel.stderr_string());
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t.elapsed()));
    let out = dir.path().join("spans.jsonl");
    let _sink = sink_at(grpc, http, &out);
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    assert_no_panic("gotel", &stderr);
    let e = StressExpect::load(&exp);
    let want = e.returned();
    assert_eq!(want, 300);
    let spans = wait_until(SPAN_TIMEOUT, || read_spans(&out).unwrap().len() >= want as usize);
    let (uniq, _) = unique_spans(&[&out]);
    assert!(spans, "only {} of {want} spans arrived after the collector came up\n{stderr}", uniq.len());
    assert_eq!(count_by_name(&uniq), e.nonzero());
    let s = the_summary(&stderr);
    assert_eq!((field(&s, "spans"), field(&s, "exported")), (want, want), "summary: {s:?}");
    assert_eq!(field(&s, "lost_queue_full") + field(&s, "lost_export_failed"), 0, "summary: {s:?}");
    // Failures are retried quietly: no line per failed attempt, let alone per span.
    assert!(stderr.lines().count() < 30, "gotel logged too much while the collector was down:\n{stderr}");
}

/// The collector dies mid-run (SIGKILL) and comes back 2 s later on the same port.
#[test]
fn collector_down_mid_run_and_back() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let out1 = dir.path().join("spans1.jsonl");
    let out2 = dir.path().join("spans2.jsonl");
    let mut sink1 = sink_at(grpc, http, &out1);
    let exp = dir.path().join("expect.json");
    let args = ["-mode", "steady", "-n", "500", "-interval-ms", "10", "-expect", exp.to_str().unwrap()];
    let (mut gotel, maddr) = launch(&Export::HttpProtobuf(format!("http://{http}")), &bin, &args, &[]);
    gotel.wait_stderr_line("attached", Duration::from_secs(30)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || read_spans(&out1).unwrap().len() >= 20),
        "no spans before the collector died"
    );
    sink1.signal(libc::SIGKILL);
    sink1.wait_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = http_get(maddr, "/healthz").unwrap();
    assert_eq!(status, 200, "gotel is not healthy while the collector is down");
    let _sink2 = sink_at(grpc, http, &out2);
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    assert_no_panic("gotel", &stderr);
    let e = StressExpect::load(&exp);
    let want = e.returned() as usize;
    wait_until(SPAN_TIMEOUT, || unique_spans(&[&out1, &out2]).0.len() >= want);
    let (uniq, total) = unique_spans(&[&out1, &out2]);
    assert_eq!(uniq.len(), want, "spans delivered before + after the outage ({total} with duplicates)\n{stderr}");
    assert!(!read_spans(&out2).unwrap().is_empty(), "nothing delivered after the collector came back");
    assert_eq!(count_by_name(&uniq), e.nonzero());
    let s = the_summary(&stderr);
    assert_eq!(field(&s, "lost_queue_full") + field(&s, "lost_export_failed"), 0, "summary: {s:?}");
    assert_eq!(field(&s, "exported"), want as u64, "summary: {s:?}");
}

/// A queue of 50 spans, no collector at all, 20k spans: gotel keeps running, the target is
/// unharmed, every span is accounted for (exported + dropped), the drops are on `/metrics`, in
/// one periodic log line (not one per span) and in the summary.
#[test]
fn queue_overflow_is_counted_and_reported() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let dead = free_addr();
    // burst: 20000 calls at once; then steady (200 calls, 10 ms apart) six times, so the run
    // lasts over 10 s and the periodic loss line is due once.
    let modes = "burst,steady,steady,steady,steady,steady,steady";
    let (ref_st, ref_out, _) = reference(&["-mode", modes, "-interval-ms", "10"], &[]);
    let exp = dir.path().join("expect.json");
    let args = ["-mode", modes, "-interval-ms", "10", "-expect", exp.to_str().unwrap()];
    let (mut gotel, maddr) = launch(
        &Export::HttpProtobuf(format!("http://{dead}")),
        &bin,
        &args,
        // A 2 s shutdown deadline keeps the test short (gotel waits for it with the collector down).
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "50"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
        ],
    );
    let scraper = Scraper::start(maddr);
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    let stderr = gotel.stderr_string();
    assert_eq!(st.code(), ref_st.code(), "exit code differs from the untraced run\n{stderr}");
    assert_eq!(gotel.stdout_string(), ref_out, "stdout differs from the untraced run");
    assert_no_panic("gotel", &stderr);
    let e = StressExpect::load(&exp);
    let s = the_summary(&stderr);
    let spans = field(&s, "spans");
    assert_eq!(spans, e.returned(), "summary: {s:?}");
    let (exported, qf, ef) = (field(&s, "exported"), field(&s, "lost_queue_full"), field(&s, "lost_export_failed"));
    assert!(qf > 10_000, "queue-full drops not counted: {s:?}");
    assert!(ef > 0, "export failures not counted as drops: {s:?}");
    assert_eq!(exported, 0, "nothing can have been exported: {s:?}");
    assert_eq!(exported + qf + ef, spans, "spans not accounted for: {s:?}");
    // While running, /metrics showed the drops.
    let dropped = scraper.series("gotel_spans_dropped_queue_full_total");
    assert!(dropped.iter().any(|v| *v > 10_000.0), "/metrics never showed the drops: {dropped:?}");
    assert!(scraper.series("gotel_attached").contains(&1.0));
    // One loss line per 10 s interval, never one per span.
    let loss_lines = stderr.lines().filter(|l| l.contains("data lost so far")).count();
    assert!((1..=3).contains(&loss_lines), "expected 1-3 periodic loss lines, got {loss_lines}:\n{stderr}");
    assert!(stderr.lines().count() < 40, "gotel logged too much:\n{stderr}");
}

/// Spans still queued when the shutdown deadline (`OTEL_BSP_EXPORT_TIMEOUT`, at most 30 s)
/// passes must be counted as lost like every other loss.
/// (Regression: the spans queued at the deadline were once logged as lost but counted nowhere.)
#[test]
fn shutdown_deadline_losses_are_counted() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let dead = free_addr();
    // gRPC to a closed port: each attempt takes about a second (tonic's connect back-off), so
    // the queue cannot be flushed within the 1 s shutdown deadline.
    let (mut gotel, _) = launch(
        &Export::Grpc(format!("http://{dead}")),
        &bin,
        &["-mode", "burst,steady", "-interval-ms", "10"],
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "50"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
        ],
    );
    let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    assert_no_panic("gotel", &stderr);
    let s = the_summary(&stderr);
    let accounted = field(&s, "exported") + field(&s, "lost_queue_full") + field(&s, "lost_export_failed");
    assert_eq!(accounted, field(&s, "spans"), "spans lost at the shutdown deadline are not counted: {s:?}\n{stderr}");
}

/// A sink and `gotel --exe BIN --ready-file DIR/ready` (extra env `env`), once gotel says it is
/// waiting for a process: (sink, gotel, ready file).
fn follow_exe(dir: &Path, bin: &Path, env: &[(&str, &str)]) -> (Sink, Proc, PathBuf) {
    let sink = Sink::start(Path::new(SINK), dir).unwrap();
    let ready = dir.join("ready");
    let mut gcmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), PROBES);
    gcmd.envs(env.iter().copied()).arg("--exe").arg(bin).arg("--ready-file").arg(&ready);
    let mut gotel = Proc::spawn("gotel", gcmd).unwrap();
    if let Err(e) = gotel.wait_stderr_line("waiting for a process", Duration::from_secs(20)) {
        let st = gotel.wait_timeout(Duration::from_secs(5));
        panic!("gotel --exe is not waiting for the program: {e}; exit {st:?}\n{}", gotel.stderr_string());
    }
    (sink, gotel, ready)
}

/// `--exe`: the target exits and a new process of the same file starts; gotel follows it within
/// a second and keeps tracing (spans from both pids).
/// (Regressions: `--exe` once refused to wait when any /proc/PID/exe was unreadable, such as a
/// sandbox's pid 1; and detaching the old session's uprobes, ~0.2 s each, once delayed the
/// next attach by 3-6 s.)
#[test]
fn exe_follows_restart() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let maddr = free_addr();
    let (sink, mut gotel, ready) = follow_exe(dir.path(), &bin, &[("GOTEL_METRICS_ADDR", &maddr.to_string())]);

    // A: waits until gotel attached, then 100 calls.
    let go_a = dir.path().join("go-a");
    let mut a = Command::new(&bin);
    a.args(["-mode", "steady", "-n", "100", "-interval-ms", "5", "-wait-file"]).arg(&go_a);
    let mut a = Proc::spawn("stress A", a).unwrap();
    let a_pid = a.pid();
    let ready_is = |pid: u32| std::fs::read_to_string(&ready).map(|s| s.trim() == pid.to_string()).unwrap_or(false);
    assert!(
        wait_until(Duration::from_secs(20), || ready_is(a_pid)),
        "gotel did not attach to A\n{}",
        gotel.stderr_string()
    );
    std::fs::write(&go_a, b"go").unwrap();
    assert!(a.wait_timeout(RUN_TIMEOUT).unwrap().success());

    // B: starts right away and calls tick every 5 ms for about 8 s.
    let b_exp = dir.path().join("expect-b.json");
    let mut b = Command::new(&bin);
    b.args(["-mode", "steady", "-n", "1500", "-interval-ms", "5", "-expect"]).arg(&b_exp);
    let t_b = Instant::now();
    let t_b_wall = SystemTime::now();
    let mut b = Proc::spawn("stress B", b).unwrap();
    let b_pid = b.pid();
    let followed = wait_until(Duration::from_secs(15), || ready_is(b_pid));
    let follow = t_b.elapsed();
    assert!(followed, "gotel did not follow to B within 15 s\n{}", gotel.stderr_string());
    assert!(b.wait_timeout(RUN_TIMEOUT).unwrap().success());
    assert!(
        gotel.try_wait().unwrap().is_none(),
        "gotel exited after its --exe target exited\n{}",
        gotel.stderr_string()
    );
    // Between processes gotel is alive but not attached.
    let unhealthy =
        wait_until(Duration::from_secs(15), || http_get(maddr, "/healthz").map(|r| r.0 == 503).unwrap_or(false));
    assert!(unhealthy, "/healthz did not turn 503 once the target exited");

    let b_calls = StressExpect::load(&b_exp).returned() as usize;
    let of =
        |spans: &[FlatSpan], pid: u32| spans.iter().filter(|s| s.res_i64("process.pid") == Some(pid as i64)).count();
    wait_until(SPAN_TIMEOUT, || {
        let sp = sink.spans().unwrap();
        of(&sp, a_pid) >= 100 && of(&sp, b_pid) >= 1
    });
    let spans = sink.wait_quiet(Duration::from_millis(500), SPAN_TIMEOUT).unwrap();
    let (na, nb) = (of(&spans, a_pid), of(&spans, b_pid));
    assert_eq!(na, 100, "spans from A (pid {a_pid})");
    assert!(nb > 0 && nb <= b_calls, "{nb} spans from B (pid {b_pid}), which made {b_calls} calls");
    let first_b = spans
        .iter()
        .filter(|s| s.res_i64("process.pid") == Some(b_pid as i64))
        .map(|s| s.start_unix_nano)
        .min()
        .unwrap();
    let lag_ms = first_b.saturating_sub(nanos(t_b_wall)) / 1_000_000;
    let stderr = gotel.stderr_string();
    assert!(
        follow < Duration::from_secs(1) && lag_ms < 1000,
        "gotel followed the new process after {follow:?} (its first span {lag_ms} ms after it started, \
         {nb} of {b_calls} calls traced); want < 1 s\n{stderr}"
    );
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st} on SIGTERM\n{stderr}");
    assert_no_panic("gotel", &stderr);
    assert_eq!(summaries(&stderr).len(), 2, "one summary per traced process:\n{stderr}");
}

/// `--exe` beside a crash-looping program: processes that exit while gotel reads or attaches to
/// them (lifetimes from a few to ~200 ms here) must not end gotel; it keeps following the file
/// and traces the next process that stays.
/// (Regression: gotel exited 3, "No such process", when the target died during attach.)
#[test]
fn exe_survives_processes_that_die_while_attaching() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let bin = private_copy(&stress_bin(), dir.path()).unwrap();
    let (sink, mut gotel, ready) = follow_exe(dir.path(), &bin, &[]);
    for i in 0..24u32 {
        let n = (i % 8) * 3 + 1; // 1..22 calls, 10 ms apart
        let mut short = Command::new(&bin);
        short.args(["-mode", "steady", "-n", &n.to_string(), "-interval-ms", "10"]);
        let mut short = Proc::spawn("stress short", short).unwrap();
        assert!(short.wait_timeout(RUN_TIMEOUT).unwrap().success());
        assert!(gotel.try_wait().unwrap().is_none(), "gotel exited after short process {i}\n{}", gotel.stderr_string());
    }
    // The one that stays: gotel attaches and traces all of its calls.
    let go = dir.path().join("go");
    let exp = dir.path().join("expect.json");
    let mut last = Command::new(&bin);
    last.args(["-mode", "steady", "-n", "50", "-interval-ms", "2", "-wait-file"]).arg(&go).arg("-expect").arg(&exp);
    let mut last = Proc::spawn("stress last", last).unwrap();
    let pid = last.pid();
    let attached = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&ready).map(|s| s.trim() == pid.to_string()).unwrap_or(false)
    });
    assert!(attached, "gotel did not attach to the process that stayed\n{}", gotel.stderr_string());
    std::fs::write(&go, b"go").unwrap();
    assert!(last.wait_timeout(RUN_TIMEOUT).unwrap().success());
    let want = StressExpect::load(&exp).returned() as usize;
    let of_last = |sp: &[FlatSpan]| sp.iter().filter(|s| s.res_i64("process.pid") == Some(pid as i64)).count();
    assert!(wait_until(SPAN_TIMEOUT, || of_last(&sink.spans().unwrap()) >= want), "spans of the last process missing");
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    assert_no_panic("gotel", &stderr);
}

/// The target returns from its last call and exits at once, with spans still in the ring buffer
/// and the export batch (`OTEL_BSP_SCHEDULE_DELAY=5000`): all of them are exported.
#[test]
fn target_exits_with_events_in_flight() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    for by_pid in [false, true] {
        let dir = tempdir();
        let bin = private_copy(&stress_bin(), dir.path()).unwrap();
        let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
        let exp = dir.path().join("expect.json");
        let release = dir.path().join("release");
        let ready = dir.path().join("ready");
        let mut args = vec![
            "-mode".to_string(),
            "burst".into(),
            "-n".into(),
            "20000".into(),
            "-expect".into(),
            exp.display().to_string(),
        ];
        let mut gcmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), PROBES);
        gcmd.env("OTEL_BSP_SCHEDULE_DELAY", "5000").env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000");
        let mut target = None;
        if by_pid {
            args.extend(["-wait-file".to_string(), release.display().to_string()]);
            let mut t = Command::new(&bin);
            t.args(&args);
            let mut t = Proc::spawn("stress", t).unwrap();
            t.wait_stderr_line("stress: waiting", Duration::from_secs(20)).unwrap();
            gcmd.arg("--pid").arg(t.pid().to_string()).arg("--ready-file").arg(&ready);
            target = Some(t);
        } else {
            gcmd.arg("--").arg(&bin).args(&args);
        }
        let mut gotel = Proc::spawn("gotel", gcmd).unwrap();
        if let Some(t) = target.as_mut() {
            assert!(
                wait_until(Duration::from_secs(30), || ready.exists()),
                "gotel did not attach\n{}",
                gotel.stderr_string()
            );
            std::fs::write(&release, b"go").unwrap();
            assert!(t.wait_timeout(RUN_TIMEOUT).unwrap().success());
        }
        let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
        let stderr = gotel.stderr_string();
        assert!(st.success(), "gotel exited {st}\n{stderr}");
        assert_no_panic("gotel", &stderr);
        let e = StressExpect::load(&exp);
        assert_eq!(e.returned(), 20000);
        // gotel exited: everything it will ever deliver has been delivered.
        let spans = sink.wait_quiet(Duration::from_millis(300), SPAN_TIMEOUT).unwrap();
        let s = the_summary(&stderr);
        assert_eq!(
            spans.len(),
            20000,
            "mode {}: spans delivered; summary {s:?}",
            if by_pid { "--pid" } else { "launch" }
        );
        assert_eq!((field(&s, "spans"), field(&s, "exported")), (20000, 20000), "summary {s:?}");
    }
}

/// A collector caps the size of one request (gRPC servers: 4 MiB by default). A batch over the
/// cap is refused whole; gotel sends it again in halves and keeps the smaller size, over grpc
/// and over http/protobuf, and loses nothing. The sink here accepts 64 KiB (about 300 spans).
#[test]
fn oversized_batches_are_split_for_the_collector() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    for grpc in [true, false] {
        let dir = tempdir();
        let bin = private_copy(&stress_bin(), dir.path()).unwrap();
        let sink = Sink::start_with_limit(Path::new(SINK), dir.path(), 64 << 10).unwrap();
        let exp = dir.path().join("expect.json");
        let export = if grpc { Export::Grpc(sink.grpc_endpoint()) } else { Export::HttpProtobuf(sink.http_endpoint()) };
        let mut gcmd = gotel_command(&export, PROBES);
        gcmd.env("OTEL_BSP_SCHEDULE_DELAY", "5000").env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000");
        gcmd.arg("--").arg(&bin).args(["-mode", "burst", "-n", "5000", "-expect", exp.to_str().unwrap()]);
        let mut gotel = Proc::spawn("gotel", gcmd).unwrap();
        let st = gotel.wait_timeout(RUN_TIMEOUT).unwrap();
        let stderr = gotel.stderr_string();
        let mode = if grpc { "grpc" } else { "http/protobuf" };
        assert!(st.success(), "{mode}: gotel exited {st}\n{stderr}");
        assert_no_panic("gotel", &stderr);
        assert_eq!(StressExpect::load(&exp).returned(), 5000);
        let spans = sink.wait_quiet(Duration::from_millis(300), SPAN_TIMEOUT).unwrap();
        let s = the_summary(&stderr);
        assert_eq!(spans.len(), 5000, "{mode}: spans delivered; summary {s:?}\n{stderr}");
        assert_eq!((field(&s, "exported"), field(&s, "lost_export_failed")), (5000, 0), "{mode}: summary {s:?}");
        assert!(field(&s, "export_requests_split") >= 1, "{mode}: no request was split: {s:?}");
        let shrunk = stderr.lines().filter(|l| l.contains("refused a request of")).count();
        assert!(
            (1..=8).contains(&shrunk),
            "{mode}: want a warning per shrink of the request size, got {shrunk}:\n{stderr}"
        );
    }
}

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
