//! Turning kernel records into OpenTelemetry spans: names, ids, parents and wall-clock times
//! come from the kernel; the code location and the probe's attributes from the plan.
//!
//! Built-in probes may be helpers (their captures join the enclosing call's, which `finish`
//! reads: the gRPC status written during the server span) or closers (a span whose `finish`
//! leaves it open, a gRPC client stream, is held until its closer's record ends it).
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
    instrumentations::{self, Library, Role, SpanProbe, OPEN},
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

/// Spans left open until a closer ends them (gRPC client streams), likewise bounded.
const MAX_OPEN: usize = 16384;

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
    library: Option<(Library, &'static SpanProbe)>,
    /// Spans, a helper (its captures go to the parent call's pending entry values) or a closer.
    role: Role,
}

impl ProbeSpans {
    fn new(
        name: &str,
        source: Option<(&str, u32)>,
        slots: Vec<AttrSlot>,
        library: Option<(Library, &'static SpanProbe)>,
    ) -> ProbeSpans {
        let name = intern(name);
        let mut fixed = vec![KeyValue::new("code.function.name", name)];
        if let Some((file, line)) = source {
            fixed.push(KeyValue::new("code.file.path", intern(file)));
            fixed.push(KeyValue::new("code.line.number", line as i64));
        }
        ProbeSpans { name: Cow::Borrowed(name), fixed, slots, library, role: Role::Span }
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
    /// Open spans exported before a closer ended them (too many open, or gotel stopped): their
    /// end is when they were opened.
    pub open_unclosed: u64,
}

pub struct SpanFactory {
    probes: Vec<ProbeSpans>,
    pending: HashMap<u64, Vec<KeyValue>>,
    pending_order: VecDeque<u64>,
    /// Spans left open until a closer ends them, by their [`OPEN`] value (oldest first).
    open: HashMap<i64, SpanData>,
    open_order: VecDeque<i64>,
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
                let library = p.library.zip(p.span_probe);
                ProbeSpans {
                    role: p.role,
                    ..ProbeSpans::new(&p.function.name, source, p.attributes.slots.clone(), library)
                }
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
            open: HashMap::new(),
            open_order: VecDeque::new(),
            clock: Clock::calibrate(),
            sampler,
            scope: InstrumentationScope::builder("gotel").with_version(env!("CARGO_PKG_VERSION")).build(),
            names,
            max_attributes,
            thread_ids: false,
            stats: SpanStats::default(),
        }
    }

    /// Keeps `attrs` until the return of call `span_id` (bounded: the oldest are evicted).
    fn pend(&mut self, span_id: u64, attrs: Vec<KeyValue>) {
        if let Some(existing) = self.pending.get_mut(&span_id) {
            existing.extend(attrs);
            return;
        }
        if self.pending.len() >= MAX_PENDING_ENTRIES {
            while let Some(old) = self.pending_order.pop_front() {
                if self.pending.remove(&old).is_some() {
                    self.stats.pending_evicted += 1;
                    break;
                }
            }
        }
        self.pending.insert(span_id, attrs);
        self.pending_order.push_back(span_id);
        if self.pending_order.len() > 2 * MAX_PENDING_ENTRIES {
            let pending = &self.pending;
            self.pending_order.retain(|id| pending.contains_key(id));
        }
    }

