//! What every program needs first: a copy of the probed thread's registers, the goroutine it
//! runs (g in R14) and that goroutine's stack depth, plus the per-CPU scratch memory the other
//! modules build records in.
//!
//! Registers are copied once into map memory (`Scratch::regs`) so later code can index them by a
//! masked slot number from a plan; the BPF stack (512 bytes) is too small for that and for a
//! record.
use aya_ebpf::{
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
    },
    programs::ProbeContext,
};
use gotel_shared::{
    header_block::BlockScan, header_map::MapWalk, traceparent::TraceContext, Counter, GoroutineKey, GoroutineState,
    ValueHeader, MAX_STR, PT_REGS_SLOTS, REG_R14, REG_SP, SCRATCH_SIZE,
};

use crate::maps::{count, GOROUTINES, SCRATCH};

/// Slack after the record area so masked offsets plus a bounded copy always stay inside.
const BUF_SLACK: usize = 2 * MAX_STR + 2 * core::mem::size_of::<ValueHeader>() + 64;

/// Per-CPU working memory: too large for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    /// Copy of the probed thread's pt_regs (indexable by a masked slot number).
    pub regs: [u64; 32],
    /// Template for a new goroutine record.
    pub state: GoroutineState,
    /// The current frame's saved entry registers, for `Root::Saved` fetches at return.
    pub saved: [u64; 2],
    /// The attach cookie of the program running (every uprobe program sets it first).
    pub cookie: u64,
    /// The target's slot, from the cookie: which entry of the per-target config arrays and
    /// counters this program uses (node mode serves every target with one set of programs;
    /// always 0 otherwise). Kept here, not passed around, so [`crate::maps::count`] and the
    /// BPF global functions find it.
    pub slot: u32,
    /// The `FRAME_*` bits of the frame whose return values are being captured (0 otherwise):
    /// a fetch with a matching `skip_if` bit is skipped (`capture`).
    pub frame_flags: u32,
    /// Length of the record being built in `buf`. Kept in map memory, not on the stack, so the
    /// verifier treats it as an unknown bounded value instead of following every length.
    pub off: u64,
    /// The HTTP/1 header scan over `buf` (`propagation::extract`): its state lives here, not on
    /// the stack, which `gotel_entry` has little of left.
    pub scan: BlockScan,
    /// The fallback walk of the request's `http.Header` map (`propagation::extract`).
    pub walk: MapWalk,
    /// An incoming `traceparent`'s context as it is parsed (`propagation::extract`,
    /// `propagation::grpc_extract`): decoded here, not on the stack.
    pub remote: TraceContext,
    /// Target memory read once for a record's fetches (`capture`).
    pub window: crate::capture::Window,
    /// The M (`g.m`) `goroutines` last read on this CPU, and the thread and g it read it for
    /// (see `goroutines::current_m`).
    pub m_thread: u64,
    pub m_g: u64,
    pub m: u64,
    /// A connection's key as `propagation::same_node` builds it (not on the stack).
    pub conn_key: gotel_shared::same_node::ConnKey,
    /// The request header block `propagation::extract` copied this hit: the target address of
    /// its first byte, at `buf[BLOCK_BUF - block_len]` (`block_len` 0: none). A string fetch
    /// whose bytes lie in it (the `User-Agent` value) copies them from there, not again from
    /// the target (`capture`).
    pub block_addr: u64,
    pub block_len: u64,
    /// The ring-buffer record being built (also the header-line buffer of injection, and the
    /// copy of a request's header block).
    pub buf: [u8; SCRATCH_SIZE + BUF_SLACK],
}

/// A probe hit on a goroutine: the scratch area with a copy of the registers, the goroutine and
/// its stack depth (`g.stack.hi - SP`, see `gotel_shared::rules`).
pub struct Hit {
    pub scratch: *mut Scratch,
    pub key: GoroutineKey,
    pub tid: u32,
    pub stack_depth: u64,
    pub sp: u64,
    pub cookie: u64,
    pub now: u64,
}

#[inline(always)]
pub fn hit(ctx: &ProbeContext) -> Option<Hit> {
    let scratch = copy_regs(ctx)?;
    let s = unsafe { &mut *scratch };
    crate::capture::reset_window(s);
    let g = s.regs[REG_R14 as usize];
    let sp = s.regs[REG_SP as usize];
    // runtime.g starts with `stack stack` = {lo, hi uintptr} in every Go version.
    let hi = read_u64(g.wrapping_add(8))?;
    let pid_tgid = bpf_get_current_pid_tgid();
    Some(Hit {
        scratch,
        key: GoroutineKey::new((pid_tgid >> 32) as u32, g),
        tid: pid_tgid as u32,
        stack_depth: hi.wrapping_sub(sp),
        sp,
        cookie: s.cookie,
        now: unsafe { bpf_ktime_get_ns() },
    })
}

