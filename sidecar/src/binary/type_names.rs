//! Naming the dynamic type of an interface value while spans are made, without the binary.
//!
//! An `error` or `any` attribute arrives as the runtime address of an itab (non-empty
//! interfaces) or of a type descriptor (`any`). Naming it used to keep the whole [`GoBinary`]
//! alive for the session: the mapped file, function and symbol tables, pclntab and DWARF,
//! 349 MiB resident after attaching to a 121 MB program (Jaeger). A [`TypeNameTable`] keeps
//! only what naming needs:
//!
//! * the itab and `type:` data symbols (a few thousand), sorted by address, with their type
//!   names already cut out of the symbol names and stored in one string;
//! * the open executable, to read a type descriptor's name with a few small `pread`s when no
//!   symbol names the address (`any` values: .symtab does not name descriptors one by one).
//!   Reading through the page cache costs gotel no resident memory, unlike a mapping;
//! * a bounded cache of those descriptor names, so a type seen often costs no system call.
//!
//! Lookups give the same answers as the binary itself (checked by the tests against an oracle
//! that reads the whole parsed binary).
use std::{borrow::Cow, cell::RefCell, collections::HashMap, fs::File, os::unix::fs::FileExt};

use super::{segment_file_offset, GoBinary};
use crate::values::TypeNames;

/// Descriptor names kept; when full, the cache starts over. Programs pass few distinct
/// dynamic types through traced calls, so this is rarely reached; past it, lookups only cost
/// their `pread`s again, never memory.
const MAX_CACHED: usize = 4096;

/// The type a data symbol stands for: `go:itab.*errors.errorString,error` ->
/// `*errors.errorString`, `type:*main.Order` -> `*main.Order`; other names unchanged.
pub(super) fn symbol_type_name(sym: &str) -> &str {
    sym.strip_prefix("go:itab.")
        .or_else(|| sym.strip_prefix("go.itab."))
        .map(|s| s.rsplit_once(',').map(|(t, _)| t).unwrap_or(s))
        .or_else(|| sym.strip_prefix("type:"))
        .or_else(|| sym.strip_prefix("type."))
        .unwrap_or(sym)
}

/// The Go name of the type descriptor at link-time address `vaddr` (`int`, `*main.Order`),
/// read from the descriptor itself through `read(vaddr, len)` (exactly `len` bytes or `None`):
/// `abi.Type.Str` (offset 40) is a name offset from `runtime.types` (`types_base`); a name is
/// a flags byte, a varint length and the bytes; `TFlagExtraStar` (2) means the stored name has
/// a leading `*` to drop. Layout shared by Go 1.18 to 1.27.
pub(super) fn descriptor_name<'a>(
    types_base: u64,
    vaddr: u64,
    read: impl Fn(u64, usize) -> Option<Cow<'a, [u8]>>,
) -> Option<String> {
    if vaddr < types_base {
        return None;
    }
    let desc = read(vaddr, 48)?;
    let tflag = desc[20];
    let str_off = i32::from_le_bytes(desc[40..44].try_into().ok()?);
    if str_off <= 0 {
        return None;
    }
    let name = read(types_base + str_off as u64, 12)?;
    let (mut len, mut used) = (0usize, 0usize);
    for (i, &b) in name[1..].iter().enumerate().take(4) {
        len |= ((b & 0x7f) as usize) << (7 * i);
        used = i + 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let bytes = read(types_base + str_off as u64 + 1 + used as u64, len.min(512))?;
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(if tflag & 2 != 0 { text.strip_prefix('*').unwrap_or(text) } else { text }.to_string())
}

/// One data symbol: link-time address, size, and where its type name is in `names`.
#[derive(Clone, Copy)]
struct Symbol {
    addr: u64,
    size: u64,
    name_start: usize,
    name_len: usize,
}

/// Where type descriptors are read from when no symbol names an address.
struct Descriptors {
    /// The executable the binary was parsed from (a duplicate of its descriptor, so the same
    /// file even if the path now names another).
    file: File,
    /// (vaddr, memsz, file offset, filesz) of PT_LOAD segments, as in `GoBinary`.
    segments: Vec<(u64, u64, u64, u64)>,
    /// Link-time address of `runtime.types`.
    types_base: u64,
}

impl Descriptors {
    /// Exactly `len` bytes at a link-time address, from the file.
    fn read(&self, vaddr: u64, len: usize) -> Option<Cow<'static, [u8]>> {
        let off = segment_file_offset(&self.segments, vaddr)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, off).ok()?;
        Some(Cow::Owned(buf))
    }
}

