//! One trace across a connection whose two ends gotel traces on this node, without writing
//! anything (`join.same_node`; rules and their tests in `gotel_shared::same_node`).
//!
//! Client side, `gotel_same_node_client` at the entry of `net/http.(*persistConn).roundTrip`
//! (on the caller's goroutine, after the connection was chosen and before the request is handed
//! to the connection's writer): when the innermost traced call of the goroutine is the HTTP
//! client span, its context is stored under the connection's addresses, read from
//! `pc.conn.(*net.TCPConn).fd.{laddr,raddr}`, in `SAME_NODE_CONNS`. That map is shared by every
//! set of programs one gotel loads (user space pins it in a bpffs instance of its own), so a
//! server traced as another target finds it.
//!
//! Server side, [`join`], called once from the HTTP server span's entry (`propagation::extract`)
//! when the request brought no `traceparent`: the same addresses from
//! `rw.(*http.response).conn.rwc`, swapped, give the key; a fresh context found there becomes the
//! server span's remote parent, like a `traceparent` would, and is removed (used once).
//!
//! Why `persistConn.roundTrip` and not a hook gotel already has: the client span's entry
//! (`Transport.roundTrip`) comes before a connection is chosen, and the request-write hand-off is
//! loaded only with injection, which makes this unit unnecessary. One trap per client request,
//! only in processes with HTTP client spans and only when the unit is on (BENCHMARKS.md).
//!
//! Through a DNAT (a Service's virtual IP) the two ends disagree on the server's address: the
//! client also stores under its own address alone (when `client_key`: a client in a network
//! namespace of its own), the server tries that when the full key misses, and joins unless the
//! record is ambiguous (rules: `gotel_shared::same_node::{other_ns, verdict}`). A server that
//! joins by the full key also removes its client address's record when it holds the same
//! context, so that the connection's next request does not find an unused one there.
//!
//! gRPC (HTTP/2, plaintext): many calls share a connection, so their keys also carry the
//! stream id. Client side, [`offer_grpc`] from `gotel_grpc_write_header` (entry of
//! `(*loopyWriter).writeHeader(streamID, …, hf, …)` on the connection's writer goroutine, before
//! the HEADERS frame is encoded): the call's context, which `gotel_grpc_fields` keyed by `hf`
//! on the caller's goroutine (the injection path's two hooks, `inject_socket/h2.rs`), is stored
//! under `l.conn`'s addresses and `streamID`. Server side, [`gotel_same_node_join_grpc`] from
//! `gotel_grpc_headers` (`(*http2Server).operateHeaders`, on the reader goroutine) when the
//! stream has no `traceparent`: `t.conn` and `frame.StreamID` give the key, and the context is
//! adopted for hand-off to the stream's goroutine as an incoming `traceparent` is. Why those
//! two client hooks: the writer goroutine knows the stream id and the connection but not the
//! caller, the caller's goroutine knows its span before a stream id exists, and a hook after
//! the id is given (`NewStream`'s RETs) may run after the frame left (the server would look
//! first). Two traps per call; the rules and guards are HTTP/1's.
//!
//! TLS connections are matched too (HTTP/1): a `*tls.Conn` is unwrapped once to the
//! `*net.TCPConn` it runs over (its `conn` field), on both ends. gRPC over TLS is not (grpc-go
//! wraps the TLS connection in a type of its own): counted as `same_node_unreadable`.
//!
//! Nothing here writes into the target or its traffic; reads only (`bpf_probe_read_user`).
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_buf},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    rules::{adopt_remote, frame_slot, outgoing_sampled},
    same_node::{
        h2_stream, is_tcp, other_ns, port, verdict, widen_ip, ConnContext, SameNodeConfig, Verdict, NO_OFFSET,
    },
    Counter, GoroutineState, InjectContext, INHERIT_HANDOFF, INHERIT_REMOTE, MAX_FRAMES, REG_RAX, REG_RCX,
};

use crate::{
    context::{copy_regs, current_goroutine, read_u64, state_of_key, Scratch},
    maps::{count, GOROUTINES, SAME_NODE_CONFIG, SAME_NODE_CONNS, SCRATCH},
};

/// Entry of `net/http.(*persistConn).roundTrip(pc *persistConn, req *transportRequest)`: RAX = pc.
#[uprobe]
pub fn gotel_same_node_client(ctx: ProbeContext) -> u32 {
    let _ = offer(&ctx);
    0
}

