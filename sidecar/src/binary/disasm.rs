//! Decoding a function's machine code (iced-x86): where its RET instructions are, and where its
//! stack-check prologue ends.
//!
//! Why the prologue matters: Go functions start with `CMP RSP, [R14+0x10]; JBE morestack`.
//! When the stack must grow (or the goroutine is asked to yield), `runtime.morestack` runs and
//! then re-executes the function from its first instruction, so a probe there would fire twice
//! for one call. The instruction right after the conditional jump is reached exactly once per
//! call, with SP and every argument register still untouched, so gotel probes there.
//!
//! Why tail jumps matter: a function does not only leave by RET. Compiler wrappers (a method
//! promoted from an embedded field, `(*Outer).M` -> `(*Inner).M`) and some assembly end with
//! `JMP other_function` once their own frame is gone; the callee's RET then returns straight
//! to the wrapper's caller. At that JMP, SP is what it was at entry (the caller's return
//! address on top), exactly as at a RET, so the kernel's depth rule pairs it like a return.
//! Without a probe there the call never ends and would be reported as unwound by a panic.
//! Its results are not computed yet at the JMP (they are the callee's), so none can be read.
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Where a function leaves, as offsets from its first instruction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    /// RET instructions.
    pub rets: Vec<u64>,
    /// Jumps out of the function with its frame torn down (tail calls): return points whose
    /// results belong to the callee.
    pub tail_jumps: Vec<u64>,
    /// Jumps out of the function that gotel cannot show happen with the frame torn down: no
    /// probe goes there, and a call leaving that way is reported as unwound.
    pub unpaired_jumps: Vec<u64>,
}

impl Exits {
    /// Every offset where a return probe goes (RETs and tail jumps), sorted.
    pub fn return_points(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.rets.iter().chain(&self.tail_jumps).copied().collect();
        all.sort_unstable();
        all
    }
}

/// Whether the instruction changes RSP (besides CALL, which gives it back).
fn writes_sp(ins: &Instruction) -> bool {
    matches!(ins.mnemonic(), Mnemonic::Push | Mnemonic::Pop | Mnemonic::Enter | Mnemonic::Leave)
        || ins.op_count() > 0 && ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP
}

/// Every way out of the function: RETs, and unconditional jumps whose target is outside
/// `[vaddr, vaddr + code.len())` (direct) or unknown (indirect). A direct one is a tail jump
/// when the frame is provably gone: the function never touches RSP (a frameless wrapper like
/// `MOV RAX,[RAX]; JMP target`), or the last RSP change before the jump, with no RET or jump in
/// between, is Go's epilogue `POP RBP`. An indirect jump is a tail jump only after that
/// epilogue; otherwise it is taken to be a jump table inside the function (Go's `switch`).
pub fn exits(code: &[u8], vaddr: u64) -> Exits {
    let end = vaddr + code.len() as u64;
    let decode = || {
        let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
        std::iter::from_fn(move || decoder.can_decode().then(|| decoder.decode()))
    };
    let frameless = !decode().any(|ins| writes_sp(&ins));
    let mut out = Exits::default();
    // The last RSP change since the previous RET or jump out: `Some(true)` for `POP RBP`.
    let mut torn_down: Option<bool> = None;
    for ins in decode() {
        let offset = ins.ip() - vaddr;
        if ins.mnemonic() == Mnemonic::Ret {
            out.rets.push(offset);
            torn_down = None;
            continue;
        }
        if writes_sp(&ins) {
            torn_down = Some(ins.mnemonic() == Mnemonic::Pop && ins.op0_register() == Register::RBP);
            continue;
        }
        if ins.flow_control() == FlowControl::UnconditionalBranch {
            if ins.op0_kind() == OpKind::NearBranch64 && (vaddr..end).contains(&ins.near_branch64()) {
                continue;
            }
            let tail = frameless || torn_down == Some(true);
            if tail {
                out.tail_jumps.push(offset);
            } else if ins.op0_kind() == OpKind::NearBranch64 {
                out.unpaired_jumps.push(offset);
            }
            torn_down = None;
        } else if ins.flow_control() == FlowControl::IndirectBranch {
            // A frameless leaf may dispatch a jump table: only an epilogue proves a tail jump.
            if torn_down == Some(true) {
                out.tail_jumps.push(offset);
            }
            torn_down = None;
        }
    }
    out
}

/// Offsets (from the function start) of every RET instruction.
pub fn ret_offsets(code: &[u8], vaddr: u64) -> Vec<u64> {
    exits(code, vaddr).rets
}

/// Offset of the first instruction after the stack-check prologue, if the function has one.
/// Recognised forms (Go 1.17+, amd64, g in R14):
/// `CMP RSP, [R14+16]; JBE`, `LEA R12, [RSP-n]; CMP R12, [R14+16]; JBE`, and the huge-frame
/// `MOV R12, RSP; SUB R12, n; JB ..; CMP R12, [R14+16]; JBE`.
pub fn prologue_end(code: &[u8], vaddr: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut saw_check = false;
    for _ in 0..6 {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut ins);
        if ins.mnemonic() == Mnemonic::Cmp
            && ins.op_count() == 2
            && ins.op1_kind() == OpKind::Memory
            && ins.memory_base() == Register::R14
            && ins.memory_displacement64() == 16
        {
            saw_check = true;
            continue;
        }
        if saw_check && ins.flow_control() == FlowControl::ConditionalBranch {
            return Some(ins.next_ip() - vaddr);
        }
        // Anything else before the check must leave the argument registers alone.
        let allowed = matches!(ins.mnemonic(), Mnemonic::Lea | Mnemonic::Mov | Mnemonic::Sub)
            && ins.op0_register() == Register::R12
            || ins.flow_control() == FlowControl::ConditionalBranch;
        if !allowed {
            return None;
        }
    }
    None
}

