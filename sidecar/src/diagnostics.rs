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
//! Node mode's endpoint (its series, labels and health) is `diagnostics/node.rs`.
use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{attach::KernelCounters, exit::Failure, export::ExportStats, spans::SpanStats};
use gotel_shared::{Counter, NUM_COUNTERS};

mod node;
pub use node::{NodeMetrics, TargetMetrics, NOT_TRACED_REASONS};

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
    pub(super) fn assert_valid_exposition(text: &str) {
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
