//! Built-in gRPC instrumentation, end to end, as root against the real kernel: `e2e/goapps/grpcsvc`
//! (a grpc-go server and client in one process, over HTTP/2 on 127.0.0.1) built against grpc-go
//! releases spanning three years (tools/grpc-versions.txt) with Go 1.22, 1.26 and 1.27, with and
//! without DWARF (stripped builds take their field offsets from gotel's layout table). Checks the
//! SERVER and CLIENT spans of a unary call, server streams (one ending in an error status; the
//! client span lasts the stream), an error status, a deadline exceeded
//! and an unimplemented method: names, RPC attributes, both ends' addresses, the real status codes, ERROR by the
//! conventions' rules, the incoming `traceparent` as the server span's remote parent, user
//! functions under the server span and client spans under the traced
//! function that made the call; and that a stripped build of a grpc-go version the table lacks
//! turns the gRPC spans off with a message naming it.
//!
//! Every call carries a `traceparent` in its metadata, which must become the server span's
//! remote parent.
//!
//! Outgoing trace context (`GOTEL_PROPAGATION=inject`, the socket path over h2c): two services,
//! each its own traced grpcsvc process with its own gotel (`-serve` and `-target`): every
//! server span's parent is the client span of its call, in one trace; thousands of calls come
//! back unchanged and are all injected; with injection off in the client nothing is written.
//! And a client whose connection was opened and used before its gotel attached (`--pid`): the
//! socket path finds that connection's frames again without its preface, and every call made
//! after attaching joins its server span's trace, with exactly one `traceparent`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gotel_e2e::{gotel_command, require_environment, run, wait_until, Export, FlatSpan, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const SERVICE: &str = "gotel.test.Greeter";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Builds a copy of `e2e/goapps/grpcsvc` requiring grpc-go `version` with `go` into `dir`.
fn build(go: &Path, dir: &Path, version: &str, stripped: bool) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["go.mod", "go.sum", "main.go"] {
        std::fs::copy(gotel_e2e::goapp_dir("grpcsvc").join(f), src.join(f)).unwrap();
    }
    let go_cmd = |args: &[&str]| {
        let mut cmd = Command::new(go);
        cmd.args(args).current_dir(&src).env("GOTOOLCHAIN", "local").env("GOFLAGS", "-mod=mod").env("CGO_ENABLED", "0");
        let (st, so, se) = run(&format!("go {}", args[0]), cmd, Duration::from_secs(300)).unwrap();
        assert!(st.success(), "go {args:?} (grpc-go {version}, {}) failed: {so}{se}", go.display());
    };
    go_cmd(&["mod", "edit", &format!("-require=google.golang.org/grpc@{version}")]);
    let out = dir.join("grpcsvc");
    let out_arg = out.to_str().unwrap();
    if stripped {
        go_cmd(&["build", "-ldflags=-s -w", "-o", out_arg, "."]);
    } else {
        go_cmd(&["build", "-o", out_arg, "."]);
    }
    out
}

/// Runs gotel on the program (with `args`) until it exits; returns the spans and gotel's stderr.
fn trace(dir: &Path, bin: &Path, args: &[&str]) -> (Vec<FlatSpan>, String) {
    let sink = Sink::start(Path::new(SINK), dir).unwrap();
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.lookup;main.call;main.stream");
    cmd.env("OTEL_SERVICE_NAME", "grpcsvc").arg("--").arg(bin).args(args);
    let mut gotel = Proc::spawn("gotel grpcsvc", cmd).unwrap();
    let st = gotel.wait_timeout(Duration::from_secs(120)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st}\n{stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(300), Duration::from_secs(20)).unwrap();
    (spans, stderr)
}

fn by_id<'a>(spans: &'a [FlatSpan], id: &str) -> Option<&'a FlatSpan> {
    spans.iter().find(|s| s.span_id == id)
}

/// The one span of `kind` named `{SERVICE}/{method}`.
fn rpc<'a>(spans: &'a [FlatSpan], kind: i32, method: &str) -> &'a FlatSpan {
    let name = format!("{SERVICE}/{method}");
    let found: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == kind && s.name == name).collect();
    let all: Vec<(i32, &str)> = spans.iter().map(|s| (s.kind, s.name.as_str())).collect();
    assert_eq!(found.len(), 1, "spans of kind {kind} named {name}; all: {all:?}");
    found[0]
}

