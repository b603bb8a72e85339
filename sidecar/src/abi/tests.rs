use super::*;
use crate::dwarf::types::{Field, GoType};
use gotel_shared::{REG_R10, REG_R11, REG_R8, REG_R9, REG_RAX, REG_RBX, REG_RCX, REG_RDI, REG_RSI};

/// A small type table with the types the examples need.
struct T {
    t: TypeTable,
}

impl T {
    fn new() -> Self {
        T { t: TypeTable::new() }
    }
    fn add(&mut self, name: &str, size: u64, kind: Kind) -> TypeId {
        self.t.add(GoType { name: name.into(), size, kind })
    }
    fn int(&mut self, size: u64) -> TypeId {
        self.add(&format!("int{}", size * 8), size, Kind::Int)
    }
    fn uintptr(&mut self) -> TypeId {
        self.add("uintptr", 8, Kind::Uintptr)
    }
    fn string(&mut self) -> TypeId {
        self.add("string", 16, Kind::String)
    }
    fn array(&mut self, elem: TypeId, len: u64) -> TypeId {
        let size = self.t.size(elem).unwrap() * len;
        self.add("[n]T", size, Kind::Array { elem: Some(elem), len })
    }
    fn strukt(&mut self, fields: &[(TypeId, u64)], size: u64) -> TypeId {
        let fields = fields
            .iter()
            .enumerate()
            .map(|(i, &(ty, offset))| Field { name: format!("f{i}"), offset, ty: Some(ty), embedded: false })
            .collect();
        self.add("struct", size, Kind::Struct(fields))
    }
}

fn regs(pieces: &[(u8, u64, u64)]) -> Location {
    Location::Registers(pieces.iter().map(|&(r, offset, size)| RegPiece { reg: Reg::Int(r), offset, size }).collect())
}

fn stack(off: i64) -> Location {
    Location::Stack { sp_offset: off }
}

#[test]
fn spec_document_example() {
    // func f(a1 uint8, a2 [2]uintptr, a3 uint8) (r1 struct { x uintptr; y [2]uintptr }, r2 string)
    let mut t = T::new();
    let u8t = t.add("uint8", 1, Kind::Uint);
    let up = t.uintptr();
    let arr = t.array(up, 2);
    let r1 = t.strukt(&[(up, 0), (arr, 8)], 24);
    let s = t.string();
    let a = assign(&t.t, &[u8t, arr, u8t], &[r1, s]).unwrap();
    // a1 -> R0, a3 -> R1; a2 on the stack (first field of the sequence).
    assert_eq!(a.args, vec![regs(&[(REG_RAX, 0, 1)]), stack(8), regs(&[(REG_RBX, 0, 1)])]);
    // r1 stack-assigned after a2 (16 bytes); r2 in R0, R1.
    assert_eq!(a.results, vec![stack(8 + 16), regs(&[(REG_RAX, 0, 8), (REG_RBX, 8, 8)])]);
}

#[test]
fn more_arguments_than_registers() {
    // func Many(a..l int) (int): 9 in registers, j k l on the stack.
    let mut t = T::new();
    let i = t.int(8);
    let a = assign(&t.t, &[i; 12], &[i]).unwrap();
    for (n, reg) in INT_REGS.iter().enumerate() {
        assert_eq!(a.args[n], regs(&[(*reg, 0, 8)]));
    }
    assert_eq!(a.args[9..], [stack(8), stack(16), stack(24)]);
    assert_eq!(a.results, vec![regs(&[(REG_RAX, 0, 8)])]);

    // Ten results after twelve arguments: the tenth result follows the argument stack area.
    let b = assign(&t.t, &[i; 12], &[i; 10]).unwrap();
    assert_eq!(b.results[8], regs(&[(REG_R11, 0, 8)]));
    assert_eq!(b.results[9], stack(8 + 24));
}

