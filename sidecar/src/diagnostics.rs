//! gotel's own health: counters shared by the session, served on an opt-in Prometheus
//! `/metrics` endpoint with a `/healthz` for orchestrators (`GOTEL_METRICS_ADDR`), and
//! optional traces of gotel's own start-up (`GOTEL_SELF_TRACES=true`, through
//! tracing-opentelemetry, service.name `gotel`).
//!
//! [`SessionMetrics`] is the one place where the counts of a session (kernel counters, span
//! factory, export pipeline) become these run-wide totals. In node mode [`NodeMetrics`] serves
//! every live target's families on the one endpoint, each sample labelled with its target, so
//! the two outputs share one list of families ([`Metrics::rows`]) and cannot drift apart.
//!
//! Over 600 lines with its tests (about 280): the exposition rules (families, labels, escaping)
//! and the tests that hold the output to them belong together.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{attach::KernelCounters, exit::Failure, export::ExportStats, spans::SpanStats};
use gotel_shared::{Counter, NUM_COUNTERS};

/// Totals over the whole run (all sessions), updated by the session's drain loop.
#[derive(Debug, Default)]
pub struct Metrics {
    pub attached: AtomicU64,
    pub target_pid: AtomicU64,
    pub uprobes: AtomicU64,
    pub calls: AtomicU64,
    pub spans: AtomicU64,
    pub spans_exported: AtomicU64,
    pub lost_ring_buffer_full: AtomicU64,
    pub lost_queue_full: AtomicU64,
    pub lost_export_failed: AtomicU64,
    pub export_failures: AtomicU64,
    pub abandoned: AtomicU64,
    pub unmatched_returns: AtomicU64,
    pub depth_overflow: AtomicU64,
    pub goroutines_tracked: AtomicU64,
    pub sampled_out: AtomicU64,
    pub malformed_records: AtomicU64,
    pub entry_values_evicted: AtomicU64,
    pub export_requests_split: AtomicU64,
    /// Every kernel counter (`gotel_shared::Counter` index), run-wide: the ones without a
    /// field above (morestack re-entries, the instrumentations' own) are rendered from here.
    pub kernel: KernelTotals,
}

/// Run-wide kernel counters by `gotel_shared::Counter` index (arrays of 64 have no `Default`).
#[derive(Debug)]
pub struct KernelTotals(pub [AtomicU64; NUM_COUNTERS as usize]);

impl Default for KernelTotals {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// One metric family of a session and its value: `name` without the `gotel_` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    pub value: u64,
}

/// `# HELP` and `# TYPE` of a family, once before its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP gotel_{name} {help}\n# TYPE gotel_{name} {kind}");
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in self.rows() {
            family(&mut out, &r.name, r.kind, &r.help);
            let _ = writeln!(out, "gotel_{} {}", r.name, r.value);
        }
        out
    }

    /// Every family with its value now, in the order they are served.
    pub fn rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        let mut put = |name: &str, kind: &'static str, help: &str, v: &AtomicU64| {
            out.push(Row { name: name.to_string(), kind, help: help.to_string(), value: v.load(Relaxed) });
        };
        put("attached", "gauge", "1 while probes are attached to a target", &self.attached);
        put("target_pid", "gauge", "pid of the traced process (0 when none)", &self.target_pid);
        put("uprobes", "gauge", "uprobes attached", &self.uprobes);
        put("calls_total", "counter", "traced calls started", &self.calls);
        put("spans_total", "counter", "spans built from returned calls", &self.spans);
        put("spans_exported_total", "counter", "spans the exporter accepted", &self.spans_exported);
        put(
            "events_lost_ring_buffer_full_total",
            "counter",
            "records lost because the kernel ring buffer was full",
            &self.lost_ring_buffer_full,
        );
        put(
            "spans_dropped_queue_full_total",
            "counter",
            "spans dropped because the export queue was full",
            &self.lost_queue_full,
        );
        put(
            "spans_dropped_export_failed_total",
            "counter",
            "spans dropped after export retries failed",
            &self.lost_export_failed,
        );
        put("export_failures_total", "counter", "failed export attempts (retried)", &self.export_failures);
        put("calls_abandoned_total", "counter", "calls unwound by panic or runtime.Goexit", &self.abandoned);
        put("returns_unmatched_total", "counter", "returns without a tracked entry", &self.unmatched_returns);
        put(
            "calls_depth_overflow_total",
            "counter",
            "calls not traced because nesting exceeded the per-goroutine limit",
            &self.depth_overflow,
        );
        put(
            "goroutines_tracked",
            "gauge",
            "goroutines the kernel keeps a record for (LRU map): traced calls in progress, or an HTTP connection goroutine between requests",
            &self.goroutines_tracked,
        );
        put("spans_sampled_out_total", "counter", "spans the sampler dropped", &self.sampled_out);
        put("records_malformed_total", "counter", "kernel records that could not be decoded", &self.malformed_records);
        put(
            "entry_values_evicted_total",
            "counter",
            "values captured at entry dropped before their call returned (bounded table)",
            &self.entry_values_evicted,
        );
        put(
            "export_requests_split_total",
            "counter",
            "export requests split for the collector's size limit",
            &self.export_requests_split,
        );
        let kernel = |c: Counter| &self.kernel.0[c as usize];
        put(
            "morestack_reentries_total",
            "counter",
            "entry probes re-run by runtime.morestack, ignored",
            kernel(Counter::MorestackReentry),
        );
        put(
            "goroutine_state_insert_failed_total",
            "counter",
            "calls not tracked because the goroutine map was full",
            kernel(Counter::StateInsertFailed),
        );
        put(
            "goroutines_reused_total",
            "counter",
            "goroutine records cleared for a reused g",
            kernel(Counter::GoroutineReused),
        );
        // The instrumentations' own counters (`traceparent_adopted`...), from the registry.
        for unit in crate::instrumentations::ALL {
            for (name, c) in unit.counters {
                put(
                    &format!("{name}_total"),
                    "counter",
                    &format!("counted by the {} instrumentation", unit.name),
                    kernel(*c),
                );
            }
        }
        out
    }
}

