//! gotel's kernel side: four small generic uprobe programs, driven entirely by maps.
//!
//! - `gotel_entry` at the entry of every traced function (after its stack-check prologue),
//! - `gotel_return` at every RET instruction of those functions (never a uretprobe: Go moves
//!   stacks, and a uretprobe's hijacked return address then crashes the program),
//! - `gotel_newproc_entry` / `gotel_newproc_return` at `runtime.newproc1`, which hands out a
//!   goroutine: its g may be a reused one (stale frames are cleared) and the new goroutine
//!   inherits the spawning call as parent.
//!
//! Calls are paired per goroutine (g pointer in R14) in a small stack of frames. A frame is
//! matched by its *stack depth* `g.stack.hi - SP`, which is the same at entry and at RET, survives
//! stack copying, and grows with nesting. So a RET pops exactly its own frame; frames deeper than
//! the current depth were unwound by a panic or Goexit and are reported as abandoned.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_kernel_buf, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::bpf_probe_write_user,
        generated::{bpf_loop, bpf_ringbuf_output},
    },
    macros::{map, uprobe},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use gotel_shared::*;

/// Completed spans and captured values, submitted without wake-up and drained on a timer
/// (waking user space per event nearly doubles the cost of a traced call).
/// Userspace sets the real size (`GOTEL_RING_BUFFER_BYTES`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Traced calls in progress per goroutine. LRU: a goroutine that vanished without returning
/// (killed program, Goexit) can never pin memory. Userspace sets the size before load.
#[map]
static GOROUTINES: LruHashMap<GoroutineKey, GoroutineState> = LruHashMap::with_max_entries(16384, 0);

/// runtime.newproc1 in progress per M (keyed by g0, since newproc1 runs on the system
/// stack): the g of the goroutine that executes the `go` statement.
#[map]
static NEWPROC: LruHashMap<GoroutineKey, u64> = LruHashMap::with_max_entries(1024, 0);

/// Per-probe capture instructions, indexed by probe id (the low 32 bits of the attach cookie).
#[map]
static PROBES: Array<ProbePlan> = Array::with_max_entries(4096, 0);

/// Per-CPU counters, indexed by `Counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// Slack after the record area so masked offsets plus a bounded copy always stay inside.
const BUF_SLACK: usize = 2 * MAX_STR + 2 * core::mem::size_of::<ValueHeader>() + 64;
const HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();
const VALUE_HEADER_SIZE: usize = core::mem::size_of::<ValueHeader>();

/// Per-CPU working memory: too large for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    /// Copy of the probed thread's pt_regs (indexable by a masked slot number).
    regs: [u64; 32],
    /// Template for a new goroutine record.
    state: GoroutineState,
    /// The current frame's saved entry registers, for `Root::Saved` fetches at return.
    saved: [u64; 2],
    /// Length of the record being built in `buf`. Kept in map memory, not on the stack, so the
    /// verifier treats it as an unknown bounded value instead of following every length.
    off: u64,
    /// The ring-buffer record being built.
    buf: [u8; SCRATCH_SIZE + BUF_SLACK],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn random_u64() -> u64 {
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
fn random_trace_id() -> [u8; 16] {
    let a = random_u64().to_le_bytes();
    let b = random_u64().to_le_bytes();
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&a);
    t[8..].copy_from_slice(&b);
    t
}

