//! gotel's kernel side: small uprobe programs (and, for injection through the socket, a SOCK_OPS
//! and an SK_MSG program), generic and driven by maps that user space
//! fills from its plan. None is a uretprobe (Go moves stacks, and a uretprobe's hijacked return
//! address then crashes the program): returns are probed at every RET instruction.
//!
//! | program | attached at | does | module |
//! |---|---|---|---|
//! | `gotel_entry` | entry of every traced function (after its stack-check prologue) | pushes a frame, captures arguments | `frames` |
//! | `gotel_return` | every RET of a traced function | pops the frame, emits the span with its results | `frames` |
//! | `gotel_newproc_return` | RETs of `runtime.newproc1` | the new goroutine inherits the spawning call (found through `g0.m.curg`); clears a reused g | `goroutines` |
//! | `gotel_newproc_entry` | entry of `runtime.newproc1`, only when the `g`/`m` offsets are unknown | remembers the spawning goroutine | `goroutines` |
//! | `gotel_grpc_headers` | entry of grpc-go's `(*http2Server).operateHeaders` | adopts a `traceparent` from a gRPC request's header fields for its handler goroutine (read-only) | `propagation::grpc_extract` |
//! | `gotel_same_node_client` | entry of `net/http.(*persistConn).roundTrip` (`join.same_node` only) | stores the client span's context under the connection, for a server span on the same node | `propagation::same_node` |
//! | `gotel_request_write` | entry of `net/http.(*Request).write` | hands a client span's context to the writing goroutine | `propagation::handoff` |
//! | `gotel_header_write_entry` | entry of `net/http.Header.writeSubset` | notes where the request's headers start | `propagation::inject_memory` |
//! | `gotel_header_write_return` | RETs of `net/http.Header.writeSubset` | writes `traceparent` into the request (the only writer of target memory) | `propagation::inject_memory` |
//! | `gotel_socket_dial` | entry of `net.(*netFD).connect` | tells the socket path the traced process's pid | `propagation::inject_socket` |
//! | `gotel_sock_ops` | SOCK_OPS on the target's cgroup v2 | enrols the traced process's client sockets in a sockhash | `propagation::inject_socket` |
//! | `gotel_sk_msg` | SK_MSG on that sockhash | inserts `traceparent` after the request line, or appends it to a gRPC HEADERS frame on h2c (the only program that changes messages) | `propagation::inject_socket` |
//! | `gotel_grpc_fields` | RETs of grpc-go's `(*http2Client).createHeaderFields` | keys a gRPC call's context by its header fields | `propagation::inject_socket::h2` |
//! | `gotel_grpc_write_header` | entry of grpc-go's `(*loopyWriter).writeHeader` | moves it to the stream's HEADERS frame | `propagation::inject_socket::h2` |
//! | `gotel_http_entry` | entry of the HTTP server span (`net/http.serverHandler.ServeHTTP`), instead of `gotel_entry` | as `gotel_entry`, and reads the request's `traceparent` and `User-Agent` from the connection's read buffer | `frames`, `propagation::extract` |
//!
//! `gotel_request_write` to `gotel_grpc_write_header` are loaded only with
//! `GOTEL_PROPAGATION=inject`. Program and map names are
//! listed in `gotel_shared::names`; the pure rules (frame matching, parents, span flags, the
//! record header, traceparent parse and format) are in `gotel_shared::rules` and
//! `gotel_shared::traceparent`, where they are tested on the host.
//!
//! Modules: `maps` (every map), `context` (registers, goroutine, scratch memory), `capture`
//! (records and value capture), `frames` (pairing), `goroutines` (ancestry), `propagation`.
#![no_std]
#![no_main]

mod capture;
mod context;
mod frames;
mod goroutines;
mod maps;
mod propagation;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
