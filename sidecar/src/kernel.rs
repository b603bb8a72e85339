//! The loaded eBPF object, alone or shared by every target of a node agent.
//!
//! A session (one traced process) used to load the object for itself. A node agent that traces
//! many processes paid for that many times over: each load verifies every program again (tenths
//! of a second and, while verifying, megabytes of kernel memory each) and makes every map again
//! (the ring buffer, the probe table, the counters). Here, when gotel runs in the host's pid
//! namespace (a DaemonSet with `hostPID: true`), node mode loads one [`Kernel`] and every target
//! takes a *slot* in it:
//! - per-target settings (the `*_CONFIG` arrays, `gotel_shared::names::PER_SLOT_MAPS`) and the
//!   counters have one entry per slot, zeroed when a slot is taken;
//! - the probe table is one id space, each target owning a range ([`first_fit`]);
//! - each uprobe's attach cookie carries the slot and the probe's id (`gotel_shared::cookie_of`),
//!   so the kernel programs know whose settings to read and whose counters to add to; the socket
//!   path, which does not run in a uprobe, finds the slot by process (`TARGETS`);
//! - the one ring buffer is drained by whichever session comes first: each record goes to its
//!   target's queue by probe id (its id made the plan's again), and each session takes its own.
//!
//! Why only in the host's pid namespace: the records and the socket path name processes by the
//! kernel's numbers, which gotel compares with the pids it sees. Elsewhere (a sidecar, a node
//! agent without `hostPID`) each target loads an object of its own, slot 0, as before.
use std::{
    os::fd::AsFd,
    sync::{Arc, Mutex},
};

use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{ProgramError, UProbe},
    Ebpf, EbpfLoader,
};
use gotel_shared::{
    names::{MAP_COUNTERS, MAP_EVENTS, MAP_GOROUTINES, MAP_PROBES, PER_SLOT_MAPS},
    NUM_COUNTERS,
};

use crate::{
    attach::{chain, environment_error, measured_load, raise_limits, MapSizes, EBPF_OBJECT},
    exit::Failure,
    instrumentations::Library,
    plan::{Plan, MAX_PROBES},
    uprobe_multi,
};

/// One loaded eBPF object: programs, maps, ring buffer. A session loads its own; in node mode,
/// when gotel sees the kernel's pids, every target shares one ([`share_programs`]): each
/// program is verified once for the node instead of once per traced process, and the maps (the
/// probe table, the ring buffer, the counters, the per-target config arrays) are one set with an
/// entry per target *slot*. A target's slot and its range of probe ids travel in its attach
/// cookies (`gotel_shared::cookie_of`), so the programs know whose config to read and whose
/// counters to add to; the socket path, which runs outside uprobes, finds the slot by process
/// (`TARGETS`).
pub struct Kernel {
    pub(crate) ebpf: Ebpf,
    /// Whether several targets use it (node mode).
    pub(crate) shared: bool,
    /// Per slot, the range of probe ids its target's plan uses (`None`: free).
    pub(crate) slots: Vec<Option<(u32, u32)>>,
    /// Entries of `PROBES`.
    probe_capacity: u32,
    /// Instrumentations whose programs this kernel refused (`Load::MayBeRefused`).
    pub(crate) refused: Vec<Library>,
    // uprobe_multi (uprobe_multi.rs): copies of the programs for multi links, or why not.
    pub(crate) multi: Result<uprobe_multi::MultiPrograms, String>,
    /// The ring buffer (a reader of the map, which stays in `ebpf` so that programs loaded later
    /// still find it).
    ring: RingBuf<MapData>,
    /// Shared: records read from the ring buffer per slot, with probe ids made the plan's, until
    /// that target's session takes them; and how many were dropped because it did not.
    pub(crate) queues: Vec<Vec<Vec<u8>>>,
    pub(crate) dropped: Vec<u64>,
}

/// Records kept per target between two drains of a shared ring buffer; beyond, they are dropped
/// and counted as lost to a full ring buffer (the session drains every `GOTEL_DRAIN_INTERVAL`;
/// only a stuck one reaches this).
const MAX_QUEUED: usize = 1 << 18;

