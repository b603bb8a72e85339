//! Reads what gotel needs from a Go binary's DWARF (with gimli): every out-of-line function
//! with its parameters and results in declaration order, their Go types, and the source
//! location of the function.
//!
//! Go's DWARF conventions relied on here (Go 1.17 .. 1.26):
//! - one `DW_TAG_subprogram` per out-of-line function, `DW_AT_name` = full Go symbol
//!   (`main.(*Store).Get`); functions that are also inlined somewhere have an abstract
//!   subprogram (`DW_AT_inline`) holding name and parameters, and the concrete one refers to
//!   it with `DW_AT_abstract_origin`;
//! - `DW_TAG_formal_parameter` children for the receiver, the parameters and the results, in
//!   declaration order; results have `DW_AT_variable_parameter` = 1 (unnamed: `~r0`, `~r1`);
//! - Go extensions: `DW_AT_go_kind` (0x2900, the `reflect.Kind`), `DW_AT_go_elem` (0x2902,
//!   element of slices), `DW_AT_go_embedded_field` (0x2903);
//! - strings, slices and interfaces are structs (`string{str,len}`, `[]T{array,len,cap}`,
//!   `runtime.iface{tab,data}` / `runtime.eface{_type,data}`), named interfaces and `error`
//!   are typedefs to those, maps / chans / funcs are typedefs to pointers;
//! - named integer types are base types with their own name (`main.UserID`).
//!
//! The whole DWARF is read once in two passes without recursion (so no input can exhaust the
//! stack): pass 1 records every type, function and parameter DIE with its raw references,
//! pass 2 links the references by section offset.
//!
//! Functions are most of the memory: every parameter of 100,000 functions with its name,
//! type, entry location and the function's file name took over 100 MiB on Caddy (an 82 MB
//! program), against about 10 for all types. [`DwarfInfo::load_functions`] keeps only the
//! out-of-line functions a session will probe (chosen by entry address) and every type; the
//! abstract (inlined) functions are kept too, as the others refer to them.
//!
//! Layout: this file keeps what the reader produces (`DwarfInfo`, `FunctionInfo`, `Param`,
//! `LocPiece`) and the rules over it; the walk over the compile units (functions, parameters,
//! locations, source lines) is `loader.rs`, types are `types.rs`, tests `tests.rs`.

pub mod types;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, RunTimeEndian};

pub use types::{Field, GoType, Kind, TypeId, TypeTable};

type R<'a> = EndianSlice<'a, RunTimeEndian>;

const DW_AT_GO_KIND: gimli::DwAt = gimli::DwAt(0x2900);
const DW_AT_GO_ELEM: gimli::DwAt = gimli::DwAt(0x2902);
const DW_AT_GO_EMBEDDED_FIELD: gimli::DwAt = gimli::DwAt(0x2903);

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("malformed DWARF debug information: {0}")]
    Gimli(#[from] gimli::Error),
}

/// An out-of-line Go function known to DWARF.
#[derive(Clone, Debug)]
pub struct FunctionInfo {
    pub name: String,
    pub low_pc: u64,
    /// Source file of the declaration (`code.file.path`).
    pub decl_file: Option<String>,
    /// Line of the `func` keyword (`code.line.number`).
    pub decl_line: Option<u32>,
    /// Receiver, parameters, then results, in declaration order.
    pub params: Vec<Param>,
}

impl FunctionInfo {
    /// The receiver and parameters (not results).
    pub fn args(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| !p.is_result)
    }

    pub fn results(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.is_result)
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    /// Go name; `~r0`.. for unnamed results, `~p0`/`_` style names as Go wrote them.
    pub name: String,
    /// Index into [`DwarfInfo::types`]; the `Unknown` type when DWARF gave none.
    pub ty: TypeId,
    /// A result (`DW_AT_variable_parameter`).
    pub is_result: bool,
    /// Where the compiler says the value is at the function's first instruction, when its
    /// location list covers it. Used to cross-check gotel's ABI computation.
    pub entry_location: Option<Vec<LocPiece>>,
}

