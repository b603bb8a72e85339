//! The test OTLP receiver itself: the real opentelemetry-otlp exporter (the one gotel uses) over
//! gRPC and HTTP/protobuf, and hand-made HTTP requests (JSON, gzip protobuf, errors).

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use gotel_e2e::{FlatSpan, Sink};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use prost::Message;

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");

fn span(name: &'static str, trace: u128, id: u64, parent: u64) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: start + Duration::from_micros(1500),
        attributes: vec![KeyValue::new("code.function.name", name), KeyValue::new("thread.id", 4242i64)],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::error("bad"),
        instrumentation_scope: InstrumentationScope::builder("gotel").build(),
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "sink-test"), KeyValue::new("process.pid", 77i64)])
        .build()
}

fn check(spans: &[FlatSpan], transport: &str) {
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let a = spans.iter().find(|s| s.name == "main.top").expect("main.top");
    let b = spans.iter().find(|s| s.name == "main.leaf").expect("main.leaf");
    assert_eq!(a.transport, transport);
    assert_eq!(a.trace_id, "000102030405060708090a0b0c0d0e0f");
    assert_eq!(a.span_id, "1111111111111111");
    assert_eq!(a.parent_span_id, "");
    assert_eq!(b.parent_span_id, "1111111111111111");
    assert_eq!(b.trace_id, a.trace_id);
    assert_eq!(a.kind, 1, "INTERNAL");
    assert_eq!(a.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(a.duration_ns(), 1_500_000);
    assert_eq!(a.attr_str("code.function.name"), Some("main.top"));
    assert_eq!(a.attr_i64("thread.id"), Some(4242));
    assert_eq!(a.status_code, 2);
    assert_eq!(a.status_message, "bad");
    assert_eq!(a.res_str("service.name"), Some("sink-test"));
    assert_eq!(a.res_i64("process.pid"), Some(77));
    assert_eq!(a.scope_name, "gotel");
}

fn batch() -> Vec<SpanData> {
    vec![
        span("main.top", 0x000102030405060708090a0b0c0d0e0f, 0x1111111111111111, 0),
        span("main.leaf", 0x000102030405060708090a0b0c0d0e0f, 0x2222222222222222, 0x1111111111111111),
    ]
}

/// Exports `batch()` to a fresh sink with the real OTLP gRPC exporter (gzip'd when `compression`
/// says so) and checks what the sink received.
fn grpc_export(compression: Option<opentelemetry_otlp::Compression>) {
    use opentelemetry_otlp::WithTonicConfig;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut exporter = rt.block_on(async {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(sink.grpc_endpoint())
            .with_timeout(Duration::from_secs(10));
        if let Some(c) = compression {
            builder = builder.with_compression(c);
        }
        builder.build().unwrap()
    });
    exporter.set_resource(&resource());
    rt.block_on(exporter.export(batch())).unwrap_or_else(|e| panic!("grpc export ({compression:?}): {e}"));
    check(&sink.wait_spans(2, Duration::from_secs(10)).unwrap(), "grpc");
}

#[test]
fn sink_receives_grpc_from_otlp_exporter() {
    grpc_export(None);
}

#[test]
fn sink_receives_gzip_grpc_from_otlp_exporter() {
    grpc_export(Some(opentelemetry_otlp::Compression::Gzip));
}

#[test]
fn sink_receives_http_protobuf_from_otlp_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    // gotel's workspace enables opentelemetry-otlp's async reqwest client: run it in tokio.
    let ep = format!("{}/v1/traces", sink.http_endpoint());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(ep)
            .build()
            .unwrap();
        exporter.set_resource(&resource());
        exporter.export(batch()).await.expect("http/protobuf export");
    });
    check(&sink.wait_spans(2, Duration::from_secs(10)).unwrap(), "http");
}

/// A hand-made HTTP/1.1 POST; returns (status code, body).
fn post(addr: std::net::SocketAddr, path: &str, ctype: &str, encoding: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(e) = encoding {
        req.push_str(&format!("Content-Encoding: {e}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, resp)
}

const JSON_REQ: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
 {"key":"service.name","value":{"stringValue":"sink-test"}},
 {"key":"process.pid","value":{"intValue":"77"}}]},
 "scopeSpans":[{"scope":{"name":"gotel"},"spans":[
 {"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"1111111111111111","parentSpanId":"",
  "name":"main.top","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001500000",
  "attributes":[{"key":"code.function.name","value":{"stringValue":"main.top"}},{"key":"thread.id","value":{"intValue":"4242"}}],
  "status":{"code":2,"message":"bad"}},
 {"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"2222222222222222","parentSpanId":"1111111111111111",
  "name":"main.leaf","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001500000",
  "attributes":[],"status":{}}]}]}]}"#;

#[test]
fn sink_receives_http_json_and_gzip_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let (code, resp) = post(sink.http, "/v1/traces", "application/json", None, JSON_REQ.as_bytes());
    assert_eq!(code, 200, "{resp}");
    check(&sink.wait_spans(2, Duration::from_secs(10)).unwrap(), "http");

    // The same request as gzip'd protobuf.
    let req: ExportTraceServiceRequest = serde_json::from_str(JSON_REQ).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let body = gz.finish().unwrap();
    let (code, resp) = post(sink.http, "/v1/traces", "application/x-protobuf", Some("gzip"), &body);
    assert_eq!(code, 200, "{resp}");
    let spans = sink.wait_spans(4, Duration::from_secs(10)).unwrap();
    assert_eq!(spans.len(), 4);
    check(&spans[2..], "http");

    // Errors are errors, and write nothing.
    assert_eq!(post(sink.http, "/v1/traces", "application/json", None, b"{not json").0, 400);
    assert_eq!(post(sink.http, "/v1/other", "application/json", None, b"{}").0, 404);
    assert_eq!(post(sink.http, "/v1/traces", "text/plain", None, b"x").0, 415);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.spans().unwrap().len(), 4);
}
