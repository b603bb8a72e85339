//! Records from the kernel: parsing the ring-buffer bytes and converting kernel timestamps.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gotel_shared::{EventHeader, EventKind};

/// One ring-buffer record: the header and the captured-value bytes that follow it.
pub struct Record<'a> {
    pub kind: EventKind,
    pub header: EventHeader,
    pub data: &'a [u8],
}

const HEADER: usize = std::mem::size_of::<EventHeader>();

/// Parses a record; `None` for anything malformed (counted by the caller).
pub fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    if bytes.len() < HEADER {
        return None;
    }
    // SAFETY: EventHeader is plain old data; read_unaligned copes with any alignment.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match header.kind {
        k if k == EventKind::SpanEnd as u32 => EventKind::SpanEnd,
        k if k == EventKind::EntryValues as u32 => EventKind::EntryValues,
        k if k == EventKind::Abandoned as u32 => EventKind::Abandoned,
        _ => return None,
    };
    let data = bytes.get(HEADER..HEADER + header.data_len as usize)?;
    Some(Record { kind, header, data })
}

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    /// Samples both clocks a few times and keeps the tightest bracket, so the offset is
    /// accurate to well under a microsecond.
    pub fn calibrate() -> Clock {
        let mut best = (i128::MAX, 0i128);
        for _ in 0..5 {
            let m1 = now_ns(libc::CLOCK_MONOTONIC);
            let r = now_ns(libc::CLOCK_REALTIME);
            let m2 = now_ns(libc::CLOCK_MONOTONIC);
            if m2 - m1 < best.0 {
                best = (m2 - m1, r - (m1 + m2) / 2);
            }
        }
        Clock { offset_ns: best.1 }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (ktime_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// The current monotonic time, in the kernel's unit.
    pub fn monotonic_now() -> u64 {
        now_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(parse(&[0u8; 10]).is_none());
        let mut h = EventHeader { kind: 99, ..Default::default() };
        let bytes = unsafe { std::slice::from_raw_parts(&h as *const _ as *const u8, HEADER) }.to_vec();
        assert!(parse(&bytes).is_none());
        h.kind = EventKind::SpanEnd as u32;
        h.data_len = 8; // claims more bytes than present
        let bytes = unsafe { std::slice::from_raw_parts(&h as *const _ as *const u8, HEADER) }.to_vec();
        assert!(parse(&bytes).is_none());
    }

    #[test]
    fn clock_maps_now_to_now() {
        let c = Clock::calibrate();
        let wall = c.wall(Clock::monotonic_now());
        let diff = SystemTime::now().duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
