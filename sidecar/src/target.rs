//! Finding the Go process to trace: an existing pid, the process running an executable, or a
//! command gotel launches itself.
//!
//! Launching: gotel forks *before* starting any thread, and the child waits on a pipe before
//! `execvp`. Probes are attached to the child's pid meanwhile (a uprobe filtered by pid keeps
//! working across exec), then the child is released: no call is missed, not even in `init`.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::exit::Failure;

/// A process being traced.
#[derive(Clone, Debug)]
pub struct Process {
    /// Pid in gotel's pid namespace (the same as the target's in a `pid: service:app` sidecar).
    pub pid: u32,
    /// Path to open the executable with: `/proc/PID/exe` for running processes (works across
    /// mount namespaces, never canonicalized), the resolved program path for a launch.
    pub exe: PathBuf,
    /// The executable's file name, for `process.executable.name` and the default service name.
    pub exe_name: String,
}

pub fn existing(pid: u32) -> Result<Process, Failure> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let link = fs::read_link(&exe).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => Failure::target(format!(
            "no process with pid {pid} (GOTEL_TARGET_PID); in a container, share the target's pid namespace (compose: pid: \"service:<app>\")"
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            Failure::environment(format!("cannot read /proc/{pid}/exe: permission denied; {}", ptrace_hint()))
        }
        _ => Failure::target(format!("cannot read /proc/{pid}/exe: {e}")),
    })?;
    Ok(Process { pid, exe, exe_name: file_name(&link) })
}

/// Capability number of CAP_SYS_PTRACE (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

/// What to do about a permission denied on another process's `/proc/PID/exe`. Without
/// CAP_SYS_PTRACE that is the capability; with it (root usually has it), asking for it again
/// would mislead: a security module (Yama's ptrace_scope, AppArmor, SELinux) or a user
/// namespace is what refuses.
fn ptrace_hint() -> String {
    if has_capability(CAP_SYS_PTRACE) {
        "gotel has CAP_SYS_PTRACE already, so a security module (Yama ptrace_scope 3, AppArmor, SELinux) or a \
         user namespace forbids it; run gotel where it may inspect the target (the target's pid namespace, \
         without such a policy)"
            .into()
    } else {
        "gotel needs CAP_SYS_PTRACE to inspect another user's process (compose: cap_add: [SYS_PTRACE])".into()
    }
}

/// Whether capability `cap` is in gotel's effective set (`CapEff` of /proc/self/status).
fn has_capability(cap: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim);
    eff.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|bits| bits & (1u64 << cap) != 0)
}

fn file_name(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A replaced binary shows as "server (deleted)".
    name.trim_end_matches(" (deleted)").to_string()
}

/// What one scan of /proc found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Processes (other than gotel itself) whose executable is the wanted file.
    pub matches: Vec<u32>,
    /// Processes whose executable gotel may not read (another user's, without CAP_SYS_PTRACE).
    pub denied: usize,
    /// Other processes whose executable gotel could read.
    pub readable: usize,
}

/// Processes (other than gotel itself) whose executable is `path`: the same link text, as the
/// target sees its own file system, or the same file (device and inode) when gotel sees it too.
pub fn find_by_exe(path: &Path, exclude: &[u32]) -> Scan {
    let want_id = fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let me = std::process::id();
    let mut scan = Scan::default();
    let Ok(dir) = fs::read_dir("/proc") else { return scan };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me || exclude.contains(&pid) {
            continue;
        }
        let exe = entry.path().join("exe");
        let link = match fs::read_link(&exe) {
            Ok(l) => l,
            Err(e) => {
                // Kernel threads have no exe (ENOENT); EACCES means we may not look.
                if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                    scan.denied += 1;
                }
                continue;
            }
        };
        scan.readable += 1;
        let same_text = link.as_os_str() == path.as_os_str();
        let same_file = want_id.is_some() && fs::metadata(&exe).ok().map(|m| (m.dev(), m.ino())) == want_id;
        if same_text || same_file {
            scan.matches.push(pid);
        }
    }
    scan.matches.sort();
    scan
}

