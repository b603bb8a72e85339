//! Resolves the attributes asked for one function (`spec::AttrSpec`) into kernel fetch
//! instructions (`gotel_shared::Fetch`) plus the userspace recipe to decode each captured
//! value (`AttrSlot`).
//!
//! How an expression becomes a fetch:
//! - the root parameter's location comes from Go's register ABI (`abi::assign`) over the
//!   DWARF parameter types, cross-checked with the compiler's own DWARF entry location (Go
//!   up to 1.21 leaves blank `_` parameters out of DWARF, which shifts later parameters; the
//!   compiler's location then wins, with a warning);
//! - fields of a struct *value* only narrow the location (registers of that field, or a
//!   larger stack / memory offset); fields through a *pointer* add a kernel hop
//!   (at most `MAX_HOPS` loads per path);
//! - the final type picks the `ValueKind` the kernel reads and the `Decode` userspace applies.
//!
//! ## Without DWARF (`-ldflags=-w`)
//! Only positional expressions with a type work: `id=arg0:int64`, `err=ret1:error`.
//! The ABI places an argument by the types of *all arguments before it*, and a result by the
//! results before it, so gotel requires those to be typed too, in the same entry. A type
//! can be declared without capturing it under the key `_`:
//! `main.handle(_=arg0:string, n=arg1:int)`. A result that the ABI puts on the stack cannot
//! be located without DWARF (its offset depends on every argument): that is an error.
//! Struct fields need DWARF. Type names accepted without DWARF: bool, int, int8..int64, uint,
//! uint8..uint64, byte, rune, uintptr, float32/64, complex64/128 (layout only), string,
//! error, any / interface{}, unsafe.Pointer, `*T`, `[]T` (T's layout irrelevant), `map[..]..`,
//! `chan T`, `func(..)`.
//!
//! ## What is captured how
//! ints of every size (signed/unsigned), bool, uintptr (hex), string (bounded), `[]byte`
//! (text), `len()` of string / slice / map, pointers / maps / chans / funcs (hex address),
//! `error` (message for the standard error types, else the dynamic type name), other
//! interfaces (dynamic type name). Floats and complex numbers live in XMM registers that
//! uprobes cannot read: an error names the parameter (stack-passed floats are also refused,
//! for one simple rule). Structs and arrays must be narrowed to a field.
//!
//! ## Error status
//! Every `error`-typed *result* slot sets the span status to ERROR when non-nil. With DWARF,
//! a function whose last result is `error` gets such a slot even when nobody asked for it
//! (key `error.type`, the dynamic type of the error, per OpenTelemetry semantic
//! conventions), so calls that fail carry status ERROR with the message.

use gotel_shared::{Fetch, Root, ValueKind, MAX_FETCHES, MAX_HOPS, MAX_STR};

use crate::abi::{self, Location, Reg, RegPiece};
use crate::dwarf::types::{GoType, Kind, TypeId, TypeTable};
use crate::dwarf::{DwarfInfo, FunctionInfo};
use crate::spec::{AttrExpr, AttrSpec, Expr};

/// Limits from the OpenTelemetry environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, bounded by `gotel_shared::MAX_STR`.
    pub max_string: usize,
    /// `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_string: 128, max_attributes: 128 }
    }
}

/// What the kernel captures for one function and how to turn it into attributes.
#[derive(Clone, Debug, Default)]
pub struct AttributePlan {
    /// Kernel instructions; `Fetch::slot` indexes `slots`.
    pub fetches: Vec<Fetch>,
    pub slots: Vec<AttrSlot>,
    /// Things the user should know (skipped parameters, dropped attributes...).
    pub warnings: Vec<String>,
}

/// How to present one captured value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrSlot {
    /// Attribute key, shared (`Arc<str>` inside): every span clones it, without allocating.
    pub key: opentelemetry::Key,
    pub decode: Decode,
    /// A non-nil value sets the span status to ERROR (an `error` result).
    pub sets_error_status: bool,
}

/// A key whose clones share one allocation (a `String` key would be copied for every span).
pub fn shared_key(key: &str) -> opentelemetry::Key {
    opentelemetry::Key::from(std::sync::Arc::<str>::from(key))
}

