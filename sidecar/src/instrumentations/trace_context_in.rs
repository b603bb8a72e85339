//! Incoming `traceparent`, read-only and without a trap of its own: the HTTP server span's
//! entry probe (`net/http.serverHandler.ServeHTTP`) scans the request's raw header block, which
//! is still in the connection's `bufio.Reader` (`rw.(*http.response).conn.bufr`) when the
//! handler is entered (kernel: `propagation::extract`; rules: `gotel_shared::header_block`).
//! A valid one becomes the server span's remote parent; invalid ones are counted and ignored.
//! The same scan gives the server span's `user_agent.original`, and its method, path and host
//! when the request line is in the block (almost always): the span's captures of
//! `req.Method`, `req.URL.Path` and `req.Host` (three reads of the target's memory and three of
//! their bytes) are then skipped by the kernel (frame bit `FRAME_LINE`), and the block's bytes
//! are captured instead (`FRAME_NO_LINE` skips those otherwise). Requests without the line
//! (block not whole, absolute-form targets, folded lines) are counted as
//! `request_line_unread`. The values are the same: see `gotel_shared::header_block`.
//!
//! When the header block is no longer whole in the buffer (it arrived in several reads and
//! `bufio` slid the lines parsed before the last read away, or it was larger than the 4 KiB
//! buffer) and no `traceparent` is among the lines left, the same probe walks the request's
//! parsed `http.Header` map instead (`gotel_shared::header_map`, counted as
//! `header_map_walked`): Go ≤1.23 `hmap` buckets or 1.24+ Swiss-table groups, bounded, keys
//! compared with `Traceparent` / `User-Agent`. Only a map that cannot be walked to its end (over
//! 64 buckets or groups, a release whose map layout is unknown) leaves the request counted as
//! `traceparent_unreadable`.
//!
//! Why not a hook per header line (`net/textproto.(*Reader).readContinuedLineSlice`, the
//! previous design): one trap per line read by the process, requests and client responses
//! alike, 20 traps for a browser's request; this costs none beyond the span's own two.
//! Why the buffer first and the map only as the fallback: Go seeds each map's hash per process,
//! so the kernel cannot look a key up and walks every slot (several user-memory reads per
//! header), where the buffer is one copy; and most requests arrive in one read.
//! HTTP/2 requests are skipped (HPACK-encoded frames, never text lines): the per-line hook never
//! saw them either.
use gotel_shared::{
    header_map::{MapLayout, MAP_HMAP, MAP_SWISS},
    Counter, ExtractConfig, Fetch, Root, ValueKind, FRAME_LINE, FRAME_NO_LINE, PLAN_SCAN_HEADERS, REG_HOST_LEN,
    REG_HOST_PTR, REG_METHOD_LEN, REG_METHOD_PTR, REG_TARGET_LEN, REG_TARGET_PTR, REG_USER_AGENT_LEN,
    REG_USER_AGENT_PTR,
};

use super::{types_of, Activation, FieldNeed, GoTy, Instrumentation, MapFill, Wanted};
use crate::attributes::{shared_key, AttrSlot, AttributePlan, Decode};

/// The capture key of the `User-Agent` value in the server span's plan (see `http_server`).
pub const USER_AGENT_CAPTURE: &str = "ua";

/// The captures the request line and `Host` line give (see `http_server`'s finish), each with
/// the capture of the server span's spec it replaces, and its registers.
pub const FROM_LINE: [(&str, &str, [u8; 2]); 3] = [
    ("line_m", "m", [REG_METHOD_PTR, REG_METHOD_LEN]),
    ("target", "path", [REG_TARGET_PTR, REG_TARGET_LEN]),
    ("line_host", "host", [REG_HOST_PTR, REG_HOST_LEN]),
];

