//! Built-in HTTP instrumentation, end to end, as root against the real kernel: two Go services
//! (`e2e/goapps/httpsvc`, a frontend calling a backend over real HTTP on 127.0.0.1), one gotel
//! each, on several Go versions. Checks SERVER and CLIENT spans with their semantic-convention
//! attributes, user functions nested under the server span, a goroutine spawned inside a traced
//! call parented to that call, an incoming `traceparent` adopted (and an invalid one ignored),
//! and, with `GOTEL_PROPAGATION=inject`, one trace across both services (the backend's server
//! span under the frontend's client span; on these machines, in lockdown, through the socket
//! path), while without it nothing is inserted and the services stay separate traces
//! (e2e/tests/propagation.rs tests the socket path itself in depth). Also: a stripped build (field offsets from the layout table)
//! and HTTP/2 (h2c) server statuses on Go 1.26 and 1.27.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gotel_e2e::{gotel_command, require_environment, run, wait_until, Export, FlatSpan, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Builds `e2e/goapps/<app>` into `dir`; `stripped`: with `-ldflags=-s -w`.
fn build(go: &Path, dir: &Path, app: &str, stripped: bool) -> PathBuf {
    let out = dir.join(app);
    let mut cmd = Command::new(go);
    cmd.arg("build");
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg("-o").arg(&out).arg(".");
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("goapps").join(app))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0");
    let (st, so, se) = run(&format!("go build {app}"), cmd, Duration::from_secs(300)).unwrap();
    assert!(st.success(), "go build of {app} with {} failed: {so}{se}", go.display());
    out
}

fn start(sink: &Sink, service: &str, probes: &str, inject: bool, bin: &Path, args: &[&str]) -> Proc {
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), probes);
    cmd.env("OTEL_SERVICE_NAME", service).env("GOTEL_PROPAGATION", if inject { "inject" } else { "none" });
    cmd.arg("--").arg(bin).args(args);
    Proc::spawn(&format!("gotel {service}"), cmd).unwrap()
}

fn wait_file(path: &Path) -> String {
    assert!(wait_until(Duration::from_secs(30), || path.exists()), "{} never appeared", path.display());
    std::fs::read_to_string(path).unwrap()
}

/// One HTTP/1.1 request over a plain socket; returns the status code.
fn get(addr: &str, path: &str, traceparent: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tp = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gotel-e2e\r\n{tp}Connection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn by_id<'a>(spans: &'a [FlatSpan], id: &str) -> Option<&'a FlatSpan> {
    spans.iter().find(|s| s.span_id == id)
}

