//! Helpers for gotel's end-to-end tests: build the Go target programs, run the OTLP sink
//! (`otlp-sink`), run gotel, read and check the spans it exported.
//!
//! Everything here is bounded in time and kills what it started when dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

pub mod cgroup;
pub mod check;
pub mod hardening;
pub mod servers;
pub mod sink;
pub mod toolchains;

pub use sink::FlatSpan;

/// The workspace root (the repository's top folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Cargo's target dir (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The gotel binary under test: `GOTEL_BIN`, else `<target>/release/gotel`.
pub fn gotel_bin() -> PathBuf {
    match std::env::var_os("GOTEL_BIN") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release/gotel"),
    }
}

/// The Go toolchain: `GO`, else the default of `tools/go-toolchains.txt`, else `go` on PATH.
pub fn go_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GO") {
        return PathBuf::from(p);
    }
    let default = toolchains::default();
    if default.installed() {
        return default.path();
    }
    PathBuf::from("go")
}

// ---------------------------------------------------------------------------------------------
// Prerequisites: skip (one line) for a newcomer's `cargo test`, fail under tools/test.sh
// ---------------------------------------------------------------------------------------------

/// What an end-to-end test needs from the machine.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root (CAP_SYS_ADMIN): gotel attaches eBPF uprobes.
    Root,
    /// The default Go toolchain ([`go_bin`]).
    Go,
    /// A Go release of `tools/go-toolchains.txt` ([`go_version_bin`]).
    GoVersion(&'static str),
    /// PostgreSQL and Redis from Debian's packages ([`servers`]).
    Databases,
}

impl Need {
    /// Why the test cannot run here, if it cannot.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Root if unsafe { libc::geteuid() } != 0 => {
                Some("needs root for eBPF uprobes (run tools/test.sh as root)".into())
            }
            Need::Root => None,
            Need::Go => {
                let go = go_bin();
                let runs = Command::new(&go).arg("version").env("GOTOOLCHAIN", "local").output();
                (!runs.is_ok_and(|o| o.status.success())).then(|| {
                    format!(
                        "needs a Go toolchain: {} does not run (set GO=/path/to/go; tools/install-deps.sh installs tools/go-toolchains.txt)",
                        go.display()
                    )
                })
            }
            Need::GoVersion(v) => go_version_bin(v).err().map(|e| format!("needs {e}")),
            Need::Databases => servers::missing_servers(),
        }
    }
}

/// The first of `needs` the machine lacks, said in one line on stderr (not captured by the test
/// harness, so `cargo test` shows it); under `GOTEL_TEST_REQUIRE_ALL=1` it panics instead. True when the
/// test must return. Use through [`require!`].
pub fn skip_unless(test: &str, needs: &[Need]) -> bool {
    let Some(why) = needs.iter().find_map(|n| n.missing()) else { return false };
    toolchains::skip_or_fail(test.rsplit("::").next().unwrap_or(test), &why);
    true
}

/// `gotel_e2e::require!(Root, Go, GoVersion("1.19"))` as a test's first line: returns from the test, with one line
/// saying why, when the machine lacks one of them (fails under `GOTEL_TEST_REQUIRE_ALL=1`).
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if $crate::skip_unless(
            {
                fn f() {}
                let name = std::any::type_name_of_val(&f);
                name.strip_suffix("::f").unwrap_or(name)
            },
            &{
                #[allow(unused_imports)]
                use $crate::Need::*;
                [$($need),+]
            },
        ) {
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process that is killed (SIGTERM, then SIGKILL after 3 s) and reaped when dropped.
/// Its stdout and stderr, when piped, are collected by background threads.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Lines of stderr, also sent here as they arrive (for waiting on a message).
    stderr_lines: Option<std::sync::mpsc::Receiver<String>>,
}

