//! The eBPF object embedded in `gotel` exports exactly the programs and maps that user space
//! looks up by name (`gotel_shared::names`): aya's macros name them after the Rust items, so a
//! rename on one side only would otherwise fail at load or attach time on a user's machine.
//! And every program's deepest call chain fits the stack Linux 6.1 allows, which the kernels
//! gotel is developed on (6.18) do not check the same way: there it would only fail in the VM
//! test or on a user's machine.
use std::collections::BTreeSet;

use gotel_shared::names::{ALL_MAPS, ALL_PROGRAMS};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gotel-ebpf"));

/// Names of the symbols defined in the section called `section`.
fn symbols_in(elf: &goblin::elf::Elf, section: &str) -> BTreeSet<String> {
    let index = elf
        .section_headers
        .iter()
        .position(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(section))
        .unwrap_or_else(|| panic!("no section {section} in the eBPF object"));
    elf.syms
        .iter()
        .filter(|s| s.st_shndx == index && s.st_name != 0)
        .filter_map(|s| elf.strtab.get_at(s.st_name))
        .filter(|name| *name != section)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_object_has_exactly_the_named_programs_and_maps() {
    let elf = goblin::elf::Elf::parse(EBPF_OBJECT).expect("the embedded eBPF object is an ELF file");
    // Uprobes, and the socket path's SOCK_OPS and SK_MSG programs.
    let programs: BTreeSet<String> = ["uprobe", "sockops", "sk_msg"].iter().flat_map(|s| symbols_in(&elf, s)).collect();
    let maps = symbols_in(&elf, "maps");
    assert_eq!(programs, ALL_PROGRAMS.iter().map(|n| n.to_string()).collect(), "programs");
    assert_eq!(maps, ALL_MAPS.iter().map(|n| n.to_string()).collect(), "maps");
}

/// Linux 6.1's limit on the stack of a program and the deepest chain of functions it calls.
const MAX_BPF_STACK: u64 = 512;

/// One BPF function of the object: its stack frame and the functions it calls.
struct Function {
    name: String,
    /// Bytes below the frame pointer (r10) the function uses, rounded up to 32 as the verifier
    /// does (`round_up(max(depth, 1), 32)`).
    frame: u64,
    /// Callees: bpf-to-bpf calls and `bpf_loop` callbacks (loaded with `BPF_PSEUDO_FUNC`).
    calls: BTreeSet<(usize, u64)>,
}

/// Every function of every code section, keyed by (section index, offset), from the
/// instructions: the deepest `r10 - N` a load or store reaches or a pointer is made to, and the
/// call targets (through the relocations where the call crosses into another section).
fn functions(elf: &goblin::elf::Elf, object: &[u8]) -> std::collections::BTreeMap<(usize, u64), Function> {
    use goblin::elf::section_header::SHF_EXECINSTR;
    const BPF_PSEUDO_CALL: u8 = 1;
    const BPF_PSEUDO_FUNC: u8 = 4;
    let mut out = std::collections::BTreeMap::new();
    for (index, sh) in elf.section_headers.iter().enumerate() {
        if sh.sh_flags & SHF_EXECINSTR as u64 == 0 {
            continue;
        }
        let code = &object[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize];
        let relocs: std::collections::HashMap<u64, goblin::elf::Reloc> = elf
            .shdr_relocs
            .iter()
            .filter(|(rel, _)| elf.section_headers[*rel].sh_info as usize == index)
            .flat_map(|(_, r)| r.iter().map(|r| (r.r_offset, r)))
            .collect();
        for sym in elf.syms.iter().filter(|s| s.st_shndx == index && s.is_function()) {
            let name = elf.strtab.get_at(sym.st_name).unwrap_or("?").to_string();
            let (mut depth, mut calls) = (0u64, BTreeSet::new());
            // Registers holding r10 + offset (a pointer into the frame), by register number.
            let mut frame_pointers = [None::<i64>; 16];
            let mut at = sym.st_value;
            while at < sym.st_value + sym.st_size {
                let ins = &code[at as usize..at as usize + 8];
                let (opcode, dst, src) = (ins[0], ins[1] & 15, ins[1] >> 4);
                let off = i16::from_le_bytes([ins[2], ins[3]]) as i64;
                let imm = i32::from_le_bytes(ins[4..8].try_into().unwrap()) as i64;
                // A call's or callback's target: with a relocation, from the symbol's address
                // (`with_symbol` bytes on); without, relative to this instruction.
                let target = |with_symbol: i64, pc_relative: i64| match relocs.get(&at) {
                    Some(r) => {
                        let s = elf.syms.get(r.r_sym).expect("relocation symbol");
                        (s.st_shndx, (s.st_value as i64 + with_symbol) as u64)
                    }
                    None => (index, (at as i64 + pc_relative) as u64),
                };
                match opcode & 7 {
                    // LDX (base in src), ST and STX (base in dst): frame accesses at r10 - N.
                    1 if src == 10 && off < 0 => depth = depth.max(off.unsigned_abs()),
                    2 | 3 if dst == 10 && off < 0 => depth = depth.max(off.unsigned_abs()),
                    _ => {}
                }
                let mut next = 8;
                match opcode {
                    // call: bpf-to-bpf when src is BPF_PSEUDO_CALL (imm counts instructions from
                    // the next one); a helper call clobbers r0 to r5.
                    0x85 => {
                        if src == BPF_PSEUDO_CALL {
                            calls.insert(target((imm + 1) * 8, 8 + imm * 8));
                        }
                        frame_pointers[..6].fill(None);
                    }
                    // ld_imm64 (two slots): a callback's address when src is BPF_PSEUDO_FUNC
                    // (libbpf and aya set BPF_PSEUDO_FUNC when the relocation names code).
                    0x18 => {
                        let to_code = relocs.get(&at).and_then(|r| elf.syms.get(r.r_sym)).is_some_and(|s| {
                            elf.section_headers.get(s.st_shndx).is_some_and(|h| h.sh_flags & SHF_EXECINSTR as u64 != 0)
                        });
                        if src == BPF_PSEUDO_FUNC || to_code {
                            calls.insert(target(imm, 16 + imm * 8));
                        }
                        frame_pointers[dst as usize] = None;
                        next = 16;
                    }
                    // mov64 dst, r10 then add64 dst, imm: a pointer into the frame (for a helper).
                    0xbf if src == 10 => frame_pointers[dst as usize] = Some(0),
                    0x07 if frame_pointers[dst as usize].is_some() => {
                        let o = frame_pointers[dst as usize].unwrap_or(0) + imm;
                        frame_pointers[dst as usize] = Some(o);
                        if o < 0 {
                            depth = depth.max(o.unsigned_abs());
                        }
                    }
                    // Any other write to dst (ALU, ALU64, LDX).
                    _ if matches!(opcode & 7, 1 | 4 | 7) => frame_pointers[dst as usize] = None,
                    _ => {}
                }
                at += next;
            }
            let frame = depth.max(1).div_ceil(32) * 32;
            out.insert((index, sym.st_value), Function { name, frame, calls });
        }
    }
    out
}

/// The deepest stack of the chains starting at `at`, as Linux 6.1 counts it (the sum of the
/// rounded frames along the chain), and that chain.
fn deepest(
    functions: &std::collections::BTreeMap<(usize, u64), Function>,
    at: (usize, u64),
    depth: usize,
) -> (u64, Vec<String>) {
    let f = functions.get(&at).unwrap_or_else(|| panic!("a call to {at:?}, where no function starts"));
    assert!(depth < 16, "calls nested deeper than 16 at {}: recursion?", f.name);
    let below = f.calls.iter().map(|&c| deepest(functions, c, depth + 1)).max_by_key(|(bytes, _)| *bytes);
    let (bytes, mut chain) = below.unwrap_or_default();
    chain.insert(0, format!("{} {}", demangle(&f.name), f.frame));
    (bytes + f.frame, chain)
}

/// `_RNvNtCs..._10gotel_ebpf6frames10unwind_one` -> `frames::unwind_one`: Rust v0 symbols of
/// nested items name the crate (`Cs<disambiguator>_<len><name>`) then length-prefixed
/// identifiers.
fn demangle(symbol: &str) -> String {
    let Some(at) = symbol.strip_prefix("_R").and_then(|r| r.find("Cs")) else { return symbol.to_string() };
    let rest = &symbol[2 + at..];
    let Some(underscore) = rest.find('_') else { return symbol.to_string() };
    let mut rest = &rest[underscore + 1..];
    let mut parts = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&d| d > 0) {
        let n: usize = rest[..digits].parse().unwrap_or(0);
        let ident = rest[digits..].strip_prefix('_').unwrap_or(&rest[digits..]);
        parts.push(&ident[..n.min(ident.len())]);
        rest = &ident[n.min(ident.len())..];
    }
    parts.into_iter().skip(1).collect::<Vec<_>>().join("::")
}