fn check(go: &Path, version: &str, stripped: bool) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(go, dir.path(), version, stripped);
    // Every call carries this traceparent in its metadata.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (spans, stderr) = trace(dir.path(), &bin, &["-traceparent", &traceparent]);
    assert!(!stderr.contains("spans are off"), "gRPC spans turned off (grpc-go {version}):\n{stderr}");
    assert!(!stderr.contains("trace_context.grpc"), "incoming gRPC context off (grpc-go {version}):\n{stderr}");
    assert!(stderr.contains("grpc_traceparent_adopted=6 "), "{stderr}");
    let what = format!("grpc-go {version}, {}, stripped={stripped}", go.display());

    // method, server code(s) allowed, client code
    let calls: [(&str, &[i64], i64); 6] = [
        ("SayHello", &[0], 0),
        ("Count", &[0], 0),
        ("CountBroken", &[15], 15),
        ("Fail", &[5], 5),
        // The server sees the client's cancellation (Canceled) or its own deadline first.
        ("Slow", &[1, 4], 4),
        ("Missing", &[12], 12),
    ];
    assert_eq!(spans.iter().filter(|s| s.kind == 2).count(), calls.len(), "{what}: server spans");
    assert_eq!(spans.iter().filter(|s| s.kind == 3).count(), calls.len(), "{what}: client spans");
    for (method, server_codes, client_code) in calls {
        let server = rpc(&spans, 2, method);
        assert_eq!(server.attr_str("rpc.system"), Some("grpc"), "{what}");
        assert_eq!(server.attr_str("rpc.service"), Some(SERVICE), "{what}");
        assert_eq!(server.attr_str("rpc.method"), Some(method), "{what}");
        let code = server.attr_i64("rpc.grpc.status_code").unwrap_or_else(|| panic!("{what}: {server:#?}"));
        assert!(server_codes.contains(&code), "{what}: {method} server code {code}");
        // Server errors per the conventions: DeadlineExceeded and Unimplemented, not NotFound.
        let server_error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
        assert_eq!(server.status_code, if server_error { 2 } else { 0 }, "{what}: {method}: {server:#?}");
        // The incoming traceparent is the server span's (remote) parent.
        assert_eq!(
            (server.trace_id.as_str(), server.parent_span_id.as_str()),
            (TRACE_ID, PARENT_ID),
            "{what}: {method}"
        );

        let client = rpc(&spans, 3, method);
        assert_eq!(client.attr_str("rpc.system"), Some("grpc"), "{what}");
        assert_eq!(client.attr_str("rpc.service"), Some(SERVICE), "{what}");
        assert_eq!(client.attr_str("rpc.method"), Some(method), "{what}");
        assert_eq!(client.attr_i64("rpc.grpc.status_code"), Some(client_code), "{what}: {client:#?}");
        assert_eq!(client.status_code, if client_code != 0 { 2 } else { 0 }, "{what}: {method}");
        assert_eq!(client.attr_str("server.address"), Some("127.0.0.1"), "{what}");
        assert!(client.attr_i64("server.port").is_some_and(|p| p > 0), "{what}: {client:#?}");
        // Both ends of the connection, on the server span.
        assert_eq!(server.attr_str("server.address"), Some("127.0.0.1"), "{what}: {server:#?}");
        assert_eq!(server.attr_i64("server.port"), client.attr_i64("server.port"), "{what}");
        assert_eq!(server.attr_str("network.peer.address"), Some("127.0.0.1"), "{what}");
        let peer_port = server.attr_i64("network.peer.port").unwrap_or(0);
        assert!(peer_port > 0 && Some(peer_port) != server.attr_i64("server.port"), "{what}: {server:#?}");
        // The client span nests under the traced function that made the call.
        let caller = by_id(&spans, &client.parent_span_id).unwrap_or_else(|| panic!("{what}: {client:#?}"));
        let want = if method.starts_with("Count") { "main.stream" } else { "main.call" };
        assert_eq!(caller.name, want, "{what}: {method}");
        assert!(client.start_unix_nano >= caller.start_unix_nano && client.end_unix_nano <= caller.end_unix_nano);
    }
    // The handler's user function nests under its server span: once for SayHello and Fail,
    // once per message for the streams (which last as long as the stream).
    let lookups: Vec<&FlatSpan> = spans.iter().filter(|s| s.name == "main.lookup").collect();
    assert_eq!(lookups.len(), 8, "{what}: main.lookup spans");
    for l in lookups {
        let server = by_id(&spans, &l.parent_span_id).unwrap_or_else(|| panic!("{what}: main.lookup {l:#?}"));
        assert_eq!(server.kind, 2, "{what}");
        assert!(
            ["SayHello", "Count", "CountBroken", "Fail"].contains(&server.attr_str("rpc.method").unwrap()),
            "{what}"
        );
        assert!(l.start_unix_nano >= server.start_unix_nano && l.end_unix_nano <= server.end_unix_nano);
        assert_eq!(l.trace_id, server.trace_id);
    }
    let count = rpc(&spans, 2, "Count");
    assert_eq!(spans.iter().filter(|s| s.parent_span_id == count.span_id).count(), 3, "{what}: the stream's span");
    // A client stream's span lasts until its end was seen: past the server's last message.
    for method in ["Count", "CountBroken"] {
        let (client, server) = (rpc(&spans, 3, method), rpc(&spans, 2, method));
        let last = spans.iter().filter(|s| s.parent_span_id == server.span_id).map(|s| s.end_unix_nano).max();
        assert!(last.is_some_and(|l| client.end_unix_nano > l), "{what}: {method} client span ends with the stream");
    }
    assert!(stderr.contains("open_spans_exported_unclosed=0"), "{stderr}");
}