/// A frame index the verifier can see is in bounds. The volatile read stops LLVM from dropping
/// the mask when it can prove the bound from an earlier comparison the verifier cannot follow.
#[inline(always)]
fn slot(i: usize) -> usize {
    let v: usize = unsafe { core::ptr::read_volatile::<usize>(&i) };
    v & (MAX_FRAMES - 1)
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// What every probe needs first: the scratch area with a copy of the registers, the goroutine
/// and its stack depth.
struct Hit {
    scratch: *mut Scratch,
    key: GoroutineKey,
    tid: u32,
    stack_depth: u64,
    sp: u64,
    cookie: u64,
    now: u64,
}

#[inline(always)]
fn hit(ctx: &ProbeContext) -> Option<Hit> {
    let scratch = copy_regs(ctx)?;
    let s = unsafe { &mut *scratch };
    let g = s.regs[REG_R14 as usize];
    let sp = s.regs[REG_SP as usize];
    // runtime.g starts with `stack stack` = {lo, hi uintptr} in every Go version.
    let hi = read_u64(g.wrapping_add(8))?;
    let pid_tgid = bpf_get_current_pid_tgid();
    Some(Hit {
        scratch,
        key: GoroutineKey { tgid: (pid_tgid >> 32) as u32, _pad: 0, goroutine: g },
        tid: pid_tgid as u32,
        stack_depth: hi.wrapping_sub(sp),
        sp,
        cookie: unsafe { bpf_get_attach_cookie(ctx.regs as *mut _) },
        now: unsafe { bpf_ktime_get_ns() },
    })
}

#[inline(always)]
fn state_of(h: &Hit, create: bool) -> Option<*mut GoroutineState> {
    if let Some(p) = GOROUTINES.get_ptr_mut(&h.key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    let s = unsafe { &mut *h.scratch };
    s.state.depth = 0;
    s.state.has_inherited = 0;
    if GOROUTINES.insert(&h.key, &s.state, 0).is_err() {
        count(Counter::StateInsertFailed);
        return None;
    }
    GOROUTINES.get_ptr_mut(&h.key)
}

/// Writes the record header into the scratch buffer, appends the probe's values captured at
/// this point (`capture`: (0 = entry or 1 = return, SP)) and copies the record into the ring
/// buffer.
#[inline(always)]
fn emit(header: &EventHeader, capture: Option<(u8, u64)>) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return };
    let s = unsafe { &mut *scratch };
    let hdr_bytes = unsafe { core::slice::from_raw_parts(header as *const EventHeader as *const u8, HEADER_SIZE) };
    s.buf[..HEADER_SIZE].copy_from_slice(hdr_bytes);
    s.off = HEADER_SIZE as u64;
    if let Some((at_return, sp)) = capture {
        capture_values(header.probe_id, sp, at_return);
    }
    let s = unsafe { &mut *scratch };
    let mut len = s.off as usize;
    if len > SCRATCH_SIZE || len < HEADER_SIZE {
        len = HEADER_SIZE;
    }
    unsafe {
        let hp = s.buf.as_mut_ptr() as *mut EventHeader;
        (*hp).data_len = (len - HEADER_SIZE) as u32;
    }
    let rc = unsafe {
        bpf_ringbuf_output(
            &EVENTS as *const _ as *mut _,
            s.buf.as_mut_ptr() as *mut _,
            len as u64,
            BPF_RB_NO_WAKEUP as u64,
        )
    };
    if rc < 0 {
        count(Counter::RingBufferFull);
    }
}

/// State of the value-capturing loop, shared with its `bpf_loop` callback. Only scalars: the
/// callback looks the maps up again itself.
#[repr(C)]
struct CaptureLoop {
    probe_id: u32,
    at_return: u32,
    sp: u64,
}

/// Runs the probe's fetch instructions for this point (entry or return) through `bpf_loop`, so
/// the verifier checks one iteration instead of every path through sixteen.
#[inline(always)]
fn capture_values(probe_id: u32, sp: u64, at_return: u8) {
    let Some(plan) = PROBES.get(probe_id) else { return };
    let n = if (plan.nfetches as usize) < MAX_FETCHES { plan.nfetches } else { MAX_FETCHES as u32 };
    let mut ctx = CaptureLoop { probe_id, at_return: at_return as u32, sp };
    unsafe {
        bpf_loop(n, capture_one as *mut _, &mut ctx as *mut CaptureLoop as *mut _, 0);
    }
}

#[inline(never)]
extern "C" fn capture_one(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let ctx = unsafe { &*(ctx as *const CaptureLoop) };
    let (probe_id, at_return, sp) = (ctx.probe_id, ctx.at_return, ctx.sp);
    let Some(plan) = PROBES.get(probe_id) else { return 1 };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &mut *scratch };
    let f = &plan.fetches[(i as usize) & (MAX_FETCHES - 1)];
    if f.at_return as u32 != at_return {
        return 0;
    }
    let off = s.off as usize;
    if off > SCRATCH_SIZE - VALUE_HEADER_SIZE - MAX_STR - 8 {
        return 1;
    }
    let written = fetch_one(s, f, sp, off & (SCRATCH_SIZE - 1));
    s.off = (off + written) as u64;
    0
}

