//! GOTEL_PROPAGATION=inject through the socket (user space of `sidecar-ebpf`'s
//! `propagation/inject_socket.rs`): the path that works on kernels in lockdown, where writing
//! into the target (`bpf_probe_write_user`, the memory path) is refused.
//!
//! What this file does, and why:
//! - finds `task_struct.thread.fsbase` in the kernel's BTF (`/sys/kernel/btf/vmlinux`): the SK_MSG
//!   program reads the writing thread's TLS base there to find its goroutine, and aya's programs
//!   get no CO-RE relocations. A small reader of its own, because aya 0.14 keeps BTF types and
//!   members crate-private and the maintained BTF crate (btf-rs) is LGPL;
//! - finds the target's cgroup v2 directory (`/proc/PID/cgroup` and the cgroup2 mount) and attaches
//!   SOCK_OPS there as a BPF link (multi-attach: the kernel's BPF_F_ALLOW_MULTI), so programs already on the cgroup stay and keep
//!   running; lists them (BPF_PROG_QUERY, effective) in the log, since another sockmap user
//!   (Cilium, another tracer) on the same sockets is worth knowing about;
//! - measures whether this kernel has the sockhash `ioctl(FIONREAD)` regression (929e30f93125: a
//!   socket in a sockhash without a verdict program reports 0 bytes readable) on a throwaway
//!   loopback pair, and says what follows: Go's net package never asks FIONREAD, and only the
//!   traced process's client sockets are enrolled, so gotel goes on; a cgo library in the target
//!   that sizes reads by FIONREAD could stall on those sockets;
//! - enrols the target's client connections that were open before gotel attached (duplicated
//!   with `pidfd_getfd`, which CAP_SYS_PTRACE allows; the kernel programs only see new connects).
//!
//! Everything attached here belongs to the `Ebpf` object: when gotel exits, the cgroup link and
//! the sockhash go, and the kernel takes the sockets out of the map unchanged (they keep working).
use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{Array, MapData, SockHash},
    programs::{CgroupAttachMode, SkMsg, SockOps},
    Ebpf,
};
use gotel_shared::SocketInjectConfig;

/// A stored context not used within this time is dropped (`Counter::SocketContextExpired`): the
/// request write it was meant for failed or never reached the socket.
pub const CONTEXT_LIFETIME: Duration = Duration::from_secs(5);

/// The Go function that dials each new HTTP client connection (`gotel_socket_dial`).
pub const DIAL_SYMBOL: &str = "net/http.(*Transport).dialConn";

/// The programs of the socket path loaded and configured (before any attach).
pub struct Loaded {
    /// Offset of `thread.fsbase` in `task_struct`.
    pub fsbase_offset: u32,
}

/// The socket path attached to a process.
pub struct Attached {
    pub cgroup: PathBuf,
    /// Other SOCK_OPS programs effective on that cgroup, `name (id N)`.
    pub others: Vec<String>,
    /// Some(true): this kernel reports FIONREAD = 0 for enrolled sockets; None: not measured.
    pub fionread_regression: Result<bool, String>,
    /// Client connections that were open before gotel attached: enrolled, and refused by the
    /// kernel (e.g. already in another program's sockmap: a socket has one set of programs).
    pub preexisting: usize,
    pub preexisting_refused: usize,
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    p.try_into().map_err(|_| format!("program {name} has an unexpected type"))
}

/// The error and its causes; of a verifier log only the last lines (the verdict), not the
/// thousands before.
fn chain(e: &dyn std::error::Error) -> String {
    let s = crate::attach::chain(e);
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= 8 {
        return s;
    }
    format!("{} [...] {}", lines[0], lines[lines.len() - 5..].join(" | "))
}

/// Loads SOCK_OPS, SK_MSG and the dial uprobe (the verifier's verdict decides whether the socket
/// path can run here) and fills the configuration the kernel programs need.
pub fn load(ebpf: &mut Ebpf) -> Result<Loaded, String> {
    let btf = fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): {e}"))?;
    let fsbase_offset = member_offset(&btf, "task_struct", &["thread", "fsbase"])
        .ok_or("the kernel's BTF has no task_struct.thread.fsbase (not x86-64?)")?;
    set_config(ebpf, |c| {
        c.fsbase_offset = fsbase_offset;
        c.ttl_ns = CONTEXT_LIFETIME.as_nanos() as u64;
    })?;
    prog::<SockOps>(ebpf, "gotel_sock_ops")?.load().map_err(|e| format!("loading gotel_sock_ops: {}", chain(&e)))?;
    prog::<SkMsg>(ebpf, "gotel_sk_msg")?.load().map_err(|e| format!("loading gotel_sk_msg: {}", chain(&e)))?;
    prog::<aya::programs::UProbe>(ebpf, "gotel_socket_dial")?
        .load()
        .map_err(|e| format!("loading gotel_socket_dial: {}", chain(&e)))?;
    Ok(Loaded { fsbase_offset })
}