/// Run-wide totals at the start of a session: a restarted `--exe` target adds to them, so the
/// counters only grow.
#[derive(Debug, Clone, Copy)]
struct Base {
    calls: u64,
    spans: u64,
    ring: u64,
    abandoned: u64,
    unmatched: u64,
    overflow: u64,
    exported: u64,
    queue_full: u64,
    export_failed: u64,
    export_failures: u64,
    sampled_out: u64,
    malformed: u64,
    evicted: u64,
    split: u64,
    kernel: [u64; NUM_COUNTERS as usize],
}

/// The metrics as one session updates them.
pub struct SessionMetrics<'a> {
    m: &'a Metrics,
    base: Base,
}

impl Metrics {
    /// Starts the bookkeeping of a new session.
    pub fn session(&self) -> SessionMetrics<'_> {
        let m = self;
        let base = Base {
            calls: m.calls.load(Relaxed),
            spans: m.spans.load(Relaxed),
            ring: m.lost_ring_buffer_full.load(Relaxed),
            abandoned: m.abandoned.load(Relaxed),
            unmatched: m.unmatched_returns.load(Relaxed),
            overflow: m.depth_overflow.load(Relaxed),
            exported: m.spans_exported.load(Relaxed),
            queue_full: m.lost_queue_full.load(Relaxed),
            export_failed: m.lost_export_failed.load(Relaxed),
            export_failures: m.export_failures.load(Relaxed),
            sampled_out: m.sampled_out.load(Relaxed),
            malformed: m.malformed_records.load(Relaxed),
            evicted: m.entry_values_evicted.load(Relaxed),
            split: m.export_requests_split.load(Relaxed),
            kernel: std::array::from_fn(|i| m.kernel.0[i].load(Relaxed)),
        };
        SessionMetrics { m, base }
    }
}

