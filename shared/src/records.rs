//! What the kernel writes: the ring-buffer records user space reads ([`EventHeader`], then the
//! [`ValueHeader`]s of the captured values), and the state the kernel keeps in its maps between
//! probes: the traced calls in progress per goroutine ([`GoroutineState`]) and the contexts the
//! propagation paths hand from one hook to the next ([`InjectContext`], [`GrpcStreamKey`],
//! [`H2ConnKey`]). User space reads these (and removes an exited process's goroutine records)
//! but never fills them; what it fills for the kernel is in `config`.

use crate::traceparent;
#[cfg(doc)]
use crate::{Fetch, HandoffConfig, ProbePlan, SocketInjectConfig};

/// Size of the per-CPU scratch record the kernel builds before copying into the ring buffer.
pub const SCRATCH_SIZE: usize = 8192;

/// Kinds of ring-buffer records. Every record starts with [`EventHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A traced call returned: the complete span. Followed by captured result values.
    SpanEnd = 1,
    /// A traced call started and its probe captures arguments: followed by the values.
    /// Userspace keeps them until the matching `SpanEnd` (same `span_id`) or `Abandoned`.
    EntryValues = 2,
    /// A traced call was unwound without returning (panic then recover, `runtime.Goexit`).
    /// `end_ns` is when the kernel noticed.
    Abandoned = 3,
}

/// Header of every ring-buffer record, followed by `data_len` bytes of [`ValueHeader`] records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Index into `PROBES` (and the userspace plan) of the traced function.
    pub probe_id: u32,
    /// Host thread-group id (process) that made the call.
    pub tgid: u32,
    /// Host thread id, reported as `thread.id`.
    pub tid: u32,
    /// The goroutine (`runtime.g` address, R14 on amd64).
    pub goroutine: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at entry; userspace converts to wall clock.
    pub start_ns: u64,
    /// `bpf_ktime_get_ns` at return (`SpanEnd`) or when the unwinding was noticed (`Abandoned`).
    pub end_ns: u64,
    /// W3C trace id, random per root call or inherited (parent goroutine, HTTP server span).
    pub trace_id: [u8; 16],
    /// Span id of this call, random and non-zero.
    pub span_id: u64,
    /// Span id of the parent (enclosing traced call, or inherited context); 0 for a root.
    pub parent_span_id: u64,
    /// Offset of the RET instruction that fired, from the function start (`SpanEnd` only;
    /// saturated at 0xffff).
    pub ret_offset: u16,
    /// `SPAN_*` bits.
    pub flags: u16,
    /// Bytes of value records that follow this header.
    pub data_len: u32,
}

/// The parent span came from another process (an incoming `traceparent`).
pub const SPAN_PARENT_REMOTE: u16 = 1;
/// The trace was started elsewhere and marked sampled there.
pub const SPAN_TRACE_REMOTE_SAMPLED: u16 = 2;
/// The trace was started elsewhere and marked not sampled there.
pub const SPAN_TRACE_REMOTE_NOT_SAMPLED: u16 = 4;

/// One captured value inside an event's data, followed by `len` bytes of string payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ValueHeader {
    /// [`Fetch::slot`] of the value.
    pub slot: u16,
    /// `VALUE_*` status bits.
    pub flags: u16,
    /// Payload bytes following this header (string data), already bounded by `max_len`.
    pub len: u32,
    /// First value word: the integer, the string length, the length, the itab pointer.
    pub word0: u64,
    /// Second value word: the data pointer of an interface, the string pointer.
    pub word1: u64,
}

/// The target's memory could not be read (nil pointer on the path, paged-out memory).
pub const VALUE_UNREADABLE: u16 = 1;
/// A nil pointer was met on the field path.
pub const VALUE_NIL: u16 = 2;
/// The string payload was cut at `max_len`.
pub const VALUE_TRUNCATED: u16 = 4;

/// Traced calls remembered per goroutine. Deeper nesting of traced calls is counted
/// (`Counter::DepthOverflow`) and not traced; it never mis-pairs (returns are matched by depth).
pub const MAX_FRAMES: usize = 32;

/// Goroutine state key: the process and its `runtime.g` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goroutine: u64,
}

impl GoroutineKey {
    /// The key of `goroutine` (a `runtime.g` address, or any per-process address used as a key,
    /// such as an `*http.Request`) in process `tgid`.
    #[inline(always)]
    pub const fn new(tgid: u32, goroutine: u64) -> GoroutineKey {
        GoroutineKey { tgid, _pad: 0, goroutine }
    }
}

/// One live traced call of a goroutine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    /// Stack depth of the call: `g.stack.hi - SP` at the entry probe. Invariant under Go's
    /// stack copying, equal at entry and at RET, strictly larger for deeper calls.
    pub stack_depth: u64,
    pub start_ns: u64,
    pub span_id: u64,
    pub probe_id: u32,
    /// `FRAME_*` bits, set at entry, read by the fetches at return ([`Fetch::skip_if`]).
    pub flags: u32,
    /// Registers saved at entry ([`ProbePlan::save_regs`]).
    pub saved: [u64; 2],
}