/// `stripped`: built with `-ldflags=-s -w` (no symbols, no DWARF), the usual production build:
/// the HTTP spans then take their field offsets from gotel's layout table for the Go release,
/// and the user probes name their arguments by position and type.
fn check_go(go: &Path, expect_route: bool, inject: bool, stripped: bool) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(go, dir.path(), "httpsvc", stripped);
    let item = if stripped { "item=arg0:string" } else { "item=item" };
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let backend_file = dir.path().join("backend.addr");
    let frontend_file = dir.path().join("frontend.addr");
    let mut backend = start(
        &sink,
        "backend",
        &format!("main.price({item})"),
        inject,
        &bin,
        &["-role", "backend", "-portfile", backend_file.to_str().unwrap()],
    );
    let backend_addr = wait_file(&backend_file);
    let backend_url = format!("http://{backend_addr}");
    let mut frontend = start(
        &sink,
        "frontend",
        &format!("main.order({item});main.audit;main.fetchPrice({item})"),
        inject,
        &bin,
        &["-role", "frontend", "-backend", &backend_url, "-portfile", frontend_file.to_str().unwrap()],
    );
    let addr = wait_file(&frontend_file);

    assert_eq!(get(&addr, "/order?item=tea", None), 200);
    assert_eq!(get(&addr, "/order?item=gold", Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))), 200);
    assert_eq!(get(&addr, "/order?item=tea", Some("00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")), 200);
    // A short malformed traceparent is counted as invalid too (it used to be skipped unseen).
    assert_eq!(get(&addr, "/order?item=nope", Some("00-abc")), 502);

    // Per request: frontend server, order, audit, fetchPrice, client; backend server, price.
    let spans = sink.wait_spans(28, Duration::from_secs(30)).unwrap();
    frontend.signal(libc::SIGTERM);
    backend.signal(libc::SIGTERM);
    for p in [&mut frontend, &mut backend] {
        let st = p.wait_timeout(Duration::from_secs(30)).unwrap();
        assert!(st.code().is_some(), "gotel did not exit cleanly: {st}; stderr:\n{}", p.stderr_string());
    }
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(10)).unwrap_or(spans);
    let service = |s: &FlatSpan| s.res_str("service.name").unwrap_or("").to_string();
    let count = |svc: &str, name: &str| spans.iter().filter(|s| service(s) == svc && s.name == name).count();
    let route_name = if expect_route { "GET /order" } else { "GET" };
    let kinds = |svc: &str, kind: i32| spans.iter().filter(|s| service(s) == svc && s.kind == kind).count();
    assert_eq!(kinds("frontend", 2), 4, "frontend server spans; all: {:#?}", names(&spans));
    assert!(spans.iter().filter(|s| s.kind == 2 && service(s) == "frontend").all(|s| s.name == route_name));
    assert_eq!(kinds("frontend", 3), 4, "frontend client spans");
    assert_eq!(kinds("backend", 2), 4, "backend server spans");
    assert_eq!(count("frontend", "main.order"), 4);
    assert_eq!(count("frontend", "main.audit"), 4);
    assert_eq!(count("frontend", "main.fetchPrice"), 4);
    assert_eq!(count("backend", "main.price"), 4);

    for order in spans.iter().filter(|s| s.name == "main.order") {
        let server = by_id(&spans, &order.parent_span_id).expect("main.order has a parent");
        assert_eq!(server.kind, 2, "main.order's parent is the SERVER span: {server:?}");
        assert_eq!(server.attr_str("http.request.method"), Some("GET"));
        assert_eq!(server.attr_str("url.path"), Some("/order"));
        assert_eq!(server.attr_str("network.protocol.version"), Some("1.1"));
        assert_eq!(server.attr_str("client.address"), Some("127.0.0.1"));
        if expect_route {
            assert_eq!(server.attr_str("http.route"), Some("/order"));
        }
        let item = order.attr_str("item").unwrap();
        let code = server.attr_i64("http.response.status_code");
        if item == "nope" {
            assert_eq!(code, Some(502));
            assert_eq!(server.status_code, 2, "a 5xx answer makes the server span an error");
        } else {
            assert_eq!(code, Some(200));
        }
        // The goroutine started inside main.order has main.order as parent.
        let audit = spans
            .iter()
            .find(|s| s.name == "main.audit" && s.parent_span_id == order.span_id)
            .unwrap_or_else(|| panic!("no main.audit under main.order {}", order.span_id));
        assert_eq!(audit.trace_id, order.trace_id);
        let fetch = spans.iter().find(|s| s.name == "main.fetchPrice" && s.parent_span_id == order.span_id).unwrap();
        let client = spans
            .iter()
            .find(|s| s.kind == 3 && s.parent_span_id == fetch.span_id)
            .expect("CLIENT span under fetchPrice");
        assert_eq!(client.attr_str("http.request.method"), Some("GET"));
        assert_eq!(client.attr_str("url.full"), Some(format!("{backend_url}/price?item={item}").as_str()));
        assert_eq!(client.attr_i64("http.response.status_code"), Some(if item == "nope" { 404 } else { 200 }));
        assert_eq!(client.status_code, if item == "nope" { 2 } else { 0 });
        assert!(client.start_unix_nano >= fetch.start_unix_nano && client.end_unix_nano <= fetch.end_unix_nano);
    }
    // The incoming traceparent is the frontend server span's parent; the invalid one is not.
    // (With injection the backend's spans for that request join the same trace.)
    let adopted: Vec<&FlatSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID && service(s) == "frontend").collect();
    let server = adopted.iter().find(|s| s.kind == 2).expect("a server span in the incoming trace");
    assert_eq!(server.parent_span_id, PARENT_ID);
    assert_eq!(adopted.len(), 5, "server, order, audit, fetchPrice, client join the caller's trace: {adopted:#?}");
    // With injection the backend's server span and main.price join it too.
    let backend_joined = spans.iter().filter(|s| s.trace_id == TRACE_ID && service(s) == "backend").count();
    assert_eq!(backend_joined, if inject { 2 } else { 0 }, "backend spans in the caller's trace");
    assert!(spans.iter().all(|s| !s.trace_id.starts_with("zzf92f")));
    // Backend server spans carry the path and nest main.price.
    for price in spans.iter().filter(|s| s.name == "main.price") {
        let server = by_id(&spans, &price.parent_span_id).expect("main.price has a parent");
        assert_eq!(server.kind, 2);
        assert_eq!(server.attr_str("url.path"), Some("/price"));
    }
    // Across services: with injection the backend's server span is a child of the frontend's
    // client span (same trace); without it gotel writes nothing and the traces stay apart.
    // On a kernel in lockdown the socket path must inject anyway,
    // without writing into the process.
    let frontend_summary = frontend.stderr_string();
    assert!(!frontend_summary.contains("GOTEL_PROPAGATION=inject refused"), "injection refused: {frontend_summary}");
    assert!(
        frontend_summary.contains("traceparent_invalid=2 "),
        "both malformed traceparents counted: {frontend_summary}"
    );
    for server in spans.iter().filter(|s| s.kind == 2 && service(s) == "backend") {
        let client = spans.iter().find(|c| c.kind == 3 && c.span_id == server.parent_span_id);
        if inject {
            let client = client.unwrap_or_else(|| panic!("backend server span {server:?} has no client parent"));
            assert_eq!(client.trace_id, server.trace_id);
        } else {
            assert!(client.is_none() && spans.iter().all(|c| c.kind != 3 || c.trace_id != server.trace_id));
        }
    }
    // Which path carried it depends on the kernel: in lockdown (this project's machines) the socket
    // path, and nothing is written into the process's memory (traceparent_injected counts the
    // memory path); without lockdown (the test VM's Debian kernel) the memory path alone. The
    // verifier decides, and gotel says so at start-up (securityfs is often not mounted).
    let (memory, socket) = match (inject, frontend_summary.contains("memory path off, kernel in lockdown")) {
        (false, _) => (0, None),
        (true, true) => (0, Some(4)),
        (true, false) => (4, None),
    };
    assert!(frontend_summary.contains(&format!("traceparent_injected={memory} ")), "gotel summary: {frontend_summary}");
    match socket {
        Some(n) => {
            assert!(frontend_summary.contains(&format!("socket_injected={n} ")), "gotel summary: {frontend_summary}")
        }
        None => assert!(!frontend_summary.contains("socket_injected="), "gotel summary: {frontend_summary}"),
    }
}