impl SessionMetrics<'_> {
    pub fn attached(&self, pid: u32, uprobes: usize) {
        self.m.attached.store(1, Relaxed);
        self.m.target_pid.store(pid as u64, Relaxed);
        self.m.uprobes.store(uprobes as u64, Relaxed);
    }

    pub fn detached(&self) {
        self.m.attached.store(0, Relaxed);
        self.m.target_pid.store(0, Relaxed);
    }

    /// The session's counts so far (`export` is `None` when exporting is off).
    pub fn publish(&self, k: &KernelCounters, s: &SpanStats, export: Option<&ExportStats>, goroutines: Option<u64>) {
        let (m, b) = (self.m, &self.base);
        m.calls.store(b.calls + k.get(Counter::Entries), Relaxed);
        m.spans.store(b.spans + s.spans, Relaxed);
        m.lost_ring_buffer_full.store(b.ring + k.get(Counter::RingBufferFull), Relaxed);
        m.abandoned.store(b.abandoned + k.get(Counter::Abandoned), Relaxed);
        m.unmatched_returns.store(b.unmatched + k.get(Counter::UnmatchedReturn), Relaxed);
        m.depth_overflow.store(b.overflow + k.get(Counter::DepthOverflow), Relaxed);
        m.sampled_out.store(b.sampled_out + s.sampled_out, Relaxed);
        m.malformed_records.store(b.malformed + s.malformed_records, Relaxed);
        m.entry_values_evicted.store(b.evicted + s.pending_evicted, Relaxed);
        for (i, total) in m.kernel.0.iter().enumerate() {
            total.store(b.kernel[i] + k.0[i], Relaxed);
        }
        if let Some(e) = export {
            m.export_requests_split.store(b.split + e.requests_split.load(Relaxed), Relaxed);
            m.spans_exported.store(b.exported + e.exported.load(Relaxed), Relaxed);
            m.lost_queue_full.store(b.queue_full + e.dropped_queue_full.load(Relaxed), Relaxed);
            m.lost_export_failed.store(b.export_failed + e.dropped_export_failed.load(Relaxed), Relaxed);
            m.export_failures.store(b.export_failures + e.export_failures.load(Relaxed), Relaxed);
        }
        if let Some(g) = goroutines {
            m.goroutines_tracked.store(g, Relaxed);
        }
    }
}

/// What `serve` exposes: one session's metrics, or the node agent's (`NodeMetrics`).
pub trait Exposition: Send + Sync + 'static {
    /// The `/metrics` body.
    fn exposition(&self) -> String;
    /// The `/healthz` body: `Ok` is a 200, `Err` a 503.
    fn health(&self) -> Result<String, String>;
}

impl Exposition for Metrics {
    fn exposition(&self) -> String {
        self.render()
    }

    fn health(&self) -> Result<String, String> {
        match self.attached.load(Relaxed) {
            1 => Ok("attached\n".into()),
            _ => Err("not attached\n".into()),
        }
    }
}

/// Node mode (`node.rs`): every live target's session metrics, each sample labelled with its
/// target, and the agent's own series (`gotel_node_*`).
///
/// A target whose session ended leaves the per-target series (a node traces thousands of short
/// lived processes over its life: their series would grow without bound), and its counts are
/// folded into the `gotel_node_*_total` sums of the main counters, which therefore never go
/// down: `rate(gotel_node_spans_total[5m])` is the node's throughput across restarts.
#[derive(Default)]
pub struct NodeMetrics {
    /// When the `/proc` scan loop last completed a pass (`None` before the first).
    scanned: Mutex<Option<Instant>>,
    sessions_started: AtomicU64,
    next: AtomicU64,
    /// Live targets by (pid, registration order).
    targets: Mutex<BTreeMap<(u32, u64), Arc<TargetMetrics>>>,
    ended: Mutex<Ended>,
}

/// What the targets that left the per-target series counted.
#[derive(Default)]
struct Ended {
    targets: u64,
    not_traced: BTreeMap<&'static str, u64>,
    totals: BTreeMap<String, u64>,
}

