//! Decoding a function's machine code (iced-x86): where its RET instructions are, and where its
//! stack-check prologue ends.
//!
//! Why the prologue matters: Go functions start with `CMP RSP, [R14+0x10]; JBE morestack`.
//! When the stack must grow (or the goroutine is asked to yield), `runtime.morestack` runs and
//! then re-executes the function from its first instruction, so a probe there would fire twice
//! for one call. The instruction right after the conditional jump is reached exactly once per
//! call, with SP and every argument register still untouched, so gotel probes there.
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Offsets (from the function start) of every RET instruction.
pub fn ret_offsets(code: &[u8], vaddr: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if matches!(ins.mnemonic(), Mnemonic::Ret) {
            out.push(ins.ip() - vaddr);
        }
    }
    out
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
