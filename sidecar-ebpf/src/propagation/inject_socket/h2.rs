//! gRPC over plaintext HTTP/2 (h2c) for the socket path: which HEADERS frame of a message gets
//! `traceparent`. Reads only; the bytes are changed by `inject_socket::inject_h2` (the one
//! writer of socket bytes).
//!
//! Why this shape: grpc-go writes HEADERS frames on the connection's loopy-writer goroutine, not
//! on the caller's, and several streams' frames may leave in one `write(2)`. The caller's
//! goroutine (inside the CLIENT span of `grpc.client`) builds the call's header fields in
//! `(*http2Client).createHeaderFields`, which returns a `[]hpack.HeaderField`; loopy later calls
//! `(*loopyWriter).writeHeader(streamID, endStream, hf, onWrite)` with that same slice. So:
//! 1. `gotel_grpc_fields` (RETs of createHeaderFields) keys the innermost traced call's context
//!    by the slice's data pointer (`GRPC_INJECT_BY_FIELDS`), unless the fields already have a
//!    `traceparent` (the header block is encoded from exactly these fields, so that check is
//!    exact; more than `MAX_GRPC_HEADER_FIELDS` fields cannot be checked and are skipped too);
//! 2. `gotel_grpc_write_header` (entry of writeHeader, on loopy) moves it to
//!    {tgid, stream id, loopy g} (`GRPC_INJECT_PENDING`) and starts its lifetime;
//! 3. in SK_MSG (running on loopy's thread; g from fsbase) [`walk`] follows the connection's
//!    frames: `H2_CONNS` keeps, per connection, how many bytes of the next message still belong
//!    to the last frame (grpc-go's bufWriter flushes in the middle of frames), entered at the
//!    client preface. A HEADERS frame (type 1) with END_HEADERS, not PADDED, wholly inside the
//!    message, whose stream has a pending context becomes an injection point. A connection
//!    whose place is lost (unknown type, a frame header split between messages, more frames
//!    than walked) is dropped from `H2_CONNS`, counted, never guessed.
//!
//! With injection off and `join.same_node` on, steps 1 and 2 serve the same-node join instead:
//! at step 2 the context is stored under the connection's addresses and the stream id
//! (`propagation::same_node::offer_grpc`), where the server's `operateHeaders` finds it.
//!
//! Connections open before gotel attached (their preface was not seen, user space enrolled
//! them) and connections whose place was lost are resynchronised instead: a message is walked
//! strictly (`strict`: `FrameHeader::parse_strict`) and used only if its frames tile it
//! exactly (`gotel_shared::h2`'s module docs say why that is enough and safe).
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_loop},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    h2::{next_frame, Next, MAX_WALK},
    rules::{frame_slot, outgoing_sampled},
    Counter, GoroutineKey, GrpcStreamKey, InjectContext, MAX_FRAMES, MAX_GRPC_HEADER_FIELDS, PLAN_NOT_A_SPAN, REG_RAX,
    REG_RBX, REG_RDI,
};

use super::{note_target_tgid, INJECT_SOCKET_SCRATCH};
use crate::{
    context::{copy_regs, current_goroutine},
    maps::{
        count, GOROUTINES, GRPC_INJECT_BY_FIELDS, GRPC_INJECT_CONFIG, GRPC_INJECT_PENDING, INJECT_SOCKET_CONFIG, PROBES,
    },
    propagation::grpc_extract::find_traceparent,
};

/// Injections into one message (a batch of new streams); more waiting are counted, not sent.
pub const H2_MAX_INJECT: usize = 4;

/// Where one HEADERS frame gets the field.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Point {
    /// Offset of the frame header in the message.
    pub frame: u32,
    /// The frame's payload length.
    pub len: u32,
    pub ctx: InjectContext,
}

/// The frame walk's state (in `MsgScratch`, map memory, so the verifier checks the callback
/// once).
#[repr(C)]
pub struct Walk {
    /// Kernel address of the (pulled, linear) message bytes.
    pub data: u64,
    pub size: u32,
    /// The next frame header's offset.
    pub pos: u32,
    pub tgid: u32,
    pub lost: u32,
    /// Resynchronising: frame headers must be strictly well-formed, and no pending context is
    /// taken (the message may turn out not to be aligned).
    pub strict: u32,
    pub _pad: u32,
    pub g: u64,
    pub now: u64,
    pub ttl: u64,
    pub n: u64,
    pub points: [Point; H2_MAX_INJECT],
}

/// RETs of `(*http2Client).createHeaderFields(ctx, callHdr) ([]hpack.HeaderField, error)`:
/// RAX = fields, RBX = len, RDI = the error's itab (non-nil: no stream).
#[uprobe]
pub fn gotel_grpc_fields(ctx: ProbeContext) -> u32 {
    let _ = on_fields(&ctx);
    0
}