/// How `values::decode` turns a captured value into an attribute value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// Signed integer of `size` bytes (word 0), as i64.
    Int {
        size: u8,
    },
    /// Unsigned integer of `size` bytes, as i64 (a string above i64::MAX).
    Uint {
        size: u8,
    },
    Bool,
    /// `uintptr`, as a hex string.
    Uintptr,
    /// A pointer-shaped value not followed (pointer, map, chan, func), as a hex string.
    Pointer,
    /// String payload.
    String,
    /// `[]byte` payload as text.
    Bytes,
    /// `len()` of a string or slice: word 1.
    Len,
    /// `len()` of a map: word 0 (the kernel read the count).
    MapLen,
    /// An interface: its dynamic type name.
    Interface,
    /// An `error`: its message for the standard error types, else the dynamic type name.
    Error,
    /// The automatic error-status slot: no attribute of its own except `error.type`.
    ErrorType,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttrError {
    #[error("`{attr}`: {func} has no parameter or result named `{name}`; it has {params}. Use one of these names, or argN / retN")]
    UnknownParam { attr: String, func: String, name: String, params: String },
    #[error("`{attr}`: {func} has no {what}; it has {params}")]
    OutOfRange { attr: String, func: String, what: String, params: String },
    #[error("`{attr}`: `{path}` is a {ty} without a field `{field}`; its fields are: {fields}")]
    UnknownField { attr: String, path: String, ty: String, field: String, fields: String },
    #[error("`{attr}`: `{path}` is a {ty}, not a struct or a pointer to a struct, so `.{field}` cannot be read")]
    NotAStruct { attr: String, path: String, ty: String, field: String },
    #[error("`{attr}`: `{path}` ({ty}) is passed in a floating-point (XMM) register, which uprobes cannot read; remove this attribute")]
    Float { attr: String, path: String, ty: String },
    #[error("`{attr}`: `{path}` has type {ty}, which cannot be captured: {fix}")]
    Unsupported { attr: String, path: String, ty: String, fix: String },
    #[error("`{attr}`: `{path}` follows {hops} pointers, at most {max} are supported; shorten the field path")]
    TooManyHops { attr: String, path: String, hops: usize, max: usize },
    #[error("{count} values to capture, but one probe captures at most {max}; remove some attributes (first one over: `{attr}`)")]
    TooMany { attr: String, count: usize, max: usize },
    #[error("`{attr}`: {func} has no DWARF debug information (built with -ldflags=-w?), so {why}")]
    NeedsDwarf { attr: String, func: String, why: String },
    #[error("`{attr}`: without DWARF the location of {pos} depends on the types of {missing}; declare them in this entry, e.g. `_={example}:TYPE` (key `_` declares a type without capturing it)")]
    NeedsEarlierTypes { attr: String, pos: String, missing: String, example: String },
    #[error("`{attr}`: unknown type `{ty}`; use a Go type like int64, uint8, bool, string, []byte, error, any, *T")]
    BadType { attr: String, ty: String },
    #[error("`{attr}`: {what} is given two different types, `{a}` and `{b}`")]
    ConflictingTypes { attr: String, what: String, a: String, b: String },
    #[error(
        "`{attr}`: the annotation `:{given}` does not match the type DWARF gives, {actual}; remove the annotation"
    )]
    TypeMismatch { attr: String, given: String, actual: String },
    #[error("`{attr}`: {what}")]
    Location { attr: String, what: String },
}

/// Plans the captures of one function. `info` is the function's DWARF entry (when the binary
/// has DWARF and knows the function); `dwarf` the binary's DWARF.
pub fn plan_function(
    func_name: &str,
    info: Option<&FunctionInfo>,
    dwarf: Option<&DwarfInfo>,
    attrs: &AttrSpec,
    limits: &Limits,
) -> Result<AttributePlan, AttrError> {
    let (info, dwarf) = match (info, dwarf) {
        (Some(i), Some(d)) => (Some(i), Some(d)),
        _ => (None, None),
    };
    let mut local = TypeTable::new();
    let sig = match (info, dwarf) {
        (Some(info), Some(d)) => Signature::from_dwarf(info, d),
        _ => Signature::from_annotations(attrs, &mut local)?,
    };
    let types = dwarf.map(|d| &d.types).unwrap_or(&local);
    let mut planner = Planner { func: func_name, sig: &sig, types, limits, plan: AttributePlan::default(), count: 0 };

    match attrs {
        AttrSpec::None => {}
        AttrSpec::All => planner.all()?,
        AttrSpec::List(list) => {
            for a in list.iter().filter(|a| a.key != "_") {
                planner.count += 1;
                if planner.plan.slots.len() >= limits.max_attributes {
                    planner.plan.warnings.push(format!(
                        "`{}` dropped: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT is {}",
                        a.text, limits.max_attributes
                    ));
                    continue;
                }
                let r = planner.resolve(&a.expr, &a.text)?;
                planner.add(a, &a.key, r)?;
            }
        }
    }
    planner.auto_error_status();
    Ok(planner.plan)
}

/// A parameter or result as the planner sees it.
#[derive(Clone, Debug)]
struct SigParam {
    name: String,
    ty: TypeId,
    is_result: bool,
    /// Position among arguments (receiver first) or among results.
    index: usize,
    location: Result<Location, String>,
}

