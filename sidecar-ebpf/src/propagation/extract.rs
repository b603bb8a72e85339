//! Incoming trace context, read-only and without a trap of its own: `gotel_entry`, at the
//! entry of the HTTP server span (`net/http.serverHandler.ServeHTTP`, plan flag
//! `PLAN_SCAN_HEADERS`), copies the bytes that precede the read index of the connection's
//! `bufio.Reader` (`rw.(*http.response).conn.bufr`) and scans them backward for this request's
//! header lines (`gotel_shared::header_block`, where the rules and their tests are).
//!
//! A valid `traceparent` becomes the parent of this root call, the server span; invalid ones are
//! counted and ignored, and so are requests whose header block is no longer whole in the buffer
//! without a `traceparent` among the lines left (`TraceparentUnreadable`). The `User-Agent`
//! value's address and length go into the register copy for the span's fetches. HTTP/2
//! requests (`ProtoMajor` 2) are skipped: their headers are HPACK-encoded frames, never text
//! lines (the per-line hook this replaces never saw them either).
//!
//! When the block is not whole and no `traceparent` is among the lines left, the request's
//! parsed `http.Header` map is walked instead (`from_header_map`, rules in
//! `gotel_shared::header_map`): no trap of its own either, a few user-memory reads per header.
use aya_ebpf::helpers::{bpf_probe_read_user_buf, generated::bpf_loop};
use gotel_shared::{
    header_block::{BlockScan, Outcome, BLOCK_BUF, MAX_SCAN_STEPS},
    header_map::{MapWalk, Memory, WalkEnd, MAP_NONE, MAX_WALK_STEPS},
    rules::adopt_remote,
    traceparent::{parse_header_line, HeaderLine, HEADER_LINE_BUF, TRACEPARENT_NAME, TRACEPARENT_VALUE_LEN},
    Counter, GoroutineState, REG_RCX, REG_RDI, REG_USER_AGENT_LEN, REG_USER_AGENT_PTR,
};

use crate::{
    context::{read_u64, Hit, Scratch},
    maps::{count, EXTRACT_CONFIG, SCRATCH},
};

/// Scans the request's header block; adopts its `traceparent` when no traced call is in
/// progress on the goroutine (`depth` 0), like the per-line hook did.
#[inline(always)]
pub fn scan_request_headers(h: &Hit, st: &mut GoroutineState, depth: usize) {
    let s = unsafe { &mut *h.scratch };
    s.regs[REG_USER_AGENT_PTR as usize] = 0;
    s.regs[REG_USER_AGENT_LEN as usize] = 0;
    scan(h.scratch, st, depth as u64);
}

/// A BPF function of its own: its stack (the traceparent parse) is not added to the frame of
/// `gotel_entry`, which has little left.
#[inline(never)]
fn scan(scratch: *mut Scratch, st: *mut GoroutineState, depth: u64) -> u64 {
    match scan_inner(scratch, st, depth) {
        Some(()) => 1,
        None => 0,
    }
}

#[inline(always)]
fn scan_inner(scratch: *mut Scratch, st: *mut GoroutineState, depth: u64) -> Option<()> {
    let cfg = EXTRACT_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let s = unsafe { &mut *scratch };
    let (req, rw) = (s.regs[REG_RDI as usize], s.regs[REG_RCX as usize]);
    if read_u64(req.wrapping_add(cfg.request_proto_major as u64))? != 1 {
        return None;
    }
    let (Some(data), Some(len), Some(r)) = read_reader(cfg, rw) else {
        from_header_map(scratch, st, req, depth, 1);
        return None;
    };
    if r == 0 || r > len {
        from_header_map(scratch, st, req, depth, 1);
        return None;
    }
    let n = if r > BLOCK_BUF as u64 { BLOCK_BUF } else { r as usize };
    let n = n & (2 * BLOCK_BUF - 1);
    if n == 0 || n > BLOCK_BUF {
        return None;
    }
    // The bytes [r - n, r) of the buffer, copied to end at BLOCK_BUF.
    let from = data.wrapping_add(r).wrapping_sub(n as u64);
    let dst = unsafe { core::slice::from_raw_parts_mut(s.buf.as_mut_ptr().add(BLOCK_BUF - n), n) };
    if unsafe { bpf_probe_read_user_buf(from as *const u8, dst) }.is_err() {
        from_header_map(scratch, st, req, depth, 1);
        return None;
    }
    s.scan = BlockScan::new(n);
    unsafe {
        bpf_loop(MAX_SCAN_STEPS, scan_step as *mut _, core::ptr::null_mut(), 0);
    }
    let s = unsafe { &mut *scratch };
    let scan = &s.scan;
    // Position x of the copy is at data + r - BLOCK_BUF + x in the target.
    let origin = data.wrapping_add(r).wrapping_sub(BLOCK_BUF as u64);
    let (ua_start, ua_len, outcome) = (scan.ua_start, scan.ua_len, scan.outcome);
    let found = scan.traceparent(&s.buf);
    if ua_start != 0 {
        s.regs[REG_USER_AGENT_PTR as usize] = origin.wrapping_add(ua_start);
        s.regs[REG_USER_AGENT_LEN as usize] = ua_len;
    }
    let whole = outcome == Outcome::RequestLine as u64;
    match found {
        None => {}
        Some(HeaderLine::Other) => {}
        Some(HeaderLine::Invalid) => count(Counter::TraceparentInvalid),
        Some(HeaderLine::Valid(remote)) => {
            if depth == 0 && adopt_remote(unsafe { &mut *st }, &remote) {
                count(Counter::TraceparentAdopted);
            }
        }
    }
    // Lines are gone: the map has what the buffer lost (the traceparent, or the User-Agent).
    if !whole && (found.is_none() || ua_start == 0) {
        from_header_map(scratch, st, req, depth, found.is_none() as u64);
    }
    Some(())
}

