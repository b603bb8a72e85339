//! HTTP/2 and HPACK rules of the gRPC socket path (`sidecar-ebpf`'s
//! `propagation/inject_socket/h2.rs` and `inject_socket.rs`), pure so they are tested here on
//! the host: which frame may get `traceparent`, the exact bytes appended to its header block,
//! and how a connection's frames are followed from one message to the next.
//!
//! Following a connection (the value `H2_CONNS` keeps per connection, see [`plan`] and
//! [`settle`]): a connection gotel saw established is [`CONN_FRESH`] until its first message,
//! which is either the client preface (then its frames are followed from byte 24) or not (then
//! it is not h2c, [`CONN_NOT_H2`], and never walked). A connection gotel did not see established
//! (open before gotel attached, enrolled from user space) or whose walk lost its place has no
//! value: its preface is gone, so it is resynchronised on a frame boundary instead. A message
//! whose bytes tile exactly into well-formed frame headers ([`FrameHeader::parse_strict`]: the
//! frames a client may send, with the RFC's length, flag and stream rules) is taken as starting
//! on a boundary and walked as usual; until one does, messages pass unchanged, counted
//! ([`Event::Unaligned`]). Why exact tiling is enough: a message that starts inside a frame's
//! payload would have to hold, from its first byte, a chain of valid headers whose lengths land
//! exactly on its end; grpc-go flushes at frame ends except when its write buffer fills, so the
//! next whole-frame message comes soon. Appending a literal field without indexing is safe
//! whatever the connection's dynamic table holds, so nothing of the connection's past is needed.
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
/// Frames followed in one message; past this the connection's place counts as lost.
pub const MAX_WALK: u32 = 128;

pub const FRAME_DATA: u8 = 0;
pub const FRAME_PRIORITY: u8 = 2;
pub const FRAME_RST_STREAM: u8 = 3;
pub const FRAME_SETTINGS: u8 = 4;
pub const FRAME_PUSH_PROMISE: u8 = 5;
pub const FRAME_PING: u8 = 6;
pub const FRAME_GOAWAY: u8 = 7;
pub const FRAME_WINDOW_UPDATE: u8 = 8;
pub const FRAME_CONTINUATION: u8 = 9;

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

    /// The header, or None unless it is one a client may send by RFC 9113 (section 4.1 and each
    /// type's section 6.x): the reserved bit clear, only the type's defined flags, the type's
    /// fixed or minimum length, stream 0 exactly for the connection's frames and a client
    /// stream (odd) for the others; never PUSH_PROMISE (a client does not push). Used to find a
    /// frame boundary without the preface, where a loose parse would accept payload bytes.
    #[inline(always)]
    pub fn parse_strict(h: &[u8; 9]) -> Option<FrameHeader> {
        let f = FrameHeader::parse(h)?;
        if h[5] & 0x80 != 0 {
            return None;
        }
        let (flags, len, sid) = (f.flags, f.len, f.stream_id);
        let client_stream = sid & 1 == 1;
        let ok = match f.kind {
            FRAME_DATA => flags & !0x09 == 0 && client_stream,
            FRAME_HEADERS => flags & !0x2d == 0 && client_stream,
            FRAME_PRIORITY => flags == 0 && len == 5 && client_stream,
            FRAME_RST_STREAM => flags == 0 && len == 4 && client_stream,
            FRAME_SETTINGS => flags & !0x01 == 0 && sid == 0 && len % 6 == 0 && (flags == 0 || len == 0),
            FRAME_PING => flags & !0x01 == 0 && sid == 0 && len == 8,
            FRAME_GOAWAY => flags == 0 && sid == 0 && len >= 8,
            FRAME_WINDOW_UPDATE => flags == 0 && len == 4 && (sid == 0 || client_stream),
            FRAME_CONTINUATION => flags & !0x04 == 0 && client_stream,
            _ => false,
        };
        if ok {
            Some(f)
        } else {
            None
        }
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

/// The next step of a message's frame walk at byte `pos` of `size`: `h` is the 9 bytes there
/// when they are all inside the message. `strict`: while resynchronising
/// ([`FrameHeader::parse_strict`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The walk reached the message's end: the first `carry` bytes of the next message still
    /// belong to this one's last frame.
    End { carry: u32 },
    /// A frame header at `pos`; the next one is at `pos + 9 + len`.
    Frame(FrameHeader),
    /// The place is lost: a frame header split between two messages (its length is not known
    /// here), or bytes that are no frame header.
    Lost,
}

