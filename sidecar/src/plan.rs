//! Resolving the user's probe specs against the binary: which functions, where to put the
//! entry probe (after the stack-check prologue), every RET, source location, and the kernel
//! fetch instructions for the attributes. Everything that can be wrong with the configuration
//! is found here, before anything is attached.
use gotel_shared::{ProbePlan, ValueKind, MAX_FETCHES, PLAN_HAS_ENTRY_FETCH, PLAN_HAS_RETURN_FETCH};

use crate::{
    attributes::{self, AttributePlan, Decode, Limits},
    binary::{disasm, Function, GoBinary},
    exit::Failure,
    instrumentations::{self, At, HookSpec, Library, MapFill, Role, SpanProbe},
    names,
    spec::ProbeSpec,
};

/// Upper bound of traced functions (size of the kernel's `PROBES` array).
pub const MAX_PROBES: usize = 4096;

/// One traced function.
#[derive(Debug)]
pub struct Probe {
    /// Index into the kernel's `PROBES` array and the low half of every attach cookie.
    pub id: u32,
    pub function: Function,
    /// Offset from the function start where the entry probe goes.
    pub entry_offset: u64,
    /// No prologue was found: the entry probe sits at the first instruction and the kernel
    /// ignores a morestack re-entry.
    pub at_function_start: bool,
    /// Offsets of every return point: RETs and tail jumps (see `disasm::exits`).
    pub ret_offsets: Vec<u64>,
    /// The return points that are tail jumps (no results can be read there).
    pub tail_jumps: Vec<u64>,
    /// Jumps out with the frame in place: calls leaving there end as unwound.
    pub unpaired_jumps: Vec<u64>,
    pub source: Option<(String, u32)>,
    pub attributes: AttributePlan,
    /// Set for built-in instrumentations (HTTP server and client spans).
    pub library: Option<Library>,
    /// The built-in probe it plans (`library`'s span or one of its helpers).
    pub span_probe: Option<&'static SpanProbe>,
    /// Spans, a helper (its captures go to the enclosing call) or a closer (it ends a span left
    /// open).
    pub role: Role,
    /// Registers the kernel keeps from entry for reads at return (`Root::Saved`).
    pub save_regs: [u8; 2],
    /// `PLAN_*` bits an instrumentation's set-up adds (`PLAN_INJECT_CONTEXT`: the HTTP client
    /// span hands its context to the request writer).
    pub plan_flags: u32,
    /// Whether the entry is trapped: not for a helper that reads only at return
    /// ([`Probe::start_at_return_when_possible`]).
    pub entry_trap: bool,
}

impl Probe {
    /// Probe number `id` on `function` (whose instructions are `code`): entry after the
    /// stack-check prologue, a return probe on every RET; a user probe (no library, no saved
    /// registers, no extra flags) until the caller says otherwise.
    fn new(id: usize, bin: &GoBinary, function: &Function, code: &[u8], attributes: AttributePlan) -> Probe {
        let (prologue, exits) = probe_points(code, function.entry);
        Probe {
            id: id as u32,
            source: bin.source_location(function),
            function: function.clone(),
            entry_offset: prologue.unwrap_or(0),
            at_function_start: prologue.is_none(),
            ret_offsets: exits.return_points(),
            tail_jumps: exits.tail_jumps,
            unpaired_jumps: exits.unpaired_jumps,
            attributes,
            library: None,
            span_probe: None,
            role: Role::Span,
            save_regs: [gotel_shared::NO_REG; 2],
            plan_flags: 0,
            entry_trap: true,
        }
    }

    /// The kernel-side record for this probe.
    pub fn kernel_plan(&self) -> ProbePlan {
        let mut plan = ProbePlan::default();
        // Entry fetches first: each point's loop runs over its own (values carry their slot,
        // so the order is free).
        let taken = &self.attributes.fetches[..self.attributes.fetches.len().min(MAX_FETCHES)];
        let ordered = taken.iter().filter(|f| f.at_return == 0).chain(taken.iter().filter(|f| f.at_return != 0));
        for (i, f) in ordered.enumerate() {
            plan.fetches[i] = *f;
            // An interface shown as its dynamic type uses the type word only: `max_len` 0 tells
            // the kernel not to read the value's first string (two user reads and up to
            // MAX_STR bytes per record; the HTTP server span's `rw` is one, at every request).
            let type_only = self.attributes.slots.get(f.slot as usize).is_some_and(|s| s.decode == Decode::Interface);
            if f.kind == ValueKind::Interface as u8 && type_only {
                plan.fetches[i].max_len = 0;
            }
            plan.flags |= if f.at_return != 0 { PLAN_HAS_RETURN_FETCH } else { PLAN_HAS_ENTRY_FETCH };
        }
        plan.nfetches = taken.len() as u32;
        plan.entry_fetches = taken.iter().filter(|f| f.at_return == 0).count() as u8;
        plan.save_regs = self.save_regs;
        plan.flags |= self.plan_flags;
        if self.role != Role::Span {
            plan.flags |= gotel_shared::PLAN_NOT_A_SPAN;
        }
        plan
    }

