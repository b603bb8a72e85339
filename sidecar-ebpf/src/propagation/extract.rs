//! Incoming trace context, read-only and without a trap of its own: `gotel_entry`, at the
//! entry of the HTTP server span (`net/http.serverHandler.ServeHTTP`, plan flag
//! `PLAN_SCAN_HEADERS`), copies the bytes that precede the read index of the connection's
//! `bufio.Reader` (`rw.(*http.response).conn.bufr`) and scans them backward for this request's
//! header lines (`gotel_shared::header_block`, where the rules and their tests are).
//!
//! A valid `traceparent` becomes the parent of this root call, the server span; invalid ones are
//! counted and ignored, and so are requests whose header block is no longer whole in the buffer
//! without a `traceparent` among the lines left (`TraceparentUnreadable`). The `User-Agent`
//! value's address and length go into the register copy for the span's fetches, which copy its
//! bytes from the block already in scratch memory (`capture::from_block`), not from the target
//! again. So do the method, target and `Host` value when the request line is in the block and
//! checked ([`line_is_the_requests`]): the span's fetches of `req.Method`, `req.URL.Path` and
//! `req.Host` are then skipped (frame bit `FRAME_LINE`; `FRAME_NO_LINE` skips the block's
//! instead, and counts the request as `RequestLineUnread`). HTTP/2
//! requests (`ProtoMajor` 2) are skipped: their headers are HPACK-encoded frames, never text
//! lines (the per-line hook this replaces never saw them either).
//!
//! When the block is not whole and no `traceparent` is among the lines left, the request's
//! parsed `http.Header` map is walked instead (`from_header_map`, rules in
//! `gotel_shared::header_map`): no trap of its own either, a few user-memory reads per header.
//!
//! This runs in `gotel_http_entry` only (the entry program of the HTTP server span), and its
//! steps are BPF *global* functions called one after the other from the entry, never from each
//! other: [`gotel_scan_headers`] (the buffer), [`gotel_walk_headers`] (the map),
//! [`gotel_parse_traceparent`] (parse the line either one left in scratch memory; the entry
//! adopts it into the goroutine's record it already holds).
//! Global, because the verifier checks a global function once, on its own, and takes its
//! result as any number: as static functions they were re-verified along every path of the
//! entry program (145,558 instructions processed, 3,389 states at peak, 37.5 MiB of kernel
//! memory for ~0.7 s while loading, per copy; now 26,554, 1,217 and 2.7 MiB). Hence their
//! signatures: numbers in and out (the kernel allows nothing else but the context), state in
//! the per-CPU scratch memory. And
//! the stack: Linux 6.1 counts the entry's frame plus its deepest callee's against 512 bytes,
//! so the traceparent is decoded into scratch memory (`Scratch::remote`), not a local.
use aya_ebpf::helpers::{bpf_probe_read_user_buf, generated::bpf_loop};
use gotel_shared::{
    header_block::{BlockScan, Outcome, BLOCK_BUF, MAX_SCAN_STEPS},
    header_map::{MapWalk, Memory, WalkEnd, MAP_NONE, MAX_WALK_STEPS},
    rules::adopt_remote,
    traceparent::{read_header_line, LineKind, TRACEPARENT_NAME, TRACEPARENT_VALUE_LEN},
    Counter, GoroutineState, FRAME_HTTP1, FRAME_LINE, FRAME_NO_LINE, REG_HOST_LEN, REG_HOST_PTR, REG_METHOD_LEN,
    REG_METHOD_PTR, REG_RCX, REG_RDI, REG_TARGET_LEN, REG_TARGET_PTR, REG_USER_AGENT_LEN, REG_USER_AGENT_PTR,
};

use crate::{
    capture::window_u64,
    context::{read_u64, Hit, Scratch},
    maps::{count, EXTRACT_CONFIG, SCRATCH},
};