fn names(spans: &[FlatSpan]) -> Vec<String> {
    spans.iter().map(|s| format!("{} {} {}", s.res_str("service.name").unwrap_or(""), s.kind, s.name)).collect()
}

#[test]
fn http_spans_go_1_22_without_routes() {
    gotel_e2e::require!(Root, Go, GoVersion("1.22"));
    // ServeMux sets Request.Pattern from Go 1.23 on: before, the span is named by method only.
    check_go(&gotel_e2e::go_version_bin("1.22").unwrap(), false, true, false);
}

#[test]
fn http_spans_go_1_23() {
    gotel_e2e::require!(Root, Go, GoVersion("1.23"));
    check_go(&gotel_e2e::go_version_bin("1.23").unwrap(), true, true, false);
}

/// Without DWARF (`-ldflags=-s -w`): the same spans, attributes and statuses.
#[test]
fn http_spans_stripped_binary() {
    gotel_e2e::require!(Root, Go);
    check_go(&gotel_e2e::go_bin(), true, false, true);
}

#[test]
fn http_spans_machine_go() {
    gotel_e2e::require!(Root, Go);
    check_go(&gotel_e2e::go_bin(), true, true, false);
}

#[test]
fn without_injection_nothing_is_written_and_services_stay_apart() {
    gotel_e2e::require!(Root, Go);
    check_go(&gotel_e2e::go_bin(), true, false, false);
}

