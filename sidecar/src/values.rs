//! Turns the values the kernel captured (the data after an `EventHeader`) into span
//! attributes, following each probe's `AttrSlot`s.
//!
//! The data is a sequence of records: `ValueHeader` (24 bytes, native endian) followed by
//! `len` payload bytes, each record padded to 8 bytes (see `fetch_one` in the eBPF program).
//! Nothing here trusts the data: a truncated or garbled record ends decoding, counted in
//! [`DecodeStats::malformed`], and never panics.
//!
//! Decisions:
//! - a value the kernel could not read (`VALUE_UNREADABLE`, including a nil pointer on a
//!   field path, `VALUE_NIL`) yields no attribute; it is counted (`unreadable`, `nil_path`)
//!   so the caller can report it;
//! - pointers, chans, funcs and uintptrs are hex strings `0xc000012345` (maps are refused at
//!   plan time: `len(m)` is what can be read);
//! - unsigned integers above `i64::MAX` are decimal strings (OpenTelemetry has no u64);
//! - a nil interface or error is the string `<nil>` (as `fmt` prints it) when asked for
//!   explicitly; the automatic error-status slot emits nothing for nil;
//! - interfaces are their dynamic type name, `0x...` (the itab / type address) when it
//!   cannot be named (no type descriptor there; stripped binaries name theirs, see
//!   `binary::moduledata`);
//! - errors are their message when the dynamic type is `*errors.errorString`,
//!   `*fmt.wrapError` or `*fmt.wrapErrors` (whose first field is the message), go-redis's
//!   `proto.RedisError` (a string) or modernc SQLite's `*sqlite.Error`, else the
//!   dynamic type name; the status of an `error` result gets the same text;
//! - strings cut by the kernel at the length limit are cut back to a UTF-8 boundary; other
//!   invalid UTF-8 becomes U+FFFD.

use gotel_shared::{ValueHeader, VALUE_NIL, VALUE_UNREADABLE};
use opentelemetry::KeyValue;

use crate::attributes::{AttrSlot, Decode};

/// Names a dynamic type from its runtime address (an itab for non-empty interfaces, a type
/// descriptor for `any`): `*errors.errorString`. `None` when unknown.
pub trait TypeNames {
    fn type_name(&self, runtime_addr: u64) -> Option<String>;
}

/// Counts of what one call of [`decode`] met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Attributes emitted.
    pub attributes: u32,
    /// Values the kernel could not read (no attribute).
    pub unreadable: u32,
    /// Values behind a nil pointer on their field path (no attribute; not in `unreadable`).
    pub nil_path: u32,
    /// Records for a slot the plan does not have.
    pub unknown_slot: u32,
    /// The data ended inside a record.
    pub malformed: bool,
}

/// Error types whose first field is the message string (go-redis's `proto.RedisError` is a
/// string, boxed: its data is the message, `redis.Nil` included). Named with their package
/// path when the binary has DWARF, with its last element when not.
pub(crate) const MESSAGE_ERRORS: [&str; 7] = [
    "*errors.errorString",
    "*fmt.wrapError",
    "*fmt.wrapErrors",
    "github.com/redis/go-redis/v9/internal/proto.RedisError",
    "proto.RedisError",
    "*modernc.org/sqlite.Error",
    "*sqlite.Error",
];

const HEADER: usize = std::mem::size_of::<ValueHeader>();

