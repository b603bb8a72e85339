//! Go's internal register ABI (ABIInternal) on amd64, after `src/cmd/compile/abi-internal.md`:
//! where each receiver / argument / result of a function is at its entry and at its RET
//! instructions.
//!
//! The algorithm (abi-internal.md, "Function call argument and result passing"):
//! - integer registers RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11; floats X0..X14;
//! - receiver, then arguments, are *assigned* in order; results again from RAX / X0;
//! - assigning a value: zero-sized -> the stack sequence; else try to register-assign it
//!   (recursively: bool/ints/pointers/maps/chans/funcs = 1 int register, floats 1 FP register,
//!   complex = 2 FP, string and interface = 2 int, slice = 3 int, struct = field by field,
//!   array of length 0 = nothing, length 1 = its element, longer arrays fail); when that fails
//!   or runs out of registers, the registers it took are given back and the WHOLE value goes
//!   to the stack sequence at its alignment;
//! - the stack sequence: stack-assigned receiver and arguments, pointer alignment,
//!   stack-assigned results, pointer alignment, spill area.
//!
//! The sequence starts right above the return address: at the entry probe and at every RET
//! SP points at the return address, so sequence offset `o` is at `SP + 8 + o`.

use gotel_shared::{REG_R10, REG_R11, REG_R8, REG_R9, REG_RAX, REG_RBX, REG_RCX, REG_RDI, REG_RSI};

use crate::dwarf::types::{Kind, TypeId, TypeTable, MAX_TYPE_DEPTH};

/// pt_regs slots of the integer argument registers, in ABI order.
pub const INT_REGS: [u8; 9] = [REG_RAX, REG_RBX, REG_RCX, REG_RDI, REG_RSI, REG_R8, REG_R9, REG_R10, REG_R11];
/// Number of floating-point argument registers (X0..X14).
pub const NUM_FLOAT_REGS: usize = 15;
/// Bytes between SP at a probe and the first stack-assigned value (the return address).
pub const STACK_BASE: i64 = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AbiError {
    /// The layout of a type is unknown, so nothing at or after it can be placed.
    #[error("the layout of type `{0}` is unknown")]
    UnknownType(String),
    #[error("type `{0}` is nested too deeply")]
    TooDeep(String),
}

/// A register that holds (part of) a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// pt_regs slot (`gotel_shared::REG_*`) of an integer register.
    Int(u8),
    /// Xn: uprobes cannot read vector registers, so such values are unreadable.
    Float(u8),
}

/// One register-assigned word of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegPiece {
    pub reg: Reg,
    /// Byte offset of this part in the value's memory layout (e.g. 8 for a string's length).
    pub offset: u64,
    /// Bytes of the part (1..=8).
    pub size: u64,
}

/// Where a receiver, argument or result is at the entry (arguments) or RET (results) probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// In registers, one piece per base value, in memory-layout order.
    Registers(Vec<RegPiece>),
    /// On the stack, whole, in its memory layout at SP + `sp_offset`.
    Stack { sp_offset: i64 },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Stack { sp_offset } => write!(f, "stack SP+{sp_offset}"),
            Location::Registers(pieces) => {
                let names: Vec<String> = pieces
                    .iter()
                    .map(|p| match p.reg {
                        Reg::Int(slot) => reg_name(slot).to_string(),
                        Reg::Float(x) => format!("X{x}"),
                    })
                    .collect();
                if names.is_empty() {
                    write!(f, "no registers")
                } else {
                    write!(f, "{}", names.join("+"))
                }
            }
        }
    }
}

/// Name of a pt_regs slot.
pub fn reg_name(slot: u8) -> &'static str {
    use gotel_shared::*;
    match slot {
        REG_RAX => "RAX",
        REG_RBX => "RBX",
        REG_RCX => "RCX",
        REG_RDX => "RDX",
        REG_RDI => "RDI",
        REG_RSI => "RSI",
        REG_R8 => "R8",
        REG_R9 => "R9",
        REG_R10 => "R10",
        REG_R11 => "R11",
        REG_R12 => "R12",
        REG_R13 => "R13",
        REG_R14 => "R14",
        REG_R15 => "R15",
        REG_RBP => "RBP",
        _ => "?",
    }
}