/// One target of node mode: its labels and the metrics its session updates.
pub struct TargetMetrics {
    key: (u32, u64),
    /// Prometheus label names and values (`pid`, `service_name`, `k8s_*`), in this order.
    labels: Vec<(&'static str, String)>,
    pub metrics: Metrics,
}

/// Why a selected process is not traced (`gotel_node_processes_not_traced_total{reason}`).
pub const NOT_TRACED_REASONS: [&str; 5] = ["exited", "target", "config", "environment", "internal"];

/// The session counters summed over every target, ended ones included, as `gotel_node_NAME`.
const NODE_TOTALS: [&str; 7] = [
    "calls_total",
    "spans_total",
    "spans_exported_total",
    "events_lost_ring_buffer_full_total",
    "spans_dropped_queue_full_total",
    "spans_dropped_export_failed_total",
    "export_failures_total",
];

/// `/healthz` is a 503 when the scan loop has not completed a pass for this long: far above
/// its period (500 ms) and the API server's timeout (10 s), so only a stuck agent fails.
const SCAN_STALE: Duration = Duration::from_secs(30);

impl NodeMetrics {
    /// The scan loop completed a pass.
    pub fn scanned(&self) {
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// A session starts for `pid`; `labels` are (name, value) without `pid`.
    pub fn start(&self, pid: u32, labels: Vec<(&'static str, String)>) -> Arc<TargetMetrics> {
        self.sessions_started.fetch_add(1, Relaxed);
        let key = (pid, self.next.fetch_add(1, Relaxed));
        let mut all = vec![("pid", pid.to_string())];
        all.extend(labels);
        let t = Arc::new(TargetMetrics { key, labels: all, metrics: Metrics::default() });
        lock(&self.targets).insert(key, t.clone());
        t
    }

    /// The session of `t` ended: traced until then (`None`), or not traced for `reason`
    /// (one of `NOT_TRACED_REASONS`).
    pub fn end(&self, t: &TargetMetrics, not_traced: Option<&'static str>) {
        let rows = t.metrics.rows();
        let mut ended = lock(&self.ended);
        match not_traced {
            None => ended.targets += 1,
            Some(reason) => *ended.not_traced.entry(reason).or_default() += 1,
        }
        for r in rows.into_iter().filter(|r| NODE_TOTALS.contains(&r.name.as_str())) {
            *ended.totals.entry(r.name).or_default() += r.value;
        }
        // Removed under the `ended` lock, so a concurrent render never counts it twice.
        lock(&self.targets).remove(&t.key);
    }

    /// Prometheus text: the node's series, then each session family with one sample per live
    /// target.
    pub fn render(&self) -> String {
        let ended = lock(&self.ended);
        let mut targets: Vec<Arc<TargetMetrics>> = lock(&self.targets).values().cloned().collect();
        // A pid whose old session has not ended yet when a new one starts (a rare exec of one Go
        // program into another): only the newer is served, so no two samples share labels.
        targets.reverse();
        targets.dedup_by_key(|t| t.key.0);
        targets.reverse();
        let rows: Vec<Vec<Row>> = targets.iter().map(|t| t.metrics.rows()).collect();
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "gotel_{name} {v}");
        };
        put("node_watching", "gauge", "1 while the agent scans /proc for processes to trace", self.healthy() as u64);
        put("node_targets", "gauge", "processes with a session now (attaching or attached)", targets.len() as u64);
        put(
            "node_sessions_started_total",
            "counter",
            "sessions started for selected processes",
            self.sessions_started.load(Relaxed),
        );
        put("node_targets_ended_total", "counter", "traced processes whose session ended", ended.targets);
        for f in Metrics::default().rows().iter().filter(|f| NODE_TOTALS.contains(&f.name.as_str())) {
            let live: u64 = rows.iter().flatten().filter(|r| r.name == f.name).map(|r| r.value).sum();
            let total = live + ended.totals.get(&f.name).copied().unwrap_or(0);
            let help = format!("{}, over every target of this run (ended ones included)", f.help);
            put(&format!("node_{}", f.name), "counter", &help, total);
        }
        let name = "node_processes_not_traced_total";
        family(&mut out, name, "counter", "selected processes gotel did not trace, by reason");
        for reason in NOT_TRACED_REASONS {
            let v = ended.not_traced.get(reason).copied().unwrap_or(0);
            let _ = writeln!(out, "gotel_{name}{{reason=\"{reason}\"}} {v}");
        }
        let Some(first) = rows.first() else { return out };
        for (i, f) in first.iter().enumerate() {
            family(&mut out, &f.name, f.kind, &f.help);
            for (t, r) in targets.iter().zip(&rows) {
                let _ = writeln!(out, "gotel_{}{} {}", f.name, label_set(&t.labels), r[i].value);
            }
        }
        out
    }

    fn healthy(&self) -> bool {
        lock(&self.scanned).is_some_and(|t| t.elapsed() < SCAN_STALE)
    }
}

impl Exposition for NodeMetrics {
    fn exposition(&self) -> String {
        self.render()
    }

