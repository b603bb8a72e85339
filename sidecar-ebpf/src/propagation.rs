//! W3C trace context across processes. `extract` adopts an incoming `traceparent` (read-only).
//! Outgoing, loaded only with `GOTEL_PROPAGATION=inject`: `handoff` carries a CLIENT span's
//! context to the goroutine that writes its request (shared by both writers); `inject_memory`
//! writes it into the request's buffer in the target (the only code that writes into the
//! target); `inject_socket` inserts it into the message the target sends (the only code that
//! changes messages, and the path that works on kernels in lockdown). The parse and format
//! rules are in `gotel_shared::traceparent`.
pub mod extract;
pub mod handoff;
pub mod inject_memory;
pub mod inject_socket;