fn collect<R: Read + Send + 'static>(
    r: R,
    buf: Arc<Mutex<Vec<u8>>>,
    lines: Option<std::sync::mpsc::Sender<String>>,
    echo: Option<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    buf.lock().unwrap().extend_from_slice(&line);
                    let s = String::from_utf8_lossy(&line).into_owned();
                    if let Some(prefix) = &echo {
                        // Shown by the test harness only when the test fails.
                        eprint!("[{prefix}] {s}");
                    }
                    if let Some(tx) = &lines {
                        let _ = tx.send(s);
                    }
                }
            }
        }
    })
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr piped (stdin null). stderr is echoed to the test's
    /// stderr prefixed with `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {name}: {cmd:?}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone(), None, None),
            collect(child.stderr.take().unwrap(), stderr.clone(), Some(tx), Some(name.to_string())),
        ];
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            status: None,
            stdout,
            stderr,
            readers,
            stderr_lines: Some(rx),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Exit status if it has exited (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                self.status = Some(st);
            }
        }
        Ok(self.status)
    }

    /// Waits for exit at most `timeout`; on timeout the process is killed and an error returned.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                self.join_readers();
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} did not exit within {:?}; killed. stderr:\n{}", self.name, timeout, self.stderr_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join_readers(&mut self) {
        // The readers end when every holder of the pipes exits; do not hang on a grandchild
        // that kept them open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for r in std::mem::take(&mut self.readers) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            if let Some(c) = &self.child {
                unsafe {
                    libc::kill(c.id() as i32, sig);
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL after 3 s; reaps.
    pub fn kill(&mut self) {
        if self.try_wait().ok().flatten().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                self.status = Some(st);
            }
        }
    }

    pub fn stdout_string(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr_string(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (at most `timeout`) for a stderr line containing `needle`.
    pub fn wait_stderr_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let rx = self.stderr_lines.as_ref().ok_or_else(|| anyhow!("no stderr lines"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{}: no stderr line with {needle:?} within {timeout:?}", self.name);
            }
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{}: stderr closed before a line with {needle:?}", self.name)
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion (bounded), returning (status, stdout, stderr).
pub fn run(name: &str, cmd: Command, timeout: Duration) -> Result<(ExitStatus, String, String)> {
    let mut p = Proc::spawn(name, cmd)?;
    let st = p.wait_timeout(timeout)?;
    Ok((st, p.stdout_string(), p.stderr_string()))
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Go programs
// ---------------------------------------------------------------------------------------------

/// How a Go program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `go build` (symbols and DWARF).
    Normal,
    /// `go build -ldflags=-s -w` (no .symtab, no DWARF: only .gopclntab).
    Stripped,
    /// `go build -buildmode=pie`.
    Pie,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Normal, Variant::Stripped, Variant::Pie];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Normal => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Pie => &["-buildmode=pie"],
        }
    }
}

/// The toolchain of a Go release listed in `tools/go-toolchains.txt` (`tools/install-deps.sh`
/// installs them). Fails when it is not listed or not installed.
pub fn go_version_bin(version: &str) -> Result<PathBuf> {
    let Some(t) = toolchains::version(version) else {
        bail!("Go {version} is not listed in tools/go-toolchains.txt");
    };
    if !t.installed() {
        bail!("Go {version} at {} (tools/install-deps.sh installs it)", t.path);
    }
    Ok(t.path())
}

/// A directory name for builds made with `go`: `go-1.19` for `/usr/lib/go-1.19/bin/go`, else
/// the toolchain root's name (`go` for `/usr/local/go/bin/go`).
fn toolchain_label(go: &Path) -> String {
    let root = go.parent().and_then(|b| b.parent());
    root.and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "go".into())
}

/// Source dir of a Go program under `e2e/goapps/`.
pub fn goapp_dir(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("goapps").join(app)
}

