//! The pairing and context rules of the kernel programs, as pure functions over the records of
//! `lib.rs`, so that the kernel and user space (`calls_in_progress` at exit) run the same code
//! and the rules are unit-tested on the host.
//!
//! A goroutine's traced calls form a stack of [`Frame`]s. A frame is identified by its *stack
//! depth* `g.stack.hi - SP`: equal at entry and at RET, unchanged when Go copies the stack, and
//! larger for deeper calls. So a RET pops exactly its own frame, and a frame at least as deep as
//! a later probe hit was left without returning (panic then recover, `runtime.Goexit`).
//!
//! Everything here also runs in the BPF verifier: `#[inline(always)]`, no loops, frame indices
//! masked by [`frame_slot`], no reachable panic.
use crate::traceparent::TraceContext;
use crate::{
    EventHeader, EventKind, Frame, GoroutineKey, GoroutineState, COOKIE_AT_FUNC_START, INHERIT_HANDOFF,
    INHERIT_ONE_SHOT, INHERIT_REMOTE, INHERIT_SAMPLED, INHERIT_SET, MAX_FRAMES, SPAN_PARENT_REMOTE,
    SPAN_TRACE_REMOTE_NOT_SAMPLED, SPAN_TRACE_REMOTE_SAMPLED,
};

/// Frame index `i` masked into `0..MAX_FRAMES`. The volatile read stops LLVM from dropping the
/// mask when it can prove the bound from an earlier comparison that the verifier cannot follow.
#[inline(always)]
pub fn frame_slot(i: usize) -> usize {
    let v: usize = unsafe { core::ptr::read_volatile::<usize>(&i) };
    v & (MAX_FRAMES - 1)
}

/// Parent span of the call in frame `i` of the goroutine's stack: the enclosing frame, or for the
/// root frame the inherited context (spawning goroutine, incoming `traceparent`), else none (0).
#[inline(always)]
pub fn parent_of(st: &GoroutineState, i: usize) -> u64 {
    if i == 0 {
        if st.has_inherited != 0 {
            st.inherited_span_id
        } else {
            0
        }
    } else {
        st.frames[frame_slot(i.wrapping_sub(1))].span_id
    }
}

/// `SPAN_*` flags of the span in frame `i`: the trace's flags, plus [`SPAN_PARENT_REMOTE`] for
/// a root whose parent came from another process.
#[inline(always)]
pub fn span_flags(st: &GoroutineState, i: usize) -> u16 {
    let mut f = st.trace_flags as u16;
    if i == 0 && st.has_inherited & INHERIT_REMOTE != 0 {
        f |= SPAN_PARENT_REMOTE;
    }
    f
}

/// The frame is the call of probe `probe_id` at this stack depth: a RET there returns from it,
/// and an entry there is the same call re-run (after `runtime.morestack`).
#[inline(always)]
pub fn same_call(frame: &Frame, stack_depth: u64, probe_id: u32) -> bool {
    frame.stack_depth == stack_depth && frame.probe_id == probe_id
}

/// The frame was left without returning, seen from a probe hit at `stack_depth`: it is deeper,
/// or as deep when `inclusive` (an entry: a new call at the same depth means the old one is
/// gone; a RET at the same depth is the frame's own return, see [`same_call`]).
#[inline(always)]
pub fn unwound(frame: &Frame, stack_depth: u64, inclusive: bool) -> bool {
    frame.stack_depth > stack_depth || (frame.stack_depth == stack_depth && inclusive)
}

/// An entry probe that sits at the very function start (cookie [`COOKIE_AT_FUNC_START`]) fired
/// again for the call in `frame`: `runtime.morestack` grew the stack and re-ran the function from
/// its first instruction. Not a new call, and the frame was not unwound.
#[inline(always)]
pub fn morestack_reentry(frame: &Frame, stack_depth: u64, cookie: u64) -> bool {
    cookie & COOKIE_AT_FUNC_START != 0 && same_call(frame, stack_depth, cookie as u32)
}

