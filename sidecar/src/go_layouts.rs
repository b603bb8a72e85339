//! Struct layouts for binaries built without DWARF (`-ldflags=-w`, or `-s -w`, the usual
//! production build), so the built-in instrumentations work there too.
//!
//! The instrumentations read a handful of fields (`http.Request.Method`, `url.URL.Path`,
//! `http.response.status`, ...), each declared by the unit that reads it
//! ([`crate::instrumentations::FieldNeed`]); [`fields`] is their union. With DWARF their offsets
//! come from the binary itself. Without it they come from `go_layouts.json`, which
//! `gotel-layouts` writes from the DWARF of real builds of `e2e/goapps/layouts` with every Go
//! release this machine has (`tools/gen-go-layouts.sh`). A unit test rebuilds with every
//! installed Go and compares the table with the compiler's DWARF.
//!
//! The table has two parts: standard-library layouts keyed by Go release (`go1.26`), and
//! third-party module layouts (grpc-go, database drivers) keyed by module path and the exact
//! module version the binary's build info names (`google.golang.org/grpc` / `v1.64.0`). A
//! binary's layout is its release's standard-library layout plus the layouts of its modules.
//!
//! Decision: only exact matches are used (`go1.N`, the module's exact version). Field offsets of
//! unexported types (`http.response`, the bundled HTTP/2 server) change between releases;
//! guessing from the nearest release could read the wrong field and report a wrong status. A
//! release missing from the table gets a clear message instead (HTTP spans off, user probes
//! unaffected).
use std::collections::{BTreeMap, HashMap};

use crate::{
    binary::BuildInfo,
    dwarf::{DwarfInfo, Field, FunctionInfo, GoType, Kind, Param, TypeId, TypeTable},
    instrumentations::{self, FieldNeed, GoTy},
};

/// Offsets by `struct.field` key (`net/http.Request.Method`).
pub type Layout = BTreeMap<String, u64>;

/// The whole table (`go_layouts.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Standard library: Go release (`go1.26`) -> layout.
    pub go: BTreeMap<String, Layout>,
    /// Third-party modules: module path -> module version (as in build info) -> layout.
    pub modules: BTreeMap<String, BTreeMap<String, Layout>>,
}

impl Table {
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut v: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut part = |k: &str| v.remove(k).unwrap_or_else(|| serde_json::json!({}));
        Ok(Table {
            go: serde_json::from_value(part("go")).map_err(|e| format!("go: {e}"))?,
            modules: serde_json::from_value(part("modules")).map_err(|e| format!("modules: {e}"))?,
        })
    }

    pub fn to_json(&self) -> String {
        let v = serde_json::json!({ "go": self.go, "modules": self.modules });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

const TABLE: &str = include_str!("go_layouts.json");

/// The whole table.
pub fn table() -> Table {
    // The file is generated and checked by tests; a broken one is a build defect, so an empty
    // table (HTTP spans off for stripped binaries, with a message) is the safe fallback.
    Table::parse(TABLE).unwrap_or_default()
}

/// Every field the instrumentations read, once each, in registry order.
pub fn fields() -> Vec<FieldNeed> {
    let mut out: Vec<FieldNeed> = Vec::new();
    for f in instrumentations::ALL.iter().flat_map(|u| u.fields.iter()) {
        if !out.iter().any(|o| (o.strukt, o.field) == (f.strukt, f.field)) {
            out.push(*f);
        }
    }
    out
}

/// Modules whose layouts the instrumentations need.
pub fn modules() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = fields().iter().filter_map(|f| f.module).collect();
    out.sort();
    out.dedup();
    out
}

/// `go1.26.8` -> `go1.26`; `None` for development builds and unparsable versions.
pub fn release_of(version: &str) -> Option<String> {
    let rest = version.strip_prefix("go1.")?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!minor.is_empty()).then(|| format!("go1.{minor}"))
}

/// The layout of the binary's Go release and modules, or why there is none.
pub fn layout_for(build: &BuildInfo) -> Result<Layout, String> {
    layout_in(&table(), build)
}