#[inline(always)]
fn offer(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    let cfg = SAME_NODE_CONFIG.get(s.slot)?;
    if cfg.enabled == 0 {
        return None;
    }
    let g = current_goroutine(&s.regs);
    let pc = s.regs[REG_RAX as usize];
    let st = unsafe { &*GOROUTINES.get_ptr(&g)? };
    let n = st.depth as usize;
    if n == 0 || n > MAX_FRAMES {
        return None;
    }
    let frame = &st.frames[frame_slot(n - 1)];
    if frame.probe_id != cfg.client_probe {
        return None; // not inside a traced client span
    }
    if conn_key(s, cfg, read_u64(pc.wrapping_add(cfg.pconn_conn as u64 + 8))?, false).is_none() {
        count(Counter::SameNodeUnreadable);
        return None;
    }
    store(s, cfg, &st.trace_id, frame.span_id, outgoing_sampled(st));
    Some(())
}

/// gRPC client side, from `gotel_grpc_write_header` (entry of `(*loopyWriter).writeHeader`, on
/// the connection's writer goroutine, before the HEADERS frame is encoded): the call's context
/// `call` (taken from its header fields, keyed at `createHeaderFields` on the caller's
/// goroutine) is stored under the connection of `loopy` and the frame's stream id. False when
/// this target does not store gRPC calls (then the socket path may want the context).
#[inline(always)]
pub fn offer_grpc(s: &mut Scratch, loopy: u64, stream: u64, call: &InjectContext) -> bool {
    let Some(cfg) = SAME_NODE_CONFIG.get(s.slot) else { return false };
    if cfg.enabled == 0 || cfg.grpc_client == 0 {
        return false;
    }
    let key = read_u64(loopy.wrapping_add(cfg.loopy_conn as u64 + 8)).and_then(|conn| conn_key(s, cfg, conn, false));
    match (key, h2_stream(stream)) {
        (Some(()), Some(id)) => {
            s.conn_key.stream = id;
            store(s, cfg, &call.trace_id, call.span_id, call.sampled);
        }
        _ => count(Counter::SameNodeUnreadable),
    }
    true
}

/// Stores a CLIENT span's context under `s.conn_key` (built by [`conn_key`], its `stream` set)
/// and, when the target's `client_key` says so, under the client address alone.
#[inline(always)]
fn store(s: &mut Scratch, cfg: &SameNodeConfig, trace_id: &[u8; 16], span_id: u64, sampled: u32) {
    let mut value = ConnContext {
        trace_id: *trace_id,
        span_id,
        stored_ns: unsafe { bpf_ktime_get_ns() },
        sampled,
        dest_port: s.conn_key.server_port,
        by_client: cfg.client_key as u16,
        dest_ip: s.conn_key.server_ip,
        other_ns: 0,
    };
    if SAME_NODE_CONNS.insert(&s.conn_key, &value, 0).is_ok() {
        count(Counter::SameNodeOffered);
    }
    if cfg.client_key != 0 {
        // Also under the client address alone, for a server behind a DNAT.
        s.conn_key.to_client_key(cfg.netns);
        let prev = unsafe { SAME_NODE_CONNS.get(&s.conn_key) };
        value.other_ns = other_ns(prev, &value.dest_ip, value.dest_port);
        let _ = SAME_NODE_CONNS.insert(&s.conn_key, &value, 0);
    }
}

/// Server side, from the HTTP server span's entry (registers in the scratch copy: RCX = the
/// `*http.response`): joins the client span stored for this request's connection, unless a
/// traced call is in progress (`depth`) or a `traceparent` was adopted already. A BPF global
/// function like the header-reading steps of `propagation::extract` (verified once, its own
/// stack frame): it finds the scratch area and the goroutine's record itself.
#[no_mangle]
#[inline(never)]
pub extern "C" fn gotel_same_node_join(depth: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // Off (the default) or inside a traced call: not even the goroutine's record is looked up.
    if !SAME_NODE_CONFIG.get(unsafe { (*scratch).slot }).is_some_and(|c| c.enabled != 0) || depth != 0 {
        return 0;
    }
    let key = current_goroutine(unsafe { &(*scratch).regs });
    let Some(st) = state_of_key(scratch, &key, false) else { return 0 };
    join_inner(scratch, st, depth).unwrap_or(0)
}

