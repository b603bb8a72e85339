//! Resolves the attributes asked for one function (`spec::AttrSpec`) into kernel fetch
//! instructions (`gotel_shared::Fetch`) plus the userspace recipe to decode each captured
//! value (`AttrSlot`).
//!
//! This module is the contract with the rest of gotel: [`plan_function`] gives an
//! [`AttributePlan`] or one [`AttrError`]; `values::decode` applies each slot's [`Decode`].
//! The work is done in three steps, one file each:
//! - `signature`: the function's parameters and where each is at the probes, from DWARF and
//!   Go's register ABI (`abi::assign`), or without DWARF from the user's type annotations;
//! - `resolve`: an expression (`o.Customer.Name`, `len(xs)`, `arg1:int`) walked from its
//!   parameter to a location plus pointer hops;
//! - `encode`: the final type picks the `ValueKind` the kernel reads and the `Decode`
//!   userspace applies.
//!
//! Errors are typed ([`AttrErrorKind`]); the steps return a kind and the planner here adds
//! the attribute's text, so every message starts with the attribute it is about.
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
//! (text), `len()` of string / slice / map, pointers / chans / funcs (hex address; a map itself is
//! refused with `len()` as the remedy, as its address tells nothing),
//! `error` (message for the standard error types, else the dynamic type name), other
//! interfaces (dynamic type name). Floats and complex numbers live in XMM registers that
//! uprobes cannot read: an error names the parameter (stack-passed floats are also refused,
//! for one simple rule). Structs and arrays must be narrowed to a field. A path follows at
//! most `MAX_HOPS` pointers.
//!
//! ## Error status
//! Every `error`-typed *result* slot sets the span status to ERROR when non-nil. With DWARF,
//! a function whose last result is `error` gets such a slot even when nobody asked for it
//! (key `error.type`, the dynamic type of the error, per OpenTelemetry semantic
//! conventions), so calls that fail carry status ERROR with the message.

mod encode;
mod resolve;
mod signature;

use std::fmt;

use gotel_shared::{Fetch, MAX_FETCHES};

use crate::abi::AbiError;
use crate::dwarf::types::{Kind, TypeTable};
use crate::dwarf::{DwarfInfo, FunctionInfo};
use crate::spec::{AttrExpr, AttrSpec, Expr};

use encode::encode;
use resolve::{Access, Resolver};
use signature::Signature;
pub use signature::Unlocated;

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
    /// Internal (built-in spans): the payload's bytes as lowercase hex (an IP address).
    Hex,
    /// Internal (built-in spans): an interface's dynamic type, a NUL, and its first field read
    /// as a string (`os.SyscallError.Syscall`, an error's message).
    TypeAndText,
}

/// Why an attribute cannot be planned: the attribute's text (`key=expr` as written) and
/// what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct AttrError {
    /// The attribute as the user wrote it; empty when the error is not about one attribute.
    pub attr: String,
    pub kind: AttrErrorKind,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            kind if self.attr.is_empty() => write!(f, "{kind}"),
            kind @ AttrErrorKind::TooMany { .. } => write!(f, "{kind} (first one over: `{}`)", self.attr),
            kind => write!(f, "`{}`: {kind}", self.attr),
        }
    }
}

impl std::error::Error for AttrError {}

