//! GOTEL_PROPAGATION=inject for gRPC over plaintext HTTP/2 (h2c), through the socket (user space
//! of `sidecar-ebpf`'s `propagation/inject_socket/h2.rs`, which says why the context goes from
//! `createHeaderFields` to `writeHeader` to the HEADERS frame). The SOCK_OPS and SK_MSG programs
//! are the HTTP/1 socket path's; this unit adds the two uprobes and the `hpack.HeaderField`
//! layout the traceparent check reads. `inject.socket`, planned with gRPC client spans too,
//! attaches the socket path; should its dial hook (`net.(*netFD).connect`) be missing from a
//! binary, `inject.socket` is not planned and this unit prepares and attaches the socket path
//! itself (the same functions), and only then, so SK_MSG is attached once.
//!
//! Not covered, and said in the README: gRPC over TLS (the memory path has no gRPC writer, and
//! the socket sees only ciphertext). Connections open before gotel attached are enrolled by
//! `inject.socket`'s user space like HTTP/1 ones; their preface was not seen, so the kernel
//! resynchronises on a frame boundary (`gotel_shared::h2`; `grpc_socket_unaligned`,
//! `grpc_socket_resync`).
use gotel_shared::{
    names::{MAP_GRPC_INJECT_CONFIG, PROGRAM_GRPC_FIELDS, PROGRAM_GRPC_WRITE_HEADER},
    Counter, GrpcInjectConfig,
};

use super::super::{
    types_of, Activation, At, AttachTarget, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Session, Wanted,
};
use crate::exit::Failure;

use super::super::trace_context_grpc::{field_size, FIELD, X_NET};
/// Builds a call's header fields on the caller's goroutine (inside the CLIENT span).
pub const FIELDS_SYMBOL: &str = "google.golang.org/grpc/internal/transport.(*http2Client).createHeaderFields";
/// Encodes and writes a stream's HEADERS frame on the connection's loopy-writer goroutine.
pub const WRITE_HEADER_SYMBOL: &str = "google.golang.org/grpc/internal/transport.(*loopyWriter).writeHeader";

/// The two hooks (also `join.same_node.grpc_client`'s); the programs read no cookie.
pub const HOOKS: &[HookSpec] = &[
    HookSpec { program: PROGRAM_GRPC_FIELDS, function: FIELDS_SYMBOL, at: At::Returns, cookie: 0 },
    HookSpec { program: PROGRAM_GRPC_WRITE_HEADER, function: WRITE_HEADER_SYMBOL, at: At::Entry, cookie: 0 },
];

/// What those hooks read of the header fields (`fields_config`).
pub const FIELDS: &[FieldNeed] =
    &[FieldNeed::module(X_NET, FIELD, "Name", GoTy::String), FieldNeed::module(X_NET, FIELD, "Sensitive", GoTy::Int)];

pub static INJECT_SOCKET_GRPC: Instrumentation = Instrumentation {
    name: "inject.socket.grpc",
    doc: "with `GOTEL_PROPAGATION=inject` and `grpc.client`: appends `traceparent` (one HPACK literal field without indexing) to the HEADERS frame of outgoing gRPC calls over plaintext HTTP/2 (h2c) as they are sent, through the socket path's SK_MSG program; gRPC over TLS is not injected",
    fields: FIELDS,
    hooks: HOOKS,
    wanted,
    missing_hooks: Some(
        "inject.socket.grpc: no (*http2Client).createHeaderFields or (*loopyWriter).writeHeader in the binary: outgoing gRPC calls carry no traceparent",
    ),
    prepare: Some(prepare),
    attach_extra: Some(attach_extra),
    counters: &[
        ("grpc_socket_injected", Counter::GrpcSocketInjected),
        ("grpc_socket_skipped_present", Counter::GrpcSocketSkippedPresent),
        ("grpc_socket_skipped_too_long", Counter::GrpcSocketSkippedTooLong),
        ("grpc_socket_desync", Counter::GrpcSocketDesync),
        ("grpc_socket_inject_failed", Counter::GrpcSocketInjectFailed),
        ("grpc_socket_unaligned", Counter::GrpcSocketUnaligned),
        ("grpc_socket_resync", Counter::GrpcSocketResync),
    ],
    quiet_counters: true,
    ..Instrumentation::BASE
};

fn wanted(s: &Session) -> Wanted {
    if s.inject && s.has_spans(crate::instrumentations::grpc_client::GRPC_CLIENT.name) {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The `hpack.HeaderField` layout (DWARF or the layout table) for the kernel's check that a
/// call's fields carry no `traceparent` yet.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let off = |why: String| format!("inject.socket.grpc is off (outgoing gRPC calls carry no traceparent): {why}");
    let config = fields_config(a).map_err(off)?;
    a.map_fills.push(MapFill::array(INJECT_SOCKET_GRPC.name, MAP_GRPC_INJECT_CONFIG, config));
    // The socket path's settings (the same values `inject.socket` writes when it is planned too).
    super::prepare(a)
}

/// What `gotel_grpc_fields` reads of the header fields (also for `join.same_node.grpc_client`,
/// which uses the same two hooks).
pub(crate) fn fields_config(a: &Activation) -> Result<GrpcInjectConfig, String> {
    let types = types_of(a.bin)?;
    let field = |name: &str| {
        types.types.struct_field(FIELD, name).map(|f| f.0 as u32).ok_or_else(|| format!("no {FIELD}.{name}"))
    };
    let sensitive = field("Sensitive")?;
    Ok(GrpcInjectConfig { field_size: field_size(sensitive), name_offset: field("Name")? })
}

/// The socket path's programs, unless `inject.socket` attaches them (it is planned when the
/// binary has its dial hook).
fn attach_extra(ebpf: &mut aya::Ebpf, t: &AttachTarget) -> Result<(), Failure> {
    if t.planned.iter().any(|u| u.name == super::INJECT_SOCKET.name) {
        return Ok(());
    }
    super::attach_extra(ebpf, t)
}
