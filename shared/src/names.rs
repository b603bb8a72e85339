//! Names of the kernel programs and maps, as the eBPF object exports them.
//!
//! The kernel side cannot use these constants (aya's `#[uprobe]` and `#[map]` take the name from
//! the item's identifier), so user space looks programs and maps up by these names and a test on
//! the embedded object (`sidecar/tests/kernel_object.rs`) checks that the object exports exactly
//! [`ALL_PROGRAMS`] and [`ALL_MAPS`]: renaming one side without the other fails there, not at
//! attach time on a user's machine.

/// Entry of every traced function (after its stack-check prologue).
pub const PROGRAM_ENTRY: &str = "gotel_entry";
/// Every RET instruction of a traced function.
pub const PROGRAM_RETURN: &str = "gotel_return";
/// Entry of `runtime.newproc1`: the goroutine executing a `go` statement.
pub const PROGRAM_NEWPROC_ENTRY: &str = "gotel_newproc_entry";
/// RETs of `runtime.newproc1`: the new goroutine inherits the spawning call as parent.
pub const PROGRAM_NEWPROC_RETURN: &str = "gotel_newproc_return";
/// Entry of `net/http.(*Request).write` (injection only).
pub const PROGRAM_REQUEST_WRITE: &str = "gotel_request_write";
/// Entry of `net/http.Header.writeSubset` (injection only).
pub const PROGRAM_HEADER_WRITE_ENTRY: &str = "gotel_header_write_entry";
/// RETs of `net/http.Header.writeSubset`: the only program that writes target memory.
pub const PROGRAM_HEADER_WRITE_RETURN: &str = "gotel_header_write_return";

/// Programs loaded in every session. They only read the target.
pub const TRACING_PROGRAMS: [&str; 4] = [PROGRAM_ENTRY, PROGRAM_RETURN, PROGRAM_NEWPROC_ENTRY, PROGRAM_NEWPROC_RETURN];
/// Programs loaded only with `GOTEL_PROPAGATION=inject`.
pub const INJECTION_PROGRAMS: [&str; 3] =
    [PROGRAM_REQUEST_WRITE, PROGRAM_HEADER_WRITE_ENTRY, PROGRAM_HEADER_WRITE_RETURN];
/// Every program of the object.
pub const ALL_PROGRAMS: [&str; 7] = [
    PROGRAM_ENTRY,
    PROGRAM_RETURN,
    PROGRAM_NEWPROC_ENTRY,
    PROGRAM_NEWPROC_RETURN,
    PROGRAM_REQUEST_WRITE,
    PROGRAM_HEADER_WRITE_ENTRY,
    PROGRAM_HEADER_WRITE_RETURN,
];

/// Ring buffer of records ([`crate::EventHeader`] then values).
pub const MAP_EVENTS: &str = "EVENTS";
/// Traced calls in progress per goroutine ([`crate::GoroutineState`]).
pub const MAP_GOROUTINES: &str = "GOROUTINES";
/// `runtime.newproc1` in progress per M.
pub const MAP_NEWPROC: &str = "NEWPROC";
/// Per-probe capture instructions ([`crate::ProbePlan`]).
pub const MAP_PROBES: &str = "PROBES";
/// Per-CPU [`crate::Counter`]s.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Per-CPU working memory of the kernel programs.
pub const MAP_SCRATCH: &str = "SCRATCH";
/// Outgoing requests waiting for injection ([`crate::InjectContext`]).
pub const MAP_INJECT_BY_REQUEST: &str = "INJECT_BY_REQUEST";
/// The request a goroutine is writing ([`crate::InjectContext`]).
pub const MAP_INJECT_PENDING: &str = "INJECT_PENDING";
/// `bufio.Writer` offsets ([`crate::InjectConfig`]).
pub const MAP_INJECT_CONFIG: &str = "INJECT_CONFIG";
/// Field offsets of the HTTP/1 header scan ([`crate::ExtractConfig`]).
pub const MAP_EXTRACT_CONFIG: &str = "EXTRACT_CONFIG";
/// Field offsets that find the spawning goroutine at `runtime.newproc1`'s RETs
/// ([`crate::NewprocConfig`]).
pub const MAP_NEWPROC_CONFIG: &str = "NEWPROC_CONFIG";
/// Every map of the object.
pub const ALL_MAPS: [&str; 11] = [
    MAP_EVENTS,
    MAP_GOROUTINES,
    MAP_NEWPROC,
    MAP_PROBES,
    MAP_COUNTERS,
    MAP_SCRATCH,
    MAP_INJECT_BY_REQUEST,
    MAP_INJECT_PENDING,
    MAP_INJECT_CONFIG,
    MAP_EXTRACT_CONFIG,
    MAP_NEWPROC_CONFIG,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_complete_and_distinct() {
        for (i, a) in ALL_PROGRAMS.iter().enumerate() {
            assert!(ALL_PROGRAMS[i + 1..].iter().all(|b| a != b), "{a} twice");
            assert!(TRACING_PROGRAMS.contains(a) != INJECTION_PROGRAMS.contains(a), "{a} in exactly one set");
        }
        for (i, a) in ALL_MAPS.iter().enumerate() {
            assert!(ALL_MAPS[i + 1..].iter().all(|b| a != b), "{a} twice");
        }
    }
}
