//! `values::decode`: the kernel's captured values (untrusted: they come from the target's
//! memory) against any plan of attribute slots: attributes or counted malformed data, never a
//! panic, and never more attributes than records.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use gotel::attributes::{AttrSlot, Decode};
use gotel::values::{decode, TypeNames};
use libfuzzer_sys::fuzz_target;

struct Names;

impl TypeNames for Names {
    fn type_name(&self, addr: u64) -> Option<String> {
        match addr % 5 {
            0 => None,
            1 => Some("*errors.errorString".into()),
            2 => Some("*fmt.wrapError".into()),
            3 => Some(String::new()),
            _ => Some(format!("main.T{addr}")),
        }
    }
}

fn decode_kind(u: &mut Unstructured) -> arbitrary::Result<Decode> {
    let size = *u.choose(&[1u8, 2, 4, 8, 0, 3, 16, 255])?;
    Ok(match u.int_in_range(0..=12u8)? {
        0 => Decode::Int { size },
        1 => Decode::Uint { size },
        2 => Decode::Bool,
        3 => Decode::Uintptr,
        4 => Decode::Pointer,
        5 => Decode::String,
        6 => Decode::Bytes,
        7 => Decode::Len,
        8 => Decode::MapLen,
        9 => Decode::Interface,
        10 => Decode::Error,
        _ => Decode::ErrorType,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(0..=8usize) else { return };
    let mut slots = Vec::new();
    for i in 0..n {
        let Ok(decode) = decode_kind(&mut u) else { return };
        let Ok(sets_error_status) = bool::arbitrary(&mut u) else { return };
        slots.push(AttrSlot { key: gotel::attributes::shared_key(&format!("k{i}")), decode, sets_error_status });
    }
    let rest = u.take_rest();
    let mut out = Vec::new();
    let mut status = None;
    let stats = decode(&slots, rest, &Names, &mut out, &mut status);
    // Every record has a 24-byte header: no more attributes than that allows.
    assert!(out.len() <= rest.len() / 24 + 1, "{} attributes from {} bytes", out.len(), rest.len());
    assert_eq!(stats.attributes as usize, out.len(), "DecodeStats::attributes vs attributes emitted");
});