/// Node mode's one object, once [`share_programs`] said to share it and the first target loaded it.
static NODE_KERNEL: Mutex<Option<Arc<Mutex<Kernel>>>> = Mutex::new(None);
/// How many targets node mode's object serves at once (0: not shared).
static NODE_SLOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Node mode: every target from now on shares one loaded object with `slots` slots (targets at
/// once; more are reported as not traced). Only when gotel sees the kernel's pids (the records'
/// and the socket path's process numbers must be the ones gotel compares with): otherwise each
/// target keeps an object of its own, as before.
pub fn share_programs(slots: u32) -> bool {
    if crate::target::kernel_pid(std::process::id()).is_none() {
        return false;
    }
    NODE_SLOTS.store(slots.clamp(1, gotel_shared::MAX_SLOTS), std::sync::atomic::Ordering::Relaxed);
    true
}

/// Removes process `tgid`'s records from the goroutine map of `ebpf` (node mode's one object,
/// which serves every target: a process that reuses the pid must find none). Returns how many
/// there were.
pub(crate) fn forget_process(ebpf: &mut Ebpf, tgid: u32) -> usize {
    let Some(map) = ebpf.map_mut(MAP_GOROUTINES) else { return 0 };
    let Ok(mut m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
    else {
        return 0;
    };
    let keys: Vec<_> = m.keys().flatten().filter(|k| k.tgid == tgid).collect();
    keys.iter().filter(|k| m.remove(k).is_ok()).count()
}

pub(crate) fn lock(k: &Mutex<Kernel>) -> std::sync::MutexGuard<'_, Kernel> {
    k.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kernel {
    fn load(settings: &MapSizes, slots: u32, probes: u32, shared: bool) -> Result<Kernel, Failure> {
        raise_limits();
        let ring = settings.ring_buffer_bytes.max(4096).next_power_of_two();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_GOROUTINES, settings.max_goroutines.max(64))
            .map_max_entries(MAP_EVENTS, ring)
            // A target of its own: one entry per planned probe (ids are 0..n; 4,096 entries of 512
            // bytes were 2.1 MiB of kernel memory, almost all unused). Shared: 4,096 for all.
            .map_max_entries(MAP_PROBES, probes.max(1))
            .map_max_entries(MAP_COUNTERS, NUM_COUNTERS * slots);
        for map in PER_SLOT_MAPS {
            loader.map_max_entries(map, slots);
        }
        // Node mode with a load per target: join.same_node's map shared by every load of this
        // gotel (pinned; shared_maps), else the load's own (with one entry).
        let ebpf = crate::shared_maps::load(&mut loader, EBPF_OBJECT)
            .map_err(|e| environment_error("loading the eBPF programs", chain(&e)))?;
        let events = ebpf.map(MAP_EVENTS).ok_or_else(|| Failure::environment("EVENTS map missing"))?;
        let fd = match events {
            aya::maps::Map::RingBuf(d) => d.fd().as_fd().try_clone_to_owned(),
            _ => return Err(Failure::environment("EVENTS is not a ring buffer")),
        }
        .map_err(|e| Failure::environment(format!("EVENTS ring buffer: {e}")))?;
        let data = MapData::from_fd(fd).map_err(|e| environment_error("EVENTS ring buffer", chain(&e)))?;
        let ring = RingBuf::try_from(aya::maps::Map::RingBuf(data))
            .map_err(|e| environment_error("EVENTS ring buffer", chain(&e)))?;
        Ok(Kernel {
            ebpf,
            shared,
            slots: vec![None; slots as usize],
            probe_capacity: probes.max(1),
            refused: Vec::new(),
            multi: Err("not loaded yet".into()),
            ring,
            queues: vec![Vec::new(); slots as usize],
            dropped: vec![0; slots as usize],
        })
    }

    /// A slot and a range of `n` probe ids for a new target (first fit), its per-slot entries
    /// and counters zeroed (a slot is reused after its target ended).
    pub(crate) fn allocate(&mut self, n: u32) -> Result<(u32, u32), Failure> {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Err(Failure::target(format!(
                "gotel already traces {} processes with one set of kernel programs (GOTEL_NODE_MAX_TARGETS)",
                self.slots.len()
            )));
        };
        let used: Vec<(u32, u32)> = self.slots.iter().flatten().copied().collect();
        let Some(base) = first_fit(used, n, self.probe_capacity) else {
            return Err(Failure::target(format!(
                "the probe table is full ({} entries for every target together): fewer probe specs per target \
                 or fewer targets",
                self.probe_capacity
            )));
        };
        self.slots[slot] = Some((base, n));
        let slot = slot as u32;
        self.queues[slot as usize].clear();
        self.dropped[slot as usize] = 0;
        zero_slot(&mut self.ebpf, slot).map_err(|e| environment_error("clearing a target slot", e))?;
        Ok((slot, base))
    }

    /// Loads program `name` unless it is loaded.
    pub(crate) fn load_program(&mut self, name: &'static str) -> Result<(), Failure> {
        let prog: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .expect("program in the eBPF object")
            .try_into()
            .map_err(|e: ProgramError| environment_error(name, chain(&e)))?;
        if prog.fd().is_ok() {
            return Ok(());
        }
        measured_load(name, || prog.load())
            .map_err(|e| environment_error(&format!("loading {name} (BPF verifier)"), chain(&e)))
    }

    /// Records from the ring buffer: for a kernel of its own, handed to `each` as they are; for
    /// a shared one, every record is moved to its target's queue (by probe id) and `slot`'s
    /// queue is handed over, its probe ids made the plan's.
    pub(crate) fn drain(&mut self, slot: u32, each: &mut dyn FnMut(&[u8])) -> usize {
        let ring = &mut self.ring;
        let mut n = 0;
        if !self.shared {
            while let Some(item) = ring.next() {
                n += 1;
                each(&item);
            }
            return n;
        }
        const AT: usize = core::mem::offset_of!(gotel_shared::EventHeader, probe_id);
        while let Some(item) = ring.next() {
            let Some(id) = item.get(AT..AT + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())) else {
                continue;
            };
            let owner = self.slots.iter().position(|s| s.is_some_and(|(b, len)| id >= b && id < b + len));
            let Some(owner) = owner else { continue }; // a target that ended: its session is gone
            let (base, _) = self.slots[owner].unwrap();
            if self.queues[owner].len() >= MAX_QUEUED {
                self.dropped[owner] += 1;
                continue;
            }
            let mut record = item.to_vec();
            record[AT..AT + 4].copy_from_slice(&(id - base).to_ne_bytes());
            self.queues[owner].push(record);
        }
        for record in std::mem::take(&mut self.queues[slot as usize]) {
            n += 1;
            each(&record);
        }
        n
    }
}

