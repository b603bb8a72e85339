//! W3C `traceparent` (trace context level 1): the header line check that adopts an incoming
//! context and the line that injection writes into an outgoing request.
//!
//! Both run in the kernel (the header scan of `gotel_entry`, `gotel_header_write_return`) on fixed-size
//! buffers, so they are written for the BPF verifier: fixed-size arrays, loops with constant
//! bounds, no reachable panic, `#[inline(always)]`. They are pure, so their edge cases (length,
//! hex, version `ff`, all-zero ids, spaces after the colon) are unit-tested here on the host.

/// Header name with its colon, compared ASCII case-insensitively.
pub const TRACEPARENT_NAME: &[u8; 12] = b"traceparent:";
/// Length of the value `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_VALUE_LEN: usize = 55;
/// `traceparent: <value>\r\n`, as injection writes it.
pub const TRACEPARENT_LINE_LEN: usize = TRACEPARENT_NAME.len() + 1 + TRACEPARENT_VALUE_LEN + 2;
/// Spaces or tabs accepted between the colon and the value.
pub const MAX_VALUE_INDENT: usize = 8;
/// Bytes of a header line the kernel copies to check it: the longest plausible line fits.
pub const HEADER_LINE_BUF: usize = 80;

/// A trace context carried by `traceparent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span (the parent of the span that adopts this context).
    pub span_id: u64,
    /// W3C trace flags; bit 0 = sampled.
    pub trace_flags: u8,
}

impl TraceContext {
    #[inline(always)]
    pub fn sampled(&self) -> bool {
        self.trace_flags & 1 != 0
    }
}

/// What a raw request header line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderLine {
    /// Not a `traceparent` header (or not of a length one can have): ignored, not counted.
    Other,
    /// A `traceparent` header with a malformed value: counted (`Counter::TraceparentInvalid`).
    Invalid,
    Valid(TraceContext),
}

/// Whether a header line of `len` bytes can be a `traceparent` at all: lets the kernel skip
/// copying the lines shorter than the name. Any longer line may be one, and a `traceparent` of
/// any length other than the one valid length is counted as invalid (a short or cut value is a
/// broken client the user wants to hear about).
#[inline(always)]
pub fn may_be_traceparent(len: usize) -> bool {
    len >= TRACEPARENT_NAME.len()
}

#[inline(always)]
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// What a raw header line is, its context (when valid) written by [`read_header_line`] into
/// the caller's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Other,
    Invalid,
    Valid,
}

/// [`read_header_line`] with the context returned (host code and tests).
#[inline(always)]
pub fn parse_header_line(line: &[u8; HEADER_LINE_BUF], len: usize) -> HeaderLine {
    let mut ctx = TraceContext::default();
    match read_header_line(line, len, &mut ctx) {
        LineKind::Other => HeaderLine::Other,
        LineKind::Invalid => HeaderLine::Invalid,
        LineKind::Valid => HeaderLine::Valid(ctx),
    }
}

/// Checks a raw header line (`Name: value`, no line end) of `len` bytes, the first
/// [`HEADER_LINE_BUF`] of which are in `line`. The name is matched case-insensitively; the value
/// must be exactly `<version>-<trace id>-<span id>-<flags>` in lowercase hex, with a version
/// other than `ff` and non-zero ids (W3C rules; later versions' extra fields are refused).
///
/// The context goes to `out` byte by byte as it is decoded (`out` is garbage unless the answer
/// is `Valid`): in the kernel `out` is scratch memory, so nothing decoded waits in registers
/// that LLVM would spill to the 512-byte stack (a local context cost 368 bytes of frame, over
/// Linux 6.1's limit for the call chain).
// Indexed loops with constant bounds: the shape the BPF verifier is known to accept.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub fn read_header_line(line: &[u8; HEADER_LINE_BUF], len: usize, out: &mut TraceContext) -> LineKind {
    if !may_be_traceparent(len) {
        return LineKind::Other;
    }
    for i in 0..TRACEPARENT_NAME.len() {
        if line[i] | 0x20 != TRACEPARENT_NAME[i] | 0x20 {
            return LineKind::Other;
        }
    }
    let mut v = TRACEPARENT_NAME.len();
    for _ in 0..MAX_VALUE_INDENT {
        if line[v] == b' ' || line[v] == b'\t' {
            v += 1;
        }
    }
    if len < v || len - v != TRACEPARENT_VALUE_LEN || v > HEADER_LINE_BUF - TRACEPARENT_VALUE_LEN {
        return LineKind::Invalid;
    }
    if parse_value(&line[v..v + TRACEPARENT_VALUE_LEN], out) {
        LineKind::Valid
    } else {
        LineKind::Invalid
    }
}

