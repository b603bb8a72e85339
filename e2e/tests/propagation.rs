//! Trace context across services through the socket, end to end, as root on this
//! kernel (lockdown=integrity: nothing may be written into a process's memory, so the
//! `traceparent` line must come from gotel's SOCK_OPS/SK_MSG programs).
//!
//! Two services from `e2e/goapps/tpsvc` (a frontend and an echo backend), one gotel each attached
//! by `--pid` with `GOTEL_PROPAGATION=inject`, plus an untraced frontend started from the SAME
//! binary file in the SAME cgroup (a cgroup made for the test), so neither the uprobes (per inode)
//! nor the cgroup programs (per cgroup) can tell it apart from the traced one except by process.
//!
//! The oracle is threefold, so each test can fail for a real reason:
//! - the bytes: the frontend logs every byte it wrote to its client sockets and the echo every
//!   byte it read, per connection; [`wire_requests`] proves that the received stream is the sent
//!   stream with exactly one `traceparent: 00-<trace>-<span>-01\r\n` line after the request line
//!   of the requests that should carry one, and nothing else changed (bodies, lengths, headers,
//!   keep-alive framing);
//! - the echo's view: the exact header set net/http parsed, the body's length and SHA-256;
//! - the spans: the backend's server span of each request is the child of the frontend's CLIENT
//!   span of that same request (matched by a per-request id in the URL), and the injected ids are
//!   that client span's.
//!
//! Then both gotels stop (SIGTERM) and the services must keep serving, over their existing
//! keep-alive connections and new ones, with requests unchanged.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gotel_e2e::{
    build_go, gotel_command, private_copy, read_spans, require_environment, wait_until, Export, FlatSpan, Proc, Sink,
    Variant,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
/// The context a request already carries when the application set `traceparent` itself.
const GIVEN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const GIVEN_PARENT: &str = "b7ad6b7169203331";

// ---------------------------------------------------------------------------------------------
// A cgroup of the test's own
// ---------------------------------------------------------------------------------------------

