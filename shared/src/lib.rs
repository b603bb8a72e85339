//! Records that cross the kernel boundary, shared by `sidecar-ebpf` (writer) and `sidecar`
//! (reader). Everything is `#[repr(C)]`, naturally aligned and free of implicit padding, so both
//! sides agree on the layout byte for byte. The `user` feature adds `aya::Pod` for the loader.
//!
//! Beside the records: [`rules`] (pairing, parents, span flags, the event header),
//! [`traceparent`] (parse and format) and [`names`] (program and map names), pure functions
//! that both sides call and that are tested on the host.
#![no_std]

pub mod h2;
pub mod header_block;
pub mod header_map;
pub mod names;
pub mod rules;
pub mod same_node;
pub mod traceparent;

/// Traced calls remembered per goroutine. Deeper nesting of traced calls is counted
/// (`Counter::DepthOverflow`) and not traced; it never mis-pairs (returns are matched by depth).
pub const MAX_FRAMES: usize = 32;
/// Values captured per probe (arguments at entry plus results at return).
pub const MAX_FETCHES: usize = 16;
/// Pointer hops in one field path (`a.B.C.D`).
pub const MAX_HOPS: usize = 4;
/// Upper bound of bytes copied from the target for one string or `[]byte` value.
pub const MAX_STR: usize = 256;
/// Size of the per-CPU scratch record the kernel builds before copying into the ring buffer.
pub const SCRATCH_SIZE: usize = 8192;

/// The attach cookie of every gotel uprobe: which probe fired and where.
/// Bits 0..16: probe id (index into `PROBES`). Bits 16..32: the target's slot ([`cookie_slot`]).
/// Bits 32..48: [`COOKIE_*`] flags. RET probes: bits 48..64, the RET's offset in the function.
pub const COOKIE_PROBE_MASK: u64 = 0xffff;
/// Where the slot starts in the cookie.
pub const COOKIE_SLOT_SHIFT: u32 = 16;
/// Targets one set of kernel programs serves at once (node mode: every traced process shares
/// one loaded object, each with a slot that indexes the per-target config arrays and counters;
/// a single target is slot 0). The arrays are sized by user space: 1 outside node mode.
pub const MAX_SLOTS: u32 = 1024;
// A slot must fit the cookie's 16 bits.
const _: () = assert!(MAX_SLOTS <= 1 << 16);

/// The probe id of an attach cookie (an index into `PROBES`, unique across targets).
#[inline(always)]
pub const fn cookie_probe(cookie: u64) -> u32 {
    (cookie & COOKIE_PROBE_MASK) as u32
}

/// The target slot of an attach cookie.
#[inline(always)]
pub const fn cookie_slot(cookie: u64) -> u32 {
    ((cookie >> COOKIE_SLOT_SHIFT) & 0xffff) as u32
}

/// The attach cookie's low 32 bits for probe `probe` of the target in `slot`.
#[inline(always)]
pub const fn cookie_of(slot: u32, probe: u32) -> u64 {
    ((slot as u64) << COOKIE_SLOT_SHIFT) | (probe as u64 & COOKIE_PROBE_MASK)
}

pub const COOKIE_ENTRY: u64 = 1 << 32;
/// The entry probe sits at the very first instruction (no stack-check prologue found), so a
/// `runtime.morestack` re-entry is possible and the kernel de-duplicates it.
pub const COOKIE_AT_FUNC_START: u64 = 1 << 33;
pub const COOKIE_RETURN: u64 = 1 << 34;
/// With [`COOKIE_RETURN`]: a built-in helper whose captures are all read at return, so its entry
/// is not trapped; `gotel_return` pushes its frame and ends it at once (one trap per call).
pub const COOKIE_STARTS_AT_RETURN: u64 = 1 << 41;
/// `runtime.newproc1` entry / return: goroutine creation (ancestry and g reuse).
pub const COOKIE_NEWPROC_ENTRY: u64 = 1 << 35;
pub const COOKIE_NEWPROC_RETURN: u64 = 1 << 36;
// 1 << 37 is free: it marked the per-header-line hook the server span's own read replaced.
/// Injection hooks: entry of `net/http.(*Request).write`, entry and RETs of
/// `net/http.Header.writeSubset`.
pub const COOKIE_REQUEST_WRITE: u64 = 1 << 38;
pub const COOKIE_HEADER_WRITE_ENTRY: u64 = 1 << 39;
pub const COOKIE_HEADER_WRITE_RETURN: u64 = 1 << 40;
/// The entry of grpc-go's `(*http2Server).operateHeaders` (`gotel_grpc_headers`).
pub const COOKIE_GRPC_HEADERS: u64 = 1 << 44;

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

