//! Attaching thousands of uprobes as a few uprobe_multi links, so that leaving is fast.
//!
//! A perf-event uprobe (what aya 0.14 attaches: one perf event and one BPF link per offset) costs
//! little to attach but about 0.12 s to *remove* on kernel 6.18 (each removal waits for an RCU
//! tasks-trace grace period under a global mutex, so closing from many threads gains nothing):
//! 2,222 uprobes kept Caddy slow for 280 s after SIGTERM, and SIGKILL could not help because the
//! work happens when the descriptors are closed. A `BPF_TRACE_UPROBE_MULTI` link (kernel 6.6+)
//! attaches any number of offsets of one file with one `bpf(BPF_LINK_CREATE)` and removes them
//! all with one close: 10,000 uprobes in about 0.4 s (figures in BENCHMARKS.md).
//!
//! aya 0.14 cannot make these links: `UProbe::load` always loads with `expected_attach_type` 0,
//! the kernel refuses such a program in a uprobe_multi link (`EINVAL`), and aya-obj 0.3 refuses
//! the ELF section `uprobe.multi` that `#[uprobe(multi)]` of aya-ebpf would emit (aya's support
//! for multi links is on its main branch only, and its releases after 0.14 need Rust 1.98).
//! So this module loads a *second copy* of each program gotel attaches, by raw
//! `bpf(BPF_PROG_LOAD)` with `expected_attach_type = BPF_TRACE_UPROBE_MULTI`, from the same ELF
//! object that aya loaded: aya-obj parses it, its map references are relocated to the
//! descriptors of the maps aya already created (so both copies share every map), its
//! bpf-to-bpf calls are linked the way aya links them, and the kernel verifies it again. The
//! kernel programs need no change: a `#[uprobe]` program is a `BPF_PROG_TYPE_KPROBE` program
//! over `pt_regs` either way, and `bpf_get_attach_cookie` returns the per-offset cookie of a
//! uprobe_multi link. aya's own copies stay loaded for the perf-event fallback.
//!
//! Kernel structures come from aya-obj's generated bindings (`bpf_attr`, `bpf_insn`), the
//! syscall from libc: nothing of the ABI is written by hand here.
//!
//! When uprobe_multi is not used: kernels before 6.10 (6.6 to 6.9 filtered uprobe_multi events
//! by *thread* instead of process, fixed upstream by 46ba0e49b642 "bpf: fix multi-uprobe PID
//! filtering logic", and gotel filters by process: a Go program would lose the events of all
//! threads but one), `GOTEL_UPROBE_MULTI=off`, or a load or link failure. Then gotel attaches
//! perf-event uprobes as before and says how long leaving will take. `GOTEL_UPROBE_MULTI=on`
//! uses multi links on 6.6 to 6.9 too (kernels with the fix backported).
use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    time::Duration,
};

use aya::{maps::Map, util::KernelVersion, Ebpf};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};

/// Removing one perf-event uprobe, the least measured on kernel 6.18 (BENCHMARKS.md section 6:
/// 0.12 s idle, up to 0.36 s with the machine busy).
pub const PERF_EVENT_DETACH_PER_UPROBE: Duration = Duration::from_millis(124);

/// Whether gotel tries uprobe_multi links (`GOTEL_UPROBE_MULTI`: `auto`, `on` or `off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On kernels 6.10 and later.
    Auto,
    /// On any kernel that has them (6.6 and later): for kernels with the pid-filter fix backported.
    On,
    /// Never: perf-event uprobes only.
    Off,
}

impl Mode {
    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("GOTEL_UPROBE_MULTI").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("auto") => Ok(Mode::Auto),
            Ok("on") | Ok("1") | Ok("true") => Ok(Mode::On),
            Ok("off") | Ok("0") | Ok("false") => Ok(Mode::Off),
            Ok(other) => Err(format!("GOTEL_UPROBE_MULTI={other:?}: expected auto, on or off")),
        }
    }
}

/// Why uprobe_multi is not tried on this kernel, or None when it is.
pub fn unavailable_reason(mode: Mode, kernel: Option<KernelVersion>) -> Option<String> {
    let Some(kernel) = kernel else { return Some("the kernel version cannot be read".into()) };
    let at_least = |major, minor| kernel >= KernelVersion::new(major, minor, 0);
    match mode {
        Mode::Off => Some("GOTEL_UPROBE_MULTI=off".into()),
        _ if !at_least(6, 6) => Some("the kernel is older than 6.6".into()),
        Mode::Auto if !at_least(6, 10) => Some(
            "kernels 6.6 to 6.9 filter uprobe_multi events by thread, not process (set GOTEL_UPROBE_MULTI=on \
             if this kernel has the fix 46ba0e49b642)"
                .into(),
        ),
        _ => None,
    }
}