#[test]
fn whole_value_goes_to_the_stack_and_registers_are_given_back() {
    // func MixedMany(a string, b int, c string, d string, e int, f string, g int8)
    let mut t = T::new();
    let s = t.string();
    let i = t.int(8);
    let i8t = t.int(1);
    let a = assign(&t.t, &[s, i, s, s, i, s, i8t], &[s, i]).unwrap();
    assert_eq!(
        a.args,
        vec![
            regs(&[(REG_RAX, 0, 8), (REG_RBX, 8, 8)]),
            regs(&[(REG_RCX, 0, 8)]),
            regs(&[(REG_RDI, 0, 8), (REG_RSI, 8, 8)]),
            regs(&[(REG_R8, 0, 8), (REG_R9, 8, 8)]),
            regs(&[(REG_R10, 0, 8)]),
            // Only R11 left: the string does not fit and goes to the stack whole...
            stack(8),
            // ...and the int8 after it still gets R11.
            regs(&[(REG_R11, 0, 1)]),
        ]
    );
    assert_eq!(a.results, vec![regs(&[(REG_RAX, 0, 8), (REG_RBX, 8, 8)]), regs(&[(REG_RCX, 0, 8)])]);
}

#[test]
fn structs_are_decomposed_field_by_field() {
    // type Point struct { X, Y int32; Name string }; func StructArg(p, q Point) int32
    let mut t = T::new();
    let i32t = t.int(4);
    let s = t.string();
    let point = t.strukt(&[(i32t, 0), (i32t, 4), (s, 8)], 24);
    let a = assign(&t.t, &[point, point], &[i32t]).unwrap();
    assert_eq!(a.args[0], regs(&[(REG_RAX, 0, 4), (REG_RBX, 4, 4), (REG_RCX, 8, 8), (REG_RDI, 16, 8)]));
    assert_eq!(a.args[1], regs(&[(REG_RSI, 0, 4), (REG_R8, 4, 4), (REG_R9, 8, 8), (REG_R10, 16, 8)]));
    // A third Point needs 4 registers, one is left: stack, aligned to 8.
    let b = assign(&t.t, &[point, point, i32t, point], &[]).unwrap();
    assert_eq!(b.args[2], regs(&[(REG_R11, 0, 4)]));
    assert_eq!(b.args[3], stack(8));
}

#[test]
fn arrays_zero_sized_and_floats() {
    let mut t = T::new();
    let i = t.int(8);
    let i16t = t.int(2);
    let s = t.string();
    let f64t = t.add("float64", 8, Kind::Float);
    let c128 = t.add("complex128", 16, Kind::Complex);
    let empty = t.strukt(&[], 0);
    let one = t.array(s, 1);
    let three = t.array(i, 3);
    let grid = t.strukt(&[(three, 0), (s, 24)], 40);
    // func(x struct{}, n int16, g Grid, a [1]string, f float64, c complex128, m int)
    let a = assign(&t.t, &[empty, i16t, grid, one, f64t, c128, i], &[f64t]).unwrap();
    assert_eq!(a.args[0], stack(8)); // zero-sized: stack sequence, no space
    assert_eq!(a.args[1], regs(&[(REG_RAX, 0, 2)]));
    assert_eq!(a.args[2], stack(8)); // array of 3 never in registers; aligned at 8
    assert_eq!(a.args[3], regs(&[(REG_RBX, 0, 8), (REG_RCX, 8, 8)]));
    assert!(a.args[4].in_float_register());
    assert_eq!(
        a.args[5],
        Location::Registers(vec![
            RegPiece { reg: Reg::Float(1), offset: 0, size: 8 },
            RegPiece { reg: Reg::Float(2), offset: 8, size: 8 }
        ])
    );
    assert_eq!(a.args[6], regs(&[(REG_RDI, 0, 8)]));
    assert_eq!(a.results[0], Location::Registers(vec![RegPiece { reg: Reg::Float(0), offset: 0, size: 8 }]));
}

#[test]
fn small_stack_values_are_aligned() {
    // 9 ints fill the registers; then int8, int32, int8, int64 on the stack.
    let mut t = T::new();
    let i = t.int(8);
    let i8t = t.int(1);
    let i32t = t.int(4);
    let mut args = vec![i; 9];
    args.extend([i8t, i32t, i8t, i]);
    let a = assign(&t.t, &args, &[i8t]).unwrap();
    assert_eq!(a.args[9..], [stack(8), stack(8 + 4), stack(8 + 8), stack(8 + 16)]);
    assert_eq!(a.results, vec![regs(&[(REG_RAX, 0, 1)])]);
}

#[test]
fn unknown_layout_is_an_error_not_a_guess() {
    let mut t = T::new();
    let u = t.add("mystery", 8, Kind::Unknown);
    let i = t.int(8);
    assert_eq!(assign(&t.t, &[i, u], &[]), Err(AbiError::UnknownType("mystery".into())));
    // Typedef loop.
    let l = t.add("loop", 0, Kind::Typedef(None));
    assert!(assign(&t.t, &[l], &[]).is_err());
}

