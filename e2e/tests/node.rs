//! Node mode on the host, without Kubernetes (`tools/k8s/test.sh` runs it in a real cluster):
//! one gotel, started before its targets, traces every process its `exe` selectors pick, each
//! as its own service, and reports a selected process it cannot trace (not Go) without
//! stopping; its `/metrics` (`GOTEL_METRICS_ADDR`) labels each target's series, drops a target
//! whose process ended while keeping its counts in the node's totals, and `/healthz` is 200
//! while it watches.
//!
//! Needs root and a built gotel (`GOTEL_BIN`, else `target/release/gotel`); skipped with one line
//! otherwise (a failure under `GOTEL_TEST_REQUIRE_ALL=1`). Run with `--test-threads=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gotel_e2e::hardening::*;
use gotel_e2e::{gotel_command, private_copy, require_environment, wait_until, Export, FlatSpan, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");

#[test]
fn node_mode_traces_each_selected_process_as_its_own_service() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempdir();
    let alpha = private_copy(&stress_bin(), dir.path()).unwrap();
    let beta = dir.path().join("beta");
    std::fs::copy(&alpha, &beta).unwrap();
    let gamma = dir.path().join("gamma");
    std::fs::copy(&alpha, &gamma).unwrap();
    let delta = dir.path().join("delta");
    std::fs::copy(&alpha, &delta).unwrap();
    let not_go = dir.path().join("not-go");
    std::fs::copy("/bin/sleep", &not_go).unwrap();

    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut g = gotel_command(&Export::Grpc(sink.grpc_endpoint()), "main.tick");
    let maddr = free_addr();
    g.env("GOTEL_METRICS_ADDR", maddr.to_string());
    // The first selector names its service; the second picks the rest of the folder, each
    // process named after its executable.
    g.arg("--node")
        .arg("--select")
        .arg(format!("exe={},service=alpha-svc", alpha.display()))
        .arg("--select")
        .arg(format!("exe={}/*", dir.path().display()));
    // A size no other map has, to find the goroutine map among gotel's descriptors.
    g.env("GOTEL_MAX_GOROUTINES", GOROUTINES.to_string());
    // Two processes at once: a third waits for a slot, and only a freed one lets it in.
    g.env("GOTEL_NODE_MAX_TARGETS", "2");
    let mut gotel = Proc::spawn("gotel", g).unwrap();
    gotel.wait_stderr_line("watching for processes", Duration::from_secs(20)).unwrap();
    let healthy = wait_until(Duration::from_secs(5), || http_get(maddr, "/healthz").is_ok_and(|(s, _)| s == 200));
    assert!(healthy, "/healthz is 200 once gotel watches: {:?}", http_get(maddr, "/healthz"));

    let steady = |bin: &Path| {
        let mut c = Command::new(bin);
        // Long enough to outlive the checks (killed at the end).
        c.args(["-mode", "steady", "-n", "6000", "-interval-ms", "5"]);
        c
    };
    let mut a = Proc::spawn("alpha", steady(&alpha)).unwrap();
    let b = Proc::spawn("beta", steady(&beta)).unwrap();
    let mut c = Command::new(&not_go);
    c.arg("20");
    let c = Proc::spawn("not-go", c).unwrap();

    let of = |spans: &[FlatSpan], pid: u32| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.res_i64("process.pid") == Some(pid as i64))
            .map(|s| s.res_str("service.name").unwrap_or("").to_string())
            .collect()
    };
    let both = wait_until(Duration::from_secs(30), || {
        let sp = sink.spans().unwrap_or_default();
        !of(&sp, a.pid()).is_empty() && !of(&sp, b.pid()).is_empty()
    });
    let refused = format!("process {} is not traced", c.pid());
    let reported = wait_until(Duration::from_secs(20), || gotel.stderr_string().contains(&refused));
    let spans = sink.spans().unwrap();
    let stderr = gotel.stderr_string();
    assert!(both, "spans from both selected Go processes\n{stderr}");
    assert!(reported, "the non-Go process is reported: {refused}\n{stderr}");
    let (sa, sb) = (of(&spans, a.pid()), of(&spans, b.pid()));
    assert!(sa.iter().all(|s| s == "alpha-svc"), "alpha's service names: {sa:?}");
    assert!(sb.iter().all(|s| s == "beta"), "beta's service names: {sb:?}");
    assert!(gotel.try_wait().unwrap().is_none(), "gotel stopped\n{stderr}");
    // Both targets' programs use one goroutine map (shared_maps), not one each.
    let maps = goroutine_maps(gotel.pid());
    assert_eq!(maps.len(), 1, "goroutine maps held by gotel (map ids): {maps:?}\n{stderr}");
    // And one set of programs (attach::Kernel): each program loaded at most twice (aya's copy
    // and the uprobe_multi copy), not twice per target; one ring buffer.
    let (programs, ring_buffers) = bpf_objects(gotel.pid());
    let most = programs.values().map(|ids| ids.len()).max().unwrap_or(0);
    assert!((1..=2).contains(&most), "copies of each program held by gotel (by tag): {programs:?}\n{stderr}");
    assert_eq!(ring_buffers.len(), 1, "ring buffers held by gotel (map ids): {ring_buffers:?}\n{stderr}");

    // One /metrics for the node: each target's series labelled with its pid and service.
    let spans_of = |m: &BTreeMap<String, f64>, pid: u32, service: &str| {
        m.get(&format!("gotel_spans_total{{pid=\"{pid}\",service_name=\"{service}\"}}")).copied()
    };
    let mut m = BTreeMap::new();
    let labelled = wait_until(Duration::from_secs(10), || {
        m = scrape(maddr).unwrap_or_default();
        spans_of(&m, a.pid(), "alpha-svc").is_some_and(|v| v > 0.0)
            && spans_of(&m, b.pid(), "beta").is_some_and(|v| v > 0.0)
            && m.get("gotel_node_processes_not_traced_total{reason=\"target\"}") == Some(&1.0)
    });
    assert!(labelled, "both targets' spans and the non-Go process on /metrics:\n{m:#?}");
    assert_eq!(m.get("gotel_node_targets"), Some(&2.0), "{m:#?}");
    assert_eq!(m.get("gotel_node_sessions_started_total"), Some(&3.0), "{m:#?}");
    // Both slots are taken: a third Go process is reported, not traced.
    let d = Proc::spawn("delta", steady(&delta)).unwrap();
    let full = format!("process {} is not traced", d.pid());
    let refused_full = wait_until(Duration::from_secs(20), || {
        gotel.stderr_string().lines().any(|l| l.contains(&full) && l.contains("GOTEL_NODE_MAX_TARGETS"))
    });
    assert!(refused_full, "a process beyond GOTEL_NODE_MAX_TARGETS is reported\n{}", gotel.stderr_string());
    assert_eq!(m.get("gotel_node_watching"), Some(&1.0), "{m:#?}");
    // A target whose process ended leaves the per-target series; the node's total keeps its spans.
    let alpha_spans = spans_of(&m, a.pid(), "alpha-svc").unwrap();
    let alpha_label = format!("pid=\"{}\"", a.pid());
    a.kill();
    let ended = wait_until(Duration::from_secs(10), || {
        m = scrape(maddr).unwrap_or_default();
        m.get("gotel_node_targets_ended_total") == Some(&1.0)
    });
    assert!(ended, "alpha's session ended:\n{m:#?}");
    assert!(!m.keys().any(|k| k.contains(&alpha_label)), "alpha's series are gone:\n{m:#?}");
    let beta_spans = spans_of(&m, b.pid(), "beta").unwrap();
    let node_spans = m["gotel_node_spans_total"];
    assert!(node_spans >= alpha_spans + beta_spans, "node total {node_spans} < {alpha_spans} + {beta_spans}");
    assert_eq!(m.get("gotel_node_targets"), Some(&1.0), "{m:#?}");

    // A new process takes the ended one's slot: its spans and counters are its own.
    let g2 = Proc::spawn("gamma", steady(&gamma)).unwrap();
    let traced = wait_until(Duration::from_secs(30), || {
        m = scrape(maddr).unwrap_or_default();
        spans_of(&m, g2.pid(), "gamma").is_some_and(|v| v > 0.0)
    });
    assert!(traced, "gamma traced in the freed slot:\n{m:#?}\n{}", gotel.stderr_string());
    let spans = sink.spans().unwrap();
    let sg = of(&spans, g2.pid());
    assert!(!sg.is_empty() && sg.iter().all(|s| s == "gamma"), "gamma's service names: {sg:?}");
    let gamma_spans = spans_of(&m, g2.pid(), "gamma").unwrap();
    let exported_of_gamma = sg.len() as f64;
    assert!(gamma_spans < exported_of_gamma + 2000.0, "gamma's counter starts at 0: {gamma_spans}");
    let (programs, _) = bpf_objects(gotel.pid());
    let most = programs.values().map(|ids| ids.len()).max().unwrap_or(0);
    assert!(most <= 2, "no new copy of a program for gamma: {programs:?}");

    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel exited {st} on SIGTERM\n{stderr}");
    assert_no_panic("gotel", &stderr);
    assert_eq!(summaries(&stderr).len(), 3, "one summary per traced process:\n{stderr}");
    drop((a, b, c, d, g2));
}

const GOROUTINES: u32 = 12_345;

/// The distinct BPF maps with `GOROUTINES` entries among process `pid`'s descriptors (their ids).
fn goroutine_maps(pid: u32) -> std::collections::BTreeSet<u32> {
    let mut ids = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u32>().ok());
        if field("max_entries:") == Some(GOROUTINES) {
            ids.extend(field("map_id:"));
        }
    }
    ids
}

/// BPF programs among process `pid`'s descriptors (program ids by tag: two loads of one program
/// have one tag) and ring buffers (map ids).
type Objects = (std::collections::BTreeMap<String, std::collections::BTreeSet<u32>>, std::collections::BTreeSet<u32>);

fn bpf_objects(pid: u32) -> Objects {
    let (mut programs, mut rings) = Objects::default();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| Some(l.strip_prefix(name)?.trim().to_string()));
        if let (Some(tag), Some(id)) = (field("prog_tag:"), field("prog_id:")) {
            programs.entry(tag).or_default().extend(id.parse::<u32>().ok());
        }
        // BPF_MAP_TYPE_RINGBUF
        if field("map_type:").as_deref() == Some("27") {
            rings.extend(field("map_id:").and_then(|v| v.parse::<u32>().ok()));
        }
    }
    (programs, rings)
}
