//! Capacity of gotel's userspace pipeline, fed with synthetic ring-buffer records so the kernel
//! is not the limit: the same code gotel runs per record (`events::parse` ->
//! `SpanFactory::on_record` -> `export::Pipeline::submit` -> batching -> OTLP export), driven
//! through gotel's library API with the plan gotel builds for a real Go binary.
//!
//! Run by `bench/run.sh` (which builds the Go binary and starts an OTLP receiver); by hand:
//!
//! ```sh
//! BENCH_GO_BINARY=bench/.build/loop OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT \
//!   OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf cargo bench -p gotel --bench pipeline
//! ```
//!
//! Environment: `BENCH_GO_BINARY` (required: a Go binary with `main.work`, bench/goapps/loop),
//! `BENCH_OUT` (JSON results, default stdout only), `BENCH_SPANS` (spans per throughput run,
//! default 400000), `BENCH_SWEEP_SECS` (seconds per offered rate, default 2), `BENCH_RATES`
//! (comma-separated calls/s for the loss sweep), `BENCH_ATTRS` / `BENCH_SWEEP_ATTRS` (which
//! variants, default `0,2,8` / `0,8`), `BENCH_CPU` (the CPU gotel's side is pinned to,
//! default 0, -1 = not pinned; the synthetic producer runs on `BENCH_PRODUCER_CPU`, default 1). The pipeline
//! itself reads the usual `OTEL_*` and `GOTEL_RING_BUFFER_BYTES` / `GOTEL_DRAIN_INTERVAL_MS`.
//!
//! Measured, for 0, 2 and 8 attributes per span:
//! * `factory`: records -> SpanData only (ns and heap allocations per span, one thread);
//! * `throughput`: records -> exported OTLP as fast as the exporter takes them, every thread of
//!   the process on one CPU (spans/s, CPU seconds per 100k spans, allocations per span, RSS);
//! * `sweep` (0 and 8 attributes): a producer thread offers calls at a fixed rate into a
//!   simulated ring buffer of `GOTEL_RING_BUFFER_BYTES` that is drained every
//!   `GOTEL_DRAIN_INTERVAL_MS`, exactly as `session::drain` does, with no back-pressure; losses
//!   (ring full, export queue full, export failed) per offered rate.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::VecDeque,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use gotel::{
    attributes::Limits,
    binary::{GoBinary, TypeNameTable},
    events,
    export::{self, Pipeline, ResourceFacts},
    plan::{self, Plan},
    spans::SpanFactory,
    spec,
};
use gotel_shared::{EventHeader, EventKind, ValueHeader, ValueKind};
use serde_json::{json, Value};

