//! `join.same_node`: when one gotel traces both ends of an HTTP/1 connection (plaintext or TLS) (node mode: a client
//! and a server on the same node), the server span continues the client span without anything
//! written into either process or their traffic, so a trace joins with injection off.
//!
//! The client's request context is stored under the connection (client and server address and
//! port as both processes' `net.netFD`s hold them; rules in `gotel_shared::same_node`) by a
//! hook at `net/http.(*persistConn).roundTrip`'s entry ([`JOIN_SAME_NODE_CLIENT`], one trap per
//! client request); the server span's entry looks its connection up when the request has no
//! `traceparent` (no trap of its own). Kernel side: `sidecar-ebpf/src/propagation/same_node.rs`.
//!
//! Why a pinned map: gotel loads one set of kernel programs per target, each with its own maps,
//! but the client's and the server's programs must see the same `SAME_NODE_CONNS`. The first
//! load creates it and pins it in a bpffs instance gotel mounts for itself, detached from every
//! mount namespace ([`share`]: `fsopen` + `fsmount`, reached as `/proc/self/fd/N`): nothing
//! appears in the host's `/sys/fs/bpf`, no directory is needed (read-only root), and when gotel
//! exits, even killed, the instance and the map go with its last descriptor. Every later load
//! finds the pin and uses that map. Only node mode shares (two gotels, e.g. two sidecars, never
//! see each other's map); without sharing the unit is off and the map has one entry.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use aya::{Ebpf, EbpfError, EbpfLoader};
use gotel_shared::{
    names::{MAP_SAME_NODE_CONFIG, MAP_SAME_NODE_CONNS, PROGRAM_SAME_NODE_CLIENT},
    same_node::{SameNodeConfig, COOKIE_SAME_NODE_CLIENT, NO_OFFSET},
    Counter,
};

use super::{types_of, Activation, At, AttachTarget, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Wanted};
use crate::exit::Failure;

pub static JOIN_SAME_NODE: Instrumentation = Instrumentation {
    name: "join.same_node",
    selectable: true,
    doc: "in node mode, with injection off: a server span whose request has no `traceparent` continues the client \
          span gotel traced on the other end of its connection (HTTP/1, plaintext or TLS, both ends traced by this gotel); \
          reads only. Costs one trap per client request (`persistConn.roundTrip`)",
    fields: &[
        // Only binaries with an HTTP client have it.
        FieldNeed::std("net/http.persistConn", "conn", GoTy::Iface("net.Conn")).optional(),
        FieldNeed::std("net/http.response", "conn", GoTy::Ptr("net/http.conn")),
        FieldNeed::std("net/http.conn", "rwc", GoTy::Iface("net.Conn")),
        FieldNeed::std("net.TCPConn", "conn", GoTy::Opaque),
        FieldNeed::std("net.conn", "fd", GoTy::Ptr("net.netFD")),
        FieldNeed::std("net.netFD", "family", GoTy::Int),
        FieldNeed::std("net.netFD", "sotype", GoTy::Int),
        FieldNeed::std("net.netFD", "laddr", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.netFD", "raddr", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.TCPAddr", "IP", GoTy::Bytes),
        FieldNeed::std("net.TCPAddr", "Port", GoTy::Int),
        // HTTPS: the connection under TLS (binaries without crypto/tls lack it).
        FieldNeed::std("crypto/tls.Conn", "conn", GoTy::Iface("net.Conn")).optional(),
    ],
    wanted,
    prepare: Some(prepare),
    attach_extra: Some(enable),
    counters: &[
        ("same_node_offered", Counter::SameNodeOffered),
        ("same_node_joined", Counter::SameNodeJoined),
        ("same_node_expired", Counter::SameNodeExpired),
        ("same_node_unreadable", Counter::SameNodeUnreadable),
    ],
    quiet_counters: true,
    ..Instrumentation::BASE
};

