//! GOTEL_PROPAGATION=inject through the socket: `traceparent` for outgoing plaintext HTTP/1.x
//! requests on kernels in lockdown, where `bpf_probe_write_user` is refused.
//!
//! Nothing here writes into the traced process's memory. The one write is into the bytes the
//! process hands to the kernel with `write(2)`: `gotel_sk_msg` inserts one header line with
//! `bpf_msg_push_data` into the socket message before TCP sends it. That makes this file the
//! second (and last) writer of gotel, next to the memory path's `gotel_header_write_return`
//! (the only `bpf_probe_write_user` caller; a test on the shipped object,
//! `only_the_socket_program_changes_messages`, checks no other program pushes or pops message
//! bytes); it can be reviewed on its own. Its maps are in `maps` (`INJECT_SOCKET*`,
//! `INJECT_CONNECTING`, `FIONREAD_PROBE`); the context comes from `propagation::handoff`.
//!
//! - `gotel_socket_dial` (uprobe at `net.(*netFD).connect`, every new TCP connection the Go
//!   process opens, whatever library opens it) tells the kernel's number
//!   of the traced process (`TARGETS`, tgid -> the target's slot), whatever pid namespace gotel is in;
//!   the hand-off uprobe at `net/http.(*Request).write` tells it too (`note_target_tgid`), so
//!   connections open before gotel attached are covered before the process dials a new one.
//! - `gotel_sock_ops` (SOCK_OPS, attached to the target's cgroup v2 directory with
//!   BPF_F_ALLOW_MULTI) enrols only client sockets of the traced process into `INJECT_SOCKETS`.
//!   The process is checked at `BPF_SOCK_OPS_TCP_CONNECT_CB`, which runs in the connecting task,
//!   as `current->tgid` read at its BTF offset (`bpf_get_current_pid_tgid` is refused to SOCK_OPS
//!   programs on older kernels, 6.1 among them; `bpf_get_current_task` and `bpf_probe_read_kernel` are
//!   allowed there, so the socket path also runs on 6.1);
//!   `ACTIVE_ESTABLISHED_CB` (where a sockhash insert is allowed) runs in softirq, so it only
//!   enrols what the connect callback marked. Accepted (server) sockets are never enrolled.
//! - `gotel_sk_msg` (SK_MSG on that sockhash) runs in the writing task. It takes the context the
//!   uprobe at `net/http.(*Request).write` left for this goroutine (`INJECT_PENDING`, keyed by
//!   `{tgid, g}`: a thread id alone missed about 1 request in 1000, the goroutine had moved to
//!   another thread between the uprobe and the write). g is read the way Go does, from the
//!   thread's TLS (`context::goroutine_from_tls`).
//!
//! Rules, each refusal counted on its own (`Counter::Socket*`): a context is used once and only
//! within its lifetime; the message must start with `METHOD SP target SP HTTP/1.x CRLF` inside
//! the scanned window; a request that already has a `traceparent` line (case-insensitive, in
//! the header block inside the window) is left alone; the new line goes right after the request
//! line, so bodies, `Content-Length`, keep-alive and later chunks (no request line, no context)
//! are untouched.
//!
//! gRPC over h2c (`h2`): on a connection whose client preface was seen, the message's HTTP/2
//! frames are followed and a HEADERS frame of a traced call gets one HPACK field appended at the
//! end of its header block (`inject_h2`: literal without indexing, new name, so the dynamic
//! table of neither side changes) and its 24-bit length grown by as much. DATA and every other
//! frame are untouched. `gotel_sock_ops` marks each connection it enrols `CONN_FRESH` in
//! `H2_CONNS`, so its first message decides (the preface, or not h2c for good); a connection
//! without a mark (open before gotel attached, enrolled by user space, or whose walk lost its
//! place) is resynchronised on the first message whose frames tile it exactly
//! (`gotel_shared::h2`), and its messages pass to the HTTP/1 path until then.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf,
        generated::{bpf_get_socket_cookie, bpf_loop, bpf_msg_pull_data},
    },
    macros::{sk_msg, sock_ops, uprobe},
    programs::{ProbeContext, SkMsgContext, SockOpsContext},
};
use gotel_shared::{
    traceparent::{format_traceparent_line, TRACEPARENT_LINE_LEN, TRACEPARENT_NAME},
    Counter, InjectContext,
};

