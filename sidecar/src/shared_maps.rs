//! Node mode: maps every target's kernel programs share, through pins in a bpffs instance gotel
//! mounts for itself.
//!
//! Where node mode cannot use one loaded object for every target (`kernel`: gotel not in the
//! host's pid namespace), it loads one set of kernel programs per target, and until this module
//! each set came with its own maps. The goroutine map (`GOROUTINES`, an LRU hash preallocated in
//! full: 16,384 records of 1.6 KB, about 27 MiB of kernel memory whatever the target does) was
//! most of a target's cost, paid again for every Go process a node agent traces. Its key is
//! `{tgid, g}`, so one map can serve every process: in node mode the first load creates and
//! pins it and every later load uses that map. So are `join.same_node`'s connections (a client's
//! and a server's programs must see one map, see `instrumentations::join_same_node`).
//!
//! What sharing changes, and how each is handled:
//! - `GOTEL_MAX_GOROUTINES` bounds the goroutines with traced calls in progress of all targets
//!   together, not of each (README says so).
//! - A target's records outlive its session unless removed: [`forget`] deletes the keys of its
//!   process when the session ends (a reused pid must not find the old process's frames), and
//!   the per-target readings (calls in progress at exit, the tracked-goroutines gauge) take only
//!   keys of their process.
//! - The key's tgid is the kernel's number of the process; gotel compares it with the pid it
//!   sees, so the goroutine map is shared only when gotel runs in the initial pid namespace
//!   (a DaemonSet with `hostPID: true`); elsewhere each target keeps a map of its own.
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
use gotel_shared::names::{MAP_GOROUTINES, MAP_SAME_NODE_CONNS};

/// What this gotel shares, once [`share`] ran (node mode).
struct Sharing {
    /// The bpffs instance's root (an `O_PATH` descriptor of the mount).
    root: OwnedFd,
    /// The maps pinned there.
    maps: Vec<&'static str>,
}

static SHARING: OnceLock<Sharing> = OnceLock::new();
/// Whether the shared maps are pinned yet: the first load holds this while it creates and pins
/// them, so that two sessions starting together do not both create them.
static PINNED: Mutex<bool> = Mutex::new(false);

/// Turns sharing on for this process (node mode): the goroutine map when gotel sees the
/// kernel's pids, `join.same_node`'s map when that unit is selected. Refused (an old kernel
/// without `fsopen`, a seccomp profile): each target keeps maps of its own and `join.same_node`
/// is off; the message says so.
pub fn share(same_node: bool) -> Result<(), String> {
    if SHARING.get().is_some() {
        return Ok(());
    }
    let mut maps = Vec::new();
    if crate::target::kernel_pid(std::process::id()).is_some() {
        maps.push(MAP_GOROUTINES);
    }
    if same_node {
        maps.push(MAP_SAME_NODE_CONNS);
    }
    let root = private_bpffs()?;
    let _ = SHARING.set(Sharing { root, maps });
    Ok(())
}

/// Whether `map` is shared by every target of this gotel.
pub fn shared(map: &str) -> bool {
    SHARING.get().is_some_and(|s| s.maps.contains(&map))
}

/// Loads the eBPF object with the shared maps taken from their pins; `SAME_NODE_CONNS`, when
/// not shared, gets one entry (`join.same_node` is off).
pub fn load(loader: &mut EbpfLoader, object: &[u8]) -> Result<Ebpf, EbpfError> {
    let s = SHARING.get();
    load_in(s.map(|s| (&s.root, s.maps.as_slice())), &PINNED, loader, object)
}

/// [`load`] with the bpffs instance `root` and the maps pinned there (`None`: nothing shared),
/// and the first-load lock.
fn load_in(
    shared: Option<(&OwnedFd, &[&'static str])>,
    pinned: &Mutex<bool>,
    loader: &mut EbpfLoader,
    object: &[u8],
) -> Result<Ebpf, EbpfError> {
    let maps = shared.map_or(&[][..], |s| s.1);
    if !maps.contains(&MAP_SAME_NODE_CONNS) {
        loader.map_max_entries(MAP_SAME_NODE_CONNS, 1);
    }
    let Some((root, maps)) = shared.filter(|s| !s.1.is_empty()) else {
        return loader.load(object);
    };
    for map in maps {
        loader.map_pin_path(map, pin_path(root, map));
    }
    let mut pinned = pinned.lock().unwrap_or_else(|e| e.into_inner());
    if *pinned {
        drop(pinned);
        return loader.load(object);
    }
    let loaded = loader.load(object);
    *pinned = loaded.is_ok();
    loaded
}

/// Removes process `tgid`'s records from the shared goroutine map (its session ended). Returns
/// how many there were. Nothing to do when the map is the session's own.
pub fn forget(ebpf: &mut Ebpf, tgid: u32) -> usize {
    if shared(MAP_GOROUTINES) {
        forget_in(ebpf, tgid)
    } else {
        0
    }
}

/// [`forget`] whether or not the map is pinned (one object serving every target: the map is
/// shared by being that object's).
pub(crate) fn forget_in(ebpf: &mut Ebpf, tgid: u32) -> usize {
    let Some(map) = ebpf.map_mut(MAP_GOROUTINES) else { return 0 };
    let Ok(mut m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
    else {
        return 0;
    };
    let keys: Vec<_> = m.keys().flatten().filter(|k| k.tgid == tgid).collect();
    keys.iter().filter(|k| m.remove(k).is_ok()).count()
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
        same_node::{ConnContext, ConnKey},
        GoroutineKey, GoroutineState,
    };

    /// Two loads in one gotel see one goroutine map and one connection map: what one target's
    /// programs store, another's find; `forget` removes one process's records only. Needs root
    /// (BPF) and a kernel with `fsopen`.
    #[test]
    fn two_loads_share_the_pinned_maps() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // Its own instance and lock, not the process-wide ones (other tests plan without sharing).
        let (root, first) = (private_bpffs().expect("gotel's own bpffs"), Mutex::new(false));
        let maps = [MAP_GOROUTINES, MAP_SAME_NODE_CONNS];
        let load = || load_in(Some((&root, &maps)), &first, &mut EbpfLoader::new(), crate::attach::EBPF_OBJECT);
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
        for (tgid, g) in [(100, 1), (100, 2), (200, 1)] {
            g_b.insert(GoroutineKey::new(tgid, g), state, 0).unwrap();
        }
        let count = |e: &Ebpf, tgid: u32| {
            aya::maps::HashMap::<_, GoroutineKey, GoroutineState>::try_from(e.map(MAP_GOROUTINES).unwrap())
                .unwrap()
                .keys()
                .flatten()
                .filter(|k| k.tgid == tgid)
                .count()
        };
        assert_eq!((count(&a, 100), count(&a, 200)), (2, 1), "records stored by b's maps, seen by a");
        assert_eq!(forget_in(&mut a, 100), 2);
        assert_eq!((count(&b, 100), count(&b, 200)), (0, 1));
        assert!(!std::path::Path::new("/sys/fs/bpf").join(MAP_GOROUTINES).exists(), "nothing pinned on the host");
    }

    /// Without sharing, the connection map shrinks to one entry and the goroutine map is the
    /// load's own.
    #[test]
    fn nothing_shared_by_default() {
        assert!(!shared(MAP_GOROUTINES) && !shared(MAP_SAME_NODE_CONNS));
    }
}