/// The `sampled` word of a context gotel passes on for the goroutine's trace (an injected
/// `traceparent`, a gRPC call's, a same-node join's): 1 unless a remote parent said "not
/// sampled" (a trace gotel started, or one whose parent said nothing, is sampled).
#[inline(always)]
pub fn outgoing_sampled(st: &GoroutineState) -> u32 {
    (st.trace_flags & SPAN_TRACE_REMOTE_NOT_SAMPLED as u32 == 0) as u32
}

/// A root call (no frame yet) joins the goroutine's inherited context, if it has one: sets the
/// trace id and the trace flags and returns true. Otherwise returns false and the caller starts
/// a new trace (random id, flags 0).
#[inline(always)]
pub fn join_inherited(st: &mut GoroutineState) -> bool {
    if st.has_inherited == 0 {
        return false;
    }
    st.trace_id = st.inherited_trace_id;
    st.trace_flags = if st.has_inherited & INHERIT_REMOTE == 0 {
        st.trace_flags
    } else if st.has_inherited & INHERIT_SAMPLED != 0 {
        SPAN_TRACE_REMOTE_SAMPLED as u32
    } else {
        SPAN_TRACE_REMOTE_NOT_SAMPLED as u32
    };
    true
}

/// The context a goroutine created by `parent` starts with, written into `child` (depth 0):
/// the parent's innermost traced call, else the parent's own inherited context unless that was
/// for one request only. Returns false when there is nothing to inherit.
#[inline(always)]
pub fn inherit_from(parent: &GoroutineState, child: &mut GoroutineState) -> bool {
    let n = parent.depth as usize;
    child.depth = 0;
    if n > 0 && n <= MAX_FRAMES {
        child.has_inherited = INHERIT_SET;
        child.trace_flags = parent.trace_flags;
        child.inherited_trace_id = parent.trace_id;
        child.inherited_span_id = parent.frames[frame_slot(n.wrapping_sub(1))].span_id;
    } else if parent.has_inherited != 0 && parent.has_inherited & INHERIT_ONE_SHOT == 0 {
        child.has_inherited = parent.has_inherited;
        child.trace_flags = parent.trace_flags;
        child.inherited_trace_id = parent.inherited_trace_id;
        child.inherited_span_id = parent.inherited_span_id;
    } else {
        return false;
    }
    true
}

/// A goroutine `parent` starts while it holds a context to hand off (`INHERIT_HANDOFF`) gets it
/// for its next root call. `parent` keeps it (until its next request's headers replace or clear
/// it, see `propagation::grpc_extract`): the goroutine that starts first is not always the
/// request's handler. A GC cycle that begins in an allocation of the reader starts the
/// runtime's mark workers from it, on their own goroutines; with a one-shot hand-off one of them
/// took the context and the handler's span lost its parent (1 in about 3,000 calls, in the first
/// GC cycle). Mark workers run no traced call, so their copy is never used. Returns false (and
/// changes nothing) when there is no such context or a call is in progress in `parent`.
#[inline(always)]
pub fn hand_off(parent: &mut GoroutineState, child: &mut GoroutineState) -> bool {
    if parent.depth != 0 || parent.has_inherited & INHERIT_HANDOFF == 0 {
        return false;
    }
    child.depth = 0;
    child.has_inherited = parent.has_inherited & !INHERIT_HANDOFF;
    child.trace_flags = parent.trace_flags;
    child.inherited_trace_id = parent.inherited_trace_id;
    child.inherited_span_id = parent.inherited_span_id;
    true
}