/// Where a value's first words come from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// `regs[0..nregs]` are pt_regs slots holding the value's words (Go register ABI).
    Registers = 0,
    /// The value's address is SP + `stack_offset` (stack-assigned argument or result).
    Stack = 1,
    /// `regs[0..nregs]` index (0 or 1) the words saved at entry ([`ProbePlan::save_regs`]):
    /// lets the RET probes read through an argument pointer (a request's fields after the
    /// handler ran), since argument registers are reused by then.
    Saved = 2,
}

/// How the final words are turned into an attribute value.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Integer of `size` bytes (1, 2, 4, 8); userspace applies the sign.
    Int = 0,
    /// Words: (ptr, len): the kernel copies up to `max_len` bytes of the string data.
    String = 1,
    /// Words: (ptr, len) or (map pointer): reported as the length (`len(x)`).
    Len = 2,
    /// Words: (map pointer): `len(m)` is the first word of the map header (hmap.count and
    /// the Swiss-table Map.used alike).
    MapLen = 3,
    /// Words: (itab or type pointer, data pointer). The kernel also tries the string at the
    /// start of the data (errors.errorString.s, fmt.wrapError.msg) for userspace to use
    /// when the dynamic type is one it knows, unless the fetch's `max_len` is 0 (userspace
    /// shows only the type: two reads and up to `MAX_STR` bytes saved).
    Interface = 4,
}

/// One value to capture, resolved from a user expression by `sidecar::plan`.
///
/// Reading: first the root gives either register words or an address. Each `hops[i]` for
/// `i < nhops` adds an offset to the current address (or to the pointer in the first
/// register word) and, except for the last hop, loads the pointer stored there. The value
/// words are then read from the final address (or taken from the registers when `nhops == 0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Fetch {
    /// A [`Root`] value.
    pub root: u8,
    /// A [`ValueKind`] value.
    pub kind: u8,
    /// Size in bytes of an `Int`, 1..=8.
    pub size: u8,
    /// Number of pt_regs slots in `regs` used when `root == Registers` and `nhops == 0`.
    pub nregs: u8,
    /// pt_regs slot index (see `REG_*`) of each word.
    pub regs: [u8; 2],
    /// Number of valid entries in `hops`.
    pub nhops: u8,
    /// 1 = captured at the RET probes (results), 0 = at entry (arguments).
    pub at_return: u8,
    /// Root::Stack: offset from SP at the probe (SP points at the return address).
    pub stack_offset: i32,
    /// Upper bound of string bytes to copy (<= MAX_STR); for `ValueKind::Interface`, 0 = the
    /// words only (the dynamic value's string is not read).
    pub max_len: u16,
    /// Index of the attribute in the probe's userspace plan.
    pub slot: u16,
    /// Field offsets along the path, see the type's doc.
    pub hops: [i32; MAX_HOPS],
    /// `FRAME_*` bits: the fetch is skipped at return when the frame has one of them (its
    /// value is then absent from the record, not unreadable).
    pub skip_if: u8,
    pub _pad: [u8; 3],
}

/// A frame bit: the HTTP server span's request line and `Host` were found in the read buffer
/// (`header_block`): the method, target and host come from those bytes, and the fetches that
/// read them from `*http.Request` are skipped.
pub const FRAME_LINE: u8 = 2;
/// A frame bit: they were not (or the request is not HTTP/1): the fetches from the buffer's
/// lines are skipped, the `*http.Request` ones run.
pub const FRAME_NO_LINE: u8 = 4;
/// A frame bit: the HTTP server span's request is known to be HTTP/1 (its `ProtoMajor`, read
/// by the header scan at entry, is 1). Its HTTP/2 status read is skipped at return: on an
/// HTTP/1 writer the HTTP/2 writer's field path would only read an unrelated field.
pub const FRAME_HTTP1: u8 = 1;