fn go(version: &'static str) -> PathBuf {
    gotel_e2e::go_version_bin(version).unwrap()
}

#[test]
fn grpc_go_1_22_grpc_1_56() {
    gotel_e2e::require!(Root, GoVersion("1.22"));
    check(&go("1.22"), "v1.56.3", false);
}

#[test]
fn grpc_go_1_22_grpc_1_64_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.22"));
    check(&go("1.22"), "v1.64.1", true);
}

#[test]
fn grpc_go_1_26_grpc_1_64() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    check(&go("1.26"), "v1.64.1", false);
}

#[test]
fn grpc_go_1_26_grpc_1_72_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    check(&go("1.26"), "v1.72.2", true);
}

#[test]
fn grpc_go_1_26_grpc_1_85() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    check(&go("1.26"), "v1.85.0", false);
}

#[test]
fn grpc_go_1_27_grpc_1_85_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.27"));
    check(&go("1.27"), "v1.85.0", true);
}

#[test]
fn grpc_go_1_27_grpc_1_56_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.27"));
    check(&go("1.27"), "v1.56.3", true);
}

/// A stripped build of a grpc-go release the layout table lacks: no guess, the gRPC spans are
/// off with a message naming the version, and the user's probes still trace.
#[test]
fn grpc_unknown_version_stripped_is_off_with_a_message() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&go("1.26"), dir.path(), "v1.60.1", true);
    let (spans, stderr) = trace(dir.path(), &bin, &[]);
    for unit in ["grpc.server", "grpc.client"] {
        assert!(
            stderr.contains(&format!("{unit} spans are off for this binary"))
                && stderr.contains("google.golang.org/grpc v1.60.1 is not in gotel's layout table"),
            "{unit}: {stderr}"
        );
    }
    assert!(spans.iter().all(|s| s.kind != 2 && s.kind != 3), "no gRPC spans");
    assert_eq!(spans.iter().filter(|s| s.name == "main.lookup").count(), 8);
}

/// A malformed `traceparent` in the metadata is counted and ignored: the server spans start
/// their own traces.
#[test]
fn grpc_invalid_traceparent_is_ignored() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&go("1.26"), dir.path(), "v1.64.1", false);
    let (spans, stderr) =
        trace(dir.path(), &bin, &["-traceparent", &format!("00-{TRACE_ID}-zz{}-01", &PARENT_ID[2..])]);
    assert!(stderr.contains("grpc_traceparent_adopted=0 grpc_traceparent_invalid=6 "), "{stderr}");
    let servers: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 6);
    assert!(servers.iter().all(|s| s.parent_span_id.is_empty() && s.trace_id != TRACE_ID), "{servers:#?}");
}