fn set_config(ebpf: &mut Ebpf, f: impl FnOnce(&mut SocketInjectConfig)) -> Result<(), String> {
    let map = ebpf.map_mut("INJECT_SOCKET_CONFIG").ok_or("INJECT_SOCKET_CONFIG map missing")?;
    let mut arr: Array<&mut MapData, SocketInjectConfig> = Array::try_from(map).map_err(|e| chain(&e))?;
    let mut c = arr.get(&0, 0).map_err(|e| chain(&e))?;
    f(&mut c);
    arr.set(0, c, 0).map_err(|e| chain(&e))
}

/// Attaches the socket path to process `pid` (the dial uprobe is attached by the caller, with
/// the other uprobes).
pub fn attach(ebpf: &mut Ebpf, pid: u32) -> Result<Attached, String> {
    if let Some(tgid) = kernel_tgid(pid) {
        set_config(ebpf, |c| c.tgid = tgid)?;
    }
    let cgroup = cgroup_dir(pid)?;
    let dir = fs::File::open(&cgroup).map_err(|e| format!("cannot open cgroup {}: {e}", cgroup.display()))?;
    let others = sock_ops_programs(dir.as_fd()).unwrap_or_else(|e| vec![format!("(cannot list: {e})")]);
    let fionread_regression = fionread_regression(ebpf);

    let sockets = ebpf.map("INJECT_SOCKETS").ok_or("INJECT_SOCKETS map missing")?;
    let sockets: SockHash<&MapData, u64> = SockHash::try_from(sockets).map_err(|e| chain(&e))?;
    let fd = sockets.fd().try_clone().map_err(|e| format!("INJECT_SOCKETS: {e}"))?;
    prog::<SkMsg>(ebpf, "gotel_sk_msg")?.attach(&fd).map_err(|e| format!("attaching gotel_sk_msg: {}", chain(&e)))?;
    // From 5.7 aya attaches through a BPF link, which the kernel always adds as
    // BPF_F_ALLOW_MULTI (and refuses any flag for); before that, ask for it explicitly.
    let modern = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    let mode = if modern { CgroupAttachMode::Single } else { CgroupAttachMode::AllowMultiple };
    prog::<SockOps>(ebpf, "gotel_sock_ops")?
        .attach(&dir, mode)
        .map_err(|e| format!("attaching gotel_sock_ops to cgroup {}: {}", cgroup.display(), chain(&e)))?;
    let (preexisting, preexisting_refused) = enrol_open_connections(ebpf, pid).unwrap_or_else(|e| {
        tracing::warn!(pid, "GOTEL_PROPAGATION=inject: connections open before gotel attached are not covered: {e}");
        (0, 0)
    });
    Ok(Attached { cgroup, others, fionread_regression, preexisting, preexisting_refused })
}

/// The start-up line: which path covers what, and what is not covered.
pub fn coverage(socket: Result<&Attached, &str>, memory: &Result<(), String>) -> String {
    let mut parts = Vec::new();
    match socket {
        Ok(a) => {
            parts.push(format!(
                "plaintext HTTP/1.x: through the socket (SOCK_OPS on cgroup {}, only this process's client \
                 connections; {} already open enrolled{})",
                a.cgroup.display(),
                a.preexisting,
                match a.preexisting_refused {
                    0 => String::new(),
                    n => format!(", {n} refused by the kernel (in another program's sockmap?): not covered"),
                }
            ));
        }
        Err(why) => parts.push(format!("socket path off ({why})")),
    }
    match memory {
        Ok(()) if socket.is_ok() => {
            parts.push("TLS HTTP/1.x: memory path (bpf_probe_write_user, it writes into the target)".into())
        }
        Ok(()) => parts.push(
            "HTTP/1.x, plaintext and TLS: memory path (bpf_probe_write_user, it writes into the target's buffer)"
                .into(),
        ),
        Err(why) if socket.is_ok() => parts.push(format!("TLS and HTTP/2: not propagated, {why}")),
        Err(why) => parts.push(format!("nothing is propagated: memory path off too, {why}")),
    }
    if memory.is_ok() {
        parts.push("HTTP/2: not propagated".into());
    }
    format!("GOTEL_PROPAGATION=inject: {}", parts.join("; "))
}

