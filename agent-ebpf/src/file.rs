//! Files created for writing by network-facing processes (the download
//! half of "written by a network service, then executed"). Only processes
//! that connected, accepted or listened are watched, so the common case
//! costs one map lookup per openat.

use agent_common::{EventKind, FileEvent};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
};

/// Processes that talked to the network (tgid → 1).
#[map]
pub static NETFACING: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

const O_WRONLY: i64 = 0o1;
const O_RDWR: i64 = 0o2;
const O_CREAT: i64 = 0o100;

#[inline(always)]
pub fn mark_netfacing(tgid: u32) {
    if tgid != 0 {
        let _ = NETFACING.insert(&tgid, &1, 0);
    }
}

#[tracepoint]
pub fn vigil_file_write(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_file_write(&ctx) };
    0
}

unsafe fn try_file_write(ctx: &TracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if unsafe { NETFACING.get(&tgid) }.is_none() || tgid == conf!(agent_tgid) {
        return Ok(());
    }
    let flags: i64 = unsafe { ctx.read_at(conf!(tp_openat_flags) as usize)? };
    if flags & (O_WRONLY | O_RDWR) == 0 || flags & O_CREAT == 0 {
        return Ok(());
    }
    let filename: u64 = unsafe { ctx.read_at(conf!(tp_openat_filename) as usize)? };
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        count_drop(EventKind::FileWrite);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::FileWrite, tgid, id as u32);
        (*ev).flags = flags as u32;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let n = generated::bpf_probe_read_user_str(
            (*ev).path.as_mut_ptr().cast(),
            (*ev).path.len() as u32,
            filename as *const _,
        );
        (*ev).path_len = if n > 0 { (n - 1) as u32 } else { 0 };
    }
    entry.submit(0);
    Ok(())
}
