//! The Go type model gotel needs to read values: sizes, kinds, struct fields with offsets,
//! pointer targets and element types. Built from DWARF by `dwarf::load`, or by hand from a
//! `:type` annotation when the binary has no DWARF (`attributes`).
//!
//! Types live in a [`TypeTable`] arena and refer to each other by [`TypeId`], so
//! self-referential types (`type Node struct { Next *Node }`) need no reference cycles.
//! Every walk over types is bounded by [`MAX_TYPE_DEPTH`], so malformed DWARF can never
//! make us recurse without end.

/// Index of a type in its [`TypeTable`].
pub type TypeId = usize;

/// Bound on nesting for every recursive walk over types (typedef chains, struct nesting).
pub const MAX_TYPE_DEPTH: usize = 32;

/// A Go type, as far as reading values needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoType {
    /// The Go name, e.g. `int64`, `main.UserID`, `*main.Order`, `[]uint8`, `error`.
    pub name: String,
    /// `unsafe.Sizeof`; for a typedef the size of its target (filled when resolved).
    pub size: u64,
    pub kind: Kind,
}

/// The kinds of Go types, after Go's `reflect.Kind` (DWARF attribute `DW_AT_go_kind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Signed integer of `size` bytes.
    Int,
    /// Unsigned integer of `size` bytes (uintptr excluded).
    Uint,
    Uintptr,
    Float,
    Complex,
    /// `{str *uint8; len int}`.
    String,
    /// `*T`; `None` when the target is unknown (`unsafe.Pointer`-like).
    Pointer(Option<TypeId>),
    UnsafePointer,
    /// `{array *T; len int; cap int}` with the element type.
    Slice(Option<TypeId>),
    Array {
        elem: Option<TypeId>,
        len: u64,
    },
    Struct(Vec<Field>),
    /// `{tab/type, data}`: `empty` is `interface{}` / `any` (first word is a type pointer,
    /// not an itab).
    Interface {
        empty: bool,
    },
    /// A pointer to the runtime map header.
    Map,
    Chan,
    /// A pointer to a closure.
    Func,
    /// A named alias of another type in the table (Go DWARF emits `error`, named structs and
    /// interfaces as typedefs). Use [`TypeTable::underlying`] to see through it.
    Typedef(Option<TypeId>),
    /// Something gotel cannot interpret.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// Byte offset in the struct.
    pub offset: u64,
    pub ty: Option<TypeId>,
    /// An embedded field (`struct { Base; X int }`): its fields are promoted.
    pub embedded: bool,
}

/// Arena of types.
#[derive(Clone, Debug, Default)]
pub struct TypeTable {
    types: Vec<GoType>,
}

