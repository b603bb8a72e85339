//! Built-in instrumentations: what gotel traces without a probe spec. Each one is a unit, one
//! module that declares in a single [`Instrumentation`] value everything the rest of gotel needs
//! to know about it:
//!
//! - its name for `GOTEL_LIBRARIES` (when the user can choose it);
//! - the struct fields it reads ([`FieldNeed`]): the layout table for binaries without DWARF
//!   (`go_layouts`) is derived from these declarations, and so is the synthetic DWARF it plans
//!   with there (the field types and the [`SpanProbe::signature`]);
//! - the traced function whose calls become spans ([`SpanProbe`]: symbol, capture spec, span
//!   kind, and `finish`, which turns the captures into name, attributes and status);
//! - its helper hooks ([`HookSpec`]: kernel program, Go function, entry or every RET, cookie
//!   bits), when it is wanted ([`Instrumentation::wanted`]) and what it sets up besides
//!   ([`Instrumentation::prepare`]: kernel map values, flags on span probes);
//! - the kernel counters it reports in the session summary.
//!
//! [`ALL`] is the registry. `plan` plans span probes and hooks from it, `attach` attaches the
//! hooks in one loop, the session summary prints the counters, and the `GOTEL_LIBRARIES` error
//! message and the README table come from it.
//!
//! Why declarations rather than a trait with code per step: a unit's shape is the same every
//! time (fields, function, hooks, finish), and declared data can be checked in one place (the
//! layout table against DWARF, the README against the registry) — the code a unit does need
//! (`finish`, `prepare`, extra captures) is a function pointer beside the data.
//!
//! A unit whose programs are not all uprobes (`inject_socket`: SOCK_OPS on a cgroup, SK_MSG on a
//! sockhash) declares its uprobes as hooks and loads and attaches the rest in `attach_extra`.
use opentelemetry::{trace::SpanKind, KeyValue};

use crate::{
    attributes::{self, AttributePlan, Limits},
    binary::GoBinary,
    dwarf::{DwarfInfo, FunctionInfo},
    exit::Failure,
    go_layouts,
    plan::{Hook, Probe},
    spec,
};
use gotel_shared::Counter;

pub mod database_sql;
mod finish;
pub mod goroutines;
pub mod grpc;
pub mod grpc_client;
pub mod grpc_server;
pub mod http_client;
pub mod http_server;
pub mod inject_handoff;
pub mod inject_memory;
pub mod inject_socket;
pub mod join_same_node;
pub mod net_error;
mod read;
pub mod redis;
mod sql;
pub mod trace_context_grpc;
pub mod trace_context_in;

pub(crate) use read::Read;

pub use finish::{finish, Finished, Role, OPEN};
pub(crate) use finish::{host_port, int, take, text, trimmed, ReturnRead};

#[cfg(test)]
mod tests;

/// The registry: every built-in instrumentation, in planning order (span probes get their ids
/// in this order; hooks are attached in this order, before the span probes).
pub static ALL: &[&Instrumentation] = &[
    &goroutines::GOROUTINES,
    &goroutines::GOROUTINES_ENTRY,
    &http_server::HTTP_SERVER,
    &http_client::HTTP_CLIENT,
    &database_sql::DATABASE_SQL,
    &redis::REDIS,
    &grpc_server::GRPC_SERVER,
    &grpc_client::GRPC_CLIENT,
    &inject_handoff::INJECT_HANDOFF,
    &inject_memory::INJECT_MEMORY,
    &inject_socket::INJECT_SOCKET,
    &inject_socket::grpc::INJECT_SOCKET_GRPC,
    &trace_context_in::TRACE_CONTEXT_IN,
    &trace_context_grpc::TRACE_CONTEXT_GRPC,
    &join_same_node::JOIN_SAME_NODE,
    &join_same_node::JOIN_SAME_NODE_CLIENT,
    &join_same_node::JOIN_SAME_NODE_GRPC_CLIENT,
];

/// An instrumentation chosen for this run (see [`libraries_from_env`]).
pub type Library = &'static Instrumentation;

