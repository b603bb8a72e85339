//! One target's share of the loaded eBPF object (`kernel::Kernel`: its own, or node mode's one
//! for every target): loading what its plan needs, filling the plan into the maps at its slot
//! and attaching its uprobes.
//!
//! Order matters: every RET probe of a function is attached before its entry probe, so no call
//! can start being tracked whose return would go unseen. Probes are scoped to the target's pid
//! (perf filters by process): other processes of the same image, in other containers, never
//! pay for or pollute gotel's tracing.
use std::{
    num::NonZeroU32,
    path::Path,
    sync::{Arc, Mutex},
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf,
};
use gotel_shared::{
    names::{MAP_COUNTERS, MAP_GOROUTINES, MAP_PROBES, MAP_TARGETS, PROGRAM_ENTRY, PROGRAM_HTTP_ENTRY, PROGRAM_RETURN},
    Counter, COOKIE_AT_FUNC_START, COOKIE_ENTRY, COOKIE_RETURN, NUM_COUNTERS, PLAN_SCAN_HEADERS,
};

use crate::{
    binary::GoBinary,
    exit::Failure,
    instrumentations::{AttachTarget, Library, Load},
    kernel::{kernel_for, lock, Kernel},
    plan::Plan,
    uprobe_multi,
};

/// The entry program of a span probe whose kernel plan has `flags`: the HTTP server span's
/// reads the request's headers, a program of its own so that its code (verified at load, the
/// largest of gotel's programs) is loaded only when a probe needs it.
fn entry_program(flags: u32) -> &'static str {
    if flags & PLAN_SCAN_HEADERS != 0 {
        PROGRAM_HTTP_ENTRY
    } else {
        PROGRAM_ENTRY
    }
}

/// The compiled kernel programs, built by build.rs.
pub(crate) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gotel-ebpf"));

/// One target's share of a [`Kernel`]: its slot, its probes, its links.
pub struct Attached {
    kernel: Arc<Mutex<Kernel>>,
    slot: u32,
    /// Added to the plan's probe ids for the kernel's (`PROBES`, cookies).
    base: u32,
    pub uprobes: usize,
    /// Instrumentations whose programs the kernel refused (`Load::MayBeRefused`): their hooks
    /// are not attached.
    pub refused: Vec<Library>,
    pending: uprobe_multi::Points,
    links: Option<uprobe_multi::MultiLinks>,
    /// Perf-event uprobes (when uprobe_multi is not available), to detach this target's only.
    perf_links: Vec<(&'static str, UProbeLinkId)>,
    /// Each span probe's entry program (`entry_program`), by probe id.
    entry_programs: std::collections::HashMap<u32, &'static str>,
    /// The target's pid, once attached: the goroutine map holds every target's records in node
    /// mode, and this one's are those whose key carries it.
    target: Option<u32>,
    /// Instrumentations with a `detach_extra` step, for a shared kernel.
    extras: Vec<Library>,
    /// Its goroutine-map records were removed (`forget_target`).
    forgotten: bool,
}

/// Kernel counters, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCounters(pub [u64; NUM_COUNTERS as usize]);

impl Default for KernelCounters {
    fn default() -> Self {
        Self([0; NUM_COUNTERS as usize])
    }
}

impl KernelCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

/// Sizes of the kernel maps, from `config::Settings`.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub max_goroutines: u32,
    pub ring_buffer_bytes: u32,
    /// `GOTEL_NODE_MAX_TARGETS`: slots of node mode's one set of programs.
    pub node_max_targets: u32,
}

pub(crate) fn environment_error(what: &str, e: impl std::fmt::Display) -> Failure {
    let text = e.to_string();
    let verifier = what.contains("verifier");
    let hint = if verifier {
        " — the kernel's BPF verifier rejected gotel's program; please report this with the kernel version"
    } else if text.contains("Operation not permitted") || text.contains("Permission denied") || text.contains("EPERM") {
        " — gotel needs CAP_SYS_ADMIN (uprobe perf events and BPF on this kernel; CAP_BPF + CAP_PERFMON \
         on kernels before the 2025 uprobe permission change) and CAP_SYS_PTRACE; run as root or add \
         those capabilities (compose: cap_add: [SYS_ADMIN, SYS_PTRACE])"
    } else if text.contains("No such file") && what.contains("attach") {
        " — is this kernel built with uprobes (CONFIG_UPROBE_EVENTS) and is the binary still there?"
    } else {
        ""
    };
    Failure::environment(format!("{what}: {text}{hint}"))
}

