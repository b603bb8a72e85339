//! Loading the eBPF object, filling the plan into its maps and attaching the uprobes.
//!
//! Order matters: every RET probe of a function is attached before its entry probe, so no call
//! can start being tracked whose return would go unseen. Probes are scoped to the target's pid
//! (perf filters by process): other processes of the same image, in other containers, never
//! pay for or pollute gotel's tracing.
use std::{num::NonZeroU32, path::Path};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf, EbpfLoader,
};
use gotel_shared::{
    Counter, COOKIE_AT_FUNC_START, COOKIE_ENTRY, COOKIE_HEADER_LINE, COOKIE_HEADER_WRITE_ENTRY,
    COOKIE_HEADER_WRITE_RETURN, COOKIE_NEWPROC_ENTRY, COOKIE_NEWPROC_RETURN, COOKIE_REQUEST_WRITE, COOKIE_RETURN,
    NUM_COUNTERS,
};

use crate::{
    binary::GoBinary,
    exit::Failure,
    plan::{Plan, MAX_PROBES},
};

/// The compiled kernel programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gotel-ebpf"));

pub struct Attached {
    /// Owns programs and links: dropping it detaches every probe.
    ebpf: Ebpf,
    pub uprobes: usize,
    /// The header-injection programs loaded (GOTEL_PROPAGATION=inject and the kernel allows it).
    pub injecting: bool,
    // GOTEL_PROPAGATION=inject paths: memory (bpf_probe_write_user) and socket (inject_socket).
    memory_path: Result<(), String>,
    socket_path: Option<Result<crate::instrumentations::inject_socket::Loaded, String>>,
}

/// Kernel counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters(pub [u64; NUM_COUNTERS as usize]);

impl KernelCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

pub struct Settings {
    pub max_goroutines: u32,
    pub ring_buffer_bytes: u32,
}