/// The function's signature with locations: complete (from DWARF) or the typed prefix
/// the user declared.
struct Signature {
    params: Vec<SigParam>,
    from_dwarf: bool,
    /// Warnings from building the signature (DWARF/ABI disagreements).
    warnings: Vec<String>,
}

impl Signature {
    fn from_dwarf(info: &FunctionInfo, d: &DwarfInfo) -> Signature {
        let args: Vec<_> = info.args().map(|p| p.ty).collect();
        let results: Vec<_> = info.results().map(|p| p.ty).collect();
        let assignment = assign_with_hidden_dictionary(info, d, &args, &results);
        let mut warnings = Vec::new();
        let mut params = Vec::new();
        let (mut na, mut nr) = (0, 0);
        let mut disagreement = false;
        for p in &info.params {
            let index = if p.is_result { nr } else { na };
            let computed = match &assignment {
                Ok(a) => {
                    let list = if p.is_result { &a.results } else { &a.args };
                    list.get(index).cloned().ok_or_else(|| "no ABI location".to_string())
                }
                Err(e) => Err(format!("its location cannot be computed: {e}")),
            };
            // Only arguments are cross-checked. A result's location at entry is where the body
            // keeps it (Go 1.27 puts a named `err` result in a stack slot), not the registers
            // it is returned in at RET. Compiler-internal parameters (`.dict` of generic
            // functions) are never captured, and Go 1.27's DWARF gives `.dict` its spill slot.
            let from_compiler = p
                .entry_location
                .as_deref()
                .and_then(abi::from_dwarf)
                .filter(|_| !p.is_result && !p.name.starts_with('.'));
            let location = match (computed, from_compiler) {
                (Ok(ours), Some(theirs)) if !abi::agrees(&ours, &theirs) => {
                    disagreement = true;
                    warnings.push(format!(
                        "the register ABI places `{}` in {ours} but the compiler's DWARF says {theirs}; using DWARF's \
                         (Go before 1.22 leaves blank `_` parameters out of DWARF)",
                        p.name
                    ));
                    Ok(theirs)
                }
                (Ok(ours), _) => Ok(ours),
                (Err(_), Some(theirs)) if !p.is_result => Ok(theirs),
                (Err(e), _) => Err(e),
            };
            params.push(SigParam { name: p.name.clone(), ty: p.ty, is_result: p.is_result, index, location });
            if p.is_result {
                nr += 1
            } else {
                na += 1
            }
        }
        if disagreement {
            // DWARF's parameter list is incomplete (Go <= 1.21 omits blank `_` parameters):
            // arguments without their own DWARF location and stack results are unreliable.
            for (sp, p) in params.iter_mut().zip(&info.params) {
                let has_own = p.entry_location.as_deref().and_then(abi::from_dwarf).is_some();
                let stack = matches!(sp.location, Ok(Location::Stack { .. }));
                if (!sp.is_result && !has_own) || (sp.is_result && stack) {
                    sp.location = Err("its location is uncertain: DWARF does not list every parameter of this \
                        function (Go before 1.22 omits blank `_` parameters)"
                        .into());
                }
            }
        }
        Signature { params, from_dwarf: true, warnings }
    }

    /// Without DWARF: the types declared with `argN:T` / `retN:T`.
    fn from_annotations(attrs: &AttrSpec, types: &mut TypeTable) -> Result<Signature, AttrError> {
        let mut args: Vec<Option<(String, TypeId)>> = Vec::new();
        let mut results: Vec<Option<(String, TypeId)>> = Vec::new();
        if let AttrSpec::List(list) = attrs {
            for a in list {
                let mut e = &a.expr;
                if let Expr::Len(inner) = e {
                    e = inner;
                }
                let Expr::Typed(inner, tname) = e else { continue };
                let (slot, n) = match **inner {
                    Expr::Arg(n) => (&mut args, n),
                    Expr::Ret(n) => (&mut results, n),
                    _ => continue,
                };
                if n > 64 {
                    return Err(AttrError::Location {
                        attr: a.text.clone(),
                        what: format!("position {n} is too large"),
                    });
                }
                let ty = parse_type(types, tname)
                    .ok_or_else(|| AttrError::BadType { attr: a.text.clone(), ty: tname.clone() })?;
                if slot.len() <= n {
                    slot.resize(n + 1, None);
                }
                match &slot[n] {
                    Some((prev, _)) if prev != tname => {
                        return Err(AttrError::ConflictingTypes {
                            attr: a.text.clone(),
                            what: inner.to_string(),
                            a: prev.clone(),
                            b: tname.clone(),
                        })
                    }
                    _ => slot[n] = Some((tname.clone(), ty)),
                }
            }
        }
        // Locations only for the typed prefixes.
        let prefix = |v: &[Option<(String, TypeId)>]| {
            v.iter().take_while(|x| x.is_some()).flatten().map(|x| x.1).collect::<Vec<_>>()
        };
        let (pa, pr) = (prefix(&args), prefix(&results));
        let assignment = abi::assign(types, &pa, &pr)
            .map_err(|e| AttrError::Location { attr: String::new(), what: e.to_string() })?;
        let mut params = Vec::new();
        for (is_result, list, locs) in [(false, &args, &assignment.args), (true, &results, &assignment.results)] {
            for (index, entry) in list.iter().enumerate() {
                let Some((_, ty)) = entry else { continue };
                let location = match locs.get(index) {
                    Some(Location::Stack { .. }) if is_result => {
                        Err("this result is passed on the stack, and its offset \
                        depends on every argument of the function, which gotel cannot know without DWARF"
                            .to_string())
                    }
                    Some(l) => Ok(l.clone()),
                    None => {
                        let missing: Vec<_> = (0..index)
                            .filter(|&i| list.get(i).is_none_or(|x| x.is_none()))
                            .map(|i| format!("{}{i}", if is_result { "ret" } else { "arg" }))
                            .collect();
                        Err(format!("missing:{}", missing.join(", ")))
                    }
                };
                let name = format!("{}{index}", if is_result { "ret" } else { "arg" });
                params.push(SigParam { name, ty: *ty, is_result, index, location });
            }
        }
        Ok(Signature { params, from_dwarf: false, warnings: Vec::new() })
    }
}

