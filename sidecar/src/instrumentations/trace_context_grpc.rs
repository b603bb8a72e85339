//! Incoming trace context of gRPC requests, read-only: at the entry of grpc-go's
//! `(*http2Server).operateHeaders` the kernel looks through the request's decoded header fields
//! (`frame.Fields`, a `[]hpack.HeaderField` of golang.org/x/net) for `traceparent`; a valid one
//! becomes the remote parent of the stream's server span (`grpc.server`), handed to the goroutine
//! grpc-go starts for the stream (`propagation::grpc_extract` in the kernel crate says how).
//! gotel never walks metadata maps. On whenever gRPC server spans are.
//!
//! The `frame` argument is the second word (RBX) up to grpc-go 1.59 and the fourth (RDI, after a
//! `ctx context.Context`) from 1.60; the field offsets come from DWARF or the layout table (keyed
//! by the golang.org/x/net version), and the unit is off with a warning when neither has them.
use gotel_shared::{
    names::{MAP_GRPC_HEADERS_CONFIG, PROGRAM_GRPC_HEADERS},
    Counter, GrpcHeadersConfig, COOKIE_GRPC_HEADERS, REG_RBX, REG_RDI,
};

use super::{types_of, Activation, At, FieldNeed, GoTy, HookSpec, Instrumentation, Load, MapFill, Wanted};

pub(crate) const X_NET: &str = "golang.org/x/net";
const FRAME: &str = "golang.org/x/net/http2.MetaHeadersFrame";
pub(crate) const FIELD: &str = "golang.org/x/net/http2/hpack.HeaderField";
const FUNCTION: &str = "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders";

pub static TRACE_CONTEXT_GRPC: Instrumentation = Instrumentation {
    name: "trace_context.grpc",
    doc: "a `traceparent` in a gRPC request's metadata becomes the server span's remote parent (with `grpc.server`), read from the HEADERS frame's decoded fields",
    fields: &[
        FieldNeed::module(X_NET, FRAME, "Fields", GoTy::Bytes),
        FieldNeed::module(X_NET, FIELD, "Name", GoTy::String),
        FieldNeed::module(X_NET, FIELD, "Value", GoTy::String),
        FieldNeed::module(X_NET, FIELD, "Sensitive", GoTy::Int),
    ],
    hooks: &[HookSpec { program: PROGRAM_GRPC_HEADERS, function: FUNCTION, at: At::Entry, cookie: COOKIE_GRPC_HEADERS }],
    // The adopted context reaches the stream's handler through the goroutine hand-off at
    // `runtime.newproc1`: without goroutine parents the hook would adopt for nobody.
    wanted: |s| match (s.has_spans(super::grpc_server::GRPC_SERVER.name), s.goroutine_parents) {
        (false, _) => Wanted::No,
        (true, true) => Wanted::Yes,
        (true, false) => Wanted::Refused(
            "GOTEL_GOROUTINE_PARENTS=off: an incoming gRPC traceparent is not adopted (it reaches the stream's handler through the goroutine start gotel no longer hooks); gRPC server spans start their own traces".into(),
        ),
    },
    missing_hooks: Some("trace_context.grpc: no (*http2Server).operateHeaders in the binary: an incoming gRPC traceparent is not adopted"),
    prepare: Some(prepare),
    // Its own kernel program (a bpf_loop over the header fields): a kernel whose verifier
    // refuses it loses the incoming gRPC context, not the spans.
    load: Load::MayBeRefused { probe_flags: 0, message: refused },
    counters: &[
        ("grpc_traceparent_adopted", Counter::GrpcTraceparentAdopted),
        ("grpc_traceparent_invalid", Counter::GrpcTraceparentInvalid),
        ("grpc_context_handed_off", Counter::GrpcContextHandedOff),
    ],
    quiet_counters: true,
    ..Instrumentation::BASE
};

fn prepare(a: &mut Activation) -> Result<(), String> {
    let off = |why: String| format!("trace_context.grpc is off (an incoming gRPC traceparent is not adopted): {why}");
    let frame_reg = frame_register(a).map_err(off)?;
    let types = types_of(a.bin).map_err(off)?;
    let field = |strukt: &str, name: &str| {
        types.types.struct_field(strukt, name).map(|f| f.0 as u32).ok_or_else(|| off(format!("no {strukt}.{name}")))
    };
    let sensitive = field(FIELD, "Sensitive")?;
    let config = GrpcHeadersConfig {
        frame_reg: frame_reg as u32,
        fields_offset: field(FRAME, "Fields")?,
        field_size: field_size(sensitive),
        name_offset: field(FIELD, "Name")?,
        value_offset: field(FIELD, "Value")?,
        _pad: 0,
    };
    a.map_fills.push(MapFill::array(TRACE_CONTEXT_GRPC.name, MAP_GRPC_HEADERS_CONFIG, config));
    Ok(())
}

/// Size of an `hpack.HeaderField` whose `Sensitive` is at `sensitive`: Name and Value (strings)
/// then Sensitive (a bool), the element padded to 8 bytes.
pub(crate) fn field_size(sensitive: u32) -> u32 {
    (sensitive + 8) & !7
}

fn refused(program: &str, error: &str) -> String {
    format!(
        "trace_context.grpc is off: the kernel refused {program} ({error}); gRPC server spans do not adopt an incoming traceparent"
    )
}

/// The register of `frame`: from DWARF (a `ctx` parameter comes first from 1.60), else from
/// the grpc-go version in the build info.
fn frame_register(a: &Activation) -> Result<u8, String> {
    if let Some(f) = a.bin.dwarf.as_ref().and_then(|d| d.function(FUNCTION)) {
        return Ok(if f.params.iter().any(|p| p.name == "ctx") { REG_RDI } else { REG_RBX });
    }
    let version = a.bin.build.deps.iter().find(|(p, _)| p == super::grpc::GRPC).map(|(_, v)| v.as_str());
    match version.and_then(minor_of) {
        Some(minor) if minor >= 60 => Ok(REG_RDI),
        Some(_) => Ok(REG_RBX),
        None => Err(format!("grpc-go version {version:?} is not a release")),
    }
}

/// `v1.64.1` -> 64.
fn minor_of(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("v1.")?;
    rest.split(['.', '-']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn minor_versions() {
        assert_eq!(super::minor_of("v1.64.1"), Some(64));
        assert_eq!(super::minor_of("v1.59.0"), Some(59));
        assert_eq!(super::minor_of("=> ../grpc (devel)"), None);
    }
}