/// Linux 6.1 refuses a program whose main frame plus the frames of its deepest chain of
/// bpf-to-bpf calls and callbacks, each rounded up to 32 bytes, is over 512 ("combined stack
/// size of N calls is M. Too large"); 6.18 accepts more, so only this test catches it on the
/// machines gotel is developed on. Frames are measured from the instructions (the deepest
/// `r10 - N` each function touches), as the verifier does while it walks them.
#[test]
fn every_program_fits_the_stack_of_linux_6_1() {
    let elf = goblin::elf::Elf::parse(EBPF_OBJECT).expect("the embedded eBPF object is an ELF file");
    let functions = functions(&elf, EBPF_OBJECT);
    let mut report = Vec::new();
    let mut too_deep = Vec::new();
    for program in ALL_PROGRAMS {
        let sym = elf
            .syms
            .iter()
            .find(|s| s.is_function() && elf.strtab.get_at(s.st_name) == Some(program))
            .unwrap_or_else(|| panic!("no program {program} in the object"));
        let (bytes, chain) = deepest(&functions, (sym.st_shndx, sym.st_value), 0);
        let line = format!("{program}: {bytes} bytes: {}", chain.join(" -> "));
        if bytes > MAX_BPF_STACK {
            too_deep.push(line.clone());
        }
        report.push(line);
    }
    eprintln!("deepest stack per program (Linux 6.1 rounding):\n{}", report.join("\n"));
    assert!(too_deep.is_empty(), "over {MAX_BPF_STACK} bytes of stack on Linux 6.1:\n{}", too_deep.join("\n"));
}