/// One counter of a gotel session summary (`name=N`).
fn summary_count(stderr: &str, name: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains("session summary"))?;
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// gotel running `bin args` as service `service` with the test's probes, exporting to `sink`.
fn traced(sink: &Sink, service: &str, bin: &Path, args: &[&str], inject: bool) -> Proc {
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.lookup;main.call;main.hellos");
    cmd.env("OTEL_SERVICE_NAME", service);
    if inject {
        cmd.env("GOTEL_PROPAGATION", "inject");
    }
    if service == "grpc-server" {
        // GC cycles during the calls: the first one's mark workers are started from whatever
        // goroutine triggers it, often grpc-go's reader while it holds an adopted context for
        // hand-off; with a one-shot hand-off a mark worker took it and one server span had no
        // parent (3 of 4 runs). `shared::rules::hand_off` keeps the context for the handler.
        cmd.env("GOGC", "25");
    }
    cmd.arg("--").arg(bin).args(args);
    Proc::spawn(&format!("gotel {service}"), cmd).unwrap()
}

/// Runs a traced client to its end; returns its stdout and gotel's stderr.
fn client(sink: &Sink, bin: &Path, args: &[&str], inject: bool) -> (String, String) {
    let mut p = traced(sink, "grpc-client", bin, args, inject);
    let st = p.wait_timeout(Duration::from_secs(300)).unwrap();
    let stderr = p.stderr_string();
    assert!(st.success(), "client gotel exited {st}\n{stderr}");
    (p.stdout_string(), stderr)
}

/// grpcsvc built for grpc-go `version` with `go` (in a new directory), and its traced server
/// (injection on) listening: (dir, binary, sink, address, the file that stops it, the server).
fn serve(go: &Path, version: &str, stripped: bool) -> (tempfile::TempDir, PathBuf, Sink, String, PathBuf, Proc) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(go, dir.path(), version, stripped);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let stop = dir.path().join("stop");
    let server = traced(&sink, "grpc-server", &bin, &["-serve", &addr, "-until", stop.to_str().unwrap()], true);
    let up = wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
    assert!(up, "server did not listen; stderr:\n{}", server.stderr_string());
    (dir, bin, sink, addr, stop, server)
}