/// Names dynamic types from their runtime address for one process; owns everything it needs,
/// so the [`GoBinary`] can be dropped once probes are attached.
pub struct TypeNameTable {
    /// Subtracted from runtime addresses to get link-time ones (PIE; 0 otherwise).
    load_bias: u64,
    /// The traced process, whose memory holds the itabs .symtab does not name (0: none).
    pid: u32,
    /// Sorted by address (stably: of two symbols at one address the later in .symtab wins,
    /// as the test oracle `binary_answer` does).
    symbols: Vec<Symbol>,
    names: String,
    /// `None` when the binary's `runtime.types` is unknown (neither in .symtab nor found through
    /// the module data): descriptors cannot be named.
    descriptors: Option<Descriptors>,
    /// Descriptor names by link-time address, `None` results included (they cost reads too).
    cache: RefCell<HashMap<u64, Option<String>>>,
}

impl TypeNameTable {
    /// The table for `binary` as mapped in a process with `load_bias` (see `spans::load_bias`).
    pub fn new(binary: &GoBinary, load_bias: u64, pid: u32) -> TypeNameTable {
        let mut names = String::new();
        let symbols = binary
            .data_symbols
            .iter()
            .map(|(addr, size, sym)| {
                let name = symbol_type_name(sym);
                let name_start = names.len();
                names.push_str(name);
                Symbol { addr: *addr, size: *size, name_start, name_len: name.len() }
            })
            .collect();
        let descriptors = binary.types_base.and_then(|types_base| {
            let file = binary
                .file
                .try_clone()
                .map_err(|e| tracing::warn!(binary = %binary.path, error = %e, "cannot keep the executable open; `any` values will show type addresses"))
                .ok()?;
            Some(Descriptors { file, segments: binary.segments.clone(), types_base })
        });
        TypeNameTable { load_bias, pid, symbols, names, descriptors, cache: RefCell::new(HashMap::new()) }
    }

    /// Type name of the data symbol covering a link-time address.
    fn symbol_at(&self, vaddr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|s| s.addr <= vaddr).checked_sub(1)?;
        let s = self.symbols[i];
        (vaddr < s.addr + s.size.max(1)).then(|| &self.names[s.name_start..s.name_start + s.name_len])
    }
}

impl TypeNameTable {
    /// Go 1.27 no longer names itabs in .symtab (`go:itab.*`). An itab starts with
    /// `{inter *interfacetype, _type *_type}`: when the first word is an interface type
    /// descriptor, the value's type is the second. Static itabs are read from the executable
    /// (it holds their link-time pointers, PIE too), so spans decoded after the process exited
    /// are named; itabs made at run time live on the heap and are read from the process. A
    /// type descriptor (an `any` value) starts with its size, never a descriptor: it falls through.
    fn itab_type_name(&self, d: &Descriptors, runtime_addr: u64) -> Option<String> {
        let word = |w: &[u8], i: usize| u64::from_le_bytes(w[i * 8..i * 8 + 8].try_into().unwrap());
        let (inter, ty) = match d.read(runtime_addr.wrapping_sub(self.load_bias), 16) {
            Some(w) => (word(&w, 0), word(&w, 1)),
            None if self.pid != 0 => {
                let w = read_process(self.pid, runtime_addr, 16)?;
                (word(&w, 0).wrapping_sub(self.load_bias), word(&w, 1).wrapping_sub(self.load_bias))
            }
            None => return None,
        };
        if inter < d.types_base || ty < d.types_base {
            return None;
        }
        // abi.Type.Kind_ (offset 23, low 5 bits) is Interface (20) for the itab's first word.
        let inter_desc = d.read(inter, 48)?;
        if inter_desc[23] & 0x1f != 20 {
            return None;
        }
        descriptor_name(d.types_base, ty, |a, n| d.read(a, n))
    }
}

