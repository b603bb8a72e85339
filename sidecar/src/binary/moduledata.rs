//! Finding Go's module data (`runtime.firstmoduledata`) without the symbol table, for the one
//! thing gotel needs from it: `moduledata.types`, the base every type descriptor's name offset
//! counts from. With it, a stripped build (`-ldflags=-s -w`) names the dynamic types of its
//! `error` and interface values like any other build (see `type_names`); without it they
//! would show as addresses.
//!
//! The module data starts with a pointer to the pclntab header, followed by the
//! `funcnametab` slice, whose data pointer is the pclntab's address plus the header's
//! `funcnameOffset`. Those two words, next to each other and both link-time addresses, are
//! searched for in the sections the linker puts the module data in (`.go.module` since Go
//! 1.26, `.noptrdata` before; `.data.rel.ro` and `.data` are tried too). The hit is checked
//! once more: its `text` field must be the `.text` section's address. Field positions are from
//! `runtime/symtab.go` of each release: `types` is word 35 up to Go 1.19 and word 37 from Go
//! 1.20 (`covctrs, ecovctrs` were added before `end`), Go 1.27 included.
use super::{go_minor, segment_file_offset, GoBinary};

/// Word index of `moduledata.text`.
const TEXT_WORD: usize = 22;

/// Where the linker puts the module data, most likely first.
const SECTIONS: [&str; 4] = [".go.module", ".noptrdata", ".data.rel.ro", ".data"];

/// `moduledata.types` of the binary, found by content (see the module docs); `None` when no
/// module data matches the pclntab.
pub(super) fn types_base(bin: &GoBinary) -> Option<u64> {
    let pclntab_addr = bin.pclntab.as_ref()?.addr;
    let funcname_offset = bin.pclntab()?.funcname_offset();
    let types_word = match bin.build.go_version.as_deref().and_then(go_minor) {
        Some(minor) if minor < 20 => 35,
        _ => 37,
    };
    let text = bin.section(".text").map(|s| s.addr);
    let want = (pclntab_addr, pclntab_addr.checked_add(funcname_offset)?);
    for section in SECTIONS.iter().filter_map(|name| bin.section(name)) {
        if section.nobits || section.compressed {
            continue;
        }
        let start = section.offset as usize;
        let Some(data) = bin.map.get(start..start.saturating_add(section.size as usize)) else { continue };
        let word = |at: usize| data.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        for at in (0..data.len().saturating_sub(16)).step_by(8) {
            if (word(at), word(at + 8)) != (Some(want.0), Some(want.1)) {
                continue;
            }
            let field = |i: usize| word(at + 8 * i);
            if text.is_some_and(|t| field(TEXT_WORD) != Some(t)) {
                continue;
            }
            let types = field(types_word)?;
            if segment_file_offset(&bin.segments, types).is_some() {
                return Some(types);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dwarf::testutil::{build_go, go_matrix};

    /// On every toolchain of the test matrix, executable and PIE, the module data found by
    /// content gives the symbol table's `runtime.types`; a stripped build of the same program
    /// gets one close by (its read-only data differs by a few bytes: the build settings
    /// string). That the stripped one names types is checked by `type_names`' tests (every
    /// descriptor of `.typelink`) and the stripped end-to-end test.
    #[test]
    fn finds_runtime_types_without_symbols() {
        for go in go_matrix() {
            for pie in [false, true] {
                let flags: &[&str] = if pie { &["-buildmode=pie"] } else { &[] };
                let built = build_go(&go, "attrs", flags);
                let what = format!("{} pie={pie}", built.version);
                let bin = GoBinary::open(&built.path).unwrap();
                let from_symbols = bin.types_base.unwrap_or_else(|| panic!("{what}: no runtime.types"));
                assert_eq!(types_base(&bin), Some(from_symbols), "{what}");
                let stripped_flags: Vec<&str> = flags.iter().copied().chain(["-ldflags=-s -w"]).collect();
                let stripped = GoBinary::open(&build_go(&go, "attrs", &stripped_flags).path).unwrap();
                let found = stripped.types_base.unwrap_or_else(|| panic!("{what} stripped: not found"));
                assert!(found.abs_diff(from_symbols) < 4096, "{what} stripped: {found:#x} vs {from_symbols:#x}");
            }
        }
    }
}