/// Outgoing gRPC trace context between two traced services over h2c (grpc-go `version` built
/// with `go`, with or without DWARF).
fn inject_check(go: &Path, version: &str, stripped: bool) {
    let (_dir, bin, sink, addr, stop, mut server) = serve(go, version, stripped);

    // 1. The set of calls (no traceparent in the metadata): one trace per call across both.
    let (out, stderr) = client(&sink, &bin, &["-target", &addr], true);
    assert!(out.contains("SayHello OK") && out.contains("done"), "{out}");
    assert!(stderr.contains("gRPC over plaintext HTTP/2 (h2c): through the socket"), "{stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_injected"), Some(6), "{stderr}");
    // 2. The load: every call answered unchanged, every one injected.
    const N: u64 = 3000;
    let (out, stderr) = client(&sink, &bin, &["-target", &addr, "-hello", &N.to_string()], true);
    assert!(out.contains(&format!("hellos {N} bad 0")), "{out}\n{stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_injected"), Some(N), "{stderr}");
    for c in
        ["grpc_socket_desync", "grpc_socket_inject_failed", "grpc_socket_skipped_too_long", "socket_context_expired"]
    {
        assert_eq!(summary_count(&stderr, c), Some(0), "{c}: {stderr}");
    }
    // 3. Injection off in the client: nothing is written, the server adopts nothing more.
    let (out, stderr) = client(&sink, &bin, &["-target", &addr, "-hello", "50"], false);
    assert!(out.contains("hellos 50 bad 0"), "{out}");
    assert!(summary_count(&stderr, "grpc_socket_injected").is_none(), "injection off: {stderr}");
    // 4. The caller's metadata already has a traceparent: left alone, and it is the one the
    // server adopts.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (out, stderr) = client(&sink, &bin, &["-target", &addr, "-traceparent", &traceparent], true);
    assert!(out.contains("SayHello OK"), "{out}");
    assert_eq!(summary_count(&stderr, "grpc_socket_injected"), Some(0), "{stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_skipped_present"), Some(6), "{stderr}");

    std::fs::write(&stop, b"").unwrap();
    let st = server.wait_timeout(Duration::from_secs(60)).unwrap();
    let server_stderr = server.stderr_string();
    assert!(st.success(), "server gotel exited {st}\n{server_stderr}");
    assert_eq!(summary_count(&server_stderr, "grpc_traceparent_adopted"), Some(6 + N + 6), "{server_stderr}");
    assert_eq!(summary_count(&server_stderr, "grpc_traceparent_invalid"), Some(0), "{server_stderr}");

    let total = 2 * (6 + N + 50 + 6) as usize;
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(60)).unwrap();
    let rpc_spans: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == 2 || s.kind == 3).collect();
    assert_eq!(rpc_spans.len(), total, "server and client spans");
    let clients: std::collections::HashMap<&str, &FlatSpan> =
        spans.iter().filter(|s| s.kind == 3).map(|s| (s.span_id.as_str(), s)).collect();
    let mut parented = 0;
    for server in spans.iter().filter(|s| s.kind == 2) {
        match clients.get(server.parent_span_id.as_str()) {
            Some(client) => {
                assert_eq!(server.trace_id, client.trace_id, "one trace: {server:#?}");
                assert_eq!(server.name, client.name);
                parented += 1;
            }
            None if server.trace_id == TRACE_ID && server.parent_span_id == PARENT_ID => {}
            None => assert!(
                server.parent_span_id.is_empty(),
                "a server span with a foreign parent: {server:#?}\nparent: {:#?}\nforeign: {}",
                spans.iter().find(|s| s.span_id == server.parent_span_id),
                spans
                    .iter()
                    .filter(|s| s.kind == 2
                        && !s.parent_span_id.is_empty()
                        && !clients.contains_key(s.parent_span_id.as_str()))
                    .count()
            ),
        }
    }
    let orphans: Vec<(&str, u64)> = spans
        .iter()
        .filter(|s| s.kind == 2 && s.parent_span_id.is_empty())
        .map(|s| (s.name.as_str(), s.start_unix_nano))
        .collect();
    let first_orphan = orphans.iter().map(|o| o.1).min();
    assert_eq!(
        parented,
        6 + N as usize,
        "server spans whose parent is their client span; {} orphans, early ones: {:?} (first server span at {:?}); server: {}",
        orphans.len(),
        orphans.iter().filter(|o| Some(o.1) < first_orphan.map(|f| f + 1)).collect::<Vec<_>>(),
        spans.iter().filter(|s| s.kind == 2).map(|s| (s.name.as_str(), s.start_unix_nano)).min_by_key(|s| s.1),
        server_stderr.lines().rev().find(|l| l.contains("session summary")).unwrap_or("")
    );
    // The set of calls: each method's server span under that method's client span.
    for method in ["SayHello", "Count", "CountBroken", "Fail", "Slow", "Missing"] {
        let name = format!("{SERVICE}/{method}");
        let server = spans.iter().find(|s| s.kind == 2 && s.name == name && s.trace_id != TRACE_ID).unwrap();
        let client = clients[server.parent_span_id.as_str()];
        assert_eq!(client.name, name);
        assert!(client.start_unix_nano <= server.start_unix_nano, "{method}");
    }
}

#[test]
fn grpc_inject_go_1_26_grpc_1_64() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    inject_check(&go("1.26"), "v1.64.1", false);
}

#[test]
fn grpc_inject_go_1_22_grpc_1_56_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.22"));
    inject_check(&go("1.22"), "v1.56.3", true);
}

#[test]
fn grpc_inject_go_1_27_grpc_1_85_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.27"));
    inject_check(&go("1.27"), "v1.85.0", true);
}

