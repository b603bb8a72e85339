//! Synthetic kernel records through the factory: the pairing of entry values with their return,
//! unwound calls, remote parents and sampling, limits and what is counted, helper captures and
//! spans held open until their closer.
use super::*;
use crate::attributes::{shared_key, Decode};
use gotel_shared::{EventHeader, ValueHeader};
use opentelemetry::Value;

struct Names;
impl TypeNames for Names {
    fn type_name(&self, addr: u64) -> Option<String> {
        (addr == 0x1000).then(|| "*main.CodeError".into())
    }
}

fn slot(key: &str, decode: Decode, sets_error_status: bool) -> AttrSlot {
    AttrSlot { key: shared_key(key), decode, sets_error_status }
}

/// Probe 0: `main.work(id=arg, ret=result)`, `id` read at entry and `ret` at return.
/// Probe 1: `main.fail(err=ret)`, an error result that sets the status.
fn factory(sampler: Sampler, max_attributes: usize) -> SpanFactory {
    let work = ProbeSpans::new(
        "main.work",
        Some(("/src/main.go", 42)),
        vec![slot("id", Decode::Int { size: 8 }, false), slot("ret", Decode::Int { size: 4 }, false)],
        None,
    );
    let fail = ProbeSpans::new("main.fail", None, vec![slot("err", Decode::Error, true)], None);
    SpanFactory::with_probes(vec![work, fail], sampler, Box::new(Names), max_attributes).with_thread_ids(true)
}

fn always_on() -> SpanFactory {
    factory(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), 128)
}

/// One captured value as the kernel appends it (header, payload, padding to 8 bytes).
fn value(slot: u16, word0: u64) -> Vec<u8> {
    let h = ValueHeader { slot, word0, ..Default::default() };
    let bytes = unsafe {
        std::slice::from_raw_parts(&h as *const ValueHeader as *const u8, std::mem::size_of::<ValueHeader>())
    };
    bytes.to_vec()
}

fn header(kind: EventKind, probe_id: u32, span_id: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        probe_id,
        tgid: 10,
        tid: 11,
        start_ns: 1_000_000,
        end_ns: if kind == EventKind::EntryValues { 0 } else { 1_500_000 },
        trace_id: *b"0123456789abcdef",
        span_id,
        ..Default::default()
    }
}

fn feed(f: &mut SpanFactory, h: EventHeader, data: &[u8]) -> Option<SpanData> {
    let kind = match h.kind {
        k if k == EventKind::SpanEnd as u32 => EventKind::SpanEnd,
        k if k == EventKind::EntryValues as u32 => EventKind::EntryValues,
        _ => EventKind::Abandoned,
    };
    f.on_record(Record { kind, header: EventHeader { data_len: data.len() as u32, ..h }, data })
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

#[test]
fn a_span_end_alone_makes_a_span() {
    let mut f = always_on();
    let span = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &[]).expect("a span");
    assert_eq!(span.name, "main.work");
    assert_eq!(span.span_context.trace_id(), TraceId::from_bytes(*b"0123456789abcdef"));
    assert_eq!(span.span_context.span_id(), SpanId::from(7u64));
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert!(!span.parent_span_is_remote);
    assert_eq!(span.span_kind, SpanKind::Internal);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.end_time.duration_since(span.start_time).unwrap(), std::time::Duration::from_micros(500));
    assert_eq!(attr(&span, "code.function.name"), Some(&Value::from("main.work")));
    assert_eq!(attr(&span, "code.file.path"), Some(&Value::from("/src/main.go")));
    assert_eq!(attr(&span, "code.line.number"), Some(&Value::I64(42)));
    assert_eq!(attr(&span, "thread.id"), Some(&Value::I64(11)));
    assert_eq!(attr(&span, "id"), None);
    assert_eq!((f.stats.spans, f.stats.malformed_records), (1, 0));
}

#[test]
fn built_in_spans_carry_no_code_attributes_and_thread_ids_are_opt_in() {
    let unit = &instrumentations::http_client::HTTP_CLIENT;
    let client = ProbeSpans::new(
        "net/http.(*Transport).roundTrip",
        Some(("/usr/local/go/src/net/http/transport.go", 555)),
        Vec::new(),
        Some((unit, unit.span.as_ref().unwrap())),
    );
    let work = ProbeSpans::new("main.work", Some(("/src/main.go", 42)), Vec::new(), None);
    let mut f = SpanFactory::with_probes(vec![client, work], Sampler::AlwaysOn, Box::new(Names), 128);
    let span = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &[]).unwrap();
    assert_eq!(span.span_kind, SpanKind::Client);
    let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.iter().all(|k| !k.starts_with("code.") && *k != "thread.id"), "{keys:?}");
    let user = feed(&mut f, header(EventKind::SpanEnd, 1, 8), &[]).unwrap();
    assert_eq!(attr(&user, "code.function.name"), Some(&Value::from("main.work")));
    assert_eq!(attr(&user, "thread.id"), None, "thread.id is opt-in");
    let mut f = f.with_thread_ids(true);
    let user = feed(&mut f, header(EventKind::SpanEnd, 1, 9), &[]).unwrap();
    assert_eq!(attr(&user, "thread.id"), Some(&Value::I64(11)));
}

