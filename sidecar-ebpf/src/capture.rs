//! Records into the ring buffer: the header, then the values the probe's plan captures at this
//! point (arguments at entry, results at return), built in the per-CPU scratch buffer and copied
//! out in one `bpf_ringbuf_output`.
//!
//! The plan (`PROBES[probe id]`, a list of `Fetch`, entry ones first) is run through
//! `bpf_loop` over this point's fetches, so the verifier checks one fetch instead of every
//! path through sixteen. Each fetch reads registers, a stack
//! slot or saved entry registers, follows up to `MAX_HOPS` pointers and copies string bytes; a
//! fault anywhere marks that value unreadable instead of dropping the record.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_user_buf, generated::bpf_loop, generated::bpf_ringbuf_output},
};
use gotel_shared::{
    header_block::BLOCK_BUF, Counter, EventHeader, Fetch, Root, ValueHeader, ValueKind, MAX_FETCHES, MAX_HOPS, MAX_STR,
    SCRATCH_SIZE, VALUE_NIL, VALUE_TRUNCATED, VALUE_UNREADABLE,
};

use crate::{
    context::{read_u64, Scratch},
    maps::{count, EVENTS, PROBES, SCRATCH},
};

const HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();
const VALUE_HEADER_SIZE: usize = core::mem::size_of::<ValueHeader>();

/// Where a record's values are captured.
#[derive(Clone, Copy)]
pub enum At {
    /// No values (an abandoned call).
    Nothing,
    /// The entry fetches, with the stack pointer at the probe.
    Entry(u64),
    /// The return fetches, with the stack pointer at the probe.
    Return(u64),
}

/// Writes the record header into the scratch buffer, appends the probe's values captured at
/// `at` and copies the record into the ring buffer (counted when it is full).
#[inline(always)]
pub fn emit(header: &EventHeader, at: At) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return };
    let s = unsafe { &mut *scratch };
    // A typed store: word moves, where a byte-slice copy is a load and a store per byte.
    unsafe { *(s.buf.as_mut_ptr() as *mut EventHeader) = *header };
    s.off = HEADER_SIZE as u64;
    match at {
        At::Nothing => {}
        At::Entry(sp) => capture_values(header.probe_id, sp, 0),
        At::Return(sp) => capture_values(header.probe_id, sp, 1),
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
    /// Index of the point's first fetch (the plan has the entry fetches first).
    first: u64,
}

/// Runs the probe's fetch instructions for this point (0 = entry, 1 = return).
#[inline(always)]
fn capture_values(probe_id: u32, sp: u64, at_return: u8) {
    let Some(plan) = PROBES.get(probe_id) else { return };
    let n = if (plan.nfetches as usize) < MAX_FETCHES { plan.nfetches } else { MAX_FETCHES as u32 };
    let entry = if (plan.entry_fetches as u32) < n { plan.entry_fetches as u32 } else { n };
    let (first, count) = if at_return != 0 { (entry, n - entry) } else { (0, entry) };
    let mut ctx = CaptureLoop { probe_id, at_return: at_return as u32, sp, first: first as u64 };
    unsafe {
        bpf_loop(count, capture_one as *mut _, &mut ctx as *mut CaptureLoop as *mut _, 0);
    }
}