#[inline(always)]
fn on_fields(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    if s.regs[REG_RDI as usize] != 0 {
        return None;
    }
    let (fields, n) = (s.regs[REG_RAX as usize], s.regs[REG_RBX as usize]);
    let g = current_goroutine(&s.regs);
    let st = unsafe { &*GOROUTINES.get_ptr(&g)? };
    let depth = st.depth as usize;
    if depth == 0 || depth > MAX_FRAMES {
        return None;
    }
    // The innermost frame that is a span: built-in helpers (grpc.client's
    // newClientStreamWithParams, around this call) are frames too, but export nothing.
    let mut slot = frame_slot(depth - 1);
    let mut k = 1;
    while k < 4 && k < depth {
        let is_span = PROBES.get(st.frames[slot].probe_id).is_some_and(|p| p.flags & PLAN_NOT_A_SPAN == 0);
        if is_span {
            break;
        }
        k += 1;
        slot = frame_slot(depth - k);
    }
    let cfg = GRPC_INJECT_CONFIG.get(s.slot)?;
    if n > MAX_GRPC_HEADER_FIELDS as u64
        || find_traceparent(fields, n, cfg.field_size as u64, cfg.name_offset as u64) != 0
    {
        count(Counter::GrpcSocketSkippedPresent);
        return None;
    }
    let inject = InjectContext {
        trace_id: st.trace_id,
        span_id: st.frames[slot].span_id,
        sampled: outgoing_sampled(st),
        stored_ns: unsafe { bpf_ktime_get_ns() },
        ..InjectContext::default()
    };
    let _ = GRPC_INJECT_BY_FIELDS.insert(&GoroutineKey::new(g.tgid, fields), &inject, 0);
    Some(())
}

/// Entry of `(*loopyWriter).writeHeader(streamID uint32, endStream bool, hf
/// []hpack.HeaderField, onWrite func())`: RBX = streamID, RDI = hf's data pointer.
#[uprobe]
pub fn gotel_grpc_write_header(ctx: ProbeContext) -> u32 {
    let _ = on_write_header(&ctx);
    0
}

#[inline(always)]
fn on_write_header(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    let g = current_goroutine(&s.regs);
    note_target_tgid(g.tgid, s.slot);
    let by_fields = GoroutineKey::new(g.tgid, s.regs[REG_RDI as usize]);
    let mut inject = unsafe { *GRPC_INJECT_BY_FIELDS.get(&by_fields)? };
    let _ = GRPC_INJECT_BY_FIELDS.remove(&by_fields);
    // join.same_node (injection off): stored under the connection and stream id instead.
    let (loopy, stream) = (s.regs[REG_RAX as usize], s.regs[REG_RBX as usize]);
    if crate::propagation::same_node::offer_grpc(s, loopy, stream, &inject) {
        return Some(());
    }
    inject.stored_ns = unsafe { bpf_ktime_get_ns() };
    let key = GrpcStreamKey { tgid: g.tgid, stream_id: s.regs[REG_RBX as usize] as u32, goroutine: g.goroutine };
    let _ = GRPC_INJECT_PENDING.insert(&key, &inject, 0);
    Some(())
}

/// Follows one frame (a `bpf_loop` callback): stops at the message's end or when the place is
/// lost; records a HEADERS frame that has a pending context.
#[inline(never)]
extern "C" fn walk_one(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = INJECT_SOCKET_SCRATCH.get_ptr_mut(0) else { return 1 };
    let w = unsafe { &mut (*s).h2 };
    let mut h = None;
    if w.pos + 9 <= w.size {
        let Ok(b) = (unsafe { bpf_probe_read_kernel((w.data + w.pos as u64) as *const [u8; 9]) }) else {
            w.lost = 1;
            return 1;
        };
        h = Some(b);
    }
    let f = match next_frame(w.pos, w.size, h.as_ref(), w.strict != 0) {
        Next::End { .. } => return 1,
        Next::Lost => {
            w.lost = 1;
            return 1;
        }
        Next::Frame(f) => f,
    };
    let end = w.pos + 9 + f.len;
    if w.strict == 0 && f.ends_a_header_block() && end <= w.size {
        let key = GrpcStreamKey { tgid: w.tgid, stream_id: f.stream_id, goroutine: w.g };
        if let Some(p) = unsafe { GRPC_INJECT_PENDING.get(&key) } {
            let p = *p;
            let _ = GRPC_INJECT_PENDING.remove(&key);
            if w.now.wrapping_sub(p.stored_ns) > w.ttl {
                super::count_msg(Counter::SocketContextExpired);
            } else if !f.has_room() || w.n >= H2_MAX_INJECT as u64 {
                super::count_msg(Counter::GrpcSocketSkippedTooLong);
            } else {
                w.points[(w.n as usize) & (H2_MAX_INJECT - 1)] = Point { frame: w.pos, len: f.len, ctx: p };
                w.n += 1;
            }
        }
    }
    w.pos = end;
    0
}

/// Walks the frames of a message of `size` bytes at kernel address `data`, the first starting
/// at `start` (after the preface, or after the last message's unfinished frame); `strict`: a
/// resynchronising walk (well-formed headers only, no injection points). Returns the bytes of
/// the next message that still belong to this one's last frame, or None if the place was lost.
/// The injection points are in `w.points[..w.n]`.
#[inline(always)]
pub fn walk(w: &mut Walk, data: u64, size: u32, start: u32, strict: bool, tgid: u32, g: u64) -> Option<u32> {
    // The same for every slot: entry 0 holds it in every mode.
    let ttl = INJECT_SOCKET_CONFIG.get(0).map(|c| c.ttl_ns).unwrap_or(0);
    *w = Walk {
        data,
        size,
        pos: start,
        tgid,
        lost: 0,
        strict: strict as u32,
        _pad: 0,
        g,
        now: unsafe { bpf_ktime_get_ns() },
        ttl,
        n: 0,
        points: [Point { frame: 0, len: 0, ctx: InjectContext::default() }; H2_MAX_INJECT],
    };
    unsafe { bpf_loop(MAX_WALK, walk_one as *mut _, core::ptr::null_mut(), 0) };
    let s = unsafe { &*INJECT_SOCKET_SCRATCH.get_ptr(0)? };
    let w = &s.h2;
    if w.lost != 0 || w.pos < w.size {
        return None;
    }
    Some(w.pos - w.size)
}
