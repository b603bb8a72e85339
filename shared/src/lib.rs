//! Records that cross the kernel boundary, shared by `sidecar-ebpf` (writer) and `sidecar`
//! (reader). Everything is `#[repr(C)]`, naturally aligned and free of implicit padding, so both
//! sides agree on the layout byte for byte. The `user` feature adds `aya::Pod` for the loader.
//!
//! Beside the records: [`rules`] (pairing, parents, span flags, the event header),
//! [`traceparent`] (parse and format) and [`names`] (program and map names), pure functions
//! that both sides call and that are tested on the host.
//!
//! The records are declared by concern and re-exported here: `records` (what the kernel writes:
//! the ring-buffer records and the state it keeps per goroutine and per request), `config` (what
//! user space writes for the kernel: probe plans and per-target settings), `cookie` (the attach
//! cookie's layout) and `counters` (the kernel's event counters).
#![no_std]

mod config;
mod cookie;
mod counters;
mod records;

pub mod h2;
pub mod header_block;
pub mod header_map;
pub mod names;
pub mod rules;
pub mod same_node;
pub mod traceparent;

pub use config::*;
pub use cookie::*;
pub use counters::*;
pub use records::*;
