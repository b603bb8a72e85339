#!/usr/bin/env python3
"""Writes a copy of a Go binary whose .symtab gives every function symbol the same (empty) name,
an address inside .text that no instruction branches to, and a size of SIZE bytes (argv[3], default 512 KiB).

Reproduces the quadratic start-up found by the binary_open fuzz target (a timeout, not a crash):
`GoBinary::open` -> `dedup_abi_wrappers` puts all same-named functions in one group and, for
every candidate, disassembles every other member (`disasm::branches_to`, after copying its code
with `to_vec`): O(n^2 x code size). A real Go binary has groups of two (ABI0 / ABIInternal).

    fuzz/regressions/same-name-symbols.py fuzz/seeds/bin/hello-normal /tmp/same-name
    time target/release/gotel --probe main.main -- /tmp/same-name
"""
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
SIZE = int(sys.argv[3], 0) if len(sys.argv) > 3 else 0x80000
b = bytearray(open(src, "rb").read())
assert b[:4] == b"\x7fELF" and b[4] == 2, "ELF64 only"
shoff, = struct.unpack_from("<Q", b, 0x28)
shentsize, shnum = struct.unpack_from("<HH", b, 0x3A)
text_addr = None
for i in range(shnum):
    sh = shoff + i * shentsize
    if struct.unpack_from("<I", b, sh + 4)[0] == 1 and struct.unpack_from("<Q", b, sh + 8)[0] & 4:
        text_addr = struct.unpack_from("<Q", b, sh + 0x10)[0]  # first SHF_EXECINSTR section
        break
patched = 0
for i in range(shnum):
    sh = shoff + i * shentsize
    sh_type, = struct.unpack_from("<I", b, sh + 4)
    if sh_type != 2:  # SHT_SYMTAB
        continue
    off, size = struct.unpack_from("<QQ", b, sh + 0x18)
    entsize, = struct.unpack_from("<Q", b, sh + 0x38)
    for s in range(off, off + size, entsize):
        if b[s + 4] & 0xF == 2:  # STT_FUNC
            struct.pack_into("<I", b, s, 0)  # st_name -> "" (index 0 of .strtab)
            struct.pack_into("<QQ", b, s + 8, text_addr + 7 + 13 * patched, SIZE)
            patched += 1
open(dst, "wb").write(b)
print(f"{patched} function symbols renamed to \"\" in {dst}")
