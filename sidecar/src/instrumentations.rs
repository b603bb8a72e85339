//! Built-in instrumentations that need no probe spec: HTTP server spans (kind SERVER) from
//! `net/http.serverHandler.ServeHTTP` and HTTP client spans (kind CLIENT) from
//! `net/http.(*Transport).roundTrip`, for every Go binary that contains them
//! (`GOTEL_LIBRARIES`: `all` (default), `none`, or a list of `http.server`, `http.client`).
//!
//! They ride on the same kernel machinery as user probes: the entry probe captures the
//! request's fields; the server's RET probes read the route (`Request.Pattern`, set by ServeMux
//! during the call) and the status code through the request and response-writer pointers saved
//! at entry. Field offsets come from the binary's DWARF, so they follow every Go version; a
//! binary without DWARF gets them from the layout table of its Go release (`go_layouts`).
//! Nesting comes for free: user functions called by a handler run on its goroutine and become
//! children of the server span; a client call becomes a child of the innermost traced call.
use opentelemetry::{trace::SpanKind, trace::Status, KeyValue, Value};

use crate::{
    attributes::{self, AttrSlot, AttributePlan, Decode, Limits},
    binary::GoBinary,
    dwarf::DwarfInfo,
    exit::Failure,
    go_layouts, spec,
};
use gotel_shared::{Fetch, Root, ValueKind, REG_RCX, REG_RDI};

pub mod inject_socket;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Library {
    HttpServer,
    HttpClient,
}

impl Library {
    pub const ALL: [Library; 2] = [Library::HttpServer, Library::HttpClient];

    pub fn name(self) -> &'static str {
        match self {
            Library::HttpServer => "http.server",
            Library::HttpClient => "http.client",
        }
    }

    /// The Go function the library is probed at.
    pub fn symbol(self) -> &'static str {
        match self {
            Library::HttpServer => "net/http.serverHandler.ServeHTTP",
            Library::HttpClient => "net/http.(*Transport).roundTrip",
        }
    }

    pub fn span_kind(self) -> SpanKind {
        match self {
            Library::HttpServer => SpanKind::Server,
            Library::HttpClient => SpanKind::Client,
        }
    }

    /// Entry and return captures, as a probe spec the attribute planner resolves with DWARF.
    pub(crate) fn spec(self) -> &'static str {
        match self {
            Library::HttpServer => {
                "net/http.serverHandler.ServeHTTP(m=req.Method, path=req.URL.Path, host=req.Host, \
                 peer=req.RemoteAddr, major=req.ProtoMajor, minor=req.ProtoMinor)"
            }
            Library::HttpClient => {
                "net/http.(*Transport).roundTrip(m=req.Method, scheme=req.URL.Scheme, host=req.URL.Host, \
                 path=req.URL.Path, query=req.URL.RawQuery, status=ret0.StatusCode, err=ret1)"
            }
        }
    }
}

/// `GOTEL_LIBRARIES`.
pub fn libraries_from_env() -> Result<Vec<Library>, Failure> {
    let v = std::env::var("GOTEL_LIBRARIES").unwrap_or_default();
    let v = v.trim();
    if v.is_empty() || v == "all" {
        return Ok(Library::ALL.to_vec());
    }
    if v == "none" {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|name| {
            let name = name.trim();
            Library::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| {
                Failure::config(format!(
                    "GOTEL_LIBRARIES: unknown instrumentation `{name}`; use all, none, or a comma list of http.server, http.client"
                ))
            })
        })
        .collect()
}

/// `GOTEL_PROPAGATION`: `none` (default, gotel never writes into the target) or `inject`
/// (write `traceparent` into outgoing HTTP/1 requests that lack one).
pub fn inject_from_env() -> Result<bool, Failure> {
    match std::env::var("GOTEL_PROPAGATION").unwrap_or_default().trim() {
        "" | "none" => Ok(false),
        "inject" => Ok(true),
        other => Err(Failure::config(format!("GOTEL_PROPAGATION={other}: use none (default) or inject"))),
    }
}

/// Why injection cannot work here, if the kernel says so up front: lockdown (integrity or
/// confidentiality) forbids `bpf_probe_write_user`. The file is absent when securityfs is not
/// mounted (containers); the verifier then gives the same answer at load time.
pub fn lockdown_refusal() -> Option<String> {
    let mode = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    ["[integrity]", "[confidentiality]"].into_iter().find(|m| mode.contains(m)).map(|m| lockdown_message(m))
}