/// [`scan`]'s answer, bits: the request is HTTP/1 (else nothing to do).
const HTTP1: u64 = 1;
/// The block was whole in the buffer (the request line was seen).
const WHOLE: u64 = 2;
/// A `traceparent` line is in `s.scan` (`tp_start`, `tp_len`) for [`adopt`].
const TP_LINE: u64 = 4;
/// The `User-Agent` was found (its address is in the register copy).
const UA: u64 = 8;
/// The request line's method and target (and the `Host` value, if any) are in the register
/// copy: the span takes them from the block (`FRAME_LINE`).
const LINE: u64 = 16;

/// Reads the request's header lines; adopts its `traceparent` for the probed goroutine `st`
/// when no traced call is in progress on it (`depth` 0), like the per-line hook did. Returns
/// the frame's `FRAME_*` bits: whether the request is known to be HTTP/1, and whether its
/// method, target and host were found in the block.
#[inline(always)]
pub fn scan_request_headers(h: &Hit, st: &mut GoroutineState, depth: usize) -> u32 {
    let s = unsafe { &mut *h.scratch };
    // The block's strings (User-Agent, method, target, Host: contiguous slots) start unset.
    for r in REG_USER_AGENT_PTR..=REG_HOST_LEN {
        s.regs[r as usize] = 0;
    }
    let found = gotel_scan_headers();
    if found & HTTP1 == 0 {
        return FRAME_NO_LINE as u32;
    }
    let line = if found & LINE != 0 {
        FRAME_LINE
    } else {
        count(Counter::RequestLineUnread);
        FRAME_NO_LINE
    };
    if found & TP_LINE != 0 && gotel_parse_traceparent() != 0 {
        adopt(h, st, depth);
    }
    // Lines are gone: the map has what the buffer lost (the traceparent, or the User-Agent).
    if found & WHOLE == 0 && found & (TP_LINE | UA) != (TP_LINE | UA) {
        let want_tp = (found & TP_LINE == 0) as u64;
        if gotel_walk_headers(want_tp) != 0 && gotel_parse_traceparent() != 0 {
            adopt(h, st, depth);
        }
    }
    super::same_node::gotel_same_node_join(depth as u64);
    (FRAME_HTTP1 | line) as u32
}

/// Adopts the context [`gotel_parse_traceparent`] left in `s.remote` for the probed goroutine
/// (its record `st`, at hand: no second lookup) when `depth` is 0.
#[inline(always)]
fn adopt(h: &Hit, st: &mut GoroutineState, depth: usize) {
    if depth == 0 && adopt_remote(st, unsafe { &(*h.scratch).remote }) {
        count(Counter::TraceparentAdopted);
    }
}

/// The buffer: copies the bytes before the reader's index and scans them backward. Returns
/// [`HTTP1`] | [`WHOLE`] | [`TP_LINE`] | [`UA`] bits. A global BPF function (see the module
/// doc): the registers come from the scratch copy.
#[no_mangle]
#[inline(never)]
pub extern "C" fn gotel_scan_headers() -> u64 {
    match SCRATCH.get_ptr_mut(0) {
        Some(scratch) => scan_inner(scratch).unwrap_or(0),
        None => 0,
    }
}

