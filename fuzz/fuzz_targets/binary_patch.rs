//! Real Go binaries (normal, stripped, PIE; `gen-seeds.sh`) with fuzzed patches in one region:
//! `.gopclntab` above all, also `.go.buildinfo`, `.symtab`, `.strtab`, `.text`, DWARF sections
//! and the ELF / program / section header tables. Keeps every input small while reaching deep
//! into the pclntab and build-info readers.
//!
//! Input: `[base][region][ops...]` (base byte % 8: 0-5 stripped, 6 normal, 7 PIE), ops as in `gotel_fuzz::apply_ops`; a region byte >= 0xf0
//! truncates the file inside the chosen region instead (at the op offset).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Three inputs in four patch the stripped binary: no DWARF to load, so ~10x more execs
    // for the pclntab and build-info readers; the rest the normal and PIE builds.
    let bases = gotel_fuzz::bases();
    let base = match data[0] % 8 {
        0..=5 => &bases[0],
        6 => &bases[1],
        _ => &bases[2],
    };
    // Bias towards the pclntab: half of the region bytes pick it.
    let pcln = base.regions.iter().position(|r| r.0.ends_with("gopclntab"));
    let ri = match (data[1] & 1, pcln) {
        (0, Some(p)) => p,
        _ => (data[1] as usize >> 1) % base.regions.len(),
    };
    let (_, start, size) = base.regions[ri];
    let mut bytes = base.bytes.clone();
    let ops = &data[2..];
    if data[1] >= 0xf0 && ops.len() >= 4 {
        let cut = start + u32::from_le_bytes([ops[0], ops[1], ops[2], ops[3]]) as usize % size.max(1);
        bytes.truncate(cut);
    } else {
        gotel_fuzz::apply_ops(&mut bytes, (start, size), ops);
    }
    let path = gotel_fuzz::write_scratch(&[&bytes]);
    gotel_fuzz::open_and_exercise(path);
});
