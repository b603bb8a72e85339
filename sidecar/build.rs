//! Builds the eBPF programs (`sidecar-ebpf`) with aya-build and embeds the object in `gotel`.
//!
//! The kernel side needs a nightly compiler (`-Z build-std=core` for the bpfel target) with
//! `rust-src` and `llvm-tools`; it is pinned here so builds are reproducible. Linking uses the real
//! `bpf-linker` when one is on PATH, else the stand-in in `tools/bpf-linker-standin/` (llvm-link,
//! opt and llc from `llvm-tools`), because bpf-linker cannot be built against Debian's LLVM.
use std::{env, path::PathBuf, process::Command};

use anyhow::{anyhow, bail, Context as _};
use aya_build::{Package, Toolchain};

/// `tools/install-deps.sh` reads this line to install it.
const EBPF_NIGHTLY: &str = "nightly-2026-05-20";

fn on_path(program: &str) -> bool {
    env::var_os("PATH").map(|p| env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().ok_or_else(|| anyhow!("no workspace root"))?;
    println!("cargo:rerun-if-changed={}", root.join("shared/src").display());
    println!("cargo:rerun-if-changed={}", root.join("tools/bpf-linker-standin").display());

    let probe = Command::new("rustup")
        .args(["run", EBPF_NIGHTLY, "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup (needed to build the eBPF programs)")?;
    if !probe.status.success() {
        bail!(
            "the eBPF programs need the Rust toolchain {EBPF_NIGHTLY} with rust-src and llvm-tools; \
             install it with: rustup toolchain install {EBPF_NIGHTLY} --profile minimal -c rust-src -c llvm-tools \
             (tools/install-deps.sh, as root, installs it with everything else)"
        );
    }
    if !on_path("bpf-linker") {
        let sysroot = String::from_utf8_lossy(&probe.stdout).trim().to_string();
        let llc = PathBuf::from(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llc");
        if !llc.exists() {
            bail!(
                "no bpf-linker on PATH and no {} (rustup component add llvm-tools --toolchain {EBPF_NIGHTLY})",
                llc.display()
            );
        }
        let standin = root.join("tools/bpf-linker-standin");
        let path = env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![standin];
        dirs.extend(env::split_paths(&path));
        // Inherited by the nested cargo that aya-build runs for the bpfel target.
        env::set_var("PATH", env::join_paths(dirs)?);
    }

    let ebpf_dir = root.join("sidecar-ebpf");
    aya_build::build_ebpf(
        [Package { name: "gotel-ebpf", root_dir: ebpf_dir.to_str().unwrap(), ..Default::default() }],
        Toolchain::Custom(EBPF_NIGHTLY),
    )
}