use crate::{
    context::goroutine_from_tls,
    maps::{
        count_in, H2_CONNS, INJECT_CONNECTING, INJECT_PENDING, INJECT_SOCKETS, INJECT_SOCKET_CONFIG,
        INJECT_SOCKET_SCRATCH, TARGETS,
    },
};

pub mod h2;
use gotel_shared::{
    h2::{
        format_hpack_traceparent, length_bytes, plan, settle, starts_like_request_line, Event, FrameHeader, Plan,
        CONN_FRESH, CONN_NOT_H2, HPACK_FIELD_LEN, PREFACE,
    },
    H2ConnKey,
};
use h2::H2_MAX_INJECT;

/// Bytes at the start of a message that are scanned: net/http's `bufio.Writer` is 4 KiB, so the
/// first write of a request is at most this long unless one header line is longer.
const WINDOW: usize = 4096;
const NONE: u64 = u64::MAX;

/// Per-CPU copy of the scanned window, the scan's state and the line being formatted. The scan
/// state lives in map memory, not on the stack, so the verifier treats its fields as unknown
/// values and checks the `bpf_loop` callback once instead of following every count.
#[repr(C)]
pub struct MsgScratch {
    /// The sending process's target slot (`TARGETS`), for [`count_msg`].
    slot: u32,
    _slot_pad: u32,
    buf: [u8; WINDOW + 64],
    scan: Scan,
    line: [u8; TRACEPARENT_LINE_LEN],
    _pad: [u8; 2],
    h2: h2::Walk,
    /// The HPACK field being appended.
    field: [u8; HPACK_FIELD_LEN],
    _pad2: [u8; 3],
}

/// Entry of `net.(*netFD).connect` (attached to the traced process only): runs before
/// every new client connection (right before `connect(2)`), in the process, so it tells the
/// kernel's number of the process even when gotel sees it under another pid namespace (a
/// sidecar sharing the service's).
#[uprobe]
pub fn gotel_socket_dial(ctx: ProbeContext) -> u32 {
    if crate::maps::paused() {
        return 0;
    }
    let cookie = unsafe { bpf_get_attach_cookie(ctx.regs as *mut _) };
    note_target_tgid((bpf_get_current_pid_tgid() >> 32) as u32, gotel_shared::cookie_slot(cookie));
    0
}

/// Records `tgid` (the kernel's number of the current task's process, read in a uprobe attached
/// to the traced process only) as the process of target `slot` (`TARGETS`). Called at each new
/// connection (`gotel_socket_dial`) and before each request write
/// (`handoff::gotel_request_write`), so a connection opened before gotel attached and enrolled
/// from user space gets `traceparent` from the first request written on it, not only after the
/// process dials again. Writes the map only when it does not say so already (once, in
/// practice; user space fills it itself when it sees the kernel's pids).
#[inline(always)]
pub fn note_target_tgid(tgid: u32, slot: u32) {
    if unsafe { TARGETS.get(&tgid) }.is_some_and(|s| *s == slot) {
        return;
    }
    let _ = TARGETS.insert(&tgid, &slot, 0);
}

/// The target slot of process `tgid`, if gotel traces it.
#[inline(always)]
fn slot_of(tgid: u32) -> Option<u32> {
    unsafe { TARGETS.get(&tgid) }.copied()
}

/// [`count_in`] for the SK_MSG program: the sender's slot, noted in its scratch memory by
/// `on_msg` (SOCK_OPS, which may run in a softirq on top of SK_MSG, counts with its own).
#[inline(always)]
fn count_msg(c: Counter) {
    let slot = INJECT_SOCKET_SCRATCH.get(0).map_or(0, |m| m.slot);
    count_in(slot, c);
}

#[sock_ops]
pub fn gotel_sock_ops(ctx: SockOpsContext) -> u32 {
    let _ = on_sock_ops(&ctx);
    1
}