/// Whether the code contains a direct CALL or JMP to `target` (an ABI wrapper's tell-tale).
pub fn branches_to(code: &[u8], vaddr: u64, target: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if matches!(ins.flow_control(), FlowControl::Call | FlowControl::UnconditionalBranch)
            && ins.op0_kind() == OpKind::NearBranch64
            && ins.near_branch64() == target
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    // cmp rsp,[r14+10h]; jbe +0x20; push rbp; mov rbp,rsp; ... ret; int3
    const SMALL: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+10h]
        0x76, 0x20, // jbe
        0x55, // push rbp
        0x48, 0x89, 0xe5, // mov rbp,rsp
        0x5d, // pop rbp
        0xc3, // ret
        0x5d, 0xc3, // pop rbp; ret
        0xcc,
    ];

    #[test]
    fn finds_every_ret() {
        assert_eq!(ret_offsets(SMALL, 0x1000), vec![11, 13]);
    }

    #[test]
    fn tail_jumps_are_exits() {
        // A frameless promoted-method wrapper: mov rax,[rax]; jmp rel32 (to 0x100, outside).
        let wrapper = [0x48, 0x8b, 0x00, 0xe9, 0xf8, 0x00, 0x00, 0x00];
        let e = exits(&wrapper, 0);
        assert_eq!((e.rets.clone(), e.tail_jumps.clone(), e.unpaired_jumps.clone()), (vec![], vec![3], vec![]));
        assert_eq!(e.return_points(), vec![3]);
        // With a frame torn down first: push rbp; mov rbp,rsp; sub rsp,16; add rsp,16; pop rbp;
        // mov rax,rbx; jmp rel32 (outside), then a RET path and a jmp back to the start.
        let framed = [
            0x55, // push rbp                 0
            0x48, 0x89, 0xe5, // mov rbp,rsp  1
            0x48, 0x83, 0xec, 0x10, // sub rsp,16   4
            0x48, 0x83, 0xc4, 0x10, // add rsp,16   8
            0x5d, // pop rbp                  12
            0x48, 0x89, 0xd8, // mov rax,rbx  13
            0xe9, 0x00, 0x01, 0x00, 0x00, // jmp +0x100 (outside)   16
            0x48, 0x83, 0xc4, 0x10, // add rsp,16   21
            0x5d, // pop rbp                  25
            0xc3, // ret                      26
            0xeb, 0xe3, // jmp 0 (inside: the morestack loop)   27
        ];
        let e = exits(&framed, 0x1000);
        assert_eq!(e.rets, vec![26]);
        assert_eq!(e.tail_jumps, vec![16]);
        assert!(e.unpaired_jumps.is_empty());
        assert_eq!(e.return_points(), vec![16, 26]);
        // A jump out with the frame still in place is not a return point.
        let live = [0x55, 0x48, 0x89, 0xe5, 0xe9, 0x00, 0x01, 0x00, 0x00, 0x5d, 0xc3];
        let e = exits(&live, 0);
        assert_eq!((e.rets, e.tail_jumps, e.unpaired_jumps), (vec![10], vec![], vec![4]));
        // jmp rax: after an epilogue a tail jump; in a frameless leaf a jump table, not an exit.
        assert_eq!(exits(&[0x55, 0x5d, 0xff, 0xe0], 0).tail_jumps, vec![2]);
        assert_eq!(exits(&[0x48, 0x89, 0xd8, 0xff, 0xe0, 0xc3], 0), Exits { rets: vec![5], ..Exits::default() });
    }

    #[test]
    fn finds_prologue_end() {
        assert_eq!(prologue_end(SMALL, 0x1000), Some(6));
        // lea r12,[rsp-100h]; cmp r12,[r14+10h]; jbe
        let big =
            [0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0, 0, 0, 0, 0xc3];
        assert_eq!(prologue_end(&big, 0), Some(18));
    }

    #[test]
    fn no_prologue_in_leaf_functions() {
        // mov rax, rbx; ret
        assert_eq!(prologue_end(&[0x48, 0x89, 0xd8, 0xc3], 0), None);
        // cmp against something else is not the stack check
        assert_eq!(prologue_end(&[0x48, 0x39, 0xd8, 0x76, 0x00, 0xc3], 0), None);
    }

    #[test]
    fn finds_branch_targets() {
        // call rel32 to 0x2000 from 0x1000: e8 + (0x2000 - 0x1005)
        let rel = (0x2000i64 - 0x1005) as i32;
        let mut code = vec![0xe8];
        code.extend_from_slice(&rel.to_le_bytes());
        assert!(branches_to(&code, 0x1000, 0x2000));
        assert!(!branches_to(&code, 0x1000, 0x3000));
    }
}