/// The FIONREAD decision, for the log.
pub fn fionread_message(a: &Attached) -> String {
    match &a.fionread_regression {
        Ok(true) => "this kernel has the sockhash FIONREAD regression (929e30f93125): an enrolled socket reports \
                     ioctl(FIONREAD) = 0 with bytes pending. gotel goes on: only this process's client sockets are \
                     enrolled and Go's net package never asks FIONREAD; a cgo library in it that sizes reads by \
                     FIONREAD could stall on them"
            .into(),
        Ok(false) => "sockhash FIONREAD check: enrolled sockets report bytes pending correctly on this kernel".into(),
        Err(e) => format!("sockhash FIONREAD check could not run ({e}); Go's net package never asks FIONREAD"),
    }
}

/// The socket path's counters at the end of a session (one line, only when it did something).
pub fn log_summary(k: &crate::attach::KernelCounters) {
    use gotel_shared::Counter::*;
    let all = [
        SocketEnrolled,
        SocketEnrolFailed,
        SocketInjected,
        SocketSkippedPresent,
        SocketSkippedNotHttp1,
        SocketSkippedLineTooLong,
        SocketContextExpired,
        SocketInjectFailed,
        SocketHeadersPastWindow,
        SocketNoContext,
    ];
    if all.iter().all(|&c| k.get(c) == 0) {
        return;
    }
    tracing::info!(
        socket_enrolled = k.get(SocketEnrolled),
        socket_enrol_failed = k.get(SocketEnrolFailed),
        socket_injected = k.get(SocketInjected),
        socket_skipped_present = k.get(SocketSkippedPresent),
        socket_skipped_not_http1 = k.get(SocketSkippedNotHttp1),
        socket_skipped_line_too_long = k.get(SocketSkippedLineTooLong),
        socket_context_expired = k.get(SocketContextExpired),
        socket_inject_failed = k.get(SocketInjectFailed),
        socket_headers_past_window = k.get(SocketHeadersPastWindow),
        socket_no_context = k.get(SocketNoContext),
        "propagation through the socket (totals)"
    );
}

/// The process's number in the initial pid namespace, when gotel can tell it (gotel itself in
/// that namespace). Otherwise `gotel_socket_dial` learns it at the first new connection.
fn kernel_tgid(pid: u32) -> Option<u32> {
    const PROC_PID_INIT_INO: &str = "pid:[4026531836]";
    let own = fs::read_link("/proc/self/ns/pid").ok()?;
    (own.to_str()? == PROC_PID_INIT_INO).then_some(pid)
}

/// The target's cgroup v2 directory as gotel sees it: `0::PATH` of `/proc/PID/cgroup` under the
/// cgroup2 mount (a sidecar mounts the host's, read-only).
fn cgroup_dir(pid: u32) -> Result<PathBuf, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("process {pid} is in no cgroup v2 (no `0::` line in /proc/{pid}/cgroup)"))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (root, mount_point) = (f.get(3).copied().unwrap_or("/"), f.get(4).copied().unwrap_or(""));
        let Some(inner) = rel.strip_prefix(root.trim_end_matches('/')) else { continue };
        let dir = Path::new(mount_point).join(inner.trim_start_matches('/'));
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    Err(format!(
        "process {pid}'s cgroup {rel} is not under a cgroup2 mount gotel can see (mount the host's \
         /sys/fs/cgroup read-only into the sidecar)"
    ))
}

