//! Pairing calls: `gotel_entry` at the entry of every traced function pushes a frame,
//! `gotel_return` at each of its RET instructions pops it and emits the span. Never a uretprobe:
//! Go moves stacks, and a uretprobe's hijacked return address then crashes the program.
//!
//! Frames are matched by stack depth (the rules and their tests are in `gotel_shared::rules`):
//! before pushing or popping, frames the goroutine left without returning (panic then recover,
//! `runtime.Goexit`) are popped and reported as `Abandoned`, so every call gives exactly one
//! record. The unwinding runs in `bpf_loop` so the verifier checks one pop, not thirty-two.
use aya_ebpf::{helpers::generated::bpf_loop, macros::uprobe, programs::ProbeContext};
use gotel_shared::{
    rules::{frame_slot, join_inherited, morestack_reentry, same_call, unwound},
    Counter, EventHeader, EventKind, Frame, GoroutineKey, GoroutineState, COOKIE_STARTS_AT_RETURN, INHERIT_ONE_SHOT,
    MAX_FRAMES, NO_REG, PLAN_ENDS_AT_ENTRY, PLAN_HAS_ENTRY_FETCH, PLAN_INJECT_CONTEXT, PLAN_SCAN_HEADERS,
};

use crate::{
    capture::{emit, At},
    context::{hit, random_trace_id, random_u64, state_of, Hit},
    maps::{count, GOROUTINES, PROBES},
    propagation::{extract::scan_request_headers, handoff::offer_context},
};

#[uprobe]
pub fn gotel_entry(ctx: ProbeContext) -> u32 {
    let _ = on_entry(&ctx, false);
    0
}

/// `gotel_entry` for the HTTP server span (`net/http.serverHandler.ServeHTTP`, plan flag
/// `PLAN_SCAN_HEADERS`): also reads the request's `traceparent` and `User-Agent`. A program of
/// its own so that the header code is verified only when the HTTP server unit is on and
/// `gotel_entry`, at every traced function, stays small.
#[uprobe]
pub fn gotel_http_entry(ctx: ProbeContext) -> u32 {
    let _ = on_entry(&ctx, true);
    0
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext, http_server: bool) -> Option<()> {
    let h = hit(ctx)?;
    count(Counter::Entries);
    let probe_id = gotel_shared::cookie_probe(h.cookie);
    let st = unsafe { &mut *state_of(&h, true)? };
    unwind(&h, st, true);
    let n = st.depth as usize;
    if n > MAX_FRAMES {
        return None;
    }
    if n > 0 && same_call(&st.frames[frame_slot(n.wrapping_sub(1))], h.stack_depth, probe_id) {
        count(Counter::MorestackReentry);
        return Some(());
    }
    if n >= MAX_FRAMES {
        count(Counter::DepthOverflow);
        return Some(());
    }
    let plan = PROBES.get(probe_id);
    let mut flags = 0u32;
    if http_server && plan.is_some_and(|p| p.flags & PLAN_SCAN_HEADERS != 0) {
        // The HTTP server span: its request's traceparent, before the root joins a context.
        flags = scan_request_headers(&h, st, n);
        // The entry's own fetches choose between the request's fields and the block's.
        unsafe { (*h.scratch).frame_flags = flags };
    }
    if n == 0 && !join_inherited(st) {
        st.trace_id = random_trace_id();
        st.trace_flags = 0;
    }
    let span_id = random_u64();
    let mut saved = [0u64; 2];
    if let Some(plan) = plan {
        let regs = unsafe { &(*h.scratch).regs };
        if plan.save_regs[0] != NO_REG {
            saved[0] = regs[(plan.save_regs[0] & 31) as usize];
        }
        if plan.save_regs[1] != NO_REG {
            saved[1] = regs[(plan.save_regs[1] & 31) as usize];
        }
    }
    st.frames[frame_slot(n)] = Frame { stack_depth: h.stack_depth, start_ns: h.now, span_id, probe_id, flags, saved };
    st.depth = (n + 1) as u32;
    if let Some(plan) = plan {
        if plan.flags & PLAN_INJECT_CONTEXT != 0 {
            offer_context(h.key.tgid, st, span_id, saved[0], h.now);
        }
        if plan.flags & PLAN_HAS_ENTRY_FETCH != 0 {
            let hdr = EventHeader::for_frame(EventKind::EntryValues, h.key, h.tid, st, n, 0, 0);
            emit(&hdr, At::Entry(h.sp));
        }
        if plan.flags & PLAN_ENDS_AT_ENTRY != 0 {
            // A helper or closer that reads nothing at return: no RET is trapped, it ends here.
            end_frame(&h, st, frame_slot(n), 0, At::Nothing);
        }
    }
    Some(())
}

#[uprobe]
pub fn gotel_return(ctx: ProbeContext) -> u32 {
    let _ = on_return(&ctx);
    0
}

#[inline(always)]
fn on_return(ctx: &ProbeContext) -> Option<()> {
    let h = hit(ctx)?;
    let probe_id = gotel_shared::cookie_probe(h.cookie);
    let starts_here = h.cookie & COOKIE_STARTS_AT_RETURN != 0;
    let Some(st) = state_of(&h, false) else {
        if !starts_here {
            count(Counter::UnmatchedReturn);
        }
        return None;
    };
    let st = unsafe { &mut *st };
    unwind(&h, st, false);
    let n = st.depth as usize;
    if n > MAX_FRAMES {
        return None;
    }
    if starts_here {
        // A helper that reads only at return (its entry is not trapped): its call begins and
        // ends here, under the enclosing call, the one its captures are for.
        if n == 0 || n >= MAX_FRAMES {
            return None;
        }
        let i = frame_slot(n);
        let span_id = random_u64();
        st.frames[i] =
            Frame { stack_depth: h.stack_depth, start_ns: h.now, span_id, probe_id, flags: 0, saved: [0; 2] };
        end_frame(&h, st, i, (h.cookie >> 48) as u16, At::Return(h.sp));
        return Some(());
    }
    let i = frame_slot(n.wrapping_sub(1));
    if n == 0 || !same_call(&st.frames[i], h.stack_depth, probe_id) {
        count(Counter::UnmatchedReturn);
        return None;
    }
    end_frame(&h, st, i, (h.cookie >> 48) as u16, At::Return(h.sp));
    Some(())
}