/// A round trip that fails carries Go's error text on its CLIENT span, not just the error's
/// type (`*net.OpError`): the frontend's backend is a port nobody listens on. Stripped: the
/// error's fields come from the layout table.
fn client_span_error_has_the_message(stripped: bool) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&gotel_e2e::go_bin(), dir.path(), "httpsvc", stripped);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let file = dir.path().join("frontend.addr");
    let mut frontend = start(
        &sink,
        "frontend",
        "main.fetchPrice",
        false,
        &bin,
        &["-role", "frontend", "-backend", "http://127.0.0.1:1", "-portfile", file.to_str().unwrap()],
    );
    let addr = wait_file(&file);
    assert_eq!(get(&addr, "/order?item=tea", None), 502);
    let spans = sink.wait_spans(3, Duration::from_secs(30)).unwrap();
    frontend.signal(libc::SIGTERM);
    assert!(frontend.wait_timeout(Duration::from_secs(30)).unwrap().code().is_some());
    let client = spans.iter().find(|s| s.kind == 3).unwrap_or_else(|| panic!("no CLIENT span: {:#?}", names(&spans)));
    assert_eq!(client.status_code, 2, "{client:?}");
    assert_eq!(client.status_message, "dial tcp 127.0.0.1:1: connect: connection refused", "{client:?}");
}

#[test]
fn client_span_error_text() {
    gotel_e2e::require!(Root, Go);
    client_span_error_has_the_message(false);
}

#[test]
fn client_span_error_text_stripped() {
    gotel_e2e::require!(Root, Go);
    client_span_error_has_the_message(true);
}

/// HTTP/2 (h2c, Go 1.24+'s own support): `e2e/goapps/h2svc` serves on 127.0.0.1 and calls
/// itself. The server's status comes from the HTTP/2 response writer, which Go 1.27 moved to
/// net/http/internal/http2; with and without DWARF.
fn check_http2(go: &Path, stripped: bool) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = build(go, dir.path(), "h2svc", stripped);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let probe = if stripped { "main.work(item=arg0:string)" } else { "main.work(item=item)" };
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), probe);
    cmd.arg("--").arg(&out);
    let mut gotel = Proc::spawn("gotel h2svc", cmd).unwrap();
    let st = gotel.wait_timeout(Duration::from_secs(60)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    assert!(!stderr.contains("spans are off"), "HTTP spans turned off:\n{stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(300), Duration::from_secs(20)).unwrap();
    let want = [("/ok/{item}", 200), ("/fail", 502), ("/teapot", 418), ("/ok/{item}", 200)];
    let servers: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 4, "server spans: {:#?}", names(&spans));
    for (route, code) in want {
        let n = want.iter().filter(|w| w.0 == route).count();
        let got: Vec<&&FlatSpan> = servers.iter().filter(|s| s.attr_str("http.route") == Some(route)).collect();
        assert_eq!(got.len(), n, "server spans for {route}: {servers:#?}");
        for s in got {
            assert_eq!(s.attr_i64("http.response.status_code"), Some(code), "{route}: {s:#?}");
            assert_eq!(s.attr_str("network.protocol.version"), Some("2"), "{route}");
            assert_eq!(s.status_code, if code >= 500 { 2 } else { 0 }, "{route}: {s:#?}");
        }
    }
    let clients: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == 3).collect();
    let mut codes: Vec<i64> = clients.iter().filter_map(|s| s.attr_i64("http.response.status_code")).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 200, 418, 502], "client spans: {clients:#?}");
    // main.work runs inside the /ok handler: a child of its server span.
    for work in spans.iter().filter(|s| s.name == "main.work") {
        let parent = by_id(&spans, &work.parent_span_id).expect("main.work has a parent");
        assert_eq!((parent.kind, parent.attr_str("http.route")), (2, Some("/ok/{item}")));
    }
}

#[test]
fn http2_machine_go() {
    gotel_e2e::require!(Root, Go);
    check_http2(&gotel_e2e::go_bin(), false);
}

#[test]
fn http2_go_1_27() {
    gotel_e2e::require!(Root, Go, GoVersion("1.27"));
    check_http2(&gotel_e2e::go_version_bin("1.27").unwrap(), false);
}

#[test]
fn http2_go_1_27_stripped() {
    gotel_e2e::require!(Root, Go, GoVersion("1.27"));
    check_http2(&gotel_e2e::go_version_bin("1.27").unwrap(), true);
}