fn environment_error(what: &str, e: impl std::fmt::Display) -> Failure {
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

pub fn load(plan: &Plan, settings: &Settings) -> Result<Attached, Failure> {
    raise_limits();
    let ring = settings.ring_buffer_bytes.max(4096).next_power_of_two();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("GOROUTINES", settings.max_goroutines.max(64))
        .map_max_entries("EVENTS", ring)
        .map_max_entries("PROBES", MAX_PROBES as u32)
        .load(EBPF_OBJECT)
        .map_err(|e| environment_error("loading the eBPF programs", chain(&e)))?;

    // The injection programs (the only ones that write target memory) are loaded only when
    // GOTEL_PROPAGATION=inject asked for them.
    let programs = ["gotel_entry", "gotel_return", "gotel_newproc_entry", "gotel_newproc_return", "gotel_header_line"];
    let mut injecting = false;
    let mut memory_path = Err("not asked for".to_string());
    let mut socket_path = None;
    if let Some(inj) = &plan.injection {
        let mut cfg: Array<&mut MapData, gotel_shared::InjectConfig> =
            Array::try_from(ebpf.map_mut("INJECT_CONFIG").expect("INJECT_CONFIG map"))
                .map_err(|e| environment_error("INJECT_CONFIG map", chain(&e)))?;
        cfg.set(0, inj.config, 0).map_err(|e| environment_error("filling INJECT_CONFIG", chain(&e)))?;
        memory_path = match &inj.memory_refused {
            Some(why) => Err(why.clone()),
            None => ["gotel_header_write_entry", "gotel_header_write_return"].into_iter().try_for_each(|name| {
                let prog: &mut UProbe = ebpf.program_mut(name).expect("program").try_into().expect("uprobe");
                prog.load().map_err(|e| {
                    let text = chain(&e);
                    // Lockdown or a kernel built without the helper: no memory path, keep tracing.
                    if text.contains("bpf_probe_write_user") {
                        "kernel in lockdown (the verifier refuses bpf_probe_write_user)".to_string()
                    } else {
                        format!("loading {name} failed: {text}")
                    }
                })
            }),
        };
        // Socket path (instrumentations::inject_socket): SOCK_OPS + SK_MSG, no write into the target.
        // Where the memory path runs it writes first and would leave the socket path nothing to
        // do; until the two are split by TLS, such kernels keep the memory path alone.
        let socket = match &memory_path {
            Ok(()) => Err("not used while the memory path runs".to_string()),
            Err(_) => crate::instrumentations::inject_socket::load(&mut ebpf),
        };
        injecting = memory_path.is_ok() || socket.is_ok();
        socket_path = Some(socket);
        if injecting {
            let prog: &mut UProbe =
                ebpf.program_mut("gotel_request_write").expect("program").try_into().expect("uprobe");
            prog.load().map_err(|e| environment_error("loading gotel_request_write (BPF verifier)", chain(&e)))?;
        } else {
            tracing::warn!(
                "{}",
                crate::instrumentations::inject_socket::coverage(
                    Err(socket_path.as_ref().and_then(|s| s.as_ref().err()).map_or("", |e| e.as_str())),
                    &memory_path
                )
            );
        }
    }
    let mut probes: Array<&mut MapData, gotel_shared::ProbePlan> =
        Array::try_from(ebpf.map_mut("PROBES").expect("PROBES map in the eBPF object"))
            .map_err(|e| environment_error("PROBES map", chain(&e)))?;
    for p in &plan.probes {
        let mut kernel_plan = p.kernel_plan();
        if !injecting {
            kernel_plan.flags &= !gotel_shared::PLAN_INJECT_CONTEXT;
        }
        probes.set(p.id, kernel_plan, 0).map_err(|e| environment_error("filling PROBES", chain(&e)))?;
    }
    for name in programs {
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .expect("program in the eBPF object")
            .try_into()
            .map_err(|e: ProgramError| environment_error(name, chain(&e)))?;
        prog.load().map_err(|e| environment_error(&format!("loading {name} (BPF verifier)"), chain(&e)))?;
    }
    Ok(Attached { ebpf, uprobes: 0, injecting, memory_path, socket_path })
}

impl Attached {
    fn attach_one(
        &mut self,
        program: &'static str,
        bin: &GoBinary,
        target: &Path,
        pid: u32,
        vaddr: u64,
        cookie: u64,
    ) -> Result<(), Failure> {
        let offset = bin
            .file_offset(vaddr)
            .ok_or_else(|| Failure::target(format!("{:#x} is not in a loadable segment of {}", vaddr, bin.path)))?;
        let prog: &mut UProbe = self.ebpf.program_mut(program).expect("program").try_into().expect("uprobe");
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("pid > 0"));
        let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: Some(cookie) };
        prog.attach(point, target, scope).map_err(|e| {
            environment_error(&format!("attaching a uprobe to {} at {offset:#x}", target.display()), chain(&e))
        })?;
        self.uprobes += 1;
        Ok(())
    }

    /// GOTEL_PROPAGATION=inject through the socket (instrumentations::inject_socket): the dial
    /// uprobe, SOCK_OPS on the target's cgroup, SK_MSG on the sockhash; then the start-up line
    /// that says which path covers what. A failure turns the socket path off, never tracing.
    fn attach_socket_path(&mut self, bin: &GoBinary, target: &Path, pid: u32) -> Result<(), Failure> {
        use crate::instrumentations::inject_socket;
        let socket = match self.socket_path.take() {
            Some(Ok(_)) => {
                if let Some(f) = bin.function(inject_socket::DIAL_SYMBOL) {
                    self.attach_one("gotel_socket_dial", bin, target, pid, f.entry, 0)?;
                }
                inject_socket::attach(&mut self.ebpf, pid)
            }
            Some(Err(why)) => Err(why),
            None => return Ok(()),
        };
        tracing::info!("{}", inject_socket::coverage(socket.as_ref().map_err(|e| e.as_str()), &self.memory_path));
        if let Ok(a) = &socket {
            tracing::info!("GOTEL_PROPAGATION=inject: {}", inject_socket::fionread_message(a));
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

    /// Attaches every probe of the plan to process `pid`, whose executable is opened as `target`.
    pub fn attach(&mut self, plan: &Plan, bin: &GoBinary, target: &Path, pid: u32) -> Result<(), Failure> {
        // Goroutine bookkeeping first, so goroutines born from now on are known.
        if let Some(h) = &plan.newproc {
            for &off in &h.ret_offsets {
                self.attach_one(
                    "gotel_newproc_return",
                    bin,
                    target,
                    pid,
                    h.function.entry + off,
                    COOKIE_NEWPROC_RETURN,
                )?;
            }
            self.attach_one(
                "gotel_newproc_entry",
                bin,
                target,
                pid,
                h.function.entry + h.entry_offset,
                COOKIE_NEWPROC_ENTRY,
            )?;
        }
        if let Some(inj) = plan.injection.as_ref().filter(|_| self.injecting && self.memory_path.is_ok()) {
            let w = &inj.header_write;
            for &off in &w.ret_offsets {
                self.attach_one(
                    "gotel_header_write_return",
                    bin,
                    target,
                    pid,
                    w.function.entry + off,
                    COOKIE_HEADER_WRITE_RETURN,
                )?;
            }
            self.attach_one(
                "gotel_header_write_entry",
                bin,
                target,
                pid,
                w.function.entry + w.entry_offset,
                COOKIE_HEADER_WRITE_ENTRY,
            )?;
        }
        if let Some(inj) = plan.injection.as_ref().filter(|_| self.injecting) {
            self.attach_socket_path(bin, target, pid)?;
            let r = &inj.request_write;
            self.attach_one(
                "gotel_request_write",
                bin,
                target,
                pid,
                r.function.entry + r.entry_offset,
                COOKIE_REQUEST_WRITE,
            )?;
        }
        if let Some(h) = &plan.header_lines {
            for &off in &h.ret_offsets {
                self.attach_one("gotel_header_line", bin, target, pid, h.function.entry + off, COOKIE_HEADER_LINE)?;
            }
        }
        for p in &plan.probes {
            for &off in &p.ret_offsets {
                let cookie = p.id as u64 | COOKIE_RETURN | (off.min(0xffff) << 48);
                self.attach_one("gotel_return", bin, target, pid, p.function.entry + off, cookie)?;
            }
            let mut cookie = p.id as u64 | COOKIE_ENTRY;
            if p.at_function_start {
                cookie |= COOKIE_AT_FUNC_START;
            }
            self.attach_one("gotel_entry", bin, target, pid, p.function.entry + p.entry_offset, cookie)?;
        }
        Ok(())
    }

    /// Detaches every probe. Each uprobe removal waits for the kernel to quiesce (0.1 to 0.25 s
    /// on these VMs, serialized by the kernel: closing from several threads was measured to gain
    /// nothing), so callers flush spans before detaching. uprobe_multi links (kernel 6.6+) would
    /// remove them in one go but aya 0.14 cannot attach them.
    pub fn detach(self) {
        drop(self.ebpf);
    }

    /// Takes the ring buffer out of the object (once).
    pub fn ring_buffer(&mut self) -> Result<RingBuf<MapData>, Failure> {
        let map = self.ebpf.take_map("EVENTS").ok_or_else(|| Failure::environment("EVENTS map already taken"))?;
        RingBuf::try_from(map).map_err(|e| environment_error("EVENTS ring buffer", chain(&e)))
    }

    pub fn counters(&self) -> KernelCounters {
        let mut out = KernelCounters::default();
        let Some(map) = self.ebpf.map("COUNTERS") else { return out };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else { return out };
        for i in 0..NUM_COUNTERS {
            if let Ok(values) = arr.get(&i, 0) {
                out.0[i as usize] = values.iter().sum();
            }
        }
        out
    }

    /// Calls still in progress in the kernel's goroutine map, as `Abandoned` records ending at
    /// `now_ns`: used when the target exited, so that no call it made goes unreported.
    pub fn calls_in_progress(&self, now_ns: u64) -> Vec<gotel_shared::EventHeader> {
        use gotel_shared::{EventHeader, EventKind, INHERIT_REMOTE, MAX_FRAMES, SPAN_PARENT_REMOTE};
        let mut out = Vec::new();
        let Some(map) = self.ebpf.map("GOROUTINES") else { return out };
        let Ok(m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
        else {
            return out;
        };
        for (key, st) in m.iter().flatten() {
            let depth = (st.depth as usize).min(MAX_FRAMES);
            for i in 0..depth {
                let f = st.frames[i];
                let parent = if i > 0 {
                    st.frames[i - 1].span_id
                } else if st.has_inherited != 0 {
                    st.inherited_span_id
                } else {
                    0
                };
                let mut flags = st.trace_flags as u16;
                if i == 0 && st.has_inherited & INHERIT_REMOTE != 0 {
                    flags |= SPAN_PARENT_REMOTE;
                }
                out.push(EventHeader {
                    kind: EventKind::Abandoned as u32,
                    probe_id: f.probe_id,
                    tgid: key.tgid,
                    tid: 0,
                    goroutine: key.goroutine,
                    start_ns: f.start_ns,
                    end_ns: now_ns.max(f.start_ns),
                    trace_id: st.trace_id,
                    span_id: f.span_id,
                    parent_span_id: parent,
                    ret_offset: 0,
                    flags,
                    data_len: 0,
                });
            }
        }
        out
    }

    /// Entries in the goroutine map (to show it stays bounded).
    pub fn goroutines_tracked(&self) -> usize {
        let Some(map) = self.ebpf.map("GOROUTINES") else { return 0 };
        let Ok(m) = aya::maps::HashMap::<_, gotel_shared::GoroutineKey, gotel_shared::GoroutineState>::try_from(map)
        else {
            return 0;
        };
        m.keys().count()
    }
}

/// Many probes mean many perf-event descriptors; BPF memory is charged to memcg on 6.x kernels,
/// so a failing RLIMIT_MEMLOCK raise is only worth a debug line.
fn raise_limits() {
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
        assert_eq!(writers, vec!["gotel_header_write_return".to_string()], "programs calling bpf_probe_write_user");
    }

    /// The socket path's SK_MSG program is the only one that changes what a process sends
    /// (`bpf_msg_push_data`, helper 90; `bpf_msg_pop_data`, 91, only takes its own gap out again).
    #[test]
    fn only_the_socket_program_changes_messages() {
        let (calls, pushers) = helper_callers(90);
        assert!(calls > 10, "found only {calls} helper calls: is this the right object?");
        assert_eq!(pushers, vec!["gotel_sk_msg".to_string()], "programs calling bpf_msg_push_data");
        assert_eq!(helper_callers(91).1, vec!["gotel_sk_msg".to_string()], "programs calling bpf_msg_pop_data");
    }
}
