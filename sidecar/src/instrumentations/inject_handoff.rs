//! The client side of `GOTEL_PROPAGATION=inject`, shared by both writers (`inject_memory` writes
//! into the request's buffer, `inject_socket` into the message it sends): the HTTP client span's
//! entry offers its context under the request's `*url.URL` (the request, `*http.Request`, is
//! saved from RBX; `roundTrip` writes a copy of a request with a body, which shares the URL), and
//! `net/http.(*Request).write`'s entry hands it to the goroutine writing the request.
//!
//! Its own unit, so that a kernel refusing one writer (lockdown refuses the memory path's
//! `bpf_probe_write_user`) leaves the hand-off to the other. It reads only; kernel side:
//! `sidecar-ebpf/src/propagation/handoff.rs`.
use gotel_shared::{names::MAP_HANDOFF_CONFIG, HandoffConfig, COOKIE_REQUEST_WRITE, PLAN_INJECT_CONTEXT, REG_RBX};

use super::{types_of, Activation, At, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Session, Wanted};

pub(crate) const NOTHING_TO_INJECT: &str = "GOTEL_PROPAGATION=inject: this binary has no HTTP client spans (net/http client, bufio.Writer layout); nothing will be injected";

pub static INJECT_HANDOFF: Instrumentation = Instrumentation {
    name: "inject.handoff",
    doc: "with `GOTEL_PROPAGATION=inject`: carries each CLIENT span's context to the goroutine that writes its request, for the two writers below (with `http.client`)",
    fields: &[FieldNeed::std("net/http.Request", "URL", GoTy::Ptr("net/url.URL"))],
    hooks: &[HookSpec {
        program: gotel_shared::names::PROGRAM_REQUEST_WRITE,
        function: "net/http.(*Request).write",
        at: At::Entry,
        cookie: COOKIE_REQUEST_WRITE,
    }],
    wanted,
    missing_hooks: Some(NOTHING_TO_INJECT),
    prepare: Some(prepare),
    ..Instrumentation::BASE
};

/// With injection, unless the binary makes only gRPC client calls (then `inject.socket.grpc`
/// carries the context and the warning below would be wrong).
fn wanted(s: &Session) -> Wanted {
    let grpc_only =
        s.has_spans(super::grpc_client::GRPC_CLIENT.name) && !s.has_spans(super::http_client::HTTP_CLIENT.name);
    if s.inject && !grpc_only {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The client span hands its request to the writer; the kernel gets `Request.URL`'s offset.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let client = super::http_client::HTTP_CLIENT.name;
    let config = request_url_offset(a).ok_or(NOTHING_TO_INJECT)?;
    let probe = a.probes.iter_mut().find(|p| p.library.is_some_and(|l| l.name == client)).ok_or(NOTHING_TO_INJECT)?;
    probe.plan_flags |= PLAN_INJECT_CONTEXT;
    probe.save_regs[0] = REG_RBX; // roundTrip(t *Transport, req *Request)
    a.map_fills.push(MapFill::array(INJECT_HANDOFF.name, MAP_HANDOFF_CONFIG, config));
    Ok(())
}

fn request_url_offset(a: &Activation) -> Option<HandoffConfig> {
    let dwarf = types_of(a.bin).ok()?;
    Some(HandoffConfig { request_url_offset: dwarf.types.struct_field("net/http.Request", "URL")?.0 as u32, _pad: 0 })
}