/// Sends `parts` on one connection, pausing between them (so the server reads each on its own),
/// then reads until the server closes (the last request says `Connection: close`).
fn send_raw(addr: &str, parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        s.write_all(p).unwrap();
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

/// Sends `requests` one after the other on one keep-alive connection, each only once the answer
/// to the previous one has been read whole (so the server's connection goroutine ends one
/// request, with its kernel record kept, and reads the next into an emptied buffer).
fn send_in_turn(addr: &str, requests: &[String]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for r in requests {
        s.write_all(r.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let body_len = loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed before the answer to {r:?}");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                    .map(|(_, v)| v.trim().parse::<usize>().unwrap())
                    .unwrap_or_else(|| panic!("answer without Content-Length: {text}"));
                break end + 4 + len;
            }
        };
        while got.len() < body_len {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed in the answer to {r:?}");
            got.extend_from_slice(&chunk[..n]);
        }
        // (`main.price` knows no such item: 404, the connection stays open.)
        assert!(got.starts_with(b"HTTP/1.1 404"), "answer to {r:?}: {}", String::from_utf8_lossy(&got));
    }
}

fn tp(trace: u8) -> String {
    format!("00-{}-{PARENT_ID}-01", format!("{trace:02x}").repeat(16))
}

/// The incoming `traceparent` is read at the server span's entry from the request bytes still in
/// the connection's read buffer, or, when the header block is no longer whole there (it came in
/// several reads, or did not fit the buffer), from the request's `http.Header` map: many and long
/// headers, a header line larger than the buffer, pipelined keep-alive requests (each gets its
/// own, never its neighbour's, also after a body the handler left unread, and across split
/// writes), keep-alive requests in turn (none inherits the previous one's context, and a valid
/// one is never counted invalid), and headers split across reads before and after the
/// `traceparent`. Also the span's size rules: `url.scheme`, `user_agent.original`, no `code.*`
/// naming net/http internals, no `thread.id` by default.
fn check_incoming(go: &Path, stripped: bool) {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(go, dir.path(), "httpsvc", stripped);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let file = dir.path().join("backend.addr");
    let probe = if stripped { "main.price(item=arg0:string)" } else { "main.price(item=item)" };
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), probe);
    cmd.env_remove("GOTEL_THREAD_ID").env("OTEL_SERVICE_NAME", "backend");
    cmd.arg("--").arg(&bin).args(["-role", "backend", "-portfile", file.to_str().unwrap()]);
    let mut gotel = Proc::spawn("gotel backend", cmd).unwrap();
    let addr = wait_file(&file);
    let req = |item: &str, headers: &[String], last: bool| {
        let mut r = format!("GET /price?item={item} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: e2e/{item}\r\n");
        for h in headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        if last {
            r.push_str("Connection: close\r\n");
        }
        r.push_str("\r\n");
        r
    };
    let split_at = |r: &str, marks: &[&str]| -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = marks.iter().map(|m| r.find(m).unwrap()).collect();
        cuts.insert(0, 0);
        cuts.push(r.len());
        cuts.windows(2).map(|w| r.as_bytes()[w[0]..w[1]].to_vec()).collect()
    };
    let send = |parts: Vec<Vec<u8>>| {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        send_raw(&addr, &parts);
    };
    // 1: 30 extra headers, a 1500-byte cookie, the traceparent among them, in one write.
    let mut many: Vec<String> = (0..30).map(|i| format!("X-Extra-{i}: {}", "v".repeat(i * 3))).collect();
    many.insert(17, format!("traceparent: {}", tp(1)));
    many.push(format!("Cookie: {}", "c".repeat(1500)));
    send(vec![req("many", &many, true).into_bytes()]);
    // 2: a header line larger than the 4 KiB buffer before the traceparent.
    let huge = [format!("Cookie: {}", "h".repeat(6000)), format!("traceparent: {}", tp(2))];
    send(vec![req("huge", &huge, true).into_bytes()]);
    // 3: pipelined, in one write: with, without, with; then a POST whose body the handler never
    // reads, followed by a request without traceparent.
    let mut pipelined = req("pipe1", &[format!("traceparent: {}", tp(3))], false);
    pipelined.push_str(&req("pipe2", &[], false));
    pipelined.push_str(&req("pipe3", &[format!("TraceParent: {}", tp(4))], false));
    pipelined.push_str(&format!(
        "POST /price?item=post HTTP/1.1\r\nHost: {addr}\r\ntraceparent: {}\r\nContent-Length: 3\r\n\r\nabc",
        tp(5)
    ));
    pipelined.push_str(&req("afterpost", &[], true));
    send(vec![pipelined.into_bytes()]);
    // 4: split after the request line: the traceparent arrives with the last read.
    send(split_at(&req("splitlate", &[format!("traceparent: {}", tp(6))], true), &["traceparent"]));
    // 5: split after the traceparent: its line was parsed before the last read and is gone from
    // the buffer (read from `http.Header`).
    send(split_at(&req("splitearly", &[format!("traceparent: {}", tp(7)), "X-After: 1".into()], true), &["X-After"]));
    // 6: 40 long headers in three reads, the traceparent in the first: a map of several groups
    // (buckets), grown while it was filled (net/http sized it for the headers of the first read).
    let mut long: Vec<String> = (0..40).map(|i| format!("X-Long-{i}: {}", "l".repeat(40 + i))).collect();
    long.insert(2, format!("traceparent: {}", tp(8)));
    send(split_at(&req("manysplit", &long, true), &["X-Long-10:", "X-Long-30:"]));
    // 7: keep-alive, pipelined across split writes: the second request's traceparent comes in
    // the first write, its end in the second with a third request that has none.
    let first = req("ka1", &[format!("traceparent: {}", tp(9))], false);
    let second = req("ka2", &[format!("traceparent: {}", tp(10)), "X-After: 2".into()], false);
    let third = req("ka3", &[], true);
    let all = format!("{first}{second}{third}");
    send(split_at(&all, &["X-After: 2"]));
    // 8: keep-alive in turn (each request sent once the previous answer is read): a context is
    // never carried into the next request on the connection, whether that one has none, another
    // one or an invalid one, and a valid one after an invalid one is adopted.
    send_in_turn(
        &addr,
        &[
            req("turn1", &[format!("traceparent: {}", tp(11))], false),
            req("turn2", &[], false),
            req("turn3", &[format!("traceparent: {}", tp(12))], false),
            req("turn4", &["traceparent: 00-zz-invalid".into()], false),
            req("turn5", &[format!("traceparent: {}", tp(13))], false),
            req("turn6", &[], true),
        ],
    );
    // 9: the method, path and host come from the request line and Host line in the buffer,
    // except for targets other than a path and blocks with a folded line, which are read from
    // the request: an absolute-form target (Go's Host is the URL's, not the Host line's), an
    // escaped path (url.path is decoded), a folded header (obs-fold).
    let absolute = format!(
        "GET http://{addr}/price?item=absolute HTTP/1.1\r\nHost: elsewhere.example:9\r\nConnection: close\r\n\r\n"
    );
    send(vec![absolute.into_bytes()]);
    send(vec![req("escaped", &[], true).replacen("/price", "/pri%63e", 1).into_bytes()]);
    send(vec![req("folded", &["X-Fold: a".into(), " b".into()], true).into_bytes()]);

    let expect: &[(&str, Option<u8>)] = &[
        ("many", Some(1)),
        ("huge", Some(2)),
        ("pipe1", Some(3)),
        ("pipe2", None),
        ("pipe3", Some(4)),
        ("post", Some(5)),
        ("afterpost", None),
        ("splitlate", Some(6)),
        ("splitearly", Some(7)),
        ("manysplit", Some(8)),
        ("ka1", Some(9)),
        ("ka2", Some(10)),
        ("ka3", None),
        ("turn1", Some(11)),
        ("turn2", None),
        ("turn3", Some(12)),
        ("turn4", None),
        ("turn5", Some(13)),
        ("turn6", None),
        ("absolute", None),
        ("escaped", None),
        ("folded", None),
    ];
    let spans = sink.wait_spans(2 * expect.len(), Duration::from_secs(30)).unwrap();
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    // Launch mode: gotel exits with the child's status (SIGTERM passed on).
    assert!(st.code().is_some(), "gotel did not exit cleanly: {st}:\n{stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(10)).unwrap_or(spans);
    let server_of = |item: &str| {
        let price = spans
            .iter()
            .find(|s| s.name == "main.price" && s.attr_str("item") == Some(item))
            .unwrap_or_else(|| panic!("no main.price for {item}: {:#?}", names(&spans)));
        by_id(&spans, &price.parent_span_id).unwrap_or_else(|| panic!("main.price({item}) has no server parent"))
    };
    for &(item, trace) in expect {
        let server = server_of(item);
        assert_eq!(server.kind, 2, "{item}: {server:?}");
        match trace {
            Some(t) => {
                assert_eq!(server.trace_id, format!("{t:02x}").repeat(16), "{item}: {server:?}\n{stderr}");
                assert_eq!(server.parent_span_id, PARENT_ID, "{item}");
            }
            None => {
                assert!(server.parent_span_id.is_empty(), "{item} must start its own trace: {server:?}");
                assert!((1..=13u8).all(|t| server.trace_id != format!("{t:02x}").repeat(16)), "{item}: {server:?}");
            }
        }
        assert_eq!(server.attr_str("url.scheme"), Some("http"), "{item}");
        // The POST and the absolute-form request sent none; split or huge blocks give it from
        // `http.Header`.
        let ua = format!("e2e/{item}");
        let ua = (item != "post" && item != "absolute").then_some(ua.as_str());
        let method = if item == "post" { "POST" } else { "GET" };
        assert_eq!(server.attr_str("http.request.method"), Some(method), "{item}: {server:?}");
        assert_eq!(server.attr_str("url.path"), Some("/price"), "{item}: {server:?}");
        let (host, port) = addr.rsplit_once(':').unwrap();
        assert_eq!(server.attr_str("server.address"), Some(host), "{item}: {server:?}");
        assert_eq!(server.attr_i64("server.port"), port.parse().ok(), "{item}: {server:?}");
        assert_eq!(server.attr_str("user_agent.original"), ua, "{item}");
        let internal: Vec<&String> =
            server.attributes.keys().filter(|k| k.starts_with("code.") || *k == "thread.id").collect();
        assert!(internal.is_empty(), "{item}: built-in spans carry no code.* and no thread.id: {internal:?}");
    }
    let price = spans.iter().find(|s| s.name == "main.price").unwrap();
    assert!(price.attr_str("code.function.name").is_some() && price.attr_i64("thread.id").is_none());
    let counter = |name: &str| -> u64 {
        let at = stderr.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in:\n{stderr}"));
        let digits: String = stderr[at + name.len() + 1..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    assert_eq!(counter("traceparent_adopted"), 13, "gotel summary:\n{stderr}");
    // turn4's, and only it: a valid one is never counted invalid.
    assert_eq!(counter("traceparent_invalid"), 1, "gotel summary:\n{stderr}");
    assert_eq!(counter("traceparent_unreadable"), 0, "gotel summary:\n{stderr}");
    // huge, splitlate, splitearly, manysplit at least (the kernel may split a write too).
    assert!(counter("header_map_walked") >= 4, "gotel summary:\n{stderr}");
    // Those four, ka2 (split), absolute and folded; every other request's line was read from the
    // buffer (a few more if the kernel split a write).
    let unread = counter("request_line_unread");
    assert!((7..=11).contains(&unread), "request_line_unread={unread}: gotel summary:\n{stderr}");
}

/// Go 1.24+ maps (Swiss tables), offsets from DWARF.
#[test]
fn incoming_traceparent_from_the_read_buffer() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    check_incoming(&gotel_e2e::go_bin(), false);
}

/// Go 1.22 maps (`hmap` buckets), stripped: offsets from the layout table.
#[test]
fn incoming_traceparent_go_1_22_stripped() {
    gotel_e2e::require!(Root, Go, GoVersion("1.22"));
    require_environment().unwrap();
    check_incoming(&gotel_e2e::go_version_bin("1.22").unwrap(), true);
}

/// `GOTEL_GOROUTINE_PARENTS=off`: no probe on `runtime.newproc1` (fewer uprobes than with the
/// default), and a goroutine started inside a traced call starts its own trace.
#[test]
fn goroutine_parents_off() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&gotel_e2e::go_bin(), dir.path(), "httpsvc", false);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut uprobes = Vec::new();
    for parents in ["on", "off"] {
        let file = dir.path().join(format!("frontend-{parents}.addr"));
        let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.order;main.audit");
        cmd.env("GOTEL_GOROUTINE_PARENTS", parents).env("OTEL_SERVICE_NAME", format!("parents-{parents}"));
        cmd.arg("--").arg(&bin).args(["-role", "frontend", "-backend", "http://127.0.0.1:1"]);
        cmd.args(["-portfile", file.to_str().unwrap()]);
        let mut gotel = Proc::spawn("gotel frontend", cmd).unwrap();
        let addr = wait_file(&file);
        get(&addr, "/order?item=tea", None);
        sink.wait_spans(if parents == "on" { 3 } else { 6 }, Duration::from_secs(30)).unwrap();
        gotel.signal(libc::SIGTERM);
        assert!(gotel.wait_timeout(Duration::from_secs(30)).unwrap().code().is_some());
        let stderr = gotel.stderr_string();
        let n: usize = stderr
            .split("uprobes=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no uprobes= in:\n{stderr}"));
        uprobes.push(n);
    }
    assert!(uprobes[1] < uprobes[0], "off attaches fewer uprobes: {uprobes:?}");
    let spans = sink.wait_quiet(Duration::from_millis(300), Duration::from_secs(10)).unwrap();
    for (service, nested) in [("parents-on", true), ("parents-off", false)] {
        let of = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && s.res_str("service.name") == Some(service))
                .unwrap_or_else(|| panic!("{service}: no {name}: {:#?}", names(&spans)))
        };
        let (order, audit) = (of("main.order"), of("main.audit"));
        assert_eq!(audit.parent_span_id == order.span_id, nested, "{service}: {audit:?}");
        assert_eq!(audit.trace_id == order.trace_id, nested, "{service}");
    }
}

