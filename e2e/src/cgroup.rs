//! A memory-limited cgroup for one test process, as a container's memory limit would be
//! (`docker run --memory`, compose `mem_limit`). `prlimit --as` is not the same: it limits
//! address space (every mapping counts, reclaimable or not), while a container's limit counts
//! the memory the process charges and OOM-kills it past the limit.
//!
//! cgroup v2 (`memory.max`) when its hierarchy has the memory controller, else cgroup v1
//! (`memory.limit_in_bytes`, a child of the test's own memory cgroup), as on hosts that
//! still mount the hybrid layout. Removed when dropped.
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

/// Mount points of `fstype` whose super options (last field) contain `option` ("" for any).
fn mounts(fstype: &str, option: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let mut a = after.split_whitespace();
            let (fs, _src, opts) = (a.next()?, a.next()?, a.next().unwrap_or(""));
            let point = before.split_whitespace().nth(4)?;
            (fs == fstype && (option.is_empty() || opts.split(',').any(|o| o == option))).then(|| PathBuf::from(point))
        })
        .collect()
}

impl MemoryCgroup {
    /// A new cgroup named `gotel-e2e-NAME-PID` limited to `limit` bytes (no swap).
    pub fn create(name: &str, limit: u64) -> Result<MemoryCgroup> {
        let leaf = format!("gotel-e2e-{name}-{}", std::process::id());
        let write =
            |p: PathBuf, v: &str| std::fs::write(&p, v).with_context(|| format!("write {v:?} to {}", p.display()));
        for root in mounts("cgroup2", "") {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                continue;
            }
            write(root.join("cgroup.subtree_control"), "+memory")?;
            let dir = root.join(leaf);
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let cg = MemoryCgroup { dir, v2: true };
            write(cg.dir.join("memory.max"), &limit.to_string())?;
            if cg.dir.join("memory.swap.max").exists() {
                write(cg.dir.join("memory.swap.max"), "0")?;
            }
            return Ok(cg);
        }
        let Some(root) = mounts("cgroup", "memory").into_iter().next() else {
            bail!("no cgroup memory controller (neither cgroup v2 with memory nor a v1 memory hierarchy)");
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers.split(',').any(|c| c == "memory").then(|| path.trim_start_matches('/').to_string())
            })
            .unwrap_or_default();
        let dir = root.join(own).join(leaf);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2: false };
        write(cg.dir.join("memory.limit_in_bytes"), &limit.to_string())?;
        if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
            let _ = write(cg.dir.join("memory.memsw.limit_in_bytes"), &limit.to_string());
        }
        Ok(cg)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes `cmd`'s process join this cgroup before it executes its program, so everything it
    /// does is charged here.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let procs = CString::new(self.dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }

    /// Most memory charged at once since creation (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`).
    pub fn peak(&self) -> Option<u64> {
        self.read_u64(if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" })
    }

    /// Processes killed for going over the limit.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A cgroup can be removed once its last process is gone, which the kernel notes a
        // moment after the exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}