    fn health(&self) -> Result<String, String> {
        let targets = lock(&self.targets).len();
        match (self.healthy(), *lock(&self.scanned)) {
            (true, _) => Ok(format!("watching, {targets} targets\n")),
            (false, None) => Err("not watching yet\n".into()),
            (false, Some(t)) => Err(format!("the /proc scan is stuck: last pass {} s ago\n", t.elapsed().as_secs())),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `{name="value",...}` with values escaped as the text format says: `\\`, `\"`, `\n`.
fn label_set(labels: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
    }
    out.push('}');
    out
}

/// Serves `/metrics` and `/healthz` on `addr` (e.g. `0.0.0.0:9464`). Minimal HTTP/1.0: one
/// request per connection, bounded request size, so a misbehaving scraper cannot hurt gotel.
pub async fn serve(addr: &str, metrics: Arc<dyn Exposition>) -> Result<(), Failure> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::config(format!("GOTEL_METRICS_ADDR={addr}: cannot listen: {e}")))?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.exposition()),
                    "/healthz" | "/health" => match metrics.health() {
                        Ok(body) => ("200 OK", body),
                        Err(body) => ("503 Service Unavailable", body),
                    },
                    _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
                };
                let reply = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// With `GOTEL_SELF_TRACES=true`, gotel's own `tracing` spans (open binary, plan, attach) are
/// exported over OTLP/HTTP as service `gotel`, to the same endpoint as the target's spans.
pub fn self_tracing_layer<S>() -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let on = std::env::var("GOTEL_SELF_TRACES").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if !on {
        return None;
    }
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithHttpConfig as _;
    let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(10)).build().ok()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_http_client(client).build().ok()?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder_empty().with_service_name("gotel").build())
        .build();
    let tracer = provider.tracer("gotel");
    SELF_PROVIDER.get_or_init(|| provider);
    Some(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)))
}

static SELF_PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = std::sync::OnceLock::new();