/// Copies the probed thread's registers into the scratch area, with the attach cookie and the
/// target's slot; `None` while `PAUSED` (every uprobe program starts here). The registers are the program's context, which it may load directly (one
/// load per word at a constant offset, the only access the verifier allows there): cheaper
/// than a `bpf_probe_read_kernel` call, at every probe hit.
#[inline(always)]
pub fn copy_regs(ctx: &ProbeContext) -> Option<*mut Scratch> {
    if crate::maps::paused() {
        return None;
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    let s = unsafe { &mut *scratch };
    let r = ctx.regs as *const u64;
    macro_rules! copy {
        ($($i:literal)*) => {
            // Volatile: each load stays a load of its own at a constant offset of the context.
            $( s.regs[$i] = unsafe { core::ptr::read_volatile(r.add($i)) }; )*
        };
    }
    copy!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20);
    const _: () = assert!(PT_REGS_SLOTS == 21);
    let cookie = unsafe { bpf_get_attach_cookie(ctx.regs as *mut _) };
    s.cookie = cookie;
    s.slot = gotel_shared::cookie_slot(cookie);
    s.frame_flags = 0;
    Some(scratch)
}

/// The key of an address of the current process: a goroutine (`runtime.g`) or a request.
#[inline(always)]
pub fn key_in_this_process(addr: u64) -> GoroutineKey {
    GoroutineKey::new((bpf_get_current_pid_tgid() >> 32) as u32, addr)
}

/// The goroutine running on this thread (g in R14, Go's register ABI).
#[inline(always)]
pub fn current_goroutine(regs: &[u64; 32]) -> GoroutineKey {
    key_in_this_process(regs[REG_R14 as usize])
}

/// The goroutine running on this thread where no Go registers are at hand (the socket path's
/// SK_MSG program): `*(fsbase - 8)`, the linux/amd64 TLS slot of g (the same for static and cgo
/// builds), with `task->thread.fsbase` at `fsbase_offset` (user space finds it in the kernel's
/// BTF: aya programs get no CO-RE relocations).
#[inline(always)]
pub fn goroutine_from_tls(fsbase_offset: u32) -> Option<GoroutineKey> {
    let task = unsafe { bpf_get_current_task() };
    let fsbase: u64 = unsafe { bpf_probe_read_kernel((task + fsbase_offset as u64) as *const u64) }.ok()?;
    let g = unsafe { bpf_probe_read_user(fsbase.wrapping_sub(8) as *const u64) }.ok()?;
    Some(key_in_this_process(g))
}

/// The goroutine's record of calls in progress; with `create`, a fresh one when it has none.
#[inline(always)]
pub fn state_of(h: &Hit, create: bool) -> Option<*mut GoroutineState> {
    state_of_key(h.scratch, &h.key, create)
}

/// [`state_of`] for goroutine `key`, with the scratch area at hand.
#[inline(always)]
pub fn state_of_key(scratch: *mut Scratch, key: &GoroutineKey, create: bool) -> Option<*mut GoroutineState> {
    if let Some(p) = GOROUTINES.get_ptr_mut(key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    let s = unsafe { &mut *scratch };
    s.state.depth = 0;
    s.state.has_inherited = 0;
    if GOROUTINES.insert(key, &s.state, 0).is_err() {
        count(Counter::StateInsertFailed);
        return None;
    }
    GOROUTINES.get_ptr_mut(key)
}

#[inline(always)]
pub fn read_u64(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// A random non-zero id (span ids must not be 0).
#[inline(always)]
pub fn random_u64() -> u64 {
    let hi = unsafe { bpf_get_prandom_u32() } as u64;
    let lo = unsafe { bpf_get_prandom_u32() } as u64;
    let v = (hi << 32) | lo;
    if v == 0 {
        1
    } else {
        v
    }
}

#[inline(always)]
pub fn random_trace_id() -> [u8; 16] {
    let a = random_u64().to_le_bytes();
    let b = random_u64().to_le_bytes();
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&a);
    t[8..].copy_from_slice(&b);
    t
}