#[inline(always)]
pub fn next_frame(pos: u32, size: u32, h: Option<&[u8; 9]>, strict: bool) -> Next {
    if pos >= size {
        return Next::End { carry: pos - size };
    }
    let Some(h) = h else { return Next::Lost };
    let f = if strict { FrameHeader::parse_strict(h) } else { FrameHeader::parse(h) };
    match f {
        Some(f) => Next::Frame(f),
        None => Next::Lost,
    }
}

/// `H2_CONNS` value of a connection gotel saw established (SOCK_OPS), before its first message.
pub const CONN_FRESH: u32 = u32::MAX - 1;
/// `H2_CONNS` value of a connection whose first message was not the client preface: not h2c.
pub const CONN_NOT_H2: u32 = u32::MAX;

/// What to do with a message of a connection in state `state` (`H2_CONNS`' value, None when it
/// has none); `preface`: the message starts with the client preface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not h2c: leave the message to the HTTP/1 path.
    NotH2,
    /// Not h2c, found now: store [`CONN_NOT_H2`].
    MarkNotH2,
    /// Walk the message's frames, the first at byte `start`.
    Walk { start: u32 },
    /// Walk strictly from byte 0; use the walk only if the frames tile the message exactly.
    Resync,
}

#[inline(always)]
pub fn plan(state: Option<u32>, preface: bool) -> Plan {
    match state {
        Some(CONN_NOT_H2) => Plan::NotH2,
        Some(CONN_FRESH) if preface => Plan::Walk { start: PREFACE.len() as u32 },
        Some(CONN_FRESH) => Plan::MarkNotH2,
        Some(carry) => Plan::Walk { start: carry },
        None if preface => Plan::Walk { start: PREFACE.len() as u32 },
        None => Plan::Resync,
    }
}

/// What happened to a walked message, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Followed as before (or the preface entered).
    Followed,
    /// A followed connection lost its place (`Counter::GrpcSocketDesync`).
    Desync,
    /// Not followed and not frame-aligned: passed unchanged (`Counter::GrpcSocketUnaligned`).
    Unaligned,
    /// Not followed, and its frames tile it exactly: followed from now on
    /// (`Counter::GrpcSocketResync`).
    Resync,
    /// Not followed, and it starts like an HTTP/1 request: not h2c, not tried again.
    NotH2,
}

/// The outcome of a walked message: the connection's next state (None: no value, resync
/// mode), whether the injection points found may be used, and what to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub state: Option<u32>,
    pub inject: bool,
    pub event: Event,
}

/// `walked`: the walk's [`Next::End`] carry, None if it lost its place. A resynchronising walk
/// counts only when it ends exactly at the message's end (carry 0); one that does not, on a
/// message that starts like an HTTP/1 request line (`http1`, [`starts_like_request_line`]),
/// shows an HTTP/1 connection open before gotel attached: not h2c, no longer tried.
#[inline(always)]
pub fn settle(resync: bool, walked: Option<u32>, http1: bool) -> Settled {
    match (resync, walked) {
        (false, Some(carry)) => Settled { state: Some(carry), inject: true, event: Event::Followed },
        (false, None) => Settled { state: None, inject: false, event: Event::Desync },
        (true, Some(0)) => Settled { state: Some(0), inject: true, event: Event::Resync },
        (true, _) if http1 => Settled { state: Some(CONN_NOT_H2), inject: false, event: Event::NotH2 },
        (true, _) => Settled { state: None, inject: false, event: Event::Unaligned },
    }
}