/// One built-in instrumentation. Build it from [`Instrumentation::BASE`] with `..BASE`.
pub struct Instrumentation {
    /// Name in `GOTEL_LIBRARIES`, warnings and logs (`http.server`).
    pub name: &'static str,
    /// Listed in `GOTEL_LIBRARIES` (else on whenever [`wanted`](Self::wanted) says so).
    pub selectable: bool,
    /// One line for the README table: what it does.
    pub doc: &'static str,
    /// Span attributes it sets (README table).
    pub attributes: &'static [&'static str],
    /// Struct fields it reads, so binaries without DWARF get them from the layout table.
    pub fields: &'static [FieldNeed],
    /// The function whose calls become spans, if any.
    pub span: Option<SpanProbe>,
    /// Helper probes planned with the span (the ones the binary has): their calls are not
    /// spans; what their `finish` returns is added to the captures of the enclosing call (the
    /// span's, when the helper runs inside it on the same goroutine), read by the span's
    /// `finish`. For a value written by a callee after the span's own reads (the gRPC status,
    /// written by the transport while the handler's call is in progress).
    pub helpers: &'static [SpanProbe],
    /// More functions whose calls become spans of this unit, planned when the binary has them
    /// (another way into the library: gRPC streams beside unary calls).
    pub more_spans: &'static [SpanProbe],
    /// Probes whose call ends a span left open: a span whose `finish` returns an [`OPEN`]
    /// attribute is held (not exported) until a closer's `finish` returns the same value; it
    /// then ends when that call does, with the closer's status and attributes (a gRPC client
    /// stream, opened by `NewStream`, ends in `(*clientStream).finish` on whichever goroutine).
    pub closers: &'static [SpanProbe],
    /// Helper uprobes, attached in this order (RETs before the entry of the same function, so
    /// no call is seen entering whose return goes unseen).
    pub hooks: &'static [HookSpec],
    /// Whether the hooks are used in this session.
    pub wanted: fn(&Session) -> Wanted,
    /// Warning when `wanted` but a hook's function is not in the binary (`None`: quietly off).
    pub missing_hooks: Option<&'static str>,
    /// Set-up beyond the hooks once they resolved (kernel map values, span probe flags);
    /// `Err` turns the unit off with that warning.
    pub prepare: Option<Prepare>,
    /// Whether the kernel may refuse its programs without gotel failing.
    pub load: Load,
    /// Programs loaded and attached by other means than uprobes (cgroup, socket): called once
    /// the hooks and span probes are attached, unless the kernel refused the unit's hooks.
    pub attach_extra: Option<AttachExtra>,
    /// Undoes what `attach_extra` did for one target (its slot) when the loaded object outlives
    /// the target (node mode serves every target with one object); otherwise dropping the
    /// object undoes everything.
    pub detach_extra: Option<fn(&mut aya::Ebpf, u32)>,
    /// Kernel counters it reports in the session summary, under these names.
    pub counters: &'static [(&'static str, Counter)],
    /// Its counters appear in the summary only when one of them is not zero (a unit most
    /// sessions never use).
    pub quiet_counters: bool,
}

/// [`Instrumentation::prepare`].
pub type Prepare = fn(&mut Activation) -> Result<(), String>;
/// [`Instrumentation::attach_extra`].
pub type AttachExtra = fn(&mut aya::Ebpf, &AttachTarget) -> Result<(), Failure>;
/// [`SpanProbe::extend`]: adds fetches and slots to the plan the spec gave.
pub type Extend = fn(&mut AttributePlan, &DwarfInfo, &FunctionInfo, &Limits) -> Result<(), String>;
type WriteMap = dyn Fn(&mut aya::maps::Map, u32) -> Result<(), String> + Send + Sync;

