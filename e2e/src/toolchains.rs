//! The Go toolchains the tests build their programs with, read from `tools/go-toolchains.txt`
//! (the list the shell scripts read too, so a new Go release is added in one place), and what a
//! test does when its toolchain is missing: skip with one line, or fail under
//! `GOTEL_TEST_REQUIRE_ALL=1` (set by `tools/test.sh`, so that a skip never hides a failure).
//!
//! This file is also compiled into the sidecar's unit tests (`sidecar/src/dwarf/testutil.rs`
//! includes it with `#[path]`), which cannot depend on the e2e crate.
use std::path::{Path, PathBuf};

const LIST: &str = include_str!("../../tools/go-toolchains.txt");

/// One listed toolchain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `1.27`
    pub version: &'static str,
    pub path: &'static str,
    /// How `tools/install-deps.sh` installs it (`apt:golang-1.19-go`, `toolchain:go1.27.3`, ...).
    pub install: &'static str,
}

impl Toolchain {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.path)
    }

    pub fn installed(&self) -> bool {
        Path::new(self.path).exists()
    }
}

/// Every listed toolchain, the default one first.
pub fn all() -> impl Iterator<Item = Toolchain> {
    LIST.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| {
        let mut cols = l.split_whitespace();
        Some(Toolchain { version: cols.next()?, path: cols.next()?, install: cols.next().unwrap_or("") })
    })
}

/// The default toolchain (the list's first line).
pub fn default() -> Toolchain {
    all().next().expect("tools/go-toolchains.txt lists no toolchain")
}

/// The toolchain of a Go release (`1.19`), if listed.
pub fn version(version: &str) -> Option<Toolchain> {
    all().find(|t| t.version == version)
}

/// Set by `tools/test.sh`: a missing prerequisite then fails the test instead of skipping it.
pub const REQUIRE_ALL: &str = "GOTEL_TEST_REQUIRE_ALL";

/// A test of `test` cannot run here because of `why`: one line on stderr (written past the test
/// harness's capture, so plain `cargo test` shows it), or a panic under [`REQUIRE_ALL`].
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v == "1") {
        panic!("{test}: {why} ({REQUIRE_ALL}=1: a missing prerequisite is a failure)");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_parses() {
        let all: Vec<_> = super::all().collect();
        assert!(all.len() >= 2, "{all:?}");
        assert_eq!(super::default(), all[0]);
        assert!(all.iter().all(|t| t.path.ends_with("/bin/go") && t.version.starts_with("1.")), "{all:?}");
        assert_eq!(super::version(all[1].version), Some(all[1]));
    }
}