/// An incoming request's context is adopted by a goroutine with no traced call in progress, for
/// its next root call only (the request's server span). Returns false when a call is in progress.
#[inline(always)]
pub fn adopt_remote(st: &mut GoroutineState, ctx: &TraceContext) -> bool {
    if st.depth != 0 {
        // Headers read inside a traced call (a client reading a response): not a request.
        return false;
    }
    st.has_inherited = INHERIT_SET | INHERIT_ONE_SHOT | INHERIT_REMOTE;
    if ctx.sampled() {
        st.has_inherited |= INHERIT_SAMPLED;
    }
    st.inherited_trace_id = ctx.trace_id;
    st.inherited_span_id = ctx.span_id;
    true
}

impl EventHeader {
    /// The header of a record about the call in frame `i` of goroutine `key` (thread `tid`):
    /// its span, parent and flags by the rules above. `end_ns` is 0 for `EntryValues`;
    /// `ret_offset` is the RET's offset for `SpanEnd`, else 0. `data_len` is set by the writer.
    #[inline(always)]
    pub fn for_frame(
        kind: EventKind,
        key: GoroutineKey,
        tid: u32,
        st: &GoroutineState,
        i: usize,
        end_ns: u64,
        ret_offset: u16,
    ) -> EventHeader {
        let f = &st.frames[frame_slot(i)];
        EventHeader {
            kind: kind as u32,
            probe_id: f.probe_id,
            tgid: key.tgid,
            tid,
            goroutine: key.goroutine,
            start_ns: f.start_ns,
            end_ns,
            trace_id: st.trace_id,
            span_id: f.span_id,
            parent_span_id: parent_of(st, i),
            ret_offset,
            flags: span_flags(st, i),
            data_len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> GoroutineState {
        GoroutineState {
            depth: 0,
            has_inherited: 0,
            trace_flags: 0,
            _pad: 0,
            trace_id: [0; 16],
            inherited_trace_id: [0; 16],
            inherited_span_id: 0,
            frames: [Frame::default(); MAX_FRAMES],
        }
    }

    /// A goroutine with calls at the given stack depths, span ids 100, 101, ...
    fn with_calls(depths: &[u64]) -> GoroutineState {
        let mut st = state();
        st.trace_id = [7; 16];
        for (i, &d) in depths.iter().enumerate() {
            st.frames[i] = Frame {
                stack_depth: d,
                start_ns: 1000 + i as u64,
                span_id: 100 + i as u64,
                probe_id: i as u32,
                ..Frame::default()
            };
        }
        st.depth = depths.len() as u32;
        st
    }

    #[test]
    fn frame_slots_stay_in_bounds() {
        assert_eq!(frame_slot(3), 3);
        assert_eq!(frame_slot(MAX_FRAMES), 0);
        assert_eq!(frame_slot(usize::MAX), MAX_FRAMES - 1);
    }

    #[test]
    fn the_parent_is_the_enclosing_call_or_the_inherited_span() {
        let mut st = with_calls(&[64, 128, 256]);
        assert_eq!(parent_of(&st, 0), 0, "a root without context has no parent");
        assert_eq!(parent_of(&st, 1), 100);
        assert_eq!(parent_of(&st, 2), 101);
        st.has_inherited = INHERIT_SET;
        st.inherited_span_id = 42;
        assert_eq!(parent_of(&st, 0), 42);
        assert_eq!(parent_of(&st, 1), 100, "only the root takes the inherited span");
    }

    #[test]
    fn only_a_root_with_a_remote_parent_is_marked_remote() {
        let mut st = with_calls(&[64, 128]);
        st.trace_flags = SPAN_TRACE_REMOTE_SAMPLED as u32;
        assert_eq!(span_flags(&st, 0), SPAN_TRACE_REMOTE_SAMPLED);
        st.has_inherited = INHERIT_SET | INHERIT_REMOTE;
        assert_eq!(span_flags(&st, 0), SPAN_TRACE_REMOTE_SAMPLED | SPAN_PARENT_REMOTE);
        assert_eq!(span_flags(&st, 1), SPAN_TRACE_REMOTE_SAMPLED);
    }

    #[test]
    fn a_return_matches_its_own_frame_only() {
        let st = with_calls(&[64, 128]);
        let top = &st.frames[1];
        assert!(same_call(top, 128, 1));
        assert!(!same_call(top, 128, 0), "another function at that depth");
        assert!(!same_call(top, 64, 1), "a recursive outer call of the same function");
    }

    #[test]
    fn deeper_frames_are_unwound_and_equal_ones_only_by_an_entry() {
        let st = with_calls(&[64, 128]);
        let top = &st.frames[1];
        assert!(unwound(top, 96, false), "a RET of an outer call: the inner one never returned");
        assert!(!unwound(top, 128, false), "its own RET");
        assert!(unwound(top, 128, true), "a new call at the same depth");
        assert!(!unwound(top, 200, true), "a nested call");
        assert!(!unwound(top, 200, false));
    }

    #[test]
    fn a_morestack_rerun_needs_the_function_start_cookie() {
        let st = with_calls(&[64, 128]);
        let top = &st.frames[1];
        assert!(morestack_reentry(top, 128, 1 | COOKIE_AT_FUNC_START));
        assert!(!morestack_reentry(top, 128, 1), "entry after the prologue: a new call");
        assert!(!morestack_reentry(top, 128, COOKIE_AT_FUNC_START), "another probe");
        assert!(!morestack_reentry(top, 96, 1 | COOKIE_AT_FUNC_START));
    }

    #[test]
    fn a_root_joins_the_inherited_trace() {
        let mut st = state();
        assert!(!join_inherited(&mut st));
        st.has_inherited = INHERIT_SET;
        st.trace_flags = SPAN_TRACE_REMOTE_NOT_SAMPLED as u32;
        st.inherited_trace_id = [9; 16];
        assert!(join_inherited(&mut st));
        assert_eq!(st.trace_id, [9; 16]);
        assert_eq!(st.trace_flags, SPAN_TRACE_REMOTE_NOT_SAMPLED as u32, "a local parent keeps its flags");
        st.has_inherited = INHERIT_SET | INHERIT_REMOTE | INHERIT_SAMPLED;
        assert!(join_inherited(&mut st));
        assert_eq!(st.trace_flags, SPAN_TRACE_REMOTE_SAMPLED as u32);
        st.has_inherited = INHERIT_SET | INHERIT_REMOTE;
        assert!(join_inherited(&mut st));
        assert_eq!(st.trace_flags, SPAN_TRACE_REMOTE_NOT_SAMPLED as u32);
    }

    #[test]
    fn a_new_goroutine_inherits_the_innermost_call_or_a_lasting_context() {
        let mut child = with_calls(&[10]);
        let parent = with_calls(&[64, 128]);
        assert!(inherit_from(&parent, &mut child));
        assert_eq!((child.depth, child.has_inherited, child.inherited_span_id), (0, INHERIT_SET, 101));
        assert_eq!(child.inherited_trace_id, [7; 16]);

        let mut parent = state();
        assert!(!inherit_from(&parent, &mut child), "nothing to inherit");
        parent.has_inherited = INHERIT_SET | INHERIT_REMOTE;
        parent.inherited_span_id = 5;
        assert!(inherit_from(&parent, &mut child));
        assert_eq!((child.has_inherited, child.inherited_span_id), (INHERIT_SET | INHERIT_REMOTE, 5));
        parent.has_inherited |= INHERIT_ONE_SHOT;
        assert!(!inherit_from(&parent, &mut child), "a request's context stays with that request");
    }

    #[test]
    fn a_remote_context_is_adopted_outside_traced_calls_only() {
        let mut st = state();
        let ctx = TraceContext { trace_id: [3; 16], span_id: 8, trace_flags: 1 };
        assert!(adopt_remote(&mut st, &ctx));
        assert_eq!(st.has_inherited, INHERIT_SET | INHERIT_ONE_SHOT | INHERIT_REMOTE | INHERIT_SAMPLED);
        assert_eq!((st.inherited_trace_id, st.inherited_span_id), ([3; 16], 8));
        let mut busy = with_calls(&[64]);
        assert!(!adopt_remote(&mut busy, &TraceContext { trace_flags: 0, ..ctx }));
        assert_eq!(busy.has_inherited, 0);
    }

    #[test]
    fn a_handed_off_context_goes_to_every_goroutine_started_until_the_next_request() {
        let mut reader = state();
        let ctx = TraceContext { trace_id: [3; 16], span_id: 8, trace_flags: 1 };
        assert!(adopt_remote(&mut reader, &ctx));
        let mut handler = with_calls(&[10]);
        assert!(!hand_off(&mut reader, &mut handler), "not marked for hand-off");
        reader.has_inherited |= INHERIT_HANDOFF;
        assert!(hand_off(&mut reader, &mut handler));
        assert_eq!(handler.has_inherited, INHERIT_SET | INHERIT_ONE_SHOT | INHERIT_REMOTE | INHERIT_SAMPLED);
        assert_eq!((handler.depth, handler.inherited_trace_id, handler.inherited_span_id), (0, [3; 16], 8));
        // A GC mark worker started first does not take it from the handler started next.
        let mut worker = state();
        assert!(hand_off(&mut reader, &mut worker));
        let mut later = state();
        assert!(hand_off(&mut reader, &mut later));
        assert_eq!((later.inherited_trace_id, later.inherited_span_id), ([3; 16], 8));
        // The next request's headers clear it (grpc_extract) before anything is handed off.
        reader.has_inherited = 0;
        let mut next = state();
        assert!(!hand_off(&mut reader, &mut next) && !inherit_from(&reader, &mut next));
        let mut busy = with_calls(&[64]);
        busy.has_inherited = INHERIT_SET | INHERIT_HANDOFF;
        assert!(!hand_off(&mut busy, &mut next), "not inside a traced call");
    }

    #[test]
    fn a_header_describes_its_frame() {
        let mut st = with_calls(&[64, 128]);
        st.has_inherited = INHERIT_SET | INHERIT_REMOTE;
        st.inherited_span_id = 55;
        st.trace_flags = SPAN_TRACE_REMOTE_SAMPLED as u32;
        let key = GoroutineKey::new(12, 0xc000);
        let h = EventHeader::for_frame(EventKind::SpanEnd, key, 13, &st, 1, 5000, 0x42);
        assert_eq!((h.kind, h.probe_id, h.tgid, h.tid, h.goroutine), (EventKind::SpanEnd as u32, 1, 12, 13, 0xc000));
        assert_eq!((h.start_ns, h.end_ns, h.span_id, h.parent_span_id), (1001, 5000, 101, 100));
        assert_eq!((h.trace_id, h.ret_offset, h.flags, h.data_len), ([7; 16], 0x42, SPAN_TRACE_REMOTE_SAMPLED, 0));
        let root = EventHeader::for_frame(EventKind::Abandoned, key, 0, &st, 0, 0, 0);
        assert_eq!((root.span_id, root.parent_span_id), (100, 55));
        assert_eq!(root.flags, SPAN_TRACE_REMOTE_SAMPLED | SPAN_PARENT_REMOTE);
    }
    #[test]
    fn outgoing_contexts_are_sampled_unless_the_remote_parent_said_not() {
        let mut st = state();
        assert_eq!(outgoing_sampled(&st), 1, "a trace gotel started");
        st.trace_flags = SPAN_TRACE_REMOTE_SAMPLED as u32;
        assert_eq!(outgoing_sampled(&st), 1);
        st.trace_flags = SPAN_TRACE_REMOTE_NOT_SAMPLED as u32;
        assert_eq!(outgoing_sampled(&st), 0);
    }
}
