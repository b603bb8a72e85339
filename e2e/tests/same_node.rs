//! `join.same_node`, end to end on the real kernel: ONE gotel in node mode (`--node`, selected by
//! executable) traces two Go services (`e2e/goapps/httpsvc`: a frontend calling a backend over
//! HTTP/1 on 127.0.0.1, keep-alive) with `GOTEL_PROPAGATION=none`: nothing is written into either
//! process or their traffic, and yet each order is one trace, the backend's SERVER span the
//! child of the frontend's CLIENT span (matched in the kernel by the connection). Negative
//! checks: requests from an untraced client (this test, to both services) join nothing; with
//! `GOTEL_LIBRARIES` leaving `join.same_node` out, the services stay apart. With DWARF and
//! stripped (offsets from the layout table), and over TLS (HTTP/1.1). And gRPC over plaintext
//! HTTP/2 (`e2e/goapps/grpcsvc` as client and server: every server span under its call's CLIENT
//! span), directly and through the virtual IP.
//!
//! Through a Service's virtual IP ([`Vip`]): the frontend runs in a network namespace of its own
//! (a pod) linked to the host by a veth pair and calls a virtual IP that the host's `nat`
//! PREROUTING DNATs to the backend, as kube-proxy does; the two ends then hold different server
//! addresses and meet on the client's address alone.
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); skipped with one line
//! otherwise (the virtual IP also needs `ip`, `nsenter` and `iptables`). Run with
//! `--test-threads=1`.

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

/// One run's setup: how the Go programs are built, `join.same_node` on, HTTPS, injection on, how
/// the frontend reaches the backend.
#[derive(Clone, Copy)]
struct Case {
    variant: Variant,
    join: bool,
    tls: bool,
    inject: bool,
    route: Route,
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    /// The backend's own address, both on the host.
    Direct,
    /// A DNATed virtual IP ([`Vip`]), from the frontend in a network namespace of its own.
    VipFromPod,
    /// The same virtual IP from the frontend on the host: the host's addresses are what source
    /// NAT rewrites to, so a client there is matched by its full key only, and this joins
    /// nothing (`gotel_shared::same_node::stores_client_key`).
    VipFromHost,
}

const PLAIN: Case = Case { variant: Variant::Normal, join: true, tls: false, inject: false, route: Route::Direct };

