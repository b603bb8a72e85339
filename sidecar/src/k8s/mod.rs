//! Kubernetes identity of a traced process, as OpenTelemetry resource attributes
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`, `k8s.node.name`,
//! `container.id`), so every span says which pod it came from.
//!
//! Two sources, because the two deployments know different things:
//! - **sidecar** (gotel in the target's pod, `shareProcessNamespace: true`): the pod's names come
//!   from the downward API as environment variables of gotel's container, named after the
//!   attributes (`K8S_NAMESPACE_NAME`, `K8S_POD_NAME`, `K8S_POD_UID`, `K8S_NODE_NAME`, and
//!   `K8S_CONTAINER_NAME`, which the downward API cannot give and the manifest states). No API
//!   access, no RBAC.
//! - **node** (one gotel per node, `hostPID`): the cgroup gives each process's pod uid and
//!   container id ([`cgroup`]); names and labels come from the API server ([`api`]).
//!
//! In both, `container.id` is the target's own, from its `/proc/PID/cgroup`.
pub mod api;
pub mod cgroup;

use opentelemetry::KeyValue;

/// The Kubernetes attributes known for one process (any may be missing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sAttributes {
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub container_name: Option<String>,
    pub node_name: Option<String>,
    pub container_id: Option<String>,
}

/// The environment variables the sidecar reads, with the attribute each one sets.
pub const DOWNWARD_API_ENV: [(&str, &str); 5] = [
    ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_POD_UID", "k8s.pod.uid"),
    ("K8S_CONTAINER_NAME", "k8s.container.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
];

impl K8sAttributes {
    /// Sidecar and single-target modes: the downward API variables (through `env`) and the
    /// target's cgroup text.
    pub fn from_env_and_cgroup(env: impl Fn(&str) -> Option<String>, cgroup_text: &str) -> Self {
        let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let id = cgroup::parse(cgroup_text);
        K8sAttributes {
            namespace: get("K8S_NAMESPACE_NAME"),
            pod_name: get("K8S_POD_NAME"),
            // The cgroup's uid is the target's own; the variable wins when both are there
            // (they agree in a sidecar; the cgroup may be namespaced away).
            pod_uid: get("K8S_POD_UID").or(id.pod_uid),
            container_name: get("K8S_CONTAINER_NAME"),
            node_name: get("K8S_NODE_NAME"),
            container_id: id.container_id,
        }
    }

    /// For the process `pid`, in the modes that trace one target.
    pub fn for_process(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        Self::from_env_and_cgroup(|k| std::env::var(k).ok(), &text)
    }

    pub fn key_values(&self) -> Vec<KeyValue> {
        [
            ("k8s.namespace.name", &self.namespace),
            ("k8s.pod.name", &self.pod_name),
            ("k8s.pod.uid", &self.pod_uid),
            ("k8s.container.name", &self.container_name),
            ("k8s.node.name", &self.node_name),
            ("container.id", &self.container_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| KeyValue::new(k, v.clone())))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_attributes_from_the_downward_api_and_the_cgroup() {
        let id = "a".repeat(64);
        let env = |k: &str| match k {
            "K8S_NAMESPACE_NAME" => Some("shop".to_string()),
            "K8S_POD_NAME" => Some("frontend-7d9f".to_string()),
            "K8S_POD_UID" => Some(" ".to_string()),
            "K8S_CONTAINER_NAME" => Some("app".to_string()),
            "K8S_NODE_NAME" => Some("node-1".to_string()),
            _ => None,
        };
        let a = K8sAttributes::from_env_and_cgroup(
            env,
            &format!("0::/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/{id}\n"),
        );
        let got: Vec<String> = a.key_values().iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        assert_eq!(
            got,
            [
                "k8s.namespace.name=shop",
                "k8s.pod.name=frontend-7d9f",
                // A blank variable is no value: the cgroup's uid is used.
                "k8s.pod.uid=11111111-2222-3333-4444-555555555555",
                "k8s.container.name=app",
                "k8s.node.name=node-1",
                &format!("container.id={id}"),
            ]
        );
        // Outside Kubernetes: nothing at all.
        assert!(K8sAttributes::from_env_and_cgroup(|_| None, "0::/user.slice\n").key_values().is_empty());
        // Every variable the docs name is read.
        for (var, attr) in DOWNWARD_API_ENV {
            let a = K8sAttributes::from_env_and_cgroup(|k| (k == var).then(|| "x".to_string()), "");
            assert_eq!(a.key_values().first().map(|kv| kv.key.to_string()).as_deref(), Some(attr));
        }
    }
}