/// The compiler's own DWARF location lists say where each parameter is at the first
/// instruction: compare with our ABI computation for every function of the test program,
/// on every Go toolchain available.
#[test]
fn abi_matches_compiler_dwarf_locations() {
    use crate::dwarf::testutil::*;
    for go in go_matrix() {
        let b = build_go(&go, "attrs", DWARF_FLAGS);
        let d = load_dwarf(&b.path).unwrap();
        let v = &b.version;
        let mut compared = 0;
        let mut stack = 0;
        for name in d.function_names().filter(|n| n.starts_with("main.")) {
            // Go <= 1.21 leaves blank (`_`) parameters out of DWARF: positions shift there.
            // Shaped generics take a hidden dictionary DWARF does not list (`attributes`).
            if name == "main.Blank" || name.contains("[go.shape.") {
                continue;
            }
            let f = d.function(name).unwrap();
            let args: Vec<_> = f.args().map(|p| p.ty).collect();
            let results: Vec<_> = f.results().map(|p| p.ty).collect();
            let a = assign(&d.types, &args, &results).unwrap_or_else(|e| panic!("{v} {name}: {e}"));
            for (p, loc) in f.args().zip(&a.args) {
                let Some(pieces) = &p.entry_location else { continue };
                let Some(dw) = from_dwarf(pieces) else { continue };
                assert!(agrees(loc, &dw), "{v} {name} {}: ours {loc:?}, DWARF {dw:?} ({pieces:?})", p.name);
                compared += 1;
                if matches!(loc, Location::Stack { .. }) {
                    stack += 1;
                }
            }
        }
        assert!(compared > 40 && stack >= 4, "{v}: only {compared} params compared, {stack} on the stack");
    }
}

#[test]
fn dwarf_location_conversion() {
    use crate::dwarf::{Loc, LocPiece};
    let p = |loc, size| LocPiece { loc, size };
    assert_eq!(
        from_dwarf(&[p(Loc::Reg(0), Some(8)), p(Loc::Reg(3), Some(8))]),
        Some(regs(&[(REG_RAX, 0, 8), (REG_RBX, 8, 8)]))
    );
    assert_eq!(from_dwarf(&[p(Loc::Cfa(0), Some(8)), p(Loc::Cfa(8), Some(8))]), Some(stack(8)));
    assert_eq!(from_dwarf(&[p(Loc::Cfa(16), None)]), Some(stack(24)));
    // Non-contiguous memory, mixed, nothing: not usable.
    assert_eq!(from_dwarf(&[p(Loc::Cfa(0), Some(8)), p(Loc::Cfa(24), Some(8))]), None);
    assert_eq!(from_dwarf(&[p(Loc::Reg(0), Some(8)), p(Loc::Cfa(8), Some(8))]), None);
    assert_eq!(from_dwarf(&[]), None);
    assert_eq!(from_dwarf(&[p(Loc::Reg(7), None)]), None); // RSP is no argument register
    assert!(from_dwarf(&[p(Loc::Reg(17), None)]).unwrap().in_float_register());
    // Optimized-out pieces are skipped; agreement only checks what DWARF says.
    let partial = from_dwarf(&[p(Loc::Reg(0), Some(8)), p(Loc::Empty, Some(8))]).unwrap();
    assert!(agrees(&regs(&[(REG_RAX, 0, 8), (REG_RBX, 8, 8)]), &partial));
    assert!(!agrees(&regs(&[(REG_RBX, 0, 8), (REG_RCX, 8, 8)]), &partial));
    // Go's pieces leave out padding: `struct { t uint8; n int64 }` is pieces of 1 and 8 bytes
    // (the second at 1, not 8). Same registers in the same order agree; others do not.
    let padded = from_dwarf(&[p(Loc::Reg(0), Some(1)), p(Loc::Reg(3), Some(8))]).unwrap();
    assert!(agrees(&regs(&[(REG_RAX, 0, 1), (REG_RBX, 8, 8)]), &padded));
    assert!(!agrees(&regs(&[(REG_RBX, 0, 1), (REG_RAX, 8, 8)]), &padded), "order");
    assert!(!agrees(&regs(&[(REG_RBX, 0, 1), (REG_RCX, 8, 8)]), &padded), "shifted by a missing parameter");
}