/// Waits until a process runs `path`; the oldest one wins. /proc is polled every 10 ms for the
/// first 3 s after a traced process exited (`exclude` is not empty: a restart usually follows
/// at once, and each poll is the only delay gotel adds before attaching), then every 100 ms
/// (one scan reads every process's `exe` link: about a millisecond for a few hundred).
/// A path gotel does not see is said once: it may be right as the target sees it (another
/// mount namespace), so gotel keeps waiting rather than failing.
/// When gotel may read no other process's executable at all (a sidecar without
/// CAP_SYS_PTRACE), waiting could never end: that is an error naming the capability. When only
/// some are unreadable (root on a host where a few processes are protected), gotel warns once
/// and keeps waiting.
pub async fn wait_for_exe(path: &Path, exclude: &[u32]) -> Result<Process, Failure> {
    let mut announced = false;
    let mut warned = false;
    let started = std::time::Instant::now();
    let fast_until = if exclude.is_empty() { Duration::ZERO } else { Duration::from_secs(3) };
    if !path.exists() {
        tracing::warn!(
            exe = %path.display(),
            "no such file here; waiting for a process whose executable has this path as it sees it \
             (in its own mount namespace); check the path if the target runs on this file system"
        );
    }
    loop {
        let scan = find_by_exe(path, exclude);
        if let Some(&pid) = scan.matches.first() {
            if let Ok(p) = existing(pid) {
                return Ok(p);
            }
        }
        if scan.denied > 0 && scan.readable == 0 {
            return Err(Failure::environment(format!(
                "looking for {}: permission denied reading /proc/PID/exe of {} process(es); {}",
                path.display(),
                scan.denied,
                ptrace_hint()
            )));
        }
        if scan.denied > 0 && !warned {
            tracing::warn!(
                denied = scan.denied,
                "some processes' executables cannot be read (permission denied); if the target is one of them: {}",
                ptrace_hint()
            );
            warned = true;
        }
        if !announced {
            tracing::info!(exe = %path.display(), "waiting for a process running this executable");
            announced = true;
        }
        let pause = if started.elapsed() < fast_until { 10 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// A forked child waiting before `execvp` until `release`.
pub struct Launched {
    pub process: Process,
    release_fd: libc::c_int,
}

impl Launched {
    /// Lets the child exec its program.
    pub fn release(&mut self) {
        if self.release_fd >= 0 {
            unsafe {
                libc::write(self.release_fd, b"g".as_ptr().cast(), 1);
                libc::close(self.release_fd);
            }
            self.release_fd = -1;
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.release_fd >= 0 {
            // Closing without the go byte makes the child exit(127) without running anything.
            unsafe { libc::close(self.release_fd) };
        }
    }
}

/// Resolves `program` like `execvp` would, so probes can be attached to the right file.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| fs::metadata(p).map(|m| m.is_file() && m.mode() & 0o111 != 0).unwrap_or(false))
}

/// Forks the command, stopped before exec. Must run before any other thread exists.
pub fn launch(command: &[String]) -> Result<Launched, Failure> {
    let program = &command[0];
    let exe = resolve_program(program)
        .filter(|p| p.exists())
        .ok_or_else(|| Failure::target(format!("cannot run {program}: no such file (looked in PATH)")))?;
    let exe = fs::canonicalize(&exe).unwrap_or(exe);
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Failure::config("the command contains a NUL byte"))?;
    let path_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| Failure::config("bad path"))?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    let mut fds = [0 as libc::c_int; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::environment(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::environment(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // Child: only async-signal-safe calls from here on.
        unsafe {
            libc::close(fds[1]);
            let mut b = 0u8;
            let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
            if n != 1 {
                libc::_exit(127);
            }
            libc::close(fds[0]);
            libc::execv(path_c.as_ptr(), argv_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    unsafe { libc::close(fds[0]) };
    Ok(Launched { process: Process { pid: pid as u32, exe_name: file_name(&exe), exe }, release_fd: fds[1] })
}

/// Opens a pidfd, readable once the process exits.
pub fn pidfd(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Process `pid`'s number in the kernel's initial pid namespace (what the kernel's programs see
/// as its tgid), when gotel can tell it: gotel itself runs in that namespace (on the host, a
/// DaemonSet with `hostPID`), so the pid it sees is that number. `None` in any other pid
/// namespace (a sidecar sharing the service's), where the two differ.
pub fn kernel_pid(pid: u32) -> Option<u32> {
    const PROC_PID_INIT_INO: &str = "pid:[4026531836]";
    let own = std::fs::read_link("/proc/self/ns/pid").ok()?;
    (own.to_str()? == PROC_PID_INIT_INO).then_some(pid)
}

/// Whether process `pid` still runs (exists and is neither a zombie nor dead), from
/// /proc/PID/stat's state field, which follows the command name's closing parenthesis.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X') | Some('x'))
}

/// Exit status of a reaped child of gotel, as a shell would report it.
pub fn reap(pid: u32) -> Option<i32> {
    let mut status = 0;
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if r != pid as libc::pid_t {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_processes_by_executable() {
        let mut child = std::process::Command::new("/bin/sleep").arg("5").spawn().unwrap();
        let pids = find_by_exe(&fs::canonicalize("/bin/sleep").unwrap(), &[]).matches;
        child.kill().unwrap();
        let _ = child.wait();
        assert!(pids.contains(&child.id()), "{pids:?} lacks {}", child.id());
    }

    #[test]
    fn missing_pid_is_a_target_error() {
        let e = existing(u32::MAX - 1).unwrap_err();
        assert_eq!(e.code, crate::exit::ExitCode::Target);
    }

    #[test]
    fn capability_hint_matches_the_effective_set() {
        // Root (as the kernel tests run) has CAP_SYS_PTRACE: the hint must then not ask for it.
        let has = has_capability(CAP_SYS_PTRACE);
        if unsafe { libc::geteuid() } == 0 {
            assert!(has, "root without CAP_SYS_PTRACE?");
        }
        assert_eq!(ptrace_hint().contains("needs CAP_SYS_PTRACE"), !has);
        assert!(!has_capability(63), "no such capability");
    }

    #[test]
    fn strips_deleted_suffix() {
        assert_eq!(file_name(Path::new("/app/server (deleted)")), "server");
    }
}

#[cfg(test)]
mod alive_tests {
    #[test]
    fn alive_sees_running_exited_and_zombie_processes() {
        assert!(super::alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not yet reaped: a zombie.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!super::alive(pid), "zombie counted as alive");
        child.wait().unwrap();
        assert!(!super::alive(pid), "reaped process counted as alive");
    }
}
