//! GOTEL_PROPAGATION=inject through the socket (user space of `sidecar-ebpf`'s
//! `propagation/inject_socket.rs`): the path that works on kernels in lockdown, where writing
//! into the target (`bpf_probe_write_user`, the memory path) is refused. The context comes from
//! `inject_handoff`, like the memory path's. Where the memory path runs it writes first and
//! would leave this path nothing to do; until the two are split by TLS, such kernels keep the
//! memory path alone (`attach_extra` then only says so), except for gRPC over h2c (`grpc`),
//! which only this path covers: with gRPC client spans it runs beside the memory path.
//!
//! What this file does, and why:
//! - finds `task_struct.thread.fsbase` and `task_struct.tgid` in the kernel's BTF (`btf`): the
//!   SK_MSG program reads the writing thread's TLS base there to find its goroutine, SOCK_OPS the
//!   connecting task's process (`bpf_get_current_pid_tgid` is refused to SOCK_OPS on older kernels, 6.1 among them;
//!   `bpf_get_current_task` and `bpf_probe_read_kernel` are not, so the socket path runs on 6.1);
//! - finds the target's cgroup v2 directory (`/proc/PID/cgroup` and the cgroup2 mount) and
//!   attaches SOCK_OPS there as a BPF link (multi-attach: the kernel's BPF_F_ALLOW_MULTI), so
//!   programs already on the cgroup stay and keep running; lists them (BPF_PROG_QUERY,
//!   effective) in the log, since another sockmap user (Cilium, another tracer) on the same
//!   sockets is worth knowing about;
//! - measures whether this kernel has the sockhash `ioctl(FIONREAD)` regression (929e30f93125: a
//!   socket in a sockhash without a verdict program reports 0 bytes readable) on a throwaway
//!   loopback pair, and says what follows: Go's net package never asks FIONREAD, and only the
//!   traced process's client sockets are enrolled, so gotel goes on; a cgo library in the target
//!   that sizes reads by FIONREAD could stall on those sockets;
//! - enrols the target's client connections that were open before gotel attached (duplicated
//!   with `pidfd_getfd`, which CAP_SYS_PTRACE allows; the kernel programs only see new connects).
//!   The fd numbers come from `/proc/PID/fd` when gotel may list it; a sidecar's root with every
//!   other capability dropped may not (mode 0500, owned by the service's user; reading it would
//!   take CAP_DAC_READ_SEARCH), so then every number below `FDSize` of the world-readable
//!   `/proc/PID/status` is tried, bounded by `MAX_FDS_TRIED`.
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
    maps::{MapData, SockHash},
    programs::{sock_ops::SockOpsLinkId, CgroupAttachMode, SkMsg, SockOps},
    Ebpf,
};
use gotel_shared::{
    names::{
        MAP_FIONREAD_PROBE, MAP_INJECT_SOCKETS, MAP_INJECT_SOCKET_CONFIG, MAP_TARGETS, PROGRAM_SK_MSG,
        PROGRAM_SOCKET_DIAL, PROGRAM_SOCK_OPS,
    },
    Counter, SocketInjectConfig,
};

use super::{
    inject_memory::{self, INJECT_MEMORY},
    Activation, At, AttachTarget, HookSpec, Instrumentation, MapFill, Session, Wanted,
};
use crate::exit::Failure;

mod btf;
pub mod grpc;
use btf::member_offset;

/// A stored context not used within this time is dropped (`Counter::SocketContextExpired`): the
/// request write it was meant for failed or never reached the socket.
pub const CONTEXT_LIFETIME: Duration = Duration::from_secs(5);

/// The Go function that starts every outgoing TCP connection (`gotel_socket_dial`), whatever
/// client opens it: net/http, grpc-go, database drivers. It runs in the connecting goroutine
/// right before `connect(2)`, so SOCK_OPS's connect callback that follows already knows the
/// process. It was `net/http.(*Transport).dialConn` until the compose demo showed why not: a
/// gRPC-only client (grpc-go dials lazily, at its first call, after gotel attached) never ran
/// it, so a gotel in the service's pid namespace (where it cannot know the kernel's number of
/// the process) enrolled none of its connections and the backend's calls to the inventory
/// service started traces of their own. One trap per new connection, not per request.
pub const DIAL_SYMBOL: &str = "net.(*netFD).connect";

