//! HTTP/2 and HPACK rules of the gRPC socket path (`sidecar-ebpf`'s
//! `propagation/inject_socket/h2.rs` and `inject_socket.rs`), pure so they are tested here on
//! the host: which frame may get `traceparent`, and the exact bytes appended to its header block.
use crate::traceparent::{put_value, TraceContext, TRACEPARENT_VALUE_LEN};

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE's initial value: grpc-go servers never raise it, so a frame is never
/// made larger than this.
pub const MAX_FRAME: u32 = 16384;
/// The appended field: literal without indexing, new name (0x00), name length 11, `traceparent`,
/// value length 55 without Huffman (0x37), the value. It neither reads nor changes either side's
/// dynamic table (RFC 7541 6.2.2).
pub const HPACK_FIELD_LEN: usize = 1 + 1 + 11 + 1 + TRACEPARENT_VALUE_LEN;
pub const FRAME_HEADERS: u8 = 1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
/// Frame types of RFC 9113 (0 DATA .. 9 CONTINUATION): grpc-go sends no other, so another means
/// the walk lost its place.
pub const MAX_FRAME_TYPE: u8 = 9;

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHeader {
    /// The header, or None when it cannot be one grpc-go sent (unknown type, longer than
    /// `MAX_FRAME`).
    #[inline(always)]
    pub fn parse(h: &[u8; 9]) -> Option<FrameHeader> {
        let len = (h[0] as u32) << 16 | (h[1] as u32) << 8 | h[2] as u32;
        if h[3] > MAX_FRAME_TYPE || len > MAX_FRAME {
            return None;
        }
        Some(FrameHeader {
            len,
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]),
        })
    }

    /// A HEADERS frame whose whole header block is its payload's end: END_HEADERS (no
    /// CONTINUATION follows) and not PADDED (no padding after the block).
    #[inline(always)]
    pub fn ends_a_header_block(&self) -> bool {
        self.kind == FRAME_HEADERS && self.flags & FLAG_END_HEADERS != 0 && self.flags & FLAG_PADDED == 0
    }

    /// Whether the field still fits in the frame.
    #[inline(always)]
    pub fn has_room(&self) -> bool {
        self.len + HPACK_FIELD_LEN as u32 <= MAX_FRAME
    }
}

/// The frame length field (24 bits, big-endian) of a payload of `len` bytes.
#[inline(always)]
pub fn length_bytes(len: u32) -> [u8; 3] {
    [(len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// The HPACK field appended to a header block (see [`HPACK_FIELD_LEN`]).
#[inline(always)]
pub fn format_hpack_traceparent(out: &mut [u8; HPACK_FIELD_LEN], ctx: &TraceContext) {
    out[0] = 0x00;
    out[1] = 11;
    out[2..13].copy_from_slice(b"traceparent");
    out[13] = TRACEPARENT_VALUE_LEN as u8;
    put_value(out, 14, ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_a_literal_without_indexing_with_a_new_name() {
        let ctx = TraceContext { trace_id: [0xab; 16], span_id: 0x0102030405060708, trace_flags: 1 };
        let mut f = [0u8; HPACK_FIELD_LEN];
        format_hpack_traceparent(&mut f, &ctx);
        assert_eq!(HPACK_FIELD_LEN, 69);
        // 0000 0000: literal without indexing, name not indexed; then H=0 lengths.
        assert_eq!(&f[..14], b"\x00\x0btraceparent\x37");
        assert_eq!(&f[14..], b"00-abababababababababababababababab-0102030405060708-01");
    }

    #[test]
    fn only_a_complete_unpadded_headers_frame_with_room_is_injectable() {
        let h = |len: u32, kind: u8, flags: u8| {
            let l = length_bytes(len);
            FrameHeader::parse(&[l[0], l[1], l[2], kind, flags, 0x80, 0, 0, 3])
        };
        let f = h(100, 1, 0x5).unwrap();
        assert_eq!(f, FrameHeader { len: 100, kind: 1, flags: 5, stream_id: 3 }, "the R bit is ignored");
        assert!(f.ends_a_header_block() && f.has_room());
        assert!(!h(100, 1, 0x1).unwrap().ends_a_header_block(), "CONTINUATION follows");
        assert!(!h(100, 1, 0xc).unwrap().ends_a_header_block(), "PADDED");
        assert!(!h(100, 0, 0x4).unwrap().ends_a_header_block(), "DATA");
        assert!(!h(MAX_FRAME - 68, 1, 0x4).unwrap().has_room());
        assert!(h(MAX_FRAME - 69, 1, 0x4).unwrap().has_room());
        assert_eq!(h(MAX_FRAME + 1, 0, 0), None);
        assert_eq!(h(10, 10, 0), None, "unknown type");
    }
}
