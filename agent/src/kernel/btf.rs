//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough
//! to find the byte offset of a struct member, following anonymous structs
//! and unions. Rust kernel programs get no CO-RE relocations, so the loader
//! resolves the offsets it needs here and hands them over in `CONFIG`.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF data (bad magic {0:#06x})")]
    BadMagic(u16),
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind { kind: u32, id: u32 },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Bits of a bit-field member (kind_flag structs), else 0.
    bitfield_size: u32,
}

struct Type {
    kind: u32,
    name_off: u32,
    /// Referenced type for modifiers and typedefs.
    type_ref: u32,
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is BTF's implicit `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Truncated(off))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Truncated(0))?;
        if magic != 0xeb9f {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let str_start = hdr_len + str_off;
        let strings = data
            .get(str_start..str_start + str_len)
            .ok_or(BtfError::Truncated(str_start))?
            .to_vec();

        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            type_ref: 0,
            members: Vec::new(),
        }];
        let mut pos = hdr_len + type_off;
        let end = pos + type_len;
        while pos < end {
            let name_off = u32_at(data, pos)?;
            let info = u32_at(data, pos + 4)?;
            let size_type = u32_at(data, pos + 8)?;
            pos += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw = u32_at(data, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(data, m)?,
                            type_id: u32_at(data, m + 4)?,
                            bit_offset: if kflag { raw & 0x00ff_ffff } else { raw },
                            bitfield_size: if kflag { raw >> 24 } else { 0 },
                        });
                    }
                    12 * vlen
                }
                KIND_FUNC_PROTO => {
                    // Parameters: name, type.
                    for i in 0..vlen {
                        let m = pos + i * 8;
                        members.push(Member {
                            name_off: u32_at(data, m)?,
                            type_id: u32_at(data, m + 4)?,
                            bit_offset: 0,
                            bitfield_size: 0,
                        });
                    }
                    8 * vlen
                }
                KIND_ENUM => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | 16 | KIND_TYPE_TAG => 0,
                other => {
                    return Err(BtfError::UnknownKind {
                        kind: other,
                        id: types.len() as u32,
                    })
                }
            };
            pos += extra;
            types.push(Type {
                kind,
                name_off,
                type_ref: size_type,
                members,
            });
        }

        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT || t.kind == KIND_UNION {
                let name = btf.name(t.name_off);
                if !name.is_empty() && !t.members.is_empty() {
                    btf.structs_by_name
                        .entry(name.to_string())
                        .or_insert(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.type_ref
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The arguments `tp_btf/<tp>` hands a program, the context's own
    /// `void *` first, as C names their types (`struct sock *`, `int32`),
    /// from the kernel's `btf_trace_<tp>` typedef; `None` without one. A
    /// program reads its arguments by position: this is what says the
    /// positions are still the ones it was written for.
    pub fn tp_btf_args(&self, tp: &str) -> Option<Vec<String>> {
        let want = format!("btf_trace_{tp}");
        let typedef = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == want)?;
        let ptr = self.types.get(typedef.type_ref as usize)?;
        let proto = (ptr.kind == KIND_PTR).then(|| self.resolve(ptr.type_ref))??;
        (proto.kind == KIND_FUNC_PROTO).then(|| {
            proto
                .members
                .iter()
                .map(|p| self.c_type(p.type_id))
                .collect()
        })
    }

    /// A type as [`Btf::tp_btf_args`] names it.
    fn c_type(&self, id: u32) -> String {
        match self.resolve(id) {
            Some(t) if t.kind == KIND_PTR => match self.resolve(t.type_ref) {
                Some(p) if p.kind == KIND_STRUCT => format!("struct {} *", self.name(p.name_off)),
                // Type 0 is void.
                Some(p) if p.kind == 0 => "void *".to_string(),
                _ => "pointer".to_string(),
            },
            Some(t) if t.kind == KIND_INT => format!("int{}", t.type_ref * 8),
            _ => "other".to_string(),
        }
    }

    /// `field` of `t` (anonymous members searched) and its bit offset.
    fn find_in<'a>(&'a self, t: &'a Type, field: &str) -> Option<(u32, &'a Member)> {
        for m in &t.members {
            let name = self.name(m.name_off);
            if name == field {
                return Some((m.bit_offset, m));
            }
            if name.is_empty() {
                if let Some(inner) = self.resolve(m.type_id) {
                    if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                        if let Some((off, found)) = self.find_in(inner, field) {
                            return Some((m.bit_offset + off, found));
                        }
                    }
                }
            }
        }
        None
    }

    fn find(&self, name: &str, field: &str) -> Option<(u32, &Member)> {
        let id = *self.structs_by_name.get(name)?;
        let t = self.types.get(id as usize)?;
        self.find_in(t, field)
    }

    /// Byte offset of `field` in `struct name` (anonymous members included).
    pub fn member_offset(&self, name: &str, field: &str) -> Option<u32> {
        let (bits, _) = self.find(name, field)?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// As [`Btf::member_offset`], only for a whole integer of `size` bytes:
    /// a program reading `size` bytes there must not read a bit-field and
    /// its neighbours (`sock.sk_protocol` was one before Linux 5.6).
    pub fn int_member_offset(&self, name: &str, field: &str, size: u32) -> Option<u32> {
        let (bits, m) = self.find(name, field)?;
        let t = self.resolve(m.type_id)?;
        (bits % 8 == 0 && m.bitfield_size == 0 && t.kind == KIND_INT && t.type_ref == size)
            .then_some(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: header, then `types`, then `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&0xeb9fu16.to_le_bytes());
        data.push(1);
        data.push(0);
        for x in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.extend_from_slice(types);
        data.extend_from_slice(strings);
        data
    }

    /// Builds BTF with `struct outer { int a; struct { int b; long c; }; }`.
    fn fixture() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0long\0".to_vec();
        // offsets: outer=1 a=7 b=9 c=11 int=13 long=17
        let mut types = Vec::new();
        let push = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        // 1: int
        push(&mut types, 13);
        push(&mut types, KIND_INT << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // 2: long
        push(&mut types, 17);
        push(&mut types, KIND_INT << 24);
        push(&mut types, 8);
        push(&mut types, 64);
        // 3: anonymous struct { int b @0; long c @64 bits }
        push(&mut types, 0);
        push(&mut types, (KIND_STRUCT << 24) | 2);
        push(&mut types, 16);
        for (n, t, o) in [(9u32, 1u32, 0u32), (11, 2, 64)] {
            push(&mut types, n);
            push(&mut types, t);
            push(&mut types, o);
        }
        // 4: struct outer { int a @0; <anon> @64 }
        push(&mut types, 1);
        push(&mut types, (KIND_STRUCT << 24) | 2);
        push(&mut types, 24);
        for (n, t, o) in [(7u32, 1u32, 0u32), (0, 3, 64)] {
            push(&mut types, n);
            push(&mut types, t);
            push(&mut types, o);
        }
        blob(&types, &strings)
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&fixture()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "b"), Some(8));
        assert_eq!(btf.member_offset("outer", "c"), Some(16));
        assert_eq!(btf.member_offset("outer", "nope"), None);
        assert_eq!(btf.member_offset("missing", "a"), None);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(Btf::parse(b"xx"), Err(BtfError::BadMagic(_))));
        let data = fixture();
        assert!(Btf::parse(&data[..30]).is_err());
    }

    /// Ignored by a plain `cargo test`, so a machine without kernel BTF
    /// reports it as not run instead of passed; `cargo xtask test` runs it.
    #[test]
    #[ignore = "needs kernel BTF (/sys/kernel/btf/vmlinux); cargo xtask test runs it"]
    fn resolves_running_kernel_offsets_when_available() {
        let btf =
            Btf::from_sys_fs().expect("this test needs kernel BTF at /sys/kernel/btf/vmlinux");
        // task_struct and mm_struct exist on every BTF kernel.
        assert!(btf.member_offset("task_struct", "tgid").is_some());
        assert!(btf.member_offset("task_struct", "real_parent").is_some());
        assert!(btf.member_offset("mm_struct", "arg_start").is_some());
        // What a file's identity and a process's start time are read from.
        for (s, f) in [
            ("task_struct", "start_boottime"),
            ("task_struct", "files"),
            ("mm_struct", "exe_file"),
            ("files_struct", "fdt"),
            ("fdtable", "max_fds"),
            ("fdtable", "fd"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("inode", "i_generation"),
            ("super_block", "s_dev"),
            // What an exec runs: link count and the dentry's name.
            ("inode", "i_nlink"),
            ("file", "f_path"),
            ("path", "dentry"),
            ("dentry", "d_name"),
            ("qstr", "name"),
            // tp_btf/inet_sock_set_state.
            ("inet_sock", "inet_sport"),
            ("inet_sock", "inet_saddr"),
            ("sock_common", "skc_dport"),
            ("sock_common", "skc_family"),
            ("sock_common", "skc_daddr"),
            ("sock_common", "skc_v6_rcv_saddr"),
            ("sock_common", "skc_v6_daddr"),
        ] {
            assert!(btf.member_offset(s, f).is_some(), "{s}.{f}");
        }
        // A plain u16 since 5.6, read as one by the program.
        assert!(btf.int_member_offset("sock", "sk_protocol", 2).is_some());
        // The tp_btf programs read their arguments by position: the table's
        // expectations are what this kernel gives.
        for p in crate::kernel::probes::PROBES {
            if let crate::kernel::probes::Hook::TpBtf { name, args } = p.hook {
                let want: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                assert_eq!(btf.tp_btf_args(name), Some(want), "tp_btf/{name}");
            }
        }
        assert_eq!(btf.tp_btf_args("no_such_tracepoint"), None);
        assert_eq!(btf.int_member_offset("sock", "sk_protocol", 4), None);
    }

    /// `struct bf { int a; int p:8 (bit 40); }` with kind_flag set.
    fn bitfield_fixture() -> Vec<u8> {
        let strings = b"\0bf\0a\0p\0int\0".to_vec();
        // offsets: bf=1 a=4 p=6 int=8
        let mut types = Vec::new();
        let push = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        // 1: int
        push(&mut types, 8);
        push(&mut types, KIND_INT << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // 2: struct bf, kind_flag: member offsets carry the bit-field size.
        push(&mut types, 1);
        push(&mut types, (1 << 31) | (KIND_STRUCT << 24) | 2);
        push(&mut types, 8);
        for (n, raw) in [(4u32, 0u32), (6, (8 << 24) | 40)] {
            push(&mut types, n);
            push(&mut types, 1);
            push(&mut types, raw);
        }
        blob(&types, &strings)
    }

    #[test]
    fn a_whole_integer_is_told_from_a_bit_field_and_from_another_size() {
        let btf = Btf::parse(&bitfield_fixture()).expect("parse");
        assert_eq!(btf.int_member_offset("bf", "a", 4), Some(0));
        assert_eq!(btf.int_member_offset("bf", "a", 2), None, "wrong size");
        // Byte-aligned, so member_offset finds it, but it is a bit-field.
        assert_eq!(btf.member_offset("bf", "p"), Some(5));
        assert_eq!(btf.int_member_offset("bf", "p", 1), None);
        assert_eq!(btf.int_member_offset("bf", "p", 4), None);
        let outer = Btf::parse(&fixture()).expect("parse");
        assert_eq!(outer.int_member_offset("outer", "c", 8), Some(16));
        assert_eq!(outer.int_member_offset("outer", "b", 4), Some(8));
    }
}
