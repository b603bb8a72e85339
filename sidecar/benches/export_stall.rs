//! Latency of single OTLP/HTTP exports with the exporter gotel uses (opentelemetry-otlp,
//! `reqwest-blocking-client`), called two ways:
//!
//! * `worker`: awaited on a tokio multi-thread runtime's worker, as `export::export_loop` does;
//! * `thread`: on a dedicated OS thread that drives the export future itself (a current-thread
//!   runtime's `block_on`), as the OpenTelemetry SDK's BatchSpanProcessor does.
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
            attributes: vec![
                KeyValue::new("code.function.name", "main.work"),
                KeyValue::new("thread.id", 4243i64),
            ],
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

fn main() {
    let n: usize = env_or("BENCH_EXPORTS", 400);
    let size: usize = env_or("BENCH_BATCH", 512);
    let spans = batch(size);
    let mut results = Vec::new();

    // gotel's way: awaited on a runtime worker (2 workers, as gotel's main).
    {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let spans = spans.clone();
        let r = rt.block_on(async move {
            tokio::spawn(async move {
                let exp = exporter();
                let (mut lat, mut failures) = (Vec::with_capacity(n), 0);
                let start = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    if exp.export(spans.clone()).await.is_err() {
                        failures += 1;
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                stats("worker", lat, failures, start.elapsed().as_secs_f64())
            })
            .await
            .unwrap()
        });
        eprintln!("export_stall: {r}");
        results.push(r);
    }

    // The SDK's way: a dedicated thread drives the export.
    {
        let spans = spans.clone();
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let exp = exporter();
            let (mut lat, mut failures) = (Vec::with_capacity(n), 0);
            let start = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                if rt.block_on(exp.export(spans.clone())).is_err() {
                    failures += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            stats("thread", lat, failures, start.elapsed().as_secs_f64())
        })
        .join()
        .unwrap();
        eprintln!("export_stall: {r}");
        results.push(r);
    }

    let text = serde_json::to_string_pretty(&json!({ "batch": size, "results": results })).unwrap();
    match std::env::var("BENCH_OUT") {
        Ok(path) if !path.is_empty() => std::fs::write(&path, text + "\n").expect("BENCH_OUT"),
        _ => println!("{text}"),
    }
}
