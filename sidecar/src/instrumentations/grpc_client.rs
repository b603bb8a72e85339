//! gRPC client spans (kind CLIENT) from grpc-go's `(*ClientConn).Invoke`, which every unary call
//! goes through (generated stubs call it), and `(*ClientConn).NewStream` for streams. Both run
//! on the caller's goroutine, so the span nests under the innermost traced call there.
//!
//! The status is the real one: the returned error is a `*status.Error` whose `*status.Status`
//! holds the code and message (read at return through the error's data word); a nil error is
//! OK. An error of another dynamic type (never returned by the grpc-go releases in the layout
//! table, but possible through interceptors) is reported as Unknown.
//!
//! A stream's span lasts the stream: the `*clientStream` that NewStream opened (read by a helper
//! probe at the return of `newClientStreamWithParams`, under any interceptor's wrapper) is
//! held open (`Instrumentation::closers`) until `(*clientStream).finish(err)`, which every
//! stream ends in once, on the goroutine that saw the end (`io.EOF` there is success); the span
//! then ends there with that status. A stream never finished before gotel stops is exported as
//! it was opened, counted (`open_spans_exported_unclosed`).
use gotel_shared::{Root, ValueKind, REG_RAX, REG_RBX, REG_RCX, REG_RDI};
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};

use super::{
    grpc::{self, Read, GRPC, STATUS, STATUS_ERROR, STATUS_FIELDS},
    host_port, int, take, text, Arg, FieldNeed, Finished, GoTy, Instrumentation, SpanProbe, OPEN,
};
use crate::{
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

const CLIENT_CONN: &str = "google.golang.org/grpc.ClientConn";
/// Capture key (internal) of the `*clientStream` that pairs a stream's opening and end.
const STREAM: &str = "stream";

pub static GRPC_CLIENT: Instrumentation = Instrumentation {
    name: "grpc.client",
    selectable: true,
    doc: "gRPC client spans (kind CLIENT) named `{package.Service}/{Method}` for unary calls and streams (a stream's span lasts until its end is seen), with the real status code; ERROR for any code but OK",
    attributes: &[
        grpc::ATTRIBUTES[0],
        grpc::ATTRIBUTES[1],
        grpc::ATTRIBUTES[2],
        grpc::ATTRIBUTES[3],
        "server.address",
        "server.port",
    ],
    fields: &[
        FieldNeed::module(GRPC, CLIENT_CONN, "target", GoTy::String),
        FieldNeed::module(GRPC, STATUS_ERROR, "s", GoTy::Ptr(STATUS)),
        STATUS_FIELDS[0],
        STATUS_FIELDS[1],
        STATUS_FIELDS[2],
    ],
    span: Some(SpanProbe {
        symbol: "google.golang.org/grpc.(*ClientConn).Invoke",
        kind: SpanKind::Client,
        spec: "google.golang.org/grpc.(*ClientConn).Invoke(method=method, target=cc.target, err=ret0)",
        // (cc, ctx context.Context, method string, args, reply any, opts ...CallOption) error:
        // cc -> RAX, ctx -> RBX + RCX, method -> RDI + RSI, args -> R8 + R9, reply -> R10 +
        // R11, opts on the stack; the error -> RAX (itab) + RBX (data).
        signature: &[
            Arg::param("cc", GoTy::Ptr(CLIENT_CONN)),
            Arg::param("ctx", GoTy::Iface("context.Context")),
            Arg::param("method", GoTy::String),
            Arg::param("args", GoTy::Iface("interface {}")),
            Arg::param("reply", GoTy::Iface("interface {}")),
            Arg::param("opts", GoTy::Bytes),
            Arg::result("~r0", GoTy::Iface("error")),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|plan, dwarf, info, limits| status_at_return(plan, dwarf, info, limits, REG_RBX)),
        finish,
    }),
    more_spans: &[SpanProbe {
        symbol: "google.golang.org/grpc.(*ClientConn).NewStream",
        kind: SpanKind::Client,
        spec: "google.golang.org/grpc.(*ClientConn).NewStream(method=method, target=cc.target, err=ret1)",
        // (cc, ctx, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error):
        // cc -> RAX, ctx -> RBX + RCX, desc -> RDI, method -> RSI + R8, opts -> R9..R11; the
        // stream -> RAX + RBX, the error -> RCX (itab) + RDI (data).
        signature: &[
            Arg::param("cc", GoTy::Ptr(CLIENT_CONN)),
            Arg::param("ctx", GoTy::Iface("context.Context")),
            Arg::param("desc", GoTy::Opaque),
            Arg::param("method", GoTy::String),
            Arg::param("opts", GoTy::Bytes),
            Arg::result("~r0", GoTy::Iface("google.golang.org/grpc.ClientStream")),
            Arg::result("~r1", GoTy::Iface("error")),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|plan, dwarf, info, limits| status_at_return(plan, dwarf, info, limits, REG_RDI)),
        finish: finish_stream,
    }],
    // The *clientStream under whatever interceptors wrap it: newClientStreamWithParams runs
    // inside NewStream (and Invoke, whose span ignores it) and returns it (RAX + RBX).
    helpers: &[SpanProbe {
        symbol: "google.golang.org/grpc.newClientStreamWithParams",
        kind: SpanKind::Internal,
        spec: "google.golang.org/grpc.newClientStreamWithParams",
        // Only the results matter (they start again at RAX): (_ ClientStream, err error).
        signature: &[
            Arg::result("~r0", GoTy::Iface("google.golang.org/grpc.ClientStream")),
            Arg::result("err", GoTy::Iface("error")),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|plan, _, _, limits| {
            let read = |reg| Read { key: STREAM, root: Root::Registers, reg, hops: &[], kind: ValueKind::Int, size: 8, at_return: true, decode: Decode::Int { size: 8 } };
            grpc::push(plan, limits, read(REG_RBX));
            Ok(())
        }),
        finish: |attributes, _| Finished { name: String::new(), attributes, status: Status::Unset },
    }],
    // Where every client stream ends, once, with its final error (io.EOF: success), on the
    // goroutine that saw the end: (cs *clientStream) finish(err error): cs -> RAX, err -> RBX +
    // RCX.
    closers: &[SpanProbe {
        symbol: "google.golang.org/grpc.(*clientStream).finish",
        kind: SpanKind::Internal,
        spec: "google.golang.org/grpc.(*clientStream).finish(err=err)",
        signature: &[Arg::param("cs", GoTy::Opaque), Arg::param("err", GoTy::Iface("error"))],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|plan, dwarf, _, limits| {
            let read = Read { key: STREAM, root: Root::Registers, reg: REG_RAX, hops: &[], kind: ValueKind::Int, size: 8, at_return: false, decode: Decode::Int { size: 8 } };
            grpc::push(plan, limits, read);
            // The error's first string (errors.errorString.s): tells io.EOF from a failure in a
            // binary without symbols, whose error types have no names.
            let text = Read { key: "err_text", root: Root::Registers, reg: REG_RCX, hops: &[0], kind: ValueKind::String, size: 16, at_return: false, decode: Decode::String };
            grpc::push(plan, limits, text);
            let s = grpc::field(dwarf, STATUS_ERROR, "s")?;
            grpc::push_status(plan, dwarf, limits, (Root::Registers, REG_RCX, &[s], false))
        }),
        finish: finish_closed,
    }],
    ..Instrumentation::BASE
};

