//! gotel: traces chosen functions of a running Go program as OpenTelemetry spans, with eBPF
//! uprobes at each function's entry and at every RET instruction.
//!
//! Data flows one way through the modules below (see README "Architecture"):
//! `config` -> `target` -> `binary` (+ `dwarf`) -> `plan` (+ `spec`, `names`, `abi`, `attributes`)
//! -> `attach` -> `events` -> `spans` (+ `values`) -> `export`.
pub mod abi;
pub mod attach;
pub mod attributes;
pub mod binary;
pub mod config;
pub mod diagnostics;
pub mod dwarf;
pub mod events;
pub mod exit;
pub mod export;
pub mod go_layouts;
pub mod instrumentations;
pub mod k8s;
pub mod kernel;
pub mod names;
pub mod node;
pub mod plan;
pub mod session;
pub mod shared_maps;
pub mod spans;
pub mod spec;
pub mod target;
pub mod uprobe_multi;
pub mod values;
