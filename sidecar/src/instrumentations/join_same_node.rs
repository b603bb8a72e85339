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
//! gRPC over plaintext HTTP/2 too: the client's call context is stored under the connection
//! and the call's stream id by the two hooks of the gRPC injection path
//! ([`JOIN_SAME_NODE_GRPC_CLIENT`]: `createHeaderFields` RETs and `(*loopyWriter).writeHeader`,
//! two traps per call, planned only with injection off, when that path has them already); the
//! server's `operateHeaders` hook (`trace_context.grpc`) looks it up when the stream has no
//! `traceparent`. Field offsets from DWARF or the layout table; a binary without them keeps the
//! HTTP/1 join and says that gRPC calls are not joined.
//!
//! Why a pinned map: in node mode the client's and the server's programs must see the same
//! `SAME_NODE_CONNS`; with one loaded object for every target (`crate::kernel`) they do, and
//! where each target loads its own set it is one of the maps every load shares
//! (`crate::shared_maps`). Only node mode shares (two gotels, e.g. two
//! sidecars, never see each other's map); without sharing the unit is off and the map has one
//! entry.
use aya::Ebpf;
use gotel_shared::{
    names::{MAP_GRPC_INJECT_CONFIG, MAP_SAME_NODE_CONFIG, MAP_SAME_NODE_CONNS, PROGRAM_SAME_NODE_CLIENT},
    same_node::{stores_client_key, SameNodeConfig, COOKIE_SAME_NODE_CLIENT, NO_OFFSET},
    Counter,
};

use super::{
    grpc::GRPC,
    inject_socket::grpc::{fields_config, FIELDS, HOOKS},
    trace_context_grpc::X_NET,
    types_of, Activation, At, AttachTarget, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Wanted,
};
use crate::exit::Failure;

