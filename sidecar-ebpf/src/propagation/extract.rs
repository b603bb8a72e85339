//! Incoming trace context: `gotel_header_line` at the RETs of
//! `net/textproto.(*Reader).readContinuedLineSlice`, which returns one raw request header line
//! (RAX = data, RBX = len). A valid `traceparent` becomes the parent of the next root call on
//! this goroutine, which is the request's server span. Read-only: nothing in the target is
//! written. Invalid values (bad length, non-hex, version ff, all-zero ids: the rules of
//! `gotel_shared::traceparent::parse_header_line`) are counted and ignored.
use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::uprobe, programs::ProbeContext};
use gotel_shared::{
    rules::adopt_remote,
    traceparent::{may_be_traceparent, parse_header_line, HeaderLine, HEADER_LINE_BUF},
    Counter, REG_RAX, REG_RBX,
};

use crate::{
    context::{hit, state_of},
    maps::count,
};

#[uprobe]
pub fn gotel_header_line(ctx: ProbeContext) -> u32 {
    let _ = on_header_line(&ctx);
    0
}

#[inline(always)]
fn on_header_line(ctx: &ProbeContext) -> Option<()> {
    let h = hit(ctx)?;
    let s = unsafe { &mut *h.scratch };
    let (ptr, len) = (s.regs[REG_RAX as usize], s.regs[REG_RBX as usize] as usize);
    if !may_be_traceparent(len) {
        // Every other header line ends here, before any copy.
        return None;
    }
    let mut line = [0u8; HEADER_LINE_BUF];
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut line[..]) }.ok()?;
    let remote = match parse_header_line(&line, len) {
        HeaderLine::Other => return None,
        HeaderLine::Invalid => {
            count(Counter::TraceparentInvalid);
            return None;
        }
        HeaderLine::Valid(remote) => remote,
    };
    let st = unsafe { &mut *state_of(&h, true)? };
    if adopt_remote(st, &remote) {
        count(Counter::TraceparentAdopted);
    }
    Some(())
}
