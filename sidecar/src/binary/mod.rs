//! Reading the target's executable: which functions it has and where their code is, its Go
//! version, source locations and DWARF types. Everything comes from the file on disk (opened as
//! `/proc/PID/exe`, so it works across mount namespaces); nothing here touches the process.
mod buildinfo;
pub mod disasm;
mod moduledata;
mod pclntab;
mod type_names;

use std::{borrow::Cow, fs::File, io::Read, path::Path};

use goblin::elf::{program_header::PT_LOAD, section_header::SHF_COMPRESSED, sym::STT_FUNC, Elf};
use memmap2::Mmap;

pub use buildinfo::BuildInfo;
use pclntab::Pclntab;
pub use type_names::TypeNameTable;

use crate::dwarf::DwarfInfo;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not an ELF program ({reason}); gotel traces Go programs built for Linux")]
    NotElf { path: String, reason: String },
    #[error("{path} is not a 64-bit x86-64 ELF program; gotel supports Go programs on linux/amd64")]
    WrongArch { path: String },
    #[error("{path} is not a Go program (no .gopclntab and no Go build info); gotel traces Go programs only")]
    NotGo { path: String },
    #[error(
        "{path} was built with {version}, which predates Go's register ABI as gotel reads it; rebuild it with Go 1.18 or newer"
    )]
    GoTooOld { path: String, version: String },
    #[error("{path}: malformed {what}: {reason}")]
    Malformed { path: String, what: &'static str, reason: String },
}

/// Where a function's names and addresses came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// A function with out-of-line code in the binary.
#[derive(Clone, Debug)]
pub struct Function {
    /// The Go symbol, e.g. `main.(*Store).Get`.
    pub name: String,
    /// Link-time virtual address of the first instruction.
    pub entry: u64,
    /// Link-time virtual address just past the last byte (padding included for pclntab).
    pub end: u64,
}

#[derive(Clone, Debug)]
struct Section {
    name: String,
    addr: u64,
    offset: u64,
    size: u64,
    compressed: bool,
    nobits: bool,
}

/// Where the pclntab is: a range of the mapped file, and the `.text` address it counts from
/// when its header gives none.
#[derive(Clone, Debug)]
struct PclnAt {
    range: std::ops::Range<usize>,
    /// Link-time address of the table.
    addr: u64,
    text_start: u64,
}

/// A Go executable, parsed once at startup.
pub struct GoBinary {
    pub path: String,
    /// The file `map` maps; kept open so a [`TypeNameTable`] can read from the same file.
    file: File,
    map: Mmap,
    sections: Vec<Section>,
    /// (vaddr, memsz, file offset, filesz) of PT_LOAD segments.
    segments: Vec<(u64, u64, u64, u64)>,
    /// Functions sorted by name, ABI wrappers removed.
    functions: Vec<Function>,
    pub symbol_source: SymbolSource,
    /// Data symbols (itabs, type descriptors) by address, for naming dynamic types.
    data_symbols: Vec<(u64, u64, String)>,
    pub build: BuildInfo,
    pub is_pie: bool,
    /// Link-time address of `runtime.types` (else `type:*`), the base of the type descriptors'
    /// name offsets.
    types_base: Option<u64>,
    /// Where `.gopclntab` is in `map` (validated at open; read through [`GoBinary::pclntab`]).
    pclntab: Option<PclnAt>,
    pub dwarf: Option<DwarfInfo>,
}

impl GoBinary {
    /// Opens and parses the executable, with DWARF for every function.
    pub fn open(path: &Path) -> Result<GoBinary, BinaryError> {
        Self::open_with(path, None)
    }