/// Reads one value into `s.buf[off..]`: its header, then string bytes when it has some.
/// Returns the bytes written (8-byte aligned).
#[inline(always)]
fn fetch_one(s: &mut Scratch, f: &Fetch, sp: u64, off: usize) -> usize {
    let mut vh = ValueHeader { slot: f.slot, flags: 0, len: 0, word0: 0, word1: 0 };
    let (mut w0, mut w1) = (0u64, 0u64);
    let mut ok = true;
    if f.root == Root::Registers as u8 {
        w0 = s.regs[(f.regs[0] & 31) as usize];
        if f.nregs > 1 {
            w1 = s.regs[(f.regs[1] & 31) as usize];
        }
    } else if f.root == Root::Saved as u8 {
        w0 = s.saved[(f.regs[0] & 1) as usize];
        if f.nregs > 1 {
            w1 = s.saved[(f.regs[1] & 1) as usize];
        }
    } else {
        let addr = sp.wrapping_add(f.stack_offset as i64 as u64);
        match read_u64(addr) {
            Some(v) => w0 = v,
            None => ok = false,
        }
        w1 = read_u64(addr.wrapping_add(8)).unwrap_or(0);
    }
    // Field path: each hop offsets the current pointer; all but the last load a pointer.
    let nhops = f.nhops as usize;
    let mut ptr = w0;
    for i in 0..MAX_HOPS {
        if !ok || i >= nhops {
            break;
        }
        if ptr == 0 {
            vh.flags |= VALUE_NIL;
            ok = false;
            break;
        }
        let addr = ptr.wrapping_add(f.hops[i] as i64 as u64);
        if i + 1 < nhops {
            match read_u64(addr) {
                Some(v) => ptr = v,
                None => ok = false,
            }
        } else {
            match read_u64(addr) {
                Some(v) => w0 = v,
                None => ok = false,
            }
            w1 = read_u64(addr.wrapping_add(8)).unwrap_or(0);
        }
    }
    let mut payload = 0usize;
    if ok {
        let kind = f.kind;
        if kind == ValueKind::MapLen as u8 {
            if w0 == 0 {
                w0 = 0;
            } else {
                match read_u64(w0) {
                    Some(v) => w0 = v,
                    None => ok = false,
                }
            }
        } else if kind == ValueKind::String as u8 || kind == ValueKind::Interface as u8 {
            // String: (ptr, len). Interface: the first field of the dynamic value, if it is a
            // string (errors.errorString.s, fmt.wrapError.msg): userspace decides.
            let (str_ptr, str_len) = if kind == ValueKind::String as u8 {
                (w0, w1)
            } else if w1 != 0 {
                (read_u64(w1).unwrap_or(0), read_u64(w1.wrapping_add(8)).unwrap_or(0))
            } else {
                (0, 0)
            };
            let max = if (f.max_len as usize) < MAX_STR { f.max_len as usize } else { MAX_STR };
            let mut n = str_len as usize;
            if n > max {
                n = max;
                vh.flags |= VALUE_TRUNCATED;
            }
            if str_ptr != 0 && n > 0 {
                // Volatile, as in `slot`: LLVM proves n <= max and drops a plain mask, and kernels
                // before 6.8 do not bound a register by a comparison with another register.
                let n = unsafe { core::ptr::read_volatile::<usize>(&n) } & (2 * MAX_STR - 1);
                let dst_off = (off + VALUE_HEADER_SIZE) & (SCRATCH_SIZE - 1);
                let dst = unsafe { core::slice::from_raw_parts_mut(s.buf.as_mut_ptr().add(dst_off), n) };
                if unsafe { bpf_probe_read_user_buf(str_ptr as *const u8, dst) }.is_ok() {
                    payload = n;
                } else if kind == ValueKind::String as u8 {
                    ok = false;
                }
            }
        }
    }
    if !ok {
        vh.flags |= VALUE_UNREADABLE;
        payload = 0;
    }
    vh.len = payload as u32;
    vh.word0 = w0;
    vh.word1 = w1;
    let vh_bytes = unsafe { core::slice::from_raw_parts(&vh as *const ValueHeader as *const u8, VALUE_HEADER_SIZE) };
    let o = off & (SCRATCH_SIZE - 1);
    s.buf[o..o + VALUE_HEADER_SIZE].copy_from_slice(vh_bytes);
    (VALUE_HEADER_SIZE + payload + 7) & !7
}