impl Instrumentation {
    /// Defaults: nothing declared, hooks never wanted, programs required.
    pub const BASE: Instrumentation = Instrumentation {
        name: "",
        selectable: false,
        doc: "",
        attributes: &[],
        fields: &[],
        span: None,
        helpers: &[],
        more_spans: &[],
        closers: &[],
        hooks: &[],
        wanted: |_| Wanted::No,
        missing_hooks: None,
        prepare: None,
        load: Load::Required,
        attach_extra: None,
        detach_extra: None,
        counters: &[],
        quiet_counters: false,
    };

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Go function its spans come from (the first, for units with several).
    pub fn symbol(&self) -> Option<&'static str> {
        self.span.as_ref().map(|s| s.symbol)
    }

    /// Every span probe: [`Instrumentation::span`], then [`Instrumentation::more_spans`].
    pub fn spans(&self) -> impl Iterator<Item = &SpanProbe> {
        self.span.iter().chain(self.more_spans.iter())
    }

    /// Whether one of its probes is in Go function `name` (its DWARF must be read: see
    /// `session::prepare`).
    pub fn probes_function(&self, name: &str) -> bool {
        self.spans().chain(self.helpers).chain(self.closers).any(|s| s.symbol == name)
    }

    /// The span probe of Go function `symbol`.
    pub fn span_of(&self, symbol: &str) -> Option<&SpanProbe> {
        self.spans().find(|s| s.symbol == symbol)
    }

    pub fn span_kind(&self) -> SpanKind {
        self.span.as_ref().map(|s| s.kind.clone()).unwrap_or(SpanKind::Internal)
    }
}

impl PartialEq for Instrumentation {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for SpanProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol)
    }
}

impl std::fmt::Debug for Instrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A traced function whose calls become spans of a built-in kind.
pub struct SpanProbe {
    /// The Go symbol (`net/http.serverHandler.ServeHTTP`).
    pub symbol: &'static str,
    pub kind: SpanKind,
    /// Entry and return captures, as a probe spec the attribute planner resolves with DWARF.
    /// Keys are internal names that `finish` consumes.
    pub spec: &'static str,
    /// The function's receiver, parameters and results, for the synthetic DWARF of binaries
    /// without it (only what the spec reads needs a precise type).
    pub signature: &'static [Arg],
    /// Registers kept from entry for reads at return (`Root::Saved`), `NO_REG` if unused.
    pub save_regs: [u8; 2],
    /// Captures the spec language cannot say (reads at return through saved pointers).
    pub extend: Option<Extend>,
    /// The span's name, attributes and status from the decoded captures and the error message.
    pub finish: fn(Vec<KeyValue>, Option<String>) -> Finished,
}

/// One receiver, parameter or result of a [`SpanProbe::signature`].
pub struct Arg {
    pub name: &'static str,
    pub ty: GoTy,
    pub result: bool,
}

impl Arg {
    pub const fn param(name: &'static str, ty: GoTy) -> Arg {
        Arg { name, ty, result: false }
    }
    pub const fn result(name: &'static str, ty: GoTy) -> Arg {
        Arg { name, ty, result: true }
    }
}

/// The Go types of declared fields and arguments, as far as synthetic DWARF needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoTy {
    String,
    Int,
    /// `[]byte`.
    Bytes,
    /// `*S` where `S` is a struct whose declared fields are known.
    Ptr(&'static str),
    /// A non-empty interface of this name (`error`, `net/http.ResponseWriter`).
    Iface(&'static str),
    /// A pointer gotel does not follow (`unsafe.Pointer`-like).
    Opaque,
    /// A named struct of one pointer word (`struct{ srv *Server }`), passed in one register.
    Word(&'static str),
}

/// A struct field an instrumentation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldNeed {
    /// `None`: the standard library (layout keyed by Go release); else the Go module path
    /// that defines the struct (layout keyed by module path and version from build info).
    pub module: Option<&'static str>,
    /// Go type name, package path included (`net/http.Request`).
    pub strukt: &'static str,
    pub field: &'static str,
    pub ty: GoTy,
    /// Some releases lack it (the unit copes, e.g. `Request.Pattern` before Go 1.22).
    pub optional: bool,
}

impl FieldNeed {
    pub const fn std(strukt: &'static str, field: &'static str, ty: GoTy) -> FieldNeed {
        FieldNeed { module: None, strukt, field, ty, optional: false }
    }
    pub const fn module(module: &'static str, strukt: &'static str, field: &'static str, ty: GoTy) -> FieldNeed {
        FieldNeed { module: Some(module), strukt, field, ty, optional: false }
    }
    pub const fn optional(self) -> FieldNeed {
        FieldNeed { optional: true, ..self }
    }
}

/// A helper uprobe of an instrumentation.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    /// Kernel program (`#[uprobe]` function name in sidecar-ebpf).
    pub program: &'static str,
    /// Go symbol it is attached to.
    pub function: &'static str,
    pub at: At,
    /// `COOKIE_*` bits the kernel program reads.
    pub cookie: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// After the stack-check prologue (or the first instruction).
    Entry,
    /// Every RET instruction.
    Returns,
}