#[inline(always)]
fn scan_inner(scratch: *mut Scratch) -> Option<u64> {
    let cfg = EXTRACT_CONFIG.get(unsafe { (*scratch).slot })?;
    if cfg.enabled == 0 {
        return None;
    }
    let s = unsafe { &mut *scratch };
    let (req, rw) = (s.regs[REG_RDI as usize], s.regs[REG_RCX as usize]);
    if window_u64(s, req, cfg.request_proto_major as u64)? != 1 {
        return None;
    }
    let (Some(data), Some(len), Some(r)) = read_reader(cfg, rw) else {
        return Some(HTTP1);
    };
    if r == 0 || r > len {
        return Some(HTTP1);
    }
    let n = if r > BLOCK_BUF as u64 { BLOCK_BUF } else { r as usize };
    let n = n & (2 * BLOCK_BUF - 1);
    if n == 0 || n > BLOCK_BUF {
        return Some(HTTP1);
    }
    // The bytes [r - n, r) of the buffer, copied to end at BLOCK_BUF.
    let from = data.wrapping_add(r).wrapping_sub(n as u64);
    let dst = unsafe { core::slice::from_raw_parts_mut(s.buf.as_mut_ptr().add(BLOCK_BUF - n), n) };
    if unsafe { bpf_probe_read_user_buf(from as *const u8, dst) }.is_err() {
        return Some(HTTP1);
    }
    s.block_addr = from;
    s.block_len = n as u64;
    s.scan = BlockScan::new(n);
    unsafe {
        bpf_loop(MAX_SCAN_STEPS, scan_step as *mut _, core::ptr::null_mut(), 0);
    }
    let s = unsafe { &mut *scratch };
    let mut found = HTTP1;
    // Position x of the copy is at data + r - BLOCK_BUF + x in the target.
    let origin = data.wrapping_add(r).wrapping_sub(BLOCK_BUF as u64);
    if s.scan.outcome == Outcome::RequestLine as u64 {
        found |= WHOLE;
        if s.scan.target_len != 0 && s.scan.folded == 0 && line_is_the_requests(s, cfg, req) {
            s.regs[REG_METHOD_PTR as usize] = origin.wrapping_add(s.scan.line_start);
            s.regs[REG_METHOD_LEN as usize] = s.scan.method_len;
            s.regs[REG_TARGET_PTR as usize] = origin.wrapping_add(s.scan.target_start);
            s.regs[REG_TARGET_LEN as usize] = s.scan.target_len;
            if s.scan.host_start != 0 {
                s.regs[REG_HOST_PTR as usize] = origin.wrapping_add(s.scan.host_start);
                s.regs[REG_HOST_LEN as usize] = s.scan.host_len;
            }
            found |= LINE;
        }
    }
    if s.scan.tp_len != 0 {
        found |= TP_LINE;
    }
    if s.scan.ua_start != 0 {
        s.regs[REG_USER_AGENT_PTR as usize] = origin.wrapping_add(s.scan.ua_start);
        s.regs[REG_USER_AGENT_LEN as usize] = s.scan.ua_len;
        found |= UA;
    }
    Some(found)
}

/// Whether the request line the scan found is exactly the one net/http parsed: the scan takes
/// a line from the `\n` before it, but an unread body the server discarded (no line end) may
/// precede the request line in the buffer (`abcGET / HTTP/1.1`). `Request.Method` and
/// `Request.Proto` are substrings of the parsed line (`METHOD SP target SP proto`), so the
/// method's length and the distance from the method to the protocol tell the line's true
/// start; both come from the request's window, already read (no read of their own). A Go whose
/// strings are laid out otherwise fails the check: the fields are read as before (counted).
#[inline(always)]
fn line_is_the_requests(s: &mut Scratch, cfg: &gotel_shared::ExtractConfig, req: u64) -> bool {
    let (method_len, target_len) = (s.scan.method_len, s.scan.target_len);
    let method = window_u64(s, req, cfg.request_method as u64);
    let len = window_u64(s, req, cfg.request_method as u64 + 8);
    let proto = window_u64(s, req, cfg.request_proto as u64);
    match (method, len, proto) {
        (Some(m), Some(l), Some(p)) => l == method_len && p.wrapping_sub(m) == method_len + target_len + 2,
        _ => false,
    }
}

/// Parses the `traceparent` line `s.scan` points at (in `s.buf`) into `s.remote`. Returns 1
/// for a valid line (the caller adopts it); counts an invalid one. A global BPF function (see
/// the module doc).
#[no_mangle]
#[inline(never)]
pub extern "C" fn gotel_parse_traceparent() -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    let s = unsafe { &mut *scratch };
    let Some((line, len)) = s.scan.traceparent_line(&s.buf) else { return 0 };
    match read_header_line(line, len, &mut s.remote) {
        LineKind::Other => 0,
        LineKind::Invalid => {
            count(Counter::TraceparentInvalid);
            0
        }
        LineKind::Valid => 1,
    }
}

