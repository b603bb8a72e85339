//! gRPC server spans (kind SERVER) from grpc-go's `(*Server).handleStream`, which every RPC an
//! HTTP/2 grpc-go server receives goes through, on a goroutine of its own, for the whole RPC
//! (a stream's span lasts the stream): the handler runs inside it, so user functions it calls
//! nest under the span.
//!
//! The method name is read at entry from the stream (`transport.Stream.method`; from grpc-go
//! 1.70 the argument is a `*transport.ServerStream` embedding the `Stream`, by pointer until
//! 1.7x and by value after, told apart by where its next field `st` lies). The status is not
//! kept anywhere handleStream can read at its return: the transport writes it on the way out,
//! in `(*http2Server).WriteStatus(s, st *status.Status)` (`writeStatus` from 1.70), called on the
//! handler's goroutine inside handleStream. That function is a helper probe whose code and
//! message join the span's captures (`Instrumentation::helpers`).
use gotel_shared::{Root, ValueKind, REG_RCX, REG_RDI};
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};

use super::{
    grpc::{self, Read, GRPC, STATUS, STATUS_FIELDS},
    int, take, text, Arg, FieldNeed, Finished, GoTy, Instrumentation, SpanProbe,
};
use crate::{
    attributes::{AttributePlan, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

const STREAM: &str = "google.golang.org/grpc/internal/transport.Stream";
const SERVER_STREAM: &str = "google.golang.org/grpc/internal/transport.ServerStream";

pub static GRPC_SERVER: Instrumentation = Instrumentation {
    name: "grpc.server",
    selectable: true,
    doc: "gRPC server spans (kind SERVER) named `{package.Service}/{Method}`, unary and streaming (a stream's span lasts the stream); ERROR for Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss",
    attributes: &grpc::ATTRIBUTES,
    fields: &[
        FieldNeed::module(GRPC, STREAM, "method", GoTy::String),
        // grpc-go 1.70+: handleStream gets a *ServerStream embedding the Stream.
        FieldNeed::module(GRPC, SERVER_STREAM, "Stream", GoTy::Opaque).optional(),
        FieldNeed::module(GRPC, SERVER_STREAM, "st", GoTy::Opaque).optional(),
        STATUS_FIELDS[0],
        STATUS_FIELDS[1],
        STATUS_FIELDS[2],
    ],
    span: Some(SpanProbe {
        symbol: "google.golang.org/grpc.(*Server).handleStream",
        kind: SpanKind::Server,
        spec: "google.golang.org/grpc.(*Server).handleStream",
        // (s *Server, t transport.ServerTransport, stream *transport.Stream or *ServerStream
        // [, trInfo *traceInfo up to 1.5x]): s -> RAX, t -> RBX + RCX, stream -> RDI.
        signature: &[
            Arg::param("s", GoTy::Opaque),
            Arg::param("t", GoTy::Iface("google.golang.org/grpc/internal/transport.ServerTransport")),
            Arg::param("stream", GoTy::Opaque),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(extend),
        finish,
    }),
    helpers: &[status_helper("google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus"), {
        status_helper("google.golang.org/grpc/internal/transport.(*http2Server).writeStatus")
    }],
    ..Instrumentation::BASE
};

const STATUS_SIGNATURE: &[Arg] = &[
    Arg::param("t", GoTy::Opaque),
    Arg::param("s", GoTy::Opaque),
    Arg::param("st", GoTy::Ptr(STATUS)),
    Arg::result("~r0", GoTy::Iface("error")),
];

/// `(t *http2Server) WriteStatus(s *Stream, st *status.Status) error` (`writeStatus`, with a
/// `*ServerStream`, from 1.70): st -> RCX.
const fn status_helper(symbol: &'static str) -> SpanProbe {
    SpanProbe {
        symbol,
        kind: SpanKind::Internal,
        spec: symbol,
        signature: STATUS_SIGNATURE,
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|plan, dwarf, _, limits| {
            grpc::push_status(plan, dwarf, limits, (Root::Registers, REG_RCX, &[], false))
        }),
        finish: |attributes, _| Finished { name: String::new(), attributes, status: Status::Unset },
    }
}

/// The method name at entry, through the stream argument.
fn extend(plan: &mut AttributePlan, dwarf: &DwarfInfo, _: &FunctionInfo, limits: &Limits) -> Result<(), String> {
    let method = grpc::field(dwarf, STREAM, "method")?;
    let embedded = dwarf.types.struct_field(SERVER_STREAM, "Stream").map(|(off, _)| off);
    let next = dwarf.types.struct_field(SERVER_STREAM, "st").map(|(off, _)| off);
    let hops: Vec<u64> = match (embedded, next) {
        // *Stream embedded: one more pointer to follow.
        (Some(stream), Some(st)) if st == stream + 8 => vec![stream, method],
        // Stream embedded by value: its fields are the ServerStream's.
        (Some(stream), Some(_)) => vec![stream + method],
        (Some(_), None) => return Err(format!("no {SERVER_STREAM}.st in the binary's types")),
        (None, _) => vec![method],
    };
    grpc::push(
        plan,
        limits,
        Read {
            key: "method",
            root: Root::Registers,
            reg: REG_RDI,
            hops: &hops,
            kind: ValueKind::String,
            size: 16,
            at_return: false,
        },
    );
    Ok(())
}

fn finish(mut raw: Vec<KeyValue>, _error: Option<String>) -> Finished {
    let (name, mut attributes) = grpc::name_and_attributes(text(take(&mut raw, "method")));
    let mut status = Status::Unset;
    let message = text(take(&mut raw, grpc::MESSAGE));
    if let Some(code) = int(take(&mut raw, grpc::CODE)).filter(|c| (0..=16).contains(c)) {
        attributes.push(KeyValue::new("rpc.grpc.status_code", code));
        if grpc::server_error(code) {
            status = Status::error(grpc::describe(code, message.as_deref()));
        }
    }
    Finished { name, attributes, status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_span_from_captures() {
        let raw = vec![
            KeyValue::new("method", "/shop.Cart/Checkout"),
            KeyValue::new("code", 4i64),
            KeyValue::new("message", "context deadline exceeded"),
        ];
        let f = finish(raw, None);
        assert_eq!(f.name, "shop.Cart/Checkout");
        assert!(f.attributes.iter().any(|kv| kv.key.as_str() == "rpc.grpc.status_code" && kv.value.as_str() == "4"));
        assert!(
            matches!(&f.status, Status::Error { description } if description == "DeadlineExceeded: context deadline exceeded")
        );
        // NotFound is the caller's problem: not an error of the server.
        let f = finish(vec![KeyValue::new("method", "/shop.Cart/Get"), KeyValue::new("code", 5i64)], None);
        assert!(matches!(f.status, Status::Unset));
        let f = finish(vec![KeyValue::new("method", "/shop.Cart/Get"), KeyValue::new("code", 0i64)], None);
        assert!(matches!(f.status, Status::Unset));
    }
}