fn run(case: Case) {
    let Case { variant, join, tls, inject, route } = case;
    let vip = route != Route::Direct;
    require_environment().unwrap();
    // Before anything is built or started: the network it needs (undone when dropped).
    let mut net = if vip { Some(Vip::new().unwrap()) } else { None };
    let dir = tempdir();
    let [frontend_bin, backend_bin] = services(dir.path(), "httpsvc", variant, ["frontend", "backend"]);

    let (cert, key) = if tls { gotel_e2e::certificate(dir.path()) } else { Default::default() };
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let libraries = (!join).then_some("http.server,http.client");
    let gotel = node_gotel(&sink, [(&frontend_bin, "frontend"), (&backend_bin, "backend")], inject, libraries);

    let backend_file = dir.path().join("backend.addr");
    let frontend_file = dir.path().join("frontend.addr");
    let mut cmd = Command::new(&backend_bin);
    cmd.args(["-role", "backend", "-portfile", backend_file.to_str().unwrap()]);
    if tls {
        cmd.arg("-tls-cert").arg(&cert).arg("-tls-key").arg(&key);
    }
    if vip {
        cmd.args(["-listen", &format!("{HOST_IP}:0")]);
    }
    let backend = Proc::spawn("backend", cmd).unwrap();
    let backend_addr = wait_file(&backend_file);
    // The address the frontend dials: the backend's, or the virtual IP DNATed to it.
    let dialled = match net.as_mut() {
        Some(net) => net.dnat(&backend_addr).unwrap(),
        None => backend_addr.clone(),
    };
    let mut cmd = match &net {
        Some(net) if route == Route::VipFromPod => net.in_pod(&frontend_bin),
        _ => Command::new(&frontend_bin),
    };
    if route == Route::VipFromPod {
        cmd.args(["-listen", &format!("{POD_IP}:0")]);
    }
    let scheme = if tls { "https" } else { "http" };
    cmd.args(["-role", "frontend", "-backend", &format!("{scheme}://{dialled}")]).env("SSL_CERT_FILE", &cert);
    cmd.args(["-portfile", frontend_file.to_str().unwrap()]);
    let frontend = Proc::spawn("frontend", cmd).unwrap();
    let frontend_addr = wait_file(&frontend_file);
    wait_attached(&gotel, [backend.pid(), frontend.pid()]);

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
    let (spans, stderr) = stop(gotel, &sink, want);
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
    let offered = if join { ORDERS as u64 } else { 0 };
    if join && route != Route::VipFromHost {
        assert_eq!(joined.len(), ORDERS, "every order's backend server span under its client span\n{stderr}");
        for (server, client) in &joined {
            assert_eq!(server.trace_id, client.trace_id);
            assert!(server.start_unix_nano >= client.start_unix_nano && server.end_unix_nano <= client.end_unix_nano);
        }
        let traces: std::collections::HashSet<_> = clients.iter().map(|c| &c.trace_id).collect();
        assert_eq!(traces.len(), ORDERS, "one trace per order");
        assert_eq!(unparented, direct, "only the untraced client's request to the backend has no parent");
        assert_eq!((total("same_node_offered"), total("same_node_joined")), (offered, ORDERS as u64), "{stderr}");
        // Through the virtual IP every join is by the client address; otherwise none is.
        let translated = if vip { ORDERS as u64 } else { 0 };
        assert_eq!(total("same_node_joined_translated"), translated, "{stderr}");
        assert_eq!(total("same_node_ambiguous"), 0, "{stderr}");
    } else {
        assert!(joined.is_empty(), "the services stay apart\n{stderr}");
        assert_eq!(unparented, ORDERS + direct);
        assert_eq!((total("same_node_offered"), total("same_node_joined")), (offered, 0), "{stderr}");
        if !join {
            assert!(!stderr.contains("same_node_"), "no same_node counters when off\n{stderr}");
        }
    }
    if !inject {
        assert!(!stderr.contains("socket_injected="), "nothing injected");
    }
    drop(net.take());
}

/// `app` built as `variant`, copied into `dir` once per service name (each selector names its
/// own file).
fn services(dir: &Path, app: &str, variant: Variant, names: [&str; 2]) -> [std::path::PathBuf; 2] {
    let built = build_go(&gotel_e2e::go_bin(), app, variant).unwrap();
    names.map(|name| {
        let bin = dir.join(name);
        std::fs::copy(&built, &bin).unwrap();
        bin
    })
}

/// One gotel in node mode selecting each (executable, service name), exporting to `sink`,
/// injection on or off, `GOTEL_LIBRARIES` if given; returned once it watches for processes.
fn node_gotel(sink: &Sink, select: [(&Path, &str); 2], inject: bool, libraries: Option<&str>) -> Proc {
    let mut g = gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "");
    g.env_remove("GOTEL_PROBES").env("GOTEL_PROPAGATION", if inject { "inject" } else { "none" });
    if let Some(libraries) = libraries {
        g.env("GOTEL_LIBRARIES", libraries);
    }
    g.arg("--node");
    for (exe, service) in select {
        g.arg("--select").arg(format!("exe={},service={service}", exe.display()));
    }
    let mut gotel = Proc::spawn("gotel", g).unwrap();
    gotel.wait_stderr_line("watching for processes", Duration::from_secs(20)).unwrap();
    gotel
}

/// Until gotel's session of each pid is attached and enabled (the session's last line, not the
/// uprobes' line before the units' last steps).
fn wait_attached(gotel: &Proc, pids: [u32; 2]) {
    let attached = |pid: u32| format!("attached pid={pid} ");
    let all = wait_until(Duration::from_secs(60), || {
        let e = gotel.stderr_string();
        pids.iter().all(|&pid| e.contains(&attached(pid)))
    });
    assert!(all, "gotel attached to both services\n{}", gotel.stderr_string());
}