/// The value `<version>-<trace id>-<span id>-<flags>`, into `out`. Returns at the first fault
/// rather than accumulating an "ok" flag: the BPF verifier then follows one path per byte
/// instead of every combination of good and bad ones.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn parse_value(val: &[u8], out: &mut TraceContext) -> bool {
    if val.len() < TRACEPARENT_VALUE_LEN || val[2] != b'-' || val[35] != b'-' || val[52] != b'-' {
        return false;
    }
    let byte_at = |i: usize| -> Option<u8> { Some(hex_digit(val[i])? << 4 | hex_digit(val[i + 1])?) };
    match byte_at(0) {
        Some(0xff) | None => return false,
        Some(_) => {}
    }
    let Some(flags) = byte_at(53) else { return false };
    out.trace_flags = flags;
    for i in 0..16 {
        let Some(b) = byte_at(3 + 2 * i) else { return false };
        out.trace_id[i] = b;
    }
    out.span_id = 0;
    for i in 0..8 {
        let Some(b) = byte_at(36 + 2 * i) else { return false };
        out.span_id = out.span_id << 8 | b as u64;
    }
    // The all-zero check reads the id back from `out` (volatile: else LLVM keeps the sixteen
    // bytes it stored, spilled to the stack, to OR them here).
    let id = unsafe { core::ptr::read_volatile(&out.trace_id) };
    id != [0u8; 16] && out.span_id != 0
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `b` as two lowercase hex digits at `out[at..at + 2]`.
#[inline(always)]
fn put_hex<const N: usize>(out: &mut [u8; N], at: usize, b: u8) {
    out[at] = HEX[(b >> 4) as usize];
    out[at + 1] = HEX[(b & 15) as usize];
}

/// Writes the value `00-<trace id>-<span id>-<flags>` at `out[at..at + TRACEPARENT_VALUE_LEN]`
/// (`at` is a constant at every call, so the bounds are known at compile time).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) fn put_value<const N: usize>(out: &mut [u8; N], at: usize, ctx: &TraceContext) {
    out[at] = b'0';
    out[at + 1] = b'0';
    out[at + 2] = b'-';
    for i in 0..16 {
        put_hex(out, at + 3 + 2 * i, ctx.trace_id[i]);
    }
    out[at + 35] = b'-';
    let span = ctx.span_id.to_be_bytes();
    for i in 0..8 {
        put_hex(out, at + 36 + 2 * i, span[i]);
    }
    out[at + 52] = b'-';
    put_hex(out, at + 53, ctx.trace_flags);
}

/// The header value `00-<32 hex>-<16 hex>-<2 hex>` (version 00).
#[inline(always)]
pub fn format_traceparent(out: &mut [u8; TRACEPARENT_VALUE_LEN], ctx: &TraceContext) {
    put_value(out, 0, ctx);
}

