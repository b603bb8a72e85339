//! Turning kernel records into OpenTelemetry spans: names, ids, parents and wall-clock times
//! come from the kernel; the code location and the probe's attributes from the plan.
use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
};

use gotel_shared::{EventKind, SPAN_PARENT_REMOTE, SPAN_TRACE_REMOTE_NOT_SAMPLED, SPAN_TRACE_REMOTE_SAMPLED};
use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks};

use crate::{
    attributes::AttrSlot,
    binary::GoBinary,
    events::{Clock, Record},
    instrumentations::{self, Library},
    plan::Plan,
    values::{self, TypeNames},
};

/// Marks a span whose call did not return (see [`UNWOUND_MESSAGE`]).
pub const UNWOUND_ATTRIBUTE: &str = "gotel.unwound";
pub const UNWOUND_MESSAGE: &str =
    "the call did not return: unwound by a panic or runtime.Goexit, or the process exited (end time = when gotel noticed)";

/// Entry values waiting for their return record; bounded so a target whose traced calls never
/// return cannot grow gotel's memory.
const MAX_PENDING_ENTRIES: usize = 65536;

/// Names and paths live for the whole run so every span can borrow them: no allocation per span
/// for the name or the code attributes. Interned, so following a restarting target (`--exe`)
/// does not grow memory.
fn intern(s: &str) -> &'static str {
    static TABLE: std::sync::Mutex<Option<std::collections::HashSet<&'static str>>> = std::sync::Mutex::new(None);
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let table = table.get_or_insert_with(Default::default);
    if let Some(existing) = table.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    table.insert(leaked);
    leaked
}

struct ProbeSpans {
    name: Cow<'static, str>,
    fixed: Vec<KeyValue>,
    slots: Vec<AttrSlot>,
    library: Option<Library>,
}

impl ProbeSpans {
    fn new(name: &str, source: Option<(&str, u32)>, slots: Vec<AttrSlot>, library: Option<Library>) -> ProbeSpans {
        let name = intern(name);
        let mut fixed = vec![KeyValue::new("code.function.name", name)];
        if let Some((file, line)) = source {
            fixed.push(KeyValue::new("code.file.path", intern(file)));
            fixed.push(KeyValue::new("code.line.number", line as i64));
        }
        ProbeSpans { name: Cow::Borrowed(name), fixed, slots, library }
    }
}

/// Load bias of the executable in process `pid` (0 unless PIE): where its first segment is
/// mapped minus its link-time address, read from /proc/PID/maps.
///
/// A launched child runs gotel's own image until it execs the program, just after its
/// release: reading the maps then would find gotel's mapping and name no type. So this waits
/// (a few milliseconds, 2 s at most) until the process runs another executable that is mapped.
pub fn load_bias(pid: u32, binary: &GoBinary) -> u64 {
    if !binary.is_pie {
        return 0;
    }
    let own = std::fs::read_link("/proc/self/exe").ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // Gone (or a zombie): nothing left to name.
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else { return 0 };
        if own.as_ref() != Some(&exe) {
            if let Some(start) = mapped_at(pid, &exe) {
                return start.wrapping_sub(binary.first_segment_vaddr());
            }
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(pid, "the program's mapping is not in /proc/PID/maps: dynamic types are shown as addresses");
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Start of the mapping of `exe` at file offset 0 in process `pid`.
fn mapped_at(pid: u32, exe: &std::path::Path) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let exe = exe.to_string_lossy();
    maps.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[5..].join(" ") == exe && u64::from_str_radix(cols[2], 16) == Ok(0) {
            cols[0].split('-').next().and_then(|s| u64::from_str_radix(s, 16).ok())
        } else {
            None
        }
    })
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SpanStats {
    pub spans: u64,
    pub sampled_out: u64,
    pub malformed_records: u64,
    pub abandoned: u64,
    /// Entry values evicted before their return arrived (the span then lacks those attributes).
    pub pending_evicted: u64,
}

pub struct SpanFactory {
    probes: Vec<ProbeSpans>,
    pending: HashMap<u64, Vec<KeyValue>>,
    pending_order: VecDeque<u64>,
    clock: Clock,
    sampler: Sampler,
    scope: InstrumentationScope,
    names: Box<dyn TypeNames + Send>,
    max_attributes: usize,
    /// `GOTEL_THREAD_ID=on`: a `thread.id` attribute on every span.
    thread_ids: bool,
    pub stats: SpanStats,
}

impl SpanFactory {
    pub fn new(plan: &Plan, sampler: Sampler, names: Box<dyn TypeNames + Send>, max_attributes: usize) -> Self {
        let probes = plan
            .probes
            .iter()
            .map(|p| {
                let source = p.source.as_ref().map(|(file, line)| (file.as_str(), *line));
                ProbeSpans::new(&p.function.name, source, p.attributes.slots.clone(), p.library)
            })
            .collect();
        Self::with_probes(probes, sampler, names, max_attributes)
    }

    fn with_probes(
        probes: Vec<ProbeSpans>,
        sampler: Sampler,
        names: Box<dyn TypeNames + Send>,
        max_attributes: usize,
    ) -> Self {
        SpanFactory {
            probes,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            clock: Clock::calibrate(),
            sampler,
            scope: InstrumentationScope::builder("gotel").with_version(env!("CARGO_PKG_VERSION")).build(),
            names,
            max_attributes,
            thread_ids: false,
            stats: SpanStats::default(),
        }
    }

    /// Adds `thread.id` (the OS thread that ran the call) to every span: opt-in, since Go moves
    /// goroutines between threads and the number rarely means anything to the reader.
    pub fn with_thread_ids(mut self, on: bool) -> Self {
        self.thread_ids = on;
        self
    }

