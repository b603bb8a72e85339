//! `join.same_node`: when one gotel traces both ends of an HTTP/1 connection (plaintext or TLS) (node mode: a client
//! and a server on the same node), the server span continues the client span without anything
//! written into either process or their traffic, so a trace joins with injection off.
//!
//! The client's request context is stored under the connection (client and server address and
//! port as both processes' `net.netFD`s hold them; rules in `gotel_shared::same_node`) by a
//! hook at `net/http.(*persistConn).roundTrip`'s entry ([`JOIN_SAME_NODE_CLIENT`], one trap per
//! client request); the server span's entry looks its connection up when the request has no
//! `traceparent` (no trap of its own). Kernel side: `sidecar-ebpf/src/propagation/same_node.rs`.
//! A client in a network namespace of its own also stores under its address alone, so that a
//! call through a Service's virtual IP (DNAT) joins too (`enable` decides, by the namespace).
//!
//! Why a pinned map: gotel loads one set of kernel programs per target, but the client's and the
//! server's programs must see the same `SAME_NODE_CONNS`: in node mode it is one of the maps
//! every load shares (`crate::shared_maps`). Only node mode shares (two gotels, e.g. two
//! sidecars, never see each other's map); without sharing the unit is off and the map has one
//! entry.
use aya::Ebpf;
use gotel_shared::{
    names::{MAP_SAME_NODE_CONFIG, MAP_SAME_NODE_CONNS, PROGRAM_SAME_NODE_CLIENT},
    same_node::{stores_client_key, SameNodeConfig, COOKIE_SAME_NODE_CLIENT, NO_OFFSET},
    Counter,
};

use super::{types_of, Activation, At, AttachTarget, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Wanted};
use crate::exit::Failure;

pub static JOIN_SAME_NODE: Instrumentation = Instrumentation {
    name: "join.same_node",
    selectable: true,
    doc: "in node mode, with injection off: a server span whose request has no `traceparent` continues the client \
          span gotel traced on the other end of its connection (HTTP/1, plaintext or TLS, both ends traced by this gotel); \
          reads only. Costs one trap per client request (`persistConn.roundTrip`)",
    fields: &[
        // Only binaries with an HTTP client have it.
        FieldNeed::std("net/http.persistConn", "conn", GoTy::Iface("net.Conn")).optional(),
        FieldNeed::std("net/http.response", "conn", GoTy::Ptr("net/http.conn")),
        FieldNeed::std("net/http.conn", "rwc", GoTy::Iface("net.Conn")),
        FieldNeed::std("net.TCPConn", "conn", GoTy::Opaque),
        FieldNeed::std("net.conn", "fd", GoTy::Ptr("net.netFD")),
        FieldNeed::std("net.netFD", "family", GoTy::Int),
        FieldNeed::std("net.netFD", "sotype", GoTy::Int),
        FieldNeed::std("net.netFD", "laddr", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.netFD", "raddr", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.TCPAddr", "IP", GoTy::Bytes),
        FieldNeed::std("net.TCPAddr", "Port", GoTy::Int),
        // HTTPS: the connection under TLS (binaries without crypto/tls lack it).
        FieldNeed::std("crypto/tls.Conn", "conn", GoTy::Iface("net.Conn")).optional(),
    ],
    wanted,
    prepare: Some(prepare),
    attach_extra: Some(enable),
    counters: &[
        ("same_node_offered", Counter::SameNodeOffered),
        ("same_node_joined", Counter::SameNodeJoined),
        ("same_node_expired", Counter::SameNodeExpired),
        ("same_node_unreadable", Counter::SameNodeUnreadable),
        ("same_node_ambiguous", Counter::SameNodeAmbiguous),
        ("same_node_joined_translated", Counter::SameNodeJoinedTranslated),
    ],
    quiet_counters: true,
    ..Instrumentation::BASE
};

/// The client half: its own unit so that a server-only binary (no `persistConn`) keeps the
/// server half.
pub static JOIN_SAME_NODE_CLIENT: Instrumentation = Instrumentation {
    name: "join.same_node.client",
    doc: "with `join.same_node`: stores each HTTP client request's context under its connection",
    hooks: &[HookSpec {
        program: PROGRAM_SAME_NODE_CLIENT,
        function: "net/http.(*persistConn).roundTrip",
        at: At::Entry,
        cookie: COOKIE_SAME_NODE_CLIENT,
    }],
    wanted: |s| {
        if sharing() && s.has_spans(super::http_client::HTTP_CLIENT.name) {
            Wanted::Yes
        } else {
            Wanted::No
        }
    },
    ..Instrumentation::BASE
};

