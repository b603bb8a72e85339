//! Helpers of the hardening tests (`tests/hardening_*.rs`: bad input, faults, stress): the
//! stress program and its `-expect` file, gotel's summary line, `/metrics` scraping, a sink on
//! chosen ports, and counting the spans it received.

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

use crate::{build_go, go_bin, gotel_command, read_spans, run, wait_until, Export, FlatSpan, Proc, Variant};

pub const APP: &str = "stress";
/// Every traced function of the stress program.
pub const PROBES: &str = "main.work;main.gate;main.descend;main.grow;main.safe;main.boom;main.boom2;\
                      main.quit;main.quitInner;main.alloc;main.hop;main.tick";

pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn stress_bin() -> PathBuf {
    build_go(&go_bin(), APP, Variant::Normal).expect("go build e2e/goapps/stress")
}

/// A temp dir every user can enter (the non-root cases run programs from it).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The stress program's `-expect` file.
#[derive(Debug, Deserialize)]
pub struct StressExpect {
    /// Calls that returned normally, per function: the spans expected.
    pub counts: BTreeMap<String, i64>,
    /// Calls entered, per function.
    pub entries: BTreeMap<String, i64>,
}

impl StressExpect {
    pub fn load(p: &Path) -> StressExpect {
        let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("parse {}: {e}: {s}", p.display()))
    }
    pub fn returned(&self) -> u64 {
        self.counts.values().sum::<i64>() as u64
    }
    pub fn entered(&self) -> u64 {
        self.entries.values().sum::<i64>() as u64
    }
    pub fn nonzero(&self) -> BTreeMap<String, i64> {
        self.counts.iter().filter(|(_, v)| **v > 0).map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The fields of gotel's `session summary` lines (one per traced process), in order.
pub fn summaries(stderr: &str) -> Vec<BTreeMap<String, u64>> {
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

pub fn the_summary(stderr: &str) -> BTreeMap<String, u64> {
    let s = summaries(stderr);
    assert_eq!(s.len(), 1, "expected one `session summary` line in gotel's stderr:\n{stderr}");
    s.into_iter().next().unwrap()
}

pub fn field(s: &BTreeMap<String, u64>, k: &str) -> u64 {
    *s.get(k).unwrap_or_else(|| panic!("session summary has no field {k}: {s:?}"))
}

pub fn assert_no_panic(who: &str, stderr: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "{who}: stderr contains {bad:?}:\n{stderr}");
    }
}

/// A free 127.0.0.1 port (nobody listens on it once this returns).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `GET path` over HTTP/1.0 (bounded): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
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
pub fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
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
pub type Sample = (Instant, BTreeMap<String, f64>);

/// Scrapes `/metrics` every 100 ms in the background and keeps every sample.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    pub fn start(addr: SocketAddr) -> Scraper {
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
    pub fn series(&self, name: &str) -> Vec<f64> {
        self.samples.lock().unwrap().iter().filter_map(|(_, m)| m.get(name).copied()).collect()
    }

    pub fn samples_since(&self, t: Instant, name: &str) -> Vec<f64> {
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
pub fn sink_at(sink: &str, grpc: SocketAddr, http: SocketAddr, out: &Path) -> Proc {
    let mut cmd = Command::new(sink);
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
pub fn unique_spans(files: &[&Path]) -> (Vec<FlatSpan>, usize) {
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

pub fn count_by_name(spans: &[FlatSpan]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for s in spans {
        *m.entry(s.name.clone()).or_default() += 1;
    }
    m
}

pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Untraced run of the stress program: (exit status, stdout, expectation).
pub fn reference(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, StressExpect) {
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

/// gotel in launch mode on the stress program, with metrics on a free port.
pub fn launch(export: &Export, bin: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let maddr = free_addr();
    let mut cmd = gotel_command(export, PROBES);
    cmd.env("GOTEL_METRICS_ADDR", maddr.to_string());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.arg("--").arg(bin).args(args);
    (Proc::spawn("gotel", cmd).unwrap(), maddr)
}