/// Bytes read at once from the connection's `bufio.Reader`: from `buf` through `r`, which Go
/// lays out as `buf` (pointer, len, cap), `rd` (an interface), `r`: 48 bytes, `r` last.
const READER_WINDOW: usize = 48;

/// The connection reader's buffer address and length and its read index: one user read for
/// the three fields when `r` is [`READER_WINDOW`]` - 8` bytes after `buf` (every Go so far; each
/// `bpf_probe_read_user` costs 60-100 ns here), three otherwise. (A fixed slot: the verifier
/// refuses a stack load at a variable offset it cannot prove aligned.)
#[inline(always)]
fn read_reader(cfg: &gotel_shared::ExtractConfig, rw: u64) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Some(reader) = read_u64(rw.wrapping_add(cfg.response_conn as u64))
        .and_then(|conn| read_u64(conn.wrapping_add(cfg.conn_bufr as u64)))
    else {
        return (None, None, None);
    };
    let buf = reader.wrapping_add(cfg.reader_buf as u64);
    if cfg.reader_r as u64 == cfg.reader_buf as u64 + (READER_WINDOW - 8) as u64 {
        let mut w = [0u64; READER_WINDOW / 8];
        let bytes = unsafe { core::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, READER_WINDOW) };
        if unsafe { bpf_probe_read_user_buf(buf as *const u8, bytes) }.is_err() {
            return (None, None, None);
        }
        return (Some(w[0]), Some(w[1]), Some(w[READER_WINDOW / 8 - 1]));
    }
    (read_u64(buf), read_u64(buf.wrapping_add(8)), read_u64(reader.wrapping_add(cfg.reader_r as u64)))
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
/// and `User-Agent` (when the buffer gave none). Returns 1 when it left a `traceparent: <value>`
/// line at the start of `s.buf`, with `s.scan` pointing at it, for
/// [`gotel_parse_traceparent`]. A global BPF function (see the module doc).
#[no_mangle]
#[inline(never)]
pub extern "C" fn gotel_walk_headers(want_tp: u64) -> u64 {
    match SCRATCH.get_ptr_mut(0) {
        Some(scratch) => walk_inner(scratch, want_tp).unwrap_or(0),
        None => 0,
    }
}

#[inline(always)]
fn walk_inner(scratch: *mut Scratch, want_tp: u64) -> Option<u64> {
    let cfg = EXTRACT_CONFIG.get(unsafe { (*scratch).slot })?;
    let l = &cfg.header_map;
    if l.kind == MAP_NONE {
        if want_tp != 0 {
            count(Counter::TraceparentUnreadable);
        }
        return None;
    }
    let s = unsafe { &mut *scratch };
    let req = s.regs[REG_RDI as usize];
    let map = window_u64(s, req, l.request_header as u64).unwrap_or(0);
    s.walk.begin(l, map, &mut User);
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
        return None;
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
    // The line goes where a block that fills the buffer starts: the block is no longer whole.
    s.block_len = 0;
    s.buf[..TRACEPARENT_NAME.len()].copy_from_slice(TRACEPARENT_NAME);
    s.buf[TRACEPARENT_NAME.len()] = b' ';
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut s.buf[AT..AT + TRACEPARENT_VALUE_LEN]) }.ok()?;
    s.scan.tp_start = 0;
    s.scan.tp_len = (AT + TRACEPARENT_VALUE_LEN) as u64;
    Some(1)
}

#[inline(never)]
extern "C" fn walk_step(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &mut *s };
    let Some(cfg) = EXTRACT_CONFIG.get(s.slot) else { return 1 };
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