    /// Like [`GoBinary::open`], with DWARF only for the functions whose names pass `wanted`
    /// (those a session probes): a fraction of the memory on a large program (see `dwarf`).
    pub fn open_for(path: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<GoBinary, BinaryError> {
        Self::open_with(path, Some(wanted))
    }

    fn open_with(path: &Path, wanted: Option<&dyn Fn(&str) -> bool>) -> Result<GoBinary, BinaryError> {
        let display = path.display().to_string();
        let io = |source| BinaryError::Io { path: display.clone(), source };
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
            return Err(BinaryError::NotElf { path: display, reason: "no ELF magic".into() });
        }
        // SAFETY: a read-only private mapping; a program's file is not modified while it runs
        // (the kernel refuses writes to a running executable with ETXTBSY).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let elf = Elf::parse(&map).map_err(|e| BinaryError::NotElf { path: display.clone(), reason: e.to_string() })?;
        if !elf.is_64 || elf.header.e_machine != goblin::elf::header::EM_X86_64 {
            return Err(BinaryError::WrongArch { path: display });
        }
        let sections: Vec<Section> = elf
            .section_headers
            .iter()
            .map(|s| Section {
                name: elf.shdr_strtab.get_at(s.sh_name).unwrap_or("").to_string(),
                addr: s.sh_addr,
                offset: s.sh_offset,
                size: s.sh_size,
                compressed: s.sh_flags & SHF_COMPRESSED as u64 != 0,
                nobits: s.sh_type == goblin::elf::section_header::SHT_NOBITS,
            })
            .collect();
        let segments = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .map(|p| (p.p_vaddr, p.p_memsz, p.p_offset, p.p_filesz))
            .collect();
        let is_pie = elf.header.e_type == goblin::elf::header::ET_DYN;

        let mut functions = Vec::new();
        let mut data_symbols = Vec::new();
        let (mut types_base, mut runtime_types) = (None, None);
        for sym in elf.syms.iter() {
            let Some(name) = elf.strtab.get_at(sym.st_name) else { continue };
            if sym.st_type() == STT_FUNC && sym.st_value != 0 {
                functions.push(Function {
                    name: name.to_string(),
                    entry: sym.st_value,
                    end: sym.st_value + sym.st_size.max(1),
                });
            } else if name == "runtime.types" {
                runtime_types = Some(sym.st_value);
            } else if name == "type:*" || name == "type.*" {
                types_base = Some(sym.st_value);
            } else if name.starts_with("go:itab.")
                || name.starts_with("type:")
                || name.starts_with("go.itab.")
                || name.starts_with("type.")
            {
                data_symbols.push((sym.st_value, sym.st_size, name.to_string()));
            }
        }
        data_symbols.sort_by_key(|d| d.0);
        // Name offsets count from `moduledata.types`, i.e. `runtime.types`: the same address as
        // `type:*` in executables, but 8 bytes before it in PIE builds.
        let types_base = runtime_types.or(types_base);
        drop(elf);

        let mut bin = GoBinary {
            path: display.clone(),
            file,
            map,
            sections,
            segments,
            functions: Vec::new(),
            symbol_source: SymbolSource::Symtab,
            data_symbols,
            build: BuildInfo::default(),
            is_pie,
            types_base,
            pclntab: None,
            dwarf: None,
        };
        bin.build = bin.section_data(".go.buildinfo").map(|d| buildinfo::parse(&d)).unwrap_or_default();
        let text_start = bin.section(".text").map(|s| s.addr).unwrap_or(0);
        // Never compressed: borrowed from the mapping, not copied.
        let pcln_at = [".gopclntab", ".data.rel.ro.gopclntab"]
            .iter()
            .filter_map(|name| bin.section(name))
            .find(|s| !s.nobits && !s.compressed)
            .map(|s| (s.offset as usize..(s.offset + s.size) as usize, s.addr))
            .filter(|(r, _)| r.end <= bin.map.len());
        if let Some((range, addr)) = pcln_at {
            match Pclntab::parse(&bin.map[range.clone()], text_start) {
                Ok(_) => bin.pclntab = Some(PclnAt { range, addr, text_start }),
                Err(pclntab::PclntabError::TooOld(v)) => {
                    return Err(BinaryError::GoTooOld { path: display, version: v })
                }
                Err(e) => return Err(BinaryError::Malformed { path: display, what: "pclntab", reason: e.to_string() }),
            }
        }
        if bin.types_base.is_none() {
            // Stripped: no `runtime.types` symbol; the module data has it.
            bin.types_base = moduledata::types_base(&bin);
        }
        if bin.pclntab.is_none() && bin.build.go_version.is_none() {
            return Err(BinaryError::NotGo { path: display });
        }
        if let Some(v) = bin.build.go_version.as_deref() {
            if go_minor(v).is_some_and(|m| m < 18) {
                return Err(BinaryError::GoTooOld { path: display, version: v.to_string() });
            }
        }
        if functions.is_empty() {
            bin.symbol_source = SymbolSource::Pclntab;
            functions = bin.pclntab().map(|p| p.functions()).unwrap_or_default();
        } else {
            // The linker names ABI0 wrappers `f.abi0` in .symtab: the real function is `f`.
            functions.retain(|f| !f.name.ends_with(".abi0"));
        }
        bin.functions = dedup_abi_wrappers(functions, |f| bin.code(f));
        // The pclntab and code read so far are not needed while DWARF is read (the peak).
        bin.release_pages(0, bin.map.len());
        let entries: Option<std::collections::HashSet<u64>> =
            wanted.map(|w| bin.functions.iter().filter(|f| w(&f.name)).map(|f| f.entry).collect());
        let keep = |pc: u64| entries.as_ref().is_none_or(|e| e.contains(&pc));
        bin.dwarf = match DwarfInfo::load_functions(&|name| bin.section_data(name), &keep) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(binary = %bin.path, error = %e, "ignoring unreadable DWARF");
                None
            }
        };
        Ok(bin)
    }

    /// The pclntab, read in place from the mapping.
    fn pclntab(&self) -> Option<Pclntab<'_>> {
        let at = self.pclntab.as_ref()?;
        Pclntab::parse(self.map.get(at.range.clone())?, at.text_start).ok()
    }

    fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Bytes of a section, decompressed when it is SHF_COMPRESSED (Go compresses DWARF).
    pub fn section_data(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let s = self.section(name)?;
        if s.nobits {
            return None;
        }
        let raw = self.map.get(s.offset as usize..(s.offset + s.size) as usize)?;
        if !s.compressed {
            return Some(Cow::Borrowed(raw));
        }
        // Elf64_Chdr: ch_type u32, reserved u32, ch_size u64, ch_addralign u64; zlib only.
        if raw.len() < 24 || u32::from_le_bytes(raw[0..4].try_into().ok()?) != 1 {
            return None;
        }
        let size = u64::from_le_bytes(raw[8..16].try_into().ok()?) as usize;
        let mut out = Vec::with_capacity(size.min(1 << 30));
        flate2::read::ZlibDecoder::new(&raw[24..]).take(size as u64).read_to_end(&mut out).ok()?;
        self.release_pages(s.offset as usize, s.size as usize);
        Some(Cow::Owned(out))
    }

    /// Drops the mapping's pages in `offset..offset + len` from gotel's resident memory once
    /// read (they stay in the page cache, and a later read faults them in again). Parsing a
    /// large program touches tens of MB of the file (pclntab, compressed DWARF), all counted
    /// in gotel's peak RSS until the mapping goes.
    fn release_pages(&self, offset: usize, len: usize) {
        // SAFETY: the mapping is private and read-only, so MADV_DONTNEED discards nothing: the
        // next access reads the same bytes from the file (which a running program's kernel
        // keeps from being written, see `open`).
        let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
    }

    /// All functions, sorted by name.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.binary_search_by(|f| f.name.as_str().cmp(name)).ok().map(|i| &self.functions[i])
    }

    /// File offset of a link-time virtual address, through the PT_LOAD program headers.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        segment_file_offset(&self.segments, vaddr)
    }

    /// The function's machine code.
    pub fn code(&self, f: &Function) -> Option<&[u8]> {
        let start = self.file_offset(f.entry)? as usize;
        let len = (f.end - f.entry) as usize;
        self.map.get(start..start + len)
    }

    /// Source file and line of the function's declaration: DWARF first, else pclntab.
    pub fn source_location(&self, f: &Function) -> Option<(String, u32)> {
        if let Some(info) = self.dwarf.as_ref().and_then(|d| d.function(&f.name)) {
            if let (Some(file), Some(line)) = (&info.decl_file, info.decl_line) {
                return Some((file.clone(), line));
            }
        }
        self.pclntab()?.source_location(f.entry)
    }

    /// Link-time address of the first PT_LOAD segment with file offset 0 (the load bias base).
    pub fn first_segment_vaddr(&self) -> u64 {
        self.segments.iter().map(|s| s.0 - s.2).min().unwrap_or(0)
    }

    /// Names close to `wanted`, for "did you mean" in errors.
    pub fn closest_names(&self, wanted: &str, n: usize) -> Vec<&str> {
        let mut scored: Vec<(usize, &str)> =
            self.functions.iter().map(|f| (edit_distance(wanted, &f.name), f.name.as_str())).collect();
        scored.sort();
        scored.into_iter().take(n).map(|(_, s)| s).collect()
    }
}