#[inline(never)]
extern "C" fn capture_one(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let ctx = unsafe { &*(ctx as *const CaptureLoop) };
    let (probe_id, at_return, sp) = (ctx.probe_id, ctx.at_return, ctx.sp);
    let Some(plan) = PROBES.get(probe_id) else { return 1 };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &mut *scratch };
    let f = &plan.fetches[(ctx.first.wrapping_add(i) as usize) & (MAX_FETCHES - 1)];
    if f.at_return as u32 != at_return || s.frame_flags & f.skip_if as u32 != 0 {
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
/// Bytes of target memory read at once from a fetch's root pointer (the struct a register or
/// saved register points at): the fields the probe's fetches take from it (a request's method,
/// URL, host, peer, protocol version...) then cost one user read instead of one each. 256 bytes
/// hold every field of `net/http.Request` and `net/http.response` the built-in spans read; a
/// field beyond, or a window that cannot be read whole (the struct ends a mapping), is read
/// directly.
pub const WINDOW: usize = 256;

/// The window of the root pointer last read, per CPU in the scratch memory; reset by every
/// probe hit (`context::hit`), so a window never outlives the hit that read it (the target's
/// thread is stopped in the trap meanwhile), and is shared by whatever reads the same struct in
/// that hit: the HTTP server span's header scan reads `*http.Request`'s `ProtoMajor` and
/// `Header` from it, and the span's entry values then cost no read of their own.
#[repr(C, align(8))]
pub struct Window {
    /// The root pointer the window starts at (0: none yet).
    base: u64,
    /// 1 when `bytes[..WINDOW]` hold `[base, base + WINDOW)`.
    ok: u64,
    bytes: [u8; WINDOW + 16],
}

// Records, their values and the window are read and written a word at a time: the scratch
// buffer and every value in it are 8-byte aligned.
const _: () = assert!(core::mem::offset_of!(Scratch, buf) % 8 == 0);
const _: () = assert!(HEADER_SIZE % 8 == 0 && VALUE_HEADER_SIZE % 8 == 0);

/// The word at `p + a`, `p + a` 8-byte aligned: one load (a byte slice would be eight).
#[inline(always)]
fn aligned_word(p: *const u8, a: usize) -> u64 {
    unsafe { (p.add(a) as *const u64).read() }
}

/// The word at any offset `i` of the window, from the two aligned words around it.
#[inline(always)]
fn window_word(w: &Window, i: usize) -> u64 {
    let a = i & (WINDOW - 8);
    let shift = 8 * (i & 7);
    let lo = aligned_word(w.bytes.as_ptr(), a);
    if shift == 0 {
        return lo;
    }
    (lo >> shift) | (aligned_word(w.bytes.as_ptr(), a + 8) << (64 - shift))
}

/// The value words of the value header at `s.buf[o..]` (`o` 8-aligned).
#[inline(always)]
fn words(s: &Scratch, o: usize) -> (u64, u64) {
    let o = o & (SCRATCH_SIZE - 8);
    (aligned_word(s.buf.as_ptr(), o + 8), aligned_word(s.buf.as_ptr(), o + 16))
}

/// Sets the value words of the value header at `s.buf[o..]`.
#[inline(always)]
fn set_words(s: &mut Scratch, o: usize, w0: u64, w1: u64) {
    let o = o & (SCRATCH_SIZE - 8);
    unsafe {
        (s.buf.as_mut_ptr().add(o + 8) as *mut u64).write(w0);
        (s.buf.as_mut_ptr().add(o + 16) as *mut u64).write(w1);
    }
}

/// Reads the two words at `addr` straight into the value words of the header at `s.buf[o..]`,
/// in one user read; when only the first is readable (the end of a mapping), the second is 0.
/// False when unreadable.
#[inline(always)]
fn read_pair(s: &mut Scratch, addr: u64, o: usize) -> bool {
    let o = o & (SCRATCH_SIZE - 8);
    let dst = &mut s.buf[o + 8..o + 24];
    if unsafe { bpf_probe_read_user_buf(addr as *const u8, dst) }.is_ok() {
        return true;
    }
    match read_u64(addr) {
        Some(v) => {
            set_words(s, o, v, 0);
            true
        }
        None => false,
    }
}

/// Makes the window hold `base`'s first [`WINDOW`] bytes (one user read, unless it already
/// does).
#[inline(always)]
fn fill_window(s: &mut Scratch, base: u64) {
    if s.window.base != base {
        s.window.base = base;
        let dst = &mut s.window.bytes[..WINDOW];
        s.window.ok = unsafe { bpf_probe_read_user_buf(base as *const u8, dst) }.is_ok() as u64;
    }
}

/// Forgets the window and the copied header block (at the start of every probe hit).
#[inline(always)]
pub fn reset_window(s: &mut Scratch) {
    s.window.base = 0;
    s.block_len = 0;
}

/// Copies the `n` string bytes at target address `ptr` into `s.buf[dst_off..]` from the
/// header block already copied this hit (`Scratch::block_addr`) when they lie in it and
/// the copy does not overlap the record being written (the block sits at the buffer's end,
/// before `BLOCK_BUF`; a record reaching into it reads the target instead). A kernel read
/// costs about a quarter of a user read here (21 vs 78 ns) and touches no target memory.
#[inline(always)]
fn from_block(s: &mut Scratch, ptr: u64, n: usize, dst_off: usize) -> bool {
    let (start, len) = (s.block_addr, s.block_len);
    if len == 0 || ptr < start || ptr.wrapping_add(n as u64) > start.wrapping_add(len) || len > BLOCK_BUF as u64 {
        return false;
    }
    let src_off = BLOCK_BUF - len as usize + (ptr - start) as usize;
    if src_off < dst_off + n {
        return false;
    }
    let src = unsafe { s.buf.as_ptr().add(src_off & (SCRATCH_SIZE - 1)) };
    let n = n & (2 * MAX_STR - 1);
    let dst = unsafe { core::slice::from_raw_parts_mut(s.buf.as_mut_ptr().add(dst_off & (SCRATCH_SIZE - 1)), n) };
    unsafe { bpf_probe_read_kernel_buf(src, dst) }.is_ok()
}

/// The word at `base + off`, from the window of `base` when `off` lies in it.
#[inline(always)]
pub fn window_u64(s: &mut Scratch, base: u64, off: u64) -> Option<u64> {
    fill_window(s, base);
    if s.window.ok != 0 && off <= (WINDOW - 8) as u64 {
        return Some(window_word(&s.window, off as usize & (WINDOW - 1)));
    }
    read_u64(base.wrapping_add(off))
}

/// [`read_pair`] at `base + off`, from the window of `base` when `off` lies in it.
#[inline(always)]
fn window_pair(s: &mut Scratch, base: u64, off: u64, o: usize) -> bool {
    fill_window(s, base);
    if s.window.ok != 0 && off <= (WINDOW - 16) as u64 {
        let i = off as usize & (WINDOW - 1);
        let (w0, w1) = (window_word(&s.window, i), window_word(&s.window, (i + 8) & (WINDOW - 1)));
        set_words(s, o, w0, w1);
        return true;
    }
    read_pair(s, base.wrapping_add(off), o)
}

/// Reads one value into `s.buf[off..]`: its header, then string bytes when it has some.
/// Returns the bytes written (8-byte aligned). The words being read live in the header's place
/// in `s.buf`, not in registers: fewer spills, a smaller frame for this `bpf_loop` callback.
#[inline(always)]
fn fetch_one(s: &mut Scratch, f: &Fetch, sp: u64, off: usize) -> usize {
    let o = off & (SCRATCH_SIZE - 8);
    let mut flags = 0u16;
    let mut ok = true;
    if f.root == Root::Registers as u8 {
        let w0 = s.regs[(f.regs[0] & 31) as usize];
        let w1 = if f.nregs > 1 { s.regs[(f.regs[1] & 31) as usize] } else { 0 };
        set_words(s, o, w0, w1);
    } else if f.root == Root::Saved as u8 {
        let w0 = s.saved[(f.regs[0] & 1) as usize];
        let w1 = if f.nregs > 1 { s.saved[(f.regs[1] & 1) as usize] } else { 0 };
        set_words(s, o, w0, w1);
    } else {
        ok = read_pair(s, sp.wrapping_add(f.stack_offset as i64 as u64), o);
    }
    // Field path: each hop offsets the current pointer (the first word); all but the last
    // load a pointer. The first hop reads from the root pointer's window.
    let nhops = f.nhops as usize;
    for i in 0..MAX_HOPS {
        if !ok || i >= nhops {
            break;
        }
        let ptr = words(s, o).0;
        if ptr == 0 {
            flags |= VALUE_NIL;
            ok = false;
            break;
        }
        let addr = ptr.wrapping_add(f.hops[i] as i64 as u64);
        ok = if i == 0 {
            window_pair(s, ptr, f.hops[i] as i64 as u64, o)
        } else if i + 1 < nhops {
            match read_u64(addr) {
                Some(v) => {
                    set_words(s, o, v, 0);
                    true
                }
                None => false,
            }
        } else {
            read_pair(s, addr, o)
        };
    }
    let (mut w0, w1) = words(s, o);
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
            } else if w1 != 0 && f.max_len != 0 {
                (read_u64(w1).unwrap_or(0), read_u64(w1.wrapping_add(8)).unwrap_or(0))
            } else {
                (0, 0)
            };
            let max = if (f.max_len as usize) < MAX_STR { f.max_len as usize } else { MAX_STR };
            let mut n = str_len as usize;
            if n > max {
                n = max;
                flags |= VALUE_TRUNCATED;
            }
            if str_ptr != 0 && n > 0 {
                // Volatile: LLVM proves n <= max and drops a plain mask, and kernels before 6.8
                // do not bound a register by its comparison with another (6.1 refused the load).
                let n = unsafe { core::ptr::read_volatile::<usize>(&n) } & (2 * MAX_STR - 1);
                let dst_off = (off + VALUE_HEADER_SIZE) & (SCRATCH_SIZE - 1);
                if from_block(s, str_ptr, n, dst_off) {
                    payload = n;
                } else if unsafe {
                    let dst = core::slice::from_raw_parts_mut(s.buf.as_mut_ptr().add(dst_off), n);
                    bpf_probe_read_user_buf(str_ptr as *const u8, dst)
                }
                .is_ok()
                {
                    payload = n;
                } else if kind == ValueKind::String as u8 {
                    ok = false;
                }
            }
        }
    }
    if !ok {
        flags |= VALUE_UNREADABLE;
        payload = 0;
    }
    let vh = unsafe { &mut *(s.buf.as_mut_ptr().add(o) as *mut ValueHeader) };
    vh.slot = f.slot;
    vh.flags = flags;
    vh.len = payload as u32;
    vh.word0 = w0;
    (VALUE_HEADER_SIZE + payload + 7) & !7
}