    /// Handles one kernel record; returns a finished span when there is one to export.
    pub fn on_record(&mut self, rec: Record<'_>) -> Option<SpanData> {
        let h = rec.header;
        let Some(probe) = self.probes.get(h.probe_id as usize) else {
            self.stats.malformed_records += 1;
            return None;
        };
        match rec.kind {
            EventKind::EntryValues => {
                let mut attrs = Vec::new();
                let mut status = None;
                values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut attrs, &mut status);
                if self.pending.len() >= MAX_PENDING_ENTRIES {
                    while let Some(old) = self.pending_order.pop_front() {
                        if self.pending.remove(&old).is_some() {
                            self.stats.pending_evicted += 1;
                            break;
                        }
                    }
                }
                self.pending.insert(h.span_id, attrs);
                self.pending_order.push_back(h.span_id);
                if self.pending_order.len() > 2 * MAX_PENDING_ENTRIES {
                    let pending = &self.pending;
                    self.pending_order.retain(|id| pending.contains_key(id));
                }
                None
            }
            EventKind::SpanEnd | EventKind::Abandoned => {
                // An abandoned call (unwound by a panic or runtime.Goexit, or cut short by the
                // process exiting) is still exported, as an error, so that calls made inside it
                // (deferred functions run during the panic) never point at a missing parent.
                // Its end is when the kernel noticed, an upper bound.
                let unwound = rec.kind == EventKind::Abandoned;
                if unwound {
                    self.stats.abandoned += 1;
                }
                let entry_attrs = self.pending.remove(&h.span_id).unwrap_or_default();
                let trace_id = TraceId::from_bytes(h.trace_id);
                // A trace that came in with a traceparent keeps the caller's decision (for the
                // parent-based samplers); otherwise the decision depends on the trace id only,
                // so every span of a trace is kept or dropped together.
                let remote = h.flags & (SPAN_TRACE_REMOTE_SAMPLED | SPAN_TRACE_REMOTE_NOT_SAMPLED) != 0;
                let parent_cx = remote.then(|| {
                    let flags = if h.flags & SPAN_TRACE_REMOTE_SAMPLED != 0 {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    };
                    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                        trace_id,
                        SpanId::from_bytes(h.parent_span_id.to_be_bytes()),
                        flags,
                        true,
                        TraceState::default(),
                    ))
                });
                let sampled = matches!(
                    self.sampler
                        .should_sample(parent_cx.as_ref(), trace_id, &probe.name, &SpanKind::Internal, &[], &[])
                        .decision,
                    SamplingDecision::RecordAndSample
                );
                if !sampled {
                    self.stats.sampled_out += 1;
                    return None;
                }
                let mut attributes = Vec::with_capacity(probe.fixed.len() + entry_attrs.len() + 4);
                let mut error = None;
                let mut name = probe.name.clone();
                let mut kind = SpanKind::Internal;
                let mut status = None;
                if let Some(lib) = probe.library {
                    let mut raw = entry_attrs;
                    if !unwound {
                        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut raw, &mut error);
                    }
                    let done = instrumentations::finish(lib, &probe.name, raw, error.take());
                    name = Cow::Owned(done.name);
                    kind = lib.span_kind();
                    status = Some(done.status);
                    // No code.* here: they would name net/http's internals, not the user's code.
                    attributes.extend(done.attributes);
                    if self.thread_ids && h.tid != 0 {
                        attributes.push(KeyValue::new("thread.id", h.tid as i64));
                    }
                } else {
                    attributes.extend(probe.fixed.iter().cloned());
                    if self.thread_ids && h.tid != 0 {
                        attributes.push(KeyValue::new("thread.id", h.tid as i64));
                    }
                    attributes.extend(entry_attrs);
                    if !unwound {
                        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut attributes, &mut error);
                    }
                }
                if unwound {
                    attributes.push(KeyValue::new(UNWOUND_ATTRIBUTE, true));
                    status = Some(Status::error(UNWOUND_MESSAGE));
                }
                let dropped = attributes.len().saturating_sub(self.max_attributes);
                attributes.truncate(self.max_attributes);
                self.stats.spans += 1;
                Some(SpanData {
                    span_context: SpanContext::new(
                        trace_id,
                        SpanId::from_bytes(h.span_id.to_be_bytes()),
                        TraceFlags::SAMPLED,
                        false,
                        TraceState::default(),
                    ),
                    parent_span_id: if h.parent_span_id == 0 {
                        SpanId::INVALID
                    } else {
                        SpanId::from_bytes(h.parent_span_id.to_be_bytes())
                    },
                    parent_span_is_remote: h.flags & SPAN_PARENT_REMOTE != 0,
                    span_kind: kind,
                    name,
                    start_time: self.clock.wall(h.start_ns),
                    end_time: self.clock.wall(h.end_ns),
                    attributes,
                    dropped_attributes_count: dropped as u32,
                    events: SpanEvents::default(),
                    links: SpanLinks::default(),
                    status: match (status, error) {
                        (Some(s), _) => s,
                        (None, Some(msg)) => Status::error(msg),
                        (None, None) => Status::Unset,
                    },
                    instrumentation_scope: self.scope.clone(),
                })
            }
        }
    }
}

/// Synthetic kernel records through the factory: the pairing of entry values with their return,
/// unwound calls, remote parents and sampling, limits and what is counted.
#[cfg(test)]
mod tests {
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
        let client = ProbeSpans::new(
            "net/http.(*Transport).roundTrip",
            Some(("/usr/local/go/src/net/http/transport.go", 555)),
            Vec::new(),
            Some(&instrumentations::http_client::HTTP_CLIENT),
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
}