#[inline(always)]
fn on_sock_ops(ctx: &SockOpsContext) -> Option<()> {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        // Entry 0 holds the kernel's offsets in every mode (they are the same for every slot).
        let cfg = INJECT_SOCKET_CONFIG.get(0)?;
        let tgid = current_tgid(cfg.tgid_offset)?;
        let slot = slot_of(tgid)?;
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
        let _ = INJECT_CONNECTING.insert(&cookie, &(((tgid as u64) << 32) | slot as u64), 0);
    } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        // Often in a softirq, in no particular task: the process and slot come from the connect.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
        let who = unsafe { *INJECT_CONNECTING.get_ptr(&cookie)? };
        let (tgid, slot) = ((who >> 32) as u32, who as u32);
        let _ = INJECT_CONNECTING.remove(&cookie);
        match INJECT_SOCKETS.update(cookie, unsafe { &mut *ctx.ops }, BPF_ANY as u64) {
            Ok(()) => {
                count_in(slot, Counter::SocketEnrolled);
                // Seen from its start: its first message is the client preface or it is not h2c
                // (a connection without a value is resynchronised instead, see `on_h2_msg`).
                let key = H2ConnKey {
                    tgid,
                    local_port: ctx.local_port(),
                    remote_port: ctx.remote_port(),
                    remote_ip4: ctx.remote_ip4(),
                    remote_ip6: ctx.remote_ip6(),
                };
                let _ = H2_CONNS.insert(&key, &CONN_FRESH, 0);
            }
            Err(_) => count_in(slot, Counter::SocketEnrolFailed),
        }
    }
    Some(())
}

/// The current task's process (`task_struct.tgid`, the kernel's number: what
/// `bpf_get_current_pid_tgid() >> 32` returns where that helper is allowed).
#[inline(always)]
fn current_tgid(tgid_offset: u32) -> Option<u32> {
    let task = unsafe { bpf_get_current_task() };
    unsafe { bpf_probe_read_kernel((task + tgid_offset as u64) as *const u32) }.ok()
}

#[sk_msg]
pub fn gotel_sk_msg(ctx: SkMsgContext) -> u32 {
    let _ = on_msg(&ctx);
    SK_PASS
}

#[inline(always)]
fn on_msg(ctx: &SkMsgContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let slot = slot_of(tgid)?;
    let cfg = INJECT_SOCKET_CONFIG.get(slot)?;
    if let Some(m) = INJECT_SOCKET_SCRATCH.get_ptr_mut(0) {
        unsafe { (*m).slot = slot };
    }
    let key = goroutine_from_tls(cfg.fsbase_offset)?;
    if let Some(done) = on_h2_msg(ctx, tgid, key.goroutine) {
        return done;
    }
    let Some(p) = (unsafe { INJECT_PENDING.get(&key) }) else {
        note_no_context(ctx);
        return None;
    };
    let p = *p;
    if p.state != 0 {
        // The memory path armed it (kernels that allow it) and finishes it itself.
        return None;
    }
    let _ = INJECT_PENDING.remove(&key);
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(p.stored_ns) > cfg.ttl_ns {
        count_msg(Counter::SocketContextExpired);
        return None;
    }
    inject(ctx, &p)
}