/// SOCK_OPS programs effective on the cgroup (its own and inherited), as `name (id N)`.
fn sock_ops_programs(cgroup: std::os::fd::BorrowedFd<'_>) -> Result<Vec<String>, String> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_SOCK_OPS: u32 = 3;
    const BPF_F_QUERY_EFFECTIVE: u32 = 1;
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        rest: [u64; 8],
    }
    let mut ids = [0u32; 64];
    let mut q = Query {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_SOCK_OPS,
        query_flags: BPF_F_QUERY_EFFECTIVE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, &mut q as *mut Query, size_of::<Query>()) };
    if rc != 0 {
        return Err(format!("BPF_PROG_QUERY: {}", std::io::Error::last_os_error()));
    }
    let ids = &ids[..(q.prog_cnt as usize).min(ids.len())];
    let names: Vec<(u32, String)> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    Ok(ids
        .iter()
        .map(|id| {
            let name = names.iter().find(|(i, _)| i == id).map(|(_, n)| n.as_str()).unwrap_or("?");
            format!("{name} (id {id})")
        })
        .collect())
}

/// Enrols one end of a loopback pair in the scratch sockhash `FIONREAD_PROBE` (no programs on
/// it), sends 100 bytes to it and asks FIONREAD: 0 means the regression.
fn fionread_regression(ebpf: &mut Ebpf) -> Result<bool, String> {
    let io = |e: std::io::Error| e.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let client = TcpStream::connect(listener.local_addr().map_err(io)?).map_err(io)?;
    let (mut server, _) = listener.accept().map_err(io)?;
    let map = ebpf.map_mut("FIONREAD_PROBE").ok_or("FIONREAD_PROBE map missing")?;
    let mut map: SockHash<&mut MapData, u32> = SockHash::try_from(map).map_err(|e| chain(&e))?;
    map.insert(0u32, client.as_raw_fd(), 0).map_err(|e| chain(&e))?;
    let measured = (|| {
        std::io::Write::write_all(&mut server, &[b'x'; 100]).map_err(io)?;
        let mut pfd = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        std::thread::sleep(Duration::from_millis(20));
        let mut n: libc::c_int = -1;
        if unsafe { libc::ioctl(client.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut buf = [0u8; 128];
        let got = std::io::Read::read(&mut &client, &mut buf).map_err(io)?;
        if got == 0 {
            return Err("no bytes arrived".into());
        }
        Ok(n == 0)
    })();
    let _ = map.remove(&0);
    measured
}

/// Client TCP connections the target had open before gotel attached: duplicated from the target
/// (`pidfd_getfd`), told apart from accepted ones by their local port (not one the target
/// listens on), and put into the sockhash under their socket cookie. Returns (enrolled, refused).
fn enrol_open_connections(ebpf: &mut Ebpf, pid: u32) -> Result<(usize, usize), String> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
    let mut listening = Vec::new();
    let mut connected = Vec::new();
    for entry in dir.flatten() {
        let is_socket = fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if !is_socket {
            continue;
        }
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            return Err(format!("pidfd_getfd: {}", std::io::Error::last_os_error()));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let Some(sock) = tcp_socket(&fd) else { continue };
        if sock.listening {
            listening.push(sock.local_port);
        } else if sock.connected {
            connected.push((fd, sock));
        }
    }
    let map = ebpf.map_mut("INJECT_SOCKETS").ok_or("INJECT_SOCKETS map missing")?;
    let mut map: SockHash<&mut MapData, u64> = SockHash::try_from(map).map_err(|e| chain(&e))?;
    let (mut n, mut refused) = (0, 0);
    for (fd, sock) in connected {
        if listening.contains(&sock.local_port) {
            continue; // accepted: a server connection, never changed
        }
        match map.insert(sock.cookie, fd.as_raw_fd(), 0) {
            Ok(()) => n += 1,
            Err(_) => refused += 1,
        }
    }
    Ok((n, refused))
}

struct TcpSocket {
    listening: bool,
    connected: bool,
    local_port: u16,
    cookie: u64,
}

fn tcp_socket(fd: &OwnedFd) -> Option<TcpSocket> {
    let raw = fd.as_raw_fd();
    let int_opt = |level, name| -> Option<i64> {
        let mut v = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        let rc = unsafe { libc::getsockopt(raw, level, name, &mut v as *mut u64 as *mut _, &mut len) };
        (rc == 0).then_some(if len == 4 { v as u32 as i64 } else { v as i64 })
    };
    if int_opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP as i64 {
        return None;
    }
    let listening = int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    let cookie = int_opt(libc::SOL_SOCKET, libc::SO_COOKIE)? as u64;
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getsockname(raw, &mut addr as *mut _ as *mut _, &mut len) } != 0 {
        return None;
    }
    // sin_port and sin6_port sit at the same offset.
    let local_port = u16::from_be(unsafe { (*(&addr as *const _ as *const libc::sockaddr_in)).sin_port });
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut plen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let connected = unsafe { libc::getpeername(raw, &mut peer as *mut _ as *mut _, &mut plen) } == 0;
    Some(TcpSocket { listening, connected, local_port, cookie })
}

