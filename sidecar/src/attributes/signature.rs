//! A function's parameters and results with their locations at the probes: the ground every
//! attribute expression starts from.
//!
//! Two sources, because a stripped binary has no DWARF:
//! - [`Signature::from_dwarf`]: every parameter with its DWARF type, placed by Go's register
//!   ABI (`abi::assign`) and cross-checked against the compiler's own entry location. Go up
//!   to 1.21 leaves blank `_` parameters out of DWARF, which shifts the parameters after them;
//!   the compiler's location then wins (with a warning) and what cannot be trusted is marked
//!   [`Unlocated::Uncertain`]. Shaped generic functions take a hidden dictionary word that
//!   DWARF does not list ([`assign_with_hidden_dictionary`]).
//! - [`Signature::from_annotations`]: without DWARF, only the `argN:T` / `retN:T` types the
//!   user declared. The ABI places a value by the types of everything before it, so only
//!   the typed prefix is located; a later position says which earlier ones lack a type
//!   ([`Unlocated::MissingTypes`]), so the error can tell the user what to declare.
//!
//! A parameter that cannot be located is not an error here: it only fails when an
//! attribute reads it, with the reason kept as a typed [`Unlocated`].

use crate::abi::{self, Location};
use crate::dwarf::types::{GoType, Kind, TypeId, TypeTable};
use crate::dwarf::{DwarfInfo, FunctionInfo};
use crate::spec::{AttrSpec, Expr};

use super::{AttrError, AttrErrorKind};

/// Highest `argN` / `retN` position accepted in a type annotation.
pub(super) const MAX_POSITION: usize = 64;

/// A parameter or result as the planner sees it.
#[derive(Debug)]
pub(super) struct SigParam {
    pub name: String,
    pub ty: TypeId,
    pub is_result: bool,
    /// Position among arguments (receiver first) or among results.
    pub index: usize,
    /// Where it is at the entry (arguments) or the RETs (results), or why that is not known.
    pub location: Result<Location, Unlocated>,
}

/// Why a parameter's location is not known. It becomes an error only if an attribute
/// reads the parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unlocated {
    /// The ABI assignment has no entry for this parameter.
    #[error("no ABI location")]
    NoAbiLocation,
    /// The ABI could not place the function's parameters (the message of `abi::AbiError`).
    #[error("its location cannot be computed: {0}")]
    Abi(String),
    /// DWARF does not list every parameter (Go <= 1.21 omits blank `_` ones), and this one
    /// has no entry location of its own.
    #[error(
        "its location is uncertain: DWARF does not list every parameter of this function \
         (Go before 1.22 omits blank `_` parameters)"
    )]
    Uncertain,
    /// Without DWARF, a stack-passed result: its offset depends on every argument.
    #[error(
        "this result is passed on the stack, and its offset depends on every argument of the \
         function, which gotel cannot know without DWARF"
    )]
    StackResultWithoutDwarf,
    /// Without DWARF, the earlier positions (e.g. `arg0`, `arg2`) that have no declared type.
    #[error("its location depends on the types of {}, which are not declared", .0.join(", "))]
    MissingTypes(Vec<String>),
}

/// The function's signature with locations: complete (from DWARF) or the typed prefix
/// the user declared.
#[derive(Debug)]
pub(super) struct Signature {
    pub params: Vec<SigParam>,
    pub from_dwarf: bool,
    /// Warnings from building the signature (DWARF/ABI disagreements).
    pub warnings: Vec<String>,
}

impl Signature {
    pub fn from_dwarf(info: &FunctionInfo, d: &DwarfInfo) -> Signature {
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
                    list.get(index).cloned().ok_or(Unlocated::NoAbiLocation)
                }
                Err(e) => Err(Unlocated::Abi(e.to_string())),
            };
            // Only arguments are cross-checked. A result's location at entry is where the body
            // keeps it (Go 1.27 puts a named `err` result in a stack slot), not the registers
            // it is returned in at RET. Compiler-internal parameters (`.dict` of generic
            // functions) are never captured, and Go 1.27's DWARF gives `.dict` its spill slot.
            // Unnamed parameters (`~p0`, never used by the body) get their stack spill slot as
            // their only location, though they arrive in registers like the others.
            let from_compiler = p
                .entry_location
                .as_deref()
                .and_then(abi::from_dwarf)
                .filter(|_| !p.is_result && !p.name.starts_with('.') && !p.name.starts_with("~p"));
            let location = match (computed, from_compiler) {
                (Ok(ours), Some(theirs)) if !abi::agrees(&ours, &theirs) => {
                    disagreement = true;
                    warnings.push(format!(
                        "the register ABI places `{}` in {ours} but the compiler's DWARF says {theirs}; using DWARF's",
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
                    sp.location = Err(Unlocated::Uncertain);
                }
            }
        }
        Signature { params, from_dwarf: true, warnings }
    }

    /// Without DWARF: the types declared with `argN:T` / `retN:T`.
    pub fn from_annotations(attrs: &AttrSpec, types: &mut TypeTable) -> Result<Signature, AttrError> {
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
                let fail = |kind| AttrError { attr: a.text.clone(), kind };
                if n > MAX_POSITION {
                    return Err(fail(AttrErrorKind::PositionTooLarge { position: n }));
                }
                let ty = parse_type(types, tname).ok_or_else(|| fail(AttrErrorKind::BadType { ty: tname.clone() }))?;
                if slot.len() <= n {
                    slot.resize(n + 1, None);
                }
                match &slot[n] {
                    Some((prev, _)) if prev != tname => {
                        return Err(fail(AttrErrorKind::ConflictingTypes {
                            what: inner.to_string(),
                            a: prev.clone(),
                            b: tname.clone(),
                        }))
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
        // Not tied to one attribute: the declared types as a whole cannot be placed.
        let assignment =
            abi::assign(types, &pa, &pr).map_err(|e| AttrError { attr: String::new(), kind: AttrErrorKind::Abi(e) })?;
        let mut params = Vec::new();
        for (is_result, list, locs) in [(false, &args, &assignment.args), (true, &results, &assignment.results)] {
            let positional = |i: usize| format!("{}{i}", if is_result { "ret" } else { "arg" });
            for (index, entry) in list.iter().enumerate() {
                let Some((_, ty)) = entry else { continue };
                let location = match locs.get(index) {
                    Some(Location::Stack { .. }) if is_result => Err(Unlocated::StackResultWithoutDwarf),
                    Some(l) => Ok(l.clone()),
                    None => Err(Unlocated::MissingTypes(
                        (0..index).filter(|&i| list.get(i).is_none_or(|x| x.is_none())).map(positional).collect(),
                    )),
                };
                params.push(SigParam { name: positional(index), ty: *ty, is_result, index, location });
            }
        }
        Ok(Signature { params, from_dwarf: false, warnings: Vec::new() })
    }

    /// "name type" of each parameter and result, for error messages.
    pub fn describe(&self, types: &TypeTable) -> String {
        crate::dwarf::describe_param_list(types, self.params.iter().map(|p| (p.name.as_str(), p.ty, p.is_result)))
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
pub(super) fn parse_type(types: &mut TypeTable, name: &str) -> Option<TypeId> {
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