pub static INJECT_SOCKET: Instrumentation = Instrumentation {
    name: "inject.socket",
    doc: "with `GOTEL_PROPAGATION=inject`, where the memory path cannot run (kernel in lockdown): inserts `traceparent` into outgoing plaintext HTTP/1.x requests as they are sent (SOCK_OPS on the target's cgroup, SK_MSG), and into gRPC calls over h2c with `inject.socket.grpc`; writes nothing into the target",
    // The program reads no cookie.
    hooks: &[HookSpec { program: PROGRAM_SOCKET_DIAL, function: DIAL_SYMBOL, at: At::Entry, cookie: 0 }],
    wanted,
    prepare: Some(prepare),
    attach_extra: Some(attach_extra),
    detach_extra: Some(detach_extra),
    counters: &[
        ("socket_enrolled", Counter::SocketEnrolled),
        ("socket_enrol_failed", Counter::SocketEnrolFailed),
        ("socket_injected", Counter::SocketInjected),
        ("socket_skipped_present", Counter::SocketSkippedPresent),
        ("socket_skipped_not_http1", Counter::SocketSkippedNotHttp1),
        ("socket_skipped_line_too_long", Counter::SocketSkippedLineTooLong),
        ("socket_context_expired", Counter::SocketContextExpired),
        ("socket_inject_failed", Counter::SocketInjectFailed),
        ("socket_headers_past_window", Counter::SocketHeadersPastWindow),
        ("socket_no_context", Counter::SocketNoContext),
    ],
    quiet_counters: true,
    ..Instrumentation::BASE
};

/// With the hand-off (HTTP client spans) or gRPC client spans (`grpc::INJECT_SOCKET_GRPC`).
fn wanted(s: &Session) -> Wanted {
    if s.inject
        && (s.has_spans(super::http_client::HTTP_CLIENT.name) || s.has_spans(super::grpc_client::GRPC_CLIENT.name))
    {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The kernel programs need `task_struct.thread.fsbase`'s and `task_struct.tgid`'s offsets and
/// the context lifetime.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let (fsbase_offset, tgid_offset) =
        task_offsets().map_err(|why| coverage(Err(&why), &memory_status_at_plan(), false))?;
    let config =
        SocketInjectConfig { tgid: 0, fsbase_offset, ttl_ns: CONTEXT_LIFETIME.as_nanos() as u64, tgid_offset, _pad: 0 };
    a.map_fills.push(MapFill::array(INJECT_SOCKET.name, MAP_INJECT_SOCKET_CONFIG, config).kernel_wide());
    Ok(())
}

/// What planning knows of the memory path (the verifier may still refuse it at load time).
fn memory_status_at_plan() -> Result<(), String> {
    inject_memory::lockdown_refusal().map_or(Ok(()), |why| Err(why.to_string()))
}

/// The memory path's state once the kernel loaded (or refused) it.
fn memory_status(t: &AttachTarget) -> Result<(), String> {
    if t.running(INJECT_MEMORY.name) {
        Ok(())
    } else if t.refused.contains(&&INJECT_MEMORY) {
        Err(inject_memory::MEMORY_REFUSED.to_string())
    } else {
        Err(inject_memory::lockdown_refusal().unwrap_or("not planned").to_string())
    }
}

/// `task_struct.thread.fsbase` and `task_struct.tgid` in the running kernel's BTF.
fn task_offsets() -> Result<(u32, u32), String> {
    let btf = fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): {e}"))?;
    let fsbase = member_offset(&btf, "task_struct", &["thread", "fsbase"])
        .ok_or_else(|| "the kernel's BTF has no task_struct.thread.fsbase (not x86-64?)".to_string())?;
    let tgid = member_offset(&btf, "task_struct", &["tgid"])
        .ok_or_else(|| "the kernel's BTF has no task_struct.tgid".to_string())?;
    Ok((fsbase, tgid))
}