pub fn lockdown_message(mode: &str) -> String {
    format!(
        "GOTEL_PROPAGATION=inject refused: the kernel is locked down ({mode}), which forbids writing into another \
         process (bpf_probe_write_user); outgoing requests are not modified and traces are not joined across \
         services. Incoming traceparent is still honoured. Boot without lockdown (lockdown=none) to inject."
    )
}

/// Offsets of `bufio.Writer.buf` and `.n`, needed to append a header to an outgoing request.
pub fn bufio_writer_offsets(bin: &GoBinary) -> Option<gotel_shared::InjectConfig> {
    let dwarf = types_of(bin).ok()?;
    let types = &dwarf.types;
    let w = types.struct_named("bufio.Writer")?;
    Some(gotel_shared::InjectConfig {
        buf_offset: types.field(w, "buf")?.0 as u32,
        n_offset: types.field(w, "n")?.0 as u32,
        request_url_offset: types.struct_field("net/http.Request", "URL")?.0 as u32,
        _pad: 0,
    })
}

/// What a library probe captures, or why it cannot be used with this binary.
pub fn plan(bin: &GoBinary, lib: Library, limits: &Limits) -> Result<(AttributePlan, [u8; 2]), String> {
    let dwarf = types_of(bin)?;
    let dwarf = &*dwarf;
    let info = dwarf.function(lib.symbol()).ok_or("no DWARF for the function")?;
    let specs = spec::parse_probes(lib.spec()).map_err(|e| e.to_string())?;
    let mut plan = attributes::plan_function(lib.symbol(), Some(info), Some(dwarf), &specs[0].attrs, limits)
        .map_err(|e| e.to_string())?;
    let mut save = [gotel_shared::NO_REG; 2];
    if lib == Library::HttpServer {
        // serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request):
        // sh -> RAX, rw -> RBX (itab) + RCX (data), req -> RDI.
        save = [REG_RDI, REG_RCX];
        let types = &dwarf.types;
        let max = limits.max_string.min(gotel_shared::MAX_STR) as u16;
        let mut add = |key: &str, kind: ValueKind, saved: u8, hops: &[u64], decode: Decode| {
            let mut f = Fetch {
                root: Root::Saved as u8,
                kind: kind as u8,
                size: 8,
                nregs: 1,
                regs: [saved, 0],
                nhops: hops.len() as u8,
                at_return: 1,
                max_len: max,
                slot: plan.slots.len() as u16,
                ..Fetch::default()
            };
            for (i, h) in hops.iter().enumerate() {
                f.hops[i] = *h as i32;
            }
            plan.fetches.push(f);
            plan.slots.push(AttrSlot { key: attributes::shared_key(key), decode, sets_error_status: false });
        };
        if let Some(off) = types.struct_field("net/http.Request", "Pattern") {
            add("route", ValueKind::String, 0, &[off.0], Decode::String);
        }
        if let Some(off) = types.struct_field("net/http.response", "status") {
            add("status1", ValueKind::Int, 1, &[off.0], Decode::Int { size: 8 });
        }
        if let (Some(rws), Some(st)) = (
            types.struct_field("net/http.http2responseWriter", "rws"),
            types.struct_field("net/http.http2responseWriterState", "status"),
        ) {
            add("status2", ValueKind::Int, 1, &[rws.0, st.0], Decode::Int { size: 8 });
        } else if let (Some(rws), Some(st)) = (
            // Go 1.27+: the writer moved to net/http/internal/http2; net/http wraps it in the
            // pointer-shaped `struct{ *http2.responseWriter }`, so the interface's data word is
            // that pointer and the path is the same as before.
            types.struct_field("net/http/internal/http2.responseWriter", "rws"),
            types.struct_field("net/http/internal/http2.responseWriterState", "status"),
        ) {
            add("status2", ValueKind::Int, 1, &[rws.0, st.0], Decode::Int { size: 8 });
        }
        // The response writer's dynamic type tells HTTP/1 from HTTP/2 apart.
        let rw = spec::parse_probes("net/http.serverHandler.ServeHTTP(rw=rw)").map_err(|e| e.to_string())?;
        let rw_plan = attributes::plan_function(lib.symbol(), Some(info), Some(dwarf), &rw[0].attrs, limits)
            .map_err(|e| e.to_string())?;
        for mut f in rw_plan.fetches {
            f.slot += plan.slots.len() as u16;
            plan.fetches.push(f);
        }
        plan.slots.extend(rw_plan.slots);
    }
    if plan.fetches.len() > gotel_shared::MAX_FETCHES {
        return Err("too many captures".into());
    }
    Ok((plan, save))
}