/// Counts a request-like message (`UPPERCASE SP` at the start) sent without a waiting context.
#[inline(always)]
fn note_no_context(ctx: &SkMsgContext) {
    if ctx.size() < 16 || unsafe { bpf_msg_pull_data(ctx.msg, 0, 16, 0) } != 0 {
        return;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 16 > end {
        return;
    }
    if starts_like_request_line(unsafe { &*(data as *const [u8; 8]) }) {
        count_msg(Counter::SocketNoContext);
    }
}

/// State of the window scan, shared with its `bpf_loop` callback.
#[repr(C)]
pub struct Scan {
    len: u64,
    /// Index of the request line's `\n`.
    nl: u64,
    spaces: u64,
    first_space: u64,
    /// Where the current header line starts.
    line_start: u64,
    /// Index just past the blank line that ends the header block, 0 = not in the window.
    header_end: u64,
    found: u64,
    bad: u64,
}

#[inline(never)]
extern "C" fn scan_one(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = INJECT_SOCKET_SCRATCH.get_ptr_mut(0) else { return 1 };
    let s = unsafe { &mut *s };
    let c = &mut s.scan;
    if i >= c.len {
        return 1;
    }
    let i = (i as usize) & (WINDOW - 1);
    let b = s.buf[i];
    if c.nl == NONE {
        // The request line: METHOD (token) SP target SP HTTP/1.x CR LF.
        if b == b'\n' {
            c.nl = i as u64;
            c.line_start = i as u64 + 1;
        } else if b == b' ' {
            if c.spaces == 0 {
                c.first_space = i as u64;
            }
            c.spaces += 1;
        } else if (c.spaces == 0 && !(b.is_ascii_uppercase() || b == b'-' || b == b'_'))
            || (b < 0x20 && b != b'\r')
            || b >= 0x7f
        {
            c.bad = 1;
            return 1;
        }
        return 0;
    }
    if i as u64 == c.line_start {
        if b == b'\n' || (b == b'\r' && (i as u64) + 1 < c.len && s.buf[i + 1] == b'\n') {
            c.header_end = i as u64 + if b == b'\n' { 1 } else { 2 };
            return 1;
        }
        if (i + TRACEPARENT_NAME.len()) as u64 <= c.len {
            let mut same = true;
            for k in 0..TRACEPARENT_NAME.len() {
                if s.buf[i + k] | 0x20 != TRACEPARENT_NAME[k] {
                    same = false;
                }
            }
            if same {
                c.found = 1;
                return 1;
            }
        }
    }
    if b == b'\n' {
        c.line_start = i as u64 + 1;
    }
    0
}

/// Does `buf[..=nl]` end with ` HTTP/1.x\r\n` after a non-empty target?
#[inline(always)]
fn is_request_line(buf: &[u8; WINDOW + 64], scan: &Scan) -> bool {
    let nl = scan.nl as usize;
    if scan.spaces != 2 || scan.first_space == 0 || nl < 14 || nl >= WINDOW {
        return false;
    }
    // `nl` read again, volatile: LLVM cannot carry the checks above to this copy and drop the
    // mask as redundant. The verifiers of 6.1 and 6.12 (not 6.18's) do not learn `nl`'s range from those
    // checks the way LLVM compiles them (a range check on a shifted copy), so without the mask
    // they see an unbounded index and refuse the program.
    let nl_again = unsafe { core::ptr::read_volatile(&scan.nl) } as usize;
    let h = nl_again.wrapping_sub(10) & (WINDOW - 1);
    let tail = &buf[h..h + 11];
    tail[0] == b' '
        && &tail[1..8] == b"HTTP/1."
        && tail[8].is_ascii_digit()
        && tail[9] == b'\r'
        && (scan.first_space as usize) + 1 < nl - 10
}

#[inline(always)]
fn inject(ctx: &SkMsgContext, p: &InjectContext) -> Option<()> {
    let size = ctx.size() as usize;
    if size < 16 {
        count_msg(Counter::SocketSkippedNotHttp1);
        return None;
    }
    let want = if size < WINDOW { size } else { WINDOW };
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, want as u32, 0) } != 0 {
        count_msg(Counter::SocketInjectFailed);
        return None;
    }
    let s = unsafe { &mut *INJECT_SOCKET_SCRATCH.get_ptr_mut(0)? };
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + want > end {
        count_msg(Counter::SocketInjectFailed);
        return None;
    }
    unsafe { bpf_probe_read_kernel_buf(data as *const u8, &mut s.buf[..want]) }.ok()?;
    s.scan =
        Scan { len: want as u64, nl: NONE, spaces: 0, first_space: 0, line_start: 0, header_end: 0, found: 0, bad: 0 };
    unsafe { bpf_loop(want as u32, scan_one as *mut _, core::ptr::null_mut(), 0) };
    let s = unsafe { &mut *INJECT_SOCKET_SCRATCH.get_ptr_mut(0)? };
    let scan = &s.scan;
    if scan.bad == 0 && scan.nl == NONE && size > WINDOW {
        count_msg(Counter::SocketSkippedLineTooLong);
        return None;
    }
    if scan.bad != 0 || scan.nl == NONE || !is_request_line(&s.buf, &scan) {
        count_msg(Counter::SocketSkippedNotHttp1);
        return None;
    }
    if scan.found != 0 {
        count_msg(Counter::SocketSkippedPresent);
        return None;
    }
    if scan.header_end == 0 {
        count_msg(Counter::SocketHeadersPastWindow);
    }
    let off = (scan.nl as u32 + 1) & (WINDOW as u32 - 1);
    format_traceparent_line(&mut s.line, &p.trace_context());

    let n = TRACEPARENT_LINE_LEN as u32;
    if ctx.push_data(off, n, 0).is_err() {
        count_msg(Counter::SocketInjectFailed);
        return None;
    }
    // push_data invalidates the data pointers; pull the new gap so it is writable at constant
    // offsets. On any failure the gap is taken out again: never send unwritten bytes.
    if unsafe { bpf_msg_pull_data(ctx.msg, off, off + n, 0) } != 0 {
        let _ = ctx.pop_data(off, n, 0);
        count_msg(Counter::SocketInjectFailed);
        return None;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TRACEPARENT_LINE_LEN > end {
        let _ = ctx.pop_data(off, n, 0);
        count_msg(Counter::SocketInjectFailed);
        return None;
    }
    let out = unsafe { core::slice::from_raw_parts_mut(data as *mut u8, TRACEPARENT_LINE_LEN) };
    out.copy_from_slice(&s.line);
    count_msg(Counter::SocketInjected);
    Some(())
}