/// `SPAN_*` flags of a span at frame index `i`.
#[inline(always)]
fn span_flags(st: &GoroutineState, i: usize) -> u16 {
    let mut f = st.trace_flags as u16;
    if i == 0 && st.has_inherited & INHERIT_REMOTE != 0 {
        f |= SPAN_PARENT_REMOTE;
    }
    f
}

/// Parent span of the frame at index `i` of the goroutine's stack.
#[inline(always)]
fn parent_of(st: &GoroutineState, i: usize) -> u64 {
    if i == 0 {
        if st.has_inherited != 0 {
            st.inherited_span_id
        } else {
            0
        }
    } else {
        st.frames[slot(i.wrapping_sub(1))].span_id
    }
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
#[inline(always)]
fn unwind(h: &Hit, inclusive: bool) {
    let mut ctx = UnwindLoop {
        key: h.key,
        stack_depth: h.stack_depth,
        cookie: h.cookie,
        now: h.now,
        tid: h.tid,
        inclusive: inclusive as u32,
    };
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
    let i = slot(n.wrapping_sub(1));
    let f = st.frames[i];
    if f.stack_depth < depth || (f.stack_depth == depth && !inclusive) {
        return 1;
    }
    // Entry probe at the very function start, same function, same depth: runtime.morestack
    // grew the stack and re-ran the function from its first instruction. Not a new call.
    if inclusive && f.stack_depth == depth && f.probe_id == cookie as u32 && cookie & COOKIE_AT_FUNC_START != 0 {
        return 1;
    }
    count(Counter::Abandoned);
    let hdr = EventHeader {
        kind: EventKind::Abandoned as u32,
        probe_id: f.probe_id,
        tgid: key.tgid,
        tid,
        goroutine: key.goroutine,
        start_ns: f.start_ns,
        end_ns: now,
        trace_id: st.trace_id,
        span_id: f.span_id,
        parent_span_id: parent_of(st, i),
        ret_offset: 0,
        flags: span_flags(st, i),
        data_len: 0,
    };
    st.depth = i as u32;
    emit(&hdr, None);
    0
}

#[uprobe]
pub fn gotel_entry(ctx: ProbeContext) -> u32 {
    let _ = on_entry(&ctx);
    0
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext) -> Option<()> {
    let h = hit(ctx)?;
    count(Counter::Entries);
    let probe_id = h.cookie as u32;
    let st = unsafe { &mut *state_of(&h, true)? };
    unwind(&h, true);
    let n = st.depth as usize;
    if n > MAX_FRAMES {
        return None;
    }
    if n > 0 {
        let top = st.frames[slot(n.wrapping_sub(1))];
        if top.stack_depth == h.stack_depth && top.probe_id == probe_id {
            count(Counter::MorestackReentry);
            return Some(());
        }
    }
    if n >= MAX_FRAMES {
        count(Counter::DepthOverflow);
        return Some(());
    }
    if n == 0 {
        if st.has_inherited != 0 {
            st.trace_id = st.inherited_trace_id;
            st.trace_flags = if st.has_inherited & INHERIT_REMOTE == 0 {
                st.trace_flags
            } else if st.has_inherited & INHERIT_SAMPLED != 0 {
                SPAN_TRACE_REMOTE_SAMPLED as u32
            } else {
                SPAN_TRACE_REMOTE_NOT_SAMPLED as u32
            };
        } else {
            st.trace_id = random_trace_id();
            st.trace_flags = 0;
        }
    }
    let parent = parent_of(st, n);
    let span_id = random_u64();
    let plan = PROBES.get(probe_id);
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
    st.frames[slot(n)] = Frame { stack_depth: h.stack_depth, start_ns: h.now, span_id, probe_id, _pad: 0, saved };
    st.depth = (n + 1) as u32;
    if let Some(plan) = plan {
        if plan.flags & PLAN_INJECT_CONTEXT != 0 {
            // This outgoing request carries the CLIENT span's context; the goroutine that
            // writes it (http.persistConn.writeLoop) picks it up by the request pointer.
            let ctx = InjectContext {
                trace_id: st.trace_id,
                span_id,
                sampled: (st.trace_flags & SPAN_TRACE_REMOTE_NOT_SAMPLED as u32 == 0) as u32,
                state: 0,
                writer: 0,
                n_at_entry: 0,
            };
            let key = GoroutineKey { tgid: h.key.tgid, _pad: 0, goroutine: saved[0] };
            let _ = INJECT_BY_REQUEST.insert(&key, &ctx, 0);
        }
    }
    if let Some(plan) = plan {
        if plan.flags & PLAN_HAS_ENTRY_FETCH != 0 {
            let hdr = EventHeader {
                kind: EventKind::EntryValues as u32,
                probe_id,
                tgid: h.key.tgid,
                tid: h.tid,
                goroutine: h.key.goroutine,
                start_ns: h.now,
                end_ns: 0,
                trace_id: st.trace_id,
                span_id,
                parent_span_id: parent,
                ret_offset: 0,
                flags: span_flags(st, n),
                data_len: 0,
            };
            emit(&hdr, Some((0, h.sp)));
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
    let probe_id = h.cookie as u32;
    let Some(st) = state_of(&h, false) else {
        count(Counter::UnmatchedReturn);
        return None;
    };
    let st = unsafe { &mut *st };
    unwind(&h, false);
    let n = st.depth as usize;
    if n > MAX_FRAMES {
        return None;
    }
    let i = slot(n.wrapping_sub(1));
    if n == 0 || st.frames[i].stack_depth != h.stack_depth || st.frames[i].probe_id != probe_id {
        count(Counter::UnmatchedReturn);
        return None;
    }
    let f = st.frames[i];
    st.depth = i as u32;
    count(Counter::Returns);
    unsafe { (*h.scratch).saved = f.saved };
    let hdr = EventHeader {
        kind: EventKind::SpanEnd as u32,
        probe_id,
        tgid: h.key.tgid,
        tid: h.tid,
        goroutine: h.key.goroutine,
        start_ns: f.start_ns,
        end_ns: h.now,
        trace_id: st.trace_id,
        span_id: f.span_id,
        parent_span_id: parent_of(st, i),
        ret_offset: (h.cookie >> 48) as u16,
        flags: span_flags(st, i),
        data_len: 0,
    };
    emit(&hdr, Some((1, h.sp)));
    if i == 0 && st.has_inherited & INHERIT_ONE_SHOT != 0 {
        // An incoming request's context is used by that request's span only.
        st.has_inherited = 0;
    }
    if i == 0 && st.has_inherited == 0 {
        // Nothing left to remember for this goroutine: keep the map small.
        let _ = GOROUTINES.remove(&h.key);
    }
    Some(())
}

#[uprobe]
pub fn gotel_newproc_entry(ctx: ProbeContext) -> u32 {
    let _ = on_newproc_entry(&ctx);
    0
}

#[inline(always)]
fn on_newproc_entry(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    // newproc1(fn *funcval, callergp *g, ...): callergp is the second integer argument (RBX).
    let key = GoroutineKey { tgid: (pid_tgid >> 32) as u32, _pad: 0, goroutine: s.regs[REG_R14 as usize] };
    let _ = NEWPROC.insert(&key, &s.regs[REG_RBX as usize], 0);
    Some(())
}

#[uprobe]
pub fn gotel_newproc_return(ctx: ProbeContext) -> u32 {
    let _ = on_newproc_return(&ctx);
    0
}

#[inline(always)]
fn on_newproc_return(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let m_key = GoroutineKey { tgid, _pad: 0, goroutine: s.regs[REG_R14 as usize] };
    let caller = unsafe { *NEWPROC.get(&m_key)? };
    let _ = NEWPROC.remove(&m_key);
    let new_key = GoroutineKey { tgid, _pad: 0, goroutine: s.regs[REG_RAX as usize] };
    if GOROUTINES.get_ptr(&new_key).is_some() {
        // The g of a goroutine that ended inside traced calls (runtime.Goexit, or a panic
        // recovered above them): those calls did not return. Report them, then forget them.
        let mut ctx = UnwindLoop {
            key: new_key,
            stack_depth: 0,
            cookie: 0,
            now: unsafe { bpf_ktime_get_ns() },
            tid: bpf_get_current_pid_tgid() as u32,
            inclusive: 1,
        };
        unsafe {
            bpf_loop(MAX_FRAMES as u32, unwind_one as *mut _, &mut ctx as *mut UnwindLoop as *mut _, 0);
        }
        let _ = GOROUTINES.remove(&new_key);
        count(Counter::GoroutineReused);
    }
    let caller_key = GoroutineKey { tgid, _pad: 0, goroutine: caller };
    let parent = unsafe { GOROUTINES.get(&caller_key)? };
    let n = parent.depth as usize;
    s.state.depth = 0;
    if n > 0 && n <= MAX_FRAMES {
        s.state.has_inherited = INHERIT_SET;
        s.state.trace_flags = parent.trace_flags;
        s.state.inherited_trace_id = parent.trace_id;
        s.state.inherited_span_id = parent.frames[slot(n.wrapping_sub(1))].span_id;
    } else if parent.has_inherited != 0 && parent.has_inherited & INHERIT_ONE_SHOT == 0 {
        s.state.has_inherited = parent.has_inherited;
        s.state.trace_flags = parent.trace_flags;
        s.state.inherited_trace_id = parent.inherited_trace_id;
        s.state.inherited_span_id = parent.inherited_span_id;
    } else {
        return None;
    }
    if GOROUTINES.insert(&new_key, &s.state, 0).is_err() {
        count(Counter::StateInsertFailed);
    }
    Some(())
}

/// Outgoing requests whose CLIENT span asked for injection, by (tgid, *http.Request).
#[map]
static INJECT_BY_REQUEST: LruHashMap<GoroutineKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// The request a goroutine is writing right now, by (tgid, g).
#[map]
static INJECT_PENDING: LruHashMap<GoroutineKey, InjectContext> = LruHashMap::with_max_entries(4096, 0);

/// bufio.Writer field offsets (userspace fills index 0 from DWARF).
#[map]
static INJECT_CONFIG: Array<InjectConfig> = Array::with_max_entries(1, 0);

/// Bytes of a request's own header block that are searched for an existing `traceparent`.
const MAX_SCANNED_HEADERS: usize = 2048;

#[inline(always)]
fn goroutine_key(regs: &[u64; 32]) -> GoroutineKey {
    GoroutineKey { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, goroutine: regs[REG_R14 as usize] }
}

#[inline(always)]
fn copy_regs(ctx: &ProbeContext) -> Option<*mut Scratch> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    let s = unsafe { &mut *scratch };
    let regs_bytes = unsafe { core::slice::from_raw_parts_mut(s.regs.as_mut_ptr() as *mut u8, PT_REGS_SLOTS * 8) };
    unsafe { bpf_probe_read_kernel_buf(ctx.regs as *const u8, regs_bytes) }.ok()?;
    Some(scratch)
}

/// Entry of `net/http.(*Request).write(r *Request, w io.Writer, ...)` (RAX = r): if the request
/// carries a context to inject, the current goroutine is the one writing it.
#[uprobe]
pub fn gotel_request_write(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let s = unsafe { &mut *copy_regs(&ctx)? };
        let g = goroutine_key(&s.regs);
        let req = GoroutineKey { tgid: g.tgid, _pad: 0, goroutine: s.regs[REG_RAX as usize] };
        let ctx = unsafe { *INJECT_BY_REQUEST.get(&req)? };
        let _ = INJECT_BY_REQUEST.remove(&req);
        let _ = INJECT_PENDING.insert(&g, &ctx, 0);
        Some(())
    })();
    0
}