/// Per-probe instructions, the `PROBES` array value at index probe id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProbePlan {
    /// Valid entries in `fetches`.
    pub nfetches: u32,
    /// Bitmask: bit 0 = some fetch at entry, bit 1 = some fetch at return.
    pub flags: u32,
    /// pt_regs slots copied into the frame at entry, for `Root::Saved` fetches at return;
    /// [`NO_REG`] = none.
    pub save_regs: [u8; 2],
    /// `fetches[..entry_fetches]` are captured at entry and the rest at return (user space
    /// orders them so), so neither point's loop visits the other's fetches.
    pub entry_fetches: u8,
    pub _pad: [u8; 5],
    pub fetches: [Fetch; MAX_FETCHES],
}

/// "No register" in [`ProbePlan::save_regs`].
pub const NO_REG: u8 = 0xff;

impl Default for ProbePlan {
    fn default() -> Self {
        ProbePlan {
            nfetches: 0,
            flags: 0,
            save_regs: [NO_REG; 2],
            entry_fetches: 0,
            _pad: [0; 5],
            fetches: [Fetch::default(); MAX_FETCHES],
        }
    }
}

pub const PLAN_HAS_ENTRY_FETCH: u32 = 1;
pub const PLAN_HAS_RETURN_FETCH: u32 = 2;
/// HTTP client span with `GOTEL_PROPAGATION=inject`: `save_regs[0]` holds the `*http.Request`;
/// its context is handed to the goroutine that writes the request.
pub const PLAN_INJECT_CONTEXT: u32 = 4;
/// HTTP server span: at entry, read the request's header block from the connection's read
/// buffer (`ExtractConfig`) for an incoming `traceparent` and the `User-Agent`, whose address and
/// length go into the register copy at [`REG_USER_AGENT_PTR`] / [`REG_USER_AGENT_LEN`] for the
/// plan's fetches.
pub const PLAN_SCAN_HEADERS: u32 = 8;

/// Field offsets for [`PLAN_SCAN_HEADERS`] (from DWARF or the layout table), `EXTRACT_CONFIG`[0].
/// The entry registers are those of `net/http.serverHandler.ServeHTTP`: RDI = `*http.Request`,
/// RCX = the `ResponseWriter`'s data word (`*http.response` for HTTP/1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractConfig {
    /// 1 once filled.
    pub enabled: u32,
    pub request_proto_major: u32,
    pub response_conn: u32,
    pub conn_bufr: u32,
    /// `bufio.Reader.buf` (pointer, then len).
    pub reader_buf: u32,
    pub reader_r: u32,
    /// `net/http.Request.Method` and `.Proto`: the request line found in the buffer is checked
    /// against them (`propagation::extract`).
    pub request_method: u32,
    pub request_proto: u32,
    /// The fallback when the header block is no longer whole in the buffer: `r.Header`'s map
    /// (`header_map`); `kind` 0 = no fallback for this binary.
    pub header_map: header_map::MapLayout,
}

/// Field offsets that let the RETs of `runtime.newproc1` find the spawning goroutine on their
/// own (`NEWPROC_CONFIG`[0]): newproc1 runs on the system stack, where R14 is the M's g0, and
/// `g0.m.curg` is the goroutine that executed the `go` statement.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NewprocConfig {
    /// 1 once filled; 0: the entry hook saves the caller in `NEWPROC` instead.
    pub enabled: u32,
    /// `runtime.g.m`.
    pub g_m: u32,
    /// `runtime.m.curg`.
    pub m_curg: u32,
    pub _pad: u32,
}
/// A built-in helper or closer probe: its frame is no span, so a context taken from the
/// innermost frame (`inject_socket::h2`) looks past it. A high bit, clear of other branches'.
pub const PLAN_NOT_A_SPAN: u32 = 1 << 12;
/// A built-in helper or closer whose captures are all read at entry: `gotel_entry` ends its
/// call right after the entry values (a `SpanEnd` at the entry's time) and no RET of it is
/// trapped, one trap per call instead of two.
pub const PLAN_ENDS_AT_ENTRY: u32 = 1 << 13;

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