/// Loads and attaches SOCK_OPS and SK_MSG (unless the memory path runs), then logs the start-up
/// line that says which path covers what. A failure turns the socket path off, never tracing.
fn attach_extra(ebpf: &mut Ebpf, t: &AttachTarget) -> Result<(), Failure> {
    let memory = memory_status(t);
    let grpc = t.planned.iter().any(|u| u.name == grpc::INJECT_SOCKET_GRPC.name);
    // gRPC over h2c has no memory path: with gRPC calls to inject the socket path runs beside
    // the memory path (an HTTP/1 request the memory path armed is left to it: `state != 0` in
    // the kernel). Not yet run on a kernel without lockdown.
    let socket = match &memory {
        Ok(()) if !grpc => Err("not used while the memory path runs".to_string()),
        _ => load(ebpf).and_then(|()| attach(ebpf, t)),
    };
    let line = coverage(socket.as_ref().map_err(|e| e.as_str()), &memory, grpc);
    if memory.is_err() && socket.is_err() {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
    if let Ok(a) = &socket {
        tracing::info!("GOTEL_PROPAGATION=inject: {}", fionread_message(a));
        if !a.others.is_empty() {
            tracing::warn!(
                cgroup = %a.cgroup.display(),
                "GOTEL_PROPAGATION=inject: other SOCK_OPS programs run on the target's cgroup, gotel's runs \
                 beside them (BPF_F_ALLOW_MULTI): {}",
                a.others.join(", ")
            );
        }
    }
    Ok(())
}

/// The target in `slot` is gone (node mode, one object for every target): its process leaves
/// `TARGETS` (done by `attach` for every slot) and, when it was the last target of its cgroup,
/// the SOCK_OPS link on that cgroup is closed.
fn detach_extra(ebpf: &mut Ebpf, slot: u32) {
    let mut links = CGROUP_LINKS.lock().unwrap_or_else(|e| e.into_inner());
    for (cgroup, link, slots) in links.iter_mut() {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            if let (Some(id), Ok(p)) = (link.take(), prog::<SockOps>(ebpf, PROGRAM_SOCK_OPS)) {
                if let Err(e) = p.detach(id) {
                    tracing::debug!(cgroup = %cgroup.display(), "closing the SOCK_OPS link: {e}");
                }
            }
        }
    }
    links.retain(|(_, _, slots)| !slots.is_empty());
}

/// The socket path attached to a process.
pub struct Attached {
    pub cgroup: PathBuf,
    /// Other SOCK_OPS programs effective on that cgroup, `name (id N)`.
    pub others: Vec<String>,
    /// Some(true): this kernel reports FIONREAD = 0 for enrolled sockets; None: not measured.
    pub fionread_regression: Result<bool, String>,
    /// Client connections that were open before gotel attached.
    pub preexisting: OpenConnections,
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    p.try_into().map_err(|_| format!("program {name} has an unexpected type"))
}

/// The error and its causes; of a verifier log only the last lines (the verdict), not the
/// thousands before (the whole log at debug level: `GOTEL_LOG=gotel::instrumentations=debug`).
fn chain(e: &dyn std::error::Error) -> String {
    let s = crate::attach::chain(e);
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= 8 {
        return s;
    }
    tracing::debug!("GOTEL_PROPAGATION=inject: the whole error:\n{s}");
    format!("{} [...] {}", lines[0], lines[lines.len() - 5..].join(" | "))
}

/// Loads SOCK_OPS and SK_MSG: the verifier's verdict decides whether the socket path can run
/// here (the dial uprobe, a hook, is loaded with the others).
fn load(ebpf: &mut Ebpf) -> Result<(), String> {
    if prog::<SkMsg>(ebpf, PROGRAM_SK_MSG)?.fd().is_ok() {
        return Ok(()); // node mode: loaded for an earlier target
    }
    prog::<SockOps>(ebpf, PROGRAM_SOCK_OPS)?
        .load()
        .map_err(|e| format!("loading {PROGRAM_SOCK_OPS}: {}", chain(&e)))?;
    prog::<SkMsg>(ebpf, PROGRAM_SK_MSG)?.load().map_err(|e| format!("loading {PROGRAM_SK_MSG}: {}", chain(&e)))?;
    Ok(())
}