/// A handler that panics leaves nothing behind for the next request on its goroutine: with
/// `GOTEL_GOROUTINE_PARENTS=off` (no `runtime.newproc1` probe to drop a reused g's record) the
/// panicked request's server span is never returned from, its frame is unwound when the next
/// connection's goroutine (often the same g, freed by the panic) enters `ServeHTTP`, and that
/// request, sent without a `traceparent`, must start a trace of its own, not continue the
/// panicked request's incoming one.
#[test]
fn a_panicked_request_leaves_no_context_behind() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&gotel_e2e::go_bin(), dir.path(), "httpsvc", false);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let file = dir.path().join("backend.addr");
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.price");
    cmd.env("GOTEL_GOROUTINE_PARENTS", "off").env("OTEL_SERVICE_NAME", "panics");
    cmd.arg("--").arg(&bin).args(["-role", "backend", "-portfile", file.to_str().unwrap()]);
    let mut gotel = Proc::spawn("gotel backend", cmd).unwrap();
    let addr = wait_file(&file);
    const N: u8 = 20;
    for i in 1..=N {
        assert_eq!(get(&addr, "/panic", Some(&tp(i))), 0, "the panicking handler answers nothing");
        assert_eq!(get(&addr, "/price?item=tea", None), 200);
    }
    sink.wait_spans(N as usize, Duration::from_secs(30)).unwrap();
    gotel.signal(libc::SIGTERM);
    assert!(gotel.wait_timeout(Duration::from_secs(30)).unwrap().code().is_some(), "{}", gotel.stderr_string());
    let spans = sink.wait_quiet(Duration::from_millis(300), Duration::from_secs(10)).unwrap();
    let panicked: Vec<&FlatSpan> =
        spans.iter().filter(|s| s.kind == 2 && s.attr_str("url.path") == Some("/panic")).collect();
    let prices: Vec<&FlatSpan> =
        spans.iter().filter(|s| s.kind == 2 && s.attr_str("url.path") == Some("/price")).collect();
    assert_eq!(prices.len(), N as usize, "{:#?}", names(&spans));
    // A panicked request's span is exported when its frame is unwound, i.e. when a later
    // connection's goroutine reused its g (the rest are still open when gotel stops): at least
    // one reuse, or this test proved nothing.
    assert!(!panicked.is_empty() && panicked.len() <= N as usize, "panicked spans: {}", panicked.len());
    let incoming: Vec<String> = (1..=N).map(|i| format!("{i:02x}").repeat(16)).collect();
    for p in &panicked {
        assert!(incoming.contains(&p.trace_id) && p.parent_span_id == PARENT_ID, "the panicked request's own: {p:#?}");
    }
    for p in &prices {
        assert!(
            !incoming.contains(&p.trace_id) && p.parent_span_id.is_empty(),
            "a request without traceparent continued a panicked request's context: {p:#?}"
        );
    }
}