/// Field offsets in `bufio.Writer` (from DWARF), for header injection. Array `INJECT_CONFIG`[0].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectConfig {
    /// Offset of `buf []byte` (pointer, len, cap follow).
    pub buf_offset: u32,
    /// Offset of `n int`.
    pub n_offset: u32,
}

/// The client-side hand-off of both injection paths (`propagation::handoff`). Array
/// `HANDOFF_CONFIG`[0].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandoffConfig {
    /// Offset of `URL *url.URL` in `net/http.Request`: the URL pointer, not the request pointer,
    /// keys a request's context from `Transport.roundTrip` to `Request.write`, because
    /// `roundTrip` writes a shallow copy of a request that has a body (`setupRewindBody`); the
    /// copy shares the URL.
    pub request_url_offset: u32,
    pub _pad: u32,
}

/// Where `gotel_grpc_headers` finds the decoded header fields of a gRPC request
/// (`GRPC_HEADERS_CONFIG`[0]): `operateHeaders`' `frame *http2.MetaHeadersFrame` argument is in
/// pt_regs slot `frame_reg`; its `Fields []hpack.HeaderField` at `fields_offset`; a
/// `HeaderField` is `field_size` bytes with `Name` and `Value` strings at these offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcHeadersConfig {
    pub frame_reg: u32,
    pub fields_offset: u32,
    pub field_size: u32,
    pub name_offset: u32,
    pub value_offset: u32,
    pub _pad: u32,
}

/// Header fields of one HEADERS frame `gotel_grpc_headers` looks at (gRPC requests carry a
/// handful of pseudo-headers and fields before the application's metadata).
pub const MAX_GRPC_HEADER_FIELDS: u32 = 24;

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

/// `hpack.HeaderField` layout for the gRPC socket path's `traceparent` check
/// (`GRPC_INJECT_CONFIG`[0]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcInjectConfig {
    pub field_size: u32,
    pub name_offset: u32,
}

/// Settings of the socket path (`INJECT_SOCKET_CONFIG`, at the target's slot and at 0), filled
/// by user space. Which processes are traced is in `TARGETS` (tgid -> slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketInjectConfig {
    /// Unused (was the traced process: `TARGETS` says which processes are, by kernel tgid).
    pub tgid: u32,
    /// Offset of `thread.fsbase` in `struct task_struct` (from the kernel's BTF): the Go thread's
    /// TLS base, where `g` lives at -8.
    pub fsbase_offset: u32,
    /// A stored context older than this is not used (consume-once also bounds it).
    pub ttl_ns: u64,
    /// Offset of `tgid` in `struct task_struct` (from the kernel's BTF): SOCK_OPS reads the
    /// connecting task's process there, since `bpf_get_current_pid_tgid` is refused to SOCK_OPS
    /// programs on older kernels (6.1 among them).
    pub tgid_offset: u32,
    pub _pad: u32,
}

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