/// The connection a message is sent on (SK_MSG has no socket cookie helper).
#[inline(always)]
fn conn_key(ctx: &SkMsgContext, tgid: u32) -> H2ConnKey {
    let md = unsafe { &*ctx.msg };
    H2ConnKey {
        tgid,
        local_port: md.local_port,
        remote_port: md.remote_port,
        remote_ip4: md.remote_ip4,
        remote_ip6: md.remote_ip6,
    }
}

/// The message's first bytes, pulled: whether they are the client preface, and the first 9
/// (None when the message is shorter).
#[inline(always)]
fn head(ctx: &SkMsgContext, size: u32) -> (bool, Option<[u8; 9]>) {
    const P: usize = PREFACE.len();
    if size >= P as u32 {
        if unsafe { bpf_msg_pull_data(ctx.msg, 0, P as u32, 0) } != 0 || ctx.data() + P > ctx.data_end() {
            return (false, None);
        }
        let b = unsafe { &*(ctx.data() as *const [u8; P]) };
        return (b == PREFACE, Some([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]));
    }
    if size < 9 || unsafe { bpf_msg_pull_data(ctx.msg, 0, 9, 0) } != 0 || ctx.data() + 9 > ctx.data_end() {
        return (false, None);
    }
    (false, Some(unsafe { *(ctx.data() as *const [u8; 9]) }))
}

