//! Field-path resolution: an attribute expression (`o.Customer.Addr.City`, `len(s.items)`,
//! `arg1:int`) becomes an [`Access`], where the value is at the probe and how many pointers
//! the kernel must follow to reach it.
//!
//! - The root parameter's location comes from the [`Signature`].
//! - A field of a struct *value* only narrows the location: the registers that hold that
//!   field, or a larger stack offset.
//! - A field through a *pointer* (Go's auto-deref) adds a kernel hop: the pointer is loaded
//!   and the field's offset applies to what it points at (at most `MAX_HOPS` per path).
//! - `len(x)` and `x:T` mark or check the value; which kernel read and which decoding the
//!   final type needs is `encode`'s business.
//!
//! Errors are [`AttrErrorKind`]s without the attribute's text; the planner adds it.

use gotel_shared::MAX_HOPS;

use crate::abi::{Location, Reg, RegPiece};
use crate::dwarf::types::{GoType, Kind, TypeId, TypeTable};
use crate::spec::Expr;

use super::signature::{parse_type, SigParam, Signature, Unlocated};
use super::{AttrErrorKind, NoDwarf, Remedy};

/// Bound on the nesting of `len(...)`, `.field` and `:type` in one expression.
const MAX_DEPTH: usize = 64;

/// Where a (part of a) value is, while walking a field path.
#[derive(Clone, Debug)]
pub(super) enum Place {
    /// Register pieces, offsets relative to the current value.
    Regs(Vec<RegPiece>),
    /// At SP + offset.
    Stack(i64),
}

/// A resolved expression.
#[derive(Clone, Debug)]
pub(super) struct Access {
    pub root: Place,
    /// Kernel hops (see `gotel_shared::Fetch`); empty: the value is at `root` itself.
    pub hops: Vec<i64>,
    pub ty: TypeId,
    pub at_return: bool,
    pub is_result: bool,
    /// `len(...)` of the value.
    pub len: bool,
    /// Expression text so far, for messages.
    pub path: String,
}

impl Access {
    /// The value's type with names resolved, or an error naming the path.
    pub fn underlying<'t>(&self, types: &'t TypeTable) -> Result<(TypeId, &'t GoType), AttrErrorKind> {
        types.underlying(self.ty).ok_or_else(|| self.unsupported(types, Remedy::UndescribedType))
    }

    pub fn unsupported(&self, types: &TypeTable, fix: Remedy) -> AttrErrorKind {
        AttrErrorKind::Unsupported { path: self.path.clone(), ty: types.name(Some(self.ty)).into(), fix }
    }

    pub fn float(&self, types: &TypeTable) -> AttrErrorKind {
        AttrErrorKind::Float { path: self.path.clone(), ty: types.name(Some(self.ty)).into() }
    }

    pub fn not_in_integer_registers(&self) -> AttrErrorKind {
        AttrErrorKind::NotInIntegerRegisters { path: self.path.clone() }
    }
}

/// Resolves expressions against one function's signature.
pub(super) struct Resolver<'a> {
    pub func: &'a str,
    pub sig: &'a Signature,
    pub types: &'a TypeTable,
}

