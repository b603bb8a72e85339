//! Node mode: `join.same_node`'s connection map (`SAME_NODE_CONNS`), which a client's and a
//! server's programs must both see, shared through a pin in a bpffs instance gotel mounts for
//! itself.
//!
//! Node mode loads one set of kernel programs for every target when gotel sees the kernel's
//! process numbers (`kernel::share_programs`): their maps, the goroutine map among them, serve
//! every target by being that one object's. Where it cannot (gotel not in the host's pid
//! namespace), each target loads programs of its own, and only this map is shared between the
//! loads (the goroutine map stays each load's own: its keys carry a process number gotel could
//! not match with the processes it sees). The goroutine map used to be pinned here as well, but
//! it was shared only where the one object already shares it: the pin was never read.
//!
//! Where the maps live: a bpffs instance mounted nowhere (`fsopen` + `fsmount`, reached as
//! `/proc/self/fd/N`): nothing appears in the host's `/sys/fs/bpf`, no directory is needed
//! (read-only root), and when gotel exits, even killed, the instance and the maps go with its
//! last descriptor. Two gotels (e.g. two sidecars) never see each other's maps.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use aya::{Ebpf, EbpfError, EbpfLoader};
use gotel_shared::names::MAP_SAME_NODE_CONNS;

/// The bpffs instance's root (an `O_PATH` descriptor of the mount), once [`share`] ran: the
/// connection map is pinned there.
static SHARING: OnceLock<OwnedFd> = OnceLock::new();
/// Whether the shared map is pinned yet: the first load holds this while it creates and pins
/// it, so that two sessions starting together do not both create it.
static PINNED: Mutex<bool> = Mutex::new(false);

/// Turns sharing on for this process (node mode) when `join.same_node` is selected (`same_node`).
/// Refused (an old kernel without `fsopen`, a seccomp profile): `join.same_node` is off; the
/// message says so.
pub fn share(same_node: bool) -> Result<(), String> {
    if SHARING.get().is_some() || !same_node {
        return Ok(());
    }
    let root = private_bpffs()?;
    let _ = SHARING.set(root);
    Ok(())
}

/// Whether `map` is shared by every target of this gotel.
pub fn shared(map: &str) -> bool {
    map == MAP_SAME_NODE_CONNS && SHARING.get().is_some()
}

/// Loads the eBPF object with the connection map taken from its pin; when not shared, it gets
/// one entry (`join.same_node` is off).
pub fn load(loader: &mut EbpfLoader, object: &[u8]) -> Result<Ebpf, EbpfError> {
    load_in(SHARING.get(), &PINNED, loader, object)
}

/// [`load`] with the bpffs instance `root` (`None`: nothing shared) and the first-load lock.
fn load_in(
    root: Option<&OwnedFd>,
    pinned: &Mutex<bool>,
    loader: &mut EbpfLoader,
    object: &[u8],
) -> Result<Ebpf, EbpfError> {
    let Some(root) = root else {
        loader.map_max_entries(MAP_SAME_NODE_CONNS, 1);
        return loader.load(object);
    };
    loader.map_pin_path(MAP_SAME_NODE_CONNS, pin_path(root, MAP_SAME_NODE_CONNS));
    let mut pinned = pinned.lock().unwrap_or_else(|e| e.into_inner());
    if *pinned {
        drop(pinned);
        return loader.load(object);
    }
    let loaded = loader.load(object);
    *pinned = loaded.is_ok();
    loaded
}

/// A new bpffs instance, mounted nowhere: the `O_PATH` descriptor of its root.
fn private_bpffs() -> Result<OwnedFd, String> {
    let refused = |call: &str| {
        format!(
            "node mode: cannot create gotel's own bpffs ({call}: {}): each target gets maps of its own and \
             join.same_node is off",
            std::io::Error::last_os_error()
        )
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

fn pin_path(root: &OwnedFd, map: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{map}", root.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotel_shared::{
        names::MAP_GOROUTINES,
        same_node::{ConnContext, ConnKey},
        GoroutineKey, GoroutineState,
    };

    /// Two loads in one gotel see one connection map: what one target's programs store,
    /// another's find; the goroutine map stays each load's own; nothing is pinned on the host.
    /// Needs root (BPF) and a kernel with `fsopen`.
    #[test]
    fn two_loads_share_the_pinned_connection_map() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // Its own instance and lock, not the process-wide ones (other tests plan without sharing).
        let (root, first) = (private_bpffs().expect("gotel's own bpffs"), Mutex::new(false));
        let load = || load_in(Some(&root), &first, &mut EbpfLoader::new(), crate::attach::EBPF_OBJECT);
        let mut a = load().expect("first load");
        let mut b = load().expect("second load");

        let key = ConnKey { client_port: 1, server_port: 2, ..Default::default() };
        let mut in_b: aya::maps::HashMap<_, ConnKey, ConnContext> =
            aya::maps::HashMap::try_from(b.map_mut(MAP_SAME_NODE_CONNS).unwrap()).unwrap();
        in_b.insert(key, ConnContext { span_id: 7, ..Default::default() }, 0).unwrap();
        let in_a: aya::maps::HashMap<_, ConnKey, ConnContext> =
            aya::maps::HashMap::try_from(a.map(MAP_SAME_NODE_CONNS).unwrap()).unwrap();
        assert_eq!(in_a.get(&key, 0).unwrap().span_id, 7);

        let state: GoroutineState = unsafe { std::mem::zeroed() };
        let mut g_b: aya::maps::HashMap<_, GoroutineKey, GoroutineState> =
            aya::maps::HashMap::try_from(b.map_mut(MAP_GOROUTINES).unwrap()).unwrap();
        g_b.insert(GoroutineKey::new(100, 1), state, 0).unwrap();
        let g_a: aya::maps::HashMap<_, GoroutineKey, GoroutineState> =
            aya::maps::HashMap::try_from(a.map_mut(MAP_GOROUTINES).unwrap()).unwrap();
        assert_eq!(g_a.keys().count(), 0, "each load's own goroutine map");
        for map in [MAP_SAME_NODE_CONNS, MAP_GOROUTINES] {
            assert!(!std::path::Path::new("/sys/fs/bpf").join(map).exists(), "nothing pinned on the host");
        }
    }

    /// Without sharing, the connection map shrinks to one entry.
    #[test]
    fn nothing_shared_by_default() {
        assert!(!shared(MAP_SAME_NODE_CONNS));
    }
}