/// `METHOD SP` (1 to 7 upper-case letters, `-` or `_`, then a space) at the start of `b`: the
/// start of an HTTP/1 request line. No HTTP/2 frame starts so (its length would pass
/// [`MAX_FRAME`]).
#[inline(always)]
pub fn starts_like_request_line(b: &[u8; 8]) -> bool {
    let mut i = 0;
    while i < 8 && (b[i].is_ascii_uppercase() || b[i] == b'-' || b[i] == b'_') {
        i += 1;
    }
    i > 0 && i < 8 && b[i] == b' '
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
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = length_bytes(payload.len() as u32).to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&sid.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn headers(sid: u32) -> Vec<u8> {
        // :method POST, :scheme http, :path /x (a literal), as grpc-go's encoder starts.
        frame(FRAME_HEADERS, FLAG_END_HEADERS, sid, b"\x83\x86\x44\x02/x")
    }

    fn data(sid: u32, len: usize) -> Vec<u8> {
        let mut grpc = vec![0u8, 0, 0, 0, (len - 5) as u8];
        grpc.resize(len, 0x41);
        frame(FRAME_DATA, 0, sid, &grpc)
    }

    fn parse9(b: &[u8]) -> Option<FrameHeader> {
        FrameHeader::parse_strict(b.try_into().unwrap())
    }

    /// The kernel's walk of one message (`inject_socket/h2.rs`'s `walk_one` loop): the carry
    /// (None: lost) and the frames with their offsets.
    fn walk(msg: &[u8], start: u32, strict: bool) -> (Option<u32>, Vec<(u32, FrameHeader)>) {
        let (mut pos, mut frames) = (start, Vec::new());
        for _ in 0..MAX_WALK {
            let h = msg.get(pos as usize..pos as usize + 9).map(|b| b.try_into().unwrap());
            match next_frame(pos, msg.len() as u32, h, strict) {
                Next::End { carry } => return (Some(carry), frames),
                Next::Frame(f) => {
                    frames.push((pos, f));
                    pos += 9 + f.len;
                }
                Next::Lost => return (None, frames),
            }
        }
        (None, frames)
    }

    /// One message through the kernel's steps (`inject_socket.rs`'s `on_h2_msg`): the
    /// connection's state is updated; returns the offsets of the HEADERS frames that would get
    /// `traceparent` (those of streams in `pending`) and the event (None: not walked).
    fn feed(state: &mut Option<u32>, msg: &[u8], pending: &[u32]) -> (Vec<u32>, Option<Event>) {
        let preface = msg.starts_with(PREFACE);
        let (resync, start) = match plan(*state, preface) {
            Plan::NotH2 => return (vec![], None),
            Plan::MarkNotH2 => {
                *state = Some(CONN_NOT_H2);
                return (vec![], None);
            }
            Plan::Walk { start } => (false, start),
            Plan::Resync => (true, 0),
        };
        let (walked, frames) = walk(msg, start, resync);
        let http1 = msg.len() >= 8 && starts_like_request_line(msg[..8].try_into().unwrap());
        let settled = settle(resync, walked, http1);
        *state = settled.state;
        let points = if settled.inject {
            frames
                .iter()
                .filter(|(at, f)| {
                    f.ends_a_header_block() && at + 9 + f.len <= msg.len() as u32 && pending.contains(&f.stream_id)
                })
                .map(|(at, _)| *at)
                .collect()
        } else {
            vec![]
        };
        (points, Some(settled.event))
    }

    #[test]
    fn strict_headers_are_the_frames_a_client_may_send() {
        let h = |kind: u8, flags: u8, sid: u32, len: u32| {
            let mut b = frame(kind, flags, sid, &[]);
            b[..3].copy_from_slice(&length_bytes(len));
            parse9(&b)
        };
        assert!(h(FRAME_DATA, 0x1, 1, 100).is_some());
        assert!(h(FRAME_DATA, 0x4, 1, 100).is_none(), "END_HEADERS is no DATA flag");
        assert!(h(FRAME_DATA, 0, 2, 100).is_none(), "a server's stream");
        assert!(h(FRAME_DATA, 0, 0, 100).is_none(), "DATA on stream 0");
        assert!(h(FRAME_HEADERS, 0x25, 3, 100).is_some());
        assert!(h(FRAME_HEADERS, 0x2, 3, 100).is_none());
        assert!(h(FRAME_PRIORITY, 0, 3, 5).is_some() && h(FRAME_PRIORITY, 0, 3, 6).is_none());
        assert!(h(FRAME_RST_STREAM, 0, 3, 4).is_some() && h(FRAME_RST_STREAM, 0, 0, 4).is_none());
        assert!(h(FRAME_SETTINGS, 0, 0, 12).is_some() && h(FRAME_SETTINGS, 1, 0, 0).is_some());
        assert!(h(FRAME_SETTINGS, 1, 0, 6).is_none(), "an ACK has no payload");
        assert!(h(FRAME_SETTINGS, 0, 0, 7).is_none() && h(FRAME_SETTINGS, 0, 1, 6).is_none());
        assert!(h(FRAME_PUSH_PROMISE, 0x4, 1, 10).is_none(), "a client never pushes");
        assert!(h(FRAME_PING, 1, 0, 8).is_some() && h(FRAME_PING, 0, 0, 7).is_none());
        assert!(h(FRAME_GOAWAY, 0, 0, 8).is_some() && h(FRAME_GOAWAY, 0, 0, 7).is_none());
        assert!(h(FRAME_WINDOW_UPDATE, 0, 0, 4).is_some() && h(FRAME_WINDOW_UPDATE, 0, 5, 4).is_some());
        assert!(h(FRAME_WINDOW_UPDATE, 0, 4, 4).is_none() && h(FRAME_WINDOW_UPDATE, 1, 0, 4).is_none());
        assert!(h(FRAME_CONTINUATION, 0x4, 1, 10).is_some() && h(FRAME_CONTINUATION, 0x1, 1, 10).is_none());
        assert!(h(10, 0, 0, 0).is_none() && h(FRAME_DATA, 0, 1, MAX_FRAME + 1).is_none());
        let mut reserved = frame(FRAME_DATA, 0, 1, &[]);
        reserved[5] |= 0x80;
        assert!(parse9(&reserved).is_none(), "the reserved bit is set");
        assert!(FrameHeader::parse(reserved[..9].try_into().unwrap()).is_some(), "the loose parse ignores it");
    }

    #[test]
    fn a_fresh_connection_is_followed_from_its_preface_or_never() {
        let mut st = Some(CONN_FRESH);
        let mut first = PREFACE.to_vec();
        first.extend(frame(FRAME_SETTINGS, 0, 0, &[0; 6]));
        first.extend(frame(FRAME_WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        assert_eq!(feed(&mut st, &first, &[]), (vec![], Some(Event::Followed)));
        assert_eq!(st, Some(0));
        let mut call = headers(1);
        call.extend(data(1, 20));
        assert_eq!(feed(&mut st, &call, &[1]), (vec![0], Some(Event::Followed)));

        // Not the preface: an HTTP/1 connection (or anything else), never walked, even when a
        // later message happens to tile into frames.
        let mut st = Some(CONN_FRESH);
        assert_eq!(feed(&mut st, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[]), (vec![], None));
        assert_eq!(st, Some(CONN_NOT_H2));
        assert_eq!(feed(&mut st, &headers(1), &[1]), (vec![], None));
    }

    /// A connection open before gotel attached, caught inside a large DATA frame: the messages
    /// that start inside it pass unchanged and are counted; the first that tiles into frames
    /// resynchronises, and its HEADERS frame is injected.
    #[test]
    fn a_connection_without_its_preface_resyncs_on_the_first_aligned_message() {
        let mut big = data(1, MAX_FRAME as usize);
        big.extend(headers(3));
        big.extend(data(3, 30));
        let mut st = None;
        // The connection's bytes from inside the big frame: two unaligned messages.
        assert_eq!(feed(&mut st, &big[5000..12000], &[3]), (vec![], Some(Event::Unaligned)));
        assert_eq!(feed(&mut st, &big[12000..], &[3]), (vec![], Some(Event::Unaligned)));
        assert_eq!(st, None);
        // Then whole frames: followed from here, the HEADERS frame of a traced call injected.
        let mut next = frame(FRAME_WINDOW_UPDATE, 0, 0, &[0, 0, 0, 40]);
        let at = next.len() as u32;
        next.extend(headers(5));
        next.extend(data(5, 30));
        assert_eq!(feed(&mut st, &next, &[5]), (vec![at], Some(Event::Resync)));
        assert_eq!(st, Some(0));
        // ... and frames split between messages are followed as for a connection seen from
        // its preface.
        let mut call = headers(7);
        call.extend(data(7, 100));
        call.extend(headers(9));
        let (a, b) = call.split_at(40);
        assert_eq!(feed(&mut st, a, &[7]), (vec![0], Some(Event::Followed)));
        assert_eq!(st, Some(headers(7).len() as u32 + 9 + 100 - 40));
        assert_eq!(feed(&mut st, b, &[9]), (vec![b.len() as u32 - headers(9).len() as u32], Some(Event::Followed)));
        assert_eq!(st, Some(0));
    }

    /// A message that starts inside a DATA frame whose payload holds bytes that look like a
    /// frame header (here a valid WINDOW_UPDATE header, then a HEADERS frame of a stream that
    /// waits for its context): not aligned, nothing injected into the payload.
    #[test]
    fn a_data_payload_that_looks_like_frames_does_not_resync() {
        let mut payload = vec![0u8, 0, 0, 0, 60];
        payload.extend(frame(FRAME_WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        payload.extend(headers(5));
        payload.resize(65, 0x41);
        let mut conn = frame(FRAME_DATA, 0, 3, &payload);
        conn.extend(headers(5));
        let mut st = None;
        let inside = &conn[9 + 5..];
        assert!(parse9(&inside[..9]).is_some(), "the payload starts like a frame header");
        assert_eq!(feed(&mut st, inside, &[5]), (vec![], Some(Event::Unaligned)));
        // The payload alone (a message ending with the DATA frame): the fake frames are
        // followed by payload bytes that are no frame header.
        let tail = &conn[9 + 5..9 + 65];
        assert_eq!(feed(&mut st, tail, &[5]), (vec![], Some(Event::Unaligned)));
        // A gRPC message's 5-byte prefix (flag 0, length) read as a frame header is refused by
        // the strict parse (DATA on stream 0, or unknown flags), though the loose one takes it.
        let grpc_prefix = [0u8, 0, 0, 0, 60, 0x0a, 0x3a, 0x41, 0x41];
        assert!(FrameHeader::parse(&grpc_prefix).is_some() && parse9(&grpc_prefix).is_none());
        assert_eq!(st, None);
    }

    #[test]
    fn a_lost_place_resyncs_and_http1_connections_are_left_alone() {
        // A frame header split between two messages: the place is lost, counted, and the
        // connection resynchronises later instead of being dropped for good.
        let mut st = Some(0);
        let mut m = headers(1);
        m.extend(&data(1, 20)[..4]);
        assert_eq!(feed(&mut st, &m, &[1]), (vec![], Some(Event::Desync)));
        assert_eq!(st, None);
        assert_eq!(feed(&mut st, &data(1, 20)[4..], &[]), (vec![], Some(Event::Unaligned)));
        assert_eq!(feed(&mut st, &headers(3), &[3]), (vec![0], Some(Event::Resync)));
        // An HTTP/1 connection open before gotel attached: its first request ends the tries.
        let mut st = None;
        assert_eq!(feed(&mut st, b"{\"body\": 1}", &[]), (vec![], Some(Event::Unaligned)));
        assert_eq!(feed(&mut st, b"POST /v1 HTTP/1.1\r\n", &[]), (vec![], Some(Event::NotH2)));
        assert_eq!(st, Some(CONN_NOT_H2));
        assert!(!starts_like_request_line(b"\x00\x00\x04\x08\x00\x00\x00\x00"));
        assert!(!starts_like_request_line(b"GETTINGS"));
    }

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
