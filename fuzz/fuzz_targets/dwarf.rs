//! `DwarfInfo::load` on fuzzed DWARF sections: either every section from the input
//! (length-prefixed), or the real sections of a Go binary (`gen-seeds.sh`, decompressed) with
//! fuzzed patches in one of them.
//!
//! Input: `[mode]...`; mode even: sections `[len: u16 le][bytes]` in the order of `NAMES`;
//! mode odd: `[section][ops...]` as in `gotel_fuzz::apply_ops`.
#![no_main]
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use gotel::dwarf::DwarfInfo;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 11] = [
    ".debug_info",
    ".debug_abbrev",
    ".debug_str",
    ".debug_line",
    ".debug_line_str",
    ".debug_str_offsets",
    ".debug_addr",
    ".debug_ranges",
    ".debug_rnglists",
    ".debug_loclists",
    ".debug_loc",
];

/// The (decompressed) DWARF sections of the normal base binary.
fn real() -> &'static Vec<(&'static str, Vec<u8>)> {
    static R: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    R.get_or_init(|| {
        let base = gotel_fuzz::bases().iter().find(|b| b.name == "hello-normal").unwrap();
        let p = gotel_fuzz::write_scratch(&[&base.bytes]);
        let b = gotel::binary::GoBinary::open(p).expect("base binary opens");
        NAMES
            .iter()
            .filter_map(|n| b.section_data(n).map(|d| (*n, d.into_owned())))
            .collect()
    })
}

fn load(sections: &HashMap<&str, &[u8]>) {
    let get = |name: &str| sections.get(name).map(|d| Cow::Borrowed(*d));
    if let Ok(Some(info)) = DwarfInfo::load(&get) {
        gotel_fuzz::exercise_dwarf(&info);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let mut sections = HashMap::new();
        let mut rest = rest;
        for name in NAMES {
            if rest.len() < 2 {
                break;
            }
            let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
            sections.insert(name, &rest[2..2 + n]);
            rest = &rest[2 + n..];
        }
        load(&sections);
    } else {
        let Some((&which, ops)) = rest.split_first() else { return };
        let real = real();
        let which = which as usize % real.len();
        let mut patched = real[which].1.clone();
        let len = patched.len();
        gotel_fuzz::apply_ops(&mut patched, (0, len), ops);
        let mut sections: HashMap<&str, &[u8]> = real.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        sections.insert(real[which].0, &patched);
        load(&sections);
    }
});