/// One piece of a DWARF location (`DW_OP_regN` / `DW_OP_fbreg` + `DW_OP_piece`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocPiece {
    pub loc: Loc,
    /// Bytes of the value this piece holds; `None` when the expression has no pieces.
    pub size: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// DWARF register number (amd64: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 8.. r8..,
    /// 17.. xmm0..).
    Reg(u16),
    /// Memory at CFA + offset (Go's frame base is the CFA; at entry CFA = SP + 8).
    Cfa(i64),
    /// The piece has no location (optimized out).
    Empty,
}

/// pt_regs slot (`gotel_shared::REG_*`) of a DWARF amd64 integer register number.
pub fn dwarf_reg_to_pt_regs(reg: u16) -> Option<u8> {
    use gotel_shared::*;
    Some(match reg {
        0 => REG_RAX,
        1 => REG_RDX,
        2 => REG_RCX,
        3 => REG_RBX,
        4 => REG_RSI,
        5 => REG_RDI,
        6 => REG_RBP,
        8 => REG_R8,
        9 => REG_R9,
        10 => REG_R10,
        11 => REG_R11,
        12 => REG_R12,
        13 => REG_R13,
        14 => REG_R14,
        15 => REG_R15,
        _ => return None,
    })
}

/// Everything gotel uses from a binary's DWARF.
#[derive(Debug, Default)]
pub struct DwarfInfo {
    pub types: TypeTable,
    functions: Vec<FunctionInfo>,
    by_name: HashMap<String, usize>,
    inlined_only: HashSet<String>,
}

impl DwarfInfo {
    /// Reads the DWARF sections through `section(name)`. `Ok(None)` without `.debug_info`.
    pub fn load<'a>(section: &dyn Fn(&str) -> Option<Cow<'a, [u8]>>) -> Result<Option<DwarfInfo>, DwarfError> {
        Self::load_functions(section, &|_| true)
    }

    /// Like [`DwarfInfo::load`], keeping only the out-of-line functions whose first
    /// instruction's address passes `keep` (every type is kept). [`DwarfInfo::is_inlined_only`]
    /// then also says yes for functions that have code but were not kept: ask it only about
    /// names the binary has no code for.
    pub fn load_functions<'a>(
        section: &dyn Fn(&str) -> Option<Cow<'a, [u8]>>,
        keep: &dyn Fn(u64) -> bool,
    ) -> Result<Option<DwarfInfo>, DwarfError> {
        let info = match section(".debug_info") {
            Some(d) if !d.is_empty() => d,
            _ => return Ok(None),
        };
        // Keep every section's bytes alive while gimli borrows them.
        let ids = [
            gimli::SectionId::DebugAbbrev,
            gimli::SectionId::DebugStr,
            gimli::SectionId::DebugLine,
            gimli::SectionId::DebugLineStr,
            gimli::SectionId::DebugStrOffsets,
            gimli::SectionId::DebugAddr,
            // Not the range lists: nothing here reads address ranges (2.3 MB on Caddy).
            gimli::SectionId::DebugLocLists,
            gimli::SectionId::DebugLoc,
        ];
        let mut store: HashMap<gimli::SectionId, Cow<'a, [u8]>> = HashMap::new();
        for id in ids {
            if let Some(d) = section(id.name()) {
                store.insert(id, d);
            }
        }
        store.insert(gimli::SectionId::DebugInfo, info);
        let endian = RunTimeEndian::Little;
        let dwarf = gimli::Dwarf::load(|id| -> Result<R<'_>, gimli::Error> {
            Ok(EndianSlice::new(store.get(&id).map(|c| c.as_ref()).unwrap_or(&[]), endian))
        })?;
        Loader { keep: Some(keep), ..Loader::default() }.run(&dwarf).map(Some)
    }

    /// Builds an info by hand (tests, synthetic plans).
    pub fn from_parts(types: TypeTable, functions: Vec<FunctionInfo>) -> DwarfInfo {
        let mut d = DwarfInfo { types, ..Default::default() };
        for f in functions {
            d.add_function(f);
        }
        d
    }

    fn add_function(&mut self, f: FunctionInfo) {
        if self.by_name.contains_key(&f.name) {
            return;
        }
        self.inlined_only.remove(&f.name);
        self.by_name.insert(f.name.clone(), self.functions.len());
        self.functions.push(f);
    }

    /// The out-of-line function with this Go symbol name.
    pub fn function(&self, name: &str) -> Option<&FunctionInfo> {
        self.by_name.get(name).and_then(|&i| self.functions.get(i))
    }

    /// Known only as an inlined abstract function: no out-of-line code to probe.
    pub fn is_inlined_only(&self, name: &str) -> bool {
        self.inlined_only.contains(name)
    }

    /// Names of all out-of-line functions.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().map(|f| f.name.as_str())
    }

    /// "name type" of each parameter and result, for error messages (see [`describe_param_list`]).
    pub fn describe_params(&self, f: &FunctionInfo) -> String {
        describe_param_list(&self.types, f.params.iter().map(|p| (p.name.as_str(), p.ty, p.is_result)))
    }
}