// ---- heap allocations, counted ----

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- process facts ----

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn pin_to(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // 0 = the calling thread; threads created afterwards inherit the mask.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn cpu_seconds(who: i32) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---- synthetic records ----

const SAMPLE_TEXT: &[u8] = b"Ada Lovelace, order-service, leave at the door, priority";

fn as_bytes<T>(v: &T) -> &[u8] {
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// The values the kernel would append for the fetches taken at entry (`at_return == 0`) or at
/// return, in the kernel's layout (ValueHeader + payload, padded to 8 bytes).
fn values(plan: &Plan, at_return: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for f in plan.probes[0].attributes.fetches.iter().filter(|f| f.at_return == at_return) {
        let kind = f.kind;
        let (w0, payload): (u64, &[u8]) = if kind == ValueKind::String as u8 {
            let n = SAMPLE_TEXT.len().min(f.max_len as usize);
            (n as u64, &SAMPLE_TEXT[..n])
        } else if kind == ValueKind::Len as u8 || kind == ValueKind::MapLen as u8 {
            (3, &[])
        } else if kind == ValueKind::Interface as u8 {
            (0, &[])
        } else {
            (12345, &[])
        };
        let h = ValueHeader {
            slot: f.slot,
            len: payload.len() as u32,
            word0: w0,
            word1: 0xc0_0001_0000,
            ..Default::default()
        };
        out.extend_from_slice(as_bytes(&h));
        out.extend_from_slice(payload);
        while out.len() % 8 != 0 {
            out.push(0);
        }
    }
    out
}

/// One traced call as the kernel reports it: an optional `EntryValues` record and the `SpanEnd`.
struct CallTemplate {
    entry: Option<Vec<u8>>,
    end: Vec<u8>,
}

const SPAN_ID_OFFSET: usize = std::mem::offset_of!(EventHeader, span_id);

impl CallTemplate {
    fn new(plan: &Plan) -> CallTemplate {
        let now = events::Clock::monotonic_now();
        let record = |kind: EventKind, data: Vec<u8>| {
            let h = EventHeader {
                kind: kind as u32,
                probe_id: 0,
                tgid: 4242,
                tid: 4243,
                goroutine: 0xc0_0000_6000,
                start_ns: now,
                end_ns: if kind == EventKind::SpanEnd { now + 1500 } else { 0 },
                trace_id: *b"0123456789abcdef",
                span_id: 1,
                parent_span_id: 0,
                data_len: data.len() as u32,
                // Fields added later (flags...) stay zero, as for an ordinary call.
                ..Default::default()
            };
            let mut r = as_bytes(&h).to_vec();
            r.extend_from_slice(&data);
            r
        };
        let entry_values = values(plan, 0);
        let has_entry = plan.probes[0].attributes.fetches.iter().any(|f| f.at_return == 0);
        CallTemplate {
            entry: has_entry.then(|| record(EventKind::EntryValues, entry_values)),
            end: record(EventKind::SpanEnd, values(plan, 1)),
        }
    }

    /// Bytes this call takes in the kernel's ring buffer (8-byte record header, 8-byte aligned).
    fn ring_bytes(&self) -> usize {
        let one = |r: &Vec<u8>| 8 + r.len().div_ceil(8) * 8;
        self.entry.as_ref().map(one).unwrap_or(0) + one(&self.end)
    }

    fn records(&self) -> usize {
        1 + self.entry.is_some() as usize
    }
}

/// What `session::drain` does with one record.
#[inline]
fn handle(buf: &mut [u8], span_id: u64, factory: &mut SpanFactory, pipeline: Option<&Pipeline>) {
    buf[SPAN_ID_OFFSET..SPAN_ID_OFFSET + 8].copy_from_slice(&span_id.to_ne_bytes());
    match events::parse(buf) {
        Some(rec) => {
            if let Some(span) = factory.on_record(rec) {
                if let Some(p) = pipeline {
                    p.submit(span);
                } else {
                    std::hint::black_box(span);
                }
            }
        }
        None => factory.stats.malformed_records += 1,
    }
}

struct Scratch {
    entry: Option<Vec<u8>>,
    end: Vec<u8>,
}

impl Scratch {
    fn new(t: &CallTemplate) -> Scratch {
        Scratch { entry: t.entry.clone(), end: t.end.clone() }
    }
    fn call(&mut self, id: u64, factory: &mut SpanFactory, pipeline: Option<&Pipeline>) {
        if let Some(e) = self.entry.as_mut() {
            handle(e, id, factory, pipeline);
        }
        handle(&mut self.end, id, factory, pipeline);
    }
}

// ---- the variants ----

struct Variant {
    name: &'static str,
    attrs: usize,
    spec: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant { name: "0 attributes", attrs: 0, spec: "main.work" },
    Variant { name: "2 attributes", attrs: 2, spec: "main.work(id=id, name=name)" },
    Variant {
        name: "8 attributes",
        attrs: 8,
        spec: "main.work(id=id, name=name, customer=o.Customer.Name, note=o.Note, qty=qty, urgent=urgent, tag=tag, items=len(items))",
    },
];

fn factory_for(plan: &Plan, binary: &Arc<GoBinary>) -> SpanFactory {
    let names = TypeNameTable::new(binary, 0, 0);
    SpanFactory::new(
        plan,
        export::sampler_from_env().expect("sampler"),
        Box::new(names),
        Limits::default().max_attributes,
    )
}

fn resource() -> opentelemetry_sdk::Resource {
    export::resource(&ResourceFacts {
        exe_name: "loop",
        pid: 4242,
        go_version: Some("go1.26"),
        service_name: None,
        extra: &[],
    })
}

fn pipeline() -> Pipeline {
    Pipeline::from_env(resource(), &export::BatchSettings::from_env().expect("OTEL_BSP_*"), false)
        .expect("pipeline settings")
        .expect("exporting is off: set OTEL_TRACES_EXPORTER=otlp")
}

/// Records -> SpanData on this thread only.
fn bench_factory(plan: &Plan, binary: &Arc<GoBinary>, calls: u64) -> Value {
    let t = CallTemplate::new(plan);
    let mut s = Scratch::new(&t);
    let mut f = factory_for(plan, binary);
    for id in 1..=10_000 {
        s.call(id, &mut f, None);
    }
    let a0 = ALLOCS.load(Relaxed);
    let start = Instant::now();
    for id in 0..calls {
        s.call(1_000_000 + id, &mut f, None);
    }
    let el = start.elapsed();
    let allocs = ALLOCS.load(Relaxed) - a0;
    json!({
        "spans": calls,
        "ns_per_span": el.as_nanos() as f64 / calls as f64,
        "allocs_per_span": allocs as f64 / calls as f64,
        "records_per_span": t.records(),
    })
}

/// Records -> exported OTLP, as fast as the export path accepts them without dropping.
async fn bench_throughput(plan: &Plan, binary: &Arc<GoBinary>, calls: u64) -> Value {
    let settings = export::BatchSettings::from_env().expect("OTEL_BSP_*");
    let t = CallTemplate::new(plan);
    let mut s = Scratch::new(&t);
    let mut f = factory_for(plan, binary);
    let p = pipeline();
    let stats = p.stats.clone();
    let chunk = (settings.max_export_batch_size as u64).min(512);
    let room = settings.max_queue_size as u64;
    let (a0, c0, start) = (ALLOCS.load(Relaxed), cpu_seconds(libc::RUSAGE_SELF), Instant::now());
    let mut id = 1u64;
    let mut waits = 0u64;
    while id <= calls {
        // Back-pressure, so the figure is the rate the exporter sustains, not a drop rate.
        loop {
            let done = stats.exported.load(Relaxed) + stats.dropped();
            let inflight = stats.submitted.load(Relaxed) - done;
            if inflight + chunk <= room {
                break;
            }
            waits += 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let end = (id + chunk).min(calls + 1);
        while id < end {
            s.call(id, &mut f, Some(&p));
            id += 1;
        }
        tokio::task::yield_now().await;
    }
    let submitted_at = start.elapsed();
    p.shutdown(Duration::from_secs(60)).await;
    let el = start.elapsed();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - c0;
    let allocs = ALLOCS.load(Relaxed) - a0;
    let exported = stats.exported.load(Relaxed);
    let (rss, hwm) = rss_kib();
    json!({
        "spans": calls,
        "exported": exported,
        "lost_queue_full": stats.dropped_queue_full.load(Relaxed),
        "lost_export_failed": stats.dropped_export_failed.load(Relaxed),
        "export_failures": stats.export_failures.load(Relaxed),
        "seconds": el.as_secs_f64(),
        "submit_seconds": submitted_at.as_secs_f64(),
        "spans_per_sec": exported as f64 / el.as_secs_f64(),
        "cpu_seconds": cpu,
        "cpu_util": cpu / el.as_secs_f64(),
        "cpu_ms_per_100k_spans": cpu * 1e3 / exported.max(1) as f64 * 1e5,
        "allocs_per_span": allocs as f64 / calls as f64,
        "backpressure_waits": waits,
        "rss_kib": rss,
        "hwm_kib": hwm,
    })
}

/// A fixed offered rate into a simulated ring buffer drained on gotel's timer, no back-pressure.
async fn bench_rate(plan: &Plan, binary: &Arc<GoBinary>, rate: u64, secs: f64, producer_cpu: usize) -> Value {
    let ring_bytes: usize = env_or("GOTEL_RING_BUFFER_BYTES", 8usize << 20);
    let drain = Duration::from_millis(env_or("GOTEL_DRAIN_INTERVAL_MS", 10u64).clamp(1, 1000));
    let t = CallTemplate::new(plan);
    let per_call = t.ring_bytes();
    let capacity = (ring_bytes / per_call).max(1);
    let ring: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(VecDeque::with_capacity(capacity)));
    let ring_full = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ring, ring_full, stop) = (ring.clone(), ring_full.clone(), stop.clone());
        std::thread::spawn(move || {
            pin_to(producer_cpu);
            let start = Instant::now();
            let mut offered = 0u64;
            let mut next_id = 1u64;
            loop {
                let el = start.elapsed().as_secs_f64();
                if el >= secs {
                    break;
                }
                let due = ((el * rate as f64) as u64).saturating_sub(offered);
                if due > 0 {
                    let mut q = ring.lock().unwrap();
                    for _ in 0..due {
                        if q.len() >= capacity {
                            ring_full.fetch_add(1, Relaxed);
                        } else {
                            q.push_back(next_id);
                        }
                        next_id += 1;
                    }
                    offered += due;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            stop.store(true, Relaxed);
            (offered, cpu_seconds(libc::RUSAGE_THREAD))
        })
    };
    let mut s = Scratch::new(&t);
    let mut f = factory_for(plan, binary);
    let p = pipeline();
    let stats = p.stats.clone();
    let c0 = cpu_seconds(libc::RUSAGE_SELF);
    let start = Instant::now();
    let mut tick = tokio::time::interval(drain);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<u64> = Vec::with_capacity(capacity);
    let mut max_backlog = 0usize;
    loop {
        tick.tick().await;
        let finished = stop.load(Relaxed);
        {
            let mut q = ring.lock().unwrap();
            max_backlog = max_backlog.max(q.len());
            batch.extend(q.drain(..));
        }
        for &id in &batch {
            s.call(id, &mut f, Some(&p));
        }
        batch.clear();
        if finished && ring.lock().unwrap().is_empty() {
            break;
        }
    }
    let (offered, producer_cpu_s) = producer.join().unwrap();
    let wall = start.elapsed().as_secs_f64();
    p.shutdown(Duration::from_secs(30)).await;
    let gotel_cpu = cpu_seconds(libc::RUSAGE_SELF) - c0 - producer_cpu_s;
    let lost_ring = ring_full.load(Relaxed);
    let lost_queue = stats.dropped_queue_full.load(Relaxed);
    let lost_export = stats.dropped_export_failed.load(Relaxed);
    let lost = lost_ring + lost_queue + lost_export;
    json!({
        "offered_calls_per_sec": rate,
        "offered_records_per_sec": rate * t.records() as u64,
        "calls": offered,
        "exported": stats.exported.load(Relaxed),
        "lost": lost,
        "lost_fraction": lost as f64 / offered.max(1) as f64,
        "lost_ring_buffer_full": lost_ring,
        "lost_queue_full": lost_queue,
        "lost_export_failed": lost_export,
        "max_ring_backlog_calls": max_backlog,
        "ring_capacity_calls": capacity,
        "gotel_cpu_util": gotel_cpu / wall,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let go_binary = std::env::var("BENCH_GO_BINARY")
        .expect("BENCH_GO_BINARY: path of a Go binary with main.work (bench/goapps/loop)");
    let calls: u64 = env_or("BENCH_SPANS", 400_000);
    let secs: f64 = env_or("BENCH_SWEEP_SECS", 2.0);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "5000,10000,20000,40000,80000,160000,320000,640000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let cpu: i64 = env_or("BENCH_CPU", 0);
    let producer_cpu: usize = env_or("BENCH_PRODUCER_CPU", 1);
    let sweep_variants: String = env_or("BENCH_SWEEP_ATTRS", "0,8".to_string());
    let variants: String = env_or("BENCH_ATTRS", "0,2,8".to_string());

    // Everything of "gotel" on one CPU, as gotel's own runtime is (2 workers).
    if cpu >= 0 {
        pin_to(cpu as usize);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let binary = Arc::new(GoBinary::open(Path::new(&go_binary)).expect("open the Go binary"));
    let (rss_start, _) = rss_kib();
    let mut results = Vec::new();
    rt.block_on(async {
        for v in VARIANTS.iter().filter(|v| variants.split(',').any(|a| a.trim() == v.attrs.to_string())) {
            let specs = spec::parse_probes(v.spec).expect("probe spec");
            // No libraries, no traceparent injection: just main.work.
            let plan = plan::build(&binary, &specs, &Limits::default(), &[], false, true).expect("plan");
            let fetches = plan.probes[0].attributes.fetches.len();
            eprintln!("pipeline bench: {} ({} fetches)", v.name, fetches);
            let factory = bench_factory(&plan, &binary, calls);
            eprintln!("  factory: {factory}");
            let throughput = bench_throughput(&plan, &binary, calls).await;
            eprintln!("  throughput: {throughput}");
            let mut sweep = Vec::new();
            if sweep_variants.split(',').any(|a| a.trim() == v.attrs.to_string()) {
                let mut lossy = 0;
                for &r in &rates {
                    let point = bench_rate(&plan, &binary, r, secs, producer_cpu).await;
                    eprintln!("  rate {r}/s: {point}");
                    if point["lost"].as_u64().unwrap_or(0) > 0 {
                        lossy += 1;
                    }
                    sweep.push(point);
                    if lossy >= 2 {
                        break;
                    }
                }
            }
            let first_loss = sweep
                .iter()
                .find(|p| p["lost"].as_u64().unwrap_or(0) > 0)
                .map(|p| p["offered_calls_per_sec"].clone())
                .unwrap_or(Value::Null);
            let last_lossless = sweep
                .iter()
                .take_while(|p| p["lost"].as_u64().unwrap_or(0) == 0)
                .last()
                .map(|p| p["offered_calls_per_sec"].clone())
                .unwrap_or(Value::Null);
            results.push(json!({
                "variant": v.name,
                "attributes": v.attrs,
                "spec": v.spec,
                "fetches": fetches,
                "factory": factory,
                "throughput": throughput,
                "sweep": sweep,
                "first_loss_calls_per_sec": first_loss,
                "last_lossless_calls_per_sec": last_lossless,
            }));
        }
    });
    let (rss_end, hwm) = rss_kib();
    let out = json!({
        "go_binary": go_binary,
        "cpu": cpu,
        "rss_after_open_kib": rss_start,
        "rss_end_kib": rss_end,
        "hwm_kib": hwm,
        "settings": {
            "OTEL_BSP_MAX_QUEUE_SIZE": export::BatchSettings::from_env().map(|s| s.max_queue_size).unwrap_or(0),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": export::BatchSettings::from_env().map(|s| s.max_export_batch_size).unwrap_or(0),
            "OTEL_BSP_SCHEDULE_DELAY_MS": export::BatchSettings::from_env().map(|s| s.schedule_delay.as_millis() as u64).unwrap_or(0),
            "GOTEL_RING_BUFFER_BYTES": env_or("GOTEL_RING_BUFFER_BYTES", 8u64 << 20),
            "GOTEL_DRAIN_INTERVAL_MS": env_or("GOTEL_DRAIN_INTERVAL_MS", 10u64),
            "protocol": std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|_| "http/protobuf".into()),
        },
        "variants": results,
    });
    let text = serde_json::to_string_pretty(&out).unwrap();
    match std::env::var("BENCH_OUT") {
        Ok(path) if !path.is_empty() => std::fs::write(&path, text + "\n").expect("BENCH_OUT"),
        _ => println!("{text}"),
    }
}