/// Once `want` spans arrived: gotel stopped (SIGTERM, a clean exit, no panic); every span
/// received and gotel's stderr.
fn stop(mut gotel: Proc, sink: &Sink, want: usize) -> (Vec<FlatSpan>, String) {
    let spans = sink.wait_spans(want, Duration::from_secs(30)).unwrap();
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st} on SIGTERM\n{stderr}");
    assert_no_panic("gotel", &stderr);
    (sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(10)).unwrap_or(spans), stderr)
}

/// The virtual IP's addresses (198.18.0.0/15, the benchmarking range; the Kubernetes test uses
/// 198.18.0.1): the host's end of the veth pair (where the backend listens), the pod's end, the
/// virtual IP.
const HOST_IP: &str = "198.19.17.1";
const POD_IP: &str = "198.19.17.2";
const VIP: &str = "198.19.17.100";
const NETNS: &str = "gotel-e2e-vip";
const HOST_IF: &str = "gtvip0h";
const POD_IF: &str = "gtvip0c";
/// The host's `nat` chain holding the DNAT, jumped to from PREROUTING (as kube-proxy's
/// `KUBE-SERVICES`).
const CHAIN: &str = "GOTEL-E2E-VIP";

/// A Kubernetes Service's virtual IP as kube-proxy (iptables mode) makes one, for a pod on the
/// host's bridge: a network namespace ("the pod") with one end of a veth pair, the host with the
/// other, and a DNAT of `VIP:80` in the host's PREROUTING. Undone when dropped (also when the test
/// fails), and before it is made (what an interrupted run left).
struct Vip;

impl Vip {
    /// Why it cannot be made here, if it cannot (the test is then skipped with that line).
    fn missing() -> Option<String> {
        ["ip", "nsenter", "iptables"].into_iter().find_map(|tool| {
            let found = Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success());
            (!found).then(|| format!("needs `{tool}` for the virtual IP (Debian: iproute2, util-linux, iptables)"))
        })
    }

    fn new() -> Result<Vip, String> {
        Vip::undo();
        let vip = Vip;
        let pod = |args: &str| format!("-n {NETNS} {args}");
        for step in [
            format!("netns add {NETNS}"),
            format!("link add {HOST_IF} type veth peer name {POD_IF}"),
            format!("link set {POD_IF} netns {NETNS}"),
            format!("addr add {HOST_IP}/30 dev {HOST_IF}"),
            format!("link set {HOST_IF} up"),
            pod(&format!("addr add {POD_IP}/30 dev {POD_IF}")),
            pod(&format!("link set {POD_IF} up")),
            pod("link set lo up"),
            pod(&format!("route add {VIP}/32 via {HOST_IP}")),
            // For a client on the host (its OUTPUT chain DNATs before the packet leaves).
            format!("route add {VIP}/32 dev {HOST_IF}"),
        ] {
            sh("ip", &step)?;
        }
        sh("iptables", &format!("-t nat -N {CHAIN}"))?;
        sh("iptables", &format!("-t nat -I PREROUTING -j {CHAIN}"))?;
        sh("iptables", &format!("-t nat -I OUTPUT -j {CHAIN}"))?;
        Ok(vip)
    }

    /// `VIP:80` DNATed to `to` (`ip:port`): the address to dial.
    fn dnat(&mut self, to: &str) -> Result<String, String> {
        sh("iptables", &format!("-t nat -A {CHAIN} -d {VIP}/32 -p tcp --dport 80 -j DNAT --to-destination {to}"))?;
        Ok(format!("{VIP}:80"))
    }

    /// `program` run in the pod's network namespace (the same process: `nsenter` execs it).
    fn in_pod(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{NETNS}")).arg("--").arg(program);
        cmd
    }

    /// Removes all of it, whatever exists (errors ignored: parts may never have been made).
    fn undo() {
        for (tool, args) in [
            ("iptables", format!("-t nat -D PREROUTING -j {CHAIN}")),
            ("iptables", format!("-t nat -D OUTPUT -j {CHAIN}")),
            ("iptables", format!("-t nat -F {CHAIN}")),
            ("iptables", format!("-t nat -X {CHAIN}")),
            ("ip", format!("link del {HOST_IF}")),
            ("ip", format!("netns del {NETNS}")),
        ] {
            let _ = Command::new(tool).args(args.split(' ')).output();
        }
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        Vip::undo();
    }
}

