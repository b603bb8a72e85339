//! HTTP server spans (kind SERVER) from `net/http.serverHandler.ServeHTTP`, the call every
//! net/http server makes per request (HTTP/1 and HTTP/2).
//!
//! The entry probe captures the request's fields; the RET probes read the route
//! (`Request.Pattern`, set by ServeMux during the call) and the status code through the request
//! and response-writer pointers saved at entry, which the spec language cannot say, hence
//! [`extend`]. User functions called by a handler run on its goroutine and become children of
//! the server span.
use std::borrow::Cow;

use gotel_shared::{Root, ValueKind, REG_RCX, REG_RDI};
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue, Value,
};

use super::{
    host_port, int, take, text,
    trace_context_in::{FROM_LINE, USER_AGENT_CAPTURE},
    trimmed, Arg, FieldNeed, Finished, GoTy, Instrumentation, ReturnRead, SpanProbe,
};
use crate::{
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

const SYMBOL: &str = "net/http.serverHandler.ServeHTTP";

pub static HTTP_SERVER: Instrumentation = Instrumentation {
    name: "http.server",
    selectable: true,
    doc: "server spans (kind SERVER) named `{method} {route}`; ERROR for 5xx",
    attributes: &[
        "http.request.method",
        "url.scheme",
        "url.path",
        "http.route",
        "http.response.status_code",
        "server.address",
        "server.port",
        "client.address",
        "client.port",
        "network.protocol.version",
        "user_agent.original",
    ],
    fields: &[
        FieldNeed::std("net/http.Request", "Method", GoTy::String),
        FieldNeed::std("net/http.Request", "URL", GoTy::Ptr("net/url.URL")),
        FieldNeed::std("net/http.Request", "ProtoMajor", GoTy::Int),
        FieldNeed::std("net/http.Request", "ProtoMinor", GoTy::Int),
        FieldNeed::std("net/http.Request", "Host", GoTy::String),
        FieldNeed::std("net/http.Request", "RemoteAddr", GoTy::String),
        // Non-nil for HTTPS: `url.scheme`.
        FieldNeed::std("net/http.Request", "TLS", GoTy::Opaque),
        // Go 1.22+.
        FieldNeed::std("net/http.Request", "Pattern", GoTy::String).optional(),
        FieldNeed::std("net/url.URL", "Path", GoTy::String),
        FieldNeed::std("net/http.response", "status", GoTy::Int),
        // HTTP/2 server status: bundled in net/http up to Go 1.26 ...
        FieldNeed::std("net/http.http2responseWriter", "rws", GoTy::Ptr("net/http.http2responseWriterState"))
            .optional(),
        FieldNeed::std("net/http.http2responseWriterState", "status", GoTy::Int).optional(),
        // ... and from Go 1.27 in net/http/internal/http2 (net/http.http2ResponseWriter is then
        // `struct{ *http2.responseWriter }`, pointer-shaped, so the interface holds that pointer).
        FieldNeed::std(
            "net/http/internal/http2.responseWriter",
            "rws",
            GoTy::Ptr("net/http/internal/http2.responseWriterState"),
        )
        .optional(),
        FieldNeed::std("net/http/internal/http2.responseWriterState", "status", GoTy::Int).optional(),
    ],
    span: Some(SpanProbe {
        symbol: SYMBOL,
        kind: SpanKind::Server,
        spec: "net/http.serverHandler.ServeHTTP(m=req.Method, path=req.URL.Path, host=req.Host, \
               peer=req.RemoteAddr, major=req.ProtoMajor, minor=req.ProtoMinor)",
        // serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request):
        // sh -> RAX, rw -> RBX (itab) + RCX (data), req -> RDI.
        signature: &[
            Arg::param("sh", GoTy::Word("net/http.serverHandler")),
            Arg::param("rw", GoTy::Iface("net/http.ResponseWriter")),
            Arg::param("req", GoTy::Ptr("net/http.Request")),
        ],
        save_regs: [REG_RDI, REG_RCX],
        extend: Some(extend),
        finish,
    }),
    ..Instrumentation::BASE
};

/// Reads at return through the saved `req` (slot 0) and `rw` data word (slot 1): the route and
/// the HTTP/1 and HTTP/2 status. Which status is the request's follows from its `ProtoMajor`
/// (read at entry): net/http serves `ProtoMajor` 2 with its HTTP/2 writer and refuses it on
/// HTTP/1 connections, so the writer's dynamic type (a value of its own in every record, once)
/// is not needed.
fn extend(plan: &mut AttributePlan, dwarf: &DwarfInfo, _info: &FunctionInfo, limits: &Limits) -> Result<(), String> {
    let types = &dwarf.types;
    let max = limits.max_string.min(gotel_shared::MAX_STR) as u16;
    let mut add = |key: &str, kind: ValueKind, saved: u8, hops: &[u64], decode: Decode| {
        ReturnRead { root: Root::Saved, reg: saved, max_len: max }.push(plan, key, kind, hops, decode)
    };
    if let Some(off) = types.struct_field("net/http.Request", "Pattern") {
        add("route", ValueKind::String, 0, &[off.0], Decode::String);
    }
    if let Some(off) = types.struct_field("net/http.Request", "TLS") {
        add("tls", ValueKind::Int, 0, &[off.0], Decode::Int { size: 8 });
    }
    if let Some(off) = types.struct_field("net/http.response", "status") {
        add("status1", ValueKind::Int, 1, &[off.0], Decode::Int { size: 8 });
    }
    let h2 = |pkg: &str| {
        let rws = types.struct_field(&format!("{pkg}responseWriter"), "rws")?;
        let status = types.struct_field(&format!("{pkg}responseWriterState"), "status")?;
        Some((rws.0, status.0))
    };
    if let Some((rws, status)) = h2("net/http.http2").or_else(|| h2("net/http/internal/http2.")) {
        add("status2", ValueKind::Int, 1, &[rws, status], Decode::Int { size: 8 });
        // Not on a request the entry's header scan saw as HTTP/1: its writer is an
        // `http.response`, whose field at `rws`'s offset is no pointer to a status.
        if let Some(f) = plan.fetches.last_mut() {
            f.skip_if = gotel_shared::FRAME_HTTP1;
        }
    }
    Ok(())
}

/// The capture of one of `FROM_LINE`'s pairs: the request line's when the kernel took it
/// (it then skipped the other), else the request's.
fn from_line_or_request(raw: &mut Vec<KeyValue>, line: &str, request: &str) -> (Option<String>, Option<String>) {
    (text(take(raw, line)), text(take(raw, request)))
}

/// `URL.Path` of an origin-form request target: up to `?`, percent-decoded, as Go's
/// `url.ParseRequestURI` makes it (the request has passed it: its escapes are valid).
fn path_of_target(mut target: String) -> String {
    if let Some(q) = target.find('?') {
        target.truncate(q);
    }
    match percent_encoding::percent_decode_str(&target).decode_utf8_lossy() {
        Cow::Borrowed(_) => target,
        Cow::Owned(decoded) => decoded,
    }
}

/// The route of a ServeMux pattern: without the method and host Go's pattern may carry
/// ("GET example.com/items/{id}" gives "/items/{id}"); the pattern's own allocation when it
/// has neither.
fn route_of_pattern(mut pattern: String) -> String {
    let after_method = pattern.find(' ').map_or(0, |i| i + 1);
    let start = pattern[after_method..].find('/').map_or(after_method, |i| after_method + i);
    pattern.drain(..start);
    pattern
}

fn finish(mut raw: Vec<KeyValue>, _error: Option<String>) -> Finished {
    let [(m_line, m), (target, path), (host_line, host)] =
        FROM_LINE.map(|(line, request, _)| from_line_or_request(&mut raw, line, request));
    let method = m_line.or(m).unwrap_or_else(|| "_OTHER".into());
    let mut attributes = Vec::with_capacity(HTTP_SERVER.attributes.len());
    attributes.push(KeyValue::new("http.request.method", method.clone()));
    let mut status = Status::Unset;
    let route = text(take(&mut raw, "route"));
    if let Some(tls) = int(take(&mut raw, "tls")) {
        attributes.push(KeyValue::new("url.scheme", if tls != 0 { "https" } else { "http" }));
    }
    if let Some(path) = target.map(path_of_target).or(path) {
        attributes.push(KeyValue::new("url.path", path));
    }
    let route = route.map(route_of_pattern);
    if let Some(r) = &route {
        attributes.push(KeyValue::new("http.route", r.clone()));
    }
    let (major, minor) = (int(take(&mut raw, "major")), int(take(&mut raw, "minor")));
    let s1 = int(take(&mut raw, "status1"));
    let s2 = int(take(&mut raw, "status2"));
    let http2 = major == Some(2);
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
    // A `Host` line's value has the spaces net/textproto trims from `Request.Host`.
    let host = host_line.map(trimmed).or(host);
    let peer = text(take(&mut raw, "peer"));
    // Static keys and versions: no allocation of their own in each span (nor in the copy of
    // each export attempt).
    for (addr, address, port) in [(host, "server.address", "server.port"), (peer, "client.address", "client.port")] {
        if let Some(addr) = addr.filter(|a| !a.is_empty()) {
            let (h, p) = host_port(addr);
            attributes.push(KeyValue::new(address, h));
            if let Some(p) = p {
                attributes.push(KeyValue::new(port, p));
            }
        }
    }
    let version: Option<Value> = match (major, minor) {
        (Some(2), _) => Some("2".into()),
        (Some(1), Some(1)) => Some("1.1".into()),
        (Some(1), Some(0)) => Some("1.0".into()),
        (Some(maj), Some(min)) if maj > 0 => Some(format!("{maj}.{min}").into()),
        _ => None,
    };
    if let Some(v) = version {
        attributes.push(KeyValue::new("network.protocol.version", v));
    }
    // From the header scan of `trace_context_in` (HTTP/1 only; absent when it is off).
    if let Some(ua) = text(take(&mut raw, USER_AGENT_CAPTURE)).map(trimmed) {
        if !ua.is_empty() {
            attributes.push(KeyValue::new("user_agent.original", ua));
        }
    }
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method,
    };
    Finished { name, attributes, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

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
            KeyValue::new("tls", 0i64),
            KeyValue::new("ua", " curl/8.1"),
        ];
        let f = finish(raw, None);
        assert_eq!(f.name, "GET /items/{id}");
        assert_eq!(attribute(&f.attributes, "http.route").as_deref(), Some("/items/{id}"));
        assert_eq!(attribute(&f.attributes, "http.response.status_code").as_deref(), Some("503"));
        assert_eq!(attribute(&f.attributes, "client.address").as_deref(), Some("::1"));
        assert_eq!(attribute(&f.attributes, "client.port").as_deref(), Some("5555"));
        assert_eq!(attribute(&f.attributes, "server.address").as_deref(), Some("shop"));
        assert_eq!(attribute(&f.attributes, "server.port").as_deref(), Some("8080"));
        assert_eq!(attribute(&f.attributes, "network.protocol.version").as_deref(), Some("1.1"));
        assert_eq!(attribute(&f.attributes, "url.scheme").as_deref(), Some("http"));
        assert_eq!(attribute(&f.attributes, "user_agent.original").as_deref(), Some("curl/8.1"));
        assert!(matches!(f.status, Status::Error { .. }));
        let tls = finish(vec![KeyValue::new("tls", 0xc000_1000i64), KeyValue::new("ua", "")], None);
        assert!(tls.attributes.iter().any(|kv| kv.key.as_str() == "url.scheme" && kv.value.as_str() == "https"));
        assert!(!tls.attributes.iter().any(|kv| kv.key.as_str() == "user_agent.original"));
    }

    /// The request line's captures (the kernel took them from the read buffer and skipped the
    /// request's) give the same attributes as the request's fields.
    #[test]
    fn server_span_from_the_request_line() {
        let raw = vec![
            KeyValue::new("line_m", "POST"),
            KeyValue::new("target", "/items/a%20b%2Fc+d?x=1&y=%20"),
            KeyValue::new("line_host", " \tshop:8080 "),
            KeyValue::new("status1", 201i64),
            KeyValue::new("major", 1i64),
            KeyValue::new("minor", 0i64),
        ];
        let f = finish(raw, None);
        assert_eq!(f.name, "POST");
        assert_eq!(attribute(&f.attributes, "http.request.method").as_deref(), Some("POST"));
        // Go's URL.Path: decoded, `+` kept, the query cut.
        assert_eq!(attribute(&f.attributes, "url.path").as_deref(), Some("/items/a b/c+d"));
        assert_eq!(attribute(&f.attributes, "server.address").as_deref(), Some("shop"));
        assert_eq!(attribute(&f.attributes, "server.port").as_deref(), Some("8080"));
        assert_eq!(attribute(&f.attributes, "network.protocol.version").as_deref(), Some("1.0"));
        // No Host line (HTTP/1.0): no server.address, as with an empty Request.Host.
        let f = finish(vec![KeyValue::new("line_m", "GET"), KeyValue::new("target", "/")], None);
        assert!(!f.attributes.iter().any(|kv| kv.key.as_str() == "server.address"));
        assert!(f.attributes.iter().any(|kv| kv.key.as_str() == "url.path" && kv.value.as_str() == "/"));
    }

    #[test]
    fn silent_handler_answered_200_and_http2_reads_its_own_status() {
        let f = finish(vec![KeyValue::new("m", "GET"), KeyValue::new("status1", 0i64)], None);
        assert!(f
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.response.status_code" && kv.value.as_str() == "200"));
        let raw = vec![
            KeyValue::new("m", "GET"),
            KeyValue::new("status1", 0i64),
            KeyValue::new("status2", 404i64),
            KeyValue::new("major", 2i64),
        ];
        let f = finish(raw, None);
        assert!(f
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.response.status_code" && kv.value.as_str() == "404"));
    }

    #[test]
    fn string_helpers_cut_in_place() {
        use crate::instrumentations::trimmed;
        for (addr, host, port) in [
            ("shop:8080", "shop", Some(8080)),
            ("shop", "shop", None),
            ("[::1]:443", "::1", Some(443)),
            ("[::1]", "[::1]", None),
            ("10.0.0.1:0", "10.0.0.1", Some(0)),
            ("h:x", "h:x", None),
            (":80", "", Some(80)),
            // Bare IPv6 is not "host:port": split at its last colon all the same.
            ("::1", ":", Some(1)),
        ] {
            assert_eq!(host_port(addr.to_string()), (host.to_string(), port), "{addr}");
            assert_eq!(host_port(addr), (host.to_string(), port), "{addr}");
        }
        for (s, want) in [(" a b\t", "a b"), ("ab", "ab"), (" \t", ""), ("", ""), ("\tx", "x")] {
            assert_eq!(trimmed(s.to_string()), want, "{s:?}");
        }
        for (pattern, route) in [
            ("/items/{id}", "/items/{id}"),
            ("GET /items/{id}", "/items/{id}"),
            ("GET example.com/items/{id}", "/items/{id}"),
            ("example.com/", "/"),
            ("GET example.com", "example.com"),
        ] {
            assert_eq!(route_of_pattern(pattern.to_string()), route, "{pattern}");
        }
        assert_eq!(path_of_target("/a%20b?q=%20".to_string()), "/a b");
        assert_eq!(path_of_target("/plain?x".to_string()), "/plain");
    }
}