fn layout_in(table: &Table, build: &BuildInfo) -> Result<Layout, String> {
    let version = build.go_version.as_deref().ok_or("the binary has neither DWARF nor Go build info")?;
    let release = release_of(version).ok_or_else(|| format!("no layout table for Go version {version:?}"))?;
    let mut layout = table.go.get(&release).cloned().ok_or_else(|| {
        let known: Vec<&str> = table.go.keys().map(String::as_str).collect();
        format!(
            "the binary has no DWARF and {release} is not in gotel's layout table ({}); build without -ldflags=-w or use a gotel that knows {release}",
            known.join(", ")
        )
    })?;
    // A module version missing from the table leaves its fields out: the instrumentation that
    // needs them then says which field it lacks.
    for (path, version) in &build.deps {
        if let Some(module) = table.modules.get(path).and_then(|versions| versions.get(version)) {
            layout.extend(module.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    Ok(layout)
}

/// Key of one field in a [`Layout`].
pub fn key(strukt: &str, field: &str) -> String {
    format!("{strukt}.{field}")
}

/// Reads the offsets of the declared fields of `module` (`None`: the standard library) from a
/// binary's DWARF (the generator and the test).
pub fn from_dwarf(d: &DwarfInfo, module: Option<&str>) -> Result<Layout, String> {
    let mut out = Layout::new();
    for f in fields().iter().filter(|f| f.module == module) {
        match d.types.struct_field(f.strukt, f.field) {
            Some((off, _)) => {
                out.insert(key(f.strukt, f.field), off);
            }
            None if f.optional => {}
            None => return Err(format!("no {} in the binary's DWARF", key(f.strukt, f.field))),
        }
    }
    Ok(out)
}

/// Just enough DWARF, made from a layout, for the instrumentations' probe specs to plan as they
/// do with real DWARF: the declared fields (with their declared types) of every struct the
/// layout knows, and the declared signatures of the span functions.
pub fn synthetic_dwarf(layout: &Layout) -> DwarfInfo {
    let mut b = Synth { t: TypeTable::new(), layout, fields: fields(), named: HashMap::new() };
    let mut functions = Vec::new();
    for span in instrumentations::ALL.iter().flat_map(|u| u.spans()) {
        let params = span
            .signature
            .iter()
            .map(|a| Param { name: a.name.into(), ty: b.ty(a.ty), is_result: a.result, entry_location: None })
            .collect();
        functions.push(FunctionInfo { name: span.symbol.into(), low_pc: 0, decl_file: None, decl_line: None, params });
    }
    // Structs only reached through a field, never through a signature (bufio.Writer).
    for f in b.fields.clone() {
        b.strukt(f.strukt);
    }
    DwarfInfo::from_parts(b.t, functions)
}

struct Synth<'a> {
    t: TypeTable,
    layout: &'a Layout,
    fields: Vec<FieldNeed>,
    named: HashMap<String, TypeId>,
}

impl Synth<'_> {
    fn named(&mut self, name: &str, make: impl FnOnce(&mut Self) -> GoType) -> TypeId {
        if let Some(id) = self.named.get(name) {
            return *id;
        }
        let ty = make(self);
        let id = self.t.add(ty);
        self.named.insert(name.to_string(), id);
        id
    }

    fn ty(&mut self, ty: GoTy) -> TypeId {
        let basic = |name: &str, size: u64, kind: Kind| GoType { name: name.into(), size, kind };
        match ty {
            GoTy::String => self.named("string", |_| basic("string", 16, Kind::String)),
            GoTy::Int => self.named("int", |_| basic("int", 8, Kind::Int)),
            GoTy::Bytes => self.named("[]uint8", |s| {
                let byte = s.named("uint8", |_| basic("uint8", 1, Kind::Uint));
                basic("[]uint8", 24, Kind::Slice(Some(byte)))
            }),
            GoTy::Opaque => self.named("unsafe.Pointer", |_| basic("unsafe.Pointer", 8, Kind::Pointer(None))),
            GoTy::Iface(name) => self.named(name, |_| basic(name, 16, Kind::Interface { empty: false })),
            GoTy::Ptr(to) => {
                let name = format!("*{to}");
                self.named(&name.clone(), |s| {
                    let to = s.strukt(to);
                    basic(&name, 8, Kind::Pointer(Some(to)))
                })
            }
            GoTy::Word(name) => self.named(name, |s| {
                let word = s.ty(GoTy::Opaque);
                let field = Field { name: "_".into(), offset: 0, ty: Some(word), embedded: false };
                basic(name, 8, Kind::Struct(vec![field]))
            }),
        }
    }

    /// A struct with the declared fields the layout knows; sizes are not needed behind pointers.
    /// (A cycle of declared pointer fields would recurse: no instrumentation declares one.)
    fn strukt(&mut self, name: &'static str) -> TypeId {
        self.named(name, |s| {
            let declared: Vec<FieldNeed> = s.fields.iter().filter(|f| f.strukt == name).copied().collect();
            let fields = declared
                .into_iter()
                .filter_map(|f| {
                    let offset = *s.layout.get(&key(name, f.field))?;
                    Some(Field { name: f.field.into(), offset, ty: Some(s.ty(f.ty)), embedded: false })
                })
                .collect();
            GoType { name: name.into(), size: 0, kind: Kind::Struct(fields) }
        })
    }
}

#[cfg(test)]
mod tests;
