//! Outgoing `traceparent` written into the request's memory (`GOTEL_PROPAGATION=inject`), the
//! only place gotel writes into the target. The HTTP client span's entry hands its context
//! (keyed by the `*http.Request`, saved from RBX) to the goroutine that writes the request:
//! `net/http.(*Request).write`'s entry arms it, `net/http.Header.writeSubset`'s entry notes the
//! connection's `bufio.Writer` fill index, and its RETs append one `traceparent` line to the
//! buffer when the request's own headers lack one and it fits (else counted).
//!
//! A kernel in lockdown forbids `bpf_probe_write_user`: planning says so up front when securityfs
//! shows it, and the verifier's refusal at load time turns injection off the same way; tracing
//! goes on read-only.
use gotel_shared::{
    Counter, InjectConfig, COOKIE_HEADER_WRITE_ENTRY, COOKIE_HEADER_WRITE_RETURN, COOKIE_REQUEST_WRITE,
    PLAN_INJECT_CONTEXT, REG_RBX,
};

use super::{types_of, Activation, At, FieldNeed, GoTy, HookSpec, Instrumentation, Load, MapFill, Session, Wanted};

const NOTHING_TO_INJECT: &str = "GOTEL_PROPAGATION=inject: this binary has no HTTP client spans (net/http client, bufio.Writer layout); nothing will be injected";

pub static INJECT_MEMORY: Instrumentation = Instrumentation {
    name: "inject.memory",
    doc: "with `GOTEL_PROPAGATION=inject`: appends `traceparent` to outgoing HTTP/1 requests that lack one (with `http.client`)",
    fields: &[
        FieldNeed::std("bufio.Writer", "buf", GoTy::Bytes),
        FieldNeed::std("bufio.Writer", "n", GoTy::Int),
    ],
    hooks: &[
        HookSpec {
            program: "gotel_header_write_return",
            function: "net/http.Header.writeSubset",
            at: At::Returns,
            cookie: COOKIE_HEADER_WRITE_RETURN,
        },
        HookSpec {
            program: "gotel_header_write_entry",
            function: "net/http.Header.writeSubset",
            at: At::Entry,
            cookie: COOKIE_HEADER_WRITE_ENTRY,
        },
        HookSpec {
            program: "gotel_request_write",
            function: "net/http.(*Request).write",
            at: At::Entry,
            cookie: COOKIE_REQUEST_WRITE,
        },
    ],
    wanted,
    missing_hooks: Some(NOTHING_TO_INJECT),
    prepare: Some(prepare),
    load: Load::MayBeRefused { probe_flags: PLAN_INJECT_CONTEXT, message: refused },
    counters: &[
        ("traceparent_injected", Counter::TraceparentInjected),
        ("inject_skipped_present", Counter::InjectSkippedPresent),
        ("inject_skipped_no_room", Counter::InjectSkippedNoRoom),
    ],
    ..Instrumentation::BASE
};

fn wanted(s: &Session) -> Wanted {
    if !s.inject {
        return Wanted::No;
    }
    match lockdown_refusal() {
        Some(why) => Wanted::Refused(why),
        None => Wanted::Yes,
    }
}

/// The client span hands its request to the writer; the kernel gets `bufio.Writer`'s layout.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let client = super::http_client::HTTP_CLIENT.name;
    let config = bufio_writer_offsets(a).ok_or(NOTHING_TO_INJECT)?;
    let probe = a.probes.iter_mut().find(|p| p.library.is_some_and(|l| l.name == client)).ok_or(NOTHING_TO_INJECT)?;
    probe.plan_flags |= PLAN_INJECT_CONTEXT;
    probe.save_regs[0] = REG_RBX; // roundTrip(t *Transport, req *Request)
    a.map_fills.push(MapFill::array(INJECT_MEMORY.name, "INJECT_CONFIG", 0, config));
    Ok(())
}

/// Offsets of `bufio.Writer.buf` and `.n`, needed to append a header to an outgoing request.
fn bufio_writer_offsets(a: &Activation) -> Option<InjectConfig> {
    let dwarf = types_of(a.bin).ok()?;
    let types = &dwarf.types;
    let w = types.struct_named("bufio.Writer")?;
    Some(InjectConfig { buf_offset: types.field(w, "buf")?.0 as u32, n_offset: types.field(w, "n")?.0 as u32 })
}

fn refused(program: &str, error: &str) -> String {
    // Lockdown or a kernel built without the helper: refuse injection, keep tracing.
    if error.contains("bpf_probe_write_user") {
        lockdown_message("the verifier refuses bpf_probe_write_user")
    } else {
        format!("GOTEL_PROPAGATION=inject refused: loading {program} failed: {error}")
    }
}

/// Why injection cannot work here, if the kernel says so up front: lockdown (integrity or
/// confidentiality) forbids `bpf_probe_write_user`. The file is absent when securityfs is not
/// mounted (containers); the verifier then gives the same answer at load time.
pub fn lockdown_refusal() -> Option<String> {
    let mode = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    ["[integrity]", "[confidentiality]"].into_iter().find(|m| mode.contains(m)).map(lockdown_message)
}

pub fn lockdown_message(mode: &str) -> String {
    format!(
        "GOTEL_PROPAGATION=inject refused: the kernel is locked down ({mode}), which forbids writing into another \
         process (bpf_probe_write_user); outgoing requests are not modified and traces are not joined across \
         services. Incoming traceparent is still honoured. Boot without lockdown (lockdown=none) to inject."
    )
}