/// The ABI assignment of a function's DWARF parameters.
///
/// Shaped generic functions (`pkg.F[go.shape.int]`, `pkg.(*T[go.shape.string]).M`) take a
/// hidden dictionary pointer that DWARF does not list: first in Go 1.18/1.19, after the
/// receiver since Go 1.20. Both places are tried and the one that agrees with the
/// compiler's entry locations wins; the hidden word is then left out of the result so
/// `argN` keeps counting declared parameters.
fn assign_with_hidden_dictionary(
    info: &FunctionInfo,
    d: &DwarfInfo,
    args: &[TypeId],
    results: &[TypeId],
) -> Result<abi::Assignment, abi::AbiError> {
    let plain = abi::assign(&d.types, args, results);
    if !info.name.contains("[go.shape.") {
        return plain;
    }
    let located: Vec<(usize, Location)> = info
        .args()
        .enumerate()
        .filter_map(|(i, p)| p.entry_location.as_deref().and_then(abi::from_dwarf).map(|l| (i, l)))
        .collect();
    let agrees =
        |a: &abi::Assignment| located.iter().all(|(i, l)| a.args.get(*i).is_some_and(|ours| abi::agrees(ours, l)));
    if plain.as_ref().is_ok_and(&agrees) {
        return plain;
    }
    let Some(word) =
        (0..d.types.len()).find(|&i| d.types.get(i).is_some_and(|t| t.kind == Kind::Uintptr && t.size == 8))
    else {
        return plain;
    };
    for at in 0..=1.min(args.len()) {
        let mut with = args.to_vec();
        with.insert(at, word);
        if let Ok(mut a) = abi::assign(&d.types, &with, results) {
            a.args.remove(at);
            if agrees(&a) {
                return Ok(a);
            }
        }
    }
    plain
}

/// Builds a type from its Go name, for `:type` annotations.
fn parse_type(types: &mut TypeTable, name: &str) -> Option<TypeId> {
    let mk = |types: &mut TypeTable, size, kind| Some(types.add(GoType { name: name.to_string(), size, kind }));
    match name {
        "bool" => return mk(types, 1, Kind::Bool),
        "int8" => return mk(types, 1, Kind::Int),
        "int16" => return mk(types, 2, Kind::Int),
        "int32" | "rune" => return mk(types, 4, Kind::Int),
        "int" | "int64" => return mk(types, 8, Kind::Int),
        "uint8" | "byte" => return mk(types, 1, Kind::Uint),
        "uint16" => return mk(types, 2, Kind::Uint),
        "uint32" => return mk(types, 4, Kind::Uint),
        "uint" | "uint64" => return mk(types, 8, Kind::Uint),
        "uintptr" => return mk(types, 8, Kind::Uintptr),
        "float32" => return mk(types, 4, Kind::Float),
        "float64" => return mk(types, 8, Kind::Float),
        "complex64" => return mk(types, 8, Kind::Complex),
        "complex128" => return mk(types, 16, Kind::Complex),
        "string" => return mk(types, 16, Kind::String),
        "error" => return mk(types, 16, Kind::Interface { empty: false }),
        "any" | "interface{}" => return mk(types, 16, Kind::Interface { empty: true }),
        "unsafe.Pointer" => return mk(types, 8, Kind::UnsafePointer),
        _ => {}
    }
    if name.len() > 1 && name.starts_with('*') {
        return mk(types, 8, Kind::Pointer(None));
    }
    if let Some(elem) = name.strip_prefix("[]") {
        let e = parse_type(types, elem)
            .or_else(|| Some(types.add(GoType { name: elem.into(), size: 0, kind: Kind::Unknown })));
        return mk(types, 24, Kind::Slice(e));
    }
    if name.starts_with("map[") {
        return mk(types, 8, Kind::Map);
    }
    if name.starts_with("chan") {
        return mk(types, 8, Kind::Chan);
    }
    if name.starts_with("func") {
        return mk(types, 8, Kind::Func);
    }
    None
}

