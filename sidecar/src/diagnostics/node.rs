//! Node mode's `/metrics` and `/healthz` (`node.rs` of the crate runs the agent): every live
//! target's session families, each sample labelled with its target, and the agent's own series
//! (`gotel_node_*`), built on the same list of families as one session's output
//! ([`Metrics::rows`]).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attach::KernelCounters, diagnostics::tests::assert_valid_exposition, spans::SpanStats};
    use gotel_shared::Counter;

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
}
