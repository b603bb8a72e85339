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
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

const STREAM: &str = "google.golang.org/grpc/internal/transport.Stream";
const SERVER_STREAM: &str = "google.golang.org/grpc/internal/transport.ServerStream";
const HTTP2_SERVER: &str = "google.golang.org/grpc/internal/transport.http2Server";
const PEER: &str = "google.golang.org/grpc/peer.Peer";

pub static GRPC_SERVER: Instrumentation = Instrumentation {
    name: "grpc.server",
    selectable: true,
    doc: "gRPC server spans (kind SERVER) named `{package.Service}/{Method}`, unary and streaming (a stream's span lasts the stream); ERROR for Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss",
    attributes: &[
        grpc::ATTRIBUTES[0],
        grpc::ATTRIBUTES[1],
        grpc::ATTRIBUTES[2],
        grpc::ATTRIBUTES[3],
        "server.address",
        "server.port",
        "network.peer.address",
        "network.peer.port",
    ],
    fields: &[
        FieldNeed::module(GRPC, STREAM, "method", GoTy::String),
        // grpc-go 1.70+: handleStream gets a *ServerStream embedding the Stream.
        FieldNeed::module(GRPC, SERVER_STREAM, "Stream", GoTy::Opaque).optional(),
        FieldNeed::module(GRPC, SERVER_STREAM, "st", GoTy::Opaque).optional(),
        // The connection's addresses (optional: spans without them otherwise).
        FieldNeed::module(GRPC, HTTP2_SERVER, "peer", GoTy::Opaque).optional(),
        FieldNeed::module(GRPC, HTTP2_SERVER, "remoteAddr", GoTy::Iface("net.Addr")).optional(),
        FieldNeed::module(GRPC, HTTP2_SERVER, "localAddr", GoTy::Iface("net.Addr")).optional(),
        FieldNeed::module(GRPC, PEER, "Addr", GoTy::Iface("net.Addr")).optional(),
        FieldNeed::module(GRPC, PEER, "LocalAddr", GoTy::Iface("net.Addr")).optional(),
        FieldNeed::std("net.TCPAddr", "IP", GoTy::Bytes),
        FieldNeed::std("net.TCPAddr", "Port", GoTy::Int),
        STATUS_FIELDS[0],
        STATUS_FIELDS[1],
        STATUS_FIELDS[2],
    ],
    span: Some(SpanProbe {
        symbol: "google.golang.org/grpc.(*Server).handleStream",
        kind: SpanKind::Server,
        spec: "google.golang.org/grpc.(*Server).handleStream(transport=t)",
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
            decode: Decode::String,
        },
    );
    // The connection's addresses, through the transport (RCX: the interface's data word, an
    // *http2Server): `peer.Peer{Addr, LocalAddr}` from 1.60, the
    // `remoteAddr` and `localAddr` fields before; each a net.Addr whose dynamic value is a
    // *net.TCPAddr for TCP (`finish` drops what does not look like one). Optional: without
    // these fields the span has no addresses.
    let types = &dwarf.types;
    let addr = |old: &str, new: &str| match types.struct_field(HTTP2_SERVER, "peer") {
        Some((peer, _)) => Some(peer + types.struct_field(PEER, new)?.0),
        None => types.struct_field(HTTP2_SERVER, old).map(|f| f.0),
    };
    let tcp = types.struct_field("net.TCPAddr", "IP").zip(types.struct_field("net.TCPAddr", "Port"));
    for (prefix, old, new) in [("peer", "remoteAddr", "Addr"), ("local", "localAddr", "LocalAddr")] {
        let (Some(at), Some(((ip, _), (port, _)))) = (addr(old, new), tcp) else { continue };
        let reads = [
            (format!("{prefix}_ip"), ip, ValueKind::String, 16, Decode::IpAddr),
            (format!("{prefix}_port"), port, ValueKind::Int, 8, Decode::Int { size: 8 }),
        ];
        for (key, field, kind, size, decode) in reads {
            let hops = [at + 8, field];
            let read = Read {
                key: &key,
                root: Root::Registers,
                reg: REG_RCX,
                hops: &hops,
                kind,
                size,
                at_return: false,
                decode,
            };
            grpc::push(plan, limits, read);
        }
    }
    Ok(())
}

fn finish(mut raw: Vec<KeyValue>, _error: Option<String>) -> Finished {
    let (name, mut attributes) = grpc::name_and_attributes(text(take(&mut raw, "method")));
    // Addresses only from grpc-go's own HTTP/2 transport (named, or unnamed without symbols).
    let transport = text(take(&mut raw, "transport")).unwrap_or_default();
    let http2 = transport.ends_with("transport.http2Server") || transport.starts_with("0x");
    // Static keys: no allocation of their own per span.
    for (ip, port, address_key, port_key) in [
        ("peer_ip", "peer_port", "network.peer.address", "network.peer.port"),
        ("local_ip", "local_port", "server.address", "server.port"),
    ] {
        let ip = text(take(&mut raw, ip));
        let port = int(take(&mut raw, port)).filter(|p| (1..=65535).contains(p));
        if let (true, Some(ip), Some(port)) = (http2, ip, port) {
            attributes.push(KeyValue::new(address_key, ip));
            attributes.push(KeyValue::new(port_key, port));
        }
    }
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
            KeyValue::new("transport", "*google.golang.org/grpc/internal/transport.http2Server"),
            KeyValue::new("peer_ip", "127.0.0.1"),
            KeyValue::new("peer_port", 40000i64),
            KeyValue::new("local_ip", "127.0.0.1"),
            KeyValue::new("local_port", 0i64),
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
