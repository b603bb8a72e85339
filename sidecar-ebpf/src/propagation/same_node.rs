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
//! TLS connections are matched too: a `*tls.Conn` is unwrapped once to the `*net.TCPConn` it
//! runs over (its `conn` field), on both ends.
//!
//! Nothing here writes into the target or its traffic; reads only (`bpf_probe_read_user`).
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_buf},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    rules::{adopt_remote, frame_slot, outgoing_sampled},
    same_node::{is_tcp, other_ns, port, verdict, widen_ip, ConnContext, SameNodeConfig, Verdict, NO_OFFSET},
    Counter, GoroutineState, INHERIT_REMOTE, MAX_FRAMES, REG_RAX, REG_RCX,
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
    let mut value = ConnContext {
        trace_id: st.trace_id,
        span_id: frame.span_id,
        stored_ns: unsafe { bpf_ktime_get_ns() },
        sampled: outgoing_sampled(st),
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
    Some(())
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
    if cfg.enabled == 0 || depth != 0 || st.has_inherited & INHERIT_REMOTE != 0 {
        return None;
    }
    let s = unsafe { &mut *scratch };
    let rw = s.regs[REG_RCX as usize];
    let conn = read_u64(rw.wrapping_add(cfg.response_conn as u64))?;
    if conn_key(s, cfg, read_u64(conn.wrapping_add(cfg.conn_rwc as u64 + 8))?, true).is_none() {
        count(Counter::SameNodeUnreadable);
        return None;
    }
    // The full key first; the client address alone when it misses (a DNAT between the ends).
    let by_client_key = SAME_NODE_CONNS.get_ptr(&s.conn_key).is_none();
    if by_client_key {
        s.conn_key.to_client_key(cfg.netns);
    }
    let found = unsafe { &*SAME_NODE_CONNS.get_ptr(&s.conn_key)? };
    let decision = verdict(found, by_client_key, unsafe { bpf_ktime_get_ns() });
    if decision == Verdict::Ambiguous {
        count(Counter::SameNodeAmbiguous);
        return None; // left for the other connection's server, which may be the one to ask
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
        return None;
    }
    if adopt_remote(st, &s.remote) {
        count(Counter::SameNodeJoined);
        if by_client_key {
            count(Counter::SameNodeJoinedTranslated);
        }
    }
    Some(1)
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