/// The code and message of the returned error, whose data word is in `reg` at return.
fn status_at_return(
    plan: &mut AttributePlan,
    dwarf: &DwarfInfo,
    _: &FunctionInfo,
    limits: &Limits,
    reg: u8,
) -> Result<(), String> {
    let s = grpc::field(dwarf, STATUS_ERROR, "s")?;
    grpc::push_status(plan, dwarf, limits, (Root::Registers, reg, &[s], true))
}

/// `dns:///host:port`, `passthrough:///host:port`, `host:port` -> host and port.
fn target_address(target: &str) -> Option<(String, Option<i64>)> {
    let rest = match target.split_once("://") {
        Some(("unix" | "unix-abstract", _)) => return None,
        Some((_, rest)) => rest,
        None => target,
    };
    let authority_free = rest.rsplit('/').next().unwrap_or(rest);
    (!authority_free.is_empty()).then(|| host_port(authority_free))
}

fn finish(mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let (name, mut attributes) = grpc::name_and_attributes(text(take(&mut raw, "method")));
    if let Some((host, port)) = text(take(&mut raw, "target")).as_deref().and_then(target_address) {
        attributes.push(KeyValue::new("server.address", host));
        if let Some(p) = port {
            attributes.push(KeyValue::new("server.port", p));
        }
    }
    let _ = take(&mut raw, "err");
    let (code, status) = status_of(&mut raw, error);
    attributes.push(KeyValue::new("rpc.grpc.status_code", code));
    Finished { name, attributes, status }
}

/// A stream that opened is left open (`OPEN` = its `*clientStream`) until `clientStream.finish`.
fn finish_stream(mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let stream = int(take(&mut raw, STREAM)).filter(|p| *p != 0);
    let mut done = finish(raw, error);
    if let (Some(stream), Status::Unset) = (stream, &done.status) {
        done.attributes.push(KeyValue::new(OPEN, stream));
    }
    done
}