    /// A helper probe's call returned: what its `finish` makes of the captures joins the
    /// captures of the enclosing call (the unit's span, which returns later on the same
    /// goroutine). A helper call that was unwound, or ran outside any traced call, adds nothing.
    fn helper_done(&mut self, parent: u64, probe_id: u32, entry: Vec<KeyValue>, rec: Record<'_>, unwound: bool) {
        let probe = &self.probes[probe_id as usize];
        let Some((_, span)) = probe.library else { return };
        if unwound || parent == 0 {
            return;
        }
        let mut raw = entry;
        let mut error = None;
        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut raw, &mut error);
        let done = instrumentations::finish(span, raw, error);
        self.pend(parent, done.attributes);
    }

    /// A closer's call: ends the open span its `finish` names, with this call's end, status and
    /// attributes.
    fn closer_done(&mut self, probe_id: u32, entry: Vec<KeyValue>, rec: Record<'_>, unwound: bool) -> Option<SpanData> {
        let probe = &self.probes[probe_id as usize];
        let (_, span) = probe.library?;
        if unwound {
            return None;
        }
        let mut raw = entry;
        let mut error = None;
        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut raw, &mut error);
        let mut done = instrumentations::finish(span, raw, error);
        let key = instrumentations::int(instrumentations::take(&mut done.attributes, OPEN))?;
        let mut open = self.open.remove(&key)?;
        open.end_time = self.clock.wall(rec.header.end_ns).max(open.start_time);
        open.status = done.status;
        for kv in done.attributes {
            match open.attributes.iter_mut().find(|a| a.key == kv.key) {
                Some(a) => *a = kv,
                None => open.attributes.push(kv),
            }
        }
        Some(open)
    }

    /// Holds `span` open under `key`; returns the oldest open span when too many are.
    fn hold_open(&mut self, key: i64, span: SpanData) -> Option<SpanData> {
        let mut evicted = None;
        if self.open.len() >= MAX_OPEN {
            while let Some(old) = self.open_order.pop_front() {
                if let Some(s) = self.open.remove(&old) {
                    self.stats.open_unclosed += 1;
                    evicted = Some(s);
                    break;
                }
            }
        }
        self.open.insert(key, span);
        self.open_order.push_back(key);
        if self.open_order.len() > 2 * MAX_OPEN {
            let open = &self.open;
            self.open_order.retain(|k| open.contains_key(k));
        }
        evicted
    }

    /// The spans still open (gotel is stopping): exported as they are, counted.
    pub fn take_open(&mut self) -> Vec<SpanData> {
        self.open_order.clear();
        let spans: Vec<SpanData> = self.open.drain().map(|(_, s)| s).collect();
        self.stats.open_unclosed += spans.len() as u64;
        spans
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
                let mut attrs = Vec::with_capacity(probe.slots.len());
                let mut status = None;
                values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut attrs, &mut status);
                self.pend(h.span_id, attrs);
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
                match probe.role {
                    Role::Span => {}
                    Role::Helper => {
                        self.helper_done(h.parent_span_id, h.probe_id, entry_attrs, rec, unwound);
                        return None;
                    }
                    Role::Closer => return self.closer_done(h.probe_id, entry_attrs, rec, unwound),
                }
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
                let mut error = None;
                let mut status = None;
                let mut opened = None;
                // A built-in span's name and attributes are its finish's, moved (no copy per span).
                let (mut attributes, name, kind) = if let Some((_, span)) = probe.library {
                    let mut raw = entry_attrs;
                    if !unwound {
                        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut raw, &mut error);
                    }
                    let mut done = instrumentations::finish(span, raw, error.take());
                    opened = instrumentations::int(instrumentations::take(&mut done.attributes, OPEN));
                    status = Some(done.status);
                    // No code.* here: they would name net/http's internals, not the user's code.
                    let mut attributes = done.attributes;
                    if self.thread_ids && h.tid != 0 {
                        attributes.push(KeyValue::new("thread.id", h.tid as i64));
                    }
                    (attributes, Cow::Owned(done.name), span.kind.clone())
                } else {
                    let mut attributes = Vec::with_capacity(probe.fixed.len() + entry_attrs.len() + 4);
                    attributes.extend(probe.fixed.iter().cloned());
                    if self.thread_ids && h.tid != 0 {
                        attributes.push(KeyValue::new("thread.id", h.tid as i64));
                    }
                    attributes.extend(entry_attrs);
                    if !unwound {
                        values::decode(&probe.slots, rec.data, self.names.as_ref(), &mut attributes, &mut error);
                    }
                    (attributes, probe.name.clone(), SpanKind::Internal)
                };
                if unwound {
                    attributes.push(KeyValue::new(UNWOUND_ATTRIBUTE, true));
                    status = Some(Status::error(UNWOUND_MESSAGE));
                }
                let dropped = attributes.len().saturating_sub(self.max_attributes);
                attributes.truncate(self.max_attributes);
                self.stats.spans += 1;
                let span = SpanData {
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
                };
                match opened {
                    Some(key) if !unwound => self.hold_open(key, span),
                    _ => Some(span),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