/// A cgroup v2 directory made for one test; the services are started in it, so gotel's cgroup
/// programs act on it alone. Removed when dropped (after the processes in it: declare it first).
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(tag: &str) -> Cgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| PathBuf::from(f[1]))
            .expect("no cgroup2 mount in /proc/self/mounts: the socket path needs cgroup v2");
        let path = root.join(format!("gotel-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup { path }
    }

    /// `bin args` started inside this cgroup (it joins it between fork and exec).
    fn spawn(&self, name: &str, bin: &Path, args: &[&str]) -> Proc {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // Only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
        Proc::spawn(name, cmd).unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The processes were killed and reaped before; the kernel empties the cgroup shortly after.
        wait_until(Duration::from_secs(5), || std::fs::remove_dir(&self.path).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// The services and gotel
// ---------------------------------------------------------------------------------------------

fn wait_file(path: &Path) -> String {
    assert!(wait_until(Duration::from_secs(30), || path.exists()), "{} never appeared", path.display());
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// The echo, the traced frontend and the untraced frontend (same binary file, same cgroup),
/// each gotel attached with injection on.
struct Services {
    /// `http://ADDR` of the echo.
    backend_url: String,
    echo: String,
    front: String,
    plain: String,
    gotel_echo: Proc,
    gotel_front: Proc,
    // Dropped (killed) before the cgroup.
    _procs: Vec<Proc>,
    sink: Sink,
    _dir: tempfile::TempDir,
    _cgroup: Cgroup,
}

fn start_services(go: &Path, tag: &str) -> Services {
    require_environment().unwrap();
    let cgroup = Cgroup::new(tag);
    let dir = tempfile::tempdir().unwrap();
    // A private copy: the uprobes are per inode, so no other test's process sees them.
    let bin = private_copy(&build_go(go, "tpsvc", Variant::Normal).unwrap(), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let file = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let echo_p = cgroup.spawn("echo", &bin, &["-role", "echo", "-portfile", &file("echo.addr")]);
    let echo = wait_file(&dir.path().join("echo.addr"));
    let backend_url = format!("http://{echo}");
    let front_p =
        cgroup.spawn("front", &bin, &["-role", "front", "-backend", &backend_url, "-portfile", &file("front.addr")]);
    let plain_p = cgroup.spawn(
        "untraced front",
        &bin,
        &["-role", "front", "-backend", &backend_url, "-portfile", &file("plain.addr")],
    );
    let front = wait_file(&dir.path().join("front.addr"));
    let plain = wait_file(&dir.path().join("plain.addr"));
    // One request before gotel attaches: the frontend's kept-alive connection to the echo is open
    // before the cgroup programs exist, and the requests after attaching reuse it.
    call(&front, "id=pre&n=1");
    let gotel_echo = attach(&sink, "backend", echo_p.pid(), "main.record(id=id)", dir.path());
    let gotel_front = attach(&sink, "frontend", front_p.pid(), "main.forward(id=id)", dir.path());
    Services {
        backend_url,
        echo,
        front,
        plain,
        gotel_echo,
        gotel_front,
        _procs: vec![front_p, plain_p, echo_p],
        sink,
        _dir: dir,
        _cgroup: cgroup,
    }
}

/// `gotel --pid PID` with injection on; returns once it has attached (its ready file exists).
fn attach(sink: &Sink, service: &str, pid: u32, probes: &str, dir: &Path) -> Proc {
    let ready = dir.join(format!("{service}.ready"));
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), probes);
    cmd.env("OTEL_SERVICE_NAME", service).env("GOTEL_PROPAGATION", "inject");
    cmd.arg("--pid").arg(pid.to_string()).arg("--ready-file").arg(&ready);
    let mut p = Proc::spawn(&format!("gotel {service}"), cmd).unwrap();
    let ok = wait_until(Duration::from_secs(60), || ready.exists() || p.try_wait().ok().flatten().is_some());
    assert!(ok && ready.exists(), "gotel for {service} did not attach; stderr:\n{}", p.stderr_string());
    p
}

impl Services {
    /// SIGTERM to both gotels; waits for them; returns (frontend's, echo's) stderr.
    fn stop_gotel(&mut self) -> (String, String) {
        self.gotel_front.signal(libc::SIGTERM);
        self.gotel_echo.signal(libc::SIGTERM);
        for p in [&mut self.gotel_front, &mut self.gotel_echo] {
            let st = p.wait_timeout(Duration::from_secs(30)).unwrap();
            assert!(st.success(), "gotel did not exit cleanly on SIGTERM: {st}; stderr:\n{}", p.stderr_string());
        }
        (self.gotel_front.stderr_string(), self.gotel_echo.stderr_string())
    }

    /// Every span, once the sink's file stopped growing (gotel flushed on SIGTERM already).
    fn spans(&self) -> Vec<FlatSpan> {
        let size = || std::fs::metadata(&self.sink.out).map(|m| m.len()).unwrap_or(0);
        let (mut last, mut since) = (u64::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let s = size();
            if s != last {
                (last, since) = (s, Instant::now());
            } else if since.elapsed() > Duration::from_millis(700) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        read_spans(&self.sink.out).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the services
// ---------------------------------------------------------------------------------------------

/// GET `path` on `addr` over a fresh connection (from the test, so never enrolled); (status, body).
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    let head_end =
        find(&reply, b"\r\n\r\n", 0).unwrap_or_else(|| panic!("GET {addr}{path}: no header end in {reply:?}"));
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, reply[head_end + 4..].to_vec())
}

fn get_json<T: DeserializeOwned>(addr: &str, path: &str) -> T {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "GET {addr}{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("GET {addr}{path}: {e}: {}", String::from_utf8_lossy(&body)))
}

/// What the echo saw of one request.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Echo {
    method: String,
    proto: String,
    remote: String,
    headers: BTreeMap<String, Vec<String>>,
    content_length: i64,
    body_len: usize,
    body_sha256: String,
}

/// One request as the frontend made it, with the echo's view.
#[derive(Debug, Deserialize)]
struct Sent {
    id: String,
    status: u16,
    reused: bool,
    local: String,
    body_len: usize,
    body_sha256: String,
    echo: Option<Echo>,
    #[serde(default)]
    err: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoadResult {
    n: u64,
    ok: u64,
    failed: u64,
    tp0: u64,
    tp1: u64,
    tp_many: u64,
    seconds: f64,
    errors: Option<Vec<String>>,
}

/// `/call` on a frontend; every request must have succeeded with its body intact.
fn call(addr: &str, query: &str) -> Vec<Sent> {
    let sent: Vec<Sent> = get_json(addr, &format!("/call?{query}"));
    assert!(!sent.is_empty());
    for s in &sent {
        assert!(s.err.is_none() && s.status == 200, "request {} ({query}) failed: {s:#?}", s.id);
        let e = s.echo.as_ref().unwrap();
        assert_eq!((e.body_len, e.body_sha256.as_str()), (s.body_len, s.body_sha256.as_str()), "{}: body", s.id);
        assert_eq!(e.proto, "HTTP/1.1", "{}", s.id);
        assert_eq!(e.remote, s.local, "{}: the echo's peer is the frontend's socket", s.id);
    }
    sent
}

/// Every connection's bytes from a service's `/wire` (hex in JSON).
fn wire(addr: &str) -> HashMap<String, Vec<u8>> {
    let m: HashMap<String, String> = get_json(addr, "/wire");
    m.into_iter()
        .map(|(k, v)| {
            let b = (0..v.len()).step_by(2).map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap()).collect();
            (k, b)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The byte oracle
// ---------------------------------------------------------------------------------------------

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    h.get(from..)?.windows(n.len()).position(|w| w == n).map(|i| i + from)
}

/// One request as it crossed a connection.
#[derive(Debug, Clone)]
struct WireRequest {
    /// The request target (`/echo/ka-0`).
    path: String,
    /// The connection (the frontend's local address).
    conn: String,
    /// (trace id, span id) of the inserted `traceparent` line, if one was inserted.
    injected: Option<(String, String)>,
}

const TP_PREFIX: &[u8] = b"traceparent: 00-";
/// `traceparent: 00-` + 32 + `-` + 16 + `-01` + CRLF.
const TP_LINE: usize = 16 + 32 + 1 + 16 + 3 + 2;

/// Walks the bytes one connection's writer sent and its reader received: every request of `sent`
/// (request line, headers, Content-Length body) must arrive byte for byte, with at most one
/// `traceparent` line inserted right after its request line, and nothing else may arrive.
fn wire_requests(conn: &str, sent: &[u8], received: &[u8]) -> Result<Vec<WireRequest>, String> {
    let (mut s, mut r) = (0, 0);
    let mut out = Vec::new();
    while s < sent.len() {
        let line_end = find(sent, b"\r\n", s).ok_or_else(|| format!("{conn}: no request line at sent byte {s}"))? + 2;
        let head_end = find(sent, b"\r\n\r\n", s).ok_or_else(|| format!("{conn}: no header end after byte {s}"))? + 4;
        let head = String::from_utf8_lossy(&sent[s..head_end]).to_string();
        let mut body = 0usize;
        for h in head.split("\r\n").skip(1) {
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    body = v.trim().parse().map_err(|_| format!("{conn}: bad Content-Length in {h:?}"))?;
                }
                if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(format!("{conn}: the frontend sent a chunked request; the oracle does not parse it"));
                }
            }
        }
        let req_end = head_end + body;
        if req_end > sent.len() {
            return Err(format!("{conn}: request at byte {s} is cut ({req_end} > {})", sent.len()));
        }
        let line = &sent[s..line_end];
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if received.get(r..r + line.len()) != Some(line) {
            return Err(format!(
                "{conn}: request line {:?} does not arrive as sent; received {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&received[r.min(received.len())..(r + 200).min(received.len())])
            ));
        }
        r += line.len();
        let mut injected = None;
        if received[r..].starts_with(TP_PREFIX) {
            let tp = received.get(r..r + TP_LINE).ok_or_else(|| format!("{conn}: {path}: cut traceparent line"))?;
            let text = String::from_utf8_lossy(tp).to_string();
            let ids = &text[TP_PREFIX.len()..TP_LINE - 2];
            let hex = |x: &str| x.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            let ok = ids.len() == 52
                && hex(&ids[..32])
                && &ids[32..33] == "-"
                && hex(&ids[33..49])
                && &ids[49..] == "-01"
                && text.ends_with("\r\n")
                && &ids[..32] != "00000000000000000000000000000000"
                && &ids[33..49] != "0000000000000000";
            if !ok {
                return Err(format!("{conn}: {path}: malformed inserted line {text:?}"));
            }
            injected = Some((ids[..32].to_string(), ids[33..49].to_string()));
            r += TP_LINE;
        }
        let rest = &sent[line_end..req_end];
        if received.get(r..r + rest.len()) != Some(rest) {
            let at = (0..rest.len()).find(|&i| received.get(r + i) != Some(&rest[i])).unwrap_or(rest.len());
            return Err(format!(
                "{conn}: {path}: bytes differ from the sent request at byte {at} of {} after the request line (injected: {injected:?}); sent {:?}, received {:?}",
                rest.len(),
                String::from_utf8_lossy(&rest[at.saturating_sub(40)..(at + 60).min(rest.len())]),
                String::from_utf8_lossy(&received[(r + at).saturating_sub(40).min(received.len())..(r + at + 60).min(received.len())])
            ));
        }
        r += rest.len();
        s = req_end;
        out.push(WireRequest { path, conn: conn.to_string(), injected });
    }
    if r != received.len() {
        return Err(format!(
            "{conn}: {} bytes arrived that were never sent: {:?}",
            received.len() - r,
            String::from_utf8_lossy(&received[r..(r + 200).min(received.len())])
        ));
    }
    Ok(out)
}

/// Every request a frontend sent, by path, checked against what the echo received.
fn wire_by_path(front: &str, echo: &str) -> HashMap<String, WireRequest> {
    let sent = wire(front);
    let received = wire(echo);
    let mut out = HashMap::new();
    for (conn, bytes) in &sent {
        let got = received.get(conn).unwrap_or_else(|| panic!("the echo has no connection from {conn}"));
        for w in wire_requests(conn, bytes, got).unwrap_or_else(|e| panic!("{e}")) {
            assert!(out.insert(w.path.clone(), w.clone()).is_none(), "request {} sent twice", w.path);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Spans and gotel's counters
// ---------------------------------------------------------------------------------------------

fn service(s: &FlatSpan) -> &str {
    s.res_str("service.name").unwrap_or("")
}

/// The spans of one run, indexed for the per-request checks.
struct Index<'a> {
    by_id: HashMap<&'a str, &'a FlatSpan>,
    /// Frontend CLIENT spans by `url.full`.
    clients: HashMap<&'a str, Vec<&'a FlatSpan>>,
    /// Backend SERVER spans by `url.path`.
    servers: HashMap<&'a str, Vec<&'a FlatSpan>>,
    /// Function spans by (service, name, id attribute).
    functions: HashMap<(&'a str, &'a str, &'a str), Vec<&'a FlatSpan>>,
}

impl<'a> Index<'a> {
    fn new(spans: &'a [FlatSpan]) -> Index<'a> {
        let mut ix = Index {
            by_id: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            functions: HashMap::new(),
        };
        for s in spans {
            ix.by_id.insert(&s.span_id, s);
            match (service(s), s.kind) {
                ("frontend", 3) => ix.clients.entry(s.attr_str("url.full").unwrap_or("")).or_default().push(s),
                ("backend", 2) => ix.servers.entry(s.attr_str("url.path").unwrap_or("")).or_default().push(s),
                (svc, 1) => ix.functions.entry((svc, &s.name, s.attr_str("id").unwrap_or(""))).or_default().push(s),
                _ => {}
            }
        }
        ix
    }

    fn one<'b>(m: &'b HashMap<&'a str, Vec<&'a FlatSpan>>, k: &str, what: &str) -> &'a FlatSpan {
        match m.get(k).map(|v| v.as_slice()) {
            Some([s]) => s,
            other => panic!("want exactly one {what} for {k}, got {other:#?}"),
        }
    }

    fn client(&self, backend_url: &str, id: &str) -> &'a FlatSpan {
        Self::one(&self.clients, &format!("{backend_url}/echo/{id}"), "frontend CLIENT span")
    }

    fn server(&self, id: &str) -> &'a FlatSpan {
        Self::one(&self.servers, &format!("/echo/{id}"), "backend SERVER span")
    }

    fn function(&self, svc: &str, name: &str, id: &str) -> &'a FlatSpan {
        match self.functions.get(&(svc, name, id)).map(|v| v.as_slice()) {
            Some([s]) => s,
            other => panic!("want exactly one {svc} {name}(id={id}) span, got {other:#?}"),
        }
    }

    fn parent(&self, s: &FlatSpan) -> Option<&'a FlatSpan> {
        self.by_id.get(s.parent_span_id.as_str()).copied()
    }
}

