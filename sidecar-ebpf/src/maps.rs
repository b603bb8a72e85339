//! Every map of the kernel programs, in one place, with why it exists and who fills it.
//!
//! User space finds them by name (`gotel_shared::names::MAP_*`) and sizes some before load
//! (`GOROUTINES`, `EVENTS`, `PROBES`). Hash maps keyed by something the target owns are LRU, so
//! a key that is never removed (a killed goroutine, a request that was never written) cannot pin
//! memory or make inserts fail.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
};
use gotel_shared::{
    Counter, ExtractConfig, GoroutineKey, GoroutineState, GrpcHeadersConfig, GrpcInjectConfig, GrpcStreamKey,
    H2ConnKey, HandoffConfig, InjectConfig, InjectContext, NewprocConfig, ProbePlan, SocketInjectConfig, NUM_COUNTERS,
};

use crate::{context::Scratch, propagation::inject_socket::MsgScratch};

/// Completed spans and captured values, submitted without wake-up and drained on a timer
/// (waking user space per event nearly doubles the cost of a traced call).
/// User space sets the real size (`GOTEL_RING_BUFFER_BYTES`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Traced calls in progress per goroutine. LRU: a goroutine that vanished without returning
/// (killed program, Goexit) can never pin memory. User space sets the size before load and reads
/// it at exit (`calls_in_progress`).
#[map]
pub static GOROUTINES: LruHashMap<GoroutineKey, GoroutineState> = LruHashMap::with_max_entries(16384, 0);

/// runtime.newproc1 in progress per M (keyed by g0, since newproc1 runs on the system
/// stack): the g of the goroutine that executes the `go` statement.
#[map]
pub static NEWPROC: LruHashMap<GoroutineKey, u64> = LruHashMap::with_max_entries(1024, 0);

/// Per-probe capture instructions, indexed by probe id (the low 32 bits of the attach cookie).
/// Filled by user space from the plan before any probe is attached.
#[map]
pub static PROBES: Array<ProbePlan> = Array::with_max_entries(4096, 0);

/// Entry 0 non-zero: every uprobe program returns at once (`context::copy_regs`, its first step),
/// leaving only the trap. Nothing in gotel writes it: it is the benchmarks' switch (same-process
/// floor: bench/paired.py flips it between batches of requests, so gotel and its bare traps are
/// timed seconds apart in one process) and an operator's brake (`bpftool map update name PAUSED
/// key 0 0 0 0 value 1 0 0 0`; every target of this gotel). A call paused between its entry and
/// its return is reported abandoned or its return unmatched, as after a detach. An array lookup
/// the verifier inlines: a few ns per trap.
#[map]
pub static PAUSED: Array<u32> = Array::with_max_entries(1, 0);

/// Whether `PAUSED` is set: the first thing every uprobe program asks.
#[inline(always)]
pub fn paused() -> bool {
    PAUSED.get(0).is_some_and(|p| *p != 0)
}

/// Per-CPU counters, `NUM_COUNTERS` per target slot, indexed `slot * NUM_COUNTERS + Counter`;
/// user space sizes it (one slot outside node mode) and sums the CPUs.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// Per-CPU working memory (registers, record being built): too large for the 512-byte stack.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Outgoing requests whose CLIENT span asked for injection, by (tgid, the request's *url.URL).
#[map]
pub static INJECT_BY_REQUEST: LruHashMap<GoroutineKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// The request a goroutine is writing right now, by (tgid, g).
#[map]
pub static INJECT_PENDING: LruHashMap<GoroutineKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// bufio.Writer field offsets (user space fills the target slot's entry from DWARF).
#[map]
pub static INJECT_CONFIG: Array<InjectConfig> = Array::with_max_entries(1, 0);

/// Field offsets of the HTTP/1 header scan (user space fills the target slot's entry; `enabled` 0 = off).
#[map]
pub static EXTRACT_CONFIG: Array<ExtractConfig> = Array::with_max_entries(1, 0);

/// `runtime.g.m` and `runtime.m.curg` offsets for `gotel_newproc_return` (user space fills
/// the target slot's entry when it knows them; else the entry hook fills `NEWPROC`).
#[map]
pub static NEWPROC_CONFIG: Array<NewprocConfig> = Array::with_max_entries(1, 0);

/// `net/http.Request.URL` offset for the hand-off (user space fills the target slot's entry from DWARF).
#[map]
pub static HANDOFF_CONFIG: Array<HandoffConfig> = Array::with_max_entries(1, 0);

/// Socket path: client sockets of the traced process, by socket cookie. The kernel drops an
/// entry when its socket closes; the map going away (gotel exits) releases every socket
/// unchanged.
#[map]
pub static INJECT_SOCKETS: SockHash<u64> = SockHash::with_max_entries(65536, 0);