/// The client half: its own unit so that a server-only binary (no `persistConn`) keeps the
/// server half.
pub static JOIN_SAME_NODE_CLIENT: Instrumentation = Instrumentation {
    name: "join.same_node.client",
    doc: "with `join.same_node`: stores each HTTP client request's context under its connection",
    hooks: &[HookSpec {
        program: PROGRAM_SAME_NODE_CLIENT,
        function: "net/http.(*persistConn).roundTrip",
        at: At::Entry,
        cookie: COOKIE_SAME_NODE_CLIENT,
    }],
    wanted: |s| {
        if sharing().is_some() && s.has_spans(super::http_client::HTTP_CLIENT.name) {
            Wanted::Yes
        } else {
            Wanted::No
        }
    },
    ..Instrumentation::BASE
};

fn wanted(s: &super::Session) -> Wanted {
    let http = s.has_spans(super::http_server::HTTP_SERVER.name) || s.has_spans(super::http_client::HTTP_CLIENT.name);
    if sharing().is_some() && http {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The kernel gets the field offsets now, `enabled` and the network namespace once the target
/// is known ([`enable`]).
fn prepare(a: &mut Activation) -> Result<(), String> {
    let client = super::http_client::HTTP_CLIENT.name;
    let client_probe = a.probes.iter().find(|p| p.library.is_some_and(|l| l.name == client)).map_or(u32::MAX, |p| p.id);
    let config = offsets(a, client_probe)
        .ok_or("join.same_node is off for this binary: the layout of net's connections is unknown")?;
    a.map_fills.push(MapFill::array(JOIN_SAME_NODE.name, MAP_SAME_NODE_CONFIG, 0, config));
    Ok(())
}

fn offsets(a: &Activation, client_probe: u32) -> Option<SameNodeConfig> {
    let dwarf = types_of(a.bin).ok()?;
    let t = &dwarf.types;
    let off = |s: &str, f: &str| t.struct_field(s, f).map(|(o, _)| o as u32);
    // A binary without client spans has no persistConn to read: no client side.
    let pconn_conn = off("net/http.persistConn", "conn");
    Some(SameNodeConfig {
        enabled: 0,
        client_probe: if pconn_conn.is_some() { client_probe } else { u32::MAX },
        netns: 0,
        pconn_conn: pconn_conn.unwrap_or(0),
        response_conn: off("net/http.response", "conn")?,
        conn_rwc: off("net/http.conn", "rwc")?,
        tcpconn_fd: off("net.TCPConn", "conn")? + off("net.conn", "fd")?,
        fd_family: off("net.netFD", "family")?,
        fd_sotype: off("net.netFD", "sotype")?,
        fd_laddr: off("net.netFD", "laddr")?,
        fd_raddr: off("net.netFD", "raddr")?,
        addr_ip: off("net.TCPAddr", "IP")?,
        addr_port: off("net.TCPAddr", "Port")?,
        tls_conn: off("crypto/tls.Conn", "conn").unwrap_or(NO_OFFSET),
    })
}

/// The target is known: its network namespace (loopback keys are per namespace), then on.
fn enable(ebpf: &mut Ebpf, t: &AttachTarget) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    // Unreadable (no CAP_SYS_PTRACE over the target): loopback keys without it, which can only
    // match more, never tracing less; said once.
    let netns = match std::fs::metadata(format!("/proc/{}/ns/net", t.pid)) {
        Ok(m) => m.ino() as u32,
        Err(e) => {
            tracing::warn!(
                pid = t.pid,
                "join.same_node: /proc/{}/ns/net: {e}; loopback connections are matched across network namespaces",
                t.pid
            );
            0
        }
    };
    let map = ebpf.map_mut(MAP_SAME_NODE_CONFIG).expect("SAME_NODE_CONFIG map in the eBPF object");
    let mut config: aya::maps::Array<&mut aya::maps::MapData, SameNodeConfig> =
        aya::maps::Array::try_from(map).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))?;
    let mut value = config.get(&0, 0).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))?;
    value.enabled = 1;
    value.netns = netns;
    config.set(0, value, 0).map_err(|e| Failure::environment(format!("SAME_NODE_CONFIG: {e}")))
}

/// gotel's own bpffs instance (the mount's root, an `O_PATH` descriptor), once [`share`]d.
static BPFFS: OnceLock<OwnedFd> = OnceLock::new();
/// Whether the shared map is pinned yet: the first load holds this while it creates and pins
/// it, so that two sessions starting together do not both create one.
static PINNED: Mutex<bool> = Mutex::new(false);