#[inline(always)]
fn join_inner(scratch: *mut Scratch, st: *mut GoroutineState, depth: u64) -> Option<u64> {
    let cfg = SAME_NODE_CONFIG.get(unsafe { (*scratch).slot })?;
    let st = unsafe { &mut *st };
    if cfg.enabled == 0 || cfg.response_conn == NO_OFFSET || depth != 0 || st.has_inherited & INHERIT_REMOTE != 0 {
        return None;
    }
    let s = unsafe { &mut *scratch };
    let rw = s.regs[REG_RCX as usize];
    let conn = read_u64(rw.wrapping_add(cfg.response_conn as u64))?;
    join_conn(s, st, cfg, read_u64(conn.wrapping_add(cfg.conn_rwc as u64 + 8))?, 0)?;
    Some(1)
}

/// gRPC server side, from `gotel_grpc_headers` (entry of `(*http2Server).operateHeaders`, on the
/// connection's reader goroutine; registers in the scratch copy: RAX = the `*http2Server`) when
/// the stream's header fields have no `traceparent`: joins the client call stored for this
/// connection and the HEADERS frame's stream (`frame`: the `*http2.MetaHeadersFrame`), adopted
/// for hand-off to the goroutine that handles the stream, as an incoming `traceparent` is. A
/// BPF global function like [`gotel_same_node_join`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn gotel_same_node_join_grpc(frame: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    join_grpc(scratch, frame).unwrap_or(0)
}

#[inline(always)]
fn join_grpc(scratch: *mut Scratch, frame: u64) -> Option<u64> {
    let cfg = SAME_NODE_CONFIG.get(unsafe { (*scratch).slot })?;
    if cfg.enabled == 0 || cfg.grpc_server == 0 {
        return None; // before any goroutine record is made: outside node mode, nothing
    }
    let key = current_goroutine(unsafe { &(*scratch).regs });
    let st = unsafe { &mut *state_of_key(scratch, &key, true)? };
    if st.depth != 0 || st.has_inherited & INHERIT_REMOTE != 0 {
        return None;
    }
    let s = unsafe { &mut *scratch };
    let t = s.regs[REG_RAX as usize];
    let headers = read_u64(frame.wrapping_add(cfg.meta_headers as u64))?;
    let Some(stream) = h2_stream(read_u64(headers.wrapping_add(cfg.frame_stream as u64))?) else {
        count(Counter::SameNodeUnreadable);
        return None;
    };
    if join_conn(s, st, cfg, read_u64(t.wrapping_add(cfg.h2server_conn as u64 + 8))?, stream)? {
        st.has_inherited |= INHERIT_HANDOFF;
    }
    Some(1)
}

/// The server's half for the connection `conn` (the data word of its `net.Conn`) and `stream`
/// (0: HTTP/1): the stored client context, if any and if the rules let it, becomes `st`'s remote
/// parent (true) and is removed. None when nothing was found or the connection is unreadable.
#[inline(always)]
fn join_conn(s: &mut Scratch, st: &mut GoroutineState, cfg: &SameNodeConfig, conn: u64, stream: u32) -> Option<bool> {
    if conn_key(s, cfg, conn, true).is_none() {
        count(Counter::SameNodeUnreadable);
        return None;
    }
    s.conn_key.stream = stream;
    // The full key first; the client address alone when it misses (a DNAT between the ends).
    let by_client_key = SAME_NODE_CONNS.get_ptr(&s.conn_key).is_none();
    if by_client_key {
        s.conn_key.to_client_key(cfg.netns);
    }
    let found = unsafe { &*SAME_NODE_CONNS.get_ptr(&s.conn_key)? };
    let decision = verdict(found, by_client_key, unsafe { bpf_ktime_get_ns() });
    if decision == Verdict::Ambiguous {
        count(Counter::SameNodeAmbiguous);
        return Some(false); // left for the other connection's server, which may be the one to ask
    }
    // Copied field by field into scratch memory (the record is used once: removed below).
    s.remote.trace_id = found.trace_id;
    s.remote.span_id = found.span_id;
    s.remote.trace_flags = found.sampled as u8;
    // The client stored the context under both keys: used under both (the other one only if it
    // still holds this context; another connection's record is left alone).
    if by_client_key {
        // The full key from the address the client dialled, then back to the client key.
        s.conn_key.to_full_key(found.dest_ip, found.dest_port, cfg.netns);
        remove_if_taken(s);
        s.conn_key.to_client_key(cfg.netns);
        let _ = SAME_NODE_CONNS.remove(&s.conn_key);
    } else {
        let stored_by_client = found.by_client != 0;
        let _ = SAME_NODE_CONNS.remove(&s.conn_key);
        if stored_by_client {
            s.conn_key.to_client_key(cfg.netns);
            remove_if_taken(s);
        }
    }
    if decision == Verdict::Expired {
        count(Counter::SameNodeExpired);
        return Some(false);
    }
    if !adopt_remote(st, &s.remote) {
        return Some(false);
    }
    count(Counter::SameNodeJoined);
    if by_client_key {
        count(Counter::SameNodeJoinedTranslated);
    }
    Some(true)
}