/// The connection reader's buffer address and length and its read index.
#[inline(always)]
fn read_reader(cfg: &gotel_shared::ExtractConfig, rw: u64) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Some(reader) = read_u64(rw.wrapping_add(cfg.response_conn as u64))
        .and_then(|conn| read_u64(conn.wrapping_add(cfg.conn_bufr as u64)))
    else {
        return (None, None, None);
    };
    (
        read_u64(reader.wrapping_add(cfg.reader_buf as u64)),
        read_u64(reader.wrapping_add(cfg.reader_buf as u64 + 8)),
        read_u64(reader.wrapping_add(cfg.reader_r as u64)),
    )
}

/// The target's memory for the map walk.
struct User;

impl Memory for User {
    #[inline(always)]
    fn read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        unsafe { bpf_probe_read_user_buf(addr as *const u8, out) }.is_ok()
    }
}

/// The fallback: walks `r.Header` for `Traceparent` (unless `want_tp` is 0: the buffer had it)
/// and `User-Agent` (when the buffer gave none). A BPF function of its own, like `scan`.
#[inline(never)]
fn from_header_map(scratch: *mut Scratch, st: *mut GoroutineState, req: u64, depth: u64, want_tp: u64) -> u64 {
    match walk_header_map(scratch, st, req, depth, want_tp) {
        Some(()) => 1,
        None => 0,
    }
}

#[inline(always)]
fn walk_header_map(scratch: *mut Scratch, st: *mut GoroutineState, req: u64, depth: u64, want_tp: u64) -> Option<()> {
    let cfg = EXTRACT_CONFIG.get(0)?;
    let l = &cfg.header_map;
    if l.kind == MAP_NONE {
        if want_tp != 0 {
            count(Counter::TraceparentUnreadable);
        }
        return None;
    }
    let s = unsafe { &mut *scratch };
    let map = read_u64(req.wrapping_add(l.request_header as u64)).unwrap_or(0);
    s.walk = MapWalk::start(l, map, &mut User);
    unsafe {
        bpf_loop(MAX_WALK_STEPS, walk_step as *mut _, core::ptr::null_mut(), 0);
    }
    let s = unsafe { &mut *scratch };
    let (end, tp, ua) = (s.walk.end, s.walk.traceparent_elem, s.walk.user_agent_elem);
    if end == WalkEnd::Complete as u64 {
        count(Counter::HeaderMapWalked);
    }
    if ua != 0 && s.regs[REG_USER_AGENT_PTR as usize] == 0 {
        if let Some((ptr, len)) = MapWalk::last_value(ua, &mut User) {
            s.regs[REG_USER_AGENT_PTR as usize] = ptr;
            s.regs[REG_USER_AGENT_LEN as usize] = len;
        }
    }
    if want_tp == 0 {
        return Some(());
    }
    if tp == 0 {
        if end != WalkEnd::Complete as u64 {
            count(Counter::TraceparentUnreadable);
        }
        return None;
    }
    // The value, as the line `traceparent: <value>` the buffer scan would have seen.
    let (ptr, len) = MapWalk::last_value(tp, &mut User)?;
    if len != TRACEPARENT_VALUE_LEN as u64 {
        count(Counter::TraceparentInvalid);
        return None;
    }
    const AT: usize = TRACEPARENT_NAME.len() + 1;
    s.buf[..TRACEPARENT_NAME.len()].copy_from_slice(TRACEPARENT_NAME);
    s.buf[TRACEPARENT_NAME.len()] = b' ';
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut s.buf[AT..AT + TRACEPARENT_VALUE_LEN]) }.ok()?;
    let line: &[u8; HEADER_LINE_BUF] = s.buf[..HEADER_LINE_BUF].try_into().ok()?;
    match parse_header_line(line, AT + TRACEPARENT_VALUE_LEN) {
        HeaderLine::Other => {}
        HeaderLine::Invalid => count(Counter::TraceparentInvalid),
        HeaderLine::Valid(remote) => {
            if depth == 0 && adopt_remote(unsafe { &mut *st }, &remote) {
                count(Counter::TraceparentAdopted);
            }
        }
    }
    Some(())
}

#[inline(never)]
extern "C" fn walk_step(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(s), Some(cfg)) = (SCRATCH.get_ptr_mut(0), EXTRACT_CONFIG.get(0)) else { return 1 };
    let s = unsafe { &mut *s };
    if s.walk.step(&cfg.header_map, &mut User) {
        0
    } else {
        1
    }
}

#[inline(never)]
extern "C" fn scan_step(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &mut *s };
    if s.scan.step(&s.buf) {
        0
    } else {
        1
    }
}