/// Which cgroups gotel's SOCK_OPS program is attached to when one loaded object serves several
/// targets (node mode), and for which targets' slots: the link is made for the first target of
/// a cgroup and closed with the last ([`detach_extra`]), so a pod that goes away leaves no
/// program holding its cgroup.
static CGROUP_LINKS: std::sync::Mutex<Vec<CgroupLink>> = std::sync::Mutex::new(Vec::new());

/// A cgroup, gotel's SOCK_OPS link on it, and the slots of the targets in it.
type CgroupLink = (PathBuf, Option<SockOpsLinkId>, Vec<u32>);

/// Attaches the socket path to the target (the dial uprobe is a hook, attached with the other
/// uprobes).
fn attach(ebpf: &mut Ebpf, t: &AttachTarget) -> Result<Attached, String> {
    let pid = t.pid;
    // Otherwise `gotel_socket_dial` learns it at the first new connection.
    if let Some(tgid) = crate::target::kernel_pid(pid) {
        let map = ebpf.map_mut(MAP_TARGETS).ok_or("TARGETS map missing")?;
        let mut targets: aya::maps::HashMap<&mut MapData, u32, u32> =
            aya::maps::HashMap::try_from(map).map_err(|e| chain(&e))?;
        targets.insert(tgid, t.slot, 0).map_err(|e| format!("TARGETS: {}", chain(&e)))?;
    }
    let cgroup = cgroup_dir(pid)?;
    let dir = fs::File::open(&cgroup).map_err(|e| format!("cannot open cgroup {}: {e}", cgroup.display()))?;
    let others = sock_ops_programs(dir.as_fd()).unwrap_or_else(|e| vec![format!("(cannot list: {e})")]);
    let fionread_regression = fionread_regression(ebpf);

    let sockets = ebpf.map(MAP_INJECT_SOCKETS).ok_or("INJECT_SOCKETS map missing")?;
    let sockets: SockHash<&MapData, u64> = SockHash::try_from(sockets).map_err(|e| chain(&e))?;
    let fd = sockets.fd().try_clone().map_err(|e| format!("INJECT_SOCKETS: {e}"))?;
    prog::<SkMsg>(ebpf, PROGRAM_SK_MSG)?
        .attach(&fd)
        .map_err(|e| format!("attaching {PROGRAM_SK_MSG}: {}", chain(&e)))?;
    // From 5.7 aya attaches through a BPF link, which the kernel always adds as
    // BPF_F_ALLOW_MULTI (and refuses any flag for); before that, ask for it explicitly.
    let modern = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    let mode = if modern { CgroupAttachMode::Single } else { CgroupAttachMode::AllowMultiple };
    let mut links = CGROUP_LINKS.lock().unwrap_or_else(|e| e.into_inner());
    match links.iter_mut().find(|(c, _, _)| *c == cgroup).filter(|_| t.shared) {
        // Another target of this cgroup attached it already (the kernel refuses the same
        // program twice on one cgroup).
        Some((_, _, slots)) => slots.push(t.slot),
        None => {
            let link = prog::<SockOps>(ebpf, PROGRAM_SOCK_OPS)?
                .attach(&dir, mode)
                .map_err(|e| format!("attaching {PROGRAM_SOCK_OPS} to cgroup {}: {}", cgroup.display(), chain(&e)))?;
            if t.shared {
                links.push((cgroup.clone(), Some(link), vec![t.slot]));
            }
        }
    }
    drop(links);
    let preexisting = enrol_open_connections(ebpf, pid).unwrap_or_else(|e| {
        tracing::warn!(pid, "GOTEL_PROPAGATION=inject: connections open before gotel attached are not covered: {e}");
        OpenConnections { how: format!("not covered: {e}"), ..Default::default() }
    });
    Ok(Attached { cgroup, others, fionread_regression, preexisting })
}

