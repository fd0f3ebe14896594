//! Files created for writing by network-facing processes (the download
//! half of "written by a network service, then executed"). Only processes
//! that connected, accepted or listened are watched, so the common case
//! costs one map lookup per openat. The entry remembers the call per
//! thread; the exit reports it only when openat returned a descriptor, with
//! the identity (dev, inode, generation) of the file that descriptor names,
//! so a failed attempt on a file the process may not write is no evidence.

use agent_common::{EventKind, FileEvent, FileId, EXE_NAME_LEN, FILE_ID_KNOWN};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
    process::read_field,
};

/// Processes that talked to the network (tgid → 1).
#[map]
pub static NETFACING: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// An openat in flight: the filename pointer and flags, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingOpen {
    filename: u64,
    flags: u32,
    _pad: u32,
}

/// openat calls by watched threads between entry and exit (pid_tgid →
/// call). A thread has one syscall in flight; the LRU bound drops calls
/// that never returned (a thread killed in the syscall).
#[map]
static PENDING_OPENS: LruHashMap<u64, PendingOpen> = LruHashMap::with_max_entries(4096, 0);

const O_WRONLY: i64 = 0o1;
const O_RDWR: i64 = 0o2;
const O_CREAT: i64 = 0o100;

#[inline(always)]
pub fn mark_netfacing(tgid: u32) {
    if tgid != 0 {
        let _ = NETFACING.insert(&tgid, &1, 0);
    }
}

/// The identity of a `struct file`: its inode's number, generation and
/// superblock device.
#[inline(always)]
pub unsafe fn file_id(file: u64) -> Option<FileId> {
    let inode = unsafe { read_field::<u64>(file, conf!(file_inode))? };
    let ino = unsafe { read_field::<u64>(inode, conf!(inode_ino))? };
    let generation = unsafe { read_field::<u32>(inode, conf!(inode_generation))? };
    let sb = unsafe { read_field::<u64>(inode, conf!(inode_sb))? };
    let dev = unsafe { read_field::<u32>(sb, conf!(sb_dev))? };
    Some(FileId {
        ino,
        dev,
        generation,
    })
}

/// The link count of `file`'s inode and its dentry's own name, written to
/// `name` (NUL-terminated); returns the count and the name's length.
#[inline(always)]
pub unsafe fn file_links_and_name(file: u64, name: &mut [u8; EXE_NAME_LEN]) -> Option<(u32, u32)> {
    let inode = unsafe { read_field::<u64>(file, conf!(file_inode))? };
    let links = unsafe { read_field::<u32>(inode, conf!(inode_nlink))? };
    let dentry = unsafe { read_field::<u64>(file, conf!(file_dentry))? };
    let ptr = unsafe { read_field::<u64>(dentry, conf!(dentry_name))? };
    if ptr == 0 {
        return None;
    }
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            name.as_mut_ptr().cast(),
            EXE_NAME_LEN as u32,
            ptr as *const _,
        )
    };
    (n > 0).then(|| (links, (n - 1) as u32))
}

/// The file descriptor `fd` of the current task names:
/// `current->files->fdt->fd[fd]`, bounds-checked against `max_fds`.
#[inline(always)]
unsafe fn current_fd_file(fd: u32) -> Option<u64> {
    let task = unsafe { generated::bpf_get_current_task() };
    let files = unsafe { read_field::<u64>(task, conf!(task_files))? };
    let fdt = unsafe { read_field::<u64>(files, conf!(files_fdt))? };
    let max = unsafe { read_field::<u32>(fdt, conf!(fdt_max_fds))? };
    if fd >= max {
        return None;
    }
    let fds = unsafe { read_field::<u64>(fdt, conf!(fdt_fd))? };
    if fds == 0 {
        return None;
    }
    let file = unsafe { bpf_probe_read_kernel((fds + fd as u64 * 8) as *const u64).ok()? };
    (file != 0).then_some(file)
}

/// `sys_enter_openat`: remember a watched process's open for writing.
#[tracepoint]
pub fn vigil_file_write(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_file_write(&ctx) };
    0
}

unsafe fn try_file_write(ctx: &TracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if unsafe { NETFACING.get(&tgid) }.is_none()
        || tgid == conf!(agent_tgid)
        || !crate::scope::task_in_scope()
    {
        return Ok(());
    }
    let flags: i64 = unsafe { ctx.read_at(conf!(tp_openat_flags) as usize)? };
    if flags & (O_WRONLY | O_RDWR) == 0 || flags & O_CREAT == 0 {
        return Ok(());
    }
    let filename: u64 = unsafe { ctx.read_at(conf!(tp_openat_filename) as usize)? };
    let call = PendingOpen {
        filename,
        flags: flags as u32,
        _pad: 0,
    };
    PENDING_OPENS.insert(&id, &call, 0)?;
    Ok(())
}

/// `sys_exit_openat`: report the remembered open if it returned an fd.
#[tracepoint]
pub fn vigil_file_opened(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_file_opened(&ctx) };
    0
}

unsafe fn try_file_opened(ctx: &TracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { PENDING_OPENS.get(&id) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_OPENS.remove(&id);
    let ret: i64 = unsafe { ctx.read_at(conf!(tp_openat_exit_ret) as usize)? };
    if ret < 0 {
        // Refused (EACCES, EEXIST, …): nothing was written.
        return Ok(());
    }
    let fd = ret as u32;
    let file = unsafe { current_fd_file(fd).and_then(|f| file_id(f)) };
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        count_drop(EventKind::FileWrite);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::FileWrite, (id >> 32) as u32, id as u32);
        (*ev).open_flags = call.flags;
        (*ev).fd = fd;
        match file {
            Some(f) => {
                (*ev).file = f;
                (*ev).flags = FILE_ID_KNOWN;
            }
            None => {
                (*ev).file = FileId::default();
                (*ev).flags = 0;
            }
        }
        crate::mem::comm_into(&raw mut (*ev).comm);
        // The caller's buffer is still there after the call; the path is
        // for people to read, the identity above is what detection uses.
        let n = generated::bpf_probe_read_user_str(
            (*ev).path.as_mut_ptr().cast(),
            (*ev).path.len() as u32,
            call.filename as *const _,
        );
        (*ev).path_len = if n > 0 { (n - 1) as u32 } else { 0 };
    }
    entry.submit(crate::events::batched());
    Ok(())
}