/// What is wrong with an attribute. Each message names the thing and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttrErrorKind {
    #[error(
        "{func} has no parameter or result named `{name}`; it has {params}. Use one of these names, or argN / retN"
    )]
    UnknownParam { func: String, name: String, params: String },
    #[error("{func} has no `{position}` (positions count from 0, receiver first); it has {params}")]
    OutOfRange { func: String, position: String, params: String },
    #[error("`{path}` is a {ty} without a field `{field}`; its fields are: {fields}")]
    UnknownField { path: String, ty: String, field: String, fields: String },
    #[error("`{path}` is a {ty}, not a struct or a pointer to a struct, so `.{field}` cannot be read")]
    NotAStruct { path: String, ty: String, field: String },
    #[error("`{path}` ({ty}) is passed in a floating-point (XMM) register, which uprobes cannot read; remove this attribute")]
    Float { path: String, ty: String },
    #[error("`{path}` has type {ty}, which cannot be captured: {fix}")]
    Unsupported { path: String, ty: String, fix: Remedy },
    #[error("`{path}` follows {hops} pointers, at most {max} are supported; shorten the field path")]
    TooManyHops { path: String, hops: usize, max: usize },
    #[error("{count} values to capture, but one probe captures at most {max}; remove some attributes")]
    TooMany { count: usize, max: usize },
    #[error("{func} has no DWARF debug information (built with -ldflags=-w?), so {why}")]
    NeedsDwarf { func: String, why: NoDwarf },
    #[error(
        "without DWARF the location of {pos} depends on the types of {list}; declare them in this entry, \
         e.g. `_={example}:TYPE` (key `_` declares a type without capturing it)",
        list = .missing.join(", "),
        example = .missing.first().map_or("arg0", String::as_str)
    )]
    NeedsEarlierTypes { pos: String, missing: Vec<String> },
    #[error("unknown type `{ty}`; use a Go type like int64, uint8, bool, string, []byte, error, any, *T")]
    BadType { ty: String },
    #[error("{what} is given two different types, `{a}` and `{b}`")]
    ConflictingTypes { what: String, a: String, b: String },
    #[error("the annotation `:{given}` does not match the type DWARF gives, {actual}; remove the annotation")]
    TypeMismatch { given: String, actual: String },
    #[error("position {position} is too large; at most {max} is supported", max = signature::MAX_POSITION)]
    PositionTooLarge { position: usize },
    #[error("expression nested too deeply")]
    TooDeep,
    #[error("`{name}` cannot be read: {why}")]
    Unreadable { name: String, why: Unlocated },
    #[error("`{path}` is not fully available in integer registers")]
    NotInIntegerRegisters { path: String },
    #[error("`{path}` is too far away ({offset} bytes)")]
    TooFar { path: String, offset: i64 },
    #[error("the declared types cannot be placed: {0}")]
    Abi(AbiError),
}

/// Why a value cannot be captured, and what to capture instead ([`AttrErrorKind::Unsupported`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Remedy {
    #[error("len() works on strings, slices and maps")]
    LenOfOther,
    #[error("DWARF does not describe this type")]
    UndescribedType,
    #[error("capture its length with `len({path})`")]
    SliceLength { path: String },
    #[error("it is a struct; capture one of its fields ({fields})")]
    StructField { fields: String },
    #[error("arrays are not supported")]
    Array,
    #[error("its layout is unknown")]
    UnknownLayout,
}

/// What cannot be done without DWARF ([`AttrErrorKind::NeedsDwarf`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoDwarf {
    #[error("parameters can only be named by position with a type, like `arg0:int64` or `ret1:error`")]
    NamedParameter,
    #[error("`{0}` needs a type, like `{0}:int64` or `{0}:string`")]
    UntypedPosition(String),
    #[error("struct fields cannot be located; capture whole positional values with a type instead")]
    Field,
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
    let mut local = TypeTable::new();
    let (sig, types) = match (info, dwarf) {
        (Some(info), Some(d)) => (Signature::from_dwarf(info, d), &d.types),
        _ => (Signature::from_annotations(attrs, &mut local)?, &local),
    };
    let mut planner = Planner {
        resolver: Resolver { func: func_name, sig: &sig, types },
        limits,
        plan: AttributePlan::default(),
        count: 0,
    };
    match attrs {
        AttrSpec::None => {}
        AttrSpec::All => planner.all(),
        AttrSpec::List(list) => planner.list(list)?,
    }
    planner.auto_error_status();
    Ok(planner.plan)
}

/// Fills an [`AttributePlan`]: resolves and encodes each attribute, applies the limits.
struct Planner<'a> {
    resolver: Resolver<'a>,
    limits: &'a Limits,
    plan: AttributePlan,
    /// Attributes asked for (for TooMany messages).
    count: usize,
}