/// aya wraps the syscall error; show the innermost cause.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn load(plan: &Plan, settings: &MapSizes) -> Result<Attached, Failure> {
    let kernel = kernel_for(plan, settings)?;
    let mut k = lock(&kernel);
    let (slot, base) = k.allocate(plan.probes.len() as u32)?;
    let prepared = prepare(&mut k, plan, slot, base);
    let (refused, entry_programs) = match prepared {
        Ok(p) => p,
        Err(e) => {
            k.slots[slot as usize] = None;
            return Err(e);
        }
    };
    drop(k);
    let extras =
        plan.instrumentations.iter().filter(|u| u.detach_extra.is_some() && !refused.contains(u)).copied().collect();
    Ok(Attached {
        kernel,
        slot,
        base,
        uprobes: 0,
        refused,
        pending: Default::default(),
        links: None,
        perf_links: Vec::new(),
        entry_programs,
        target: None,
        extras,
        forgotten: false,
    })
}

type Prepared = (Vec<Library>, std::collections::HashMap<u32, &'static str>);

/// Loads what `plan` needs that `k` has not loaded yet and fills the target's entries (slot
/// `slot`, probe ids from `base`).
fn prepare(k: &mut Kernel, plan: &Plan, slot: u32, base: u32) -> Result<Prepared, Failure> {
    // Programs an instrumentation may go without (the injection writer, refused under
    // lockdown) first: a refusal turns that instrumentation off, with a warning, before anything
    // depends on it. Only the programs of the plan's hooks are loaded.
    for unit in &plan.instrumentations {
        let Load::MayBeRefused { message, .. } = unit.load else { continue };
        if k.refused.contains(unit) {
            continue;
        }
        for hook in plan.hooks.iter().filter(|h| h.instrumentation == unit.name) {
            let prog: &mut UProbe = k
                .ebpf
                .program_mut(hook.program)
                .expect("program in the eBPF object")
                .try_into()
                .map_err(|e: ProgramError| environment_error(hook.program, chain(&e)))?;
            if prog.fd().is_ok() {
                continue;
            }
            if let Err(e) = measured_load(hook.program, || prog.load()) {
                tracing::warn!("{}", message(hook.program, &chain(&e)));
                k.refused.push(unit);
                break;
            }
        }
    }
    let refused: Vec<Library> = plan.instrumentations.iter().filter(|u| k.refused.contains(u)).copied().collect();
    let is_refused = |name: &str| refused.iter().any(|u| u.name == name);
    for fill in plan.map_fills.iter().filter(|f| !is_refused(f.instrumentation)) {
        let map = k.ebpf.map_mut(fill.map).unwrap_or_else(|| panic!("{} map in the eBPF object", fill.map));
        fill.write(map, slot).map_err(|e| environment_error(&format!("filling {}", fill.map), e))?;
    }
    // PLAN_* bits a refused instrumentation set on span probes are taken back.
    let cleared = refused.iter().fold(0, |bits, u| match u.load {
        Load::MayBeRefused { probe_flags, .. } => bits | probe_flags,
        Load::Required => bits,
    });
    let mut probes: Array<&mut MapData, gotel_shared::ProbePlan> =
        Array::try_from(k.ebpf.map_mut(MAP_PROBES).expect("PROBES map in the eBPF object"))
            .map_err(|e| environment_error("PROBES map", chain(&e)))?;
    // Only the span programs some probe uses are loaded (each is verified at load, which costs
    // kernel memory and time).
    let mut entry_programs = std::collections::HashMap::new();
    let mut span_programs: Vec<&'static str> = Vec::new();
    for p in &plan.probes {
        let mut kernel_plan = p.kernel_plan();
        kernel_plan.flags &= !cleared;
        probes.set(base + p.id, kernel_plan, 0).map_err(|e| environment_error("filling PROBES", chain(&e)))?;
        let entry = entry_program(kernel_plan.flags);
        entry_programs.insert(p.id, entry);
        for name in [PROGRAM_RETURN, entry] {
            if !span_programs.contains(&name) {
                span_programs.push(name);
            }
        }
    }
    let required = plan
        .hooks
        .iter()
        .filter(|h| {
            plan.instrumentations.iter().any(|u| u.name == h.instrumentation && matches!(u.load, Load::Required))
        })
        .map(|h| h.program);
    for name in span_programs.iter().copied().chain(required) {
        k.load_program(name)?;
    }
    // uprobe_multi: a second copy of each uprobe program the plan uses, loaded for multi links
    // (uprobe_multi.rs), once per kernel object.
    let mode = uprobe_multi::Mode::from_env().map_err(Failure::config)?;
    let mut wanted: Vec<&str> = span_programs.clone();
    for h in plan.hooks.iter().filter(|h| !is_refused(h.instrumentation)) {
        if !wanted.contains(&h.program) {
            wanted.push(h.program);
        }
    }
    match (&mut k.multi, uprobe_multi::unavailable_reason(mode, aya::util::KernelVersion::current().ok())) {
        (_, Some(reason)) => k.multi = Err(reason),
        (Ok(loaded), None) => {
            wanted.retain(|n| !loaded.has(n));
            if !wanted.is_empty() {
                match uprobe_multi::MultiPrograms::load(&k.ebpf, EBPF_OBJECT, &wanted) {
                    Ok(more) => loaded.extend(more),
                    Err(e) => k.multi = Err(e),
                }
            }
        }
        (Err(_), None) => k.multi = uprobe_multi::MultiPrograms::load(&k.ebpf, EBPF_OBJECT, &wanted),
    }
    Ok((refused, entry_programs))
}

impl Attached {
    fn attach_one(&mut self, program: &'static str, bin: &GoBinary, vaddr: u64, cookie: u64) -> Result<(), Failure> {
        let offset = bin
            .file_offset(vaddr)
            .ok_or_else(|| Failure::target(format!("{:#x} is not in a loadable segment of {}", vaddr, bin.path)))?;
        // uprobe_multi: collect; `attach_pending` attaches them all. The cookie's low half names
        // the target's slot and, for a span probe, the probe as the kernel numbers it (hooks'
        // cookies are flags only).
        let probe = if cookie & (COOKIE_ENTRY | COOKIE_RETURN) != 0 {
            gotel_shared::cookie_probe(cookie) + self.base
        } else {
            0
        };
        self.pending.push(program, offset, (cookie & !0xffff_ffff) | gotel_shared::cookie_of(self.slot, probe));
        Ok(())
    }

    /// Attaches the collected uprobes: as uprobe_multi links when the kernel allows, else (or
    /// when a link fails) one perf-event uprobe each, in the order they were collected.
    fn attach_pending(&mut self, target: &Path, pid: u32) -> Result<(), Failure> {
        let points = std::mem::take(&mut self.pending);
        let started = std::time::Instant::now();
        let kernel = self.kernel.clone();
        let mut k = lock(&kernel);
        let reason = match &k.multi {
            Ok(programs) => match programs.attach(target, pid, &points) {
                Ok(links) => {
                    self.uprobes += links.uprobes;
                    self.links = Some(links);
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    tracing::info!(uprobes = points.len(), ms, "uprobes attached as uprobe_multi links");
                    return Ok(());
                }
                Err(e) => e,
            },
            Err(reason) => reason.clone(),
        };
        let warning = uprobe_multi::slow_detach_warning(&reason, points.len());
        if points.len() as u32 * uprobe_multi::PERF_EVENT_DETACH_PER_UPROBE.as_millis() as u32 > 5000 {
            tracing::warn!("{warning}");
        } else {
            tracing::info!("{warning}");
        }
        for (program, offset, cookie) in points.iter() {
            let prog: &mut UProbe = k.ebpf.program_mut(program).expect("program").try_into().expect("uprobe");
            let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("pid > 0"));
            let point =
                UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: Some(cookie) };
            let link = prog.attach(point, target, scope).map_err(|e| {
                environment_error(&format!("attaching a uprobe to {} at {offset:#x}", target.display()), chain(&e))
            })?;
            self.perf_links.push((program, link));
            self.uprobes += 1;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(uprobes = points.len(), ms, "uprobes attached as perf events");
        Ok(())
    }

    /// Attaches every probe of the plan to process `pid`, whose executable is opened as `target`:
    /// the instrumentations' hooks first (goroutine bookkeeping, so goroutines born from now on
    /// are known), then the span probes, then any extra attach step.
    pub fn attach(&mut self, plan: &Plan, bin: &GoBinary, target: &Path, pid: u32) -> Result<(), Failure> {
        self.target = Some(pid);
        for h in &plan.hooks {
            if self.refused.iter().any(|u| u.name == h.instrumentation) {
                continue;
            }
            for &off in &h.offsets {
                self.attach_one(h.program, bin, h.function.entry + off, h.cookie)?;
            }
        }
        for p in &plan.probes {
            let starts_at_return = if p.entry_trap { 0 } else { gotel_shared::COOKIE_STARTS_AT_RETURN };
            for &off in &p.ret_offsets {
                let cookie = p.id as u64 | COOKIE_RETURN | starts_at_return | (off.min(0xffff) << 48);
                self.attach_one(PROGRAM_RETURN, bin, p.function.entry + off, cookie)?;
            }
            if !p.entry_trap {
                continue;
            }
            let mut cookie = p.id as u64 | COOKIE_ENTRY;
            if p.at_function_start {
                cookie |= COOKIE_AT_FUNC_START;
            }
            let entry = self.entry_programs.get(&p.id).copied().unwrap_or(PROGRAM_ENTRY);
            self.attach_one(entry, bin, p.function.entry + p.entry_offset, cookie)?;
        }
        self.attach_pending(target, pid)?; // uprobe_multi
        let kernel = self.kernel.clone();
        let mut k = lock(&kernel);
        let shared = k.shared;
        for unit in &plan.instrumentations {
            if let Some(extra) = unit.attach_extra.filter(|_| !self.refused.contains(unit)) {
                let t = AttachTarget {
                    pid,
                    exe: target,
                    slot: self.slot,
                    probe_base: self.base,
                    shared,
                    planned: &plan.instrumentations,
                    refused: &self.refused,
                };
                extra(&mut k.ebpf, &t)?;
            }
        }
        Ok(())
    }

    /// Closes the uprobe_multi links now (well under a second). Call it from a thread that is
    /// not exiting: the kernel removes the breakpoints with a killable lock, so a close made
    /// while the process exits fails ("leaking uprobe" in dmesg) and leaves the target slowed.
    pub fn detach_links(&mut self) {
        drop(self.links.take()); // uprobe_multi
    }

    /// Detaches every probe: uprobe_multi links in well under a second; perf-event uprobes (the
    /// fallback) one at a time, each waiting for the kernel to quiesce (0.1 to 0.25 s on these
    /// VMs, serialized by the kernel: closing from several threads was measured to gain
    /// nothing), so callers flush spans before detaching. A shared object stays loaded for the
    /// other targets: only this target's links go, and its slot and probe ids are freed (see
    /// `Drop`, which does the same for a target that never finished attaching).
    pub fn detach(self) {
        drop(self);
    }

    /// Records from the ring buffer for this target, each handed to `each` (see [`Kernel`]).
    pub fn drain(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        lock(&self.kernel).drain(self.slot, each)
    }

    /// The target's kernel counters, summed over CPUs (records a shared ring buffer's queue
    /// dropped count as lost to a full ring buffer).
    pub fn counters(&self) -> KernelCounters {
        let mut out = KernelCounters::default();
        let k = lock(&self.kernel);
        let Some(map) = k.ebpf.map(MAP_COUNTERS) else { return out };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else { return out };
        for i in 0..NUM_COUNTERS {
            if let Ok(values) = arr.get(&(self.slot * NUM_COUNTERS + i), 0) {
                out.0[i as usize] = values.iter().sum();
            }
        }
        out.0[Counter::RingBufferFull as usize] += k.dropped[self.slot as usize];
        out
    }

    /// Calls still in progress in the kernel's goroutine map, as `Abandoned` records ending at
    /// `now_ns`: used when the target exited, so that no call it made goes unreported.
    pub fn calls_in_progress(&self, now_ns: u64) -> Vec<gotel_shared::EventHeader> {
        use gotel_shared::{EventHeader, EventKind, MAX_FRAMES};
        let mut out = Vec::new();
        let k = lock(&self.kernel);
        let Some(map) = k.ebpf.map(MAP_GOROUTINES) else { return out };
        let Ok(m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
        else {
            return out;
        };
        for (key, st) in m.iter().flatten().filter(|(k2, _)| self.owns(k.shared, k2)) {
            let depth = (st.depth as usize).min(MAX_FRAMES);
            for i in 0..depth {
                // The kernel's own rules (gotel_shared::rules), as if the call had been unwound.
                let end_ns = now_ns.max(st.frames[i].start_ns);
                let mut h = EventHeader::for_frame(EventKind::Abandoned, key, 0, &st, i, end_ns, 0);
                h.probe_id = h.probe_id.wrapping_sub(self.base);
                out.push(h);
            }
        }
        out
    }

    /// Entries in the goroutine map (to show it stays bounded).
    pub fn goroutines_tracked(&self) -> usize {
        let k = lock(&self.kernel);
        let Some(map) = k.ebpf.map(MAP_GOROUTINES) else { return 0 };
        let Ok(m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
        else {
            return 0;
        };
        m.keys().flatten().filter(|key| self.owns(k.shared, key)).count()
    }

    /// Whether a goroutine-map record is this target's (always, unless the map is shared).
    fn owns(&self, shared: bool, key: &gotel_shared::GoroutineKey) -> bool {
        !shared || Some(key.tgid) == self.target
    }

    /// The session ended: removes the target's records from node mode's one goroutine map, so
    /// that a process that reuses its pid finds none (nothing to do for a map of the session's
    /// own).
    pub fn forget_target(&mut self) -> usize {
        let Some(pid) = self.target else { return 0 };
        self.forgotten = true;
        let mut k = lock(&self.kernel);
        if k.shared {
            crate::kernel::forget_process(&mut k.ebpf, pid)
        } else {
            0
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        drop(self.links.take()); // uprobe_multi: every multi-linked uprobe at once
        let mut k = lock(&self.kernel);
        if !k.shared {
            return; // dropping the last reference to the object detaches everything
        }
        // Perf-event links are taken out under the lock and closed after it (each close waits
        // for the kernel), so that the other targets' sessions go on draining meanwhile.
        let mut links = Vec::new();
        for (program, link) in std::mem::take(&mut self.perf_links) {
            if let Ok(p) = <&mut UProbe>::try_from(k.ebpf.program_mut(program).expect("program")) {
                links.extend(p.take_link(link).ok());
            }
        }
        for unit in &self.extras {
            if let Some(undo) = unit.detach_extra {
                undo(&mut k.ebpf, self.slot);
            }
        }
        if let Some(pid) = self.target.filter(|_| !self.forgotten) {
            crate::kernel::forget_process(&mut k.ebpf, pid);
        }
        forget_slot_targets(&mut k.ebpf, self.slot);
        k.slots[self.slot as usize] = None;
        k.queues[self.slot as usize].clear();
        drop(k);
        drop(links);
    }
}

/// Removes slot `slot`'s processes from `TARGETS` (the socket path's tgid -> slot map).
fn forget_slot_targets(ebpf: &mut Ebpf, slot: u32) {
    let Some(map) = ebpf.map_mut(MAP_TARGETS) else { return };
    let Ok(mut targets) = aya::maps::HashMap::<_, u32, u32>::try_from(map) else { return };
    let gone: Vec<u32> = targets.iter().flatten().filter(|(_, s)| *s == slot).map(|(t, _)| t).collect();
    for tgid in gone {
        let _ = targets.remove(&tgid);
    }
}

/// Many probes mean many perf-event descriptors; BPF memory is charged to memcg on 6.x kernels,
/// so a failing RLIMIT_MEMLOCK raise is only worth a debug line.
pub(crate) fn raise_limits() {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        let inf = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) != 0 {
            tracing::debug!("setrlimit(RLIMIT_MEMLOCK) failed; relying on memcg accounting");
        }
    }
}

/// `GOTEL_LOAD_STATS=on`: how much each program costs to load, logged per program: the time the
/// kernel took (the verifier, mostly) and the memory charged to gotel's memory cgroup meanwhile
/// (cgroup v1: the peak of `memory.kmem`, reset before each load; the verifier's memory is
/// transient, so only a peak shows it), plus the verifier's own statistics for the copies loaded
/// for uprobe_multi (`uprobe_multi.rs`). For finding which program costs what (BENCHMARKS.md
/// section 5), not for normal runs: resetting the peak needs write access to the cgroup.
pub(crate) fn load_stats_enabled() -> bool {
    std::env::var("GOTEL_LOAD_STATS").is_ok_and(|v| v == "on" || v == "1")
}

/// Runs `load` (loading program `what`) and, with `GOTEL_LOAD_STATS=on`, logs its cost.
pub(crate) fn measured_load<T>(what: &str, load: impl FnOnce() -> T) -> T {
    if !load_stats_enabled() {
        return load();
    }
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| {
        s.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| format!("/sys/fs/cgroup/memory{p}")))
    });
    let read = |file: &str| -> Option<u64> {
        std::fs::read_to_string(format!("{}/{file}", cgroup.as_deref()?)).ok()?.trim().parse().ok()
    };
    if let Some(dir) = &cgroup {
        let _ = std::fs::write(format!("{dir}/memory.kmem.max_usage_in_bytes"), "0");
    }
    let before = read("memory.kmem.usage_in_bytes");
    let started = std::time::Instant::now();
    let out = load();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    match (before, read("memory.kmem.max_usage_in_bytes"), read("memory.kmem.usage_in_bytes")) {
        (Some(before), Some(peak), Some(after)) => tracing::info!(
            program = what,
            ms,
            kmem_peak_mib = mib(peak.saturating_sub(before)),
            kmem_kept_mib = mib(after.saturating_sub(before)),
            "loaded"
        ),
        _ => tracing::info!(program = what, ms, "loaded (kernel memory: needs a cgroup v1 memory controller)"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The functions of the embedded eBPF object that call helper `helper`, and the number of
    /// helper calls seen in all (to tell a wrong object from a clean one).
    fn helper_callers(helper: i32) -> (usize, Vec<String>) {
        const BPF_CALL: u8 = 0x85;
        let elf = goblin::elf::Elf::parse(EBPF_OBJECT).expect("the embedded eBPF object is an ELF file");
        let mut calls = 0;
        let mut callers = Vec::new();
        for (index, sh) in elf.section_headers.iter().enumerate() {
            if sh.sh_flags & goblin::elf::section_header::SHF_EXECINSTR as u64 == 0 {
                continue;
            }
            // Several programs share a section: name each instruction by its function symbol.
            let function_at = |offset: u64| {
                elf.syms
                    .iter()
                    .filter(|s| s.st_shndx == index && s.st_type() == goblin::elf::sym::STT_FUNC)
                    .find(|s| offset >= s.st_value && offset < s.st_value + s.st_size)
                    .and_then(|s| elf.strtab.get_at(s.st_name))
                    .unwrap_or("?")
                    .to_string()
            };
            let code = &EBPF_OBJECT[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize];
            for (i, ins) in code.chunks_exact(8).enumerate() {
                // A helper call has src_reg 0 (bpf-to-bpf calls have 1).
                if ins[0] == BPF_CALL && ins[1] >> 4 == 0 {
                    calls += 1;
                    if i32::from_le_bytes(ins[4..8].try_into().unwrap()) == helper {
                        callers.push(function_at(i as u64 * 8));
                    }
                }
            }
        }
        callers.dedup();
        (calls, callers)
    }

    /// gotel only reads the target, except the header-injection program that only
    /// GOTEL_PROPAGATION=inject loads: no other kernel program may call `bpf_probe_write_user`
    /// (helper 36). Checked on the object that ships inside the binary.
    #[test]
    fn only_the_injection_program_writes_user_memory() {
        let (calls, writers) = helper_callers(36);
        assert!(calls > 10, "found only {calls} helper calls: is this the right object?");
        assert_eq!(
            writers,
            vec![gotel_shared::names::PROGRAM_HEADER_WRITE_RETURN.to_string()],
            "programs calling bpf_probe_write_user"
        );
    }

    /// The socket path's SK_MSG program is the only one that changes what a process sends
    /// (`bpf_msg_push_data`, helper 90; `bpf_msg_pop_data`, 91, only takes its own gap out again).
    #[test]
    fn only_the_socket_program_changes_messages() {
        use gotel_shared::names::PROGRAM_SK_MSG;
        let (calls, pushers) = helper_callers(90);
        assert!(calls > 10, "found only {calls} helper calls: is this the right object?");
        assert_eq!(pushers, vec![PROGRAM_SK_MSG.to_string()], "programs calling bpf_msg_push_data");
        assert_eq!(helper_callers(91).1, vec![PROGRAM_SK_MSG.to_string()], "programs calling bpf_msg_pop_data");
    }
}