pub static TRACE_CONTEXT_IN: Instrumentation = Instrumentation {
    name: "trace_context.in",
    doc: "an incoming `traceparent` header becomes the server span's remote parent (with `http.server`): read at \
          the span's entry from the request bytes still in the connection's read buffer, or from the request's \
          `http.Header` when they are gone; no probe of its own",
    fields: &[
        FieldNeed::std("net/http.response", "conn", GoTy::Ptr("net/http.conn")),
        FieldNeed::std("net/http.conn", "bufr", GoTy::Ptr("bufio.Reader")),
        FieldNeed::std("bufio.Reader", "buf", GoTy::Bytes),
        FieldNeed::std("bufio.Reader", "r", GoTy::Int),
        // The request line found in the buffer is checked against these (one line's substrings).
        FieldNeed::std("net/http.Request", "Method", GoTy::String),
        FieldNeed::std("net/http.Request", "Proto", GoTy::String),
        // The fallback: `r.Header`, walked when the header block is gone from the buffer. Go up
        // to 1.23 has `runtime.hmap`, 1.24+ Swiss tables; each release has one of the two.
        FieldNeed::std("net/http.Request", "Header", GoTy::Opaque),
        FieldNeed::std("runtime.hmap", "flags", GoTy::Opaque).optional(),
        FieldNeed::std("runtime.hmap", "B", GoTy::Opaque).optional(),
        FieldNeed::std("runtime.hmap", "buckets", GoTy::Opaque).optional(),
        FieldNeed::std("runtime.hmap", "oldbuckets", GoTy::Opaque).optional(),
        FieldNeed::std("internal/runtime/maps.Map", "dirPtr", GoTy::Opaque).optional(),
        FieldNeed::std("internal/runtime/maps.Map", "dirLen", GoTy::Opaque).optional(),
        FieldNeed::std("internal/runtime/maps.table", "groups", GoTy::Opaque).optional(),
        FieldNeed::std("internal/runtime/maps.groupsReference", "data", GoTy::Opaque).optional(),
        FieldNeed::std("internal/runtime/maps.groupsReference", "lengthMask", GoTy::Opaque).optional(),
    ],
    wanted: |s| if s.has_spans(super::http_server::HTTP_SERVER.name) { Wanted::Yes } else { Wanted::No },
    prepare: Some(prepare),
    counters: &[
        ("traceparent_adopted", Counter::TraceparentAdopted),
        ("traceparent_invalid", Counter::TraceparentInvalid),
        ("traceparent_unreadable", Counter::TraceparentUnreadable),
        ("header_map_walked", Counter::HeaderMapWalked),
        ("request_line_unread", Counter::RequestLineUnread),
    ],
    ..Instrumentation::BASE
};

/// The kernel gets the field offsets; the server span probe scans at entry and captures the
/// `User-Agent` the scan finds.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let server = super::http_server::HTTP_SERVER.name;
    let config = offsets(a)
        .ok_or("incoming traceparent is off for this binary: the layout of net/http's connection reader is unknown")?;
    let Some(probe) = a.probes.iter_mut().find(|p| p.library.is_some_and(|l| l.name == server)) else {
        return Ok(());
    };
    if probe.attributes.fetches.len() >= gotel_shared::MAX_FETCHES {
        return Err("incoming traceparent is off: the server span has no capture left".into());
    }
    probe.plan_flags |= PLAN_SCAN_HEADERS;
    let strings = probe.attributes.fetches.iter().filter(|f| f.kind == ValueKind::String as u8);
    let string_limit = strings.map(|f| f.max_len).max().unwrap_or(gotel_shared::MAX_STR as u16);
    let attrs = &mut probe.attributes;
    // The span's other strings follow OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: so do these.
    push_register_string(attrs, USER_AGENT_CAPTURE, [REG_USER_AGENT_PTR, REG_USER_AGENT_LEN], string_limit, 0);
    if attrs.fetches.len() + FROM_LINE.len() <= gotel_shared::MAX_FETCHES {
        for (key, replaced, regs) in FROM_LINE {
            let slots = &attrs.slots;
            for f in attrs.fetches.iter_mut() {
                if slots.get(f.slot as usize).is_some_and(|s| s.key.as_str() == replaced) {
                    f.skip_if = FRAME_LINE;
                }
            }
            push_register_string(attrs, key, regs, string_limit, FRAME_NO_LINE);
        }
    }
    a.map_fills.push(MapFill::array(TRACE_CONTEXT_IN.name, "EXTRACT_CONFIG", config));
    Ok(())
}

/// Adds the capture `key`: a string whose address and length the header scan left in the
/// register copy's slots `regs`, skipped on frames with a `skip_if` bit.
fn push_register_string(attrs: &mut AttributePlan, key: &str, regs: [u8; 2], max_len: u16, skip_if: u8) {
    attrs.fetches.push(Fetch {
        root: Root::Registers as u8,
        kind: ValueKind::String as u8,
        size: 8,
        nregs: 2,
        regs,
        max_len,
        slot: attrs.slots.len() as u16,
        skip_if,
        ..Fetch::default()
    });
    attrs.slots.push(AttrSlot { key: shared_key(key), decode: Decode::String, sets_error_status: false });
}