    /// A helper or closer that reads nothing at return (no return capture, no saved register)
    /// needs no RET trap: the kernel ends its call at entry (`PLAN_ENDS_AT_ENTRY`). Its end time
    /// is then its start, which is all a helper (captures for the enclosing span) or a closer
    /// (the open span ends when the closer is called) uses. Spans keep both traps.
    fn end_at_entry_when_possible(&mut self) {
        let reads_at_return = self.attributes.fetches.iter().any(|f| f.at_return != 0);
        if self.role == Role::Span || reads_at_return || self.save_regs != [gotel_shared::NO_REG; 2] {
            return;
        }
        self.plan_flags |= gotel_shared::PLAN_ENDS_AT_ENTRY;
        self.ret_offsets.clear();
        self.tail_jumps.clear();
        self.unpaired_jumps.clear();
    }

    /// A helper (never a closer: it may end a span on a goroutine with no traced call) that
    /// reads nothing at entry and keeps no register needs no entry trap: `gotel_return` starts
    /// and ends its call at the RET (`COOKIE_STARTS_AT_RETURN`), under the enclosing call, which
    /// is all its captures are for.
    fn start_at_return_when_possible(&mut self) {
        let reads_at_entry = self.attributes.fetches.iter().any(|f| f.at_return == 0);
        if self.role != Role::Helper
            || reads_at_entry
            || self.save_regs != [gotel_shared::NO_REG; 2]
            || self.plan_flags & gotel_shared::PLAN_ENDS_AT_ENTRY != 0
            || self.ret_offsets.is_empty()
        {
            return;
        }
        self.entry_trap = false;
    }
}

/// A helper uprobe of an instrumentation ([`HookSpec`]), resolved in this binary.
#[derive(Debug)]
pub struct Hook {
    /// Name of the instrumentation it belongs to.
    pub instrumentation: &'static str,
    /// Kernel program.
    pub program: &'static str,
    pub function: Function,
    /// Offsets from the function start: the entry probe point, or every RET.
    pub offsets: Vec<u64>,
    /// Attach cookie (`COOKIE_*` bits).
    pub cookie: u64,
}

impl Hook {
    /// `spec` in `bin`; `None` when its function (or the function's code) is not there.
    pub(crate) fn resolve(bin: &GoBinary, unit: Library, spec: &HookSpec) -> Option<Hook> {
        let f = bin.function(spec.function)?;
        let (prologue, rets) = probe_points(bin.code(f)?, f.entry);
        let offsets = match spec.at {
            At::Entry => vec![prologue.unwrap_or(0)],
            At::Returns => rets.return_points(),
        };
        Some(Hook {
            instrumentation: unit.name,
            program: spec.program,
            function: f.clone(),
            offsets,
            cookie: spec.cookie,
        })
    }
}

#[derive(Debug)]
pub struct Plan {
    pub probes: Vec<Probe>,
    /// Helper uprobes of the instrumentations in use, in attach order.
    pub hooks: Vec<Hook>,
    /// Kernel map values the instrumentations in use need.
    pub map_fills: Vec<MapFill>,
    /// Instrumentations in use beyond plain span probes (those with hooks or extra attach steps).
    pub instrumentations: Vec<Library>,
    /// Things worth telling the user that do not stop tracing (float parameters skipped...).
    pub warnings: Vec<String>,
}

/// Where a function's probes go: the end of its stack-check prologue (if it has one) and every
/// way out, as offsets from its first instruction.
fn probe_points(code: &[u8], entry: u64) -> (Option<u64>, disasm::Exits) {
    (disasm::prologue_end(code, entry), disasm::exits(code, entry))
}