/// Indices of the per-CPU `COUNTERS` array. Userspace sums the CPUs and reports them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record did not fit into the ring buffer: that span or its values are lost.
    RingBufferFull = 0,
    /// A call ran deeper than MAX_FRAMES traced frames on one goroutine and was not traced.
    DepthOverflow = 1,
    /// A RET fired with no matching entry (attached mid-call, or depth overflow).
    UnmatchedReturn = 2,
    /// A frame was unwound without returning (panic then recover, Goexit).
    Abandoned = 3,
    /// The goroutine map refused an insert.
    StateInsertFailed = 4,
    /// A morestack re-entry of an entry probe that sits at the function start was ignored.
    MorestackReentry = 5,
    /// Entries seen (calls started).
    Entries = 6,
    /// Spans completed in the kernel.
    Returns = 7,
    /// Goroutine records cleared because runtime.newproc1 handed out that g again.
    GoroutineReused = 8,
    /// Valid incoming `traceparent` headers adopted.
    TraceparentAdopted = 9,
    /// `traceparent` headers ignored because they were malformed.
    TraceparentInvalid = 10,
    /// `traceparent` headers written into outgoing requests (GOTEL_PROPAGATION=inject).
    TraceparentInjected = 11,
    /// Injection skipped: the request already had a `traceparent`.
    InjectSkippedPresent = 12,
    /// Injection skipped: no room in the write buffer, or the buffer was flushed meanwhile.
    InjectSkippedNoRoom = 13,
    /// Socket path: client sockets of the traced process put into the `INJECT_SOCKETS` sockhash.
    SocketEnrolled = 14,
    /// Socket path: a client socket of the traced process could not be enrolled (sockhash full).
    SocketEnrolFailed = 15,
    /// Socket path: `traceparent` lines inserted into outgoing requests (`bpf_msg_push_data`).
    SocketInjected = 16,
    /// Socket path skipped a request that already carries `traceparent`.
    SocketSkippedPresent = 17,
    /// Socket path: a context was waiting but the message does not start with an HTTP/1 request
    /// line (TLS ciphertext, HTTP/2, a request line split across writes).
    SocketSkippedNotHttp1 = 18,
    /// Socket path: the request line does not end inside the scanned window.
    SocketSkippedLineTooLong = 19,
    /// Socket path: the waiting context was older than its lifetime and was dropped.
    SocketContextExpired = 20,
    /// Socket path: the kernel refused to make room for the line (`bpf_msg_push_data` or a pull
    /// failed); the message was sent unchanged.
    SocketInjectFailed = 21,
    /// Socket path: injected although the end of the header block was past the scanned window
    /// (a `traceparent` after it would not have been seen).
    SocketHeadersPastWindow = 22,
    /// Socket path: a message that starts like a request line was sent with no context waiting
    /// for its goroutine (request not made through a traced `Transport.roundTrip`).
    SocketNoContext = 23,
    /// gRPC: a valid `traceparent` in a request's HEADERS frame was adopted for its handler.
    GrpcTraceparentAdopted = 32,
    /// gRPC: a `traceparent` field with a malformed value was ignored.
    GrpcTraceparentInvalid = 33,
    /// gRPC: an adopted context was handed to the goroutine started for the stream's handler.
    GrpcContextHandedOff = 34,
    /// An HTTP/1 request's header block was no longer whole in the connection's read buffer
    /// (it came in several reads, or did not fit), no `traceparent` was among the lines left,
    /// and its `http.Header` map could not be walked to the end (too large, layout unknown).
    TraceparentUnreadable = 24,
    /// The header block was not whole in the read buffer, so the request's `http.Header` map was
    /// walked instead (completely: what it holds, the request had).
    HeaderMapWalked = 25,
    /// gRPC socket path: `traceparent` appended to a HEADERS frame's header block (h2c).
    GrpcSocketInjected = 35,
    /// gRPC socket path: the call's header fields already carry `traceparent` (left alone).
    GrpcSocketSkippedPresent = 36,
    /// gRPC socket path: not injected because the frame would exceed 16384 bytes, or the
    /// message had more HEADERS frames waiting than one message's injections (`H2_MAX_INJECT`).
    GrpcSocketSkippedTooLong = 37,
    /// gRPC socket path: the frame walk of a connection lost its place (an unknown frame type,
    /// or more frames in one message than it walks): that connection is no longer injected.
    GrpcSocketDesync = 38,
    /// gRPC socket path: the kernel refused to make room or to write (`bpf_msg_push_data`, a
    /// pull), or the header fields could not be read; nothing was sent changed.
    GrpcSocketInjectFailed = 39,
    /// gRPC socket path: a message of a connection whose frames are not followed (open before
    /// gotel attached, or its place lost) that does not tile into frames: passed unchanged.
    GrpcSocketUnaligned = 40,
    /// gRPC socket path: such a connection's frames found again (a message that tiles exactly
    /// into well-formed frames): followed, and injected, from that message on.
    GrpcSocketResync = 41,
    /// Same node: a client request's context stored under its connection (`join.same_node`).
    SameNodeOffered = 44,
    /// Same node: a server span without `traceparent` joined the client span of its connection.
    SameNodeJoined = 45,
    /// Same node: the connection's stored context was too old and was dropped.
    SameNodeExpired = 46,
    /// Same node: a connection's addresses could not be read (neither a `*net.TCPConn` nor a
    /// `*tls.Conn` over one: another wrapper, a unix socket), so it was not matched.
    SameNodeUnreadable = 47,
    /// Same node: a server span found its connection only under the client address, and that
    /// record was ambiguous (the client's port served another destination within
    /// `same_node::AMBIGUITY_WINDOW_NS`): not joined.
    SameNodeAmbiguous = 48,
    /// Same node: of the joins, those made through the client address alone (the server's
    /// address was not the one the client dialled: a Service's virtual IP, DNATed).
    SameNodeJoinedTranslated = 49,
    /// HTTP/1 requests whose request line was not whole in the read buffer at the server
    /// span's entry: their method, path and host were read from `*http.Request` instead.
    RequestLineUnread = 50,
}
pub const NUM_COUNTERS: u32 = 64;

