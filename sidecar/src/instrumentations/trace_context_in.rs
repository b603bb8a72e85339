//! Incoming `traceparent`, read-only and without a trap of its own: the HTTP server span's
//! entry probe (`net/http.serverHandler.ServeHTTP`) scans the request's raw header block, which
//! is still in the connection's `bufio.Reader` (`rw.(*http.response).conn.bufr`) when the
//! handler is entered (kernel: `propagation::extract`; rules: `gotel_shared::header_block`).
//! A valid one becomes the server span's remote parent; invalid ones are counted and ignored,
//! and so are requests whose header block was no longer whole in the buffer (it arrived in
//! several reads and the lines parsed before the last one were overwritten, or it was larger
//! than the 4 KiB buffer) with no `traceparent` among the lines left (`traceparent_unreadable`).
//! The same scan gives the server span's `user_agent.original`.
//!
//! Why not a hook per header line (`net/textproto.(*Reader).readContinuedLineSlice`, the
//! previous design): one trap per line read by the process, requests and client responses
//! alike, 20 traps for a browser's request; this costs none beyond the span's own two.
//! Why not `http.Header`: its map layout changed in Go 1.24 and its hash is seeded per process.
//! HTTP/2 requests are skipped (HPACK-encoded frames, never text lines): the per-line hook never
//! saw them either.
use gotel_shared::{
    Counter, ExtractConfig, Fetch, Root, ValueKind, PLAN_SCAN_HEADERS, REG_USER_AGENT_LEN, REG_USER_AGENT_PTR,
};

use super::{types_of, Activation, FieldNeed, GoTy, Instrumentation, MapFill, Wanted};
use crate::attributes::{shared_key, AttrSlot, Decode};

/// The capture key of the `User-Agent` value in the server span's plan (see `http_server`).
pub const USER_AGENT_CAPTURE: &str = "ua";

pub static TRACE_CONTEXT_IN: Instrumentation = Instrumentation {
    name: "trace_context.in",
    doc: "an incoming `traceparent` header becomes the server span's remote parent (with `http.server`): read at \
          the span's entry from the request bytes still in the connection's read buffer, no probe of its own",
    fields: &[
        FieldNeed::std("net/http.response", "conn", GoTy::Ptr("net/http.conn")),
        FieldNeed::std("net/http.conn", "bufr", GoTy::Ptr("bufio.Reader")),
        FieldNeed::std("bufio.Reader", "buf", GoTy::Bytes),
        FieldNeed::std("bufio.Reader", "r", GoTy::Int),
    ],
    wanted: |s| if s.has_spans(super::http_server::HTTP_SERVER.name) { Wanted::Yes } else { Wanted::No },
    prepare: Some(prepare),
    counters: &[
        ("traceparent_adopted", Counter::TraceparentAdopted),
        ("traceparent_invalid", Counter::TraceparentInvalid),
        ("traceparent_unreadable", Counter::TraceparentUnreadable),
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
    probe.attributes.fetches.push(Fetch {
        root: Root::Registers as u8,
        kind: ValueKind::String as u8,
        size: 8,
        nregs: 2,
        regs: [REG_USER_AGENT_PTR, REG_USER_AGENT_LEN],
        // The span's other strings follow OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: so does this one.
        max_len: string_limit,
        slot: probe.attributes.slots.len() as u16,
        ..Fetch::default()
    });
    probe.attributes.slots.push(AttrSlot {
        key: shared_key(USER_AGENT_CAPTURE),
        decode: Decode::String,
        sets_error_status: false,
    });
    a.map_fills.push(MapFill::array(TRACE_CONTEXT_IN.name, "EXTRACT_CONFIG", 0, config));
    Ok(())
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
    })
}
