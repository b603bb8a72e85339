//! Shared pieces of gotel's fuzz targets: writing inputs to a file `GoBinary::open` can read,
//! exercising everything a parsed binary offers, and patching real Go binaries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gotel::binary::{disasm, GoBinary};

/// A per-process scratch file on tmpfs (`/dev/shm` when there is one).
pub fn scratch_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        dir.join(format!("gotel-fuzz-{}", std::process::id()))
    })
}

/// Writes `parts` (concatenated) to the scratch file and returns its path.
pub fn write_scratch(parts: &[&[u8]]) -> &'static Path {
    let p = scratch_path();
    let mut f = std::fs::File::create(p).expect("create scratch file");
    for part in parts {
        f.write_all(part).expect("write scratch file");
    }
    p
}

/// Opens the file and touches every query gotel makes of a binary.
pub fn open_and_exercise(path: &Path) {
    let Ok(b) = GoBinary::open(path) else { return };
    let _ = b.first_segment_vaddr();
    // (An edit distance over every name: the costliest query, once.)
    let _ = b.closest_names("main.mian", 3);
    let _ = b.function("main.main");
    for name in [".gopclntab", ".go.buildinfo", ".text", ".debug_info", ".nonexistent"] {
        let _ = b.section_data(name);
    }
    // Functions: the first and last ones (runtime, then main.* sort late) and a stride between.
    let fs = b.functions();
    let n = fs.len();
    let picks = (0..n.min(16)).chain(n.saturating_sub(16)..n).chain((0..n).step_by(n / 16 + 1));
    for i in picks {
        let f = &fs[i];
        let _ = b.file_offset(f.entry);
        let _ = b.source_location(f);
        let _ = b.data_symbol_at(f.entry);
        if let Some(code) = b.code(f) {
            let code = &code[..code.len().min(1 << 16)];
            let _ = disasm::ret_offsets(code, f.entry);
            let _ = disasm::prologue_end(code, f.entry);
            let _ = disasm::branches_to(code, f.entry, f.entry);
        }
    }
    if let Some(d) = &b.dwarf {
        exercise_dwarf(d);
    }
}

/// Touches the queries gotel makes of DWARF (names, parameters, types, fields).
pub fn exercise_dwarf(d: &gotel::dwarf::DwarfInfo) {
    let names: Vec<String> = d.function_names().take(64).map(str::to_string).collect();
    for name in &names {
        let _ = d.is_inlined_only(name);
        if let Some(f) = d.function(name) {
            let _ = d.describe_params(f);
            for p in &f.params {
                let _ = d.types.name(Some(p.ty));
                let _ = d.types.size(p.ty);
                let _ = d.types.align(p.ty);
                if let Some((id, _)) = d.types.underlying(p.ty) {
                    let _ = d.types.describe_fields(id);
                    let _ = d.types.field(id, "ID");
                }
            }
        }
    }
}

/// A real Go binary and where its interesting regions lie in the file.
pub struct Base {
    pub name: String,
    pub bytes: Vec<u8>,
    /// (name, file offset, size): ELF header, program and section header tables, sections.
    pub regions: Vec<(String, usize, usize)>,
}

fn base_dir() -> PathBuf {
    match std::env::var_os("GOTEL_FUZZ_SEEDS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/bin"),
    }
}

/// The real Go binaries built by `gen-seeds.sh` (normal, stripped, PIE). Panics with the fix
/// when they are missing (a fuzz run without them would test nothing).
pub fn bases() -> &'static [Base] {
    static B: OnceLock<Vec<Base>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = base_dir();
        let mut out = Vec::new();
        for name in ["hello-stripped", "hello-normal", "hello-pie"] {
            let p = dir.join(name);
            let bytes = std::fs::read(&p)
                .unwrap_or_else(|e| panic!("{}: {e}; run fuzz/gen-seeds.sh first", p.display()));
            let regions = regions(&bytes);
            out.push(Base { name: name.to_string(), bytes, regions });
        }
        out
    })
}

const SECTIONS: &[&str] = &[
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.buildinfo",
    ".symtab",
    ".strtab",
    ".shstrtab",
    ".text",
    ".noptrdata",
    ".typelink",
    ".itablink",
    ".debug_info",
    ".debug_abbrev",
    ".debug_line",
    ".debug_loclists",
    ".debug_str",
    ".debug_frame",
];

fn regions(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let elf = goblin::elf::Elf::parse(bytes).expect("base binary is ELF");
    let h = &elf.header;
    let mut r = vec![
        ("elf header".to_string(), 0, 64),
        ("program headers".to_string(), h.e_phoff as usize, h.e_phnum as usize * h.e_phentsize as usize),
        ("section headers".to_string(), h.e_shoff as usize, h.e_shnum as usize * h.e_shentsize as usize),
    ];
    for s in &elf.section_headers {
        let name = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("");
        if SECTIONS.contains(&name) && s.sh_type != goblin::elf::section_header::SHT_NOBITS && s.sh_size > 0 {
            r.push((name.to_string(), s.sh_offset as usize, s.sh_size as usize));
        }
    }
    r.retain(|(_, off, size)| off + size <= bytes.len());
    r
}

/// Applies patch operations from `ops` to `region` of `out`. Each operation is
/// `[kind][offset: u32 le][payload...]`:
/// - kind % 4 == 0: overwrite `payload[0] % 32 + 1` bytes with the following payload bytes;
/// - 1: write a little-endian u32 from the payload;
/// - 2: write a little-endian u64 from the payload;
/// - 3: flip the bits of one byte (payload[0]).
/// Offsets wrap inside the region, so every input hits it. Returns the bytes consumed.
pub fn apply_ops(out: &mut [u8], region: (usize, usize), mut ops: &[u8]) {
    let (start, size) = region;
    if size == 0 {
        return;
    }
    while ops.len() >= 5 {
        let kind = ops[0] % 4;
        let off = u32::from_le_bytes([ops[1], ops[2], ops[3], ops[4]]) as usize % size;
        ops = &ops[5..];
        let at = start + off;
        let room = start + size - at;
        match kind {
            0 => {
                let Some((&n, rest)) = ops.split_first() else { return };
                let n = (n as usize % 32 + 1).min(rest.len()).min(room);
                out[at..at + n].copy_from_slice(&rest[..n]);
                ops = &rest[n..];
            }
            1 | 2 => {
                let w = if kind == 1 { 4 } else { 8 };
                let n = w.min(ops.len()).min(room);
                out[at..at + n].copy_from_slice(&ops[..n]);
                ops = &ops[n..];
            }
            _ => {
                let Some((&x, rest)) = ops.split_first() else { return };
                out[at] ^= x | 1;
                ops = rest;
            }
        }
    }
}
