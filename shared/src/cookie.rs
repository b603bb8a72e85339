//! The attach cookie: user space packs into each uprobe's 64-bit cookie which probe it is, which
//! target's slot it serves and what kind of hook it is, and the uprobe programs unpack it. One
//! module for the layout so both sides split the bits the same way.

/// The attach cookie of every gotel uprobe: which probe fired and where.
/// Bits 0..16: probe id (index into `PROBES`). Bits 16..32: the target's slot ([`cookie_slot`]).
/// Bits 32..48: [`COOKIE_*`] flags. RET probes: bits 48..64, the RET's offset in the function.
pub const COOKIE_PROBE_MASK: u64 = 0xffff;
/// Where the slot starts in the cookie.
pub const COOKIE_SLOT_SHIFT: u32 = 16;
/// Targets one set of kernel programs serves at once (node mode: every traced process shares
/// one loaded object, each with a slot that indexes the per-target config arrays and counters;
/// a single target is slot 0). The arrays are sized by user space: 1 outside node mode.
pub const MAX_SLOTS: u32 = 1024;
// A slot must fit the cookie's 16 bits.
const _: () = assert!(MAX_SLOTS <= 1 << 16);

/// The probe id of an attach cookie (an index into `PROBES`, unique across targets).
#[inline(always)]
pub const fn cookie_probe(cookie: u64) -> u32 {
    (cookie & COOKIE_PROBE_MASK) as u32
}

/// The target slot of an attach cookie.
#[inline(always)]
pub const fn cookie_slot(cookie: u64) -> u32 {
    ((cookie >> COOKIE_SLOT_SHIFT) & 0xffff) as u32
}

/// The attach cookie's low 32 bits for probe `probe` of the target in `slot`.
#[inline(always)]
pub const fn cookie_of(slot: u32, probe: u32) -> u64 {
    ((slot as u64) << COOKIE_SLOT_SHIFT) | (probe as u64 & COOKIE_PROBE_MASK)
}

pub const COOKIE_ENTRY: u64 = 1 << 32;
/// The entry probe sits at the very first instruction (no stack-check prologue found), so a
/// `runtime.morestack` re-entry is possible and the kernel de-duplicates it.
pub const COOKIE_AT_FUNC_START: u64 = 1 << 33;
pub const COOKIE_RETURN: u64 = 1 << 34;
/// With [`COOKIE_RETURN`]: a built-in helper whose captures are all read at return, so its entry
/// is not trapped; `gotel_return` pushes its frame and ends it at once (one trap per call).
pub const COOKIE_STARTS_AT_RETURN: u64 = 1 << 41;
/// `runtime.newproc1` entry / return: goroutine creation (ancestry and g reuse).
pub const COOKIE_NEWPROC_ENTRY: u64 = 1 << 35;
pub const COOKIE_NEWPROC_RETURN: u64 = 1 << 36;
// 1 << 37 is free: it marked the per-header-line hook the server span's own read replaced.
/// Injection hooks: entry of `net/http.(*Request).write`, entry and RETs of
/// `net/http.Header.writeSubset`.
pub const COOKIE_REQUEST_WRITE: u64 = 1 << 38;
pub const COOKIE_HEADER_WRITE_ENTRY: u64 = 1 << 39;
pub const COOKIE_HEADER_WRITE_RETURN: u64 = 1 << 40;
/// The entry of grpc-go's `(*http2Server).operateHeaders` (`gotel_grpc_headers`).
pub const COOKIE_GRPC_HEADERS: u64 = 1 << 44;

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot and the probe id share the cookie's low half without touching the flags or the
    /// RET offset, for every slot the maps can hold.
    #[test]
    fn cookies_carry_slot_and_probe() {
        for (slot, probe) in [(0, 0), (0, 4095), (1, 7), (MAX_SLOTS - 1, 0xffff)] {
            let cookie = cookie_of(slot, probe) | COOKIE_RETURN | COOKIE_STARTS_AT_RETURN | (0x1234 << 48);
            assert_eq!((cookie_slot(cookie), cookie_probe(cookie)), (slot, probe));
            assert_eq!(cookie >> 48, 0x1234);
            assert_ne!(cookie & COOKIE_RETURN, 0);
        }
    }
}