/// "name type" of each parameter and result (`(name, type, is_result)`), for error messages:
/// `parameters (s *main.Store, key string) and results (~r0 int)`, `no parameters, results
/// (...)`, `parameters (...)`, `no parameters or results`.
pub fn describe_param_list<'a>(types: &TypeTable, params: impl Iterator<Item = (&'a str, TypeId, bool)>) -> String {
    let (mut args, mut results) = (Vec::new(), Vec::new());
    for (name, ty, is_result) in params {
        let list = if is_result { &mut results } else { &mut args };
        list.push(format!("{name} {}", types.name(Some(ty))));
    }
    let (a, r) = (args.join(", "), results.join(", "));
    match (a.is_empty(), r.is_empty()) {
        (true, true) => "no parameters or results".into(),
        (_, true) => format!("parameters ({a})"),
        (true, _) => format!("no parameters, results ({r})"),
        _ => format!("parameters ({a}) and results ({r})"),
    }
}

/// A type DIE seen in pass 1, with references still as section offsets.
struct RawType {
    id: TypeId,
    tag: gimli::DwTag,
    go_kind: Option<u64>,
    encoding: Option<gimli::DwAte>,
    target: Option<DebugInfoOffset>,
    elem: Option<DebugInfoOffset>,
    count: Option<u64>,
    fields: Vec<(Field, Option<DebugInfoOffset>)>,
}

struct RawParam {
    name: Option<String>,
    ty: Option<DebugInfoOffset>,
    is_result: Option<bool>,
    origin: Option<DebugInfoOffset>,
    entry_location: Option<Vec<LocPiece>>,
}

struct RawFunc {
    offset: DebugInfoOffset,
    name: Option<String>,
    low_pc: Option<u64>,
    inline: bool,
    origin: Option<DebugInfoOffset>,
    decl_file: Option<String>,
    decl_line: Option<u32>,
    params: Vec<(DebugInfoOffset, RawParam)>,
}

/// What the DIE at some depth is, so children know where they belong.
#[derive(Clone, Copy)]
enum Parent {
    Type(usize),
    Func(usize),
    Other,
}

#[derive(Default)]
struct Loader<'k> {
    /// Which out-of-line functions (by first address) to keep; `None`: all.
    keep: Option<&'k dyn Fn(u64) -> bool>,
    types: TypeTable,
    raw_types: Vec<RawType>,
    type_at: HashMap<DebugInfoOffset, TypeId>,
    funcs: Vec<RawFunc>,
    func_at: HashMap<DebugInfoOffset, usize>,
}

mod loader;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
