//! A small reader of the kernel's raw BTF (`/sys/kernel/btf/vmlinux`), enough to find a struct
//! member's offset: the socket path needs `task_struct.thread.fsbase`, and aya's programs get no
//! CO-RE relocations. Its own, because aya 0.14 keeps BTF types and members crate-private and
//! the maintained BTF crate (btf-rs) is LGPL.

/// Byte offset of a member path (`thread.fsbase`) inside struct `root`, from raw BTF. Members
/// of anonymous structs and unions are searched too.
pub fn member_offset(btf: &[u8], root: &str, path: &[&str]) -> Option<u32> {
    let types = BtfTypes::parse(btf)?;
    let mut id = types.struct_named(root)?;
    let mut offset_bits = 0u32;
    for name in path {
        let (ty, bits) = types.member(id, name)?;
        offset_bits += bits;
        id = ty;
    }
    offset_bits.is_multiple_of(8).then_some(offset_bits / 8)
}

/// The type table of a BTF blob: for each type id, where its record starts.
struct BtfTypes<'a> {
    data: &'a [u8],
    strings: &'a [u8],
    starts: Vec<usize>,
}

const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;

impl<'a> BtfTypes<'a> {
    fn parse(btf: &'a [u8]) -> Option<BtfTypes<'a>> {
        let u32_at = |o: usize| Some(u32::from_le_bytes(btf.get(o..o + 4)?.try_into().ok()?));
        if btf.get(0..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let data = btf.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut starts = vec![0]; // type id 0 is void
        let mut o = 0;
        while o + 12 <= data.len() {
            starts.push(o);
            let info = u32::from_le_bytes(data[o + 4..o + 8].try_into().ok()?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                _ => 0,
            };
            o += 12 + extra;
        }
        Some(BtfTypes { data, strings, starts })
    }

    fn word(&self, o: usize) -> u32 {
        self.data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0)
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn kind(&self, id: u32) -> Option<(u32, usize, bool)> {
        let o = *self.starts.get(id as usize)?;
        let info = self.word(o + 4);
        Some(((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 != 0))
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        (1..self.starts.len() as u32).find(|&id| {
            matches!(self.kind(id), Some((BTF_KIND_STRUCT, vlen, _)) if vlen > 0)
                && self.name(self.word(self.starts[id as usize])) == name.as_bytes()
        })
    }

    /// Follows typedef, volatile, const, restrict and type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.kind(id) {
                Some((8..=11 | 18, _, _)) => id = self.word(self.starts[id as usize] + 8),
                _ => break,
            }
        }
        id
    }

    /// (type, bit offset) of member `name` of struct or union `id`, looking into anonymous
    /// members.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let id = self.resolve(id);
        let (kind, vlen, kflag) = self.kind(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        let base = self.starts[id as usize] + 12;
        for i in 0..vlen {
            let m = base + 12 * i;
            let (name_off, ty, off) = (self.word(m), self.word(m + 4), self.word(m + 8));
            let bits = if kflag { off & 0xff_ffff } else { off };
            if name_off == 0 {
                if let Some((t, b)) = self.member(ty, name) {
                    return Some((t, bits + b));
                }
            } else if self.name(name_off) == name.as_bytes() {
                return Some((ty, bits));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's own BTF: `thread.fsbase` is found, inside `task_struct`, 8-aligned.
    #[test]
    fn fsbase_offset_from_the_running_kernel() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let off = member_offset(&btf, "task_struct", &["thread", "fsbase"]).expect("task_struct.thread.fsbase");
        let thread = member_offset(&btf, "task_struct", &["thread"]).unwrap();
        assert!(off > thread && off.is_multiple_of(8), "fsbase at {off}, thread at {thread}");
        assert_eq!(member_offset(&btf, "task_struct", &["no_such_member"]), None);
        assert_eq!(member_offset(&btf, "no_such_struct", &["thread"]), None);
    }

    /// `task_struct.tgid`, which SOCK_OPS reads: found, right after `pid` (both `pid_t`, declared
    /// together in include/linux/sched.h).
    #[test]
    fn tgid_offset_from_the_running_kernel() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let tgid = member_offset(&btf, "task_struct", &["tgid"]).expect("task_struct.tgid");
        let pid = member_offset(&btf, "task_struct", &["pid"]).expect("task_struct.pid");
        assert_eq!(tgid, pid + 4, "tgid at {tgid}, pid at {pid}");
    }
}