/// The start-up line: which path covers what, and what is not covered (`grpc`: gRPC client
/// calls are followed, `inject.socket.grpc`).
pub fn coverage(socket: Result<&Attached, &str>, memory: &Result<(), String>, grpc: bool) -> String {
    let mut parts = Vec::new();
    let http2 = if grpc && socket.is_ok() {
        parts.push(
            "gRPC over plaintext HTTP/2 (h2c): through the socket (HEADERS frames; on connections open before \
             gotel attached from the first message that starts on a frame boundary)"
                .to_string(),
        );
        "HTTP/2 other than gRPC over h2c"
    } else {
        "HTTP/2"
    };
    match socket {
        Ok(a) => {
            parts.push(format!(
                "plaintext HTTP/1.x: through the socket (SOCK_OPS on cgroup {}, only this process's client \
                 connections; {} already open enrolled{} ({}))",
                a.cgroup.display(),
                a.preexisting.enrolled,
                match a.preexisting.refused {
                    0 => String::new(),
                    n => format!(", {n} refused by the kernel (in another program's sockmap?): not covered"),
                },
                a.preexisting.how,
            ));
        }
        Err(why) => parts.push(format!("socket path off ({why})")),
    }
    match memory {
        Ok(()) if socket.is_ok() => parts.push(
            "HTTP/1.x, plaintext and TLS: memory path (bpf_probe_write_user, it writes into the target; the \
                 socket path leaves the requests it armed alone)"
                .into(),
        ),
        Ok(()) => parts.push(
            "HTTP/1.x, plaintext and TLS: memory path (bpf_probe_write_user, it writes into the target's buffer)"
                .into(),
        ),
        Err(why) if socket.is_ok() => parts.push(format!("TLS and {http2}: not propagated, {why}")),
        Err(why) => parts.push(format!("nothing is propagated: memory path off too, {why}")),
    }
    if memory.is_ok() {
        parts.push(format!("{http2}: not propagated"));
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
    let map = ebpf.map_mut(MAP_FIONREAD_PROBE).ok_or("FIONREAD_PROBE map missing")?;
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

/// At most this many fd numbers are tried when the target's fd directory cannot be listed (a
/// `pidfd_getfd` each, about a microsecond): a process with a larger fd table has the
/// connections above it not covered, and the log says so.
const MAX_FDS_TRIED: u32 = 65536;

/// The target's open connections found before gotel attached, for the log.
#[derive(Debug, Default, PartialEq)]
pub struct OpenConnections {
    /// Client connections enrolled, and refused by the kernel (e.g. already in another
    /// program's sockmap: a socket has one set of programs).
    pub enrolled: usize,
    pub refused: usize,
    /// How they were found: `/proc/PID/fd`, or fd numbers tried below `FDSize`.
    pub how: String,
}

/// Which fd numbers of the target to duplicate: the sockets `/proc/PID/fd` lists when gotel may
/// read it; otherwise (the directory is mode 0500 owned by the target's user, and a sidecar's
/// root without CAP_DAC_READ_SEARCH may not read it) every number below the fd table's size
/// (`FDSize:` of the world-readable `/proc/PID/status`), at most `MAX_FDS_TRIED`.
fn fd_candidates(pid: u32) -> Result<(Vec<i32>, String), String> {
    let listing = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) => dir,
        Err(e) => return fds_below_table_size(pid, &e),
    };
    let fds = listing
        .flatten()
        .filter(|entry| fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .filter_map(|entry| entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .collect();
    Ok((fds, format!("listed in /proc/{pid}/fd")))
}

/// Every fd number below the target's fd table size, at most `MAX_FDS_TRIED`; `listing` says why
/// the fd directory was not used.
fn fds_below_table_size(pid: u32, listing: &dyn std::fmt::Display) -> Result<(Vec<i32>, String), String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let size = fd_table_size(&status)
        .ok_or_else(|| format!("/proc/{pid}/fd: {listing}, and /proc/{pid}/status has no FDSize line"))?;
    let tried = size.min(MAX_FDS_TRIED);
    let mut how = format!("fd numbers 0..{tried} tried with pidfd_getfd (/proc/{pid}/fd: {listing})");
    if tried < size {
        how += &format!("; fds {tried}..{size} NOT tried (FDSize {size} > {MAX_FDS_TRIED}): not covered");
    }
    Ok(((0..tried as i32).collect(), how))
}

/// `FDSize:` of a `/proc/PID/status` text: the number of fd slots the process's table has.
fn fd_table_size(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("FDSize:")).and_then(|v| v.trim().parse().ok())
}