/// What decides whether hooks are wanted.
pub struct Session<'a> {
    pub bin: &'a GoBinary,
    /// `GOTEL_PROPAGATION=inject`.
    pub inject: bool,
    /// `GOTEL_GOROUTINE_PARENTS` (default on).
    pub goroutine_parents: bool,
    /// Span probes planned so far (built-in ones carry their instrumentation).
    pub probes: &'a [Probe],
}

impl Session<'_> {
    /// Whether the spans of instrumentation `name` are planned for this binary.
    pub fn has_spans(&self, name: &str) -> bool {
        self.probes.iter().any(|p| p.library.is_some_and(|l| l.name == name))
    }
}

pub enum Wanted {
    No,
    Yes,
    /// Asked for but impossible here: this warning, and the unit stays off.
    Refused(String),
}

/// What [`Instrumentation::prepare`] may change.
pub struct Activation<'a> {
    pub bin: &'a GoBinary,
    pub probes: &'a mut [Probe],
    pub map_fills: &'a mut Vec<MapFill>,
}

/// Whether the kernel may refuse to load a unit's programs.
#[derive(Clone, Copy)]
pub enum Load {
    /// A refusal is an error (gotel cannot trace).
    Required,
    /// A refusal turns the unit off with `message(program, error)` as a warning, and clears
    /// `probe_flags` (`PLAN_*` bits its `prepare` set) from every span probe.
    MayBeRefused { probe_flags: u32, message: fn(&str, &str) -> String },
}

/// Where `attach_extra` attaches, and which other units run.
pub struct AttachTarget<'a> {
    pub pid: u32,
    pub exe: &'a std::path::Path,
    /// The target's slot in the loaded object (the index of its entries in per-target maps).
    pub slot: u32,
    /// Added to the plan's probe ids to make the ids of `PROBES` and of the cookies (node mode:
    /// every target's probes are in one table).
    pub probe_base: u32,
    /// One loaded object serves several targets (node mode): what `attach_extra` attaches once
    /// per object it must not attach again, and what it attaches per target it must let
    /// `detach_extra` undo.
    pub shared: bool,
    /// The instrumentations of the plan (hooks or extra attach steps).
    pub planned: &'a [Library],
    /// Those of them the kernel refused (`Load::MayBeRefused`).
    pub refused: &'a [Library],
}

impl AttachTarget<'_> {
    /// Whether instrumentation `name` is planned and its programs were loaded.
    pub fn running(&self, name: &str) -> bool {
        self.planned.iter().any(|u| u.name == name) && !self.refused.iter().any(|u| u.name == name)
    }
}

/// A value an instrumentation writes into a kernel map before its programs run.
pub struct MapFill {
    pub instrumentation: &'static str,
    pub map: &'static str,
    /// The value is the same for every target (kernel offsets, a lifetime): also written at
    /// entry 0, which programs that cannot know their target's slot read.
    pub kernel_wide: bool,
    write: Box<WriteMap>,
}

impl MapFill {
    /// `map[slot] = value` in a kernel `Array` with one entry per target slot (`PER_SLOT_MAPS`;
    /// the slot is the target's, known when the object is loaded: see `attach`).
    pub fn array<T: aya::Pod + Send + Sync>(instrumentation: &'static str, map: &'static str, value: T) -> MapFill {
        let write = move |m: &mut aya::maps::Map, slot: u32| {
            let mut a: aya::maps::Array<&mut aya::maps::MapData, T> =
                aya::maps::Array::try_from(m).map_err(|e| e.to_string())?;
            a.set(slot, value, 0).map_err(|e| e.to_string())
        };
        MapFill { instrumentation, map, kernel_wide: false, write: Box::new(write) }
    }