/// The log line for the perf-event fallback: what leaving will cost.
pub fn slow_detach_warning(reason: &str, uprobes: usize) -> String {
    let per = PERF_EVENT_DETACH_PER_UPROBE;
    format!(
        "uprobe_multi links not used ({reason}): {uprobes} perf-event uprobes, which the kernel removes one \
         at a time (0.12 to 0.36 s each measured on kernel 6.18; {} ms assumed): leaving will take {} s or \
         more, during which the target stays slowed",
        per.as_millis(),
        (per * uprobes as u32).as_secs().max(1)
    )
}

/// Copies of gotel's programs loaded for uprobe_multi links, by name.
pub struct MultiPrograms {
    programs: Vec<(String, OwnedFd)>,
}

/// Uprobes to attach (program, file offset, attach cookie), in the order the caller wants them
/// attached one by one; grouped by program for links.
#[derive(Default)]
pub struct Points {
    items: Vec<(&'static str, u64, u64)>,
}

/// One link's worth: a program and its offsets and cookies.
struct Group {
    program: &'static str,
    offsets: Vec<u64>,
    cookies: Vec<u64>,
    last: usize,
}

impl Points {
    /// Adds a uprobe of `program` at file offset `offset` with attach cookie `cookie`.
    pub fn push(&mut self, program: &'static str, offset: u64, cookie: u64) {
        self.items.push((program, offset, cookie));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every point in the order pushed (for attaching them one by one).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        self.items.iter().copied()
    }

    /// One group per program, in the order their links are created: by each program's *last*
    /// point. A caller that pushes every RET point of a function before its entry point thus
    /// gets every RET link before the entry link, so no call can start being tracked whose
    /// return would go unseen.
    fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for (i, &(program, offset, cookie)) in self.items.iter().enumerate() {
            let g = match groups.iter().position(|g| g.program == program) {
                Some(at) => &mut groups[at],
                None => {
                    groups.push(Group { program, offsets: Vec::new(), cookies: Vec::new(), last: 0 });
                    groups.last_mut().expect("just pushed")
                }
            };
            g.offsets.push(offset);
            g.cookies.push(cookie);
            g.last = i;
        }
        groups.sort_by_key(|g| g.last);
        groups
    }
}

/// Attached uprobe_multi links: dropping (closing) them detaches every uprobe at once.
pub struct MultiLinks {
    links: Vec<OwnedFd>,
    pub uprobes: usize,
}

impl Drop for MultiLinks {
    /// Entry links first (the reverse of attaching), so no call starts being tracked whose
    /// return would go unseen.
    fn drop(&mut self) {
        while let Some(link) = self.links.pop() {
            drop(link);
        }
    }
}

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a fully initialized bpf_attr whose pointers outlive the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut bpf_attr, size_of::<bpf_attr>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as RawFd)
    }
}

/// The descriptor of a map aya created (every variant holds its MapData).
fn map_fd(map: &Map) -> RawFd {
    use Map::*;
    let (Array(d)
    | ArrayOfMaps(d)
    | BloomFilter(d)
    | CgroupArray(d)
    | CgroupStorage(d)
    | CgrpStorage(d)
    | CpuMap(d)
    | DevMap(d)
    | DevMapHash(d)
    | HashMap(d)
    | HashOfMaps(d)
    | InodeStorage(d)
    | LpmTrie(d)
    | LruHashMap(d)
    | PerCpuArray(d)
    | PerCpuCgroupStorage(d)
    | PerCpuHashMap(d)
    | PerCpuLruHashMap(d)
    | PerfEventArray(d)
    | ProgramArray(d)
    | Queue(d)
    | ReusePortSockArray(d)
    | RingBuf(d)
    | SockHash(d)
    | SockMap(d)
    | SkStorage(d)
    | Stack(d)
    | StackTraceMap(d)
    | Unsupported(d)
    | XskMap(d)) = map;
    d.fd().as_fd().as_raw_fd()
}