/// Builds `e2e/goapps/<app>` with `go` in the given variant into
/// `<target>/e2e-go/<toolchain>/<variant>/<app>` and returns that path. Builds once per process
/// and (toolchain, app, variant); `go build`'s own cache makes rebuilding in a later process cheap.
pub fn build_go(go: &Path, app: &str, variant: Variant) -> Result<PathBuf> {
    type Key = (PathBuf, String, Variant);
    static BUILT: OnceLock<Mutex<HashMap<Key, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let key = (go.to_path_buf(), app.to_string(), variant);
    if let Some(p) = built.get(&key) {
        return Ok(p.clone());
    }
    let dir = target_dir().join("e2e-go").join(toolchain_label(go)).join(variant.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let out = dir.join(app);
    let tmp = dir.join(format!(".{app}.{}.tmp", std::process::id()));
    let mut cmd = Command::new(go);
    cmd.arg("build").arg("-o").arg(&tmp).args(variant.flags()).arg(".");
    cmd.current_dir(goapp_dir(app)).env("GOTOOLCHAIN", "local").env("GOFLAGS", "-mod=mod").env("CGO_ENABLED", "0");
    let (st, so, se) = run(&format!("go build {app} ({})", variant.name()), cmd, Duration::from_secs(300))?;
    if !st.success() {
        bail!("go build {app} ({}) failed: {st}\n{so}{se}", variant.name());
    }
    std::fs::rename(&tmp, &out)?;
    built.insert(key, out.clone());
    Ok(out)
}

/// Copies `bin` into `dir` (so that the uprobes of one test, which are per inode, never see
/// another test's process) and returns the copy.
pub fn private_copy(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let dst = dir.join(bin.file_name().unwrap());
    std::fs::copy(bin, &dst).with_context(|| format!("copy {} to {}", bin.display(), dst.display()))?;
    Ok(dst)
}

/// What the engine program says a tracer must produce (`engine -expect FILE`).
#[derive(Debug, Clone, Deserialize)]
pub struct Expectation {
    pub counts: BTreeMap<String, i64>,
    pub startup: BTreeMap<String, i64>,
    pub unwound: BTreeMap<String, i64>,
    pub parents: BTreeMap<String, Vec<String>>,
    pub children: BTreeMap<String, BTreeMap<String, [usize; 2]>>,
    pub probes: Vec<String>,
}

impl Expectation {
    pub fn load(path: &Path) -> Result<Expectation> {
        let s = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&s).with_context(|| format!("parse {}", path.display()))
    }

    /// Expected span counts when calls made before the wait was released are not traced.
    pub fn counts_without_startup(&self) -> BTreeMap<String, i64> {
        let mut c = self.counts.clone();
        for (k, v) in &self.startup {
            *c.get_mut(k).unwrap() -= v;
        }
        c
    }

    /// `GOTEL_PROBES` value naming every traced function.
    pub fn probes_env(&self) -> String {
        self.probes.join(";")
    }

    pub fn total(counts: &BTreeMap<String, i64>) -> usize {
        counts.values().map(|v| *v as usize).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The sink
// ---------------------------------------------------------------------------------------------

/// A running `otlp-sink`.
pub struct Sink {
    proc: Proc,
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub out: PathBuf,
}

impl Sink {
    /// Starts `bin` (the `otlp-sink` binary; in tests `env!("CARGO_BIN_EXE_otlp-sink")`)
    /// on free 127.0.0.1 ports, writing spans to `dir/spans.jsonl`.
    pub fn start(bin: &Path, dir: &Path) -> Result<Sink> {
        Self::start_with_limit(bin, dir, 4 << 20)
    }

    /// Like [`Sink::start`], refusing requests larger than `max_request_bytes` as collectors do.
    pub fn start_with_limit(bin: &Path, dir: &Path, max_request_bytes: usize) -> Result<Sink> {
        let out = dir.join("spans.jsonl");
        let mut cmd = Command::new(bin);
        cmd.args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--out"]).arg(&out);
        cmd.arg("--max-request-bytes").arg(max_request_bytes.to_string());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().unwrap();
        // The first stdout line carries the addresses; read it with a bound.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            let _ = tx.send(l);
            // Keep draining so the sink never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![collect(child.stderr.take().unwrap(), stderr_buf.clone(), None, Some("sink".into()))];
        let proc = Proc {
            name: "otlp-sink".into(),
            child: Some(child),
            status: None,
            stdout: Default::default(),
            stderr: stderr_buf,
            readers,
            stderr_lines: None,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| anyhow!("otlp-sink printed no address line within 20 s"))?;
        #[derive(Deserialize)]
        struct Addrs {
            grpc: std::net::SocketAddr,
            http: std::net::SocketAddr,
        }
        let a: Addrs = serde_json::from_str(line.trim())
            .with_context(|| format!("otlp-sink address line {line:?}; stderr: {}", proc.stderr_string()))?;
        Ok(Sink { proc, grpc: a.grpc, http: a.http, out })
    }

    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener (clients append `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Result<Vec<FlatSpan>> {
        read_spans(&self.out)
    }

    /// Polls until at least `n` spans were received or `timeout` passes; returns what arrived.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Result<Vec<FlatSpan>> {
        let mut last = Vec::new();
        let ok = wait_until(timeout, || {
            match self.spans() {
                Ok(s) => last = s,
                Err(_) => return false,
            }
            last.len() >= n
        });
        let _ = ok;
        Ok(last)
    }

    /// Waits until no new span arrived for `quiet` (at most `timeout`); returns all spans.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Result<Vec<FlatSpan>> {
        let deadline = Instant::now() + timeout;
        let mut last_len = usize::MAX;
        let mut since = Instant::now();
        loop {
            let s = self.spans()?;
            if s.len() != last_len {
                last_len = s.len();
                since = Instant::now();
            } else if since.elapsed() >= quiet || Instant::now() >= deadline {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_string()
    }
}

/// Reads the sink's JSON-lines file (a missing file is no spans; a partial last line is ignored).
pub fn read_spans(path: &Path) -> Result<Vec<FlatSpan>> {
    let s = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut out = Vec::new();
    for l in s.lines() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<FlatSpan>(l) {
            Ok(sp) => out.push(sp),
            Err(_) if !s.ends_with('\n') && std::ptr::eq(l, s.lines().last().unwrap()) => {}
            Err(e) => bail!("bad span line {l:?}: {e}"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// gotel
// ---------------------------------------------------------------------------------------------

/// How gotel exports in a test.
#[derive(Clone, Debug)]
pub enum Export {
    /// `OTEL_TRACES_EXPORTER=otlp`, `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` to the sink.
    Grpc(String),
    /// `OTEL_TRACES_EXPORTER=otlp`, `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` to the sink.
    HttpProtobuf(String),
    /// `OTEL_TRACES_EXPORTER=console`.
    Console,
}

/// A `Command` for gotel with a clean OTel environment and the test defaults
/// (`OTEL_BSP_SCHEDULE_DELAY=100`, large queue, `GOTEL_THREAD_ID=on`).
pub fn gotel_command(export: &Export, probes: &str) -> Command {
    let mut cmd = Command::new(gotel_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("OTEL_") || k.starts_with("GOTEL_") && k != "GOTEL_BIN" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("GOTEL_PROBES", probes)
        .env("OTEL_SERVICE_NAME", "gotel-e2e")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "65536")
        // The checks of `check.rs` verify each span's thread (opt-in: `GOTEL_THREAD_ID`).
        .env("GOTEL_THREAD_ID", "on")
        .env("GOTEL_LOG", std::env::var("E2E_GOTEL_LOG").unwrap_or_else(|_| "info".into()));
    match export {
        Export::Grpc(ep) => {
            cmd.env("OTEL_TRACES_EXPORTER", "otlp")
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", ep);
        }
        Export::HttpProtobuf(ep) => {
            cmd.env("OTEL_TRACES_EXPORTER", "otlp")
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", ep);
        }
        Export::Console => {
            cmd.env("OTEL_TRACES_EXPORTER", "console");
        }
    }
    cmd
}

/// Fails with a clear message when the test cannot run the real thing (not root, no gotel).
pub fn require_environment() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the e2e tests attach uprobes and must run as root");
    }
    let g = gotel_bin();
    if !g.exists() {
        bail!("gotel binary {} not found: run `cargo build --release -p gotel` first or set GOTEL_BIN", g.display());
    }
    Ok(())
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert.pem, key.pem).
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let (st, so, se) = run("openssl req", cmd, Duration::from_secs(60)).unwrap();
    assert!(st.success(), "openssl req failed: {so}{se}");
    (cert, key)
}

/// One HTTP/1.1 `GET` from the test process (an untraced client) on a connection of its own;
/// returns the status code (0 when the answer is not HTTP).
pub fn http_get(addr: &str, path: &str) -> u16 {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}
