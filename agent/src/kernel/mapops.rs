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

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `bpf_attr` for batch commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries read per system call by [`for_each`].
pub const BATCH: usize = 1024;

/// Calls `f` for every entry of a hash map, reading [`BATCH`] entries per
/// system call (`BPF_MAP_LOOKUP_BATCH`, kernel 5.6+) instead of two calls
/// per entry, until `f` returns false. The kernel walks buckets in order,
/// so an entry evicted under the walk does not restart it. Err when the
/// first call fails (an older kernel: the caller walks key by key).
pub fn for_each<K: Copy + Default, V: Copy + Default>(
    map: &MapData,
    f: &mut dyn FnMut(&K, &V) -> bool,
) -> std::io::Result<()> {
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    // The hash map's cursor is a bucket index (u32); room for a u64.
    let mut cursor = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &cursor as *const u64 as u64
            },
            out_batch: &mut cursor as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: keys and values hold BATCH entries of the map's key and
        // value sizes; the cursor has room for the kernel's token; the
        // kernel writes only those and `attr.count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc != 0).then(std::io::Error::last_os_error);
        let done = matches!(&err, Some(e) if e.raw_os_error() == Some(libc::ENOENT));
        if let Some(e) = err {
            if !done {
                // Past the first batch the caller has seen entries: a walk
                // cut short is finished by the next one, never repeated.
                return if first { Err(e) } else { Ok(()) };
            }
        }
        // The last call (ENOENT) may still return entries.
        let n = (attr.count as usize).min(BATCH);
        for (k, v) in keys[..n].iter().zip(&values[..n]) {
            if !f(k, v) {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
        first = false;
    }
}