/// The client's connection is opened and used (`-warm`) before its gotel attaches (`--pid`), so
/// its client preface was never seen: the kernel resynchronises on a frame boundary, and every
/// call after attaching carries exactly one `traceparent` (grpcsvc's server answers otherwise,
/// counted as bad by the client) and is the parent of its server span.
fn inject_preattached_check(go: &Path, version: &str, stripped: bool) {
    let (dir, bin, sink, addr, stop, mut server) = serve(go, version, stripped);

    const WARM: u64 = 20;
    const N: u64 = 500;
    let go_on = dir.path().join("attached");
    let mut cmd = Command::new(&bin);
    cmd.args(["-target", &addr, "-warm", &WARM.to_string(), "-wait", go_on.to_str().unwrap()]);
    cmd.args(["-hello", &N.to_string()]);
    let mut client = Proc::spawn("grpcsvc client", cmd).unwrap();
    let warmed = wait_until(Duration::from_secs(60), || client.stdout_string().contains("hellos"));
    assert!(warmed, "the client made no calls before gotel: {}", client.stderr_string());
    assert!(client.stdout_string().contains(&format!("hellos {WARM} bad 0")), "{}", client.stdout_string());

    let ready = dir.path().join("client.ready");
    let mut cmd = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.lookup;main.call;main.hellos");
    cmd.env("OTEL_SERVICE_NAME", "grpc-client").env("GOTEL_PROPAGATION", "inject");
    cmd.arg("--pid").arg(client.pid().to_string()).arg("--ready-file").arg(&ready);
    let mut gotel = Proc::spawn("gotel grpc-client", cmd).unwrap();
    let ok = wait_until(Duration::from_secs(60), || ready.exists() || gotel.try_wait().ok().flatten().is_some());
    assert!(ok && ready.exists(), "gotel did not attach; stderr:\n{}", gotel.stderr_string());
    std::fs::write(&go_on, b"").unwrap();
    let st = client.wait_timeout(Duration::from_secs(120)).unwrap();
    let out = client.stdout_string();
    assert!(st.success() && out.contains(&format!("hellos {N} bad 0")), "{out}\n{}", client.stderr_string());
    let st = gotel.wait_timeout(Duration::from_secs(60)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "client gotel exited {st}\n{stderr}");
    assert!(stderr.contains("1 already open enrolled"), "the connection opened before gotel: {stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_injected"), Some(N), "{stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_resync"), Some(1), "{stderr}");
    for c in ["grpc_socket_desync", "grpc_socket_inject_failed", "grpc_socket_skipped_too_long"] {
        assert_eq!(summary_count(&stderr, c), Some(0), "{c}: {stderr}");
    }
    // Listed only when `inject.socket` is planned (the binary has net/http's dialer).
    assert_eq!(summary_count(&stderr, "socket_context_expired").unwrap_or(0), 0, "{stderr}");

    std::fs::write(&stop, b"").unwrap();
    let st = server.wait_timeout(Duration::from_secs(60)).unwrap();
    let server_stderr = server.stderr_string();
    assert!(st.success(), "server gotel exited {st}\n{server_stderr}");
    assert_eq!(summary_count(&server_stderr, "grpc_traceparent_adopted"), Some(N), "{server_stderr}");
    assert_eq!(summary_count(&server_stderr, "grpc_traceparent_invalid"), Some(0), "{server_stderr}");

    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(60)).unwrap();
    let clients: std::collections::HashMap<&str, &FlatSpan> =
        spans.iter().filter(|s| s.kind == 3).map(|s| (s.span_id.as_str(), s)).collect();
    assert_eq!(clients.len(), N as usize, "client spans: the calls after gotel attached");
    let servers: Vec<&FlatSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), (WARM + N) as usize, "server spans");
    let mut parented = 0;
    for server in &servers {
        if let Some(client) = clients.get(server.parent_span_id.as_str()) {
            assert_eq!(
                (server.trace_id.as_str(), server.name.as_str()),
                (client.trace_id.as_str(), client.name.as_str())
            );
            parented += 1;
        } else {
            assert!(server.parent_span_id.is_empty(), "a server span with a foreign parent: {server:#?}");
        }
    }
    assert_eq!(parented, N as usize, "server spans whose parent is their client span");
}