/// The lowest id where `n` probe ids fit between the ranges `used` (start, length), within
/// `capacity`.
fn first_fit(mut used: Vec<(u32, u32)>, n: u32, capacity: u32) -> Option<u32> {
    used.sort();
    let mut base = 0;
    for (b, len) in used {
        if b >= base + n {
            break;
        }
        base = base.max(b + len);
    }
    (base + n <= capacity).then_some(base)
}

/// Zeroes slot `slot`'s entries of every per-target map and its counters.
fn zero_slot(ebpf: &mut Ebpf, slot: u32) -> Result<(), String> {
    use gotel_shared::{
        names::*, same_node::SameNodeConfig, ExtractConfig, GrpcHeadersConfig, GrpcInjectConfig, HandoffConfig,
        InjectConfig, NewprocConfig, SocketInjectConfig,
    };
    fn zero<T: aya::Pod + Default>(ebpf: &mut Ebpf, name: &str, slot: u32) -> Result<(), String> {
        let map = ebpf.map_mut(name).ok_or_else(|| format!("{name} missing"))?;
        let mut a: Array<&mut MapData, T> = Array::try_from(map).map_err(|e| chain(&e))?;
        a.set(slot, T::default(), 0).map_err(|e| format!("{name}: {}", chain(&e)))
    }
    zero::<InjectConfig>(ebpf, MAP_INJECT_CONFIG, slot)?;
    zero::<ExtractConfig>(ebpf, MAP_EXTRACT_CONFIG, slot)?;
    zero::<NewprocConfig>(ebpf, MAP_NEWPROC_CONFIG, slot)?;
    zero::<HandoffConfig>(ebpf, MAP_HANDOFF_CONFIG, slot)?;
    zero::<GrpcHeadersConfig>(ebpf, MAP_GRPC_HEADERS_CONFIG, slot)?;
    zero::<GrpcInjectConfig>(ebpf, MAP_GRPC_INJECT_CONFIG, slot)?;
    zero::<SameNodeConfig>(ebpf, MAP_SAME_NODE_CONFIG, slot)?;
    if slot != 0 {
        // Entry 0 holds the kernel-wide socket settings (`MapFill::kernel_wide`).
        zero::<SocketInjectConfig>(ebpf, MAP_INJECT_SOCKET_CONFIG, slot)?;
    }
    let map = ebpf.map_mut(MAP_COUNTERS).ok_or("COUNTERS missing")?;
    let mut counters = PerCpuArray::<_, u64>::try_from(map).map_err(|e| chain(&e))?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
    for c in 0..NUM_COUNTERS {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| e.to_string())?;
        counters.set(slot * NUM_COUNTERS + c, zeros, 0).map_err(|e| chain(&e))?;
    }
    Ok(())
}

