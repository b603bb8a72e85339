//! Outgoing trace context written into the target's memory (`GOTEL_PROPAGATION=inject`): the
//! ONLY module that calls `bpf_probe_write_user`, so it can be reviewed alone. User space loads
//! these programs only when injection was asked for, and a test on the shipped object
//! (`only_the_injection_program_writes_user_memory` in `sidecar/src/attach.rs`) checks that no
//! other program calls the helper.
//!
//! Per outgoing request, once `propagation::handoff` gave the writing goroutine its context:
//! 1. `gotel_header_write_entry` (entry of `net/http.Header.writeSubset`) notes where the
//!    request's own header lines start in the connection's `bufio.Writer`.
//! 2. `gotel_header_write_return` (its RETs): unless the request already has a `traceparent`,
//!    appends ours after its headers, inside the buffer's length only, and advances `n`.
use aya_ebpf::{
    helpers::{bpf_probe_read_user_buf, generated::bpf_loop, generated::bpf_probe_write_user},
    macros::uprobe,
    programs::ProbeContext,
};
use gotel_shared::{
    traceparent::{format_traceparent_line, TRACEPARENT_LINE_LEN, TRACEPARENT_NAME},
    Counter, REG_RCX, SCRATCH_SIZE,
};

use crate::{
    context::{copy_regs, current_goroutine, read_u64},
    maps::{count, INJECT_CONFIG, INJECT_PENDING, SCRATCH},
};

/// Bytes of a request's own header block that are searched for an existing `traceparent`.
const MAX_SCANNED_HEADERS: usize = 2048;

/// Step 1, entry of `net/http.Header.writeSubset(h Header, w io.Writer, ...)` (RBX, RCX = w):
/// remember where the request's own header lines start in the connection's buffer.
#[uprobe]
pub fn gotel_header_write_entry(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let s = unsafe { &mut *copy_regs(&ctx)? };
        let g = current_goroutine(&s.regs);
        let pending = unsafe { &mut *INJECT_PENDING.get_ptr_mut(&g)? };
        if pending.state != 0 {
            return None;
        }
        let cfg = INJECT_CONFIG.get(s.slot)?;
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

/// Whether a header line starting at byte `i` of the copied block is a `traceparent`.
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

/// Step 2, RET of `net/http.Header.writeSubset`: the request's own headers are in the buffer.
/// Unless one of them is a `traceparent`, append ours after them, inside the buffer's length
/// only, and advance `n`. The only write gotel ever makes into a target.
#[uprobe]
pub fn gotel_header_write_return(ctx: ProbeContext) -> u32 {
    let _ = (|| -> Option<()> {
        let scratch = copy_regs(&ctx)?;
        let s = unsafe { &mut *scratch };
        let g = current_goroutine(&s.regs);
        let p = unsafe { *INJECT_PENDING.get(&g)? };
        if p.state != 1 {
            return None;
        }
        let _ = INJECT_PENDING.remove(&g);
        let cfg = INJECT_CONFIG.get(s.slot)?;
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
        let line = s.buf.first_chunk_mut::<TRACEPARENT_LINE_LEN>()?;
        format_traceparent_line(line, &p.trace_context());
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