/// Some(_) when the message belongs to an h2c connection (followed, starting with the client
/// preface, or resynchronised now): the HTTP/1 path is then not tried. Inner None: nothing was
/// injected. The connection's state and what each message does to it are
/// `gotel_shared::h2`'s rules (`plan`, `settle`).
#[inline(always)]
fn on_h2_msg(ctx: &SkMsgContext, tgid: u32, g: u64) -> Option<Option<()>> {
    let conn = conn_key(ctx, tgid);
    let size = ctx.size();
    let state = unsafe { H2_CONNS.get(&conn) }.copied();
    let (preface, first) = match state {
        None | Some(CONN_FRESH) => head(ctx, size),
        _ => (false, None),
    };
    let (resync, start) = match plan(state, preface) {
        Plan::NotH2 => return None,
        Plan::MarkNotH2 => {
            let _ = H2_CONNS.insert(&conn, &CONN_NOT_H2, 0);
            return None;
        }
        Plan::Walk { start } => (false, start),
        Plan::Resync => (true, 0),
    };
    if !resync && start >= size {
        let _ = H2_CONNS.insert(&conn, &(start - size), 0);
        return Some(None);
    }
    let http1 = first.is_some_and(|b| starts_like_request_line(&[b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    // A resync needs a well-formed first frame header: most messages of a connection that is
    // not h2c end here, without pulling the whole message.
    let plausible = first.is_some_and(|b| FrameHeader::parse_strict(&b).is_some());
    let walked = if resync && !plausible {
        None
    } else if unsafe { bpf_msg_pull_data(ctx.msg, 0, size, 0) } != 0 || ctx.data() + size as usize > ctx.data_end() {
        // The whole message, linear, so the walk reads frame headers at any offset.
        None
    } else {
        let s = unsafe { &mut *INJECT_SOCKET_SCRATCH.get_ptr_mut(0)? };
        let walked = h2::walk(&mut s.h2, ctx.data() as u64, size, start, resync, tgid, g);
        if resync && walked == Some(0) {
            // Aligned: walked again as a followed connection's message, taking the contexts.
            h2::walk(&mut s.h2, ctx.data() as u64, size, 0, false, tgid, g)
        } else {
            walked
        }
    };
    let settled = settle(resync, walked, http1);
    match settled.state {
        Some(v) => {
            let _ = H2_CONNS.insert(&conn, &v, 0);
        }
        None if state.is_some() => {
            let _ = H2_CONNS.remove(&conn);
        }
        None => {}
    }
    match settled.event {
        Event::Followed => {}
        Event::Desync => count_msg(Counter::GrpcSocketDesync),
        Event::Resync => count_msg(Counter::GrpcSocketResync),
        // Passed on to the HTTP/1 path, as before this connection was known.
        Event::Unaligned => {
            count_msg(Counter::GrpcSocketUnaligned);
            return None;
        }
        Event::NotH2 => return None,
    }
    if !settled.inject {
        return Some(None);
    }
    // Last point first: an insertion moves only the bytes after it.
    let s = unsafe { &mut *INJECT_SOCKET_SCRATCH.get_ptr_mut(0)? };
    let n = s.h2.n as usize;
    for k in (0..H2_MAX_INJECT).rev() {
        if k < n {
            inject_h2(ctx, k);
        }
    }
    Some(Some(()))
}

/// Appends the `traceparent` field to the header block of injection point `k` and grows its
/// frame's length; on any failure the inserted bytes are taken out again. Inlined: the object
/// test `only_the_socket_program_changes_messages` wants the push inside `gotel_sk_msg` itself.
#[inline(always)]
fn inject_h2(ctx: &SkMsgContext, k: usize) -> Option<()> {
    let s = unsafe { &mut *INJECT_SOCKET_SCRATCH.get_ptr_mut(0)? };
    let p = s.h2.points[k & (H2_MAX_INJECT - 1)];
    format_hpack_traceparent(&mut s.field, &p.ctx.trace_context());
    let at = p.frame.wrapping_add(9).wrapping_add(p.len);
    let n = HPACK_FIELD_LEN as u32;
    let fail = |popped: bool| {
        if popped {
            let _ = ctx.pop_data(at, n, 0);
        }
        count_msg(Counter::GrpcSocketInjectFailed);
        None
    };
    if ctx.push_data(at, n, 0).is_err() {
        return fail(false);
    }
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + n, 0) } != 0 {
        return fail(true);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + HPACK_FIELD_LEN > end {
        return fail(true);
    }
    let out = unsafe { core::slice::from_raw_parts_mut(data as *mut u8, HPACK_FIELD_LEN) };
    out.copy_from_slice(&s.field);
    if unsafe { bpf_msg_pull_data(ctx.msg, p.frame, p.frame + 3, 0) } != 0 {
        return fail(true);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 3 > end {
        return fail(true);
    }
    let out = unsafe { core::slice::from_raw_parts_mut(data as *mut u8, 3) };
    out.copy_from_slice(&length_bytes(p.len + n));
    count_msg(Counter::GrpcSocketInjected);
    Some(())
}