/// The kernel object for a new target: node mode's shared one (loaded by its first target),
/// else one of its own.
pub(crate) fn kernel_for(plan: &Plan, settings: &MapSizes) -> Result<Arc<Mutex<Kernel>>, Failure> {
    let slots = NODE_SLOTS.load(std::sync::atomic::Ordering::Relaxed);
    if slots == 0 {
        let probes = plan.probes.len().clamp(1, MAX_PROBES) as u32;
        return Ok(Arc::new(Mutex::new(Kernel::load(settings, 1, probes, false)?)));
    }
    let mut node = NODE_KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = node.as_ref() {
        return Ok(k.clone());
    }
    let k = Arc::new(Mutex::new(Kernel::load(settings, slots, MAX_PROBES as u32, true)?));
    *node = Some(k.clone());
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `forget_process` removes one process's goroutine records and leaves the others' (node
    /// mode's one object serves every target). Needs root (BPF).
    #[test]
    fn forgetting_a_process_removes_its_records_only() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        use gotel_shared::{GoroutineKey, GoroutineState};
        let mut ebpf = EbpfLoader::new().load(crate::attach::EBPF_OBJECT).expect("load");
        let state: GoroutineState = unsafe { std::mem::zeroed() };
        let mut map: aya::maps::HashMap<_, GoroutineKey, GoroutineState> =
            aya::maps::HashMap::try_from(ebpf.map_mut(MAP_GOROUTINES).unwrap()).unwrap();
        for (tgid, g) in [(100, 1), (100, 2), (200, 1)] {
            map.insert(GoroutineKey::new(tgid, g), state, 0).unwrap();
        }
        let count = |e: &Ebpf, tgid: u32| {
            aya::maps::HashMap::<_, GoroutineKey, GoroutineState>::try_from(e.map(MAP_GOROUTINES).unwrap())
                .unwrap()
                .keys()
                .flatten()
                .filter(|k| k.tgid == tgid)
                .count()
        };
        assert_eq!((count(&ebpf, 100), count(&ebpf, 200)), (2, 1));
        assert_eq!(forget_process(&mut ebpf, 100), 2);
        assert_eq!((count(&ebpf, 100), count(&ebpf, 200)), (0, 1));
    }

    /// Probe ids of targets that ended are reused; ranges never overlap.
    #[test]
    fn probe_ranges_first_fit() {
        assert_eq!(first_fit(vec![], 5, 10), Some(0));
        assert_eq!(first_fit(vec![(0, 5)], 5, 10), Some(5));
        assert_eq!(first_fit(vec![(0, 5)], 6, 10), None);
        // A hole left by an ended target, big enough or not.
        assert_eq!(first_fit(vec![(0, 3), (7, 3)], 4, 10), Some(3));
        assert_eq!(first_fit(vec![(7, 3), (0, 3)], 5, 20), Some(10));
        assert_eq!(first_fit(vec![(2, 3)], 2, 10), Some(0));
        assert_eq!(first_fit(vec![(1, 3)], 2, 10), Some(4));
    }
}