fn wanted(s: &super::Session) -> Wanted {
    let http = s.has_spans(super::http_server::HTTP_SERVER.name) || s.has_spans(super::http_client::HTTP_CLIENT.name);
    if sharing() && http {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The kernel gets the field offsets now, `enabled` and the network namespace once the target
/// is known ([`enable`]).
fn prepare(a: &mut Activation) -> Result<(), String> {
    let client = super::http_client::HTTP_CLIENT.name;
    let client_probe = a.probes.iter().find(|p| p.library.is_some_and(|l| l.name == client)).map_or(u32::MAX, |p| p.id);
    let config = offsets(a, client_probe)
        .ok_or("join.same_node is off for this binary: the layout of net's connections is unknown")?;
    a.map_fills.push(MapFill::array(JOIN_SAME_NODE.name, MAP_SAME_NODE_CONFIG, config));
    Ok(())
}

fn offsets(a: &Activation, client_probe: u32) -> Option<SameNodeConfig> {
    let dwarf = types_of(a.bin).ok()?;
    let t = &dwarf.types;
    let off = |s: &str, f: &str| t.struct_field(s, f).map(|(o, _)| o as u32);
    // A binary without client spans has no persistConn to read: no client side.
    let pconn_conn = off("net/http.persistConn", "conn");
    Some(SameNodeConfig {
        enabled: 0,
        client_probe: if pconn_conn.is_some() { client_probe } else { u32::MAX },
        netns: 0,
        pconn_conn: pconn_conn.unwrap_or(0),
        response_conn: off("net/http.response", "conn")?,
        conn_rwc: off("net/http.conn", "rwc")?,
        tcpconn_fd: off("net.TCPConn", "conn")? + off("net.conn", "fd")?,
        fd_family: off("net.netFD", "family")?,
        fd_sotype: off("net.netFD", "sotype")?,
        fd_laddr: off("net.netFD", "laddr")?,
        fd_raddr: off("net.netFD", "raddr")?,
        addr_ip: off("net.TCPAddr", "IP")?,
        addr_port: off("net.TCPAddr", "Port")?,
        tls_conn: off("crypto/tls.Conn", "conn").unwrap_or(NO_OFFSET),
        client_key: 0,
    })
}

/// The target is known: its network namespace (loopback keys are per namespace), then on.
fn enable(ebpf: &mut Ebpf, t: &AttachTarget) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    // Unreadable (no CAP_SYS_PTRACE over the target): loopback keys without it, which can only
    // match more, never tracing less; said once.
    let netns = match std::fs::metadata(format!("/proc/{}/ns/net", t.pid)) {
        Ok(m) => m.ino() as u32,
        Err(e) => {
            tracing::warn!(
                pid = t.pid,
                "join.same_node: /proc/{}/ns/net: {e}; loopback connections are matched across network namespaces",
                t.pid
            );
            0
        }
    };
    // Client requests are also stored under the client address (joins through a Service's
    // virtual IP) only from a network namespace other than the host's (pid 1's: node mode sees
    // the host's pids; and the initial one).
    let host_netns = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino() as u32).ok();
    let client_key = stores_client_key(netns, host_netns);
    let map = ebpf.map_mut(MAP_SAME_NODE_CONFIG).expect("SAME_NODE_CONFIG map in the eBPF object");
    let mut config: aya::maps::Array<&mut aya::maps::MapData, SameNodeConfig> =
        aya::maps::Array::try_from(map).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))?;
    let mut value = config.get(&t.slot, 0).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))?;
    value.enabled = 1;
    value.netns = netns;
    value.client_key = u32::from(client_key);
    // The plan's probe id, as the kernel numbers it.
    if value.client_probe != u32::MAX {
        value.client_probe += t.probe_base;
    }
    config.set(t.slot, value, 0).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))
}

fn sharing() -> bool {
    crate::shared_maps::shared(MAP_SAME_NODE_CONNS)
}