impl TypeTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, t: GoType) -> TypeId {
        self.types.push(t);
        self.types.len() - 1
    }

    pub fn get(&self, id: TypeId) -> Option<&GoType> {
        self.types.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: TypeId) -> Option<&mut GoType> {
        self.types.get_mut(id)
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type behind any typedefs (bounded). `None` for a dangling id or a typedef loop.
    pub fn underlying(&self, id: TypeId) -> Option<(TypeId, &GoType)> {
        let mut cur = id;
        for _ in 0..MAX_TYPE_DEPTH {
            let t = self.types.get(cur)?;
            match t.kind {
                Kind::Typedef(Some(next)) => cur = next,
                Kind::Typedef(None) => return None,
                _ => return Some((cur, t)),
            }
        }
        None
    }

    /// Name of a type for messages (`?` when unknown).
    pub fn name(&self, id: Option<TypeId>) -> &str {
        id.and_then(|i| self.get(i)).map(|t| t.name.as_str()).unwrap_or("?")
    }

    /// Size of a type, seeing through typedefs.
    pub fn size(&self, id: TypeId) -> Option<u64> {
        self.underlying(id).map(|(_, t)| t.size)
    }

    /// Alignment on amd64 (Go's rules: base types by size, complex by half, composites by
    /// their strictest member). `None` for unknown types.
    pub fn align(&self, id: TypeId) -> Option<u64> {
        self.align_depth(id, 0)
    }

    fn align_depth(&self, id: TypeId, depth: usize) -> Option<u64> {
        if depth > MAX_TYPE_DEPTH {
            return None;
        }
        let (_, t) = self.underlying(id)?;
        Some(match &t.kind {
            Kind::Bool | Kind::Int | Kind::Uint | Kind::Float => t.size.clamp(1, 8),
            Kind::Complex => (t.size / 2).clamp(1, 8),
            Kind::Uintptr
            | Kind::String
            | Kind::Pointer(_)
            | Kind::UnsafePointer
            | Kind::Slice(_)
            | Kind::Interface { .. }
            | Kind::Map
            | Kind::Chan
            | Kind::Func => 8,
            Kind::Array { elem, .. } => self.align_depth((*elem)?, depth + 1)?,
            Kind::Struct(fields) => {
                let mut a = 1;
                for f in fields {
                    a = a.max(self.align_depth(f.ty?, depth + 1)?);
                }
                a
            }
            Kind::Typedef(_) | Kind::Unknown => return None,
        })
    }

    /// Looks a field up by name, including fields promoted from embedded structs (by value;
    /// promotion through embedded pointers is not followed). Returns the field's offset from
    /// the start of the struct and its type.
    pub fn field(&self, struct_id: TypeId, name: &str) -> Option<(u64, Option<TypeId>)> {
        self.field_depth(struct_id, name, 0)
    }

    fn field_depth(&self, id: TypeId, name: &str, depth: usize) -> Option<(u64, Option<TypeId>)> {
        if depth > 4 {
            return None;
        }
        let (_, t) = self.underlying(id)?;
        let Kind::Struct(fields) = &t.kind else { return None };
        if let Some(f) = fields.iter().find(|f| f.name == name) {
            return Some((f.offset, f.ty));
        }
        for f in fields.iter().filter(|f| f.embedded) {
            if let Some((off, ty)) = f.ty.and_then(|ft| self.field_depth(ft, name, depth + 1)) {
                return Some((f.offset + off, ty));
            }
        }
        None
    }

    /// A struct type by its Go name (through typedefs), e.g. `net/http.Request`.
    pub fn struct_named(&self, name: &str) -> Option<TypeId> {
        (0..self.len()).find(|&id| {
            self.get(id).is_some_and(|t| t.name == name)
                && self.underlying(id).is_some_and(|(_, t)| matches!(t.kind, Kind::Struct(_)))
        })
    }

    /// Field `field` of the struct named `strukt` (see [`TypeTable::field`]).
    pub fn struct_field(&self, strukt: &str, field: &str) -> Option<(u64, Option<TypeId>)> {
        self.field(self.struct_named(strukt)?, field)
    }

    /// "Name Type" of every field, for error messages.
    pub fn describe_fields(&self, struct_id: TypeId) -> String {
        match self.underlying(struct_id) {
            Some((_, GoType { kind: Kind::Struct(fields), .. })) if !fields.is_empty() => {
                fields.iter().map(|f| format!("{} {}", f.name, self.name(f.ty))).collect::<Vec<_>>().join(", ")
            }
            _ => "(none)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typedef_loops_and_alignment_are_bounded() {
        let mut t = TypeTable::new();
        let a = t.add(GoType { name: "a".into(), size: 0, kind: Kind::Typedef(Some(1)) });
        let _b = t.add(GoType { name: "b".into(), size: 0, kind: Kind::Typedef(Some(0)) });
        assert!(t.underlying(a).is_none());
        assert!(t.align(a).is_none());
        // A struct that (through corrupt data) contains itself by value.
        let s = t.add(GoType {
            name: "s".into(),
            size: 8,
            kind: Kind::Struct(vec![Field { name: "x".into(), offset: 0, ty: Some(2), embedded: true }]),
        });
        assert!(t.align(s).is_none());
        assert!(t.field(s, "nope").is_none());
    }
}
