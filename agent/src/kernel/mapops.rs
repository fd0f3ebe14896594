//! Map operations aya does not offer.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// `bpf_attr` for element commands (map_fd, key, value, flags).
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Takes an entry out of a hash map in one system call instead of a
/// lookup and a delete: the agent takes every finished flow this way, up
/// to two per short connection. `None` when the key is absent.
pub fn take<K, V: Default>(map: &MapData, key: &K) -> Option<V> {
    let mut value = V::default();
    let attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: &mut value as *mut V as u64,
        flags: 0,
    };
    // SAFETY: attr points at a key and a value buffer of the map's sizes
    // (the caller's types are the map's, as for aya's typed maps); the
    // kernel writes only the value buffer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    (rc == 0).then_some(value)
}