/// The whole header line `traceparent: <value>\r\n`, as written into an outgoing request.
#[inline(always)]
pub fn format_traceparent_line(out: &mut [u8; TRACEPARENT_LINE_LEN], ctx: &TraceContext) {
    out[..TRACEPARENT_NAME.len()].copy_from_slice(TRACEPARENT_NAME);
    out[TRACEPARENT_NAME.len()] = b' ';
    put_value(out, TRACEPARENT_NAME.len() + 1, ctx);
    out[TRACEPARENT_LINE_LEN - 2] = b'\r';
    out[TRACEPARENT_LINE_LEN - 1] = b'\n';
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String, vec::Vec};

    use super::*;

    const VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(line: &str) -> HeaderLine {
        let mut buf = [0u8; HEADER_LINE_BUF];
        let n = line.len().min(HEADER_LINE_BUF);
        buf[..n].copy_from_slice(&line.as_bytes()[..n]);
        parse_header_line(&buf, line.len())
    }

    fn valid(line: &str) -> TraceContext {
        match parse(line) {
            HeaderLine::Valid(c) => c,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn a_valid_header_gives_its_ids_and_flags() {
        let c = valid(&format!("traceparent: {VALUE}"));
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes());
        assert_eq!(c.span_id, 0x00f067aa0ba902b7);
        assert_eq!(c.trace_flags, 1);
        assert!(c.sampled());
        assert!(!valid(&format!("traceparent:{}", VALUE.replace("-01", "-00"))).sampled());
    }

    #[test]
    fn the_name_is_case_insensitive_and_spaces_before_the_value_are_skipped() {
        valid(&format!("TraceParent: {VALUE}"));
        valid(&format!("TRACEPARENT:{VALUE}"));
        valid(&format!("traceparent:\t \t{VALUE}"));
        valid(&format!("traceparent:        {VALUE}"));
    }

    #[test]
    fn other_headers_are_not_counted() {
        assert_eq!(parse(&format!("tracestate: {VALUE}xx")), HeaderLine::Other);
        assert_eq!(parse(&format!("traceparenx: {VALUE}")), HeaderLine::Other);
        assert_eq!(parse("tracepar"), HeaderLine::Other);
        assert_eq!(parse("Accept: */*"), HeaderLine::Other);
        assert_eq!(parse(""), HeaderLine::Other);
    }

    /// A `traceparent` of any wrong length is malformed, short ones included (they used to be
    /// skipped as "not of a length one can have", so a client sending `00-abc` went unseen).
    #[test]
    fn a_traceparent_of_any_other_length_is_invalid() {
        for line in [
            String::from("traceparent:"),
            "traceparent: ".into(),
            "traceparent: 00-short".into(),
            "TraceParent: 00-abc".into(),
            format!("traceparent: {}", &VALUE[..30]),
            format!("traceparent:         {VALUE}"),
            format!("traceparent: {VALUE}-{VALUE}"),
        ] {
            assert_eq!(parse(&line), HeaderLine::Invalid, "{line:?}");
        }
    }

    #[test]
    fn malformed_values_are_invalid() {
        let bad = |value: String| assert_eq!(parse(&format!("traceparent: {value}")), HeaderLine::Invalid, "{value}");
        bad(VALUE.replacen("00-", "ff-", 1));
        bad(VALUE.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)));
        bad(VALUE.replace("00f067aa0ba902b7", &"0".repeat(16)));
        bad(VALUE.replace("4bf9", "4BF9"));
        bad(VALUE.replace("4bf9", "4bg9"));
        bad(VALUE.replace("-01", "-0x"));
        bad(VALUE.replacen('-', "_", 1));
        bad(VALUE.replace("-00f0", "_00f0"));
        bad(VALUE.replace("-01", "_01"));
        // A value one byte short or long (a later version's extra field).
        bad(format!("{VALUE}-"));
        bad(VALUE[..TRACEPARENT_VALUE_LEN - 1].into());
        // Spaces inside the value are not skipped.
        assert_eq!(parse(&format!("traceparent: {VALUE} ")), HeaderLine::Invalid);
    }

    #[test]
    fn formatting_then_parsing_gives_the_same_context() {
        let ctx = TraceContext {
            trace_id: *b"\x01\x23\x45\x67\x89\xab\xcd\xef\0\0\0\0\0\0\0\x10",
            span_id: 0xfedcba9876543210,
            trace_flags: 1,
        };
        let mut value = [0u8; TRACEPARENT_VALUE_LEN];
        format_traceparent(&mut value, &ctx);
        assert_eq!(&value[..], b"00-0123456789abcdef0000000000000010-fedcba9876543210-01");
        let mut line = [0u8; TRACEPARENT_LINE_LEN];
        format_traceparent_line(&mut line, &ctx);
        let text: Vec<u8> = [&b"traceparent: "[..], &value[..], b"\r\n"].concat();
        assert_eq!(&line[..], &text[..]);
        assert_eq!(valid(core::str::from_utf8(&line[..TRACEPARENT_LINE_LEN - 2]).unwrap()), ctx);
        let unsampled = TraceContext { trace_flags: 0, ..ctx };
        format_traceparent(&mut value, &unsampled);
        assert!(value.ends_with(b"-00"));
    }
}
