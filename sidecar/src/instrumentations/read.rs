//! One capture an instrumentation's `extend` adds by hand: reads the probe-spec language
//! cannot say (through an interface's data word, through a pointer saved at entry), written
//! once here rather than as a `Fetch` literal in every unit.
use crate::attributes::{self, AttributePlan, Limits};

/// A capture the spec language cannot say, for an `extend`: from register `reg` (at the probe;
/// a saved one with `Root::Saved`) through `hops` (as in [`gotel_shared::Fetch`]), read as
/// `kind` and decoded as `decode` under the internal key `key`.
pub(crate) struct Read<'a> {
    pub key: &'a str,
    pub root: gotel_shared::Root,
    pub reg: u8,
    pub hops: &'a [i32],
    pub kind: gotel_shared::ValueKind,
    pub decode: attributes::Decode,
    pub at_return: bool,
}

impl Read<'_> {
    /// Appends the fetch and its slot to `plan`.
    pub(crate) fn push(&self, plan: &mut AttributePlan, limits: &Limits) {
        let mut f = gotel_shared::Fetch {
            root: self.root as u8,
            kind: self.kind as u8,
            size: 8,
            nregs: 1,
            regs: [self.reg, 0],
            nhops: self.hops.len() as u8,
            at_return: u8::from(self.at_return),
            max_len: limits.max_string.min(gotel_shared::MAX_STR) as u16,
            slot: plan.slots.len() as u16,
            ..gotel_shared::Fetch::default()
        };
        f.hops[..self.hops.len()].copy_from_slice(self.hops);
        plan.fetches.push(f);
        plan.slots.push(attributes::AttrSlot {
            key: attributes::shared_key(self.key),
            decode: self.decode,
            sets_error_status: false,
        });
    }
}
