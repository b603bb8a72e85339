//! The `PAUSED` switch, as root against the real kernel: with entry 0 of gotel's `PAUSED` map
//! set, every uprobe program returns at once (bench/paired.py times gotel against its own bare
//! traps that way, in one process); cleared, tracing goes on.
//!
//! * `paused_gotel_traces_nothing_and_resumes`: a Go program calls `main.tick` every 2 ms;
//!   spans arrive; paused, none arrives and gotel's `Entries` counter stands still for 1.5 s
//!   while the program keeps calling; cleared, spans arrive again; at exit, at most one return
//!   per switch without its entry (a call paused between its two traps is counted, not a span).
//!
//! Needs root, Go and a built gotel (`GOTEL_BIN`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use gotel_e2e::{go_bin, gotel_command, require, run, Export, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `gotel_shared::Counter::Entries`, slot 0 (`gotel --pid`).
const ENTRIES: u32 = 6;

const TARGET: &str = r#"package main

import "time"

var sink int

//go:noinline
func tick(x int) int { return x*3 + 1 }

func main() {
	for {
		sink = tick(sink)
		time.Sleep(2 * time.Millisecond)
	}
}
"#;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 4]) -> std::io::Result<()> {
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor (ours, through pidfd_getfd) of process `pid`'s BPF map named `name`.
fn map_of(pid: u32, name: &str) -> Result<OwnedFd> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        if std::fs::read_link(entry.path()).map(|l| l.to_string_lossy() != "anon_inode:bpf-map").unwrap_or(true) {
            continue;
        }
        let Ok(remote) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), remote, 0) };
        if fd < 0 {
            continue;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // struct bpf_map_info: the name is at byte 24.
        let mut info = [0u8; 128];
        let mut attr = [fd.as_raw_fd() as u64 | ((info.len() as u64) << 32), info.as_mut_ptr() as u64, 0, 0];
        if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_ok()
            && info[24..40].split(|b| *b == 0).next() == Some(name.as_bytes())
        {
            return Ok(fd);
        }
    }
    bail!("gotel (pid {pid}) holds no map named {name}")
}

fn set_paused(map: &OwnedFd, on: bool) -> Result<()> {
    let key = 0u32;
    let value = on as u32;
    let mut attr = [map.as_raw_fd() as u64, &key as *const u32 as u64, &value as *const u32 as u64, 0];
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).context("BPF_MAP_UPDATE_ELEM PAUSED")
}

/// gotel's `Entries` counter summed over the CPUs.
fn entries(counters: &OwnedFd) -> Result<u64> {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")?
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) - a.parse::<usize>().unwrap_or(0) + 1,
            None => 1,
        })
        .sum::<usize>();
    let key = ENTRIES;
    let mut values = vec![0u64; cpus];
    let mut attr = [counters.as_raw_fd() as u64, &key as *const u32 as u64, values.as_mut_ptr() as u64, 0];
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("BPF_MAP_LOOKUP_ELEM COUNTERS")?;
    Ok(values.iter().sum())
}

#[test]
fn paused_gotel_traces_nothing_and_resumes() {
    require!(Root, Go);
    if let Err(e) = paused_and_resumed() {
        panic!("{e:#}");
    }
}

fn paused_and_resumed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("main.go"), TARGET)?;
    std::fs::write(dir.path().join("go.mod"), "module pausedtarget\n\ngo 1.21\n")?;
    let bin = dir.path().join("target");
    let mut build = Command::new(go_bin());
    build.args(["build", "-o"]).arg(&bin).arg(".").current_dir(dir.path()).env("CGO_ENABLED", "0");
    let (st, so, se) = run("go build", build, Duration::from_secs(300))?;
    if !st.success() {
        bail!("go build failed: {st}\n{so}{se}");
    }
    let target = Proc::spawn("target", Command::new(&bin))?;
    let sink = Sink::start(std::path::Path::new(SINK), dir.path())?;
    let mut gotel = gotel_command(&Export::Grpc(sink.grpc_endpoint()), "main.tick");
    gotel.arg("--pid").arg(target.pid().to_string());
    let mut g = Proc::spawn("gotel", gotel)?;
    g.wait_stderr_line("attached pid=", Duration::from_secs(120))?;
    if sink.wait_spans(20, Duration::from_secs(30))?.len() < 20 {
        bail!("no spans before pausing:\n{}", g.stderr_string());
    }
    let paused = map_of(g.pid(), "PAUSED")?;
    let counters = map_of(g.pid(), "COUNTERS")?;

    set_paused(&paused, true)?;
    // What was traced before the switch reaches the sink (drained every 10 ms, exported every 100).
    let before = sink.wait_quiet(Duration::from_millis(700), Duration::from_secs(20))?.len();
    let entered = entries(&counters)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (during, entered_during) = (sink.spans()?.len() - before, entries(&counters)? - entered);
    set_paused(&paused, false)?;
    if during != 0 || entered_during != 0 {
        bail!(
            "paused for 1.5 s while main.tick ran every 2 ms: {during} spans arrived, {entered_during} calls entered"
        );
    }
    let after = sink.wait_spans(before + 20, Duration::from_secs(30))?.len();
    if after < before + 20 {
        bail!("no spans after resuming ({} new):\n{}", after - before, g.stderr_string());
    }
    if entries(&counters)? <= entered {
        bail!("resumed, but no call entered");
    }
    // gotel's summary at exit: a call paused between its entry and its RET (a few ns here, at most
    // one per switch) is a return without an entry, counted, never a wrong span.
    g.signal(libc::SIGTERM);
    g.wait_timeout(Duration::from_secs(20))?;
    let log = g.stderr_string();
    let unmatched = log
        .split("unmatched_returns=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no unmatched_returns= in gotel's summary:\n{log}"))?;
    if unmatched > 2 {
        bail!("pausing twice left {unmatched} returns without their entry:\n{log}");
    }
    drop(g);
    drop(target);
    Ok(())
}
