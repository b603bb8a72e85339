//! What user space writes into the kernel's maps for its programs to read: per probe, the values
//! to capture and how to reach them ([`ProbePlan`], [`Fetch`], with the `REG_*` pt_regs slots
//! they name), and per target, the field offsets and settings of the built-in hooks (the
//! `*Config` structs). The kernel never writes these; what it writes is in `records`.

use crate::header_map;

/// Values captured per probe (arguments at entry plus results at return).
pub const MAX_FETCHES: usize = 16;
/// Pointer hops in one field path (`a.B.C.D`).
pub const MAX_HOPS: usize = 4;
/// Upper bound of bytes copied from the target for one string or `[]byte` value.
pub const MAX_STR: usize = 256;

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
/// A built-in helper or closer probe: its frame is no span, so a context taken from the
/// innermost frame (`inject_socket::h2`) looks past it. A high bit, clear of other branches'.
pub const PLAN_NOT_A_SPAN: u32 = 1 << 12;
/// A built-in helper or closer whose captures are all read at entry: `gotel_entry` ends its
/// call right after the entry values (a `SpanEnd` at the entry's time) and no RET of it is
/// trapped, one trap per call instead of two.
pub const PLAN_ENDS_AT_ENTRY: u32 = 1 << 13;

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
// The header scan clears the slots above as one range, from the User-Agent's to the Host's.
const _: () = assert!(REG_USER_AGENT_LEN == REG_USER_AGENT_PTR + 1 && REG_HOST_LEN == REG_USER_AGENT_PTR + 7);
/// Number of 8-byte slots in pt_regs.
pub const PT_REGS_SLOTS: usize = 21;

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

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ProbePlan {}
    unsafe impl aya::Pod for InjectConfig {}
    unsafe impl aya::Pod for ExtractConfig {}
    unsafe impl aya::Pod for NewprocConfig {}
    unsafe impl aya::Pod for HandoffConfig {}
    unsafe impl aya::Pod for SocketInjectConfig {}
    unsafe impl aya::Pod for GrpcInjectConfig {}
    unsafe impl aya::Pod for GrpcHeadersConfig {}
}
