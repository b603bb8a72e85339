//! Which pod and container a process belongs to, from the text of its `/proc/PID/cgroup`.
//!
//! A pure rule, so every runtime's form is tested on the host: the kubelet names a pod's cgroup
//! after its uid and the runtime names the container's after its 64-hex id, in one of a few
//! spellings. cgroup v2 has one `0::PATH` line; cgroup v1 (and hybrid hosts) list one line per
//! hierarchy, any of which carries the path. Seen from inside a cgroup namespace the path is
//! relative (`0::/../<id>`): the last components are still the container's, which is all the
//! rule needs.
//!
//! | form | container component | pod component |
//! | --- | --- | --- |
//! | kubelet cgroupfs driver (containerd, cri-o) | `<id>` | `pod<uid>` |
//! | kubelet systemd driver, containerd | `cri-containerd-<id>.scope` | `kubepods-<qos>-pod<uid with _>.slice` |
//! | kubelet systemd driver, cri-o | `crio-<id>.scope` (`crio-conmon-<id>.scope` is the monitor) | same |
//! | docker (cgroupfs / systemd) | `/docker/<id>` / `docker-<id>.scope` | none |
//! | podman | `libpod-<id>.scope` | none |

/// What the cgroup path says about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The runtime's container id (64 lowercase hex digits), without any runtime prefix.
    pub container_id: Option<String>,
    /// The pod's uid (with dashes), when the kubelet made the cgroup.
    pub pod_uid: Option<String>,
}

/// Parses the whole text of `/proc/PID/cgroup`. Lines are tried in order; the first one that
/// names a container wins (all hierarchies of one process name the same container).
pub fn parse(text: &str) -> Identity {
    let mut best = Identity::default();
    for line in text.lines() {
        // `hierarchy-id:controllers:path`; the path may itself contain ':' only in theory.
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        let id = parse_path(path);
        if id.container_id.is_some() {
            return id;
        }
        if best.pod_uid.is_none() {
            best.pod_uid = id.pod_uid;
        }
    }
    best
}

fn parse_path(path: &str) -> Identity {
    let mut id = Identity::default();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid(comp) {
            id.pod_uid = Some(uid);
        } else if let Some(c) = container_id(comp) {
            id.container_id = Some(c);
        }
    }
    id
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(comp: &str) -> Option<String> {
    let comp = comp.strip_suffix(".slice").unwrap_or(comp);
    let at = if comp.starts_with("pod") { 0 } else { comp.rfind("-pod")? + 1 };
    let uid = comp[at + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    ok.then(|| uid.to_ascii_lowercase())
}

/// `<id>`, or `<runtime>-<id>.scope`; a conmon (cri-o's monitor) scope is not the container.
fn container_id(comp: &str) -> Option<String> {
    let comp = comp.strip_suffix(".scope").unwrap_or(comp);
    if comp.contains("conmon") {
        return None;
    }
    let id = comp.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c0f6a9d2b4e8c7a6b5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a";
    const UID: &str = "0d9a7c1e-5b4f-4a3e-9c2d-1e0f7a6b5c4d";

    fn want(container: bool, pod: bool) -> Identity {
        Identity { container_id: container.then(|| ID.to_string()), pod_uid: pod.then(|| UID.to_string()) }
    }

    #[test]
    fn kubelet_cgroupfs_v2_and_v1() {
        assert_eq!(parse(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n")), want(true, true));
        assert_eq!(parse(&format!("0::/kubepods/pod{UID}/{ID}\n")), want(true, true));
        let v1 =
            format!("12:pids:/kubepods/burstable/pod{UID}/{ID}\n4:memory:/kubepods/burstable/pod{UID}/{ID}\n0::/\n");
        assert_eq!(parse(&v1), want(true, true));
    }

    #[test]
    fn kubelet_systemd_containerd_and_crio() {
        let u = UID.replace('-', "_");
        let base = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice");
        assert_eq!(parse(&format!("{base}/cri-containerd-{ID}.scope\n")), want(true, true));
        assert_eq!(parse(&format!("{base}/crio-{ID}.scope\n")), want(true, true));
        // The guaranteed class has no qos level in the name.
        assert_eq!(parse(&format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope")), want(true, true));
        // cri-o's monitor process is not the container.
        assert_eq!(parse(&format!("{base}/crio-conmon-{ID}.scope\n")), want(false, true));
    }

    #[test]
    fn docker_podman_and_namespaced_paths() {
        assert_eq!(parse(&format!("0::/system.slice/docker-{ID}.scope\n")), want(true, false));
        assert_eq!(parse(&format!("9:cpu,cpuacct:/docker/{ID}\n0::/docker/{ID}")), want(true, false));
        assert_eq!(parse(&format!("0::/machine.slice/libpod-{ID}.scope/container")), want(true, false));
        // Another container of the same pod, seen from inside a cgroup namespace.
        assert_eq!(parse(&format!("0::/../{ID}\n")), want(true, false));
    }

    #[test]
    fn no_container() {
        assert_eq!(parse("0::/\n"), Identity::default());
        assert_eq!(parse("0::/user.slice/user-0.slice/session-3.scope\n"), Identity::default());
        // 63 hex digits, or a pod component with a bad uid, are not ids.
        assert_eq!(parse(&format!("0::/kubepods/pod{}/{}", &UID[1..], &ID[1..])), Identity::default());
        assert_eq!(parse(""), Identity::default());
    }
}
