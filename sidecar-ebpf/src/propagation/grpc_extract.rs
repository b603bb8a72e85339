//! Incoming trace context of gRPC requests, read-only: `gotel_grpc_headers` at the entry of
//! grpc-go's `(*http2Server).operateHeaders(…, frame *http2.MetaHeadersFrame, …)`, which gets
//! the request's header fields already decoded from HPACK (`frame.Fields`, a
//! `[]hpack.HeaderField`). The program looks at the first `MAX_GRPC_HEADER_FIELDS` of them for
//! one named `traceparent` (HTTP/2 field names are lowercase) and checks its value with the same
//! rule as HTTP/1 header lines; metadata maps are never walked.
//!
//! operateHeaders runs on the connection's reader goroutine, which then starts the goroutine that
//! handles the stream: the context is adopted for hand-off (`INHERIT_HANDOFF`), and
//! `gotel_newproc_return` gives it to that goroutine, whose first traced call is the server span.
//! A stale context is dropped at the next HEADERS frame.
//!
//! Without a `traceparent`, `join.same_node` may know the stream's caller instead: the CLIENT
//! span a traced gRPC client on this node stored under the connection and stream id
//! (`propagation::same_node::gotel_same_node_join_grpc`), adopted for hand-off the same way.
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_loop},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    rules::adopt_remote,
    traceparent::{read_header_line, LineKind, HEADER_LINE_BUF, TRACEPARENT_NAME, TRACEPARENT_VALUE_LEN},
    Counter, INHERIT_HANDOFF, MAX_GRPC_HEADER_FIELDS,
};

use crate::{
    context::{copy_regs, current_goroutine, key_in_this_process, read_u64, state_of_key},
    maps::{count, GRPC_HEADERS_CONFIG, SCRATCH},
};

/// `traceparent`, the HTTP/2 field name.
const NAME: &[u8; 11] = b"traceparent";

/// State of the field search, shared with its `bpf_loop` callback.
#[repr(C)]
struct Search {
    fields: u64,
    field_size: u64,
    name_offset: u64,
    /// Address of the `traceparent` field, 0 until found.
    found: u64,
}

/// Whether header field `i` is named `traceparent` (then stops the loop).
#[inline(never)]
extern "C" fn check_name(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let search = unsafe { &mut *(ctx as *mut Search) };
    let field = search.fields.wrapping_add(i.wrapping_mul(search.field_size));
    let name_len = read_u64(field.wrapping_add(search.name_offset + 8)).unwrap_or(0);
    if name_len != NAME.len() as u64 {
        return 0;
    }
    let name_ptr = read_u64(field.wrapping_add(search.name_offset)).unwrap_or(0);
    let name = unsafe { bpf_probe_read_user::<[u8; 11]>(name_ptr as *const [u8; 11]) }.unwrap_or_default();
    if &name != NAME {
        return 0;
    }
    search.found = field;
    1
}

#[uprobe]
pub fn gotel_grpc_headers(ctx: ProbeContext) -> u32 {
    let _ = on_headers(&ctx);
    0
}

#[inline(always)]
fn on_headers(ctx: &ProbeContext) -> Option<()> {
    let scratch = copy_regs(ctx)?;
    let s = unsafe { &mut *scratch };
    let cfg = GRPC_HEADERS_CONFIG.get(s.slot)?;
    let key = current_goroutine(&s.regs);
    let frame = s.regs[(cfg.frame_reg & 31) as usize];
    let fields = read_u64(frame.wrapping_add(cfg.fields_offset as u64))?;
    let n = read_u64(frame.wrapping_add(cfg.fields_offset as u64 + 8))?;
    if let Some(st) = state_of_key(scratch, &key, false) {
        // A context this goroutine still holds from an earlier request is not this one's.
        let st = unsafe { &mut *st };
        if st.depth == 0 && st.has_inherited & INHERIT_HANDOFF != 0 {
            st.has_inherited = 0;
        }
    }
    let found = find_traceparent(fields, n, cfg.field_size as u64, cfg.name_offset as u64);
    if found == 0 {
        // No traceparent: the client call gotel stored for this stream, if any (join.same_node).
        crate::propagation::same_node::gotel_same_node_join_grpc(frame);
        return None;
    }
    let value_ptr = read_u64(found.wrapping_add(cfg.value_offset as u64))?;
    let value_len = read_u64(found.wrapping_add(cfg.value_offset as u64 + 8))?;
    if value_len != TRACEPARENT_VALUE_LEN as u64 {
        count(Counter::GrpcTraceparentInvalid);
        return None;
    }
    adopt_value(value_ptr, key.goroutine);
    Some(())
}

/// Checks the value at `value_ptr` as a header line (`traceparent:<value>`, the shared rule)
/// and adopts it for goroutine `g` to hand off. The line and the decoded context are in
/// scratch memory (`Scratch::buf`, `Scratch::remote`), not on the stack: Linux 6.1 allows 512
/// bytes for the program's frame plus this one's, and a local line and context took 456.
#[inline(never)]
fn adopt_value(value_ptr: u64, g: u64) -> i64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    let s = unsafe { &mut *scratch };
    let Some(line) = s.buf.first_chunk_mut::<HEADER_LINE_BUF>() else { return 0 };
    line[..TRACEPARENT_NAME.len()].copy_from_slice(TRACEPARENT_NAME);
    let value = &mut line[TRACEPARENT_NAME.len()..TRACEPARENT_NAME.len() + TRACEPARENT_VALUE_LEN];
    if unsafe { bpf_probe_read_user_buf(value_ptr as *const u8, value) }.is_err() {
        return 0;
    }
    // Volatile: as an unknown length the rule is the code `gotel_parse_traceparent` runs (a
    // constant one lets LLVM specialise it into more code).
    let len = unsafe { core::ptr::read_volatile(&(TRACEPARENT_NAME.len() + TRACEPARENT_VALUE_LEN)) };
    if read_header_line(line, len, &mut s.remote) != LineKind::Valid {
        count(Counter::GrpcTraceparentInvalid);
        return 0;
    }
    let Some(st) = state_of_key(scratch, &key_in_this_process(g), true) else { return 0 };
    let st = unsafe { &mut *st };
    let s = unsafe { &*scratch };
    if adopt_remote(st, &s.remote) {
        st.has_inherited |= INHERIT_HANDOFF;
        count(Counter::GrpcTraceparentAdopted);
    }
    1
}

/// The address of the first of `n` header fields named `traceparent`, or 0. Through bpf_loop
/// (the verifier checks one field, not every path through all of them), in a function of its
/// own so its state does not crowd the caller's stack.
#[inline(never)]
pub(crate) fn find_traceparent(fields: u64, n: u64, field_size: u64, name_offset: u64) -> u64 {
    let count_fields = if n < MAX_GRPC_HEADER_FIELDS as u64 { n as u32 } else { MAX_GRPC_HEADER_FIELDS };
    let mut search = Search { fields, field_size, name_offset, found: 0 };
    unsafe {
        bpf_loop(count_fields, check_name as *mut _, &mut search as *mut Search as *mut _, 0);
    }
    search.found
}
