//! W3C trace context across processes. `extract` adopts an incoming `traceparent` (read-only);
//! `inject_memory` writes ours into outgoing requests, the only code that writes into the
//! target, loaded only with `GOTEL_PROPAGATION=inject`. The parse and format rules are in
//! `gotel_shared::traceparent`.
pub mod extract;
pub mod inject_memory;
