//! Test helper shared by gotel's unit tests: builds the Go programs under `e2e/goapps` with a
//! chosen Go toolchain and loads their DWARF. A failing build fails the test (never a skip);
//! a toolchain that is not installed is skipped with one line, or fails under
//! `GOTEL_TEST_REQUIRE_ALL=1` (`tools/test.sh`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::DwarfInfo;

/// The list of `tools/go-toolchains.txt`, shared with the e2e crate (which gotel cannot depend on).
#[path = "../../../e2e/src/toolchains.rs"]
#[allow(dead_code)]
mod toolchains;

fn test_name() -> String {
    std::thread::current().name().unwrap_or("test").rsplit("::").next().unwrap_or("test").to_string()
}

fn explicit() -> Option<Vec<PathBuf>> {
    let list = std::env::var("GOTEL_TEST_GO").ok()?;
    Some(list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
}

/// The toolchain a test builds with: the first of `GOTEL_TEST_GO`, else the default one of
/// `tools/go-toolchains.txt`. `None` (after saying so) when it is not installed: the test returns.
pub fn default_go() -> Option<PathBuf> {
    if let Some(first) = explicit().and_then(|l| l.into_iter().next()) {
        return Some(first);
    }
    let t = toolchains::default();
    if t.installed() {
        return Some(t.path());
    }
    toolchains::skip_or_fail(
        &test_name(),
        &format!("needs Go {} at {} (tools/install-deps.sh installs it)", t.version, t.path),
    );
    None
}

/// `require_go!();` as a test's first line: returns from the test when [`default_go`] is missing.
macro_rules! require_go {
    () => {
        if $crate::dwarf::testutil::default_go().is_none() {
            return;
        }
    };
}
pub(crate) use require_go;

/// Toolchains for the version matrix: `GOTEL_TEST_GO` (colon-separated go binaries; each
/// must work) or every toolchain of `tools/go-toolchains.txt`, the default first. One that is
/// not installed is left out with one line saying so (a failure under `GOTEL_TEST_REQUIRE_ALL=1`).
pub fn go_matrix() -> Vec<PathBuf> {
    if let Some(list) = explicit() {
        return list;
    }
    let (installed, missing): (Vec<_>, Vec<_>) = toolchains::all().partition(|t| t.installed());
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|t| format!("Go {} ({})", t.version, t.path)).collect();
        toolchains::skip_or_fail(
            &test_name(),
            &format!("not built with {} (tools/install-deps.sh installs them)", names.join(", ")),
        );
    }
    installed.iter().map(|t| t.path()).collect()
}

pub struct Built {
    pub path: PathBuf,
    pub version: String,
    _dir: tempfile::TempDir,
}

type Cache = Mutex<HashMap<(PathBuf, String, Vec<String>), Arc<Built>>>;

/// Builds `e2e/goapps/<app>` with `go` and extra `go build` flags, once per test process.
pub fn build_go(go: &Path, app: &str, flags: &[&str]) -> Arc<Built> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (go.to_path_buf(), app.to_string(), flags.iter().map(|s| s.to_string()).collect());
    let cache = CACHE.get_or_init(Default::default);
    // Hold the lock while building: parallel tests wait for the one build they share.
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = guard.get(&key) {
        return b.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/goapps").join(app);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join(app);
    let result = std::process::Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
    assert!(
        result.status.success(),
        "{} build of {app} failed:\n{}",
        go.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    let version = std::process::Command::new(go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let built = Arc::new(Built { path: out, version, _dir: dir });
    guard.insert(key, built.clone());
    built
}

/// Reads the named ELF sections of a binary built with `-ldflags=-compressdwarf=false`.
pub fn load_dwarf(path: &Path) -> Option<DwarfInfo> {
    let bytes = std::fs::read(path).expect("read binary");
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse ELF");
    let section = |name: &str| -> Option<Cow<'_, [u8]>> {
        let sh = elf.section_headers.iter().find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))?;
        assert_eq!(sh.sh_flags & u64::from(goblin::elf::section_header::SHF_COMPRESSED), 0, "{name} compressed");
        let start = sh.sh_offset as usize;
        bytes.get(start..start + sh.sh_size as usize).map(Cow::Borrowed)
    };
    DwarfInfo::load(&section).expect("load DWARF")
}

/// Flags for a test build: uncompressed DWARF so the test loader needs no zlib.
pub const DWARF_FLAGS: &[&str] = &["-ldflags=-compressdwarf=false"];