/// The probe on one function the user chose, with what to tell them; or why it is refused.
pub fn user_probe(
    id: usize,
    bin: &GoBinary,
    function: &Function,
    spec: &ProbeSpec,
    limits: &Limits,
) -> Result<(Probe, Vec<String>), Failure> {
    let name = &function.name;
    let code = bin.code(function).ok_or_else(|| {
        Failure::target(format!("{}: the code of {name} is outside the file's loadable segments", bin.path))
    })?;
    let info = bin.dwarf.as_ref().and_then(|d| d.function(name));
    // Also without an attribute list: an `error` last result still sets the span status.
    let attributes = attributes::plan_function(name, info, bin.dwarf.as_ref(), &spec.attrs, limits)
        .map_err(|e| Failure::config(format!("probe `{}`: {e}", spec.text)))?;
    let mut probe = Probe::new(id, bin, function, code, attributes);
    let mut warnings = Vec::new();
    if let Some(&at) = probe.tail_jumps.first() {
        // At a tail jump the results are not computed yet (they are the callee's).
        let asked = probe.attributes.fetches.iter().filter(|f| f.at_return != 0).map(|f| f.slot as usize);
        if let Some(slot) = asked.map(|i| &probe.attributes.slots[i]).find(|s| s.decode != Decode::ErrorType) {
            return Err(Failure::config(format!(
                "probe `{}`: {name} leaves by a tail jump (at +{at:#x}) into another function, whose results these are: they cannot be read there; drop `{}` or probe the function it jumps to",
                spec.text,
                slot.key
            )));
        }
        // The automatic error status (last slot) would read the callee's registers: dropped.
        probe.attributes.fetches.retain(|f| f.at_return == 0);
        probe.attributes.slots.retain(|s| s.decode != Decode::ErrorType);
    }
    if !probe.unpaired_jumps.is_empty() {
        warnings.push(format!(
            "{name} jumps out at {:#x?} with its frame in place: calls leaving there will be reported as unwound",
            probe.unpaired_jumps
        ));
    }
    if probe.ret_offsets.is_empty() {
        warnings.push(format!(
            "{name} has no RET and no tail jump: its calls can only end by a panic, runtime.Goexit or the \
             process exiting, and are reported as unwound"
        ));
    }
    warnings.extend(probe.attributes.warnings.iter().map(|w| format!("{name}: {w}")));
    Ok((probe, warnings))
}