#[test]
fn entry_values_wait_for_their_return() {
    let mut f = always_on();
    assert!(feed(&mut f, header(EventKind::EntryValues, 0, 7), &value(0, 99)).is_none());
    // Another call's entry, still in progress, does not mix in.
    assert!(feed(&mut f, header(EventKind::EntryValues, 0, 8), &value(0, 100)).is_none());
    let span = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &value(1, 5)).unwrap();
    assert_eq!(attr(&span, "id"), Some(&Value::I64(99)));
    assert_eq!(attr(&span, "ret"), Some(&Value::I64(5)));
    // Taken once: a second end with the same id has no entry values left.
    let again = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &[]).unwrap();
    assert_eq!(attr(&again, "id"), None);
    let other = feed(&mut f, header(EventKind::SpanEnd, 0, 8), &[]).unwrap();
    assert_eq!(attr(&other, "id"), Some(&Value::I64(100)));
}

#[test]
fn an_abandoned_call_is_an_error_span_without_return_values() {
    let mut f = always_on();
    feed(&mut f, header(EventKind::EntryValues, 0, 7), &value(0, 99));
    let mut h = header(EventKind::Abandoned, 0, 7);
    h.parent_span_id = 3;
    // Whatever data an abandoned record carries, no return value is read from it.
    let span = feed(&mut f, h, &value(1, 5)).unwrap();
    assert_eq!(span.status, Status::error(UNWOUND_MESSAGE));
    assert_eq!(attr(&span, UNWOUND_ATTRIBUTE), Some(&Value::Bool(true)));
    assert_eq!(attr(&span, "id"), Some(&Value::I64(99)));
    assert_eq!(attr(&span, "ret"), None);
    assert_eq!(span.parent_span_id, SpanId::from(3u64));
    assert_eq!((f.stats.abandoned, f.stats.spans), (1, 1));
}

#[test]
fn an_error_result_sets_the_status() {
    let mut f = always_on();
    let span = feed(&mut f, header(EventKind::SpanEnd, 1, 7), &value(0, 0x1000)).unwrap();
    assert_eq!(span.status, Status::error("*main.CodeError"));
    let ok = feed(&mut f, header(EventKind::SpanEnd, 1, 8), &value(0, 0)).unwrap();
    assert_eq!(ok.status, Status::Unset);
}

#[test]
fn remote_parents_and_their_sampling_decision() {
    let remote = |flags: u16| {
        let mut h = header(EventKind::SpanEnd, 0, 7);
        h.parent_span_id = 0x55;
        h.flags = flags;
        h
    };
    let mut f = always_on();
    let span = feed(&mut f, remote(SPAN_PARENT_REMOTE | SPAN_TRACE_REMOTE_SAMPLED), &[]).unwrap();
    assert!(span.parent_span_is_remote);
    assert_eq!(span.parent_span_id, SpanId::from(0x55u64));
    // A local child in a trace that came in sampled: parent not remote, still kept.
    let child = feed(&mut f, remote(SPAN_TRACE_REMOTE_SAMPLED), &[]).unwrap();
    assert!(!child.parent_span_is_remote);
    // The caller said "not sampled": parent-based samplers drop the whole trace.
    assert!(feed(&mut f, remote(SPAN_PARENT_REMOTE | SPAN_TRACE_REMOTE_NOT_SAMPLED), &[]).is_none());
    assert_eq!((f.stats.spans, f.stats.sampled_out), (2, 1));

    // parentbased_always_off keeps a trace only when the caller sampled it.
    let mut off = factory(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), 128);
    assert!(feed(&mut off, header(EventKind::SpanEnd, 0, 7), &[]).is_none());
    assert!(feed(&mut off, remote(SPAN_PARENT_REMOTE | SPAN_TRACE_REMOTE_SAMPLED), &[]).is_some());
}

#[test]
fn unknown_probe_ids_are_counted_not_exported() {
    let mut f = always_on();
    assert!(feed(&mut f, header(EventKind::SpanEnd, 9, 7), &[]).is_none());
    assert!(feed(&mut f, header(EventKind::EntryValues, 2, 7), &value(0, 1)).is_none());
    assert_eq!((f.stats.malformed_records, f.stats.spans), (2, 0));
}

#[test]
fn the_attribute_limit_counts_what_it_drops() {
    let mut f = factory(Sampler::AlwaysOn, 2);
    feed(&mut f, header(EventKind::EntryValues, 0, 7), &value(0, 99));
    let span = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &value(1, 5)).unwrap();
    // code.function.name, code.file.path, code.line.number, thread.id, id, ret.
    assert_eq!((span.attributes.len(), span.dropped_attributes_count), (2, 4));
}