/// Client TCP connections the target had open before gotel attached: duplicated from the target
/// (`pidfd_getfd`, which needs only ptrace access: CAP_SYS_PTRACE), told apart from accepted ones
/// by their local port (not one the target listens on), and put into the sockhash under their
/// socket cookie.
fn enrol_open_connections(ebpf: &mut Ebpf, pid: u32) -> Result<OpenConnections, String> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let (candidates, how) = fd_candidates(pid)?;
    let map = ebpf.map_mut(MAP_INJECT_SOCKETS).ok_or("INJECT_SOCKETS map missing")?;
    let mut map: SockHash<&mut MapData, u64> = SockHash::try_from(map).map_err(|e| chain(&e))?;
    let mut found = OpenConnections { how, ..Default::default() };
    for (fd, sock) in client_connections(pidfd.as_fd(), candidates)? {
        match map.insert(sock.cookie, fd.as_raw_fd(), 0) {
            Ok(()) => found.enrolled += 1,
            Err(_) => found.refused += 1,
        }
    }
    Ok(found)
}

/// The connected TCP client sockets among fd numbers `candidates` of the process behind `pidfd`,
/// duplicated into gotel; numbers with no file are skipped.
fn client_connections(
    pidfd: std::os::fd::BorrowedFd<'_>,
    candidates: Vec<i32>,
) -> Result<Vec<(OwnedFd, TcpSocket)>, String> {
    let mut listening = Vec::new();
    let mut connected = Vec::new();
    for n in candidates {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBADF) {
                continue; // no file at that number (or closed since it was listed)
            }
            return Err(format!("pidfd_getfd: {e}"));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let Some(sock) = tcp_socket(&fd) else { continue };
        if sock.listening {
            listening.push(sock.local_port);
        } else if sock.connected {
            connected.push((fd, sock));
        }
    }
    // Accepted ones (local port one the process listens on) are server connections, never changed.
    connected.retain(|(_, sock)| !listening.contains(&sock.local_port));
    Ok(connected)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_says_what_is_not_covered() {
        let a = Attached {
            cgroup: "/sys/fs/cgroup/x".into(),
            others: vec![],
            fionread_regression: Ok(true),
            preexisting: OpenConnections { enrolled: 2, refused: 0, how: "listed in /proc/7/fd".into() },
        };
        let text = coverage(Ok(&a), &Err("kernel in lockdown".into()), false);
        assert!(text.contains("plaintext HTTP/1.x: through the socket"), "{text}");
        assert!(text.contains("2 already open enrolled (listed in /proc/7/fd)"), "{text}");
        assert!(text.contains("TLS and HTTP/2: not propagated, kernel in lockdown"), "{text}");
        let text = coverage(Ok(&a), &Err("kernel in lockdown".into()), true);
        assert!(text.contains("gRPC over plaintext HTTP/2 (h2c): through the socket"), "{text}");
        assert!(text.contains("TLS and HTTP/2 other than gRPC over h2c: not propagated"), "{text}");
    }

    #[test]
    fn fd_table_size_is_read_from_status() {
        let status = "Name:\tfrontend\nUmask:\t0022\nState:\tS (sleeping)\nFDSize:\t64\nGroups:\t\n";
        assert_eq!(fd_table_size(status), Some(64));
        assert_eq!(fd_table_size("Name:\tx\n"), None);
    }

    /// The fallback used when the fd directory cannot be listed (a sidecar's root without
    /// CAP_DAC_READ_SEARCH), run on this process: trying every number below FDSize finds the
    /// client end of a loopback connection, and not the listener or the accepted end.
    #[test]
    fn fds_below_table_size_find_client_connections_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let cookie = tcp_socket(&client.as_fd().try_clone_to_owned().unwrap()).unwrap().cookie;

        let pid = std::process::id();
        let (candidates, how) = fds_below_table_size(pid, &"(test)").unwrap();
        assert!(how.starts_with("fd numbers 0.."), "{how}");
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let found = client_connections(pidfd.as_fd(), candidates).unwrap();
        let cookies: Vec<u64> = found.iter().map(|(_, s)| s.cookie).collect();
        assert!(cookies.contains(&cookie), "client {cookie} not among {cookies:?}");
        let port = listener.local_addr().unwrap().port();
        assert!(found.iter().all(|(_, s)| s.local_port != port), "an accepted or listening socket was kept");
    }
}