/// File offset of a link-time virtual address, through (vaddr, memsz, file offset, filesz) of
/// the PT_LOAD program headers.
fn segment_file_offset(segments: &[(u64, u64, u64, u64)], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|(va, _, _, filesz)| vaddr >= *va && vaddr < va + filesz)
        .map(|(va, _, off, _)| vaddr - va + off)
}

/// `go1.21.5` -> 21.
pub fn go_minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// pclntab lists both halves of an ABI0/ABIInternal pair under one name. The wrapper's code
/// calls or jumps to the real function: keep the one that is the other's target. Returns the
/// functions sorted by name. Works in place (a stable sort groups equal names, first-seen
/// first): a map of groups would copy every name of a large program.
fn dedup_abi_wrappers<'a>(mut functions: Vec<Function>, code: impl Fn(&Function) -> Option<&'a [u8]>) -> Vec<Function> {
    // Real binaries have pairs; a hostile file with thousands of same-named symbols must not
    // make this quadratic: larger groups keep their first member, and only the start of a
    // wrapper is searched for its branch.
    const MAX_GROUP: usize = 4;
    const WRAPPER_SCAN: usize = 1024;
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    let mut keep = vec![false; functions.len()];
    let mut start = 0;
    while start < functions.len() {
        let len = functions[start..].iter().take_while(|f| f.name == functions[start].name).count();
        let group = &functions[start..start + len];
        let real = if len == 1 || len > MAX_GROUP {
            0
        } else {
            group
                .iter()
                .position(|candidate| {
                    group.iter().any(|other| {
                        other.entry != candidate.entry
                            && code(other).is_some_and(|c| {
                                disasm::branches_to(&c[..c.len().min(WRAPPER_SCAN)], other.entry, candidate.entry)
                            })
                    })
                })
                .unwrap_or(0)
        };
        keep[start + real] = true;
        start += len;
    }
    let mut kept = keep.into_iter();
    functions.retain(|_| kept.next().unwrap_or(false));
    functions
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_minor_parses_release_and_dev_versions() {
        assert_eq!(go_minor("go1.21.5"), Some(21));
        assert_eq!(go_minor("go1.26rc1"), Some(26));
        assert_eq!(go_minor("devel +abc"), None);
    }

    /// `open_for` keeps DWARF for the wanted functions only, identical to a full load, and
    /// every type (the built-in instrumentations look types up by name).
    #[test]
    fn open_for_keeps_dwarf_of_wanted_functions_only() {
        use crate::dwarf::testutil::{build_go, default_go};
        let Some(go) = default_go() else { return };
        let built = build_go(&go, "attrs", &[]);
        let full = GoBinary::open(&built.path).unwrap();
        let wanted = ["main.MixedMany", "main.(*Store).Get"];
        let some = GoBinary::open_for(&built.path, &|name| wanted.contains(&name)).unwrap();
        let (full_d, some_d) = (full.dwarf.as_ref().unwrap(), some.dwarf.as_ref().unwrap());
        assert_eq!(some_d.function_names().count(), wanted.len());
        for name in wanted {
            let (a, b) = (full_d.function(name).unwrap(), some_d.function(name).unwrap());
            assert_eq!((a.low_pc, &a.decl_file, a.decl_line), (b.low_pc, &b.decl_file, b.decl_line), "{name}");
            let params = |d: &crate::dwarf::DwarfInfo, f: &crate::dwarf::FunctionInfo| d.describe_params(f);
            assert_eq!(params(full_d, a), params(some_d, b), "{name}");
            let locs =
                |f: &crate::dwarf::FunctionInfo| f.params.iter().map(|p| p.entry_location.clone()).collect::<Vec<_>>();
            assert_eq!(locs(a), locs(b), "{name}");
        }
        assert!(some_d.function("main.Named").is_none());
        assert_eq!(full_d.types.len(), some_d.types.len());
        assert_eq!(full.functions().len(), some.functions().len());
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("main.leaf", "main.leaf"), 0);
        assert_eq!(edit_distance("main.laef", "main.leaf"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
