//! What every built-in unit uses to turn a probe's raw captures into a span: the roles of its
//! probes, the finished span (name, attributes, status), the captures it adds at return, and the
//! small value helpers its `finish` functions share. Apart from `mod.rs`, which declares what a
//! unit is and plans the units.
use opentelemetry::{trace::Status, KeyValue, Value};

use super::SpanProbe;

/// The attribute of a span left open until a closer ends it (see [`Instrumentation::closers`]);
/// never exported.
pub const OPEN: &str = "gotel.open";

/// What a built-in probe's records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Spans.
    Span,
    /// Captures for the enclosing call ([`Instrumentation::helpers`]).
    Helper,
    /// The end of a span left open ([`Instrumentation::closers`]).
    Closer,
}

/// A finished library span: name, attributes per the semantic conventions, status.
pub struct Finished {
    pub name: String,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
}

/// Turns the raw captures of a library probe (`span`: the unit's span or helper probe) into the
/// span's name, attributes and status.
pub fn finish(span: &SpanProbe, raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    (span.finish)(raw, error)
}

/// Where a [`SpanProbe::extend`] read at return starts: a register saved at entry
/// (`Root::Saved`, slot `reg`) or one live at the RET (`Root::Registers`).
#[derive(Clone, Copy)]
pub(crate) struct ReturnRead {
    pub root: gotel_shared::Root,
    pub reg: u8,
    /// `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, capped at the kernel's `MAX_STR`.
    pub max_len: u16,
}

impl ReturnRead {
    /// Adds the capture `key`: from the start pointer through `hops` (each but the last loads a
    /// pointer), read as `kind`, shown by `decode`.
    pub(crate) fn push(
        self,
        plan: &mut crate::attributes::AttributePlan,
        key: &str,
        kind: gotel_shared::ValueKind,
        hops: &[u64],
        decode: crate::attributes::Decode,
    ) {
        let mut f = gotel_shared::Fetch {
            root: self.root as u8,
            kind: kind as u8,
            size: 8,
            nregs: 1,
            regs: [self.reg, 0],
            nhops: hops.len() as u8,
            at_return: 1,
            max_len: self.max_len,
            slot: plan.slots.len() as u16,
            ..Default::default()
        };
        for (i, h) in hops.iter().take(gotel_shared::MAX_HOPS).enumerate() {
            f.hops[i] = *h as i32;
        }
        plan.fetches.push(f);
        let key = crate::attributes::shared_key(key);
        plan.slots.push(crate::attributes::AttrSlot { key, decode, sets_error_status: false });
    }
}

/// Removes capture `key` from `attrs`.
pub(crate) fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<Value> {
    let i = attrs.iter().position(|kv| kv.key.as_str() == key)?;
    Some(attrs.swap_remove(i).value)
}

/// A non-empty text value. A string capture's own allocation is moved out, not copied: every
/// span goes through here several times.
pub(crate) fn text(v: Option<Value>) -> Option<String> {
    v.map(|v| match v {
        Value::String(s) => String::from(s),
        other => other.as_str().into_owned(),
    })
    .filter(|s| !s.is_empty())
}

/// `s` without the spaces and tabs around it, in its own allocation.
pub(crate) fn trimmed(mut s: String) -> String {
    let blank = |c: char| c == ' ' || c == '\t';
    s.truncate(s.trim_end_matches(blank).len());
    let start = s.len() - s.trim_start_matches(blank).len();
    s.drain(..start);
    s
}

pub(crate) fn int(v: Option<Value>) -> Option<i64> {
    match v? {
        Value::I64(i) => Some(i),
        other => other.as_str().parse().ok(),
    }
}

/// Splits "host:port" (also "[::1]:80") into host and port. Given an owned string, the host
/// keeps its allocation (cut at the colon), as the server and client addresses of every HTTP
/// span do.
pub(crate) fn host_port(s: impl Into<String>) -> (String, Option<i64>) {
    let mut s = s.into();
    let Some((h, p)) = s.rsplit_once(':') else { return (s, None) };
    let Ok(port) = p.parse::<i64>() else { return (s, None) };
    if h.starts_with('[') || h.ends_with(']') {
        return (h.trim_start_matches('[').trim_end_matches(']').to_string(), Some(port));
    }
    s.truncate(h.len());
    (s, Some(port))
}