impl Location {
    /// Some part of the value lives in an XMM register.
    pub fn in_float_register(&self) -> bool {
        matches!(self, Location::Registers(p) if p.iter().any(|p| matches!(p.reg, Reg::Float(_))))
    }
}

/// Locations of a function's receiver + arguments and results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub args: Vec<Location>,
    pub results: Vec<Location>,
}

/// Assigns locations to `args` (receiver first) and `results`, types from `types`.
///
/// Fails only when a type's layout is unknown. The location of an argument depends only on
/// the arguments before it, and a result's register location only on the results before it;
/// a result's stack offset depends on all arguments.
pub fn assign(types: &TypeTable, args: &[TypeId], results: &[TypeId]) -> Result<Assignment, AbiError> {
    let mut st = State { types, int: 0, float: 0, stack: 0 };
    let mut out_args = Vec::with_capacity(args.len());
    for &a in args {
        out_args.push(st.assign(a)?);
    }
    st.stack = align_up(st.stack, 8);
    st.int = 0;
    st.float = 0;
    let mut out_results = Vec::with_capacity(results.len());
    for &r in results {
        out_results.push(st.assign(r)?);
    }
    Ok(Assignment { args: out_args, results: out_results })
}

fn align_up(v: u64, a: u64) -> u64 {
    let a = a.max(1);
    v.div_ceil(a).saturating_mul(a)
}

struct State<'a> {
    types: &'a TypeTable,
    int: usize,
    float: usize,
    /// Bytes of the stack sequence so far.
    stack: u64,
}

/// Register-assignment failed: the value goes to the stack.
struct NoFit;

impl State<'_> {
    fn assign(&mut self, ty: TypeId) -> Result<Location, AbiError> {
        let name = || self.types.name(Some(ty)).to_string();
        let size = self.types.size(ty).ok_or_else(|| AbiError::UnknownType(name()))?;
        let align = self.types.align(ty).ok_or_else(|| AbiError::UnknownType(name()))?;
        let (int, float) = (self.int, self.float);
        if size > 0 {
            let mut pieces = Vec::new();
            match self.reg_assign(ty, 0, 0, &mut pieces)? {
                Ok(()) => return Ok(Location::Registers(pieces)),
                Err(NoFit) => {
                    self.int = int;
                    self.float = float;
                }
            }
        }
        self.stack = align_up(self.stack, align);
        let off = self.stack;
        self.stack = self.stack.saturating_add(size);
        Ok(Location::Stack { sp_offset: STACK_BASE.saturating_add(i64::try_from(off).unwrap_or(i64::MAX)) })
    }

    fn int_reg(&mut self, offset: u64, size: u64, out: &mut Vec<RegPiece>) -> Result<(), NoFit> {
        let reg = *INT_REGS.get(self.int).ok_or(NoFit)?;
        self.int += 1;
        out.push(RegPiece { reg: Reg::Int(reg), offset, size });
        Ok(())
    }

    fn float_reg(&mut self, offset: u64, size: u64, out: &mut Vec<RegPiece>) -> Result<(), NoFit> {
        if self.float >= NUM_FLOAT_REGS {
            return Err(NoFit);
        }
        out.push(RegPiece { reg: Reg::Float(self.float as u8), offset, size });
        self.float += 1;
        Ok(())
    }

    /// Register-assigns the value of type `ty` at byte `offset` of the parameter. The outer
    /// `Result` is a hard error (unknown layout), the inner one "does not fit in registers".
    fn reg_assign(
        &mut self,
        ty: TypeId,
        offset: u64,
        depth: usize,
        out: &mut Vec<RegPiece>,
    ) -> Result<Result<(), NoFit>, AbiError> {
        let name = || self.types.name(Some(ty)).to_string();
        if depth > MAX_TYPE_DEPTH {
            return Err(AbiError::TooDeep(name()));
        }
        let (_, t) = self.types.underlying(ty).ok_or_else(|| AbiError::UnknownType(name()))?;
        let size = t.size;
        Ok(match &t.kind {
            Kind::Bool | Kind::Int | Kind::Uint | Kind::Uintptr if size <= 8 => self.int_reg(offset, size, out),
            Kind::Float if size <= 8 => self.float_reg(offset, size, out),
            Kind::Complex if size <= 16 => {
                let half = size / 2;
                self.float_reg(offset, half, out).and_then(|_| self.float_reg(offset + half, half, out))
            }
            Kind::Pointer(_) | Kind::UnsafePointer | Kind::Map | Kind::Chan | Kind::Func => {
                self.int_reg(offset, 8, out)
            }
            Kind::String | Kind::Interface { .. } => {
                self.int_reg(offset, 8, out).and_then(|_| self.int_reg(offset + 8, 8, out))
            }
            Kind::Slice(_) => self
                .int_reg(offset, 8, out)
                .and_then(|_| self.int_reg(offset + 8, 8, out))
                .and_then(|_| self.int_reg(offset + 16, 8, out)),
            Kind::Struct(fields) => {
                for f in fields {
                    let fty = f.ty.ok_or_else(|| AbiError::UnknownType(name()))?;
                    if let Err(NoFit) = self.reg_assign(fty, offset.saturating_add(f.offset), depth + 1, out)? {
                        return Ok(Err(NoFit));
                    }
                }
                Ok(())
            }
            Kind::Array { len: 0, .. } => Ok(()),
            Kind::Array { elem: Some(e), len: 1 } => return self.reg_assign(*e, offset, depth + 1, out),
            Kind::Array { .. } => Err(NoFit),
            _ => return Err(AbiError::UnknownType(name())),
        })
    }
}

