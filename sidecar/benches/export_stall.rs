//! Latency of single OTLP/HTTP exports with the exporter as gotel's features build it
//! (opentelemetry-otlp `http-proto`; with `reqwest-client` enabled the async client wins), called
//! three ways:
//!
//! * `thread`: on a dedicated OS thread that drives the export future itself (a current-thread
//!   runtime's `block_on`), as the OpenTelemetry SDK's BatchSpanProcessor does;
//! * `worker`: awaited in a fresh task on a tokio multi-thread runtime's worker, one per export;
//! * `worker-task`: one long-lived task on a worker awaiting one export after the other, the
//!   shape of `export::export_loop`.
//!
//! A regression check: with the blocking reqwest client awaited on a runtime worker, exports
//! stalled for the whole client timeout (or for good) every few hundred exports, and the bounded
//! queue dropped everything meanwhile.
//!
//! Each mode gets `BENCH_DEADLINE_SECS` (default 60); a mode still waiting on an export then is
//! reported as hung with the number of exports it completed.
//!
//! bench/run.sh runs it against bench/goapps/sink; by hand:
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT cargo bench -p gotel --bench export_stall`.
//! Environment: `BENCH_EXPORTS` (exports per mode, default 400), `BENCH_BATCH` (spans per
//! export, default 512), `BENCH_OUT` (JSON results; default stdout).
use std::{
    borrow::Cow,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use serde_json::json;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn batch(n: usize) -> Vec<SpanData> {
    let scope = InstrumentationScope::builder("gotel").build();
    let now = SystemTime::now();
    (0..n)
        .map(|i| SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([7; 16]),
                SpanId::from_bytes((i as u64 + 1).to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("main.work"),
            start_time: now,
            end_time: now + Duration::from_micros(3),
            attributes: vec![KeyValue::new("code.function.name", "main.work"), KeyValue::new("thread.id", 4243i64)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        })
        .collect()
}

fn exporter() -> opentelemetry_otlp::SpanExporter {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .expect("OTLP/HTTP exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")
}

fn stats(mode: &str, mut lat: Vec<f64>, failures: u64, wall: f64) -> serde_json::Value {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    json!({
        "mode": mode,
        "exports": lat.len(),
        "failures": failures,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": q(1.0),
        "stalls_over_1s": lat.iter().filter(|&&l| l > 1000.0).count(),
        "wall_seconds": wall,
    })
}

/// Exports done so far by the running mode (for the report when it hangs).
static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn measure(mode: &'static str, n: usize, spans: Vec<SpanData>) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    if mode == "worker-task" {
        // gotel's shape exactly (export::export_loop): one long-lived task on a runtime worker
        // awaiting one export after the other.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        return rt.block_on(async move {
            tokio::spawn(async move {
                let exp = exporter();
                let (mut lat, mut failures) = (Vec::with_capacity(n), 0);
                let start = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    failures += exp.export(spans.clone()).await.is_err() as u64;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    DONE.store(lat.len(), Relaxed);
                    if t.elapsed() > Duration::from_secs(1) {
                        eprintln!("export_stall: {mode}: export {} took {:?}", lat.len(), t.elapsed());
                    }
                }
                stats(mode, lat, failures, start.elapsed().as_secs_f64())
            })
            .await
            .unwrap()
        });
    }
    let exp = exporter();
    let (mut lat, mut failures) = (Vec::with_capacity(n), 0);
    let start = Instant::now();
    let rt = (mode == "thread").then(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap());
    let worker = (mode == "worker")
        .then(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
    let exp = std::sync::Arc::new(exp);
    for _ in 0..n {
        let t = Instant::now();
        let ok = match (&rt, &worker) {
            // The SDK's way: this dedicated thread drives the export future.
            (Some(rt), _) => rt.block_on(exp.export(spans.clone())).is_ok(),
            // Awaited inside a fresh task on a runtime worker, one task per export.
            (_, Some(w)) => {
                let (exp, spans) = (exp.clone(), spans.clone());
                w.block_on(async move { tokio::spawn(async move { exp.export(spans).await.is_ok() }).await.unwrap() })
            }
            _ => unreachable!(),
        };
        failures += (!ok) as u64;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        DONE.store(lat.len(), Relaxed);
        if t.elapsed() > Duration::from_secs(1) {
            eprintln!("export_stall: {mode}: export {} took {:?}", lat.len(), t.elapsed());
        }
    }
    stats(mode, lat, failures, start.elapsed().as_secs_f64())
}

fn main() {
    use std::sync::atomic::Ordering::Relaxed;
    let n: usize = env_or("BENCH_EXPORTS", 400);
    let size: usize = env_or("BENCH_BATCH", 512);
    let deadline = Duration::from_secs(env_or("BENCH_DEADLINE_SECS", 60));
    let spans = batch(size);
    let mut results = Vec::new();
    for mode in ["thread", "worker", "worker-task"] {
        DONE.store(0, Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let spans = spans.clone();
        std::thread::spawn(move || {
            let _ = tx.send(measure(mode, n, spans));
        });
        let r = match rx.recv_timeout(deadline) {
            Ok(r) => r,
            // Left behind: the process exits at the end without joining it.
            Err(_) => {
                json!({ "mode": mode, "hung": true, "exports_completed": DONE.load(Relaxed), "deadline_seconds": deadline.as_secs() })
            }
        };
        eprintln!("export_stall: {r}");
        results.push(r);
    }
    let text =
        serde_json::to_string_pretty(&json!({ "batch": size, "exports_per_mode": n, "results": results })).unwrap();
    match std::env::var("BENCH_OUT") {
        Ok(path) if !path.is_empty() => std::fs::write(&path, text + "\n").expect("BENCH_OUT"),
        _ => println!("{text}"),
    }
    std::process::exit(0);
}
