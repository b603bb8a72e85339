//! Incoming `traceparent`, read-only: the RETs of `net/textproto.(*Reader).readContinuedLineSlice`
//! hand the kernel each raw request header line as net/textproto reads it (gotel never walks
//! `http.Header`, whose map layout changed in Go 1.24). A valid one becomes the remote parent of
//! the goroutine's next root span (the server span); invalid ones are counted and ignored.
//! On whenever HTTP server spans are.
use gotel_shared::{Counter, COOKIE_HEADER_LINE};

use super::{At, HookSpec, Instrumentation, Wanted};

pub static TRACE_CONTEXT_IN: Instrumentation = Instrumentation {
    name: "trace_context.in",
    doc: "an incoming `traceparent` header becomes the server span's remote parent (with `http.server`)",
    hooks: &[HookSpec {
        program: gotel_shared::names::PROGRAM_HEADER_LINE,
        function: "net/textproto.(*Reader).readContinuedLineSlice",
        at: At::Returns,
        cookie: COOKIE_HEADER_LINE,
    }],
    wanted: |s| if s.has_spans(super::http_server::HTTP_SERVER.name) { Wanted::Yes } else { Wanted::No },
    counters: &[
        ("traceparent_adopted", Counter::TraceparentAdopted),
        ("traceparent_invalid", Counter::TraceparentInvalid),
    ],
    ..Instrumentation::BASE
};