/// `len` bytes of process `pid`'s memory at `addr` (process_vm_readv; gotel has the target's
/// ptrace access already, see README "Security and capabilities").
fn read_process(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` points at `buf`, which outlives the call; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

impl TypeNames for TypeNameTable {
    fn type_name(&self, runtime_addr: u64) -> Option<String> {
        let addr = runtime_addr.wrapping_sub(self.load_bias);
        if let Some(name) = self.symbol_at(addr) {
            return Some(name.to_string());
        }
        let d = self.descriptors.as_ref()?;
        let mut cache = self.cache.borrow_mut();
        if let Some(hit) = cache.get(&addr) {
            return hit.clone();
        }
        let name =
            self.itab_type_name(d, runtime_addr).or_else(|| descriptor_name(d.types_base, addr, |a, n| d.read(a, n)));
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(addr, name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn symbol_names_become_type_names() {
        assert_eq!(symbol_type_name("go:itab.*errors.errorString,error"), "*errors.errorString");
        assert_eq!(symbol_type_name("go.itab.main.T,fmt.Stringer"), "main.T");
        assert_eq!(symbol_type_name("type:*main.Order"), "*main.Order");
        assert_eq!(symbol_type_name("type.int"), "int");
        assert_eq!(symbol_type_name("runtime.x"), "runtime.x");
    }

    /// A file laid out as one segment at `BASE` (file offset 0): a type descriptor at
    /// `BASE + 0x100` whose name (`*main.Order`, flagged TFlagExtraStar) is at `types_base + 0x40`.
    #[allow(clippy::type_complexity)]
    fn fixture() -> (File, Vec<(u64, u64, u64, u64)>, u64) {
        const BASE: u64 = 0x40_0000;
        let mut bytes = vec![0u8; 0x200];
        // Name at types_base (BASE) + 0x40: flags, varint length, text.
        let text = b"*main.Order";
        bytes[0x40] = 0;
        bytes[0x41] = text.len() as u8;
        bytes[0x42..0x42 + text.len()].copy_from_slice(text);
        // Descriptor at BASE + 0x100: tflag (offset 20) = 2, Str (offset 40) = 0x40.
        bytes[0x100 + 20] = 2;
        bytes[0x100 + 40..0x100 + 44].copy_from_slice(&0x40i32.to_le_bytes());
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        (file, vec![(BASE, 0x200, 0, 0x200)], BASE)
    }

    fn table(load_bias: u64, with_descriptors: bool) -> TypeNameTable {
        let (file, segments, base) = fixture();
        let mut names = String::new();
        let mut symbols = Vec::new();
        for (addr, size, sym) in
            [(base + 0x180, 24, "go:itab.*errors.errorString,error"), (base + 0x1a0, 0, "type:int")]
        {
            let name = symbol_type_name(sym);
            symbols.push(Symbol { addr, size, name_start: names.len(), name_len: name.len() });
            names.push_str(name);
        }
        TypeNameTable {
            load_bias,
            pid: 0,
            symbols,
            names,
            descriptors: with_descriptors.then_some(Descriptors { file, segments, types_base: base }),
            cache: RefCell::new(HashMap::new()),
        }
    }

    #[test]
    fn names_symbols_and_descriptors_with_or_without_bias() {
        const BASE: u64 = 0x40_0000;
        for bias in [0, 0x7f00_0000_0000] {
            let t = table(bias, true);
            assert_eq!(t.type_name(bias + BASE + 0x180).as_deref(), Some("*errors.errorString"));
            assert_eq!(t.type_name(bias + BASE + 0x197).as_deref(), Some("*errors.errorString"));
            assert_eq!(t.type_name(bias + BASE + 0x1a0).as_deref(), Some("int"), "size 0 covers one byte");
            assert_eq!(t.type_name(bias + BASE + 0x100).as_deref(), Some("main.Order"), "leading * dropped");
            assert_eq!(t.type_name(bias + BASE + 0x100).as_deref(), Some("main.Order"), "from the cache");
            assert_eq!(t.type_name(bias + BASE + 0x1f0), None, "past the file's end");
            assert_eq!(t.type_name(bias + BASE - 8), None, "below runtime.types");
        }
    }

    #[test]
    fn without_type_base_only_symbols_name_types() {
        let t = table(0, false);
        assert_eq!(t.type_name(0x40_0180).as_deref(), Some("*errors.errorString"));
        assert_eq!(t.type_name(0x40_0100), None);
    }

    /// The answer straight from the whole parsed binary: the data symbol covering `vaddr`
    /// (the later of two at one address), else the descriptor at `vaddr` read from the mapping.
    fn binary_answer(bin: &GoBinary, vaddr: u64) -> Option<String> {
        let i = bin.data_symbols.partition_point(|d| d.0 <= vaddr).checked_sub(1);
        if let Some((addr, size, name)) = i.map(|i| &bin.data_symbols[i]) {
            if vaddr < addr + (*size).max(1) {
                return Some(symbol_type_name(name).to_string());
            }
        }
        let bytes_at = |a: u64, n: usize| {
            let off = bin.file_offset(a)? as usize;
            bin.map.get(off..off.checked_add(n)?).map(Cow::Borrowed)
        };
        descriptor_name(bin.types_base?, vaddr, bytes_at)
    }

    /// On real programs (every toolchain of the test matrix; executable, PIE and stripped), the
    /// table answers exactly as the binary does, and type descriptors are named sensibly.
    #[test]
    fn table_matches_the_binary_on_go_programs() {
        use crate::dwarf::testutil::{build_go, go_matrix};
        for go in go_matrix() {
            for flags in [&[][..], &["-buildmode=pie"], &["-ldflags=-s -w"]] {
                let built = build_go(&go, "attrs", flags);
                let what = format!("{} {flags:?}", built.version);
                let bin = GoBinary::open(&built.path).unwrap();
                let bias = if bin.is_pie { 0x7f00_0000_0000 } else { 0 };
                let table = TypeNameTable::new(&bin, bias, 0);
                let same = |addr: u64| {
                    assert_eq!(table.type_name(addr + bias), binary_answer(&bin, addr), "{what} at {addr:#x}")
                };
                for &(addr, size, _) in &bin.data_symbols {
                    for a in [addr, addr + size / 2, addr + size.max(1) - 1, addr + size.max(1)] {
                        same(a);
                    }
                }
                // Stripped builds too: from the module data (`moduledata`).
                let base = bin.types_base.unwrap_or_else(|| panic!("{what}: no runtime.types"));
                if flags.contains(&"-ldflags=-s -w") {
                    assert!(table.descriptors.is_some() && table.symbols.is_empty(), "{what}: stripped");
                }
                // .typelink lists type descriptors as offsets from `runtime.types` (up to Go
                // 1.26; Go 1.27 has none).
                let links = bin.section_data(".typelink").or_else(|| bin.section_data(".data.rel.ro.typelink"));
                let links = links.unwrap_or_default();
                for off in links.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())) {
                    let addr = base + off as u64;
                    same(addr);
                    let name =
                        binary_answer(&bin, addr).unwrap_or_else(|| panic!("{what}: descriptor at {addr:#x} unnamed"));
                    assert!(
                        !name.is_empty() && !name.chars().any(char::is_control),
                        "{what}: descriptor at {addr:#x} named {name:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn cache_stays_bounded() {
        let t = table(0, true);
        for i in 0..(MAX_CACHED as u64 * 2) {
            t.type_name(0x50_0000 + i * 8);
        }
        assert!(t.cache.borrow().len() <= MAX_CACHED);
        assert_eq!(t.type_name(0x40_0100).as_deref(), Some("main.Order"));
    }
}