fn sh(tool: &str, args: &str) -> Result<(), String> {
    let out = Command::new(tool).args(args.split(' ')).output().map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{tool} {args}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[test]
fn one_gotel_joins_both_ends_of_a_connection_without_writing() {
    gotel_e2e::require!(Root, Go);
    run(PLAIN);
}

#[test]
fn one_gotel_joins_both_ends_stripped() {
    gotel_e2e::require!(Root, Go);
    run(Case { variant: Variant::Stripped, ..PLAIN });
}

/// HTTP/1.1 over TLS: both ends' `*tls.Conn` unwrapped to the TCP connection under it.
#[test]
fn one_gotel_joins_both_ends_over_tls() {
    gotel_e2e::require!(Root, Go);
    run(Case { tls: true, ..PLAIN });
}

#[test]
fn without_join_same_node_the_services_stay_apart() {
    gotel_e2e::require!(Root, Go);
    run(Case { join: false, ..PLAIN });
}

/// Injection on as well: over TLS the socket path (the only one on a kernel in lockdown) cannot
/// insert `traceparent`, and the same-node join still makes each order one trace.
#[test]
fn tls_with_injection_on_still_joins() {
    gotel_e2e::require!(Root, Go);
    run(Case { tls: true, inject: true, ..PLAIN });
}

/// Through a Kubernetes Service's virtual IP: the frontend ("a pod", a network namespace of its
/// own) dials `VIP:80`, which the host DNATs to the backend, so the frontend's connection holds the
/// virtual IP and the backend's its real address. Every order is still one trace: the backend's
/// server span under the frontend's CLIENT span, joined by the client's address alone.
#[test]
fn one_gotel_joins_through_a_services_virtual_ip() {
    gotel_e2e::require!(Root, Go);
    through_vip("one_gotel_joins_through_a_services_virtual_ip", Route::VipFromPod);
}

/// The same virtual IP called from the host's network namespace (a `hostNetwork` pod, a process
/// on the node): not joined, by design (see [`Route::VipFromHost`]); still counted as offered.
#[test]
fn a_client_on_the_host_through_a_virtual_ip_is_not_joined() {
    gotel_e2e::require!(Root, Go);
    through_vip("a_client_on_the_host_through_a_virtual_ip_is_not_joined", Route::VipFromHost);
}

/// Runs `route`, or skips `test` with one line when the machine cannot make the virtual IP.
fn through_vip(test: &str, route: Route) {
    match Vip::missing() {
        Some(why) => gotel_e2e::toolchains::skip_or_fail(test, &why),
        None => run(Case { route, ..PLAIN }),
    }
}

/// gRPC (HTTP/2, plaintext) between two processes one gotel traces in node mode, injection off:
/// `e2e/goapps/grpcsvc` as a server (`-serve`) and as a client (`-target`, after gotel attached
/// to it) making the set of calls (unary, server streams, errors, a deadline, an unimplemented
/// method) `ROUNDS` times on one connection. Every server span's parent is its call's CLIENT
/// span, in its trace (matched by the connection and the HTTP/2 stream id). Without this unit
/// (gotel before it) the server spans had no parent: two traces per call.
fn grpc_run(route: Route, variant: Variant) {
    const ROUNDS: usize = 3;
    const METHODS: usize = 6;
    require_environment().unwrap();
    let mut net = if route == Route::Direct { None } else { Some(Vip::new().unwrap()) };
    let dir = tempdir();
    let [client_bin, server_bin] = services(dir.path(), "grpcsvc", variant, ["grpc-client", "grpc-server"]);
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let gotel = node_gotel(&sink, [(&client_bin, "grpc-client"), (&server_bin, "grpc-server")], false, None);

    let host = if route == Route::Direct { "127.0.0.1" } else { HOST_IP };
    let listen = std::net::TcpListener::bind(format!("{host}:0")).unwrap();
    let addr = listen.local_addr().unwrap().to_string();
    drop(listen);
    let (until, go) = (dir.path().join("stop"), dir.path().join("go"));
    let mut cmd = Command::new(&server_bin);
    cmd.args(["-serve", &addr, "-until", until.to_str().unwrap()]);
    let mut server = Proc::spawn("grpc-server", cmd).unwrap();
    let dialled = match net.as_mut() {
        Some(net) => net.dnat(&addr).unwrap(),
        None => addr.clone(),
    };
    let mut cmd = match &net {
        Some(net) => net.in_pod(&client_bin),
        None => Command::new(&client_bin),
    };
    cmd.args(["-target", &dialled, "-rounds", &ROUNDS.to_string(), "-wait", go.to_str().unwrap()]);
    let mut client = Proc::spawn("grpc-client", cmd).unwrap();
    wait_attached(&gotel, [server.pid(), client.pid()]);
    std::fs::write(&go, b"").unwrap();
    let st = client.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(st.success() && client.stdout_string().contains("done"), "client: {st}\n{}", client.stderr_string());
    std::fs::write(&until, b"").unwrap();
    assert!(server.wait_timeout(Duration::from_secs(30)).unwrap().success(), "{}", server.stderr_string());

    let calls = ROUNDS * METHODS;
    let (spans, stderr) = stop(gotel, &sink, 2 * calls);
    drop(net.take());

    let service = |s: &FlatSpan| s.res_str("service.name").unwrap_or("").to_string();
    let of = |svc: &str, kind: i32| -> Vec<&FlatSpan> {
        spans.iter().filter(|s| service(s) == svc && s.kind == kind).collect()
    };
    let (clients, servers) = (of("grpc-client", 3), of("grpc-server", 2));
    assert_eq!((clients.len(), servers.len()), (calls, calls), "{stderr}");
    for server in &servers {
        let client = clients.iter().find(|c| c.span_id == server.parent_span_id);
        let client = client.unwrap_or_else(|| panic!("a server span not under a client span: {server:#?}\n{stderr}"));
        assert_eq!((&server.trace_id, &server.name), (&client.trace_id, &client.name), "one trace per call");
    }
    let traces: std::collections::HashSet<_> = clients.iter().map(|c| &c.trace_id).collect();
    assert_eq!(traces.len(), calls, "one trace per call");
    let total = |key: &str| summaries(&stderr).iter().filter_map(|s| s.get(key).copied()).sum::<u64>();
    assert_eq!((total("same_node_offered"), total("same_node_joined")), (calls as u64, calls as u64), "{stderr}");
    let translated = if route == Route::Direct { 0 } else { calls as u64 };
    assert_eq!(total("same_node_joined_translated"), translated, "{stderr}");
    assert!(!stderr.contains("socket_injected="), "nothing injected");
}

/// gRPC calls on 127.0.0.1 (`grpc_run`).
#[test]
fn one_gotel_joins_both_ends_of_grpc_calls() {
    gotel_e2e::require!(Root, Go);
    grpc_run(Route::Direct, Variant::Normal);
}

/// The same, stripped: grpc-go's and x/net's offsets from the layout table.
#[test]
fn one_gotel_joins_both_ends_of_grpc_calls_stripped() {
    gotel_e2e::require!(Root, Go);
    grpc_run(Route::Direct, Variant::Stripped);
}

/// gRPC calls from a pod through a Service's virtual IP (`grpc_run`, [`Vip`]).
#[test]
fn one_gotel_joins_grpc_calls_through_a_services_virtual_ip() {
    gotel_e2e::require!(Root, Go);
    match Vip::missing() {
        Some(why) => {
            gotel_e2e::toolchains::skip_or_fail("one_gotel_joins_grpc_calls_through_a_services_virtual_ip", &why)
        }
        None => grpc_run(Route::VipFromPod, Variant::Normal),
    }
}