/// Entry of `net/http.Header.writeSubset(h Header, w io.Writer, ...)` (RBX, RCX = w): remember
/// where the request's own header lines start in the connection's buffer.
#[uprobe]
pub fn gotel_header_write_entry(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let s = unsafe { &mut *copy_regs(&ctx)? };
        let g = goroutine_key(&s.regs);
        let pending = unsafe { &mut *INJECT_PENDING.get_ptr_mut(&g)? };
        if pending.state != 0 {
            return None;
        }
        let cfg = INJECT_CONFIG.get(0)?;
        let writer = s.regs[REG_RCX as usize];
        pending.n_at_entry = read_u64(writer.wrapping_add(cfg.n_offset as u64))?;
        pending.writer = writer;
        pending.state = 1;
        Some(())
    })();
    0
}

/// State of the header scan, shared with its `bpf_loop` callback.
#[repr(C)]
struct ScanLoop {
    len: u64,
    found: u64,
}

#[inline(never)]
extern "C" fn scan_one(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut ScanLoop) };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &*scratch };
    let i = i as usize;
    if i + TRACEPARENT_NAME.len() > c.len as usize {
        return 1;
    }
    let i = i & (MAX_SCANNED_HEADERS - 1);
    if i > 0 && s.buf[(i - 1) & (MAX_SCANNED_HEADERS - 1)] != b'\n' {
        return 0;
    }
    for k in 0..TRACEPARENT_NAME.len() {
        if s.buf[(i + k) & (SCRATCH_SIZE - 1)] | 0x20 != TRACEPARENT_NAME[k] | 0x20 {
            return 0;
        }
    }
    c.found = 1;
    1
}