/// Per-goroutine record of traced calls in progress (LRU hash `GOROUTINES`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoroutineState {
    /// Live frames in `frames` (a stack, top at `depth - 1`).
    pub depth: u32,
    /// `INHERIT_*` bits; non-zero when `inherited_*` holds a parent context (the spawning call's
    /// span, or an incoming `traceparent`).
    pub has_inherited: u32,
    /// `SPAN_TRACE_REMOTE_*` bits of the trace in progress.
    pub trace_flags: u32,
    pub _pad: u32,
    /// Trace id of the calls in progress (valid while depth > 0).
    pub trace_id: [u8; 16],
    /// Context a root call of this goroutine joins instead of starting a new trace.
    pub inherited_trace_id: [u8; 16],
    pub inherited_span_id: u64,
    pub frames: [Frame; MAX_FRAMES],
}

/// `GoroutineState::has_inherited` bits.
pub const INHERIT_SET: u32 = 1;
/// Used by the next root call only (an incoming request's context), cleared when it returns.
pub const INHERIT_ONE_SHOT: u32 = 2;
/// The inherited span is in another process.
pub const INHERIT_REMOTE: u32 = 4;
/// The remote trace is sampled (else not sampled), valid with INHERIT_REMOTE.
pub const INHERIT_SAMPLED: u32 = 8;
/// The context goes to the next goroutine this one starts (with INHERIT_ONE_SHOT there), and
/// is then cleared here: a gRPC request's headers are read on the connection's reader goroutine,
/// which then starts the goroutine that handles the stream.
pub const INHERIT_HANDOFF: u32 = 16;

/// Trace context to write into one outgoing request (`INJECT_BY_REQUEST`, keyed by the request's
/// URL pointer, see [`HandoffConfig::request_url_offset`]; `INJECT_PENDING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectContext {
    pub trace_id: [u8; 16],
    /// The CLIENT span, the callee's parent.
    pub span_id: u64,
    /// 1 = sampled.
    pub sampled: u32,
    /// 0 = waiting for the header write, 1 = armed (writer and `n_at_entry` valid).
    pub state: u32,
    /// `*bufio.Writer` of the connection.
    pub writer: u64,
    /// `bufio.Writer.n` when the request's own headers started to be written.
    pub n_at_entry: u64,
    /// `bpf_ktime_get_ns` when the request's writer took the context: the socket path refuses
    /// contexts older than [`SocketInjectConfig::ttl_ns`].
    pub stored_ns: u64,
}

impl InjectContext {
    /// The context both injection paths send, as `traceparent::format_traceparent_line` takes it.
    #[inline(always)]
    pub fn trace_context(&self) -> traceparent::TraceContext {
        traceparent::TraceContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            trace_flags: (self.sampled != 0) as u8,
        }
    }
}

/// Key of a gRPC stream's context between grpc-go's loopy writer and the socket
/// (`GRPC_INJECT_PENDING`): the process, the HTTP/2 stream id and the loopy goroutine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcStreamKey {
    pub tgid: u32,
    pub stream_id: u32,
    pub goroutine: u64,
}

/// One h2c client connection followed by the gRPC socket path (`H2_CONNS`), keyed by the
/// process and the connection's ports and remote address (SK_MSG has no socket cookie helper).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2ConnKey {
    pub tgid: u32,
    pub local_port: u32,
    pub remote_port: u32,
    pub remote_ip4: u32,
    pub remote_ip6: [u32; 4],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for GoroutineKey {}
    unsafe impl aya::Pod for GoroutineState {}
    unsafe impl aya::Pod for InjectContext {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line both paths send for a stored context (the socket path's inserted line, the
    /// memory path's appended one).
    #[test]
    fn traceparent_line_is_w3c() {
        use traceparent::{format_traceparent_line, TRACEPARENT_LINE_LEN};
        let mut trace_id = [0u8; 16];
        trace_id[0] = 0x0a;
        trace_id[15] = 0xff;
        let ctx = InjectContext { trace_id, span_id: 0x00f0_67aa_0ba9_02b7, sampled: 1, ..Default::default() };
        let mut line = [0u8; TRACEPARENT_LINE_LEN];
        format_traceparent_line(&mut line, &ctx.trace_context());
        assert_eq!(&line[..], &b"traceparent: 00-0a0000000000000000000000000000ff-00f067aa0ba902b7-01\r\n"[..]);
        let ctx = InjectContext { sampled: 0, ..ctx };
        format_traceparent_line(&mut line, &ctx.trace_context());
        assert_eq!(&line[65..], b"-00\r\n");
    }
}
