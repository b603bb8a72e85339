//! What the gRPC units (`grpc_server`, `grpc_client`) share: the grpc-go and genproto types they
//! read, the fetches that read a status (`*status.Status` -> `*spb.Status`: code and message),
//! the names of the status codes and the span name and RPC attributes from a full method name
//! (`/package.Service/Method`).
//!
//! Why read the status through these structs: a gRPC status travels as `*status.Status`
//! (`internal/status.Status{s *spb.Status}`) on the server's write path and as
//! `*status.Error{s *Status}` in a client's error, in every grpc-go release since 2018. The
//! generated `spb.Status` (module google.golang.org/genproto/googleapis/rpc) has the numeric
//! `Code` and the `Message`; binaries without DWARF get both modules' offsets from the layout
//! table, keyed by the exact versions in their build info.
use gotel_shared::{Fetch, Root, ValueKind};
use opentelemetry::KeyValue;

use super::{FieldNeed, GoTy};
use crate::{
    attributes::{self, AttrSlot, AttributePlan, Decode, Limits},
    dwarf::DwarfInfo,
};

pub(crate) const GRPC: &str = "google.golang.org/grpc";
pub(crate) const GENPROTO: &str = "google.golang.org/genproto/googleapis/rpc";
pub(crate) const STATUS_ERROR: &str = "google.golang.org/grpc/internal/status.Error";
pub(crate) const STATUS: &str = "google.golang.org/grpc/internal/status.Status";
pub(crate) const PB_STATUS: &str = "google.golang.org/genproto/googleapis/rpc/status.Status";

/// The status fields both units read.
pub(crate) const STATUS_FIELDS: [FieldNeed; 3] = [
    FieldNeed::module(GRPC, STATUS, "s", GoTy::Ptr(PB_STATUS)),
    FieldNeed::module(GENPROTO, PB_STATUS, "Code", GoTy::Int),
    FieldNeed::module(GENPROTO, PB_STATUS, "Message", GoTy::String),
];

/// Attributes both units set.
pub(crate) const ATTRIBUTES: [&str; 4] = ["rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code"];

/// Capture keys (internal) of the status code and message.
pub(crate) const CODE: &str = "code";
pub(crate) const MESSAGE: &str = "message";

/// One value read by a fetch the spec language cannot say.
pub(crate) struct Read<'a> {
    pub key: &'a str,
    pub root: Root,
    /// The register (or saved slot) holding the pointer the hops start from.
    pub reg: u8,
    pub hops: &'a [u64],
    pub kind: ValueKind,
    /// Bytes of an `Int`.
    pub size: u8,
    pub at_return: bool,
    pub decode: Decode,
}

/// Adds `r` to `plan`.
pub(crate) fn push(plan: &mut AttributePlan, limits: &Limits, r: Read<'_>) {
    let mut f = Fetch {
        root: r.root as u8,
        kind: r.kind as u8,
        size: r.size,
        nregs: 1,
        regs: [r.reg, 0],
        nhops: r.hops.len() as u8,
        at_return: r.at_return as u8,
        max_len: limits.max_string.min(gotel_shared::MAX_STR) as u16,
        slot: plan.slots.len() as u16,
        ..Fetch::default()
    };
    for (i, h) in r.hops.iter().enumerate() {
        f.hops[i] = *h as i32;
    }
    plan.fetches.push(f);
    plan.slots.push(AttrSlot { key: attributes::shared_key(r.key), decode: r.decode, sets_error_status: false });
}

/// Offset of a field the unit declared, or the message that turns the unit off.
pub(crate) fn field(dwarf: &DwarfInfo, strukt: &str, name: &str) -> Result<u64, String> {
    dwarf.types.struct_field(strukt, name).map(|(off, _)| off).ok_or_else(|| {
        format!("no {strukt}.{name} in the binary's types (a grpc-go or genproto version gotel's layout table lacks)")
    })
}

/// Reads the code and message of the `*status.Status` reached from `reg` through `prefix`
/// (empty: `reg` holds the `*status.Status`).
pub(crate) fn push_status(
    plan: &mut AttributePlan,
    dwarf: &DwarfInfo,
    limits: &Limits,
    (root, reg, prefix, at_return): (Root, u8, &[u64], bool),
) -> Result<(), String> {
    let s = field(dwarf, STATUS, "s")?;
    let code = field(dwarf, PB_STATUS, "Code")?;
    let message = field(dwarf, PB_STATUS, "Message")?;
    let reads = [
        (CODE, code, ValueKind::Int, 4, Decode::Int { size: 4 }),
        (MESSAGE, message, ValueKind::String, 16, Decode::String),
    ];
    for (key, last, kind, size, decode) in reads {
        let hops: Vec<u64> = prefix.iter().copied().chain([s, last]).collect();
        push(plan, limits, Read { key, root, reg, hops: &hops, kind, size, at_return, decode });
    }
    Ok(())
}

/// The gRPC status codes, by number.
pub(crate) const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The codes the RPC conventions call errors for a server: Unknown, DeadlineExceeded,
/// Unimplemented, Internal, Unavailable, DataLoss (the others are the caller's problem).
pub(crate) fn server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The status description for an ERROR span: `NotFound: no such item`.
pub(crate) fn describe(code: i64, message: Option<&str>) -> String {
    let name = usize::try_from(code).ok().and_then(|c| CODE_NAMES.get(c)).copied().unwrap_or("Unknown");
    match message {
        Some(m) if !m.is_empty() => format!("{name}: {m}"),
        _ => name.to_string(),
    }
}

/// Span name and RPC attributes from a full method name: `/pkg.Service/Method` ->
/// `pkg.Service/Method`, `rpc.service` = `pkg.Service`, `rpc.method` = `Method`.
pub(crate) fn name_and_attributes(full: Option<String>) -> (String, Vec<KeyValue>) {
    let mut attributes = vec![KeyValue::new("rpc.system", "grpc")];
    let Some(full) = full else { return ("grpc".into(), attributes) };
    let name = full.trim_start_matches('/').to_string();
    if let Some((service, method)) = name.split_once('/') {
        attributes.push(KeyValue::new("rpc.service", service.to_string()));
        attributes.push(KeyValue::new("rpc.method", method.to_string()));
    }
    (name, attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

    #[test]
    fn names_codes_and_errors() {
        let (name, attrs) = name_and_attributes(Some("/gotel.test.Greeter/SayHello".into()));
        assert_eq!(name, "gotel.test.Greeter/SayHello");
        assert_eq!(attribute(&attrs, "rpc.service").as_deref(), Some("gotel.test.Greeter"));
        assert_eq!(attribute(&attrs, "rpc.method").as_deref(), Some("SayHello"));
        assert_eq!(attribute(&attrs, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(name_and_attributes(None).0, "grpc");
        assert_eq!(describe(5, Some("no tea")), "NotFound: no tea");
        assert_eq!(describe(99, None), "Unknown");
        assert!(server_error(4) && server_error(12) && !server_error(5) && !server_error(0));
    }
}
