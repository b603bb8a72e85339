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
/// Entry of `net/http.(*Request).write`: the hand-off of both injection paths.
pub const PROGRAM_REQUEST_WRITE: &str = "gotel_request_write";
/// Entry of `net/http.Header.writeSubset` (injection only).
pub const PROGRAM_HEADER_WRITE_ENTRY: &str = "gotel_header_write_entry";
/// RETs of `net/http.Header.writeSubset`: the only program that writes target memory.
pub const PROGRAM_HEADER_WRITE_RETURN: &str = "gotel_header_write_return";
/// Entry of `net.(*netFD).connect` (every outgoing TCP connection of any Go client): tells the
/// socket path the traced process's pid before the connection's SOCK_OPS callback runs.
pub const PROGRAM_SOCKET_DIAL: &str = "gotel_socket_dial";
/// SOCK_OPS on the target's cgroup: enrols the traced process's client sockets.
pub const PROGRAM_SOCK_OPS: &str = "gotel_sock_ops";
/// SK_MSG on the sockhash: inserts `traceparent`, the only program that changes messages.
pub const PROGRAM_SK_MSG: &str = "gotel_sk_msg";

/// Adopts a `traceparent` from a gRPC request's HEADERS frame (`propagation::grpc_extract`).
pub const PROGRAM_GRPC_HEADERS: &str = "gotel_grpc_headers";

/// RETs of grpc-go's `(*http2Client).createHeaderFields`: a gRPC call's context, by its fields.
pub const PROGRAM_GRPC_FIELDS: &str = "gotel_grpc_fields";
/// Entry of grpc-go's `(*loopyWriter).writeHeader`: the context moves to {loopy g, stream id}.
pub const PROGRAM_GRPC_WRITE_HEADER: &str = "gotel_grpc_write_header";
/// Entry of `net/http.(*persistConn).roundTrip`: a client request's context stored under its
/// connection (`propagation::same_node`).
pub const PROGRAM_SAME_NODE_CLIENT: &str = "gotel_same_node_client";

/// Entry of the HTTP server span (`net/http.serverHandler.ServeHTTP`): `gotel_entry` plus the
/// request's `traceparent` and `User-Agent`.
pub const PROGRAM_HTTP_ENTRY: &str = "gotel_http_entry";

/// Every program of the object.
pub const ALL_PROGRAMS: [&str; 15] = [
    PROGRAM_ENTRY,
    PROGRAM_RETURN,
    PROGRAM_NEWPROC_ENTRY,
    PROGRAM_NEWPROC_RETURN,
    PROGRAM_REQUEST_WRITE,
    PROGRAM_HEADER_WRITE_ENTRY,
    PROGRAM_HEADER_WRITE_RETURN,
    PROGRAM_SOCKET_DIAL,
    PROGRAM_SOCK_OPS,
    PROGRAM_SK_MSG,
    PROGRAM_GRPC_HEADERS,
    PROGRAM_GRPC_FIELDS,
    PROGRAM_GRPC_WRITE_HEADER,
    PROGRAM_HTTP_ENTRY,
    PROGRAM_SAME_NODE_CLIENT,
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
/// `net/http.Request.URL` offset for the hand-off ([`crate::HandoffConfig`]).
pub const MAP_HANDOFF_CONFIG: &str = "HANDOFF_CONFIG";
/// Client sockets of the traced process (sockhash the SK_MSG program runs on).
pub const MAP_INJECT_SOCKETS: &str = "INJECT_SOCKETS";
/// Sockets the traced process is connecting, until established.
pub const MAP_INJECT_CONNECTING: &str = "INJECT_CONNECTING";
/// The socket path's settings ([`crate::SocketInjectConfig`]).
pub const MAP_INJECT_SOCKET_CONFIG: &str = "INJECT_SOCKET_CONFIG";
/// Scratch sockhash for the start-up FIONREAD measurement (no program on it).
pub const MAP_FIONREAD_PROBE: &str = "FIONREAD_PROBE";
/// Per-CPU working memory of the SK_MSG program.
pub const MAP_INJECT_SOCKET_SCRATCH: &str = "INJECT_SOCKET_SCRATCH";
/// Where the gRPC header fields are (`GrpcHeadersConfig`).
pub const MAP_GRPC_HEADERS_CONFIG: &str = "GRPC_HEADERS_CONFIG";

/// gRPC calls' contexts by their header-field slice ([`crate::InjectContext`]).
pub const MAP_GRPC_INJECT_BY_FIELDS: &str = "GRPC_INJECT_BY_FIELDS";
/// gRPC streams' contexts waiting for their HEADERS frame ([`crate::GrpcStreamKey`]).
pub const MAP_GRPC_INJECT_PENDING: &str = "GRPC_INJECT_PENDING";
/// h2c connections the socket path follows frame by frame ([`crate::H2ConnKey`]).
pub const MAP_H2_CONNS: &str = "H2_CONNS";
/// `hpack.HeaderField` layout ([`crate::GrpcInjectConfig`]).
pub const MAP_GRPC_INJECT_CONFIG: &str = "GRPC_INJECT_CONFIG";
/// Client contexts by connection, shared by every target of one gotel
/// ([`crate::same_node::ConnKey`] -> [`crate::same_node::ConnContext`]).
pub const MAP_SAME_NODE_CONNS: &str = "SAME_NODE_CONNS";
/// One target's field offsets for `join.same_node` ([`crate::same_node::SameNodeConfig`]).
pub const MAP_SAME_NODE_CONFIG: &str = "SAME_NODE_CONFIG";
/// Kernel tgid -> target slot, for the socket path's SOCK_OPS and SK_MSG programs.
pub const MAP_TARGETS: &str = "TARGETS";
/// Non-zero: every uprobe program returns at once (the benchmarks' same-process floor).
pub const MAP_PAUSED: &str = "PAUSED";
/// The maps with one entry per target slot (node mode sizes them to its slots, 1 otherwise).
pub const PER_SLOT_MAPS: [&str; 8] = [
    MAP_INJECT_CONFIG,
    MAP_EXTRACT_CONFIG,
    MAP_NEWPROC_CONFIG,
    MAP_HANDOFF_CONFIG,
    MAP_INJECT_SOCKET_CONFIG,
    MAP_GRPC_HEADERS_CONFIG,
    MAP_GRPC_INJECT_CONFIG,
    MAP_SAME_NODE_CONFIG,
];

/// Every map of the object.
pub const ALL_MAPS: [&str; 26] = [
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
    MAP_HANDOFF_CONFIG,
    MAP_INJECT_SOCKETS,
    MAP_INJECT_CONNECTING,
    MAP_INJECT_SOCKET_CONFIG,
    MAP_FIONREAD_PROBE,
    MAP_INJECT_SOCKET_SCRATCH,
    MAP_GRPC_HEADERS_CONFIG,
    MAP_GRPC_INJECT_BY_FIELDS,
    MAP_GRPC_INJECT_PENDING,
    MAP_H2_CONNS,
    MAP_GRPC_INJECT_CONFIG,
    MAP_SAME_NODE_CONNS,
    MAP_SAME_NODE_CONFIG,
    MAP_TARGETS,
    MAP_PAUSED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_complete_and_distinct() {
        for (i, a) in ALL_PROGRAMS.iter().enumerate() {
            assert!(ALL_PROGRAMS[i + 1..].iter().all(|b| a != b), "{a} twice");
        }
        for (i, a) in ALL_MAPS.iter().enumerate() {
            assert!(ALL_MAPS[i + 1..].iter().all(|b| a != b), "{a} twice");
        }
    }
}