impl Resolver<'_> {
    pub fn resolve(&self, e: &Expr) -> Result<Access, AttrErrorKind> {
        self.resolve_depth(e, 0)
    }

    fn resolve_depth(&self, e: &Expr, depth: usize) -> Result<Access, AttrErrorKind> {
        if depth > MAX_DEPTH {
            return Err(AttrErrorKind::TooDeep);
        }
        match e {
            Expr::Param(_) | Expr::Arg(_) | Expr::Ret(_) => self.root(e),
            Expr::Typed(inner, tname) => {
                let acc = self.resolve_depth(inner, depth + 1)?;
                if self.sig.from_dwarf {
                    self.check_annotation(&acc, tname)?;
                }
                Ok(acc)
            }
            Expr::Field(inner, field) => {
                if !self.sig.from_dwarf {
                    return Err(AttrErrorKind::NeedsDwarf { func: self.func.into(), why: NoDwarf::Field });
                }
                let acc = self.resolve_depth(inner, depth + 1)?;
                self.field(acc, field)
            }
            Expr::Len(inner) => {
                let mut acc = self.resolve_depth(inner, depth + 1)?;
                let (_, t) = acc.underlying(self.types)?;
                if !matches!(t.kind, Kind::String | Kind::Slice(_) | Kind::Map) {
                    return Err(acc.unsupported(self.types, Remedy::LenOfOther));
                }
                acc.len = true;
                acc.path = format!("len({})", acc.path);
                Ok(acc)
            }
        }
    }

    /// A parameter (`name`, `argN`, `retN`) where it is at the probe.
    fn root(&self, e: &Expr) -> Result<Access, AttrErrorKind> {
        let p = self.param(e)?;
        let location = match &p.location {
            Ok(l) => l.clone(),
            Err(Unlocated::MissingTypes(missing)) => {
                return Err(AttrErrorKind::NeedsEarlierTypes { pos: e.to_string(), missing: missing.clone() })
            }
            Err(why) => return Err(AttrErrorKind::Unreadable { name: p.name.clone(), why: why.clone() }),
        };
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

    fn param(&self, e: &Expr) -> Result<&SigParam, AttrErrorKind> {
        let params = &self.sig.params;
        let found = match e {
            Expr::Param(name) => params.iter().find(|p| &p.name == name),
            Expr::Arg(n) => params.iter().find(|p| !p.is_result && p.index == *n),
            Expr::Ret(n) => params.iter().find(|p| p.is_result && p.index == *n),
            _ => None,
        };
        if let Some(p) = found {
            return Ok(p);
        }
        let func = self.func.into();
        if !self.sig.from_dwarf {
            let why = match e {
                Expr::Param(_) => NoDwarf::NamedParameter,
                _ => NoDwarf::UntypedPosition(e.to_string()),
            };
            return Err(AttrErrorKind::NeedsDwarf { func, why });
        }
        let params = self.sig.describe(self.types);
        Err(match e {
            Expr::Param(name) => AttrErrorKind::UnknownParam { func, name: name.clone(), params },
            _ => AttrErrorKind::OutOfRange { func, position: e.to_string(), params },
        })
    }

    /// `x:T` with DWARF: the annotation must agree with DWARF's type.
    fn check_annotation(&self, acc: &Access, tname: &str) -> Result<(), AttrErrorKind> {
        let mut scratch = TypeTable::new();
        let given = parse_type(&mut scratch, tname).ok_or_else(|| AttrErrorKind::BadType { ty: tname.into() })?;
        let actual = self.types.underlying(acc.ty).map(|x| x.1);
        let same = match (actual, scratch.get(given)) {
            (Some(a), Some(g)) => {
                std::mem::discriminant(&a.kind) == std::mem::discriminant(&g.kind)
                    && (a.size == g.size || matches!(a.kind, Kind::Pointer(_) | Kind::Slice(_)))
            }
            _ => false,
        };
        let actual_name = self.types.name(Some(acc.ty));
        if !same && actual_name != tname {
            return Err(AttrErrorKind::TypeMismatch { given: tname.into(), actual: actual_name.into() });
        }
        Ok(())
    }

    /// `acc.field`, through one pointer if `acc` is a pointer to a struct (Go's auto-deref).
    fn field(&self, mut acc: Access, field: &str) -> Result<Access, AttrErrorKind> {
        let not_a_struct =
            |acc: Access, ty: String| AttrErrorKind::NotAStruct { path: acc.path, ty, field: field.into() };
        if acc.len {
            return Err(not_a_struct(acc, "length".into()));
        }
        let (_, t) = acc.underlying(self.types)?;
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
                            return Err(acc.not_in_integer_registers());
                        };
                        acc.root = Place::Regs(vec![word]);
                    }
                }
                acc.hops.push(0);
                if acc.hops.len() > MAX_HOPS {
                    return Err(AttrErrorKind::TooManyHops {
                        path: format!("{}.{field}", acc.path),
                        hops: acc.hops.len(),
                        max: MAX_HOPS,
                    });
                }
                *target
            }
            _ => {
                let ty = self.types.name(Some(acc.ty)).into();
                return Err(not_a_struct(acc, ty));
            }
        };
        let Some((offset, fty)) = self.types.field(struct_ty, field) else {
            return Err(AttrErrorKind::UnknownField {
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
}