/// RET of `net/http.Header.writeSubset`: the request's own headers are in the buffer. Unless one
/// of them is a `traceparent`, append ours after them, inside the buffer's length only, and
/// advance `n`. The only write gotel ever makes into a target, and only with
/// GOTEL_PROPAGATION=inject.
#[uprobe]
pub fn gotel_header_write_return(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let scratch = copy_regs(&ctx)?;
        let s = unsafe { &mut *scratch };
        let g = goroutine_key(&s.regs);
        let p = unsafe { *INJECT_PENDING.get(&g)? };
        if p.state != 1 {
            return None;
        }
        let _ = INJECT_PENDING.remove(&g);
        let cfg = INJECT_CONFIG.get(0)?;
        let buf_ptr = read_u64(p.writer.wrapping_add(cfg.buf_offset as u64))?;
        let buf_len = read_u64(p.writer.wrapping_add(cfg.buf_offset as u64 + 8))?;
        let n_addr = p.writer.wrapping_add(cfg.n_offset as u64);
        let n = read_u64(n_addr)?;
        let written = n.wrapping_sub(p.n_at_entry);
        if buf_ptr == 0
            || n < p.n_at_entry
            || written as usize >= MAX_SCANNED_HEADERS
            || n > buf_len
            || buf_len > (1 << 24)
        {
            // Flushed meanwhile, or a block too large to check: do not touch it.
            count(Counter::InjectSkippedNoRoom);
            return None;
        }
        let len = written as usize & (MAX_SCANNED_HEADERS - 1);
        if len > 0 {
            unsafe { bpf_probe_read_user_buf((buf_ptr + p.n_at_entry) as *const u8, &mut s.buf[..len]) }.ok()?;
        }
        let mut scan = ScanLoop { len: len as u64, found: 0 };
        unsafe {
            bpf_loop(MAX_SCANNED_HEADERS as u32, scan_one as *mut _, &mut scan as *mut ScanLoop as *mut _, 0);
        }
        if scan.found != 0 {
            count(Counter::InjectSkippedPresent);
            return None;
        }
        if n + TRACEPARENT_LINE_LEN as u64 > buf_len {
            count(Counter::InjectSkippedNoRoom);
            return None;
        }
        let s = unsafe { &mut *scratch };
        let line = &mut s.buf[..TRACEPARENT_LINE_LEN];
        line[..16].copy_from_slice(b"traceparent: 00-");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for i in 0..16 {
            let b = p.trace_id[i];
            line[16 + 2 * i] = HEX[(b >> 4) as usize];
            line[17 + 2 * i] = HEX[(b & 15) as usize];
        }
        line[48] = b'-';
        let span = p.span_id.to_be_bytes();
        for i in 0..8 {
            line[49 + 2 * i] = HEX[(span[i] >> 4) as usize];
            line[50 + 2 * i] = HEX[(span[i] & 15) as usize];
        }
        line[65] = b'-';
        line[66] = b'0';
        line[67] = if p.sampled != 0 { b'1' } else { b'0' };
        line[68] = b'\r';
        line[69] = b'\n';
        let rc = unsafe {
            bpf_probe_write_user((buf_ptr + n) as *mut _, line.as_ptr() as *const _, TRACEPARENT_LINE_LEN as u32)
        };
        if rc != 0 {
            return None;
        }
        let new_n = n + TRACEPARENT_LINE_LEN as u64;
        let rc = unsafe { bpf_probe_write_user(n_addr as *mut _, &new_n as *const u64 as *const _, 8) };
        if rc == 0 {
            count(Counter::TraceparentInjected);
        }
        Some(())
    })();
    0
}

