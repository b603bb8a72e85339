//! The flattened span record `otlp-sink` writes (one JSON object per line), and the conversion
//! from OTLP requests.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One received span, flattened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlatSpan {
    /// `grpc`, `http` or `console`.
    pub transport: String,
    /// Lower-case hex (32 digits).
    pub trace_id: String,
    /// Lower-case hex (16 digits).
    pub span_id: String,
    /// Lower-case hex, or "" for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind` number (1 = INTERNAL).
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
    /// OTLP `Status.code` (0 unset, 1 ok, 2 error); 0 when the status is absent.
    pub status_code: i32,
    pub status_message: String,
    pub resource: BTreeMap<String, Value>,
    pub scope_name: String,
    pub events: Vec<String>,
}

impl FlatSpan {
    pub fn duration_ns(&self) -> i128 {
        self.end_unix_nano as i128 - self.start_unix_nano as i128
    }

    pub fn attr_str(&self, k: &str) -> Option<&str> {
        self.attributes.get(k).and_then(|v| v.as_str())
    }

    pub fn attr_i64(&self, k: &str) -> Option<i64> {
        self.attributes.get(k).and_then(|v| v.as_i64())
    }

    pub fn res_str(&self, k: &str) -> Option<&str> {
        self.resource.get(k).and_then(|v| v.as_str())
    }

    pub fn res_i64(&self, k: &str) -> Option<i64> {
        self.resource.get(k).and_then(|v| v.as_i64())
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// An OTLP `AnyValue` as plain JSON (ints as numbers, bytes as hex).
pub fn any_value_json(v: Option<&AnyValue>) -> Value {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return Value::Null;
    };
    match v {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map(Value::Number).unwrap_or(Value::Null),
        any_value::Value::ArrayValue(a) => Value::Array(a.values.iter().map(|x| any_value_json(Some(x))).collect()),
        any_value::Value::KvlistValue(kv) => Value::Object(kv_json(&kv.values).into_iter().collect()),
        any_value::Value::BytesValue(b) => Value::String(hex(b)),
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

pub fn kv_json(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), any_value_json(kv.value.as_ref()))).collect()
}

/// Every span of `req`, flattened, tagged with `transport`.
pub fn flatten_request(req: &ExportTraceServiceRequest, transport: &str) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map(|r| kv_json(&r.attributes)).unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope_name = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for sp in &ss.spans {
                out.push(FlatSpan {
                    transport: transport.to_string(),
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    name: sp.name.clone(),
                    kind: sp.kind,
                    start_unix_nano: sp.start_time_unix_nano,
                    end_unix_nano: sp.end_time_unix_nano,
                    attributes: kv_json(&sp.attributes),
                    status_code: sp.status.as_ref().map(|s| s.code).unwrap_or(0),
                    status_message: sp.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    events: sp.events.iter().map(|e| e.name.clone()).collect(),
                });
            }
        }
    }
    out
}

/// Parses one line of gotel's console exporter: an OTLP/JSON `ExportTraceServiceRequest`.
pub fn parse_console_line(line: &str) -> anyhow::Result<ExportTraceServiceRequest> {
    Ok(serde_json::from_str(line)?)
}