/// The binary's own DWARF, or, for a binary built without it, the layouts of its Go release
/// from gotel's table (`go_layouts`).
fn types_of(bin: &GoBinary) -> Result<Types<'_>, String> {
    match &bin.dwarf {
        Some(d) => Ok(Types::Binary(d)),
        None => {
            Ok(Types::Table(go_layouts::synthetic_dwarf(&go_layouts::layout_for(bin.build.go_version.as_deref())?)))
        }
    }
}

enum Types<'a> {
    Binary(&'a DwarfInfo),
    Table(DwarfInfo),
}

impl std::ops::Deref for Types<'_> {
    type Target = DwarfInfo;
    fn deref(&self) -> &DwarfInfo {
        match self {
            Types::Binary(d) => d,
            Types::Table(d) => d,
        }
    }
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<Value> {
    let i = attrs.iter().position(|kv| kv.key.as_str() == key)?;
    Some(attrs.swap_remove(i).value)
}

fn text(v: Option<Value>) -> Option<String> {
    v.map(|v| v.as_str().into_owned()).filter(|s| !s.is_empty())
}

fn int(v: Option<Value>) -> Option<i64> {
    match v? {
        Value::I64(i) => Some(i),
        other => other.as_str().parse().ok(),
    }
}

/// Splits "host:port" (also "[::1]:80") into host and port.
fn host_port(s: &str) -> (String, Option<i64>) {
    if let Some((h, p)) = s.rsplit_once(':') {
        if let Ok(port) = p.parse::<i64>() {
            return (h.trim_start_matches('[').trim_end_matches(']').to_string(), Some(port));
        }
    }
    (s.to_string(), None)
}

/// A finished library span: name, attributes per the HTTP semantic conventions, status.
pub struct Finished {
    pub name: String,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
}

