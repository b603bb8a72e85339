//! The running export path: a bounded queue, batches by size or delay, and delivery with
//! retries. Every span that does not reach the collector is counted in [`ExportStats`].
//!
//! Collectors cap the size of one request (4 MiB by default in gRPC servers: the OpenTelemetry
//! Collector, Jaeger, tonic). A batch over the cap is refused whole, so retrying it is useless:
//! the request is split in halves instead, and the smaller size is kept for the rest of the run
//! (one warning when it shrinks). Users who raise `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` lose nothing.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use opentelemetry_sdk::{error::OTelSdkError, trace::SpanData};
use tokio::sync::mpsc;

use super::{AnyExporter, BatchSettings};

/// Counters of the export path, shared with the metrics and the logs.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub submitted: AtomicU64,
    pub exported: AtomicU64,
    /// Dropped because the queue (OTEL_BSP_MAX_QUEUE_SIZE) was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped after the exporter kept failing.
    pub dropped_export_failed: AtomicU64,
    /// Failed export attempts (each retried).
    pub export_failures: AtomicU64,
    /// Requests the collector refused as too large and that were sent again in halves.
    pub requests_split: AtomicU64,
}

impl ExportStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Relaxed) + self.dropped_export_failed.load(Relaxed)
    }
}

/// The running export path.
pub struct Pipeline {
    tx: Option<mpsc::Sender<SpanData>>,
    pub stats: Arc<ExportStats>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Attempts per request while running: backoff 0.2 s doubling (capped at 10 s) between them,
/// 12.6 s of waiting in all, plus the attempts themselves (each bounded by the export timeout).
/// The exporter retries nothing itself (`export::otlp_exporter`).
const MAX_ATTEMPTS: u32 = 7;
/// Attempts per request once gotel is stopping: the shutdown must not hang on a dead collector.
const SHUTDOWN_ATTEMPTS: u32 = 2;
/// At most one export-failure warning per interval; the rest are counted in it.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

impl Pipeline {
    pub(super) fn start(exporter: AnyExporter, settings: BatchSettings) -> Pipeline {
        let (tx, rx) = mpsc::channel(settings.max_queue_size);
        let stats = Arc::new(ExportStats::default());
        let delivery = Delivery {
            exporter,
            request_cap: settings.max_export_batch_size,
            settings,
            stats: stats.clone(),
            failures_unreported: 0,
            last_warning: None,
        };
        let task = tokio::spawn(export_loop(delivery, rx));
        Pipeline { tx: Some(tx), stats, task: Some(task) }
    }

    /// Queues a span; never blocks. A full queue drops the span and counts it.
    pub fn submit(&self, span: SpanData) {
        self.stats.submitted.fetch_add(1, Relaxed);
        if let Some(tx) = &self.tx {
            if tx.try_send(span).is_err() {
                self.stats.dropped_queue_full.fetch_add(1, Relaxed);
            }
        }
    }

    /// Exports what is queued and stops, within `timeout`.
    pub async fn shutdown(mut self, timeout: Duration) {
        self.tx.take();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                task.abort();
                // Whatever was neither exported nor already counted is lost now: count it.
                let s = &self.stats;
                let accounted = s.exported.load(Relaxed) + s.dropped();
                let lost = s.submitted.load(Relaxed).saturating_sub(accounted);
                s.dropped_export_failed.fetch_add(lost, Relaxed);
                tracing::warn!(lost, "export did not finish within {timeout:?}; the spans still queued are lost");
            }
        }
    }
}

async fn export_loop(mut delivery: Delivery, mut rx: mpsc::Receiver<SpanData>) {
    let max = delivery.settings.max_export_batch_size;
    let mut batch = Vec::with_capacity(max);
    let mut closed = false;
    while !closed {
        // Wait for the first span, then gather until the batch is full or the delay passes.
        match rx.recv().await {
            Some(s) => batch.push(s),
            None => break,
        }
        let deadline = tokio::time::sleep(delivery.settings.schedule_delay);
        tokio::pin!(deadline);
        while batch.len() < max {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => batch.push(s),
                    None => { closed = true; break }
                },
                _ = &mut deadline => break,
            }
        }
        delivery.deliver(std::mem::take(&mut batch), closed).await;
    }
    // Channel closed: flush whatever is left, in full batches.
    while let Ok(s) = rx.try_recv() {
        batch.push(s);
        if batch.len() >= max {
            delivery.deliver(std::mem::take(&mut batch), true).await;
        }
    }
    if !batch.is_empty() {
        delivery.deliver(batch, true).await;
    }
}

