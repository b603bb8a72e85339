//! One tracing session: resolve the plan, attach to the process, turn kernel records into spans
//! until the target exits (or gotel is told to stop), then flush and report what was counted.
//! With `--exe`, a new session starts for each new process of that executable; in node mode
//! (`node.rs`) one session runs per selected process, each on its own thread.
use std::{
    path::Path,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    attach::{self, KernelCounters},
    binary::{GoBinary, TypeNameTable},
    config::{Settings, Target},
    diagnostics::{self, Metrics},
    events,
    exit::Failure,
    export::{self, Pipeline, ResourceFacts},
    k8s::K8sAttributes,
    plan::{self, Plan},
    spans::{self, SpanFactory},
    target::{self, Launched, Process},
};
use gotel_shared::Counter;

/// How a session ended.
pub enum End {
    TargetExited,
    Stopped,
}

pub async fn run(settings: &Settings, launched: Option<Launched>) -> Result<i32, Failure> {
    let mut stop = Stop::register()?;
    let stop = &mut stop;
    let metrics = Arc::new(Metrics::default());
    // Node mode serves its own: every target's, labelled (`node.rs`).
    if let (Some(addr), false) = (&settings.metrics_addr, matches!(settings.target, Target::Node(_))) {
        diagnostics::serve(addr, metrics.clone()).await?;
    }
    let metrics = &metrics;
    match &settings.target {
        &Target::Pid(pid) => {
            let process = target::existing(pid)?;
            let identity = Identity::of(pid);
            session(settings, process, None, &identity, metrics, stop).await.map(|_| 0)
        }
        Target::Launch(_) => {
            let launched = launched.expect("launched before the runtime started");
            let pid = launched.process.pid;
            let identity = Identity::of(pid);
            session(settings, launched.process.clone(), Some(launched), &identity, metrics, stop).await?;
            Ok(target::reap(pid).unwrap_or(0))
        }
        Target::Exe(path) => {
            let mut seen = Vec::new();
            loop {
                let process = tokio::select! {
                    p = target::wait_for_exe(path, &seen) => p?,
                    _ = stop.wait() => return Ok(0),
                };
                seen.push(process.pid);
                let pid = process.pid;
                let identity = Identity::of(pid);
                match session(settings, process, None, &identity, metrics, stop).await {
                    Ok(End::Stopped) => return Ok(0),
                    Ok(End::TargetExited) => {
                        tracing::info!(exe = %path.display(), "target exited; waiting for the next process")
                    }
                    // A process that exits while gotel reads or attaches to it (a crash loop, a
                    // short run) is no reason to stop following the file. A configuration error
                    // would repeat with the next process, so it still ends gotel.
                    Err(e) if e.code != crate::exit::ExitCode::Config && !target::alive(pid) => {
                        tracing::warn!(pid, exe = %path.display(), "process {pid} exited while gotel attached ({e}); waiting for the next process")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Target::Node(selectors) => crate::node::run(settings, selectors, stop.clone()).await,
    }
}

/// Who the target is, beyond its process: its `service.name` when gotel chose it (node mode),
/// and its Kubernetes attributes.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub service_name: Option<String>,
    pub attributes: Vec<opentelemetry::KeyValue>,
}

impl Identity {
    /// One-target modes: the service name from the environment, the Kubernetes attributes from
    /// the downward API variables and the target's cgroup (see `k8s`).
    pub fn of(pid: u32) -> Identity {
        Identity { service_name: None, attributes: K8sAttributes::for_process(pid).key_values() }
    }
}

/// SIGINT/SIGTERM, registered once when gotel starts (so none is lost between loops, nor kills
/// gotel before it can flush) and latched: once received, every later wait returns at once.
/// Clones share it (node mode hands one to each target's session, on its own runtime).
#[derive(Clone)]
pub struct Stop {
    rx: tokio::sync::watch::Receiver<bool>,
    received: bool,
}

impl Stop {
    pub fn register() -> Result<Stop, Failure> {
        let sig = |k| signal(k).map_err(|e| Failure::environment(format!("cannot handle signals: {e}")));
        let (mut int, mut term) = (sig(SignalKind::interrupt())?, sig(SignalKind::terminate())?);
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
            // Kept alive: a dropped sender would read as a stop.
            std::future::pending::<()>().await;
        });
        Ok(Stop { rx, received: false })
    }

    pub async fn wait(&mut self) {
        if self.received {
            return;
        }
        let _ = self.rx.wait_for(|stopped| *stopped).await;
        self.received = true;
    }

    pub fn received(&self) -> bool {
        self.received
    }
}

fn prepare(settings: &Settings, exe: &Path) -> Result<(GoBinary, Plan), Failure> {
    // DWARF only for the functions the plan can probe: what the specs name (a glob may take
    // a few more than the plan will, never fewer) and the built-in instrumentations' spans.
    // That keeps attaching to a large program inside a small container's memory.
    let wanted = |name: &str| {
        settings.specs.iter().any(|s| crate::names::glob_match(&s.symbol, name))
            || settings.libraries.iter().any(|l| l.probes_function(name))
    };
    let binary = GoBinary::open_for(exe, &wanted).map_err(Failure::target)?;
    let plan = plan::build(
        &binary,
        &settings.specs,
        &settings.limits,
        &settings.libraries,
        settings.inject,
        settings.goroutine_parents,
    )?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    Ok((binary, plan))
}

pub async fn session(
    settings: &Settings,
    process: Process,
    mut launched: Option<Launched>,
    identity: &Identity,
    metrics: &Metrics,
    stop: &mut Stop,
) -> Result<End, Failure> {
    let started = std::time::Instant::now();
    let (binary, plan) = {
        let _span = tracing::info_span!("prepare", pid = process.pid, exe = %process.exe_name).entered();
        prepare(settings, &process.exe)?
    };
    let _attach_span = tracing::info_span!("attach", pid = process.pid).entered();
    // The exporter is built (and its settings checked) before the target runs a single
    // instruction in launch mode.
    let resource = export::resource(&ResourceFacts {
        exe_name: &process.exe_name,
        pid: process.pid,
        go_version: binary.build.go_version.as_deref(),
        service_name: identity.service_name.as_deref(),
        extra: &identity.attributes,
    });
    let pipeline = Pipeline::from_env(resource, &settings.batch, launched.is_some())?;
    let mut attached = attach::load(&plan, &settings.maps)?;
    let exit_fd = target::pidfd(process.pid)
        .map_err(|e| Failure::target(format!("process {} is gone: {e}", process.pid)))
        .and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(|e| Failure::environment(format!("pidfd: {e}"))))?;
    attached.attach(&plan, &binary, &process.exe, process.pid)?;
    tracing::info!(
        pid = process.pid,
        exe = %process.exe_name,
        go = binary.build.go_version.as_deref().unwrap_or("unknown"),
        functions = plan.probes.len(),
        uprobes = attached.uprobes,
        symbols = ?binary.symbol_source,
        dwarf = binary.dwarf.is_some(),
        ms = started.elapsed().as_millis() as u64,
        "attached"
    );
    drop(_attach_span);
    // Totals of earlier sessions (a restarted --exe target) are kept, so the metrics only grow.
    let metrics = metrics.session();
    metrics.attached(process.pid, attached.uprobes);
    if let Some(l) = launched.as_mut() {
        l.release();
    }
    if let Some(ready) = &settings.ready_file {
        std::fs::write(ready, format!("{}\n", process.pid))
            .map_err(|e| Failure::config(format!("cannot write GOTEL_READY_FILE {}: {e}", ready.display())))?;
    }

    // Spans need only the names of dynamic types from the binary: keep those (a small table)
    // and free the parsed binary (its mapping, symbols, pclntab and DWARF: hundreds of MiB on
    // a large program) now rather than at the end of the session.
    let names = TypeNameTable::new(&binary, spans::load_bias(process.pid, &binary), process.pid);
    // Freeing it takes about 0.1 s on a large binary: in the background, as records arrive.
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        drop(binary);
        // glibc keeps freed heap resident (parsing left it fragmented) unless asked to give it
        // back: without this, RSS after attaching to Jaeger fell from 349 to 188 MiB only.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "parsed binary freed");
    });
    let mut factory =
        SpanFactory::new(&plan, settings.sampler.clone(), Box::new(names), settings.limits.max_attributes)
            .with_thread_ids(settings.thread_id);

    let mut tick = tokio::time::interval(settings.drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Metrics refresh every second; a loss line is logged at most every ten seconds.
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.tick().await;
    let mut ticks = 0u64;
    let mut last_reported = Losses::default();
    let end = loop {
        tokio::select! {
            _ = tick.tick() => { drain(&mut attached, &mut factory, pipeline.as_ref()); }
            _ = report.tick() => {
                let counters = attached.counters();
                let export = pipeline.as_ref().map(|p| &*p.stats);
                metrics.publish(&counters, &factory.stats, export, Some(attached.goroutines_tracked() as u64));
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    last_reported = report_losses(&counters, &factory, pipeline.as_ref(), last_reported);
                }
            }
            r = exit_fd.readable() => { if let Ok(mut g) = r { g.retain_ready(); } break End::TargetExited; }
            _ = stop.wait() => {
                if launched.is_some() {
                    // Pass the stop on to our child and let it finish its calls.
                    unsafe { libc::kill(process.pid as i32, libc::SIGTERM) };
                    let _ = tokio::time::timeout(Duration::from_secs(10), exit_fd.readable()).await;
                }
                break End::Stopped;
            }
        }
    };
    // Records still in the ring buffer (calls that returned just before the exit) are exported.
    drain(&mut attached, &mut factory, pipeline.as_ref());
    if matches!(end, End::TargetExited) {
        // Calls the process was still in when it exited (os.Exit, a fatal panic, goroutines
        // ended by Goexit) are reported too: nothing it did goes missing.
        for header in attached.calls_in_progress(events::Clock::monotonic_now()) {
            let rec = events::Record { kind: gotel_shared::EventKind::Abandoned, header, data: &[] };
            if let (Some(span), Some(p)) = (factory.on_record(rec), pipeline.as_ref()) {
                p.submit(span);
            }
        }
    }
    // Spans still waiting for their end (gRPC client streams not finished): exported as they
    // are (their end is when they were opened), counted in the summary.
    for span in factory.take_open() {
        if let Some(p) = pipeline.as_ref() {
            p.submit(span);
        }
    }
    let counters = attached.counters();
    // Spans first (the collector should not wait for the kernel), then detach.
    let timeout = settings.batch.export_timeout.min(Duration::from_secs(30));
    let stats = pipeline.as_ref().map(|p| p.stats.clone());
    if let Some(p) = pipeline {
        p.shutdown(timeout).await;
    }
    // uprobe_multi links close at once, here: a close made while the process exits would leak
    // the target's breakpoints (see Attached::detach_links).
    attached.detach_links();
    let forgotten = attached.forget_target();
    if forgotten > 0 {
        tracing::debug!(pid = process.pid, records = forgotten, "removed from node mode's goroutine map");
    }
    // Removing uprobes is slow (see Attached::detach): do it in the background so that a
    // restarted --exe target is picked up at once; process exit finishes it otherwise.
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        attached.detach();
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "detached");
    });
    metrics.publish(&counters, &factory.stats, stats.as_deref(), None);
    metrics.detached();
    summary(&counters, &factory, stats.as_deref());
    Ok(end)
}