/// pt_regs slot indices (x86-64 `struct pt_regs` / aya's `pt_regs`, 8 bytes each).
pub const REG_R15: u8 = 0;
pub const REG_R14: u8 = 1;
pub const REG_R13: u8 = 2;
pub const REG_R12: u8 = 3;
pub const REG_RBP: u8 = 4;
pub const REG_RBX: u8 = 5;
pub const REG_R11: u8 = 6;
pub const REG_R10: u8 = 7;
pub const REG_R9: u8 = 8;
pub const REG_R8: u8 = 9;
pub const REG_RAX: u8 = 10;
pub const REG_RCX: u8 = 11;
pub const REG_RDX: u8 = 12;
pub const REG_RSI: u8 = 13;
pub const REG_RDI: u8 = 14;
pub const REG_SP: u8 = 19;
/// Slots past pt_regs in the kernel's register copy, written by the header scan
/// ([`PLAN_SCAN_HEADERS`]): the `User-Agent` value's address and length in the target.
pub const REG_USER_AGENT_PTR: u8 = 21;
pub const REG_USER_AGENT_LEN: u8 = 22;
/// The request line's method, target and the `Host` value, as the header scan found them in
/// the read buffer (address and length in the target; 0 when not found).
pub const REG_METHOD_PTR: u8 = 23;
pub const REG_METHOD_LEN: u8 = 24;
pub const REG_TARGET_PTR: u8 = 25;
pub const REG_TARGET_LEN: u8 = 26;
pub const REG_HOST_PTR: u8 = 27;
pub const REG_HOST_LEN: u8 = 28;
/// Number of 8-byte slots in pt_regs.
pub const PT_REGS_SLOTS: usize = 21;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ProbePlan {}
    unsafe impl aya::Pod for GoroutineKey {}
    unsafe impl aya::Pod for GoroutineState {}
    unsafe impl aya::Pod for InjectContext {}
    unsafe impl aya::Pod for InjectConfig {}
    unsafe impl aya::Pod for ExtractConfig {}
    unsafe impl aya::Pod for NewprocConfig {}
    unsafe impl aya::Pod for HandoffConfig {}
    unsafe impl aya::Pod for SocketInjectConfig {}
    unsafe impl aya::Pod for GrpcInjectConfig {}
    unsafe impl aya::Pod for GrpcHeadersConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot and the probe id share the cookie's low half without touching the flags or the
    /// RET offset, for every slot the maps can hold.
    #[test]
    fn cookies_carry_slot_and_probe() {
        for (slot, probe) in [(0, 0), (0, 4095), (1, 7), (MAX_SLOTS - 1, 0xffff)] {
            let cookie = cookie_of(slot, probe) | COOKIE_RETURN | COOKIE_STARTS_AT_RETURN | (0x1234 << 48);
            assert_eq!((cookie_slot(cookie), cookie_probe(cookie)), (slot, probe));
            assert_eq!(cookie >> 48, 0x1234);
            assert_ne!(cookie & COOKIE_RETURN, 0);
        }
    }

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