/// Turns the raw captures of a library probe into the span's name, attributes and status.
/// `raw` holds the decoded captures (internal keys); `fixed` the code.* attributes.
pub fn finish(lib: Library, mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let method = text(take(&mut raw, "m")).unwrap_or_else(|| "_OTHER".into());
    let mut attributes = vec![KeyValue::new("http.request.method", method.clone())];
    let mut status = Status::Unset;
    match lib {
        Library::HttpServer => {
            let route = text(take(&mut raw, "route"));
            if let Some(path) = text(take(&mut raw, "path")) {
                attributes.push(KeyValue::new("url.path", path));
            }
            // Go's pattern may carry the method and host ("GET example.com/items/{id}").
            let route = route.map(|r| {
                let r = r.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or(r);
                match r.find('/') {
                    Some(i) => r[i..].to_string(),
                    None => r,
                }
            });
            if let Some(r) = &route {
                attributes.push(KeyValue::new("http.route", r.clone()));
            }
            let rw_type = text(take(&mut raw, "rw")).unwrap_or_default();
            let s1 = int(take(&mut raw, "status1"));
            let s2 = int(take(&mut raw, "status2"));
            let http2 = rw_type.contains("http2");
            let plausible = |s: Option<i64>| s.filter(|c| (100..=599).contains(c));
            let code = if http2 { plausible(s2) } else { plausible(s1).or(plausible(s2)) };
            // A handler that never wrote anything answered 200.
            let code = code.or(if s1 == Some(0) && !http2 { Some(200) } else { None });
            if let Some(c) = code {
                attributes.push(KeyValue::new("http.response.status_code", c));
                if c >= 500 {
                    status = Status::error(format!("HTTP {c}"));
                }
            }
            if let Some(host) = text(take(&mut raw, "host")) {
                let (h, p) = host_port(&host);
                attributes.push(KeyValue::new("server.address", h));
                if let Some(p) = p {
                    attributes.push(KeyValue::new("server.port", p));
                }
            }
            if let Some(peer) = text(take(&mut raw, "peer")) {
                let (h, p) = host_port(&peer);
                attributes.push(KeyValue::new("client.address", h));
                if let Some(p) = p {
                    attributes.push(KeyValue::new("client.port", p));
                }
            }
            let version = match (int(take(&mut raw, "major")), int(take(&mut raw, "minor"))) {
                (Some(2), _) => Some("2".to_string()),
                (Some(maj), Some(min)) if maj > 0 => Some(format!("{maj}.{min}")),
                _ => None,
            };
            if let Some(v) = version {
                attributes.push(KeyValue::new("network.protocol.version", v));
            }
            let name = match route {
                Some(r) => format!("{method} {r}"),
                None => method,
            };
            Finished { name, attributes, status }
        }
        Library::HttpClient => {
            let scheme = text(take(&mut raw, "scheme")).unwrap_or_else(|| "http".into());
            let host = text(take(&mut raw, "host")).unwrap_or_default();
            let path = text(take(&mut raw, "path")).unwrap_or_default();
            let query = text(take(&mut raw, "query"));
            let mut full = format!("{scheme}://{host}{path}");
            if let Some(q) = query {
                full.push('?');
                full.push_str(&q);
            }
            attributes.push(KeyValue::new("url.full", full));
            let (h, p) = host_port(&host);
            attributes.push(KeyValue::new("server.address", h));
            attributes.push(KeyValue::new("server.port", p.unwrap_or(if scheme == "https" { 443 } else { 80 })));
            let _ = take(&mut raw, "err");
            if let Some(c) = int(take(&mut raw, "status")).filter(|c| (100..=599).contains(c)) {
                attributes.push(KeyValue::new("http.response.status_code", c));
                if c >= 400 {
                    status = Status::error(format!("HTTP {c}"));
                }
            }
            if let Some(msg) = error {
                status = Status::error(msg);
            }
            Finished { name: method, attributes, status }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_span_from_captures() {
        let raw = vec![
            KeyValue::new("m", "GET"),
            KeyValue::new("path", "/items/7"),
            KeyValue::new("route", "GET /items/{id}"),
            KeyValue::new("status1", 503i64),
            KeyValue::new("host", "shop:8080"),
            KeyValue::new("peer", "[::1]:5555"),
            KeyValue::new("major", 1i64),
            KeyValue::new("minor", 1i64),
            KeyValue::new("rw", "*net/http.response"),
        ];
        let f = finish(Library::HttpServer, raw, None);
        assert_eq!(f.name, "GET /items/{id}");
        let get =
            |k: &str| f.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.as_str().into_owned());
        assert_eq!(get("http.route").as_deref(), Some("/items/{id}"));
        assert_eq!(get("http.response.status_code").as_deref(), Some("503"));
        assert_eq!(get("client.address").as_deref(), Some("::1"));
        assert_eq!(get("server.address").as_deref(), Some("shop"));
        assert_eq!(get("network.protocol.version").as_deref(), Some("1.1"));
        assert!(matches!(f.status, Status::Error { .. }));
    }

    #[test]
    fn client_span_from_captures() {
        let raw = vec![
            KeyValue::new("m", "POST"),
            KeyValue::new("scheme", "http"),
            KeyValue::new("host", "backend:8081"),
            KeyValue::new("path", "/price"),
            KeyValue::new("query", "item=tea"),
            KeyValue::new("status", 200i64),
        ];
        let f = finish(Library::HttpClient, raw, None);
        assert_eq!(f.name, "POST");
        let get =
            |k: &str| f.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.as_str().into_owned());
        assert_eq!(get("url.full").as_deref(), Some("http://backend:8081/price?item=tea"));
        assert_eq!(get("server.port").as_deref(), Some("8081"));
        assert!(matches!(f.status, Status::Unset));
        let failed = finish(Library::HttpClient, vec![KeyValue::new("m", "GET")], Some("connection refused".into()));
        assert!(matches!(failed.status, Status::Error { .. }));
    }

    #[test]
    fn libraries_parse() {
        assert_eq!(Library::ALL.iter().map(|l| l.name()).collect::<Vec<_>>(), ["http.server", "http.client"]);
    }
}
