//! Node mode: one gotel traces every Go process of the host that a selector picks, as a
//! Kubernetes DaemonSet does (`hostPID: true`), new and restarted processes included.
//!
//! Every 500 ms `/proc` is scanned for processes not seen before (a pid with its start time, so
//! a reused pid is a new process). Each one's cgroup names its pod and container
//! (`k8s::cgroup`); the API server names them and gives the pod's labels (`k8s::api`, one list
//! of this node's pods, fetched again when a process of an unknown pod or container appears, at
//! most once a second). The first selector that matches decides: the process is traced with the
//! probe specs of the command line plus the selector's own, and its own resource (`service.name`
//! from the selector, else the pod's `app.kubernetes.io/name` label, else the container's name,
//! else the executable's; the `k8s.*` attributes and `container.id`).
//!
//! Each target is one ordinary session (`session::session`) on a thread of its own with its own
//! small runtime (its plan, span factory, exporter and resource), and **all of them share one
//! loaded set of kernel programs and maps** (`attach::Kernel`, when gotel runs in the host's pid
//! namespace as the DaemonSet does): each program is verified once for the node, not once per
//! process; one ring buffer, one probe table, one goroutine map serve every target, each target
//! having a *slot* (its entry in the per-target config arrays and counters, carried in its attach
//! cookies) and a range of probe ids. The session that drains the ring buffer hands each record
//! to its target's queue (by probe id), so a target's spans are built by its own session.
//! `GOTEL_NODE_MAX_TARGETS` (64) bounds the targets traced at once; `GOTEL_RING_BUFFER_BYTES` is
//! the one buffer's size. Outside the host's pid namespace each target loads its own set, as
//! a sidecar does. A process gotel cannot trace (not Go, a spec its binary cannot satisfy, gone
//! while attaching, no slot left) is reported once and skipped, never fatal, and counted on
//! `/metrics` by reason.
//!
//! With `GOTEL_METRICS_ADDR`, one endpoint serves every target (`diagnostics::NodeMetrics`):
//! each session's families with one sample per live target, labelled with its pid, service and
//! pod, and the agent's own series. `/healthz` says the agent is alive and scanning, not that
//! every target is traced: one process gotel cannot trace must not get the node's agent
//! restarted (that would interrupt every other target).
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    config::Settings,
    diagnostics::{self, NodeMetrics, TargetMetrics},
    exit::{ExitCode, Failure},
    k8s::{
        api::{self, Pod},
        cgroup, K8sAttributes,
    },
    names::glob_match,
    session::{self, Identity, Stop},
    spec::{self, ProbeSpec},
    target,
};

/// One `--select` entry: every condition given must hold (globs with `*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// As written, for messages.
    pub text: String,
    /// The executable's path as the process sees it (`/proc/PID/exe`).
    pub exe: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// `label:NAME=VALUE`: the pod's label NAME has this value (glob).
    pub labels: Vec<(String, String)>,
    /// `service=NAME`: the `service.name` of what this selector picks.
    pub service: Option<String>,
    /// `probes-file=PATH`: probe specs for this selector's processes, beside the global ones.
    pub probes_file: Option<PathBuf>,
    pub specs: Vec<ProbeSpec>,
}

impl Selector {
    /// Whether the selector asks about the pod (so needs the API server).
    pub fn needs_pod(&self) -> bool {
        self.namespace.is_some() || self.pod.is_some() || self.container.is_some() || !self.labels.is_empty()
    }

    pub fn matches(&self, exe: &str, pod: Option<&Pod>, container: Option<&str>) -> bool {
        let glob =
            |pat: &Option<String>, v: Option<&str>| pat.as_ref().is_none_or(|p| v.is_some_and(|v| glob_match(p, v)));
        if !glob(&self.exe, Some(exe)) {
            return false;
        }
        if !self.needs_pod() {
            return true;
        }
        // A pod condition holds only for a process of a known container of a known pod (never
        // for the pod's sandbox, the `pause` process).
        let (Some(pod), Some(container)) = (pod, container) else { return false };
        glob(&self.namespace, Some(&pod.namespace))
            && glob(&self.pod, Some(&pod.name))
            && glob(&self.container, Some(container))
            && self.labels.iter().all(|(k, v)| pod.labels.get(k).is_some_and(|l| glob_match(v, l)))
    }
}

