//! Outgoing `traceparent` written into the request's memory (`GOTEL_PROPAGATION=inject`), the
//! only place gotel writes into the target. Once `inject_handoff` gave the goroutine writing a
//! request its CLIENT span's context, `net/http.Header.writeSubset`'s entry notes the
//! connection's `bufio.Writer` fill index, and its RETs append one `traceparent` line to the
//! buffer when the request's own headers lack one and it fits (else counted). It covers HTTP/1
//! over TLS as well as plaintext; where it runs, the socket path (`inject_socket`) stands aside.
//!
//! A kernel in lockdown forbids `bpf_probe_write_user`: planning leaves this unit out when
//! securityfs shows it, and the verifier's refusal at load time turns it off the same way; the
//! hand-off stays for the socket path, and tracing goes on read-only.
use gotel_shared::{
    names::{MAP_INJECT_CONFIG, PROGRAM_HEADER_WRITE_ENTRY, PROGRAM_HEADER_WRITE_RETURN},
    Counter, InjectConfig, COOKIE_HEADER_WRITE_ENTRY, COOKIE_HEADER_WRITE_RETURN,
};

use super::{types_of, Activation, At, FieldNeed, GoTy, HookSpec, Instrumentation, Load, MapFill, Session, Wanted};

pub static INJECT_MEMORY: Instrumentation = Instrumentation {
    name: "inject.memory",
    doc: "with `GOTEL_PROPAGATION=inject`, on kernels not in lockdown: appends `traceparent` to outgoing HTTP/1 requests that lack one, in the request's buffer (plaintext and TLS)",
    fields: &[
        FieldNeed::std("bufio.Writer", "buf", GoTy::Bytes),
        FieldNeed::std("bufio.Writer", "n", GoTy::Int),
    ],
    hooks: &[
        HookSpec {
            program: PROGRAM_HEADER_WRITE_RETURN,
            function: "net/http.Header.writeSubset",
            at: At::Returns,
            cookie: COOKIE_HEADER_WRITE_RETURN,
        },
        HookSpec {
            program: PROGRAM_HEADER_WRITE_ENTRY,
            function: "net/http.Header.writeSubset",
            at: At::Entry,
            cookie: COOKIE_HEADER_WRITE_ENTRY,
        },
    ],
    wanted,
    missing_hooks: Some("GOTEL_PROPAGATION=inject: memory path off: net/http.Header.writeSubset not found"),
    prepare: Some(prepare),
    // The hand-off's PLAN_INJECT_CONTEXT stays: the socket path still needs it.
    load: Load::MayBeRefused { probe_flags: 0, message: refused },
    counters: &[
        ("traceparent_injected", Counter::TraceparentInjected),
        ("inject_skipped_present", Counter::InjectSkippedPresent),
        ("inject_skipped_no_room", Counter::InjectSkippedNoRoom),
    ],
    ..Instrumentation::BASE
};

/// Only with the hand-off (HTTP client spans), and quietly not on a kernel in lockdown: the
/// socket path's start-up line says what that leaves uncovered.
fn wanted(s: &Session) -> Wanted {
    if s.inject && s.has_spans(super::http_client::HTTP_CLIENT.name) && lockdown_refusal().is_none() {
        Wanted::Yes
    } else {
        Wanted::No
    }
}

/// The kernel gets `bufio.Writer`'s layout.
fn prepare(a: &mut Activation) -> Result<(), String> {
    let config = bufio_writer_offsets(a).ok_or("GOTEL_PROPAGATION=inject: memory path off: no bufio.Writer layout")?;
    a.map_fills.push(MapFill::array(INJECT_MEMORY.name, MAP_INJECT_CONFIG, config));
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
    // Lockdown or a kernel built without the helper: no memory path, keep tracing; the socket
    // path's start-up line says what is covered.
    if error.contains("bpf_probe_write_user") {
        format!("GOTEL_PROPAGATION=inject: memory path off, {MEMORY_REFUSED}")
    } else {
        format!("GOTEL_PROPAGATION=inject: memory path off: loading {program} failed: {error}")
    }
}

/// Why the memory path is off when the verifier refused it.
pub const MEMORY_REFUSED: &str = "kernel in lockdown (the verifier refuses bpf_probe_write_user)";

/// Whether the kernel says up front that the memory path cannot work here: lockdown
/// (integrity or confidentiality) forbids `bpf_probe_write_user`. The file is absent when
/// securityfs is not mounted (containers); the verifier then gives the same answer at load time.
pub fn lockdown_refusal() -> Option<&'static str> {
    let mode = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    ["[integrity]", "[confidentiality]"].into_iter().find(|m| mode.contains(m)).map(|_| "kernel in lockdown")
}