/// Pops frame `i` (the top one) and emits its span's end, with the captures `at` names.
/// `ret_site`: the RET's offset in the function (0 when the call ends at entry).
#[inline(always)]
fn end_frame(h: &Hit, st: &mut GoroutineState, i: usize, ret_site: u16, at: At) {
    st.depth = i as u32;
    count(Counter::Returns);
    unsafe {
        (*h.scratch).saved = st.frames[i].saved;
        (*h.scratch).frame_flags = st.frames[i].flags;
    }
    let hdr = EventHeader::for_frame(EventKind::SpanEnd, h.key, h.tid, st, i, h.now, ret_site);
    emit(&hdr, at);
    root_done(st, i);
    if i == 0 && st.has_inherited == 0 && !keeps_record(st.frames[0].probe_id) {
        // Nothing left to remember for this goroutine: keep the map small.
        let _ = GOROUTINES.remove(&h.key);
    }
}

/// After frame `i` was popped (returned, or abandoned): when it was the root call, a context
/// meant for one request (an incoming `traceparent`, a hand-off) has been used, and the next
/// root call on this goroutine must not join it. Also when the root was abandoned (a handler
/// that panicked, its connection goroutine gone): its g, reused without `runtime.newproc1`'s
/// probe (goroutine parents off) by a goroutine whose first call unwinds the old frames, would
/// otherwise start its own request inside the previous one's trace.
#[inline(always)]
fn root_done(st: &mut GoroutineState, i: usize) {
    if i == 0 && st.has_inherited & INHERIT_ONE_SHOT != 0 {
        st.has_inherited = 0;
    }
}

/// Whether a root call of `probe_id` leaves its goroutine's record in place when it returns:
/// the HTTP server span's, whose goroutine (the connection's) usually serves the next request
/// on the connection, and would otherwise insert its record (a 1.6 KB copy into the LRU map)
/// and remove it again for every request. A record with depth 0 and nothing inherited is
/// the same to every reader as none (a fresh record is that; `state_of`, the unwinding, the
/// hand-off readers and `gotel_newproc_return`'s g-reuse check all look at `depth` or
/// `has_inherited`); the g of an ended connection is cleaned up when a goroutine reuses it
/// (`gotel_newproc_return`) or by the LRU.
#[inline(always)]
fn keeps_record(probe_id: u32) -> bool {
    PROBES.get(probe_id).is_some_and(|p| p.flags & PLAN_SCAN_HEADERS != 0)
}

/// State of the unwinding loop, shared with its `bpf_loop` callback.
#[repr(C)]
struct UnwindLoop {
    key: GoroutineKey,
    stack_depth: u64,
    cookie: u64,
    now: u64,
    tid: u32,
    inclusive: u32,
}

/// Pops frames deeper than `stack_depth` (or as deep, when `inclusive`): calls that were
/// unwound without returning (panic then recover, Goexit). Each is reported as abandoned.
/// The top frame `st` has is looked at first: almost always it is still live, and the loop
/// (a callback and a map lookup) is not started.
#[inline(always)]
fn unwind(h: &Hit, st: &GoroutineState, inclusive: bool) {
    let n = st.depth as usize;
    if n == 0 || n > MAX_FRAMES {
        return;
    }
    let f = &st.frames[frame_slot(n - 1)];
    if !unwound(f, h.stack_depth, inclusive) || (inclusive && morestack_reentry(f, h.stack_depth, h.cookie)) {
        return;
    }
    unwind_goroutine(h.key, h.stack_depth, h.cookie, h.now, h.tid, inclusive);
}

/// [`unwind`] for any goroutine: with depth 0 and `inclusive`, every frame it has (a reused g).
#[inline(always)]
pub fn unwind_goroutine(key: GoroutineKey, stack_depth: u64, cookie: u64, now: u64, tid: u32, inclusive: bool) {
    let mut ctx = UnwindLoop { key, stack_depth, cookie, now, tid, inclusive: inclusive as u32 };
    unsafe {
        bpf_loop(MAX_FRAMES as u32, unwind_one as *mut _, &mut ctx as *mut UnwindLoop as *mut _, 0);
    }
}

#[inline(never)]
extern "C" fn unwind_one(_i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &*(ctx as *const UnwindLoop) };
    let key = c.key;
    let (depth, cookie, now, tid, inclusive) = (c.stack_depth, c.cookie, c.now, c.tid, c.inclusive != 0);
    let Some(st) = GOROUTINES.get_ptr_mut(&key) else { return 1 };
    let st = unsafe { &mut *st };
    let n = st.depth as usize;
    if n == 0 || n > MAX_FRAMES {
        return 1;
    }
    let i = frame_slot(n.wrapping_sub(1));
    let f = &st.frames[i];
    if !unwound(f, depth, inclusive) || (inclusive && morestack_reentry(f, depth, cookie)) {
        return 1;
    }
    count(Counter::Abandoned);
    let hdr = EventHeader::for_frame(EventKind::Abandoned, key, tid, st, i, now, 0);
    st.depth = i as u32;
    root_done(st, i);
    emit(&hdr, At::Nothing);
    0
}
