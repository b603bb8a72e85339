//! The client side of `GOTEL_PROPAGATION=inject`, shared by both writers (`inject_memory`,
//! `inject_socket`): a CLIENT span's context is carried to the goroutine that writes its request.
//! Nothing here writes into the target or changes what it sends.
//!
//! 1. `gotel_entry` of an HTTP client span whose plan has `PLAN_INJECT_CONTEXT` calls
//!    [`offer_context`]: the span's context is stored under the request's `*url.URL`, not the
//!    `*http.Request`, because `Transport.roundTrip` writes a shallow copy of a request that has
//!    a body (`setupRewindBody`, so POSTs were missed); the copy shares the URL.
//! 2. `gotel_request_write` (entry of `net/http.(*Request).write`, on the connection's writer
//!    goroutine) moves it to that goroutine (`INJECT_PENDING`, keyed by `{tgid, g}`) and starts
//!    its lifetime (`stored_ns`, which the socket path checks). The memory path arms it there;
//!    the socket path takes it when the goroutine's write reaches the socket. It also records
//!    the process's kernel tgid for the socket path (`inject_socket::note_target_tgid`).
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::uprobe, programs::ProbeContext};
use gotel_shared::{rules::outgoing_sampled, GoroutineKey, GoroutineState, InjectContext, REG_RAX};

use super::inject_socket::note_target_tgid;
use crate::{
    context::{copy_regs, current_goroutine, read_u64},
    maps::{HANDOFF_CONFIG, INJECT_BY_REQUEST, INJECT_PENDING},
};

/// The request's `*url.URL`, the key of its context (see the module doc).
#[inline(always)]
fn request_key(tgid: u32, request: u64) -> Option<GoroutineKey> {
    let url_offset = HANDOFF_CONFIG.get(crate::maps::slot())?.request_url_offset as u64;
    Some(GoroutineKey::new(tgid, read_u64(request.wrapping_add(url_offset))?))
}

/// Step 1: the CLIENT span `span_id` just started (at `now`) for the `*http.Request` at
/// `request`; the goroutine that writes the request (http.persistConn.writeLoop) picks its
/// context up there.
#[inline(always)]
pub fn offer_context(tgid: u32, st: &GoroutineState, span_id: u64, request: u64, now: u64) {
    let ctx = InjectContext {
        trace_id: st.trace_id,
        span_id,
        sampled: outgoing_sampled(st),
        state: 0,
        writer: 0,
        n_at_entry: 0,
        stored_ns: now,
    };
    if let Some(key) = request_key(tgid, request) {
        let _ = INJECT_BY_REQUEST.insert(&key, &ctx, 0);
    }
}

/// Step 2, entry of `net/http.(*Request).write(r *Request, w io.Writer, ...)` (RAX = r): if the
/// request (found by its URL pointer, shared with the copy roundTrip writes) carries a context
/// to inject, the current goroutine is the one writing it.
#[uprobe]
pub fn gotel_request_write(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let s = unsafe { &mut *copy_regs(&ctx)? };
        let g = current_goroutine(&s.regs);
        // Before the request is looked up: a write on a connection enrolled from user space
        // (open before gotel attached) needs the process's number even if it never dials.
        note_target_tgid(g.tgid, s.slot);
        let req = request_key(g.tgid, s.regs[REG_RAX as usize])?;
        let mut ctx = unsafe { *INJECT_BY_REQUEST.get(&req)? };
        let _ = INJECT_BY_REQUEST.remove(&req);
        ctx.stored_ns = unsafe { bpf_ktime_get_ns() }; // the socket path's lifetime starts here
        let _ = INJECT_PENDING.insert(&g, &ctx, 0);
        Some(())
    })();
    0
}