/// Socket path: sockets the traced process is connecting (marked in its own context at
/// TCP_CONNECT_CB), by socket cookie, until they are established. LRU: a failed connect cannot
/// pin memory.
#[map]
pub static INJECT_CONNECTING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Socket path, per target slot: the `thread.fsbase` and `tgid` offsets and the context
/// lifetime (the same for every slot; entry 0 always holds them, see `TARGETS` for which
/// process is whose).
/// Where gRPC request header fields are (`GrpcHeadersConfig`), filled by the `trace_context.grpc`
/// unit.
#[map]
pub static GRPC_HEADERS_CONFIG: Array<GrpcHeadersConfig> = Array::with_max_entries(1, 0);

#[map]
pub static INJECT_SOCKET_CONFIG: Array<SocketInjectConfig> = Array::with_max_entries(1, 0);

/// Never used by a program: user space enrols one loopback socket here at start-up to measure
/// whether this kernel reports `ioctl(FIONREAD)` = 0 for sockets in a sockhash (929e30f93125).
#[map]
pub static FIONREAD_PROBE: SockHash<u32> = SockHash::with_max_entries(1, 0);

/// Socket path: per-CPU copy of the scanned window, the scan's state and the line.
#[map]
pub static INJECT_SOCKET_SCRATCH: PerCpuArray<MsgScratch> = PerCpuArray::with_max_entries(1, 0);

/// gRPC socket path: a call's context by (tgid, data pointer of the `[]hpack.HeaderField`
/// `createHeaderFields` returned), until the loopy writer takes that slice (`writeHeader`).
#[map]
pub static GRPC_INJECT_BY_FIELDS: LruHashMap<GoroutineKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// gRPC socket path: a stream's context by {tgid, stream id, loopy goroutine}, until its
/// HEADERS frame reaches the socket (SK_MSG).
#[map]
pub static GRPC_INJECT_PENDING: LruHashMap<GrpcStreamKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// Socket path: each enrolled connection's HTTP/2 state (`gotel_shared::h2`): `CONN_FRESH` from
/// SOCK_OPS until its first message, `CONN_NOT_H2` when that was not the client preface, else
/// an h2c connection followed frame by frame, the value being how many bytes at the start of the
/// next message still belong to the last frame. No entry: not seen from its start (open before
/// gotel attached) or its place lost: resynchronised on a frame boundary. LRU: a closed
/// connection's entry ages out; an evicted one is resynchronised (h2c) or found to be HTTP/1
/// again at its next request.
#[map]
pub static H2_CONNS: LruHashMap<H2ConnKey, u32> = LruHashMap::with_max_entries(4096, 0);

/// gRPC socket path: `hpack.HeaderField` layout, per target slot (user space, from DWARF or the table).
#[map]
pub static GRPC_INJECT_CONFIG: Array<GrpcInjectConfig> = Array::with_max_entries(1, 0);

/// Adds one to a counter of this CPU, for the target of the uprobe program running (its slot,
/// set by `context::copy_regs`). Socket programs, which do not run in a uprobe, use
/// [`count_in`] with the slot they found.
#[inline(always)]
pub fn count(c: Counter) {
    let slot = SCRATCH.get(0).map_or(0, |s| s.slot);
    count_in(slot, c);
}

/// Adds one to counter `c` of the target in `slot` (`COUNTERS` holds `NUM_COUNTERS` per slot).
#[inline(always)]
pub fn count_in(slot: u32, c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot.wrapping_mul(NUM_COUNTERS).wrapping_add(c as u32)) {
        unsafe { *p += 1 };
    }
}

/// The target slot of the uprobe program running.
#[inline(always)]
pub fn slot() -> u32 {
    SCRATCH.get(0).map_or(0, |s| s.slot)
}

/// Same node (`join.same_node`): a client request's context by its connection, until the
/// server span of that request takes it. Shared by every set of programs one gotel loads: user
/// space pins it in a bpffs instance of its own (`instrumentations::join_same_node`); 1 entry
/// when the unit is off. LRU: a request no traced server reads ages out.
#[map]
pub static SAME_NODE_CONNS: LruHashMap<gotel_shared::same_node::ConnKey, gotel_shared::same_node::ConnContext> =
    LruHashMap::with_max_entries(8192, 0);

/// Same node: this target's field offsets and network namespace, per target slot.
#[map]
pub static SAME_NODE_CONFIG: Array<gotel_shared::same_node::SameNodeConfig> = Array::with_max_entries(1, 0);

/// Which traced process a task belongs to, for the programs that do not run in a uprobe (the
/// socket path's SOCK_OPS and SK_MSG): kernel tgid -> target slot. User space inserts the
/// target's kernel pid when it can see it; the socket path's uprobes (`gotel_socket_dial`,
/// `gotel_request_write`) insert it otherwise. User space removes a target's entries when its
/// session ends.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(gotel_shared::MAX_SLOTS, 0);