    /// See [`MapFill::kernel_wide`].
    pub fn kernel_wide(mut self) -> MapFill {
        self.kernel_wide = true;
        self
    }

    /// Writes the value at `slot` (and at 0 when [`MapFill::kernel_wide`]).
    pub fn write(&self, map: &mut aya::maps::Map, slot: u32) -> Result<(), String> {
        if self.kernel_wide && slot != 0 {
            (self.write)(map, 0)?;
        }
        (self.write)(map, slot)
    }
}

impl std::fmt::Debug for MapFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MapFill({}: {})", self.instrumentation, self.map)
    }
}

/// The user-selectable instrumentations, in registry order.
pub fn selectable() -> impl Iterator<Item = Library> {
    ALL.iter().copied().filter(|i| i.selectable)
}

/// `GOTEL_LIBRARIES`.
pub fn libraries_from_env() -> Result<Vec<Library>, Failure> {
    parse_libraries(&std::env::var("GOTEL_LIBRARIES").unwrap_or_default())
}

pub fn parse_libraries(value: &str) -> Result<Vec<Library>, Failure> {
    let v = value.trim();
    if v.is_empty() || v == "all" {
        return Ok(selectable().collect());
    }
    if v == "none" {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|name| {
            let name = name.trim();
            selectable().find(|l| l.name == name).ok_or_else(|| {
                let names: Vec<&str> = selectable().map(|l| l.name).collect();
                Failure::config(format!(
                    "GOTEL_LIBRARIES: unknown instrumentation `{name}`; use all, none, or a comma list of {}",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

/// `GOTEL_PROPAGATION`: `none` (default, gotel never writes into the target) or `inject`
/// (write `traceparent` into outgoing HTTP/1 requests that lack one).
pub fn inject_from_env() -> Result<bool, Failure> {
    match std::env::var("GOTEL_PROPAGATION").unwrap_or_default().trim() {
        "" | "none" => Ok(false),
        "inject" => Ok(true),
        other => Err(Failure::config(format!("GOTEL_PROPAGATION={other}: use none (default) or inject"))),
    }
}

/// What span probe `span` (a unit's span or one of its helpers) captures, and the registers it
/// keeps from entry, or why it cannot be used with this binary.
pub fn plan(
    bin: &GoBinary,
    lib: Library,
    span: &SpanProbe,
    limits: &Limits,
) -> Result<(AttributePlan, [u8; 2]), String> {
    if bin.dwarf.is_none() {
        // Without DWARF every module the unit reads must be in the layout table at the
        // binary's exact version: say which one is not, rather than which field is missing.
        for module in lib.fields.iter().filter_map(|f| f.module) {
            go_layouts::module_known(&bin.build, module)?;
        }
    }
    let dwarf = types_of(bin)?;
    let dwarf = &*dwarf;
    if bin.dwarf.is_none() {
        // A module version the layout table lacks: say which, rather than a missing field.
        let lacking = lib.fields.iter().find(|f| !f.optional && dwarf.types.struct_field(f.strukt, f.field).is_none());
        if let Some(FieldNeed { module: Some(module), .. }) = lacking {
            let version = bin.build.deps.iter().find(|(p, _)| p == module).map_or("?", |(_, v)| v.as_str());
            return Err(format!(
                "the binary has no DWARF and gotel's layout table lacks {module} {version}; build without -ldflags=-w or use a gotel that knows that version"
            ));
        }
    }
    let info = dwarf.function(span.symbol).ok_or("no DWARF for the function")?;
    let specs = spec::parse_probes(span.spec).map_err(|e| e.to_string())?;
    let mut plan = attributes::plan_function(span.symbol, Some(info), Some(dwarf), &specs[0].attrs, limits)
        .map_err(|e| e.to_string())?;
    if let Some(extend) = span.extend {
        extend(&mut plan, dwarf, info, limits)?;
    }
    if plan.fetches.len() > gotel_shared::MAX_FETCHES {
        return Err("too many captures".into());
    }
    Ok((plan, span.save_regs))
}

/// Hooks (and their set-up) of every instrumentation wanted for this binary, in registry
/// order; pushes a warning for each one wanted but impossible.
pub(crate) fn plan_hooks(
    bin: &GoBinary,
    probes: &mut [Probe],
    inject: bool,
    goroutine_parents: bool,
    warnings: &mut Vec<String>,
) -> (Vec<Hook>, Vec<MapFill>, Vec<Library>) {
    let (mut hooks, mut fills, mut active) = (Vec::new(), Vec::new(), Vec::new());
    for &unit in ALL.iter().filter(|u| !u.hooks.is_empty() || u.attach_extra.is_some() || u.prepare.is_some()) {
        match (unit.wanted)(&Session { bin, inject, goroutine_parents, probes }) {
            Wanted::No => continue,
            Wanted::Refused(why) => {
                warnings.push(why);
                continue;
            }
            Wanted::Yes => {}
        }
        let resolved: Option<Vec<Hook>> = unit.hooks.iter().map(|h| Hook::resolve(bin, unit, h)).collect();
        let Some(resolved) = resolved else {
            warnings.extend(unit.missing_hooks.map(String::from));
            continue;
        };
        let mut unit_fills = Vec::new();
        if let Some(prepare) = unit.prepare {
            if let Err(why) = prepare(&mut Activation { bin, probes, map_fills: &mut unit_fills }) {
                warnings.push(why);
                continue;
            }
        }
        hooks.extend(resolved);
        fills.extend(unit_fills);
        active.push(unit);
    }
    (hooks, fills, active)
}

/// The binary's own DWARF, or, for a binary built without it, the layouts of its Go release
/// and modules from gotel's table (`go_layouts`).
pub(crate) fn types_of(bin: &GoBinary) -> Result<Types<'_>, String> {
    match &bin.dwarf {
        Some(d) => Ok(Types::Binary(d)),
        None => Ok(Types::Table(go_layouts::synthetic_dwarf(&go_layouts::layout_for(&bin.build)?))),
    }
}

pub(crate) enum Types<'a> {
    Binary(&'a DwarfInfo),
    Table(DwarfInfo),
}

impl std::ops::Deref for Types<'_> {
    type Target = DwarfInfo;
    fn deref(&self) -> &DwarfInfo {
        match self {
            Types::Binary(d) => d,
            Types::Table(d) => d,
        }
    }
}

/// `key=value` of every registered instrumentation's counters, for the session summary (a
/// unit with `quiet_counters` only when one of them is not zero).
pub fn summary_counters(get: impl Fn(Counter) -> u64) -> String {
    let fields: Vec<String> = ALL
        .iter()
        .filter(|u| !u.quiet_counters || u.counters.iter().any(|(_, c)| get(*c) != 0))
        .flat_map(|u| u.counters.iter())
        .map(|(name, c)| format!("{name}={}", get(*c)))
        .collect();
    fields.join(" ")
}

/// The README's table of instrumentations (between its `instrumentations` markers).
pub fn readme_table() -> String {
    let mut out = String::from(
        "| `GOTEL_LIBRARIES` name | what | attributes | Go functions probed |\n| --- | --- | --- | --- |\n",
    );
    for unit in ALL {
        let name = if unit.selectable { format!("`{}`", unit.name) } else { format!("*{}* (automatic)", unit.name) };
        let attrs: Vec<String> = unit.attributes.iter().map(|a| format!("`{a}`")).collect();
        let attrs = if attrs.is_empty() { "—".to_string() } else { attrs.join(", ") };
        let mut functions: Vec<&str> = unit
            .symbol()
            .into_iter()
            .chain(unit.more_spans.iter().chain(unit.helpers).chain(unit.closers).map(|h| h.symbol))
            .chain(unit.hooks.iter().map(|h| h.function))
            .collect();
        functions.dedup();
        let functions: Vec<String> = functions.iter().map(|f| format!("`{f}`")).collect();
        let functions =
            if functions.is_empty() { "— (no probe of its own)".to_string() } else { functions.join(", ") };
        out.push_str(&format!("| {name} | {} | {attrs} | {functions} |\n", unit.doc));
    }
    out
}