/// How one request ended.
enum Sent {
    Ok,
    /// The collector refused the request (of more than one span) for its size: retrying it
    /// whole cannot help; a single span that is too large is `Failed`.
    TooLarge,
    Failed,
}

struct Delivery {
    exporter: AnyExporter,
    settings: BatchSettings,
    stats: Arc<ExportStats>,
    /// Spans per request: the batch size until a collector refuses a request as too large.
    request_cap: usize,
    failures_unreported: u64,
    last_warning: Option<Instant>,
}

impl Delivery {
    /// Sends one batch as one or more requests; counts what is exported and what is lost.
    async fn deliver(&mut self, batch: Vec<SpanData>, shutting_down: bool) {
        let mut requests = VecDeque::from([batch]);
        while let Some(mut request) = requests.pop_front() {
            if request.len() > self.request_cap {
                // Over the request size (the batch, or a request cut before the size shrank):
                // send the first part, keep the rest for the next turn.
                let rest = request.split_off(self.request_cap);
                requests.push_front(rest);
            }
            let n = request.len() as u64;
            match self.send(&request, shutting_down).await {
                Sent::Ok => {
                    self.stats.exported.fetch_add(n, Relaxed);
                }
                Sent::TooLarge => {
                    // The request was within the size, so half of it is a new, smaller size.
                    self.request_cap = request.len() / 2;
                    tracing::warn!(
                        refused = request.len(),
                        now = self.request_cap,
                        "the collector refused a request of {} spans as too large; sending at most {} spans per request from now on",
                        request.len(),
                        self.request_cap
                    );
                    self.stats.requests_split.fetch_add(1, Relaxed);
                    requests.push_front(request);
                }
                Sent::Failed => {
                    self.stats.dropped_export_failed.fetch_add(n, Relaxed);
                }
            }
        }
    }

    async fn send(&mut self, request: &[SpanData], shutting_down: bool) -> Sent {
        let mut backoff = Duration::from_millis(200);
        let attempts = if shutting_down { SHUTDOWN_ATTEMPTS } else { MAX_ATTEMPTS };
        for attempt in 1..=attempts {
            let result =
                tokio::time::timeout(self.settings.export_timeout, self.exporter.export(request.to_vec())).await;
            let error = match result {
                Ok(Ok(())) => return Sent::Ok,
                Ok(Err(e)) => {
                    self.stats.export_failures.fetch_add(1, Relaxed);
                    if refused_as_too_large(&e) && request.len() > 1 {
                        return Sent::TooLarge;
                    }
                    e.to_string()
                }
                Err(_) => {
                    self.stats.export_failures.fetch_add(1, Relaxed);
                    format!("no answer within {:?} (OTEL_BSP_EXPORT_TIMEOUT)", self.settings.export_timeout)
                }
            };
            self.warn_failure(attempt, attempts, request.len(), &error);
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        Sent::Failed
    }

    /// One warning per interval, with the error and how many failures it stands for.
    fn warn_failure(&mut self, attempt: u32, attempts: u32, spans: usize, error: &str) {
        self.failures_unreported += 1;
        if self.last_warning.is_some_and(|t| t.elapsed() < WARN_INTERVAL) {
            tracing::debug!(attempt, spans, error, "export failed");
            return;
        }
        tracing::warn!(
            attempt,
            attempts,
            spans,
            failures = self.failures_unreported,
            "export failed: {error} (retrying with backoff; spans are counted as lost after the last attempt)"
        );
        self.failures_unreported = 0;
        self.last_warning = Some(Instant::now());
    }
}

/// Whether the collector refused the request for its size. opentelemetry-otlp reports the gRPC
/// code (tonic servers answer OUT_OF_RANGE, grpc-go servers RESOURCE_EXHAUSTED) or the HTTP
/// status (413) in the error's text; it keeps no structured code.
fn refused_as_too_large(e: &OTelSdkError) -> bool {
    let text = e.to_string();
    text.contains("OutOfRange") || text.contains("ResourceExhausted") || text.contains("status code: 413")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_refusals_are_recognised_in_both_protocols() {
        let e = |s: &str| OTelSdkError::InternalFailure(s.into());
        assert!(refused_as_too_large(&e("TonicTracesClient export failed with gRPC code: OutOfRange")));
        assert!(refused_as_too_large(&e("TonicTracesClient export failed with gRPC code: ResourceExhausted")));
        assert!(refused_as_too_large(&e("HTTP export failed with status code: 413")));
        assert!(!refused_as_too_large(&e("TonicTracesClient export failed with gRPC code: Unavailable")));
        assert!(!refused_as_too_large(&e("HTTP export failed with status code: 503")));
    }
}