/// gotel as a sidecar sees it: gotel and the client share a pid namespace that is not the
/// kernel's first one (`unshare --pid`), so gotel cannot tell the kernel's number of the process
/// at attach time, and the client opens its only connection after gotel attached (grpc-go dials
/// when the program asks, here after `-wait`). The socket path must learn the process from the
/// connect itself (`gotel_socket_dial` at `net.(*netFD).connect`) and enrol it: with the old
/// hook (net/http's dialer, absent from a gRPC-only client) nothing was enrolled, no call carried
/// a traceparent, and the compose demo's backend -> inventory calls were two traces.
fn inject_pid_namespace_check(go: &Path, version: &str) {
    let (dir, bin, sink, addr, stop, mut server) = serve(go, version, false);

    const N: u64 = 200;
    let go_on = dir.path().join("attached");
    let ready = dir.path().join("client.ready");
    let out = dir.path().join("client.out");
    let gotel = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.lookup;main.call;main.hellos");
    let mut cmd = Command::new("unshare");
    for (k, v) in gotel.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("OTEL_SERVICE_NAME", "grpc-client").env("GOTEL_PROPAGATION", "inject");
    // dash reaps the background client while it waits for gotel, so gotel sees it exit.
    let script = r#"client="$1" gotel="$2" addr="$3" go_on="$4" n="$5" out="$6" ready="$7"
"$client" -target "$addr" -wait "$go_on" -hello "$n" >"$out" 2>&1 &
pid=$!
until [ /proc/$pid/exe -ef "$client" ]; do sleep 0.01; done # forked, not yet exec'd
"$gotel" --pid "$pid" --ready-file "$ready"
"#;
    cmd.args(["--pid", "--fork", "--mount-proc", "--", "sh", "-c", script, "sh"]);
    cmd.arg(&bin).arg(gotel.get_program()).arg(&addr).arg(&go_on).arg(N.to_string()).arg(&out).arg(&ready);
    let mut gotel = Proc::spawn("gotel grpc-client (own pid namespace)", cmd).unwrap();
    let ok = wait_until(Duration::from_secs(60), || ready.exists() || gotel.try_wait().ok().flatten().is_some());
    assert!(ok && ready.exists(), "gotel did not attach; stderr:\n{}", gotel.stderr_string());
    std::fs::write(&go_on, b"").unwrap();
    let st = gotel.wait_timeout(Duration::from_secs(120)).unwrap();
    let stderr = gotel.stderr_string();
    let client_out = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success(), "client gotel exited {st}\n{stderr}\nclient: {client_out}");
    assert!(client_out.contains(&format!("hellos {N} bad 0")), "{client_out}");
    assert!(stderr.contains("0 already open enrolled"), "no connection before the client's first call: {stderr}");
    assert_eq!(summary_count(&stderr, "socket_enrolled"), Some(1), "the connection, enrolled at its connect: {stderr}");
    assert_eq!(summary_count(&stderr, "grpc_socket_injected"), Some(N), "{stderr}");

    std::fs::write(&stop, b"").unwrap();
    let st = server.wait_timeout(Duration::from_secs(60)).unwrap();
    let server_stderr = server.stderr_string();
    assert!(st.success(), "server gotel exited {st}\n{server_stderr}");
    assert_eq!(summary_count(&server_stderr, "grpc_traceparent_adopted"), Some(N), "{server_stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(60)).unwrap();
    let clients: std::collections::HashSet<&str> =
        spans.iter().filter(|s| s.kind == 3).map(|s| s.span_id.as_str()).collect();
    let parented = spans.iter().filter(|s| s.kind == 2 && clients.contains(s.parent_span_id.as_str())).count();
    assert_eq!(parented, N as usize, "server spans whose parent is their client span");
}

#[test]
fn grpc_inject_pid_namespace_go_1_26_grpc_1_64() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    inject_pid_namespace_check(&go("1.26"), "v1.64.1");
}

#[test]
fn grpc_inject_preattached_go_1_26_grpc_1_64() {
    gotel_e2e::require!(Root, GoVersion("1.26"));
    inject_preattached_check(&go("1.26"), "v1.64.1", false);
}

#[test]
fn grpc_inject_preattached_go_1_22_grpc_1_56_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.22"));
    inject_preattached_check(&go("1.22"), "v1.56.3", true);
}
