//! Goroutine ancestry from `runtime.newproc1`, where every goroutine is born: its entry saves
//! the spawning goroutine, its RETs hand the new `g` the context of the spawning call (so a
//! span in a goroutine started inside a traced call gets that call as parent) and clear the
//! state of a reused `g`. Always on: without it spans in new goroutines start new traces.
use gotel_shared::{COOKIE_NEWPROC_ENTRY, COOKIE_NEWPROC_RETURN};

use super::{At, HookSpec, Instrumentation, Wanted};

pub static GOROUTINES: Instrumentation = Instrumentation {
    name: "goroutines",
    doc: "a goroutine started inside a traced call gets that call as parent; reused `g`s start clean",
    hooks: &[
        HookSpec {
            program: gotel_shared::names::PROGRAM_NEWPROC_RETURN,
            function: "runtime.newproc1",
            at: At::Returns,
            cookie: COOKIE_NEWPROC_RETURN,
        },
        HookSpec {
            program: gotel_shared::names::PROGRAM_NEWPROC_ENTRY,
            function: "runtime.newproc1",
            at: At::Entry,
            cookie: COOKIE_NEWPROC_ENTRY,
        },
    ],
    wanted: |_| Wanted::Yes,
    missing_hooks: Some(
        "runtime.newproc1 not found: spans in new goroutines will not get their spawning call as parent",
    ),
    ..Instrumentation::BASE
};