impl MultiPrograms {
    /// Loads `names` from `object` (the ELF that `ebpf` was loaded from, before any map was
    /// taken out of it) for uprobe_multi links, sharing `ebpf`'s maps.
    pub fn load(ebpf: &Ebpf, object: &[u8], names: &[&str]) -> Result<MultiPrograms, String> {
        let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing the eBPF object: {e}"))?;
        if obj.has_btf_relocations() {
            // aya would apply them with the kernel's BTF; gotel's programs have none today, and a
            // copy without them could read the wrong fields: fall back to perf events instead.
            return Err("the eBPF object has CO-RE relocations, which this loader does not apply".into());
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let maps: Vec<(String, RawFd, aya_obj::Map)> = obj
            .maps
            .iter()
            .filter_map(|(name, m)| ebpf.map(name).map(|kernel| (name.clone(), map_fd(kernel), m.clone())))
            .collect();
        obj.relocate_maps(maps.iter().map(|(name, fd, m)| (name.as_str(), *fd, m)), &text_sections)
            .map_err(|e| format!("relocating map references: {e}"))?;
        obj.relocate_calls(&text_sections).map_err(|e| format!("linking calls: {e}"))?;
        let mut programs = Vec::new();
        for &name in names {
            let prog = obj.programs.get(name).ok_or_else(|| format!("no program {name} in the eBPF object"))?;
            let function = &obj.functions[&prog.function_key()];
            // The kernel wants BTF function info for programs with bpf-to-bpf calls: reuse the
            // BTF object aya loaded for its copy (same type ids: aya-obj sanitizes in place).
            let btf_id = ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .and_then(|info| info.btf_id())
                .ok_or_else(|| format!("{name}: aya's copy is not loaded or has no BTF"))?;
            let btf = btf_fd_by_id(btf_id).map_err(|e| format!("BTF of {name}: {e}"))?;
            let what = format!("{name} (uprobe_multi copy)");
            let fd =
                crate::attach::measured_load(&what, || load_program(name, prog, function, btf.as_fd().as_raw_fd()))?;
            programs.push((name.to_string(), fd));
        }
        Ok(MultiPrograms { programs })
    }

    /// Whether program `name` has a copy loaded.
    pub fn has(&self, name: &str) -> bool {
        self.programs.iter().any(|(n, _)| n == name)
    }

    /// Adds copies loaded later (node mode: a target needs a program no earlier one did).
    pub fn extend(&mut self, more: MultiPrograms) {
        self.programs.extend(more.programs);
    }

    /// Creates one uprobe_multi link per program of `points`, on the file `target`, firing only
    /// in process `pid`. On failure, links made so far are closed (quickly) and the error names
    /// the program and the kernel's reason.
    pub fn attach(&self, target: &Path, pid: u32, points: &Points) -> Result<MultiLinks, String> {
        use std::os::unix::ffi::OsStrExt;
        let path =
            CString::new(target.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", target.display()))?;
        let mut links = Vec::new();
        for Group { program, offsets, cookies, .. } in points.groups() {
            let fd = self
                .programs
                .iter()
                .find(|(n, _)| n == program)
                .map(|(_, fd)| fd.as_raw_fd())
                .ok_or_else(|| format!("{program} was not loaded for uprobe_multi"))?;
            // SAFETY: bpf_attr is plain old data; all-zero is its documented initial state.
            let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
            // SAFETY: writing fields of the link_create variant of a zeroed union.
            unsafe {
                let l = &mut attr.link_create;
                l.__bindgen_anon_1.prog_fd = fd as u32;
                l.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
                let u = &mut l.__bindgen_anon_3.uprobe_multi;
                u.path = path.as_ptr() as u64;
                u.offsets = offsets.as_ptr() as u64;
                u.cookies = cookies.as_ptr() as u64;
                u.cnt = offsets.len() as u32;
                u.pid = pid;
            }
            let link = sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(|e| {
                format!("uprobe_multi link of {program} ({} offsets in {}): {e}", offsets.len(), target.display())
            })?;
            // SAFETY: the kernel just returned this descriptor to us.
            links.push(unsafe { OwnedFd::from_raw_fd(link) });
        }
        Ok(MultiLinks { links, uprobes: points.len() })
    }
}

fn btf_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: bpf_attr is plain old data; all-zero is its documented initial state.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
    // SAFETY: the kernel returns a new descriptor on success.
    sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load_program(
    name: &str,
    prog: &aya_obj::Program,
    function: &aya_obj::Function,
    btf_fd: RawFd,
) -> Result<OwnedFd, String> {
    let insns = &function.instructions;
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let stats = crate::attach::load_stats_enabled();
    let load = |log: Option<&mut Vec<u8>>| {
        // SAFETY: bpf_attr is plain old data; all-zero is its documented initial state.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing fields of the prog_load variant of a zeroed union.
        unsafe {
            let p = &mut attr.__bindgen_anon_3;
            p.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
            p.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
            p.insns = insns.as_ptr() as u64;
            p.insn_cnt = insns.len() as u32;
            p.license = prog.license.as_ptr() as u64;
            p.kern_version = prog.kernel_version.unwrap_or(0);
            p.prog_btf_fd = btf_fd as u32;
            if function.func_info_rec_size > 0 {
                p.func_info = func_info.as_ptr() as u64;
                p.func_info_cnt = function.func_info.func_info.len() as u32;
                p.func_info_rec_size = function.func_info_rec_size as u32;
            }
            if function.line_info_rec_size > 0 {
                p.line_info = line_info.as_ptr() as u64;
                p.line_info_cnt = function.line_info.line_info.len() as u32;
                p.line_info_rec_size = function.line_info_rec_size as u32;
            }
            // The kernel keeps 15 bytes of a name (as aya does): gotel_newproc_en...
            for (dst, src) in p.prog_name.iter_mut().zip(name.bytes().take(15)) {
                *dst = src as _;
            }
            if let Some(log) = log {
                p.log_level = if stats { 4 } else { 1 };
                p.log_buf = log.as_mut_ptr() as u64;
                p.log_size = log.len() as u32;
            }
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    // GOTEL_LOAD_STATS: the verifier's statistics (log level 4) of a successful load.
    let mut stats_log = vec![0u8; if stats { 4096 } else { 0 }];
    match load(stats.then_some(&mut stats_log)) {
        // SAFETY: the kernel just returned this descriptor to us.
        Ok(fd) => {
            if stats {
                let text = String::from_utf8_lossy(&stats_log[..stats_log.iter().position(|&b| b == 0).unwrap_or(0)])
                    .into_owned();
                tracing::info!(program = name, "verifier: {}", text.lines().collect::<Vec<_>>().join(" | "));
            }
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        Err(e) => {
            // Again with the verifier's log, for the message.
            let mut log = vec![0u8; 1 << 20];
            let _ = load(Some(&mut log)).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!("loading {name} for uprobe_multi: {e}: {}", tail.join(" | ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_last_point_of_each_program() {
        let mut p = Points::default();
        // function A: two RETs then its entry; function B: no RET (never returns) then entry;
        // function C: one RET then entry.
        p.push("ret", 0x10, 1);
        p.push("ret", 0x18, 1);
        p.push("entry", 0x08, 2);
        p.push("entry", 0x28, 3);
        p.push("ret", 0x40, 4);
        p.push("entry", 0x30, 4);
        let order: Vec<_> = p.groups().into_iter().map(|g| (g.program, g.offsets, g.cookies)).collect();
        assert_eq!(
            order,
            vec![("ret", vec![0x10, 0x18, 0x40], vec![1, 1, 4]), ("entry", vec![0x08, 0x28, 0x30], vec![2, 3, 4])]
        );
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn mode_and_kernel_decide() {
        let k = |a, b| Some(KernelVersion::new(a, b, 0));
        assert_eq!(unavailable_reason(Mode::Auto, k(6, 18)), None);
        assert_eq!(unavailable_reason(Mode::Auto, k(6, 10)), None);
        assert!(unavailable_reason(Mode::Auto, k(6, 8)).unwrap().contains("by thread"));
        assert_eq!(unavailable_reason(Mode::On, k(6, 8)), None);
        assert!(unavailable_reason(Mode::On, k(6, 5)).unwrap().contains("older than 6.6"));
        assert!(unavailable_reason(Mode::Off, k(6, 18)).unwrap().contains("=off"));
        assert!(unavailable_reason(Mode::Auto, None).is_some());
    }

    #[test]
    fn the_fallback_says_how_long_leaving_takes() {
        let w = slow_detach_warning("GOTEL_UPROBE_MULTI=off", 2222);
        assert!(w.contains("2222 perf-event uprobes") && w.contains("275 s or more"), "{w}");
    }
}