/// Where a (part of a) value is, while walking a field path.
#[derive(Clone, Debug)]
enum Place {
    /// Register pieces, offsets relative to the current value.
    Regs(Vec<RegPiece>),
    /// At SP + offset.
    Stack(i64),
}

/// A resolved expression.
#[derive(Clone, Debug)]
struct Access {
    root: Place,
    /// Kernel hops (see `gotel_shared::Fetch`); empty: the value is at `root` itself.
    hops: Vec<i64>,
    ty: TypeId,
    at_return: bool,
    is_result: bool,
    /// `len(...)` of the value.
    len: bool,
    /// Expression text so far, for messages.
    path: String,
}

struct Planner<'a> {
    func: &'a str,
    sig: &'a Signature,
    types: &'a TypeTable,
    limits: &'a Limits,
    plan: AttributePlan,
    /// Attributes asked for (for TooMany messages).
    count: usize,
}

impl Planner<'_> {
    fn describe_params(&self) -> String {
        crate::dwarf::describe_param_list(
            self.types,
            self.sig.params.iter().map(|p| (p.name.as_str(), p.ty, p.is_result)),
        )
    }

    fn param(&self, e: &Expr, attr: &str) -> Result<&SigParam, AttrError> {
        let found = match e {
            Expr::Param(name) => self.sig.params.iter().find(|p| &p.name == name),
            Expr::Arg(n) => self.sig.params.iter().find(|p| !p.is_result && p.index == *n),
            Expr::Ret(n) => self.sig.params.iter().find(|p| p.is_result && p.index == *n),
            _ => None,
        };
        if let Some(p) = found {
            return Ok(p);
        }
        if !self.sig.from_dwarf {
            return Err(match e {
                Expr::Param(_) => AttrError::NeedsDwarf {
                    attr: attr.into(),
                    func: self.func.into(),
                    why: "parameters can only be named by position with a type, like `arg0:int64` or `ret1:error`"
                        .into(),
                },
                _ => AttrError::NeedsDwarf {
                    attr: attr.into(),
                    func: self.func.into(),
                    why: format!("`{e}` needs a type, like `{e}:int64` or `{e}:string`"),
                },
            });
        }
        Err(match e {
            Expr::Param(name) => AttrError::UnknownParam {
                attr: attr.into(),
                func: self.func.into(),
                name: name.clone(),
                params: self.describe_params(),
            },
            _ => AttrError::OutOfRange {
                attr: attr.into(),
                func: self.func.into(),
                what: format!("`{e}` (positions count from 0, receiver first)"),
                params: self.describe_params(),
            },
        })
    }

    fn resolve(&self, e: &Expr, attr: &str) -> Result<Access, AttrError> {
        self.resolve_depth(e, attr, 0)
    }

    fn resolve_depth(&self, e: &Expr, attr: &str, depth: usize) -> Result<Access, AttrError> {
        if depth > 64 {
            return Err(AttrError::Location { attr: attr.into(), what: "expression nested too deeply".into() });
        }
        match e {
            Expr::Param(_) | Expr::Arg(_) | Expr::Ret(_) => {
                let p = self.param(e, attr)?;
                let location = p.location.clone().map_err(|what| match what.strip_prefix("missing:") {
                    Some(missing) => AttrError::NeedsEarlierTypes {
                        attr: attr.into(),
                        pos: e.to_string(),
                        missing: missing.to_string(),
                        example: missing.split(", ").next().unwrap_or("arg0").to_string(),
                    },
                    None => {
                        AttrError::Location { attr: attr.into(), what: format!("`{}` cannot be read: {what}", p.name) }
                    }
                })?;
                let root = match location {
                    Location::Registers(r) => Place::Regs(r),
                    Location::Stack { sp_offset } => Place::Stack(sp_offset),
                };
                Ok(Access {
                    root,
                    hops: Vec::new(),
                    ty: p.ty,
                    at_return: p.is_result,
                    is_result: p.is_result,
                    len: false,
                    path: if matches!(e, Expr::Param(_)) { p.name.clone() } else { e.to_string() },
                })
            }
            Expr::Typed(inner, tname) => {
                let acc = self.resolve_depth(inner, attr, depth + 1)?;
                if self.sig.from_dwarf {
                    let mut scratch = TypeTable::new();
                    let given = parse_type(&mut scratch, tname)
                        .ok_or_else(|| AttrError::BadType { attr: attr.into(), ty: tname.clone() })?;
                    let actual = self.types.underlying(acc.ty).map(|x| x.1);
                    let given_t = scratch.get(given);
                    let same = match (actual, given_t) {
                        (Some(a), Some(g)) => {
                            std::mem::discriminant(&a.kind) == std::mem::discriminant(&g.kind)
                                && (a.size == g.size || matches!(a.kind, Kind::Pointer(_) | Kind::Slice(_)))
                        }
                        _ => false,
                    };
                    if !same && self.types.name(Some(acc.ty)) != tname {
                        return Err(AttrError::TypeMismatch {
                            attr: attr.into(),
                            given: tname.clone(),
                            actual: self.types.name(Some(acc.ty)).to_string(),
                        });
                    }
                }
                Ok(acc)
            }
            Expr::Field(inner, field) => {
                if !self.sig.from_dwarf {
                    return Err(AttrError::NeedsDwarf {
                        attr: attr.into(),
                        func: self.func.into(),
                        why: "struct fields cannot be located; capture whole positional values with a type instead"
                            .into(),
                    });
                }
                let acc = self.resolve_depth(inner, attr, depth + 1)?;
                self.field(acc, field, attr)
            }
            Expr::Len(inner) => {
                let mut acc = self.resolve_depth(inner, attr, depth + 1)?;
                let (_, t) = self.underlying(&acc, attr)?;
                if !matches!(t.kind, Kind::String | Kind::Slice(_) | Kind::Map) {
                    return Err(AttrError::Unsupported {
                        attr: attr.into(),
                        path: acc.path.clone(),
                        ty: self.types.name(Some(acc.ty)).into(),
                        fix: "len() works on strings, slices and maps".into(),
                    });
                }
                acc.len = true;
                acc.path = format!("len({})", acc.path);
                Ok(acc)
            }
        }
    }

    fn underlying(&self, acc: &Access, attr: &str) -> Result<(TypeId, &GoType), AttrError> {
        self.types.underlying(acc.ty).ok_or_else(|| AttrError::Unsupported {
            attr: attr.into(),
            path: acc.path.clone(),
            ty: self.types.name(Some(acc.ty)).into(),
            fix: "DWARF does not describe this type".into(),
        })
    }

    /// `acc.field`, through one pointer if `acc` is a pointer to a struct (Go's auto-deref).
    fn field(&self, mut acc: Access, field: &str, attr: &str) -> Result<Access, AttrError> {
        if acc.len {
            return Err(AttrError::NotAStruct {
                attr: attr.into(),
                path: acc.path,
                ty: "length".into(),
                field: field.into(),
            });
        }
        let (_, t) = self.underlying(&acc, attr)?;
        let struct_ty = match &t.kind {
            Kind::Struct(_) => acc.ty,
            Kind::Pointer(Some(target))
                if self.types.underlying(*target).is_some_and(|(_, t)| matches!(t.kind, Kind::Struct(_))) =>
            {
                // Load the pointer: it becomes the base of a new hop.
                if acc.hops.is_empty() {
                    if let Place::Regs(pieces) = &acc.root {
                        let word = pieces.iter().find(|p| p.offset == 0).copied();
                        let Some(word) = word.filter(|w| matches!(w.reg, Reg::Int(_))) else {
                            return Err(self.unreadable(&acc, attr));
                        };
                        acc.root = Place::Regs(vec![word]);
                    }
                }
                acc.hops.push(0);
                if acc.hops.len() > MAX_HOPS {
                    return Err(AttrError::TooManyHops {
                        attr: attr.into(),
                        path: format!("{}.{field}", acc.path),
                        hops: acc.hops.len(),
                        max: MAX_HOPS,
                    });
                }
                *target
            }
            _ => {
                return Err(AttrError::NotAStruct {
                    attr: attr.into(),
                    path: acc.path,
                    ty: self.types.name(Some(acc.ty)).into(),
                    field: field.into(),
                })
            }
        };
        let Some((offset, fty)) = self.types.field(struct_ty, field) else {
            return Err(AttrError::UnknownField {
                attr: attr.into(),
                path: acc.path,
                ty: self.types.name(Some(struct_ty)).into(),
                field: field.into(),
                fields: self.types.describe_fields(struct_ty),
            });
        };
        let fty = fty.unwrap_or(0);
        let fsize = self.types.size(fty).unwrap_or(0);
        if let Some(last) = acc.hops.last_mut() {
            *last = last.saturating_add(offset as i64);
        } else {
            match &mut acc.root {
                Place::Stack(o) => *o = o.saturating_add(offset as i64),
                Place::Regs(pieces) => {
                    *pieces = pieces
                        .iter()
                        .filter(|p| p.offset >= offset && p.offset < offset.saturating_add(fsize.max(1)))
                        .map(|p| RegPiece { offset: p.offset - offset, ..*p })
                        .collect();
                }
            }
        }
        acc.ty = fty;
        acc.path = format!("{}.{field}", acc.path);
        Ok(acc)
    }

    fn unreadable(&self, acc: &Access, attr: &str) -> AttrError {
        AttrError::Location {
            attr: attr.into(),
            what: format!("`{}` is not fully available in integer registers", acc.path),
        }
    }

    /// The fetch and decode for a resolved expression.
    fn fetch(&self, acc: &Access, attr: &str) -> Result<(Fetch, Decode), AttrError> {
        let (_, t) = self.underlying(acc, attr)?;
        let unsupported = |fix: String| AttrError::Unsupported {
            attr: attr.into(),
            path: acc.path.clone(),
            ty: self.types.name(Some(acc.ty)).into(),
            fix,
        };
        let size = t.size.clamp(1, 8) as u8;
        let (kind, decode, words) = if acc.len {
            match t.kind {
                Kind::Map => (ValueKind::MapLen, Decode::MapLen, 1),
                _ => (ValueKind::Len, Decode::Len, 2),
            }
        } else {
            match &t.kind {
                Kind::Bool => (ValueKind::Int, Decode::Bool, 1),
                Kind::Int if t.size <= 8 => (ValueKind::Int, Decode::Int { size }, 1),
                Kind::Uint if t.size <= 8 => (ValueKind::Int, Decode::Uint { size }, 1),
                Kind::Uintptr => (ValueKind::Int, Decode::Uintptr, 1),
                Kind::Pointer(_) | Kind::UnsafePointer | Kind::Map | Kind::Chan | Kind::Func => {
                    (ValueKind::Int, Decode::Pointer, 1)
                }
                Kind::String => (ValueKind::String, Decode::String, 2),
                Kind::Slice(Some(e))
                    if self
                        .types
                        .underlying(*e)
                        .is_some_and(|(_, e)| e.size == 1 && matches!(e.kind, Kind::Uint | Kind::Int)) =>
                {
                    (ValueKind::String, Decode::Bytes, 2)
                }
                Kind::Slice(_) => return Err(unsupported(format!("capture its length with `len({})`", acc.path))),
                Kind::Interface { .. } => {
                    let is_error = self.types.name(Some(acc.ty)) == "error";
                    (ValueKind::Interface, if is_error { Decode::Error } else { Decode::Interface }, 2)
                }
                Kind::Float | Kind::Complex => {
                    return Err(AttrError::Float {
                        attr: attr.into(),
                        path: acc.path.clone(),
                        ty: self.types.name(Some(acc.ty)).into(),
                    })
                }
                Kind::Struct(_) => {
                    return Err(unsupported(format!(
                        "it is a struct; capture one of its fields ({})",
                        self.types.describe_fields(acc.ty)
                    )))
                }
                Kind::Array { .. } => return Err(unsupported("arrays are not supported".into())),
                _ => return Err(unsupported("its layout is unknown".into())),
            }
        };
        let mut f = Fetch {
            kind: kind as u8,
            size,
            at_return: u8::from(acc.at_return),
            max_len: self.limits.max_string.min(MAX_STR) as u16,
            ..Fetch::default()
        };
        let i32_of = |v: i64| {
            i32::try_from(v).map_err(|_| AttrError::Location {
                attr: attr.into(),
                what: format!("`{}` is too far away ({v} bytes)", acc.path),
            })
        };
        match &acc.root {
            Place::Stack(o) => {
                f.root = Root::Stack as u8;
                f.stack_offset = i32_of(*o)?;
            }
            Place::Regs(pieces) => {
                f.root = Root::Registers as u8;
                if pieces.iter().any(|p| matches!(p.reg, Reg::Float(_))) {
                    return Err(AttrError::Float {
                        attr: attr.into(),
                        path: acc.path.clone(),
                        ty: self.types.name(Some(acc.ty)).into(),
                    });
                }
                let need = if acc.hops.is_empty() { words } else { 1 };
                for w in 0..need {
                    let piece = pieces.iter().find(|p| p.offset == 8 * w as u64);
                    match piece {
                        Some(RegPiece { reg: Reg::Int(r), .. }) => f.regs[w] = *r,
                        _ => return Err(self.unreadable(acc, attr)),
                    }
                }
                f.nregs = need as u8;
            }
        }
        f.nhops = acc.hops.len() as u8;
        for (i, h) in acc.hops.iter().enumerate() {
            f.hops[i] = i32_of(*h)?;
        }
        Ok((f, decode))
    }

    fn add(&mut self, a: &AttrExpr, key: &str, acc: Access) -> Result<(), AttrError> {
        let (mut fetch, decode) = self.fetch(&acc, &a.text)?;
        if self.plan.fetches.len() >= MAX_FETCHES {
            return Err(AttrError::TooMany { attr: a.text.clone(), count: self.count, max: MAX_FETCHES });
        }
        fetch.slot = self.plan.slots.len() as u16;
        self.plan.fetches.push(fetch);
        let sets_error_status = acc.is_result && !acc.len && acc.hops.is_empty() && decode == Decode::Error;
        self.plan.slots.push(AttrSlot { key: shared_key(key), decode, sets_error_status });
        Ok(())
    }

    /// `SYMBOL(*)`: every receiver, parameter and result of a supported type, by name
    /// (`argN` / `retN` for unnamed ones); slices other than `[]byte` and maps as
    /// `NAME.len`. Others are skipped with a warning.
    fn all(&mut self) -> Result<(), AttrError> {
        if !self.sig.from_dwarf {
            self.plan.warnings.push(
                "no DWARF: `(*)` captures nothing; list positional attributes with types instead, like `id=arg0:int64`"
                    .into(),
            );
            return Ok(());
        }
        let params = self.sig.params.clone();
        let mut skipped = Vec::new();
        for p in &params {
            let positional = if p.is_result { Expr::Ret(p.index) } else { Expr::Arg(p.index) };
            let unnamed = p.name.starts_with('~') || p.name == "_" || p.name.is_empty();
            let key = if unnamed { positional.to_string() } else { p.name.clone() };
            let mut expr = positional.clone();
            let mut key = key;
            if let Some((_, t)) = self.types.underlying(p.ty) {
                let bytes = matches!(t.kind, Kind::Slice(Some(e)) if self.types.size(e) == Some(1));
                if matches!(t.kind, Kind::Map) || (matches!(t.kind, Kind::Slice(_)) && !bytes) {
                    expr = Expr::Len(Box::new(positional));
                    key = format!("{key}.len");
                }
            }
            let text = format!("{key}={expr}");
            let a = AttrExpr { key: key.clone(), expr: expr.clone(), text: text.clone() };
            let r = self.resolve(&expr, &text).and_then(|acc| self.fetch(&acc, &text).map(|_| acc));
            match r {
                Ok(acc) => {
                    if self.plan.slots.len() >= self.limits.max_attributes || self.plan.fetches.len() >= MAX_FETCHES {
                        skipped.push(format!("{} (limit)", p.name));
                        continue;
                    }
                    self.count += 1;
                    self.add(&a, &key, acc)?;
                }
                Err(e) => skipped.push(format!("{} {} ({})", p.name, self.types.name(Some(p.ty)), short_reason(&e))),
            }
        }
        if !skipped.is_empty() {
            self.plan.warnings.push(format!("(*) skips {}", skipped.join(", ")));
        }
        Ok(())
    }

    /// With DWARF, a function whose last result is an `error` gets a slot that sets the span
    /// status, unless one is there already.
    fn auto_error_status(&mut self) {
        self.plan.warnings.extend(self.sig.warnings.iter().cloned());
        if !self.sig.from_dwarf || self.plan.slots.iter().any(|s| s.sets_error_status) {
            return;
        }
        let Some(last) = self.sig.params.iter().rev().find(|p| p.is_result) else {
            return;
        };
        if self.types.name(Some(last.ty)) != "error" {
            return;
        }
        let text = format!("error.type=ret{}", last.index);
        let Ok(acc) = self.resolve(&Expr::Ret(last.index), &text) else {
            return;
        };
        let Ok((mut fetch, _)) = self.fetch(&acc, &text) else {
            return;
        };
        if self.plan.fetches.len() >= MAX_FETCHES {
            self.plan
                .warnings
                .push(format!("no room to capture the error result: at most {MAX_FETCHES} values per probe"));
            return;
        }
        fetch.slot = self.plan.slots.len() as u16;
        self.plan.fetches.push(fetch);
        self.plan.slots.push(AttrSlot { key: "error.type".into(), decode: Decode::ErrorType, sets_error_status: true });
    }
}

fn short_reason(e: &AttrError) -> &'static str {
    match e {
        AttrError::Float { .. } => "in an XMM register",
        AttrError::Unsupported { .. } => "unsupported type",
        _ => "not locatable",
    }
}

#[cfg(test)]
mod tests;