#[cfg(test)]
mod tests;

/// The location DWARF gives for a parameter at the function entry (`dwarf::Param::
/// entry_location`), in the same terms as [`assign`]. `None` when it says nothing usable.
/// Pieces DWARF marks as optimized out are left out of `Registers`.
pub fn from_dwarf(pieces: &[crate::dwarf::LocPiece]) -> Option<Location> {
    use crate::dwarf::{dwarf_reg_to_pt_regs, Loc};
    let mut regs = Vec::new();
    let mut stack = None;
    let mut off = 0u64;
    for p in pieces {
        let size = p.size.unwrap_or(8);
        match p.loc {
            Loc::Empty => {}
            Loc::Reg(r) if (17..=31).contains(&r) => {
                regs.push(RegPiece { reg: Reg::Float((r - 17) as u8), offset: off, size })
            }
            Loc::Reg(r) => regs.push(RegPiece { reg: Reg::Int(dwarf_reg_to_pt_regs(r)?), offset: off, size }),
            Loc::Cfa(k) => {
                // Memory pieces must be the value's contiguous memory layout.
                let base = k.checked_sub(i64::try_from(off).ok()?)?;
                if *stack.get_or_insert(base) != base || !regs.is_empty() {
                    return None;
                }
            }
        }
        off = off.saturating_add(size);
    }
    match (stack, regs.is_empty()) {
        (Some(k), true) => Some(Location::Stack { sp_offset: STACK_BASE.checked_add(k)? }),
        (None, false) => Some(Location::Registers(regs)),
        _ => None,
    }
}

/// True when `ours` says nothing that contradicts the compiler's `dwarf` location: the same
/// stack slot, or DWARF's registers among ours in the same order. Offsets are not compared:
/// Go's DWARF pieces leave out padding (a `uint8` field followed by an `int64` is a 1-byte
/// piece then an 8-byte one, at 1 instead of 8), so they drift from the value's layout while
/// naming the same registers (zap.Field's 8 registers were reported as disagreeing, printed
/// identically). A real disagreement (a parameter DWARF leaves out shifts every later one)
/// changes the registers.
pub fn agrees(ours: &Location, dwarf: &Location) -> bool {
    match (ours, dwarf) {
        (Location::Stack { sp_offset: a }, Location::Stack { sp_offset: b }) => a == b,
        (Location::Registers(a), Location::Registers(b)) => {
            let mut rest = a.iter();
            b.iter().all(|d| rest.any(|o| o.reg == d.reg))
        }
        _ => false,
    }
}