pub static JOIN_SAME_NODE: Instrumentation = Instrumentation {
    name: "join.same_node",
    selectable: true,
    doc: "in node mode, with injection off: a server span whose request has no `traceparent` continues the client \
          span gotel traced on the other end of its connection (HTTP/1, plaintext or TLS, both ends traced by this gotel), \
          and gRPC over plaintext HTTP/2 (h2c), matched by the connection and the call's stream id; \
          reads only. Costs one trap per HTTP client request (`persistConn.roundTrip`) and two per gRPC client call",
    fields: &[
        // Only binaries with an HTTP client have it.
        FieldNeed::std("net/http.persistConn", "conn", GoTy::Iface("net.Conn")).optional(),
        // (A binary without an HTTP server, e.g. a gRPC one, may lack them: `offsets` copes.)
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
        // gRPC: the connection of a client's writer and of a server, a HEADERS frame's stream.
        FieldNeed::module(GRPC, LOOPY, "conn", GoTy::Iface("net.Conn")).optional(),
        FieldNeed::module(GRPC, H2_SERVER, "conn", GoTy::Iface("net.Conn")).optional(),
        FieldNeed::module(X_NET, META_HEADERS, "HeadersFrame", GoTy::Ptr(HEADERS)).optional(),
        FieldNeed::module(X_NET, HEADERS, "FrameHeader", GoTy::Opaque).optional(),
        FieldNeed::module(X_NET, FRAME_HEADER, "StreamID", GoTy::Int).optional(),
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

const LOOPY: &str = "google.golang.org/grpc/internal/transport.loopyWriter";
const H2_SERVER: &str = "google.golang.org/grpc/internal/transport.http2Server";
const META_HEADERS: &str = "golang.org/x/net/http2.MetaHeadersFrame";
const HEADERS: &str = "golang.org/x/net/http2.HeadersFrame";
const FRAME_HEADER: &str = "golang.org/x/net/http2.FrameHeader";

/// The gRPC client half: the injection path's two hooks (`inject_socket/grpc.rs`), planned here
/// only when injection is off (with it on, `inject.socket.grpc` has them and the server gets a
/// `traceparent`).
pub static JOIN_SAME_NODE_GRPC_CLIENT: Instrumentation = Instrumentation {
    name: "join.same_node.grpc_client",
    doc: "with `join.same_node` and injection off: stores each gRPC client call's context under its connection and HTTP/2 stream id (two traps per call: `createHeaderFields` RETs, `(*loopyWriter).writeHeader`)",
    fields: FIELDS,
    hooks: HOOKS,
    wanted: |s| {
        if sharing() && !s.inject && s.has_spans(super::grpc_client::GRPC_CLIENT.name) {
            Wanted::Yes
        } else {
            Wanted::No
        }
    },
    prepare: Some(prepare_grpc_client),
    ..Instrumentation::BASE
};

/// The header fields' layout (the `traceparent` check of `gotel_grpc_fields`), and the writer's
/// connection, without which the unit is off.
fn prepare_grpc_client(a: &mut Activation) -> Result<(), String> {
    let off = |why: String| format!("join.same_node: gRPC client calls are not joined in this binary: {why}");
    let types = types_of(a.bin).map_err(off)?;
    if types.types.struct_field(LOOPY, "conn").is_none() {
        return Err(off(format!("the layout of {LOOPY} is unknown")));
    }
    let config = fields_config(a).map_err(off)?;
    a.map_fills.push(MapFill::array(JOIN_SAME_NODE_GRPC_CLIENT.name, MAP_GRPC_INJECT_CONFIG, config));
    Ok(())
}

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
    let http = s.has_spans(super::http_server::HTTP_SERVER.name)
        || s.has_spans(super::http_client::HTTP_CLIENT.name)
        || s.has_spans(super::grpc_server::GRPC_SERVER.name)
        || s.has_spans(super::grpc_client::GRPC_CLIENT.name);
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
    let grpc = a.bin.build.deps.iter().any(|(p, _)| p == GRPC);
    if grpc && config.h2server_conn == NO_OFFSET {
        tracing::warn!(
            "join.same_node: gRPC server streams are not joined in this binary: the layout of {H2_SERVER} or of x/net's HEADERS frame is unknown"
        );
    }
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
        // No HTTP server: no HTTP server span calls the join (and the kernel checks).
        response_conn: off("net/http.response", "conn").unwrap_or(NO_OFFSET),
        conn_rwc: off("net/http.conn", "rwc").unwrap_or(NO_OFFSET),
        tcpconn_fd: off("net.TCPConn", "conn")? + off("net.conn", "fd")?,
        fd_family: off("net.netFD", "family")?,
        fd_sotype: off("net.netFD", "sotype")?,
        fd_laddr: off("net.netFD", "laddr")?,
        fd_raddr: off("net.netFD", "raddr")?,
        addr_ip: off("net.TCPAddr", "IP")?,
        addr_port: off("net.TCPAddr", "Port")?,
        tls_conn: off("crypto/tls.Conn", "conn").unwrap_or(NO_OFFSET),
        client_key: 0,
        grpc_client: 0,
        grpc_server: 0,
        loopy_conn: off(LOOPY, "conn").unwrap_or(NO_OFFSET),
        // The server's three offsets together, or none (`grpc_server` stays 0).
        ..grpc_server_offsets(&off).unwrap_or(SameNodeConfig {
            h2server_conn: NO_OFFSET,
            meta_headers: NO_OFFSET,
            frame_stream: NO_OFFSET,
            ..Default::default()
        })
    })
}

/// `http2Server.conn`, `MetaHeadersFrame.HeadersFrame`, `HeadersFrame.FrameHeader` +
/// `FrameHeader.StreamID` (the other fields default).
fn grpc_server_offsets(off: &dyn Fn(&str, &str) -> Option<u32>) -> Option<SameNodeConfig> {
    Some(SameNodeConfig {
        h2server_conn: off(H2_SERVER, "conn")?,
        meta_headers: off(META_HEADERS, "HeadersFrame")?,
        frame_stream: off(HEADERS, "FrameHeader")? + off(FRAME_HEADER, "StreamID")?,
        ..Default::default()
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
    value.grpc_client = u32::from(t.running(JOIN_SAME_NODE_GRPC_CLIENT.name) && value.loopy_conn != NO_OFFSET);
    value.grpc_server = u32::from(value.h2server_conn != NO_OFFSET);
    // The plan's probe id, as the kernel numbers it.
    if value.client_probe != u32::MAX {
        value.client_probe += t.probe_base;
    }
    config.set(t.slot, value, 0).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))
}

fn sharing() -> bool {
    crate::shared_maps::shared(MAP_SAME_NODE_CONNS)
}