fn sharing() -> Option<&'static OwnedFd> {
    BPFFS.get()
}

/// Turns sharing on for this process (node mode, `join.same_node` selected): mounts a bpffs
/// instance attached to no mount namespace. Refused (an old kernel without `fsopen`, a seccomp
/// profile): the unit stays off, with this message.
pub fn share() -> Result<(), String> {
    if BPFFS.get().is_none() {
        let _ = BPFFS.set(private_bpffs()?);
    }
    Ok(())
}

/// A new bpffs instance, mounted nowhere: the `O_PATH` descriptor of its root.
fn private_bpffs() -> Result<OwnedFd, String> {
    let refused = |call: &str| {
        format!("join.same_node is off: cannot create gotel's own bpffs ({call}: {})", std::io::Error::last_os_error())
    };
    let fs = unsafe {
        libc::syscall(libc::SYS_fsopen, c"bpf".as_ptr(), 1 /* FSOPEN_CLOEXEC */)
    };
    if fs < 0 {
        return Err(refused("fsopen"));
    }
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    // FSCONFIG_CMD_CREATE = 6, then fsmount(fs, FSMOUNT_CLOEXEC = 1, no attributes).
    let created = unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), 6, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    };
    if created < 0 {
        return Err(refused("fsconfig"));
    }
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1, 0) };
    if mnt < 0 {
        return Err(refused("fsmount"));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

fn pin_path(root: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{MAP_SAME_NODE_CONNS}", root.as_raw_fd()))
}

/// Loads the eBPF object with `SAME_NODE_CONNS` shared through the pin when sharing is on,
/// else with a one-entry map of its own (the unit is off).
pub fn load(loader: &mut EbpfLoader, object: &[u8]) -> Result<Ebpf, EbpfError> {
    load_in(sharing(), &PINNED, loader, object)
}

/// [`load`] with the bpffs instance `root` (`None`: not shared) and its first-load lock.
fn load_in(
    root: Option<&OwnedFd>,
    pinned: &Mutex<bool>,
    loader: &mut EbpfLoader,
    object: &[u8],
) -> Result<Ebpf, EbpfError> {
    let Some(root) = root else {
        return loader.map_max_entries(MAP_SAME_NODE_CONNS, 1).load(object);
    };
    loader.map_pin_path(MAP_SAME_NODE_CONNS, pin_path(root));
    let mut pinned = pinned.lock().unwrap_or_else(|e| e.into_inner());
    if *pinned {
        drop(pinned);
        return loader.load(object);
    }
    let loaded = loader.load(object);
    *pinned = loaded.is_ok();
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two loads in one gotel see one map: what the client's programs store, the server's find.
    /// Needs root (BPF) and a kernel with `fsopen`.
    #[test]
    fn two_loads_share_the_pinned_map() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // Its own instance and lock, not the process-wide ones (other tests plan without sharing).
        let (root, first) = (private_bpffs().expect("gotel's own bpffs"), Mutex::new(false));
        let load = || load_in(Some(&root), &first, &mut EbpfLoader::new(), crate::attach::EBPF_OBJECT);
        let a = load().expect("first load");
        let mut b = load().expect("second load");
        use gotel_shared::same_node::{ConnContext, ConnKey};
        let key = ConnKey { client_port: 1, server_port: 2, ..Default::default() };
        let mut in_b: aya::maps::HashMap<_, ConnKey, ConnContext> =
            aya::maps::HashMap::try_from(b.map_mut(MAP_SAME_NODE_CONNS).unwrap()).unwrap();
        in_b.insert(key, ConnContext { span_id: 7, ..Default::default() }, 0).unwrap();
        let in_a: aya::maps::HashMap<_, ConnKey, ConnContext> =
            aya::maps::HashMap::try_from(a.map(MAP_SAME_NODE_CONNS).unwrap()).unwrap();
        assert_eq!(in_a.get(&key, 0).unwrap().span_id, 7);
        assert!(!std::path::Path::new("/sys/fs/bpf").join(MAP_SAME_NODE_CONNS).exists(), "nothing pinned on the host");
    }
}
