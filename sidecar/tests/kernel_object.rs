//! The eBPF object embedded in `gotel` exports exactly the programs and maps that user space
//! looks up by name (`gotel_shared::names`): aya's macros name them after the Rust items, so a
//! rename on one side only would otherwise fail at load or attach time on a user's machine.
use std::collections::BTreeSet;

use gotel_shared::names::{ALL_MAPS, ALL_PROGRAMS};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gotel-ebpf"));

/// Names of the symbols defined in the section called `section`.
fn symbols_in(elf: &goblin::elf::Elf, section: &str) -> BTreeSet<String> {
    let index = elf
        .section_headers
        .iter()
        .position(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(section))
        .unwrap_or_else(|| panic!("no section {section} in the eBPF object"));
    elf.syms
        .iter()
        .filter(|s| s.st_shndx == index && s.st_name != 0)
        .filter_map(|s| elf.strtab.get_at(s.st_name))
        .filter(|name| *name != section)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_object_has_exactly_the_named_programs_and_maps() {
    let elf = goblin::elf::Elf::parse(EBPF_OBJECT).expect("the embedded eBPF object is an ELF file");
    // Uprobes, and the socket path's SOCK_OPS and SK_MSG programs.
    let programs: BTreeSet<String> = ["uprobe", "sockops", "sk_msg"].iter().flat_map(|s| symbols_in(&elf, s)).collect();
    let maps = symbols_in(&elf, "maps");
    assert_eq!(programs, ALL_PROGRAMS.iter().map(|n| n.to_string()).collect(), "programs");
    assert_eq!(maps, ALL_MAPS.iter().map(|n| n.to_string()).collect(), "maps");
}
