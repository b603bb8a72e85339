//! W3C trace context across processes. `extract` adopts an incoming `traceparent` (read-only);
//! `grpc_extract` the same from a gRPC request's header fields.
//! Outgoing, loaded only with `GOTEL_PROPAGATION=inject`: `handoff` carries a CLIENT span's
//! context to the goroutine that writes its request (shared by both writers); `inject_memory`
//! writes it into the request's buffer in the target (the only code that writes into the
//! target); `inject_socket` inserts it into the message the target sends (the only code that
//! changes messages, and the path that works on kernels in lockdown). The parse and format
//! rules are in `gotel_shared::traceparent`.
//! `same_node` joins a server span to the client span of its connection when gotel traces both
//! ends on one node, writing nothing.
pub mod extract;
pub mod grpc_extract;
pub mod handoff;
pub mod inject_memory;
pub mod inject_socket;
pub mod same_node;