/// Removes the record under `s.conn_key` if it holds the context just taken (`s.remote`).
#[inline(always)]
fn remove_if_taken(s: &Scratch) {
    if unsafe { SAME_NODE_CONNS.get(&s.conn_key) }.is_some_and(|c| c.span_id == s.remote.span_id) {
        let _ = SAME_NODE_CONNS.remove(&s.conn_key);
    }
}

/// Builds the key of the TCP connection `conn` (the data word of a `net.Conn`: a
/// `*net.TCPConn`, or a `*tls.Conn` over one) in `s.conn_key`, in place (the stack of the
/// server-side chain is small): its local end is the client's (`server` false) or the server's.
#[inline(always)]
fn conn_key(s: &mut Scratch, cfg: &SameNodeConfig, conn: u64, server: bool) -> Option<()> {
    // A `*tls.Conn` holds the `net.Conn` it runs over in its field `conn`: one level unwrapped.
    let fd = match tcp_fd(cfg, conn) {
        Some(fd) => fd,
        None if cfg.tls_conn != NO_OFFSET => tcp_fd(cfg, read_u64(conn.wrapping_add(cfg.tls_conn as u64 + 8))?)?,
        None => return None,
    };
    let local = read_u64(fd.wrapping_add(cfg.fd_laddr as u64 + 8))?;
    let remote = read_u64(fd.wrapping_add(cfg.fd_raddr as u64 + 8))?;
    let (client, srv) = if server { (remote, local) } else { (local, remote) };
    let k = &mut s.conn_key;
    k.stream = 0;
    k._pad = 0;
    address(cfg, client, &mut k.client_ip, &mut k.client_port)?;
    address(cfg, srv, &mut k.server_ip, &mut k.server_port)?;
    k.set_netns(cfg.netns);
    Some(())
}

/// The `*netFD` of `conn` if it is a `*net.TCPConn` (its fields read like a TCP socket's).
#[inline(always)]
fn tcp_fd(cfg: &SameNodeConfig, conn: u64) -> Option<u64> {
    let fd = read_u64(conn.wrapping_add(cfg.tcpconn_fd as u64))?;
    let family = read_u64(fd.wrapping_add(cfg.fd_family as u64))?;
    let sotype = read_u64(fd.wrapping_add(cfg.fd_sotype as u64))?;
    is_tcp(family, sotype).then_some(fd)
}

/// A `*net.TCPAddr`'s IP (as 16 bytes) and port, written into `ip` and `port`.
#[inline(always)]
fn address(cfg: &SameNodeConfig, addr: u64, ip: &mut [u8; 16], port_out: &mut u16) -> Option<()> {
    let ip_ptr = read_u64(addr.wrapping_add(cfg.addr_ip as u64))?;
    let ip_len = read_u64(addr.wrapping_add(cfg.addr_ip as u64 + 8))?;
    *port_out = port(read_u64(addr.wrapping_add(cfg.addr_port as u64))?)?;
    if ip_len == 16 {
        unsafe { bpf_probe_read_user_buf(ip_ptr as *const u8, ip) }.ok()?;
    } else if ip_len == 4 {
        unsafe { bpf_probe_read_user_buf(ip_ptr as *const u8, &mut ip[..4]) }.ok()?;
    }
    widen_ip(ip, ip_len).then_some(())
}