/// Decodes `data` into `out`; an `error` result that is not nil sets `error_status` to its
/// message (or type name).
pub fn decode(
    slots: &[AttrSlot],
    data: &[u8],
    names: &dyn TypeNames,
    out: &mut Vec<KeyValue>,
    error_status: &mut Option<String>,
) -> DecodeStats {
    let mut stats = DecodeStats::default();
    let mut off = 0usize;
    while off < data.len() {
        let Some(h) = data.get(off..off + HEADER) else {
            stats.malformed = true;
            break;
        };
        let u16_at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_ne_bytes(b)
        };
        let (slot, flags, len, w0, w1) = (u16_at(0), u16_at(2), u32_at(4) as usize, u64_at(8), u64_at(16));
        let start = off + HEADER;
        let Some(payload) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
            stats.malformed = true;
            break;
        };
        // Records are padded to 8 bytes; the last one may end without padding.
        off = (start + len + 7) & !7;
        let Some(s) = slots.get(slot as usize) else {
            stats.unknown_slot += 1;
            continue;
        };
        if flags & VALUE_NIL != 0 {
            stats.nil_path += 1;
            continue;
        }
        if flags & VALUE_UNREADABLE != 0 {
            stats.unreadable += 1;
            continue;
        }
        if let Some(kv) = value(s, w0, w1, payload, names, error_status) {
            out.push(kv);
            stats.attributes += 1;
        }
    }
    stats
}

