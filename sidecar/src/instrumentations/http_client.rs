//! HTTP client spans (kind CLIENT) from `net/http.(*Transport).roundTrip`, which every
//! `http.Client` request goes through (redirects and retries each make one call). The span
//! nests under the innermost traced call of the goroutine; everything is read by the spec
//! (the request at entry, the response and error at return).
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};

use super::{host_port, int, take, text, Arg, FieldNeed, Finished, GoTy, Instrumentation, SpanProbe};

pub static HTTP_CLIENT: Instrumentation = Instrumentation {
    name: "http.client",
    selectable: true,
    doc: "client spans (kind CLIENT) named `{method}`; ERROR when the round trip fails or for 4xx/5xx",
    attributes: &["http.request.method", "url.full", "server.address", "server.port", "http.response.status_code"],
    fields: &[
        FieldNeed::std("net/http.Request", "Method", GoTy::String),
        FieldNeed::std("net/http.Request", "URL", GoTy::Ptr("net/url.URL")),
        FieldNeed::std("net/url.URL", "Scheme", GoTy::String),
        FieldNeed::std("net/url.URL", "Host", GoTy::String),
        FieldNeed::std("net/url.URL", "Path", GoTy::String),
        FieldNeed::std("net/url.URL", "RawQuery", GoTy::String),
        FieldNeed::std("net/http.Response", "StatusCode", GoTy::Int),
        // A failed round trip's text (`net_error`).
        FieldNeed::std("net.OpError", "Op", GoTy::String),
        FieldNeed::std("net.OpError", "Net", GoTy::String),
        FieldNeed::std("net.OpError", "Source", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.OpError", "Addr", GoTy::Iface("net.Addr")),
        FieldNeed::std("net.OpError", "Err", GoTy::Iface("error")),
        FieldNeed::std("net.TCPAddr", "IP", GoTy::Bytes),
        FieldNeed::std("net.TCPAddr", "Port", GoTy::Int),
        FieldNeed::std("os.SyscallError", "Syscall", GoTy::String),
        FieldNeed::std("os.SyscallError", "Err", GoTy::Iface("error")),
    ],
    span: Some(SpanProbe {
        symbol: "net/http.(*Transport).roundTrip",
        kind: SpanKind::Client,
        spec: "net/http.(*Transport).roundTrip(m=req.Method, scheme=req.URL.Scheme, host=req.URL.Host, \
               path=req.URL.Path, query=req.URL.RawQuery, status=ret0.StatusCode, err=ret1)",
        signature: &[
            Arg::param("t", GoTy::Opaque),
            Arg::param("req", GoTy::Ptr("net/http.Request")),
            Arg::result("~r0", GoTy::Ptr("net/http.Response")),
            Arg::result("~r1", GoTy::Iface("error")),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(super::net_error::extend),
        finish,
    }),
    ..Instrumentation::BASE
};

fn finish(mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let method = text(take(&mut raw, "m")).unwrap_or_else(|| "_OTHER".into());
    let mut attributes = vec![KeyValue::new("http.request.method", method.clone())];
    let mut status = Status::Unset;
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
    if let Some(msg) = super::net_error::message(&mut raw, error) {
        status = Status::error(msg);
    }
    Finished { name: method, attributes, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

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
        let f = finish(raw, None);
        assert_eq!(f.name, "POST");
        assert_eq!(attribute(&f.attributes, "url.full").as_deref(), Some("http://backend:8081/price?item=tea"));
        assert_eq!(attribute(&f.attributes, "server.port").as_deref(), Some("8081"));
        assert!(matches!(f.status, Status::Unset));
        let failed = finish(vec![KeyValue::new("m", "GET")], Some("connection refused".into()));
        assert!(matches!(failed.status, Status::Error { .. }));
        let https = finish(vec![KeyValue::new("scheme", "https"), KeyValue::new("host", "x")], None);
        assert!(https.attributes.iter().any(|kv| kv.key.as_str() == "server.port" && kv.value.as_str() == "443"));
    }
}
