//! `join.same_node`, end to end on the real kernel: ONE gotel in node mode (`--node`, selected by
//! executable) traces two Go services (`e2e/goapps/httpsvc`: a frontend calling a backend over
//! HTTP/1 on 127.0.0.1, keep-alive) with `GOTEL_PROPAGATION=none`: nothing is written into either
//! process or their traffic, and yet each order is one trace, the backend's SERVER span the
//! child of the frontend's CLIENT span (matched in the kernel by the connection). Negative
//! checks: requests from an untraced client (this test, to both services) join nothing; with
//! `GOTEL_LIBRARIES` leaving `join.same_node` out, the services stay apart. With DWARF and
//! stripped (offsets from the layout table), and over TLS (HTTP/1.1).
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); skipped with one line
//! otherwise. Run with `--test-threads=1`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gotel_e2e::hardening::{assert_no_panic, summaries, tempdir};
use gotel_e2e::{
    build_go, gotel_command, http_get, require_environment, wait_until, Export, FlatSpan, Proc, Sink, Variant,
};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const ORDERS: usize = 6;

fn wait_file(path: &Path) -> String {
    assert!(wait_until(Duration::from_secs(30), || path.exists()), "{} never appeared", path.display());
    std::fs::read_to_string(path).unwrap()
}

fn run(variant: Variant, join: bool, tls: bool, inject: bool) {
    require_environment().unwrap();
    let dir = tempdir();
    let built = build_go(&gotel_e2e::go_bin(), "httpsvc", variant).unwrap();
    // Two files, so that each selector names its service.
    let (frontend_bin, backend_bin) = (dir.path().join("frontend"), dir.path().join("backend"));
    std::fs::copy(&built, &frontend_bin).unwrap();
    std::fs::copy(&built, &backend_bin).unwrap();

    let (cert, key) = if tls { gotel_e2e::certificate(dir.path()) } else { Default::default() };
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut g = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "");
    g.env_remove("GOTEL_PROBES").env("GOTEL_PROPAGATION", if inject { "inject" } else { "none" });
    if !join {
        g.env("GOTEL_LIBRARIES", "http.server,http.client");
    }
    g.arg("--node")
        .arg("--select")
        .arg(format!("exe={},service=frontend", frontend_bin.display()))
        .arg("--select")
        .arg(format!("exe={},service=backend", backend_bin.display()));
    let mut gotel = Proc::spawn("gotel", g).unwrap();
    gotel.wait_stderr_line("watching for processes", Duration::from_secs(20)).unwrap();

    let backend_file = dir.path().join("backend.addr");
    let frontend_file = dir.path().join("frontend.addr");
    let mut cmd = Command::new(&backend_bin);
    cmd.args(["-role", "backend", "-portfile", backend_file.to_str().unwrap()]);
    if tls {
        cmd.arg("-tls-cert").arg(&cert).arg("-tls-key").arg(&key);
    }
    let backend = Proc::spawn("backend", cmd).unwrap();
    let backend_addr = wait_file(&backend_file);
    let mut cmd = Command::new(&frontend_bin);
    let scheme = if tls { "https" } else { "http" };
    cmd.args(["-role", "frontend", "-backend", &format!("{scheme}://{backend_addr}")]).env("SSL_CERT_FILE", &cert);
    cmd.args(["-portfile", frontend_file.to_str().unwrap()]);
    let frontend = Proc::spawn("frontend", cmd).unwrap();
    let frontend_addr = wait_file(&frontend_file);
    // The session's last line, once everything is attached and enabled (not the uprobes' line
    // before the units' last steps).
    let attached = |pid: u32| format!("attached pid={pid} ");
    let both = wait_until(Duration::from_secs(60), || {
        let e = gotel.stderr_string();
        e.contains(&attached(backend.pid())) && e.contains(&attached(frontend.pid()))
    });
    assert!(both, "gotel attached to both services\n{}", gotel.stderr_string());

    for _ in 0..ORDERS {
        assert_eq!(http_get(&frontend_addr, "/order?item=tea"), 200);
    }
    // The untraced client to the backend directly, on a connection of its own (plaintext only).
    if !tls {
        assert_eq!(http_get(&backend_addr, "/price?item=gold"), 200);
    }
    let direct = usize::from(!tls);

    // Per order: frontend SERVER and CLIENT, backend SERVER; plus the direct backend request.
    let want = 3 * ORDERS + direct;
    let spans = sink.wait_spans(want, Duration::from_secs(30)).unwrap();
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st} on SIGTERM\n{stderr}");
    assert_no_panic("gotel", &stderr);
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(10)).unwrap_or(spans);
    drop((frontend, backend));

    let service = |s: &FlatSpan| s.res_str("service.name").unwrap_or("").to_string();
    let of = |svc: &str, kind: i32| -> Vec<&FlatSpan> {
        spans.iter().filter(|s| service(s) == svc && s.kind == kind).collect()
    };
    let (front_servers, clients, back_servers) = (of("frontend", 2), of("frontend", 3), of("backend", 2));
    assert_eq!((front_servers.len(), clients.len(), back_servers.len()), (ORDERS, ORDERS, ORDERS + direct), "{stderr}");
    // The untraced client's requests join nothing.
    assert!(front_servers.iter().all(|s| s.parent_span_id.is_empty()), "frontend server spans have no parent");
    let joined: Vec<_> = back_servers
        .iter()
        .filter_map(|s| clients.iter().find(|c| c.span_id == s.parent_span_id).map(|c| (s, c)))
        .collect();
    let unparented = back_servers.iter().filter(|s| s.parent_span_id.is_empty()).count();
    let total = |key: &str| summaries(&stderr).iter().filter_map(|s| s.get(key).copied()).sum::<u64>();
    if join {
        assert_eq!(joined.len(), ORDERS, "every order's backend server span under its client span\n{stderr}");
        for (server, client) in &joined {
            assert_eq!(server.trace_id, client.trace_id);
            assert!(server.start_unix_nano >= client.start_unix_nano && server.end_unix_nano <= client.end_unix_nano);
        }
        let traces: std::collections::HashSet<_> = clients.iter().map(|c| &c.trace_id).collect();
        assert_eq!(traces.len(), ORDERS, "one trace per order");
        assert_eq!(unparented, direct, "only the untraced client's request to the backend has no parent");
        assert_eq!((total("same_node_offered"), total("same_node_joined")), (ORDERS as u64, ORDERS as u64), "{stderr}");
    } else {
        assert!(joined.is_empty(), "join.same_node off: the services stay apart");
        assert_eq!(unparented, ORDERS + direct);
        assert!(!stderr.contains("same_node_"), "no same_node counters when off\n{stderr}");
    }
    if !inject {
        assert!(!stderr.contains("socket_injected="), "nothing injected");
    }
}

#[test]
fn one_gotel_joins_both_ends_of_a_connection_without_writing() {
    gotel_e2e::require!(Root, Go);
    run(Variant::Normal, true, false, false);
}

#[test]
fn one_gotel_joins_both_ends_stripped() {
    gotel_e2e::require!(Root, Go);
    run(Variant::Stripped, true, false, false);
}

/// HTTP/1.1 over TLS: both ends' `*tls.Conn` unwrapped to the TCP connection under it.
#[test]
fn one_gotel_joins_both_ends_over_tls() {
    gotel_e2e::require!(Root, Go);
    run(Variant::Normal, true, true, false);
}

#[test]
fn without_join_same_node_the_services_stay_apart() {
    gotel_e2e::require!(Root, Go);
    run(Variant::Normal, false, false, false);
}

/// Injection on as well: over TLS the socket path (the only one on a kernel in lockdown) cannot
/// insert `traceparent`, and the same-node join still makes each order one trace.
#[test]
fn tls_with_injection_on_still_joins() {
    gotel_e2e::require!(Root, Go);
    run(Variant::Normal, true, true, true);
}