#[test]
fn entry_values_that_never_end_are_bounded_and_counted() {
    let mut f = always_on();
    for id in 0..MAX_PENDING_ENTRIES as u64 + 3 {
        feed(&mut f, header(EventKind::EntryValues, 0, id + 1), &value(0, id));
    }
    assert_eq!(f.stats.pending_evicted, 3);
    assert!(f.pending.len() <= MAX_PENDING_ENTRIES);
    // The oldest went first; the newest still pairs.
    let oldest = feed(&mut f, header(EventKind::SpanEnd, 0, 1), &[]).unwrap();
    assert_eq!(attr(&oldest, "id"), None);
    let newest = feed(&mut f, header(EventKind::SpanEnd, 0, MAX_PENDING_ENTRIES as u64 + 3), &[]).unwrap();
    assert_eq!(attr(&newest, "id"), Some(&Value::I64(MAX_PENDING_ENTRIES as i64 + 2)));
}

/// A helper probe's captures join the span of the call it ran in: the gRPC status written
/// by the transport during the server span.
#[test]
fn a_helper_s_captures_go_to_the_enclosing_span() {
    use crate::instrumentations::grpc_server::GRPC_SERVER;
    let span_probe = GRPC_SERVER.span.as_ref().unwrap();
    let server = ProbeSpans::new("handleStream", None, Vec::new(), Some((&GRPC_SERVER, span_probe)));
    let helper = ProbeSpans {
        role: Role::Helper,
        ..ProbeSpans::new(
            "WriteStatus",
            None,
            vec![slot("code", Decode::Int { size: 4 }, false)],
            Some((&GRPC_SERVER, &GRPC_SERVER.helpers[0])),
        )
    };
    let mut f = SpanFactory::with_probes(vec![server, helper], Sampler::AlwaysOn, Box::new(Names), 128);
    let mut status = header(EventKind::SpanEnd, 1, 8);
    status.parent_span_id = 7;
    assert!(feed(&mut f, status, &value(0, 12)).is_none(), "a helper's call is no span");
    // Outside any traced call: nothing to add to.
    assert!(feed(&mut f, header(EventKind::SpanEnd, 1, 9), &value(0, 5)).is_none());
    let span = feed(&mut f, header(EventKind::SpanEnd, 0, 7), &[]).unwrap();
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(attr(&span, "rpc.grpc.status_code"), Some(&Value::I64(12)));
    assert!(matches!(span.status, Status::Error { .. }), "Unimplemented is a server error");
    let other = feed(&mut f, header(EventKind::SpanEnd, 0, 10), &[]).unwrap();
    assert_eq!(attr(&other, "rpc.grpc.status_code"), None);
    assert_eq!(f.stats.spans, 2);
}

/// A span left open ends with its closer's call, status and attributes; one never closed is
/// exported when gotel stops, counted.
#[test]
fn an_open_span_ends_with_its_closer() {
    use crate::instrumentations::grpc_client::GRPC_CLIENT;
    let stream = ProbeSpans::new(
        "NewStream",
        None,
        vec![slot("stream", Decode::Int { size: 8 }, false)],
        Some((&GRPC_CLIENT, &GRPC_CLIENT.more_spans[0])),
    );
    let closer = ProbeSpans {
        role: Role::Closer,
        ..ProbeSpans::new(
            "finish",
            None,
            vec![slot("stream", Decode::Int { size: 8 }, false), slot("err", Decode::Error, false)],
            Some((&GRPC_CLIENT, &GRPC_CLIENT.closers[0])),
        )
    };
    let mut f = SpanFactory::with_probes(vec![stream, closer], Sampler::AlwaysOn, Box::new(Names), 128);
    assert!(feed(&mut f, header(EventKind::SpanEnd, 0, 7), &value(0, 0xc000)).is_none(), "held open");
    assert!(feed(&mut f, header(EventKind::SpanEnd, 0, 8), &value(0, 0xd000)).is_none());
    // Another stream's end (a unary call's) closes nothing.
    assert!(feed(&mut f, header(EventKind::SpanEnd, 1, 9), &value(0, 0xe000)).is_none());
    let mut end = header(EventKind::SpanEnd, 1, 10);
    end.end_ns = 9_000_000;
    // Ended by an error that is no gRPC status: Unknown.
    let data = [value(0, 0xc000), value(1, 0x1000)].concat();
    let span = feed(&mut f, end, &data).expect("the stream's span");
    assert_eq!(span.span_context.span_id(), SpanId::from(7u64));
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.end_time.duration_since(span.start_time).unwrap(), std::time::Duration::from_millis(8));
    assert_eq!(attr(&span, OPEN), None);
    assert!(matches!(span.status, Status::Error { .. }), "{:?}", span.status);
    assert_eq!(attr(&span, "rpc.grpc.status_code"), Some(&Value::I64(2)));
    let rest = f.take_open();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].span_context.span_id(), SpanId::from(8u64));
    assert_eq!(f.stats.open_unclosed, 1);
}