/// Parses GOTEL_SELECT (entries separated by `;` or newlines, `#` comments) and each --select.
pub fn selectors(env: Option<&str>, flags: &[String]) -> Result<Vec<Selector>, Failure> {
    let mut out = Vec::new();
    let sources = env.into_iter().map(|t| ("GOTEL_SELECT", t)).chain(flags.iter().map(|t| ("--select", t.as_str())));
    for (origin, text) in sources {
        for entry in text.split(['\n', ';']).map(|e| e.split('#').next().unwrap_or("").trim()).filter(|e| !e.is_empty())
        {
            out.push(parse_selector(entry).map_err(|e| Failure::config(format!("{origin}: selector `{entry}`: {e}")))?);
        }
    }
    if out.is_empty() {
        return Err(Failure::config(
            "node mode needs at least one selector: --select 'exe=/app/*' or GOTEL_SELECT='namespace=shop,container=app' \
             (keys: exe, namespace, pod, container, label:NAME, service, probes-file)",
        ));
    }
    Ok(out)
}

fn parse_selector(entry: &str) -> Result<Selector, String> {
    let mut s = Selector { text: entry.to_string(), ..Selector::default() };
    for part in entry.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}` is not KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim().to_string());
        if value.is_empty() {
            return Err(format!("`{key}` has no value"));
        }
        let slot = match key {
            "exe" => &mut s.exe,
            "namespace" => &mut s.namespace,
            "pod" => &mut s.pod,
            "container" => &mut s.container,
            "service" => &mut s.service,
            "probes-file" => {
                let text =
                    std::fs::read_to_string(&value).map_err(|e| format!("cannot read probes-file {value}: {e}"))?;
                s.specs = spec::parse_source(&value, &text).map_err(|e| e.to_string())?;
                s.probes_file = Some(value.into());
                continue;
            }
            k if k.starts_with("label:") && k.len() > "label:".len() => {
                s.labels.push((k["label:".len()..].to_string(), value));
                continue;
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (keys: exe, namespace, pod, container, label:NAME, service, probes-file)"
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("`{key}` given twice"));
        }
    }
    if s.exe.is_none() && !s.needs_pod() {
        return Err("no condition: give exe=GLOB (exe=* for every Go process) or a pod condition".into());
    }
    Ok(s)
}

/// A process found in /proc.
struct Candidate {
    pid: u32,
    exe: String,
    exe_name: String,
    cgroup: cgroup::Identity,
    first_seen: Instant,
}

/// How long a process of a pod or container the API server does not list yet (the kubelet
/// reports a container's id after it started) waits before it is decided on without them.
const POD_INFO_WAIT: Duration = Duration::from_secs(30);

pub async fn run(settings: &Settings, selectors: &[Selector], mut stop: Stop) -> Result<i32, Failure> {
    // Served first: /healthz answers 503 until the first scan, so a probe sees a starting agent.
    let metrics = Arc::new(NodeMetrics::default());
    if let Some(addr) = &settings.metrics_addr {
        diagnostics::serve(addr, metrics.clone()).await?;
    }
    let node_name = std::env::var("K8S_NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()));
    let client = api::Client::in_cluster(node_name.as_deref().unwrap_or_default())?;
    if client.is_none() {
        if let Some(s) = selectors.iter().find(|s| s.needs_pod()) {
            return Err(Failure::config(format!(
                "selector `{}` asks about pods, but gotel does not run in Kubernetes (no KUBERNETES_SERVICE_HOST, \
                 no GOTEL_K8S_API); outside Kubernetes select by exe=",
                s.text
            )));
        }
    }
    // Each selector's settings: the global ones plus its probe specs.
    let per_selector: Vec<Arc<Settings>> = selectors
        .iter()
        .map(|sel| {
            let mut s = settings.clone();
            s.specs.extend(sel.specs.iter().cloned());
            s.ready_file = None;
            Arc::new(s)
        })
        .collect();
    // One trace across a connection whose two ends are traced here, without injection
    // (crate::shared_maps).
    let same_node = crate::instrumentations::join_same_node::JOIN_SAME_NODE.name;
    let join = settings.libraries.iter().any(|l| l.name == same_node);
    match crate::shared_maps::share(join) {
        Ok(()) if join => {
            tracing::info!("{same_node}: HTTP/1 server spans join the client span of their connection when both ends are traced here")
        }
        Ok(()) => {}
        Err(why) => tracing::warn!("{why}"),
    }
    // One set of kernel programs and maps for every target (attach::Kernel).
    if crate::kernel::share_programs(settings.maps.node_max_targets) {
        tracing::info!(
            "node mode: one set of kernel programs, maps and ring buffer for every target (up to \
             GOTEL_NODE_MAX_TARGETS={} at once, GOTEL_RING_BUFFER_BYTES={} for all)",
            settings.maps.node_max_targets,
            settings.maps.ring_buffer_bytes
        );
    } else {
        tracing::info!(
            "node mode: gotel does not see the kernel's process numbers (not in the host's pid namespace): each \
             target loads kernel programs of its own"
        );
    }
    tracing::info!(
        node = node_name.as_deref().unwrap_or("?"),
        api = client.is_some(),
        selectors = ?selectors.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        "node mode: watching for processes to trace"
    );
    if let Some(ready) = &settings.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .map_err(|e| Failure::config(format!("cannot write GOTEL_READY_FILE {}: {e}", ready.display())))?;
    }

    let mut pods: HashMap<String, Pod> = HashMap::new();
    let mut refreshed: Option<Instant> = None;
    let mut api_warned: Option<Instant> = None;
    // Processes decided on, with the executable they ran then.
    let mut decided: HashMap<(u32, u64), String> = HashMap::new();
    let mut pending: HashMap<(u32, u64), Candidate> = HashMap::new();
    let mut running: Vec<(u32, JoinHandle<()>)> = Vec::new();
    let me = std::process::id();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait() => break,
        }
        running.retain(|(_, h)| !h.is_finished());
        let alive = scan(me, &decided, &mut pending);
        metrics.scanned();
        decided.retain(|k, _| alive.contains(k));
        pending.retain(|k, _| alive.contains(k));

        let unknown = pending.values().any(|c| {
            c.cgroup.pod_uid.as_ref().is_some_and(|uid| {
                pods.get(uid)
                    .is_none_or(|p| c.cgroup.container_id.as_ref().is_some_and(|id| p.container_name(id).is_none()))
            })
        });
        if let (true, Some(client)) = (unknown, &client) {
            if refreshed.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                refreshed = Some(Instant::now());
                match client.pods().await {
                    Ok(list) => pods = list.into_iter().map(|p| (p.uid.clone(), p)).collect(),
                    Err(e) => {
                        if api_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                            tracing::warn!("node mode: cannot list this node's pods: {e}");
                            api_warned = Some(Instant::now());
                        }
                    }
                }
            }
        }

        let keys: Vec<(u32, u64)> = pending.keys().copied().collect();
        for key in keys {
            let c = &pending[&key];
            let pod = c.cgroup.pod_uid.as_ref().and_then(|uid| pods.get(uid));
            let container = pod.zip(c.cgroup.container_id.as_ref()).and_then(|(p, id)| p.container_name(id));
            let incomplete = client.is_some() && c.cgroup.pod_uid.is_some() && container.is_none();
            if incomplete && c.first_seen.elapsed() < POD_INFO_WAIT {
                continue;
            }
            let c = pending.remove(&key).expect("listed above");
            decided.insert(key, c.exe.clone());
            let Some(i) = selectors.iter().position(|s| s.matches(&c.exe, pod, container)) else { continue };
            let identity = identity_of(&c, pod, container, node_name.as_deref(), &selectors[i]);
            tracing::info!(
                pid = c.pid,
                exe = %c.exe,
                service = identity.service_name.as_deref().unwrap_or(""),
                selector = %selectors[i].text,
                "node mode: tracing a new process"
            );
            let target = metrics.start(c.pid, labels(&identity));
            running
                .push((c.pid, spawn_session(per_selector[i].clone(), c.pid, identity, stop.clone(), target, &metrics)));
        }
    }
    // Every session saw the same stop; wait for them to flush and detach.
    tokio::task::spawn_blocking(move || {
        for (_, h) in running {
            let _ = h.join();
        }
    })
    .await
    .ok();
    Ok(0)
}

/// Reads /proc: new processes go to `pending`; returns every live (pid, start).
///
/// A process that ran another executable when it was decided on is new again: a container's
/// first process is `runc init` (or a shell) until it execs the entrypoint, with the same pid
/// and start time.
fn scan(
    me: u32,
    decided: &HashMap<(u32, u64), String>,
    pending: &mut HashMap<(u32, u64), Candidate>,
) -> HashSet<(u32, u64)> {
    let mut alive = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return alive };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // With the pid, the start time is the process's identity (pids are reused).
        let Some(start) = start_time(pid) else { continue };
        let key = (pid, start);
        alive.insert(key);
        // Kernel threads have no executable; another user's needs CAP_SYS_PTRACE.
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/exe")) else { continue };
        let exe = link.to_string_lossy().trim_end_matches(" (deleted)").to_string();
        if decided.get(&key) == Some(&exe) || pending.get(&key).is_some_and(|c| c.exe == exe) {
            continue;
        }
        let exe_name = exe.rsplit('/').next().unwrap_or_default().to_string();
        let cgroup = cgroup::parse(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default());
        pending.insert(key, Candidate { pid, exe, exe_name, cgroup, first_seen: Instant::now() });
    }
    alive
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name's closing parenthesis: state is field 3, starttime 22.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The resource of one target: `service.name` by the rule in the module doc, `k8s.*`.
fn identity_of(
    c: &Candidate,
    pod: Option<&Pod>,
    container: Option<&str>,
    node: Option<&str>,
    sel: &Selector,
) -> Identity {
    let attrs = K8sAttributes {
        namespace: pod.map(|p| p.namespace.clone()),
        pod_name: pod.map(|p| p.name.clone()),
        pod_uid: c.cgroup.pod_uid.clone(),
        container_name: container.map(str::to_string),
        node_name: pod.and(node).map(str::to_string),
        container_id: c.cgroup.container_id.clone(),
    };
    let service = sel
        .service
        .clone()
        .or_else(|| pod.and_then(|p| p.labels.get("app.kubernetes.io/name").cloned()))
        .or_else(|| container.map(str::to_string))
        .unwrap_or_else(|| c.exe_name.clone());
    Identity { service_name: Some(service), attributes: attrs.key_values() }
}

/// A target's labels on /metrics (beside `pid`): its `service.name` and, when known, its pod's
/// namespace and name and its container's name.
fn labels(identity: &Identity) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> =
        identity.service_name.iter().map(|s| ("service_name", s.clone())).collect();
    for (label, key) in
        [("k8s_namespace", "k8s.namespace.name"), ("k8s_pod", "k8s.pod.name"), ("k8s_container", "k8s.container.name")]
    {
        if let Some(kv) = identity.attributes.iter().find(|kv| kv.key.as_str() == key) {
            out.push((label, kv.value.to_string()));
        }
    }
    out
}

/// One target's session, on its own thread and runtime so that one target's parsing and
/// attaching (seconds for a large binary) never holds up another's spans.
fn spawn_session(
    settings: Arc<Settings>,
    pid: u32,
    identity: Identity,
    mut stop: Stop,
    target: Arc<TargetMetrics>,
    node: &Arc<NodeMetrics>,
) -> JoinHandle<()> {
    let node = node.clone();
    std::thread::spawn(move || {
        let mut run = || -> Result<session::End, Failure> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::environment(format!("runtime: {e}")))?;
            let process = target::existing(pid)?;
            rt.block_on(session::session(&settings, process, None, &identity, &target.metrics, &mut stop))
        };
        let not_traced = match run() {
            Ok(_) => {
                tracing::info!(pid, "node mode: session ended");
                None
            }
            Err(e) if !target::alive(pid) => {
                tracing::info!(pid, "node mode: process {pid} exited before it was traced ({e})");
                Some("exited")
            }
            // Traced for a while, then failed: a session that ended, as the warning says.
            Err(e) if target.metrics.uprobes.load(Relaxed) > 0 => {
                tracing::warn!(pid, "node mode: tracing process {pid} stopped: {e}");
                None
            }
            Err(e) => {
                tracing::warn!(pid, "node mode: process {pid} is not traced: {e}");
                Some(match e.code {
                    ExitCode::Config => "config",
                    ExitCode::Environment => "environment",
                    ExitCode::Target => "target",
                    ExitCode::Ok | ExitCode::Internal => "internal",
                })
            }
        };
        node.end(&target, not_traced);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        Pod {
            uid: "u".into(),
            namespace: "shop".into(),
            name: "frontend-5f7".into(),
            labels: [("app.kubernetes.io/name".to_string(), "frontend".to_string())].into(),
            containers: vec![("c1".into(), "app".into())],
        }
    }

    #[test]
    fn selectors_parse_and_match() {
        let s =
            selectors(Some("namespace=shop, label:app.kubernetes.io/name=front*; exe=/usr/bin/*,service=tools"), &[])
                .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels, [("app.kubernetes.io/name".to_string(), "front*".to_string())]);
        assert!(s[0].needs_pod() && !s[1].needs_pod());
        let p = pod();
        assert!(s[0].matches("/app/frontend", Some(&p), Some("app")));
        // The sandbox (no known container), another namespace, a pod condition without a pod.
        assert!(!s[0].matches("/pause", Some(&p), None));
        assert!(!s[0].matches("/app/frontend", Some(&Pod { namespace: "dev".into(), ..pod() }), Some("app")));
        assert!(!s[0].matches("/app/frontend", None, None));
        assert!(s[1].matches("/usr/bin/jaeger", None, None));
        assert!(!s[1].matches("/app/frontend", Some(&p), Some("app")));
        assert_eq!(s[1].service.as_deref(), Some("tools"));
    }

    #[test]
    fn selector_errors_name_the_entry() {
        let err = |t: &str| selectors(Some(t), &[]).unwrap_err().to_string();
        assert!(err("").contains("at least one selector"));
        assert!(err("service=x").contains("selector `service=x`: no condition"));
        assert!(err("exe=/a,colour=red").contains("unknown key `colour`"));
        assert!(err("exe").contains("`exe` is not KEY=VALUE"));
        assert!(err("exe=/a,exe=/b").contains("given twice"));
        assert!(err("exe=/a,probes-file=/nonexistent/x").contains("cannot read probes-file"));
        let e = selectors(None, &["pod=".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--select: selector `pod=`: `pod` has no value"), "{e}");
    }

    #[test]
    fn probes_file_per_selector() {
        let f = std::env::temp_dir().join(format!("gotel-node-{}.probes", std::process::id()));
        std::fs::write(&f, "main.handle(id=arg0)\n").unwrap();
        let s = selectors(None, &[format!("exe=*/shop,probes-file={}", f.display())]).unwrap();
        let _ = std::fs::remove_file(&f);
        assert_eq!(s[0].specs.len(), 1);
        assert_eq!(s[0].specs[0].symbol, "main.handle");
    }

    #[test]
    fn service_name_by_selector_label_container_exe() {
        let c = Candidate {
            pid: 1,
            exe: "/app/server".into(),
            exe_name: "server".into(),
            cgroup: cgroup::Identity { container_id: Some("c1".into()), pod_uid: Some("u".into()) },
            first_seen: Instant::now(),
        };
        let sel = Selector::default();
        let p = pod();
        let name = |pod: Option<&Pod>, ctr: Option<&str>, sel: &Selector| {
            identity_of(&c, pod, ctr, Some("n1"), sel).service_name
        };
        assert_eq!(name(Some(&p), Some("app"), &sel).as_deref(), Some("frontend"));
        let unlabelled = Pod { labels: Default::default(), ..pod() };
        assert_eq!(name(Some(&unlabelled), Some("app"), &sel).as_deref(), Some("app"));
        assert_eq!(name(None, None, &sel).as_deref(), Some("server"));
        let named = Selector { service: Some("shop".into()), ..Selector::default() };
        assert_eq!(name(Some(&p), Some("app"), &named).as_deref(), Some("shop"));
        let id = identity_of(&c, Some(&p), Some("app"), Some("n1"), &sel);
        let keys: Vec<String> = id.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        assert_eq!(
            keys,
            [
                "k8s.namespace.name=shop",
                "k8s.pod.name=frontend-5f7",
                "k8s.pod.uid=u",
                "k8s.container.name=app",
                "k8s.node.name=n1",
                "container.id=c1"
            ]
        );
    }

    #[test]
    fn a_process_that_execs_is_new_again() {
        // Like a container's first process: `runc init` (here a shell) until it execs.
        let mut child =
            std::process::Command::new("/bin/sh").args(["-c", "sleep 0.5; exec /bin/sleep 5"]).spawn().unwrap();
        let pid = child.id();
        let mut decided = HashMap::new();
        let mut pending = HashMap::new();
        scan(std::process::id(), &decided, &mut pending);
        let (&key, first) = pending.iter().find(|(k, _)| k.0 == pid).expect("the shell is found");
        let shell = first.exe.clone();
        decided.insert(key, shell.clone());
        pending.clear();
        scan(std::process::id(), &decided, &mut pending);
        assert!(!pending.contains_key(&key), "an unchanged process is not new");
        std::thread::sleep(Duration::from_millis(1000));
        scan(std::process::id(), &decided, &mut pending);
        let _ = child.kill();
        let _ = child.wait();
        let again = pending.get(&key).expect("after exec, the same pid and start time are new again");
        assert!(again.exe.ends_with("sleep") && again.exe != shell, "{} after {shell}", again.exe);
    }

    #[test]
    fn start_time_of_this_process() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX - 1), None);
    }
}
