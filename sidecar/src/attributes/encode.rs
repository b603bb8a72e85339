//! Kernel encoding: a resolved [`Access`] becomes the `gotel_shared::Fetch` the kernel
//! executes and the [`Decode`] user space applies to what it captured.
//!
//! The final type picks both: ints, bools and pointer-shaped values are one word; strings,
//! `[]byte` and interfaces two (pointer + length, itab + data), read as payloads by the
//! kernel; `len()` reads only the length word (a map's count through its pointer).
//! Values in XMM registers are refused (uprobes cannot read them), and so are stack-passed
//! floats, for one simple rule. Structs and arrays must be narrowed to a field first.

use gotel_shared::{Fetch, Root, ValueKind, MAX_STR};

use crate::abi::{Reg, RegPiece};
use crate::dwarf::types::{Kind, TypeTable};

use super::resolve::{Access, Place};
use super::{AttrErrorKind, Decode, Limits, Remedy};

/// The fetch (its `slot` still 0) and decode for a resolved expression.
pub(super) fn encode(types: &TypeTable, limits: &Limits, acc: &Access) -> Result<(Fetch, Decode), AttrErrorKind> {
    let (_, t) = acc.underlying(types)?;
    let size = t.size.clamp(1, 8) as u8;
    let (kind, decode, words) = if acc.len {
        match t.kind {
            Kind::Map => (ValueKind::MapLen, Decode::MapLen, 1),
            _ => (ValueKind::Len, Decode::Len, 2),
        }
    } else {
        match &t.kind {
            Kind::Bool => (ValueKind::Int, Decode::Bool, 1),
            Kind::Int if t.size <= 8 => (ValueKind::Int, Decode::Int { size }, 1),
            Kind::Uint if t.size <= 8 => (ValueKind::Int, Decode::Uint { size }, 1),
            Kind::Uintptr => (ValueKind::Int, Decode::Uintptr, 1),
            Kind::Pointer(_) | Kind::UnsafePointer | Kind::Chan | Kind::Func => (ValueKind::Int, Decode::Pointer, 1),
            // Its address would tell the user nothing: say what can be captured instead.
            Kind::Map => return Err(acc.unsupported(types, Remedy::SliceLength { path: acc.path.clone() })),
            Kind::String => (ValueKind::String, Decode::String, 2),
            Kind::Slice(Some(e))
                if types
                    .underlying(*e)
                    .is_some_and(|(_, e)| e.size == 1 && matches!(e.kind, Kind::Uint | Kind::Int)) =>
            {
                (ValueKind::String, Decode::Bytes, 2)
            }
            Kind::Slice(_) => return Err(acc.unsupported(types, Remedy::SliceLength { path: acc.path.clone() })),
            Kind::Interface { .. } => {
                let is_error = types.name(Some(acc.ty)) == "error";
                (ValueKind::Interface, if is_error { Decode::Error } else { Decode::Interface }, 2)
            }
            Kind::Float | Kind::Complex => return Err(acc.float(types)),
            Kind::Struct(_) => {
                return Err(acc.unsupported(types, Remedy::StructField { fields: types.describe_fields(acc.ty) }))
            }
            Kind::Array { .. } => return Err(acc.unsupported(types, Remedy::Array)),
            _ => return Err(acc.unsupported(types, Remedy::UnknownLayout)),
        }
    };
    let mut f = Fetch {
        kind: kind as u8,
        size,
        at_return: u8::from(acc.at_return),
        max_len: limits.max_string.min(MAX_STR) as u16,
        ..Fetch::default()
    };
    let i32_of =
        |offset: i64| i32::try_from(offset).map_err(|_| AttrErrorKind::TooFar { path: acc.path.clone(), offset });
    match &acc.root {
        Place::Stack(o) => {
            f.root = Root::Stack as u8;
            f.stack_offset = i32_of(*o)?;
        }
        Place::Regs(pieces) => {
            f.root = Root::Registers as u8;
            if pieces.iter().any(|p| matches!(p.reg, Reg::Float(_))) {
                return Err(acc.float(types));
            }
            let need = if acc.hops.is_empty() { words } else { 1 };
            for w in 0..need {
                match pieces.iter().find(|p| p.offset == 8 * w as u64) {
                    Some(RegPiece { reg: Reg::Int(r), .. }) => f.regs[w] = *r,
                    _ => return Err(acc.not_in_integer_registers()),
                }
            }
            f.nregs = need as u8;
        }
    }
    f.nhops = acc.hops.len() as u8;
    for (i, h) in acc.hops.iter().enumerate() {
        f.hops[i] = i32_of(*h)?;
    }
    Ok((f, decode))
}