impl Planner<'_> {
    /// Where the value of `e` is and how the kernel reads it.
    fn capture(&self, e: &Expr) -> Result<(Access, Fetch, Decode), AttrErrorKind> {
        let acc = self.resolver.resolve(e)?;
        let (fetch, decode) = encode(self.resolver.types, self.limits, &acc)?;
        Ok((acc, fetch, decode))
    }

    fn push(&mut self, key: &str, acc: &Access, mut fetch: Fetch, decode: Decode) {
        fetch.slot = self.plan.slots.len() as u16;
        self.plan.fetches.push(fetch);
        let sets_error_status = acc.is_result && !acc.len && acc.hops.is_empty() && decode == Decode::Error;
        self.plan.slots.push(AttrSlot { key: shared_key(key), decode, sets_error_status });
    }

    /// `SYMBOL(key=expr, ...)`: every attribute or the first error. Keys `_` only declare types.
    fn list(&mut self, list: &[AttrExpr]) -> Result<(), AttrError> {
        for a in list.iter().filter(|a| a.key != "_") {
            self.count += 1;
            if self.plan.slots.len() >= self.limits.max_attributes {
                self.plan.warnings.push(format!(
                    "`{}` dropped: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT is {}",
                    a.text, self.limits.max_attributes
                ));
                continue;
            }
            let error = |kind| AttrError { attr: a.text.clone(), kind };
            let (acc, fetch, decode) = self.capture(&a.expr).map_err(error)?;
            if self.plan.fetches.len() >= MAX_FETCHES {
                return Err(error(AttrErrorKind::TooMany { count: self.count, max: MAX_FETCHES }));
            }
            self.push(&a.key, &acc, fetch, decode);
        }
        Ok(())
    }

    /// `SYMBOL(*)`: every receiver, parameter and result of a supported type, by name
    /// (`argN` / `retN` for unnamed ones); slices other than `[]byte` and maps as
    /// `NAME.len`. Others are skipped with a warning.
    fn all(&mut self) {
        let (sig, types) = (self.resolver.sig, self.resolver.types);
        if !sig.from_dwarf {
            self.plan.warnings.push(
                "no DWARF: `(*)` captures nothing; list positional attributes with types instead, like `id=arg0:int64`"
                    .into(),
            );
            return;
        }
        let mut skipped = Vec::new();
        for p in &sig.params {
            let positional = if p.is_result { Expr::Ret(p.index) } else { Expr::Arg(p.index) };
            let unnamed = p.name.starts_with('~') || p.name == "_" || p.name.is_empty();
            let mut key = if unnamed { positional.to_string() } else { p.name.clone() };
            let mut expr = positional.clone();
            if let Some((_, t)) = types.underlying(p.ty) {
                let bytes = matches!(t.kind, Kind::Slice(Some(e)) if types.size(e) == Some(1));
                if matches!(t.kind, Kind::Map) || (matches!(t.kind, Kind::Slice(_)) && !bytes) {
                    expr = Expr::Len(Box::new(positional));
                    key = format!("{key}.len");
                }
            }
            match self.capture(&expr) {
                Ok(_)
                    if self.plan.slots.len() >= self.limits.max_attributes
                        || self.plan.fetches.len() >= MAX_FETCHES =>
                {
                    skipped.push(format!("{} (limit)", p.name))
                }
                Ok((acc, fetch, decode)) => {
                    self.count += 1;
                    self.push(&key, &acc, fetch, decode);
                }
                Err(e) => skipped.push(format!("{} {} ({})", p.name, types.name(Some(p.ty)), short_reason(&e))),
            }
        }
        if !skipped.is_empty() {
            self.plan.warnings.push(format!("(*) skips {}", skipped.join(", ")));
        }
    }

    /// With DWARF, a function whose last result is an `error` gets a slot that sets the span
    /// status, unless one is there already.
    fn auto_error_status(&mut self) {
        let sig = self.resolver.sig;
        self.plan.warnings.extend(sig.warnings.iter().cloned());
        if !sig.from_dwarf || self.plan.slots.iter().any(|s| s.sets_error_status) {
            return;
        }
        let Some(last) = sig.params.iter().rev().find(|p| p.is_result) else {
            return;
        };
        if self.resolver.types.name(Some(last.ty)) != "error" {
            return;
        }
        let Ok((_, mut fetch, _)) = self.capture(&Expr::Ret(last.index)) else {
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

/// Why `(*)` skipped a parameter, in a few words for its warning.
fn short_reason(e: &AttrErrorKind) -> &'static str {
    match e {
        AttrErrorKind::Float { .. } => "in an XMM register",
        AttrErrorKind::Unsupported { .. } => "unsupported type",
        _ => "not locatable",
    }
}

#[cfg(test)]
mod tests;