pub fn build(
    bin: &GoBinary,
    specs: &[ProbeSpec],
    limits: &Limits,
    libraries: &[Library],
    inject: bool,
    goroutine_parents: bool,
) -> Result<Plan, Failure> {
    // Resolve each spec to functions; entries naming one function are merged (`names`).
    let chosen = names::choose(bin, specs);
    if !chosen.refusals.is_empty() {
        return Err(Failure::config(chosen.refusals.join("\n")));
    }
    let chosen = chosen.functions;
    if chosen.len() > MAX_PROBES {
        return Err(Failure::config(format!(
            "{} functions match the probe specs; gotel traces at most {MAX_PROBES}: narrow the globs",
            chosen.len()
        )));
    }

    let mut probes = Vec::new();
    let mut warnings = Vec::new();
    for (function, spec) in chosen.values() {
        let (probe, told) = user_probe(probes.len(), bin, function, spec, limits)?;
        warnings.extend(told);
        probes.push(probe);
    }

    // Built-in instrumentations the binary contains, unless the user probes that function.
    for &lib in libraries {
        let Some(main) = lib.span.as_ref() else { continue };
        if let Some(function) = bin.function(main.symbol).filter(|f| probes.iter().any(|p| p.function.name == f.name)) {
            warnings.push(format!(
                "{}: your probe on {} replaces the built-in {} spans",
                lib.name(),
                function.name,
                lib.name()
            ));
            continue;
        }
        // The span, more spans, helpers and closers the binary has (a function may be named differently
        // in another release of the library: each one absent is skipped), all or nothing.
        let mut planned = Vec::new();
        let mut off = None;
        let spans = std::iter::once(main).chain(lib.more_spans).map(|s| (s, Role::Span));
        let others = lib.helpers.iter().map(|h| (h, Role::Helper)).chain(lib.closers.iter().map(|c| (c, Role::Closer)));
        for (span, role) in spans.chain(others) {
            let Some(function) = bin.function(span.symbol) else { continue };
            let Some(code) = bin.code(function) else { continue };
            match instrumentations::plan(bin, lib, span, limits) {
                Ok((attributes, save_regs)) => {
                    let mut probe = Probe {
                        library: Some(lib),
                        span_probe: Some(span),
                        role,
                        save_regs,
                        ..Probe::new(probes.len() + planned.len(), bin, function, code, attributes)
                    };
                    probe.end_at_entry_when_possible();
                    probe.start_at_return_when_possible();
                    planned.push(probe);
                }
                Err(why) => {
                    off = Some(why);
                    break;
                }
            }
        }
        match off {
            // Helpers alone (the library's span functions are not linked) trace nothing.
            None if planned.iter().all(|p| p.role != Role::Span) => {}
            None => probes.extend(planned),
            Some(why) => warnings.push(format!("{} spans are off for this binary: {why}", lib.name())),
        }
    }
    if probes.is_empty() {
        return Err(Failure::config(format!(
            "nothing to trace in {}: set GOTEL_PROBES (e.g. 'main.handle;main.(*Store).Get') or pass --probe{}",
            bin.path,
            if libraries.is_empty() {
                ""
            } else {
                " (the built-in instrumentations found no usable net/http or grpc-go server or client in it)"
            }
        )));
    }
    if probes.len() > MAX_PROBES {
        return Err(Failure::config(format!("more than {MAX_PROBES} functions to trace: narrow the globs")));
    }

    let (hooks, map_fills, instrumentations) =
        instrumentations::plan_hooks(bin, &mut probes, inject, goroutine_parents, &mut warnings);
    Ok(Plan { probes, hooks, map_fills, instrumentations, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::AttributePlan;
    use gotel_shared::{Fetch, NO_REG, PLAN_ENDS_AT_ENTRY};

    fn probe(role: Role, at_return: &[u8], save_regs: [u8; 2]) -> Probe {
        let fetches = at_return.iter().map(|&r| Fetch { at_return: r, ..Default::default() }).collect();
        Probe {
            id: 0,
            function: Function { name: "f".into(), entry: 0x1000, end: 0x1100 },
            entry_offset: 4,
            at_function_start: false,
            ret_offsets: vec![0x40, 0x80],
            tail_jumps: vec![0x90],
            unpaired_jumps: vec![],
            source: None,
            attributes: AttributePlan { fetches, ..Default::default() },
            library: None,
            span_probe: None,
            role,
            save_regs,
            plan_flags: 0,
            entry_trap: true,
        }
    }

    /// An interface shown as its type name reads no value in the kernel; errors and the other
    /// interface decodings, which show its string, and strings keep their limit.
    #[test]
    fn interfaces_shown_as_their_type_read_no_value() {
        let mut p = probe(Role::Span, &[0, 0, 1, 0], [NO_REG; 2]);
        let kinds = [ValueKind::Interface, ValueKind::Interface, ValueKind::Interface, ValueKind::String];
        let decodes = [Decode::Interface, Decode::Error, Decode::TypeAndText, Decode::String];
        for (i, (kind, decode)) in kinds.into_iter().zip(decodes).enumerate() {
            let f = &mut p.attributes.fetches[i];
            (f.kind, f.slot, f.max_len) = (kind as u8, i as u16, 200);
            let key = attributes::shared_key(&format!("v{i}"));
            p.attributes.slots.push(attributes::AttrSlot { key, decode, sets_error_status: false });
        }
        let plan = p.kernel_plan();
        let by_slot = |slot: u16| plan.fetches[..4].iter().find(|f| f.slot == slot).unwrap().max_len;
        assert_eq!([by_slot(0), by_slot(1), by_slot(2), by_slot(3)], [0, 200, 200, 200]);
    }

    /// Helpers and closers that read only at entry end there (one trap); anything reading at
    /// return, keeping registers for it, or being a span keeps its RET traps.
    #[test]
    fn only_helpers_and_closers_without_return_reads_end_at_entry() {
        let none = [NO_REG; 2];
        for (role, at_return, regs, ends) in [
            (Role::Helper, &[0, 0][..], none, true),
            (Role::Closer, &[0][..], none, true),
            (Role::Helper, &[0, 1][..], none, false),
            (Role::Helper, &[0][..], [3, NO_REG], false),
            (Role::Span, &[0][..], none, false),
        ] {
            let mut p = probe(role, at_return, regs);
            p.end_at_entry_when_possible();
            let flagged = p.kernel_plan().flags & PLAN_ENDS_AT_ENTRY != 0;
            assert_eq!((flagged, p.ret_offsets.is_empty()), (ends, ends), "{role:?} {at_return:?} {regs:?}");
            assert_eq!(p.tail_jumps.is_empty(), ends);
        }
    }

    /// Helpers that read only at return start there (no entry trap); closers, spans, helpers
    /// reading at entry or keeping registers keep their entry trap.
    #[test]
    fn only_helpers_reading_only_at_return_start_there() {
        let none = [NO_REG; 2];
        for (role, at_return, regs, starts) in [
            (Role::Helper, &[1, 1][..], none, true),
            (Role::Helper, &[0, 1][..], none, false),
            (Role::Helper, &[1][..], [3, NO_REG], false),
            (Role::Closer, &[1][..], none, false),
            (Role::Span, &[1][..], none, false),
        ] {
            let mut p = probe(role, at_return, regs);
            p.end_at_entry_when_possible();
            p.start_at_return_when_possible();
            assert_eq!(p.entry_trap, !starts, "{role:?} {at_return:?} {regs:?}");
            assert_eq!(p.ret_offsets.len(), 2, "the RETs stay trapped");
        }
    }
}