fn value(
    s: &AttrSlot,
    w0: u64,
    w1: u64,
    payload: &[u8],
    names: &dyn TypeNames,
    error_status: &mut Option<String>,
) -> Option<KeyValue> {
    let key = s.key.clone();
    Some(match s.decode {
        Decode::Int { size } => KeyValue::new(key, sign_extend(w0, size)),
        Decode::Uint { size } => {
            let v = truncate(w0, size);
            match i64::try_from(v) {
                Ok(i) => KeyValue::new(key, i),
                Err(_) => KeyValue::new(key, v.to_string()),
            }
        }
        Decode::Bool => KeyValue::new(key, w0 & 0xff != 0),
        Decode::Uintptr | Decode::Pointer => KeyValue::new(key, format!("{w0:#x}")),
        Decode::String | Decode::Bytes => KeyValue::new(key, text(payload, payload.len() as u64 != w1)),
        Decode::Len => KeyValue::new(key, w1 as i64),
        Decode::MapLen => KeyValue::new(key, w0 as i64),
        Decode::Interface => KeyValue::new(key, if w0 == 0 { "<nil>".to_string() } else { type_name(names, w0) }),
        Decode::Hex => KeyValue::new(key, payload.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Decode::TypeAndText => {
            let ty = if w0 == 0 { "<nil>".to_string() } else { type_name(names, w0) };
            KeyValue::new(key, format!("{ty}\0{}", text(payload, true)))
        }
        Decode::Error | Decode::ErrorType => {
            if w0 == 0 {
                return (s.decode == Decode::Error).then(|| KeyValue::new(key, "<nil>"));
            }
            let ty = type_name(names, w0);
            let message = if MESSAGE_ERRORS.contains(&ty.as_str()) && !payload.is_empty() {
                text(payload, true)
            } else {
                ty.clone()
            };
            if s.sets_error_status {
                *error_status = Some(message.clone());
            }
            if s.decode == Decode::ErrorType {
                KeyValue::new(key, ty)
            } else {
                KeyValue::new(key, message)
            }
        }
    })
}

fn type_name(names: &dyn TypeNames, addr: u64) -> String {
    names.type_name(addr).unwrap_or_else(|| format!("{addr:#x}"))
}

fn truncate(w: u64, size: u8) -> u64 {
    match size {
        1 => w & 0xff,
        2 => w & 0xffff,
        4 => w & 0xffff_ffff,
        _ => w,
    }
}

fn sign_extend(w: u64, size: u8) -> i64 {
    match size {
        1 => w as u8 as i8 as i64,
        2 => w as u16 as i16 as i64,
        4 => w as u32 as i32 as i64,
        _ => w as i64,
    }
}

/// Payload as text. `maybe_cut`: the kernel may have cut it at the length limit, so an
/// incomplete UTF-8 sequence at the end is dropped rather than shown as U+FFFD.
fn text(payload: &[u8], maybe_cut: bool) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => s.to_string(),
        Err(e) if maybe_cut && e.error_len().is_none() => {
            String::from_utf8_lossy(&payload[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotel_shared::VALUE_TRUNCATED;
    use opentelemetry::Value;

    struct Names;
    impl TypeNames for Names {
        fn type_name(&self, a: u64) -> Option<String> {
            match a {
                0x1000 => Some("*errors.errorString".into()),
                0x2000 => Some("*fmt.wrapError".into()),
                0x3000 => Some("*main.CodeError".into()),
                0x4000 => Some("main.Counter".into()),
                _ => None,
            }
        }
    }

    fn rec(slot: u16, flags: u16, w0: u64, w1: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(slot.to_ne_bytes());
        v.extend(flags.to_ne_bytes());
        v.extend((payload.len() as u32).to_ne_bytes());
        v.extend(w0.to_ne_bytes());
        v.extend(w1.to_ne_bytes());
        v.extend(payload);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    fn slot(key: &str, decode: Decode) -> AttrSlot {
        AttrSlot { key: crate::attributes::shared_key(key), decode, sets_error_status: false }
    }

    /// `decode` into fresh output: the stats, the attributes and the error status.
    fn decoded(slots: &[AttrSlot], data: &[u8]) -> (DecodeStats, Vec<KeyValue>, Option<String>) {
        let (mut out, mut status) = (Vec::new(), None);
        let st = decode(slots, data, &Names, &mut out, &mut status);
        (st, out, status)
    }

    fn get<'a>(out: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        out.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
    }

    #[test]
    fn decodes_every_kind() {
        let mut err = slot("err", Decode::Error);
        err.sets_error_status = true;
        let slots = vec![
            slot("i8", Decode::Int { size: 1 }),
            slot("i32", Decode::Int { size: 4 }),
            slot("u16", Decode::Uint { size: 2 }),
            slot("u64", Decode::Uint { size: 8 }),
            slot("b", Decode::Bool),
            slot("p", Decode::Pointer),
            slot("s", Decode::String),
            slot("bytes", Decode::Bytes),
            slot("n", Decode::Len),
            slot("m", Decode::MapLen),
            slot("iface", Decode::Interface),
            err,
            slot("uptr", Decode::Uintptr),
        ];
        let mut data = Vec::new();
        data.extend(rec(0, 0, 0xffff_ffff_ffff_fffe, 0, b""));
        data.extend(rec(1, 0, 0xdead_beef_ffff_fffb, 0, b""));
        data.extend(rec(2, 0, 0x1234_ea60, 0, b""));
        data.extend(rec(3, 0, 1 << 63, 0, b""));
        data.extend(rec(4, 0, 0x100, 0, b"")); // upper garbage, low byte 0 = false
        data.extend(rec(5, 0, 0xc000012345, 0, b""));
        data.extend(rec(6, 0, 0x4000, 5, b"hello"));
        data.extend(rec(7, 0, 0x4000, 5, b"world"));
        data.extend(rec(8, 0, 0x4000, 3, b""));
        data.extend(rec(9, 0, 2, 0, b""));
        data.extend(rec(10, 0, 0x4000, 0xc0, b"junk"));
        data.extend(rec(11, 0, 0x2000, 0xc0, b"wrapped: over the limit"));
        data.extend(rec(12, 0, 0xdead, 0, b""));
        let (st, out, status) = decoded(&slots, &data);
        assert_eq!(st, DecodeStats { attributes: 13, ..Default::default() });
        assert_eq!(get(&out, "i8"), Some(&Value::I64(-2)));
        assert_eq!(get(&out, "i32"), Some(&Value::I64(-5)));
        assert_eq!(get(&out, "u16"), Some(&Value::I64(60000)));
        assert_eq!(get(&out, "u64"), Some(&Value::from("9223372036854775808")));
        assert_eq!(get(&out, "b"), Some(&Value::Bool(false)));
        assert_eq!(get(&out, "p"), Some(&Value::from("0xc000012345")));
        assert_eq!(get(&out, "s"), Some(&Value::from("hello")));
        assert_eq!(get(&out, "bytes"), Some(&Value::from("world")));
        assert_eq!(get(&out, "n"), Some(&Value::I64(3)));
        assert_eq!(get(&out, "m"), Some(&Value::I64(2)));
        assert_eq!(get(&out, "iface"), Some(&Value::from("main.Counter")));
        assert_eq!(get(&out, "err"), Some(&Value::from("wrapped: over the limit")));
        assert_eq!(get(&out, "uptr"), Some(&Value::from("0xdead")));
        assert_eq!(status.as_deref(), Some("wrapped: over the limit"));
    }

    #[test]
    fn errors_nil_unknown_and_auto_status() {
        let mut auto = slot("error.type", Decode::ErrorType);
        auto.sets_error_status = true;
        let slots = vec![slot("e", Decode::Error), auto, slot("i", Decode::Interface)];
        // nil error asked for explicitly: "<nil>"; nil auto slot: nothing, no status.
        let data = [rec(0, 0, 0, 0, b""), rec(1, 0, 0, 0, b""), rec(2, 0, 0, 0, b"")].concat();
        let (_, out, status) = decoded(&slots, &data);
        assert_eq!(get(&out, "e"), Some(&Value::from("<nil>")));
        assert_eq!(get(&out, "i"), Some(&Value::from("<nil>")));
        assert!(get(&out, "error.type").is_none());
        assert_eq!(status, None);
        // Custom error type: its name is the message; the auto slot reports the type.
        let data = [rec(0, 0, 0x3000, 0xc0, b"\x01\x02"), rec(1, 0, 0x1000, 0xc0, b"plain failure")].concat();
        let (_, out, status) = decoded(&slots, &data);
        assert_eq!(get(&out, "e"), Some(&Value::from("*main.CodeError")));
        assert_eq!(get(&out, "error.type"), Some(&Value::from("*errors.errorString")));
        assert_eq!(status.as_deref(), Some("plain failure"));
        // Stripped binary: the itab address.
        let (_, out, _) = decoded(&slots, &rec(2, 0, 0x7777, 0xc0, b""));
        assert_eq!(get(&out, "i"), Some(&Value::from("0x7777")));
    }

    #[test]
    fn unreadable_nil_and_truncated() {
        let slots = vec![slot("s", Decode::String), slot("n", Decode::Int { size: 8 })];
        let cut = "héllo".as_bytes()[..2].to_vec(); // "h" + half of "é"
        let data = [
            rec(0, VALUE_UNREADABLE, 0, 0, b""),
            rec(1, VALUE_NIL | VALUE_UNREADABLE, 0, 0, b""),
            rec(0, VALUE_TRUNCATED, 0x4000, 6, &cut),
            rec(7, 0, 1, 1, b""),
        ]
        .concat();
        let (st, out, _) = decoded(&slots, &data);
        assert_eq!(st, DecodeStats { attributes: 1, unreadable: 1, nil_path: 1, unknown_slot: 1, malformed: false });
        assert_eq!(get(&out, "s"), Some(&Value::from("h")));
    }

    #[test]
    fn never_panics_on_garbage() {
        let slots = vec![slot("s", Decode::String), slot("e", Decode::Error), slot("i", Decode::Int { size: 3 })];
        let good = [rec(0, 0, 1, 3, b"abc"), rec(1, 0, 0x1000, 1, b"\xff"), rec(2, 0, 7, 0, b"")].concat();
        for cut in 0..good.len() {
            let (st, _, _) = decoded(&slots, &good[..cut]);
            assert!(cut % 8 != 0 || cut == 0 || !st.malformed || cut < good.len());
        }
        // Huge length field.
        let mut bad = rec(0, 0, 0, 0, b"");
        bad[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decoded(&slots, &bad).0.malformed);
        // Pseudo-random bytes.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 7) as u8 // small values: slots and lengths often valid
                })
                .collect();
            decoded(&slots, &data);
        }
    }
}
