//! Node mode's reads from the Kubernetes API server: the pods of this node, for the names and
//! labels of the pods and containers that the cgroups identify.
//!
//! One request, `GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`, authenticated with the
//! pod's service-account token and checked against the cluster's CA, both from the standard
//! in-cluster paths. That needs only `list` on `pods` (the ClusterRole in
//! `deploy/kubernetes/`). A full client (kube + k8s-openapi) would have brought hundreds of
//! generated types and minutes of build on two cores for this one call; reqwest, which gotel
//! already links for OTLP, does it (TLS through the system's OpenSSL, trusting only the cluster's
//! CA), and the JSON is read with serde_json.
//!
//! The token is read again for every request: projected service-account tokens are rotated by
//! the kubelet.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{attach::chain, exit::Failure};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What node mode needs to know of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `(container id without the runtime prefix, container name)`, init containers included.
    pub containers: Vec<(String, String)>,
}

impl Pod {
    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers.iter().find(|(c, _)| c == id).map(|(_, n)| n.as_str())
    }
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    token: PathBuf,
}

impl Client {
    /// The in-cluster client, or `None` outside Kubernetes (no `KUBERNETES_SERVICE_HOST` and no
    /// `GOTEL_K8S_API`). `GOTEL_K8S_API` (`https://host:port`) replaces the service address,
    /// for clusters where pods reach the API server another way; `GOTEL_K8S_SA_DIR` replaces
    /// the service-account directory.
    pub fn in_cluster(node: &str) -> Result<Option<Client>, Failure> {
        let base = match (std::env::var("GOTEL_K8S_API").ok(), std::env::var("KUBERNETES_SERVICE_HOST").ok()) {
            (Some(u), _) if !u.is_empty() => u.trim_end_matches('/').to_string(),
            (_, Some(h)) if !h.is_empty() => {
                let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                let host = if h.contains(':') { format!("[{h}]") } else { h };
                format!("https://{host}:{port}")
            }
            _ => return Ok(None),
        };
        let dir = PathBuf::from(std::env::var("GOTEL_K8S_SA_DIR").unwrap_or_else(|_| SA_DIR.into()));
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|e| {
            Failure::environment(format!(
                "node mode: cannot read the cluster CA {}: {e}; run gotel with a service account \
                 (automountServiceAccountToken) or set GOTEL_K8S_SA_DIR",
                ca_path.display()
            ))
        })?;
        let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| {
            Failure::environment(format!("node mode: {} is not a PEM certificate: {e}", ca_path.display()))
        })?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::environment(format!("node mode: HTTPS client: {e}")))?;
        let url = format!("{base}/api/v1/pods?fieldSelector=spec.nodeName%3D{}", urlencode(node));
        Ok(Some(Client { http, url, token: dir.join("token") }))
    }

    /// The pods of this node.
    pub async fn pods(&self) -> Result<Vec<Pod>, String> {
        let token = std::fs::read_to_string(&self.token)
            .map_err(|e| format!("cannot read the service-account token {}: {e}", self.token.display()))?;
        let resp = self
            .http
            .get(&self.url)
            .bearer_auth(token.trim())
            .send()
            .await
            .map_err(|e| format!("GET {}: {}", self.url, chain(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {}: {e}", self.url))?;
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!(
                "GET {}: 403 Forbidden: the service account may not list pods (apply deploy/kubernetes/rbac.yaml)",
                self.url
            ));
        }
        if !status.is_success() {
            return Err(format!(
                "GET {}: {status}: {}",
                self.url,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        parse_pod_list(&body)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `PodList` as the API server sends it; pods without a uid are skipped.
pub fn parse_pod_list(json: &[u8]) -> Result<Vec<Pod>, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("the pod list is not JSON: {e}"))?;
    let items = v.get("items").and_then(Value::as_array).ok_or("the pod list has no items")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let mut pods = Vec::new();
    for item in items {
        let meta = item.get("metadata");
        let uid = s(meta.and_then(|m| m.get("uid")));
        if uid.is_empty() {
            continue;
        }
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        let status = item.get("status");
        let containers = ["initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"]
            .iter()
            .filter_map(|k| status.and_then(|st| st.get(*k)).and_then(Value::as_array))
            .flatten()
            .filter_map(|c| {
                // `containerd://ID`, `cri-o://ID`, `docker://ID`.
                let id = c.get("containerID")?.as_str()?;
                let id = id.rsplit_once("://").map_or(id, |(_, id)| id);
                Some((id.to_string(), c.get("name")?.as_str()?.to_string()))
            })
            .collect();
        pods.push(Pod {
            uid,
            namespace: s(meta.and_then(|m| m.get("namespace"))),
            name: s(meta.and_then(|m| m.get("name"))),
            labels,
            containers,
        });
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pod_list() {
        let json = br#"{"kind":"PodList","apiVersion":"v1","items":[
          {"metadata":{"name":"frontend-1","namespace":"shop","uid":"u-1",
                       "labels":{"app.kubernetes.io/name":"frontend","tier":"web"}},
           "spec":{"nodeName":"n1"},
           "status":{"containerStatuses":[
              {"name":"app","containerID":"containerd://aaa"},
              {"name":"gotel","containerID":"cri-o://bbb"},
              {"name":"waiting"}],
            "initContainerStatuses":[{"name":"init","containerID":"docker://ccc"}]}},
          {"metadata":{"name":"no-uid"}}]}"#;
        let pods = parse_pod_list(json).unwrap();
        assert_eq!(pods.len(), 1);
        let p = &pods[0];
        assert_eq!((p.uid.as_str(), p.namespace.as_str(), p.name.as_str()), ("u-1", "shop", "frontend-1"));
        assert_eq!(p.labels["app.kubernetes.io/name"], "frontend");
        assert_eq!(p.container_name("aaa"), Some("app"));
        assert_eq!(p.container_name("bbb"), Some("gotel"));
        assert_eq!(p.container_name("ccc"), Some("init"));
        assert_eq!(p.container_name("zzz"), None);
        assert!(parse_pod_list(b"{}").is_err());
        assert!(parse_pod_list(b"<html>").is_err());
    }

    #[test]
    fn node_names_are_escaped() {
        assert_eq!(urlencode("node-1.example"), "node-1.example");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