/// Byte offset of a member path (`thread.fsbase`) inside struct `root`, from raw BTF. Members
/// of anonymous structs and unions are searched too.
pub fn member_offset(btf: &[u8], root: &str, path: &[&str]) -> Option<u32> {
    let types = BtfTypes::parse(btf)?;
    let mut id = types.struct_named(root)?;
    let mut offset_bits = 0u32;
    for name in path {
        let (ty, bits) = types.member(id, name)?;
        offset_bits += bits;
        id = ty;
    }
    offset_bits.is_multiple_of(8).then_some(offset_bits / 8)
}

/// The type table of a BTF blob: for each type id, where its record starts.
struct BtfTypes<'a> {
    data: &'a [u8],
    strings: &'a [u8],
    starts: Vec<usize>,
}

const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;

impl<'a> BtfTypes<'a> {
    fn parse(btf: &'a [u8]) -> Option<BtfTypes<'a>> {
        let u32_at = |o: usize| Some(u32::from_le_bytes(btf.get(o..o + 4)?.try_into().ok()?));
        if btf.get(0..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let data = btf.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut starts = vec![0]; // type id 0 is void
        let mut o = 0;
        while o + 12 <= data.len() {
            starts.push(o);
            let info = u32::from_le_bytes(data[o + 4..o + 8].try_into().ok()?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                _ => 0,
            };
            o += 12 + extra;
        }
        Some(BtfTypes { data, strings, starts })
    }

    fn word(&self, o: usize) -> u32 {
        self.data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0)
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn kind(&self, id: u32) -> Option<(u32, usize, bool)> {
        let o = *self.starts.get(id as usize)?;
        let info = self.word(o + 4);
        Some(((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 != 0))
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        (1..self.starts.len() as u32).find(|&id| {
            matches!(self.kind(id), Some((BTF_KIND_STRUCT, vlen, _)) if vlen > 0)
                && self.name(self.word(self.starts[id as usize])) == name.as_bytes()
        })
    }

    /// Follows typedef, volatile, const, restrict and type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.kind(id) {
                Some((8..=11 | 18, _, _)) => id = self.word(self.starts[id as usize] + 8),
                _ => break,
            }
        }
        id
    }

    /// (type, bit offset) of member `name` of struct or union `id`, looking into anonymous
    /// members.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let id = self.resolve(id);
        let (kind, vlen, kflag) = self.kind(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        let base = self.starts[id as usize] + 12;
        for i in 0..vlen {
            let m = base + 12 * i;
            let (name_off, ty, off) = (self.word(m), self.word(m + 4), self.word(m + 8));
            let bits = if kflag { off & 0xff_ffff } else { off };
            if name_off == 0 {
                if let Some((t, b)) = self.member(ty, name) {
                    return Some((t, bits + b));
                }
            } else if self.name(name_off) == name.as_bytes() {
                return Some((ty, bits));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's own BTF: `thread.fsbase` is found, inside `task_struct`, 8-aligned.
    #[test]
    fn fsbase_offset_from_the_running_kernel() {
        let Ok(btf) = fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let off = member_offset(&btf, "task_struct", &["thread", "fsbase"]).expect("task_struct.thread.fsbase");
        let thread = member_offset(&btf, "task_struct", &["thread"]).unwrap();
        assert!(off > thread && off % 8 == 0, "fsbase at {off}, thread at {thread}");
        assert_eq!(member_offset(&btf, "task_struct", &["no_such_member"]), None);
        assert_eq!(member_offset(&btf, "no_such_struct", &["thread"]), None);
    }

    #[test]
    fn coverage_says_what_is_not_covered() {
        let a = Attached {
            cgroup: "/sys/fs/cgroup/x".into(),
            others: vec![],
            fionread_regression: Ok(true),
            preexisting: 0,
            preexisting_refused: 0,
        };
        let text = coverage(Ok(&a), &Err("kernel in lockdown".into()));
        assert!(text.contains("plaintext HTTP/1.x: through the socket"), "{text}");
        assert!(text.contains("TLS and HTTP/2: not propagated, kernel in lockdown"), "{text}");
    }
}