fn offsets(a: &Activation) -> Option<ExtractConfig> {
    let dwarf = types_of(a.bin).ok()?;
    let t = &dwarf.types;
    let off = |s: &str, f: &str| t.struct_field(s, f).map(|(o, _)| o as u32);
    Some(ExtractConfig {
        enabled: 1,
        request_proto_major: off("net/http.Request", "ProtoMajor")?,
        response_conn: off("net/http.response", "conn")?,
        conn_bufr: off("net/http.conn", "bufr")?,
        reader_buf: off("bufio.Reader", "buf")?,
        reader_r: off("bufio.Reader", "r")?,
        request_method: off("net/http.Request", "Method")?,
        request_proto: off("net/http.Request", "Proto")?,
        header_map: map_layout(&off),
    })
}

/// The `http.Header` walk's offsets: `hmap` when the binary has it (up to Go 1.23, and 1.24/1.25
/// built with `GOEXPERIMENT=noswissmap`, whose runtime may still link the Swiss package), else
/// Swiss tables, else none (`kind` 0: requests whose header block is gone are counted as
/// unreadable).
fn map_layout(off: &dyn Fn(&str, &str) -> Option<u32>) -> MapLayout {
    let swiss = || {
        let groups = off("internal/runtime/maps.table", "groups")?;
        Some(MapLayout {
            kind: MAP_SWISS,
            request_header: off("net/http.Request", "Header")?,
            map_dir_ptr: off("internal/runtime/maps.Map", "dirPtr")?,
            map_dir_len: off("internal/runtime/maps.Map", "dirLen")?,
            table_groups_data: groups + off("internal/runtime/maps.groupsReference", "data")?,
            table_groups_mask: groups + off("internal/runtime/maps.groupsReference", "lengthMask")?,
            ..MapLayout::default()
        })
    };
    let hmap = || {
        Some(MapLayout {
            kind: MAP_HMAP,
            request_header: off("net/http.Request", "Header")?,
            hmap_flags: off("runtime.hmap", "flags")?,
            hmap_b: off("runtime.hmap", "B")?,
            hmap_buckets: off("runtime.hmap", "buckets")?,
            hmap_oldbuckets: off("runtime.hmap", "oldbuckets")?,
            ..MapLayout::default()
        })
    };
    hmap().or_else(swiss).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(fields: &[(&str, &str, u32)]) -> MapLayout {
        map_layout(&|s: &str, f: &str| fields.iter().find(|(a, b, _)| (*a, *b) == (s, f)).map(|x| x.2))
    }

    const SWISS_FIELDS: [(&str, &str, u32); 6] = [
        ("net/http.Request", "Header", 56),
        ("internal/runtime/maps.Map", "dirPtr", 16),
        ("internal/runtime/maps.Map", "dirLen", 24),
        ("internal/runtime/maps.table", "groups", 16),
        ("internal/runtime/maps.groupsReference", "data", 0),
        ("internal/runtime/maps.groupsReference", "lengthMask", 8),
    ];
    const HMAP_FIELDS: [(&str, &str, u32); 4] = [
        ("runtime.hmap", "flags", 8),
        ("runtime.hmap", "B", 9),
        ("runtime.hmap", "buckets", 16),
        ("runtime.hmap", "oldbuckets", 24),
    ];

    #[test]
    fn the_map_layout_follows_the_binary() {
        let swiss = layout(&SWISS_FIELDS);
        assert_eq!((swiss.kind, swiss.request_header), (MAP_SWISS, 56));
        assert_eq!((swiss.map_dir_ptr, swiss.map_dir_len), (16, 24));
        assert_eq!((swiss.table_groups_data, swiss.table_groups_mask), (16, 24), "table.groups + its field");
        // hmap wins when both are there (a noswissmap build may link the Swiss package too).
        let both: Vec<_> = SWISS_FIELDS.iter().chain(HMAP_FIELDS.iter()).copied().collect();
        let hmap = layout(&both);
        assert_eq!((hmap.kind, hmap.hmap_b, hmap.hmap_oldbuckets, hmap.request_header), (MAP_HMAP, 9, 24, 56));
        // No Header offset, or half a layout: no walk (counted as unreadable in the kernel).
        assert_eq!(layout(&HMAP_FIELDS).kind, 0);
        assert_eq!(layout(&SWISS_FIELDS[..4]).kind, 0);
    }
}