/// Length of `traceparent: 00-<32 hex>-<16 hex>-<2 hex>` without optional spaces.
const TRACEPARENT_VALUE_LEN: usize = 55;
const TRACEPARENT_NAME: &[u8; 12] = b"traceparent:";

#[uprobe]
pub fn gotel_header_line(ctx: ProbeContext) -> u32 {
    let _ = on_header_line(&ctx);
    0
}

#[inline(always)]
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A raw request header line (the result of `readContinuedLineSlice`, RAX = data, RBX = len).
/// A valid `traceparent` becomes the parent of the next root call on this goroutine, which is
/// the request's server span. Read-only: nothing in the target is written. Invalid values
/// (bad length, non-hex, version ff, all-zero ids) are counted and ignored.
#[inline(always)]
fn on_header_line(ctx: &ProbeContext) -> Option<()> {
    let h = hit(ctx)?;
    let s = unsafe { &mut *h.scratch };
    let (ptr, len) = (s.regs[REG_RAX as usize], s.regs[REG_RBX as usize] as usize);
    if len < TRACEPARENT_NAME.len() + TRACEPARENT_VALUE_LEN || len > TRACEPARENT_NAME.len() + TRACEPARENT_VALUE_LEN + 8
    {
        return None;
    }
    let mut line = [0u8; 80];
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut line[..]) }.ok()?;
    for i in 0..TRACEPARENT_NAME.len() {
        if line[i] | 0x20 != TRACEPARENT_NAME[i] | 0x20 {
            return None;
        }
    }
    let mut v = TRACEPARENT_NAME.len();
    for _ in 0..8 {
        if line[v] == b' ' || line[v] == b'\t' {
            v += 1;
        }
    }
    if len - v != TRACEPARENT_VALUE_LEN || v > 80 - TRACEPARENT_VALUE_LEN {
        count(Counter::TraceparentInvalid);
        return None;
    }
    let val = &line[v..v + TRACEPARENT_VALUE_LEN];
    let byte_at = |i: usize| -> Option<u8> { Some(hex(val[i])? << 4 | hex(val[i + 1])?) };
    let mut trace_id = [0u8; 16];
    let mut span = [0u8; 8];
    let mut ok = val[2] == b'-' && val[35] == b'-' && val[52] == b'-';
    let version = byte_at(0);
    let trace_flags = byte_at(53);
    ok &= version.is_some_and(|v| v != 0xff) && trace_flags.is_some();
    let mut nonzero_trace = 0u8;
    for i in 0..16 {
        match byte_at(3 + 2 * i) {
            Some(b) => {
                trace_id[i] = b;
                nonzero_trace |= b;
            }
            None => ok = false,
        }
    }
    let mut nonzero_span = 0u8;
    for i in 0..8 {
        match byte_at(36 + 2 * i) {
            Some(b) => {
                span[i] = b;
                nonzero_span |= b;
            }
            None => ok = false,
        }
    }
    if !ok || nonzero_trace == 0 || nonzero_span == 0 {
        count(Counter::TraceparentInvalid);
        return None;
    }
    let st = unsafe { &mut *state_of(&h, true)? };
    if st.depth != 0 {
        // Headers read inside a traced call (a client reading a response): not a request.
        return None;
    }
    st.has_inherited = INHERIT_SET | INHERIT_ONE_SHOT | INHERIT_REMOTE;
    if trace_flags.unwrap_or(0) & 1 != 0 {
        st.has_inherited |= INHERIT_SAMPLED;
    }
    st.inherited_trace_id = trace_id;
    st.inherited_span_id = u64::from_be_bytes(span);
    count(Counter::TraceparentAdopted);
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
