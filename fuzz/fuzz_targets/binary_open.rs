//! `GoBinary::open` on arbitrary file contents (ELF, symbol table, pclntab, build info, DWARF,
//! RET / prologue decoding): an error or a binary, never a panic. Seeds: `gen-seeds.sh`
//! (`seeds/bin/open/`: real small Go binaries and cut-down ELF files).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = gotel_fuzz::write_scratch(&[data]);
    gotel_fuzz::open_and_exercise(path);
});