/// Flushes gotel's own spans (if any) before exit.
pub fn shutdown_self_tracing() {
    if let Some(p) = SELF_PROVIDER.get() {
        let _ = p.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.spans.store(7, Relaxed);
        let text = m.render();
        assert!(text.contains("# TYPE gotel_spans_total counter\ngotel_spans_total 7\n"), "{text}");
    }

    #[test]
    fn a_second_session_adds_to_the_totals() {
        let m = Metrics::default();
        let mut k = KernelCounters::default();
        k.0[Counter::Entries as usize] = 5;
        let s = SpanStats { spans: 4, ..Default::default() };
        let e = ExportStats::default();
        e.exported.store(3, Relaxed);
        let first = m.session();
        first.attached(42, 2);
        first.publish(&k, &s, Some(&e), Some(9));
        first.publish(&k, &s, Some(&e), None);
        first.detached();
        assert_eq!((m.calls.load(Relaxed), m.spans.load(Relaxed), m.spans_exported.load(Relaxed)), (5, 4, 3));
        assert_eq!((m.attached.load(Relaxed), m.target_pid.load(Relaxed)), (0, 0));
        assert_eq!(m.goroutines_tracked.load(Relaxed), 9);
        let second = m.session();
        second.publish(&k, &s, None, None);
        assert_eq!((m.calls.load(Relaxed), m.spans.load(Relaxed), m.spans_exported.load(Relaxed)), (10, 8, 3));
    }

    /// Every count the session summary logs is on /metrics too, run-wide (issue 16).
    #[test]
    fn every_counter_is_served() {
        let m = Metrics::default();
        let mut k = KernelCounters::default();
        k.0[Counter::TraceparentInvalid as usize] = 3;
        k.0[Counter::MorestackReentry as usize] = 2;
        let s = SpanStats { sampled_out: 6, malformed_records: 1, pending_evicted: 4, ..Default::default() };
        let e = ExportStats::default();
        e.requests_split.store(5, Relaxed);
        for _ in 0..2 {
            m.session().publish(&k, &s, Some(&e), None);
        }
        let text = m.render();
        for line in [
            "gotel_traceparent_invalid_total 6",
            "gotel_traceparent_adopted_total 0",
            "gotel_traceparent_injected_total 0",
            "gotel_morestack_reentries_total 4",
            "gotel_spans_sampled_out_total 12",
            "gotel_records_malformed_total 2",
            "gotel_entry_values_evicted_total 8",
            "gotel_export_requests_split_total 10",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    /// The text format's rules a scraper enforces: one `# HELP` and `# TYPE` per family, before
    /// its samples; no two samples with the same name and labels.
    fn assert_valid_exposition(text: &str) {
        let mut typed = HashSet::new();
        let mut helped = HashSet::new();
        let mut samples = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(helped.insert(rest.split(' ').next().unwrap().to_string()), "second HELP: {line}\n{text}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()), "second TYPE: {line}\n{text}");
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<u64>().is_ok(), "{line}");
                let name = series.split('{').next().unwrap();
                assert!(typed.contains(name) && helped.contains(name), "sample before its family: {line}");
                assert!(samples.insert(series.to_string()), "duplicate sample {series}\n{text}");
            }
        }
    }

    #[test]
    fn node_mode_labels_every_target_once_per_family() {
        let node = NodeMetrics::default();
        let a = node.start(10, vec![("service_name", "alpha".into()), ("k8s_namespace", "shop".into())]);
        // Escaped as the text format says: backslash, double quote, newline.
        let b = node.start(7, vec![("service_name", "b\\e\"ta\nx".into())]);
        let mut k = KernelCounters::default();
        k.0[Counter::Entries as usize] = 5;
        let s = SpanStats { spans: 4, ..Default::default() };
        a.metrics.session().publish(&k, &s, None, None);
        b.metrics.session().publish(&k, &SpanStats { spans: 9, ..Default::default() }, None, None);
        let text = node.render();
        assert_valid_exposition(&text);
        for line in [
            "gotel_node_targets 2",
            "gotel_node_sessions_started_total 2",
            "gotel_node_spans_total 13",
            "gotel_node_calls_total 10",
            "gotel_node_processes_not_traced_total{reason=\"target\"} 0",
            // Ordered by pid.
            "# TYPE gotel_spans_total counter\n\
             gotel_spans_total{pid=\"7\",service_name=\"b\\\\e\\\"ta\\nx\"} 9\n\
             gotel_spans_total{pid=\"10\",service_name=\"alpha\",k8s_namespace=\"shop\"} 4\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // An ended target leaves the per-target series; its counts stay in the node's totals.
        node.end(&b, None);
        let c = node.start(3, vec![("service_name", "gamma".into())]);
        node.end(&c, Some("target"));
        let text = node.render();
        assert_valid_exposition(&text);
        for line in [
            "gotel_node_targets 1",
            "gotel_node_sessions_started_total 3",
            "gotel_node_targets_ended_total 1",
            "gotel_node_spans_total 13",
            "gotel_node_processes_not_traced_total{reason=\"target\"} 1",
            "gotel_spans_total{pid=\"10\",service_name=\"alpha\",k8s_namespace=\"shop\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("pid=\"7\"") && !text.contains("pid=\"3\""), "{text}");
        // A second session of one pid before the first ended: only the newer one is served.
        let a2 = node.start(10, vec![("service_name", "alpha".into())]);
        a2.metrics.spans.store(1, Relaxed);
        let text = node.render();
        assert_valid_exposition(&text);
        assert!(text.contains("gotel_spans_total{pid=\"10\",service_name=\"alpha\"} 1\n"), "{text}");
        node.end(&a, None);
        node.end(&a2, None);
        let text = node.render();
        assert_valid_exposition(&text);
        assert!(text.contains("gotel_node_targets 0\n") && text.contains("gotel_node_spans_total 14\n"), "{text}");
        assert!(!text.contains("gotel_spans_total{"), "no live target, no per-target series\n{text}");
    }

    #[test]
    fn node_mode_is_healthy_once_it_scans() {
        let node = NodeMetrics::default();
        assert_eq!(node.health(), Err("not watching yet\n".to_string()));
        assert!(node.render().contains("gotel_node_watching 0\n"));
        node.scanned();
        assert!(node.health().is_ok_and(|b| b.starts_with("watching")));
        assert!(node.render().contains("gotel_node_watching 1\n"));
        *node.scanned.lock().unwrap() = Instant::now().checked_sub(SCAN_STALE);
        assert!(node.health().is_err_and(|b| b.contains("stuck")), "{:?}", node.health());
    }

    #[test]
    fn one_target_output_is_valid_too() {
        assert_valid_exposition(&Metrics::default().render());
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let m = Arc::new(Metrics::default());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        serve(&addr, m.clone()).await.unwrap();
        let get = |path: &'static str| {
            let addr = addr.clone();
            async move {
                let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
                c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).await.unwrap();
                s
            }
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 503"));
        m.attached.store(1, Relaxed);
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").await.contains("gotel_attached 1"));
    }
}