fn drain(attached: &mut attach::Attached, factory: &mut SpanFactory, pipeline: Option<&Pipeline>) -> usize {
    attached.drain(&mut |item| match events::parse(item) {
        Some(rec) => {
            if let Some(span) = factory.on_record(rec) {
                if let Some(p) = pipeline {
                    p.submit(span);
                }
            }
        }
        None => factory.stats.malformed_records += 1,
    })
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Losses {
    ring: u64,
    overflow: u64,
    dropped: u64,
    evicted: u64,
}

/// One log line per interval, only when something new was lost.
fn report_losses(k: &KernelCounters, f: &SpanFactory, p: Option<&Pipeline>, last: Losses) -> Losses {
    let now = Losses {
        ring: k.get(Counter::RingBufferFull),
        overflow: k.get(Counter::DepthOverflow),
        dropped: p.map(|p| p.stats.dropped()).unwrap_or(0),
        evicted: f.stats.pending_evicted,
    };
    if now != last {
        tracing::warn!(
            ring_buffer_full = now.ring,
            depth_overflow = now.overflow,
            export_dropped = now.dropped,
            entry_values_evicted = now.evicted,
            spans = f.stats.spans,
            "data lost so far (totals)"
        );
    }
    now
}

fn summary(k: &KernelCounters, f: &SpanFactory, e: Option<&export::ExportStats>) {
    let (exported, queue_full, export_failed, split) = e
        .map(|e| {
            let (x, q, f, s) = (&e.exported, &e.dropped_queue_full, &e.dropped_export_failed, &e.requests_split);
            (x.load(Relaxed), q.load(Relaxed), f.load(Relaxed), s.load(Relaxed))
        })
        .unwrap_or((0, 0, 0, 0));
    tracing::info!(
        calls = k.get(Counter::Entries),
        spans = f.stats.spans,
        exported,
        sampled_out = f.stats.sampled_out,
        lost_ring_buffer_full = k.get(Counter::RingBufferFull),
        lost_queue_full = queue_full,
        lost_export_failed = export_failed,
        export_requests_split = split,
        not_traced_depth_overflow = k.get(Counter::DepthOverflow),
        unwound_calls_exported_as_errors = f.stats.abandoned,
        open_spans_exported_unclosed = f.stats.open_unclosed,
        unmatched_returns = k.get(Counter::UnmatchedReturn),
        morestack_reentries = k.get(Counter::MorestackReentry),
        malformed_records = f.stats.malformed_records,
        // The instrumentations' own counters (`traceparent_injected=0 ...`), from the registry.
        "session summary {}",
        crate::instrumentations::summary_counters(|c| k.get(c))
    );
}
