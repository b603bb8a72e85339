//! Goroutine ancestry at `runtime.newproc1`, which creates every goroutine: the new goroutine
//! inherits the spawning goroutine's innermost traced call as the parent of its own root calls
//! (or the context the spawner inherited itself), so work handed to a goroutine stays in its
//! trace.
//!
//! One trap per goroutine start: only the RETs of newproc1, where RAX holds the new g. newproc1
//! runs on the system stack, so R14 is the M's g0 there, and `g0.m.curg` is still the goroutine
//! that executed the `go` statement (`NEWPROC_CONFIG` has the two field offsets; a coroutine
//! started by `iter.Pull` calls newproc1 on its own stack, where `g.m.curg` is that g itself).
//! When user space does not know the offsets (a binary without DWARF of a Go release missing
//! from the layout table), the entry hook is attached too and remembers the caller's g per M in
//! `NEWPROC` (two traps, as before). A g may be a reused one whose
//! previous goroutine ended inside traced calls (`runtime.Goexit`, a recovered panic above
//! them): those calls are reported as abandoned first, then the record is forgotten, or
//! rewritten in place when the new goroutine inherits a context.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    rules::{hand_off, inherit_from},
    Counter, GoroutineKey, REG_R14, REG_RAX, REG_RBX,
};

use crate::{
    context::{copy_regs, current_goroutine, read_u64, Scratch},
    frames::unwind_goroutine,
    maps::{count, GOROUTINES, NEWPROC, NEWPROC_CONFIG},
};

#[uprobe]
pub fn gotel_newproc_entry(ctx: ProbeContext) -> u32 {
    let _ = on_newproc_entry(&ctx);
    0
}

#[inline(always)]
fn on_newproc_entry(ctx: &ProbeContext) -> Option<()> {
    let s = unsafe { &mut *copy_regs(ctx)? };
    // newproc1(fn *funcval, callergp *g, ...): callergp is the second integer argument (RBX).
    let _ = NEWPROC.insert(&current_goroutine(&s.regs), &s.regs[REG_RBX as usize], 0);
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
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let g = s.regs[REG_R14 as usize];
    let cfg = NEWPROC_CONFIG.get(s.slot)?;
    let caller = if cfg.enabled != 0 {
        let m = current_m(s, pid_tgid, g, cfg.g_m)?;
        read_u64(m.wrapping_add(cfg.m_curg as u64))?
    } else {
        let m_key = GoroutineKey::new(tgid, g);
        let caller = unsafe { *NEWPROC.get(&m_key)? };
        let _ = NEWPROC.remove(&m_key);
        caller
    };
    let new_key = GoroutineKey::new(tgid, s.regs[REG_RAX as usize]);
    let old = GOROUTINES.get_ptr_mut(&new_key);
    if let Some(old) = old {
        // The g of a goroutine that ended inside traced calls: those calls did not return.
        // Report them, then forget them. A record with neither calls nor an inherited context
        // (kept by an HTTP server span's goroutine, `frames::keeps_record`) is as good as
        // none: forgotten without a count.
        let o = unsafe { &*old };
        if o.depth != 0 || o.has_inherited != 0 {
            if o.depth != 0 {
                unwind_goroutine(new_key, 0, 0, unsafe { bpf_ktime_get_ns() }, pid_tgid as u32, true);
            }
            count(Counter::GoroutineReused);
        }
    }
    let Some(parent) = GOROUTINES.get_ptr_mut(&GoroutineKey::new(tgid, caller)) else {
        forget(old, &new_key);
        return None;
    };
    let parent = unsafe { &mut *parent };
    // The new goroutine's record: the reused g's own, rewritten in place (its calls were just
    // reported; depth 0 makes its frames unread), or a fresh one. In place spares an LRU
    // remove and insert (a 1.6 KB copy) for every goroutine a traced call starts on a reused
    // g, the steady state of a server that starts one per request (gRPC, `-spawn`).
    let child = match old {
        Some(old) => unsafe { &mut *old },
        None => &mut s.state,
    };
    if hand_off(parent, child) {
        count(Counter::GrpcContextHandedOff);
    } else if !inherit_from(parent, child) {
        forget(old, &new_key);
        return None;
    }
    if old.is_none() && GOROUTINES.insert(&new_key, &s.state, 0).is_err() {
        count(Counter::StateInsertFailed);
    }
    Some(())
}

/// `g.m` for the g running on this thread (g0 on the system stack): one user read, spared when
/// this CPU's last newproc1 ran on the same thread and g. An OS thread is one M for its whole
/// life, so the pair names the same M until the thread ends, and a new thread with the same id
/// *and* a g at the same address would take a wrap-around of the kernel's thread ids first.
/// The read saved is about a sixth of the program's run time: bpf_stats, builds interleaved,
/// 484 -> 402 ns per goroutine start (bench/hooks.py's goroutine row), 565 -> 472 on the HTTP
/// row (net/http's background read).
#[inline(always)]
fn current_m(s: &mut Scratch, pid_tgid: u64, g: u64, g_m: u32) -> Option<u64> {
    if s.m_thread == pid_tgid && s.m_g == g && s.m != 0 {
        return Some(s.m);
    }
    let m = read_u64(g.wrapping_add(g_m as u64))?;
    (s.m_thread, s.m_g, s.m) = (pid_tgid, g, m);
    Some(m)
}

/// Removes the reused g's record `old` (when it had one): the new goroutine inherits nothing.
#[inline(always)]
fn forget(old: Option<*mut gotel_shared::GoroutineState>, key: &GoroutineKey) {
    if old.is_some() {
        let _ = GOROUTINES.remove(key);
    }
}