/// `name=N` from gotel's last log line that has it (the session summary, the socket path's totals).
fn counter(stderr: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let line = stderr.lines().rev().find(|l| l.contains(&key))?;
    let at = line.find(&key)? + key.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn assert_counter(stderr: &str, name: &str, want: u64) {
    assert_eq!(counter(stderr, name), Some(want), "gotel counter {name}; stderr:\n{stderr}");
}

/// The frontend's request `id` crossed as one trace: frontend SERVER (`/call` or `/load`) ->
/// `main.forward` -> CLIENT -> backend SERVER -> `main.record`, and the inserted line carries the
/// CLIENT span's ids.
fn assert_one_trace(ix: &Index, backend_url: &str, id: &str, w: &WireRequest) {
    let client = ix.client(backend_url, id);
    let server = ix.server(id);
    let (trace, span) = w.injected.as_ref().unwrap_or_else(|| panic!("{id}: no traceparent was inserted: {w:?}"));
    assert_eq!(
        (trace.as_str(), span.as_str()),
        (client.trace_id.as_str(), client.span_id.as_str()),
        "{id}: the inserted traceparent is not the CLIENT span's context; client {client:#?}"
    );
    assert_eq!((server.trace_id.as_str(), server.parent_span_id.as_str()), (client.trace_id.as_str(), client.span_id.as_str()),
        "{id}: the backend SERVER span is not the child of the frontend CLIENT span: server {server:#?}\nclient {client:#?}");
    let forward = ix.function("frontend", "main.forward", id);
    assert_eq!(client.parent_span_id, forward.span_id, "{id}: CLIENT under main.forward");
    let front_server = ix.parent(forward).unwrap_or_else(|| panic!("{id}: main.forward has no parent: {forward:#?}"));
    assert_eq!(
        (service(front_server), front_server.kind),
        ("frontend", 2),
        "{id}: main.forward under the frontend's SERVER span"
    );
    let record = ix.function("backend", "main.record", id);
    assert_eq!(record.parent_span_id, server.span_id, "{id}: main.record under the backend SERVER span");
    for s in [front_server, forward, client, server, record] {
        assert_eq!(s.trace_id, client.trace_id, "{id}: every span of the request is in one trace: {s:#?}");
    }
}

/// The headers net/http parsed are exactly what the frontend set plus Go's own, plus the one
/// `Traceparent` (given by the application, or inserted: `tp`).
fn assert_headers(s: &Sent, body: bool, big: usize, tp: Option<&str>) {
    let e = s.echo.as_ref().unwrap();
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut put = |k: &str, v: &str| want.insert(k.to_string(), vec![v.to_string()]);
    put("Accept-Encoding", "gzip");
    put("User-Agent", "Go-http-client/1.1");
    put("X-Request-Id", &s.id);
    if body {
        put("Content-Length", &s.body_len.to_string());
    }
    if let Some(tp) = tp {
        put("Traceparent", tp);
    }
    let mut got = e.headers.clone();
    if big > 0 {
        let v = got.remove("X-Big").unwrap_or_default();
        assert!(
            v.len() == 1 && v[0].len() == big,
            "{}: X-Big of {big} bytes arrives once, got {:?}",
            s.id,
            v.iter().map(|x| x.len()).collect::<Vec<_>>()
        );
    }
    assert_eq!(got, want, "{}: headers the echo received", s.id);
    assert_eq!(e.content_length, if body { s.body_len as i64 } else { 0 }, "{}: Content-Length", s.id);
}

fn tp_of(w: &WireRequest) -> String {
    let (t, s) = w.injected.as_ref().unwrap_or_else(|| panic!("{}: no traceparent was inserted: {w:?}", w.path));
    format!("00-{t}-{s}-01")
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// A kept-alive connection opened before gotel attached (then reused by every sequential call),
/// keep-alive reuse, a 20 KB POST, a 6 KB header, both together, a request that already has a
/// `traceparent` (canonical and lower-case key), a new connection, an untraced process of the same
/// binary in the same cgroup; then gotel stops and both services keep serving.
fn one_trace_across_two_services(go: &Path, tag: &str) {
    let mut svc = start_services(go, tag);
    let given = format!("00-{GIVEN_TRACE}-{GIVEN_PARENT}-01");
    let f = svc.front.clone();
    // (label, query, body?, 6 KB header?, given traceparent?, expected to be injected)
    let ka = call(&f, "id=ka&n=5");
    let post = call(&f, "id=post&n=2&method=POST&body=20480");
    let big = call(&f, "id=big&n=2&hdr=6144");
    let mix = call(&f, "id=mix&n=1&method=POST&body=20480&hdr=6144");
    let tpc = call(&f, &format!("id=tpc&n=2&tp={given}&tpkey=Traceparent"));
    let tpl = call(&f, &format!("id=tpl&n=2&method=POST&body=300&tp={given}&tpkey=traceparent"));
    let fresh = call(&f, "id=fresh&n=2&fresh=1");
    let plain = call(&svc.plain, "id=plain&n=3&method=POST&body=20480&hdr=6144");

    // Keep-alive: every sequential call of the shared client went over the connection opened
    // before gotel attached.
    let conn = ka[0].local.clone();
    for s in ka.iter().chain(&post).chain(&big).chain(&mix).chain(&tpc).chain(&tpl) {
        assert!(s.reused && s.local == conn, "{}: not sent over the kept-alive connection {conn}: {s:#?}", s.id);
    }
    assert!(!fresh[0].reused && fresh[0].local != conn && fresh[1].reused, "fresh client: new connection, then reused");

    let (front_log, echo_log) = svc.stop_gotel();

    // After gotel: the existing keep-alive connection and new ones still work, unchanged.
    std::thread::sleep(Duration::from_millis(500));
    let after = call(&f, "id=after&n=2&method=POST&body=20480");
    assert!(
        after.iter().all(|s| s.reused && s.local == conn),
        "after gotel stopped: the kept-alive connection is reused: {after:#?}"
    );
    let after_new = call(&f, "id=afternew&n=2&fresh=1&hdr=6144");
    let plain_after = call(&svc.plain, "id=plainafter&n=1");
    assert_eq!(http_get(&svc.echo, "/healthz").0, 200);

    let wires = wire_by_path(&f, &svc.echo);
    let plain_wires = wire_by_path(&svc.plain, &svc.echo);
    let w =
        |id: &str| wires.get(&format!("/echo/{id}")).unwrap_or_else(|| panic!("no bytes of request {id} on the wire"));
    assert!(w("pre-0").injected.is_none() && w("pre-0").conn == conn, "the request before gotel: {:?}", w("pre-0"));

    // Exactly one header more where injected; untouched elsewhere.
    for s in ka.iter().chain(&post).chain(&big).chain(&mix).chain(&fresh) {
        assert_headers(
            s,
            s.body_len > 0,
            if s.id.starts_with("big") || s.id.starts_with("mix") { 6144 } else { 0 },
            Some(&tp_of(w(&s.id))),
        );
    }
    for s in tpc.iter().chain(&tpl) {
        assert!(w(&s.id).injected.is_none(), "{}: a second traceparent was inserted: {:?}", s.id, w(&s.id));
        assert_headers(s, s.body_len > 0, 0, Some(&given));
    }
    for s in after.iter().chain(&after_new) {
        assert!(w(&s.id).injected.is_none(), "{}: inserted after gotel stopped", s.id);
        assert_headers(s, s.body_len > 0, if s.id.starts_with("afternew") { 6144 } else { 0 }, None);
    }
    for s in plain.iter().chain(&plain_after) {
        let pw = plain_wires.get(&format!("/echo/{}", s.id)).unwrap();
        assert!(pw.injected.is_none(), "{}: the untraced process's request was changed: {pw:?}", s.id);
        assert_headers(s, s.body_len > 0, if s.id.starts_with("plain-") { 6144 } else { 0 }, None);
    }

    // Counters: one insertion per request that should have one, the two present ones skipped.
    let injected = ka.len() + post.len() + big.len() + mix.len() + fresh.len();
    // Through the socket only: nothing was written into either process's memory.
    assert_counter(&front_log, "socket_injected", injected as u64);
    assert_counter(&front_log, "socket_skipped_present", (tpc.len() + tpl.len()) as u64);
    assert_eq!(counter(&echo_log, "socket_injected").unwrap_or(0), 0, "the echo sent no request: {echo_log}");
    for log in [&front_log, &echo_log] {
        assert_counter(log, "traceparent_injected", 0);
        for c in ["lost_ring_buffer_full", "lost_queue_full", "lost_export_failed"] {
            assert_counter(log, c, 0);
        }
    }

    // The spans: one trace per request across both services, with the right parents.
    let spans = svc.spans();
    let ix = Index::new(&spans);
    for s in ka.iter().chain(&post).chain(&big).chain(&mix).chain(&fresh) {
        assert_one_trace(&ix, &svc.backend_url, &s.id, w(&s.id));
    }
    for s in tpc.iter().chain(&tpl) {
        let server = ix.server(&s.id);
        assert_eq!(
            (server.trace_id.as_str(), server.parent_span_id.as_str()),
            (GIVEN_TRACE, GIVEN_PARENT),
            "{}: the backend adopts the application's own traceparent",
            s.id
        );
        ix.client(&svc.backend_url, &s.id);
    }
    for s in &plain {
        let server = ix.server(&s.id);
        assert_eq!(server.parent_span_id, "", "{}: the untraced process's request starts its own trace", s.id);
        assert!(ix.clients.values().flatten().all(|c| c.trace_id != server.trace_id));
    }
    for s in after.iter().chain(&after_new).chain(&plain_after) {
        assert!(!ix.servers.contains_key(format!("/echo/{}", s.id).as_str()), "{}: a span after gotel stopped", s.id);
    }
}

#[test]
fn one_trace_go_1_22() {
    one_trace_across_two_services(&gotel_e2e::go_version_bin("1.22").unwrap(), "g122");
}

#[test]
fn one_trace_go_1_26() {
    one_trace_across_two_services(&gotel_e2e::go_bin(), "g126");
}

#[test]
fn one_trace_go_1_27() {
    one_trace_across_two_services(&gotel_e2e::go_version_bin("1.27").unwrap(), "g127");
}

/// 10,000 requests from 8 goroutines as fast as they go (a quarter of them POSTs), while the
/// untraced process of the same binary in the same cgroup sends 2,000 of its own: no request fails,
/// every traced one carries exactly the CLIENT span's context and every backend SERVER span of
/// them is that CLIENT span's child; the untraced ones arrive unchanged. Then gotel stops and the
/// kept-alive connections go on serving.
#[test]
fn ten_thousand_requests_all_parented() {
    const N: u64 = 10_000;
    const PLAIN: u64 = 2_000;
    let mut svc = start_services(&gotel_e2e::go_bin(), "load");
    let plain_addr = svc.plain.clone();
    let untraced =
        std::thread::spawn(move || get_json::<LoadResult>(&plain_addr, &format!("/load?prefix=U&n={PLAIN}&c=4")));
    let traced: LoadResult = get_json(&svc.front, &format!("/load?prefix=L&n={N}&c=8"));
    let untraced = untraced.join().unwrap();
    eprintln!("traced load: {traced:?}\nuntraced load: {untraced:?}");
    assert_eq!(
        (traced.n, traced.ok, traced.failed, traced.errors.as_deref().unwrap_or(&[]).len()),
        (N, N, 0, 0),
        "traced: {traced:#?}"
    );
    assert_eq!(
        (traced.tp1, traced.tp0, traced.tp_many),
        (N, 0, 0),
        "traced: each request arrives with one traceparent"
    );
    assert_eq!((untraced.ok, untraced.failed, untraced.tp0), (PLAIN, 0, PLAIN), "untraced: {untraced:#?}");
    eprintln!("{N} traced requests in {:.2} s ({:.0}/s)", traced.seconds, N as f64 / traced.seconds);

    let (front_log, echo_log) = svc.stop_gotel();
    assert_counter(&front_log, "socket_injected", N);
    for log in [&front_log, &echo_log] {
        assert_counter(log, "traceparent_injected", 0);
        for c in ["lost_ring_buffer_full", "lost_queue_full", "lost_export_failed"] {
            assert_counter(log, c, 0);
        }
    }
    // After gotel: the same client's kept-alive connections, full speed again.
    std::thread::sleep(Duration::from_millis(500));
    let after: LoadResult = get_json(&svc.front, "/load?prefix=A&n=400&c=8");
    assert_eq!((after.ok, after.failed, after.tp0), (400, 0, 400), "after gotel stopped: {after:#?}");

    let wires = wire_by_path(&svc.front, &svc.echo);
    let plain_wires = wire_by_path(&svc.plain, &svc.echo);
    assert_eq!(plain_wires.len() as u64, PLAIN);
    assert!(plain_wires.values().all(|w| w.injected.is_none()), "the untraced process's requests were changed");
    assert_eq!(wires.len() as u64, N + 400 + 1, "the load, the requests after gotel, the one before it");
    let conns_before: std::collections::HashSet<&str> =
        wires.values().filter(|w| w.path.starts_with("/echo/L-")).map(|w| w.conn.as_str()).collect();
    let reused_after =
        wires.values().filter(|w| w.path.starts_with("/echo/A-") && conns_before.contains(w.conn.as_str())).count();
    assert!(reused_after > 0, "after gotel stopped, no request went over a connection opened while it ran");

    let spans = svc.spans();
    let ix = Index::new(&spans);
    let mut parented = 0;
    for i in 0..N {
        let id = format!("L-{i}");
        let w = &wires[&format!("/echo/{id}")];
        assert_one_trace(&ix, &svc.backend_url, &id, w);
        parented += 1;
    }
    let servers = ix.servers.keys().filter(|p| p.starts_with("/echo/L-")).count();
    assert_eq!((parented, servers as u64), (N, N), "backend SERVER spans of the traced load");
    for i in 0..PLAIN {
        assert_eq!(ix.server(&format!("U-{i}")).parent_span_id, "", "U-{i}: untraced request starts its own trace");
    }
    eprintln!(
        "{parented} of {N} backend SERVER spans are children of their frontend CLIENT span; {} spans in all",
        spans.len()
    );
}

/// The byte oracle itself: it accepts exactly one well-formed line after the request line and
/// refuses every other change (so the tests above cannot pass on a broken insertion).
#[test]
fn wire_oracle_refuses_every_other_change() {
    let req = |path: &str, body: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    let tp = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
    let insert = |r: &[u8], line: &str| {
        let at = find(r, b"\r\n", 0).unwrap() + 2;
        [&r[..at], line.as_bytes(), &r[at..]].concat()
    };
    let (a, b) = (req("/echo/a", "hello"), req("/echo/b", "x\r\n\r\nGET / HTTP/1.1\r\n"));
    let sent = [a.clone(), b.clone()].concat();
    // Unchanged, and one line on the second request only.
    let got = wire_requests("c", &sent, &sent).unwrap();
    assert!(got.iter().all(|w| w.injected.is_none()) && got.len() == 2);
    let got = wire_requests("c", &sent, &[a.clone(), insert(&b, tp)].concat()).unwrap();
    assert_eq!(got[1].injected, Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "00f067aa0ba902b7".into())));
    assert_eq!(got[0].injected, None);
    // Refused: two lines, a malformed line, a line elsewhere, a changed body, extra or missing bytes.
    for bad in [
        [insert(&insert(&a, tp), tp), b.clone()].concat(),
        [insert(&a, &tp.replace("-01\r\n", "-00\r\n")), b.clone()].concat(),
        [insert(&a, &tp.replace("4bf9", "4BF9")), b.clone()].concat(),
        [a.clone(), b.clone(), tp.as_bytes().to_vec()].concat(),
        [a[..a.len() - 1].to_vec(), b"H".to_vec(), b.clone()].concat(),
        [a.clone(), b[..b.len() - 1].to_vec()].concat(),
        [a.clone(), b.clone(), b"x".to_vec()].concat(),
        {
            let mut x = insert(&a, tp);
            let n = x.len();
            x.insert(n - 5, b'Z');
            x.remove(n - 4);
            [x, b.clone()].concat()
        },
    ] {
        assert!(wire_requests("c", &sent, &bad).is_err(), "accepted {:?}", String::from_utf8_lossy(&bad));
    }
}