/// `(*clientStream).finish(err)`: the stream's final status (`io.EOF` is success).
fn finish_closed(mut raw: Vec<KeyValue>, _error: Option<String>) -> Finished {
    let eof = text(take(&mut raw, "err_text")).is_some_and(|t| t == "EOF");
    let err = text(take(&mut raw, "err")).filter(|e| e != "<nil>" && e != "EOF" && !eof);
    let (code, status) = status_of(&mut raw, err);
    let mut attributes = vec![KeyValue::new("rpc.grpc.status_code", code)];
    attributes.extend(int(take(&mut raw, STREAM)).map(|p| KeyValue::new(OPEN, p)));
    Finished { name: String::new(), attributes, status }
}

/// The status code of a call that returned `error` (its message or type name), with the
/// status fields read behind it.
fn status_of(raw: &mut Vec<KeyValue>, error: Option<String>) -> (i64, Status) {
    let captured = int(take(raw, grpc::CODE)).filter(|c| (1..=16).contains(c));
    let message = text(take(raw, grpc::MESSAGE));
    match error {
        None => (0, Status::Unset),
        Some(err) => {
            // The status fields are only meaningful behind a *status.Error (named, or unnamed
            // in a binary without symbols: `0x...`).
            let status_error = err.ends_with("status.Error") || err.starts_with("0x");
            let code = captured.filter(|_| status_error).unwrap_or(2);
            let message = if status_error { message } else { Some(err) };
            (code, Status::error(grpc::describe(code, message.as_deref())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

    #[test]
    fn client_span_from_captures() {
        let raw = vec![KeyValue::new("method", "/shop.Cart/Get"), KeyValue::new("target", "dns:///cart:50051")];
        let f = finish(raw, None);
        assert_eq!(f.name, "shop.Cart/Get");
        assert_eq!(attribute(&f.attributes, "rpc.grpc.status_code").as_deref(), Some("0"));
        assert_eq!(attribute(&f.attributes, "server.address").as_deref(), Some("cart"));
        assert_eq!(attribute(&f.attributes, "server.port").as_deref(), Some("50051"));
        assert!(matches!(f.status, Status::Unset));
        let raw = vec![
            KeyValue::new("method", "/shop.Cart/Get"),
            KeyValue::new("target", "127.0.0.1:9"),
            KeyValue::new("code", 5i64),
            KeyValue::new("message", "no cart"),
        ];
        let f = finish(raw, Some("*google.golang.org/grpc/internal/status.Error".into()));
        assert_eq!(attribute(&f.attributes, "rpc.grpc.status_code").as_deref(), Some("5"));
        assert!(matches!(&f.status, Status::Error { description } if description == "NotFound: no cart"));
        // Another error type: its message, code Unknown.
        let f = finish(vec![KeyValue::new("code", 5i64)], Some("boom".into()));
        assert_eq!(attribute(&f.attributes, "rpc.grpc.status_code").as_deref(), Some("2"));
        assert!(matches!(&f.status, Status::Error { description } if description == "Unknown: boom"));
        assert_eq!(target_address("unix:///tmp/s"), None);
        assert_eq!(target_address("localhost:1").map(|a| a.0).as_deref(), Some("localhost"));
    }

    #[test]
    fn a_stream_is_open_until_its_end_says_how_it_went() {
        let opened =
            finish_stream(vec![KeyValue::new("method", "/shop.Cart/Watch"), KeyValue::new("stream", 77i64)], None);
        assert_eq!(attribute(&opened.attributes, OPEN).as_deref(), Some("77"));
        // A stream that failed to open is a finished span.
        let failed = finish_stream(vec![KeyValue::new("stream", 77i64)], Some("0x1234".into()));
        assert_eq!(attribute(&failed.attributes, OPEN), None);
        // io.EOF, named or (no symbols) by its text, is success.
        for raw in [
            vec![KeyValue::new("stream", 77i64), KeyValue::new("err", "EOF")],
            vec![KeyValue::new("stream", 77i64), KeyValue::new("err", "0x4321"), KeyValue::new("err_text", "EOF")],
            vec![KeyValue::new("stream", 77i64), KeyValue::new("err", "<nil>")],
        ] {
            let closed = finish_closed(raw, None);
            assert_eq!(attribute(&closed.attributes, OPEN).as_deref(), Some("77"));
            assert_eq!(attribute(&closed.attributes, "rpc.grpc.status_code").as_deref(), Some("0"));
            assert!(matches!(closed.status, Status::Unset));
        }
        let raw = vec![
            KeyValue::new("stream", 77i64),
            KeyValue::new("err", "0x4321"),
            KeyValue::new("code", 15i64),
            KeyValue::new("message", "stream broke"),
        ];
        let closed = finish_closed(raw, None);
        assert_eq!(attribute(&closed.attributes, "rpc.grpc.status_code").as_deref(), Some("15"));
        assert!(matches!(&closed.status, Status::Error { description } if description == "DataLoss: stream broke"));
    }
}
