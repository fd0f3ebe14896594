//! Process lifecycle: exec, exit and fork.
//!
//! exec and exit use the stable `sched` tracepoints (field offsets parsed
//! from tracefs by the loader). fork prefers `tp_btf`, which hands us the
//! child `task_struct` so threads can be told from processes; the plain
//! tracepoint is the fallback and flags its records as maybe-threads.

use agent_common::{
    EventKind, ExecEvent, ExitEvent, FileId, ForkEvent, ARGV_LEN, EXEC_ARGV_TRUNCATED,
    EXEC_ARGV_UNAVAILABLE, EXEC_AUID_KNOWN, EXEC_FILE_KNOWN, EXEC_NAME_KNOWN, EXEC_PPID_UNKNOWN,
    EXEC_START_KNOWN, EXIT_CODE_KNOWN, FORK_MAYBE_THREAD, FORK_START_KNOWN, OFFSET_UNKNOWN,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel, generated,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
    scope::task_in_scope,
};

#[inline(always)]
fn current() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// Reads a field of a kernel struct at a loader-resolved offset.
#[inline(always)]
pub(crate) unsafe fn read_field<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == OFFSET_UNKNOWN {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[inline(always)]
fn current_task() -> u64 {
    unsafe { generated::bpf_get_current_task() }
}

#[tracepoint]
pub fn vigil_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current();
    if tgid == conf!(agent_tgid) || !task_in_scope() {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(EventKind::Exec);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    unsafe {
        (*ev).header = header(EventKind::Exec, tgid, tid);
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).cgroup_id = generated::bpf_get_current_cgroup_id();
        crate::mem::comm_into(&raw mut (*ev).comm);
        (*ev).flags = 0;
        (*ev).ppid = 0;
        (*ev).filename_len = 0;
        (*ev).argv_len = 0;

        // `__data_loc char[] filename`: low 16 bits offset, high 16 bits length.
        let loc: u32 = ctx.read_at(conf!(tp_exec_filename) as usize).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let n = generated::bpf_probe_read_kernel_str(
            (*ev).filename.as_mut_ptr().cast(),
            (*ev).filename.len() as u32,
            src.cast(),
        );
        if n > 0 {
            (*ev).filename_len = (n - 1) as u32;
        }

        let task = current_task();
        match read_field::<u64>(task, conf!(task_real_parent))
            .and_then(|parent| read_field::<u32>(parent, conf!(task_tgid)))
        {
            Some(ppid) => (*ev).ppid = ppid,
            None => (*ev).flags |= EXEC_PPID_UNKNOWN,
        }

        // The start time /proc/PID/stat reports (field 22 is this in clock
        // ticks), so a kill much later can tell this process from one that
        // reused its pid.
        match read_field::<u64>(task, conf!(task_start_boottime)) {
            Some(t) => {
                (*ev).start_boottime_ns = t;
                (*ev).flags |= EXEC_START_KNOWN;
            }
            None => (*ev).start_boottime_ns = 0,
        }

        // Who logged in, kept across su and sudo (Sigma's LogonId).
        (*ev)._pad = 0;
        match read_field::<u32>(task, conf!(task_loginuid)) {
            Some(auid) => {
                (*ev).auid = auid;
                (*ev).flags |= EXEC_AUID_KNOWN;
            }
            None => (*ev).auid = 0,
        }

        let mm = read_field::<u64>(task, conf!(task_mm)).unwrap_or(0);
        // What the process maps: the identity detection matches against
        // files written earlier, whatever path either was named by.
        let exe_file = read_field::<u64>(mm, conf!(mm_exe_file)).unwrap_or(0);
        match crate::file::file_id(exe_file) {
            Some(id) => {
                (*ev).exe = id;
                (*ev).flags |= EXEC_FILE_KNOWN;
            }
            None => (*ev).exe = FileId::default(),
        }
        // The file that runs, not the path handed to execve: a memfd run
        // through /proc/self/fd/N, fexecve or execveat(AT_EMPTY_PATH) is
        // named `memfd:NAME` with no links.
        (*ev).exe_links = 0;
        (*ev).exe_name_len = 0;
        match crate::file::file_links_and_name(exe_file, &mut (*ev).exe_name) {
            Some((links, len)) => {
                (*ev).exe_links = links;
                (*ev).exe_name_len = len;
                (*ev).flags |= EXEC_NAME_KNOWN;
            }
            None => (*ev).exe_name[0] = 0,
        }

        // argv from the new mm: [arg_start, arg_end) holds NUL-separated arguments.
        let start = read_field::<u64>(mm, conf!(mm_arg_start)).unwrap_or(0);
        let end = read_field::<u64>(mm, conf!(mm_arg_end)).unwrap_or(0);
        if start == 0 || end <= start {
            (*ev).flags |= EXEC_ARGV_UNAVAILABLE;
        } else {
            let mut len = end - start;
            if len > ARGV_LEN as u64 {
                len = ARGV_LEN as u64;
                (*ev).flags |= EXEC_ARGV_TRUNCATED;
            }
            let len = len as u32 & (ARGV_LEN as u32 * 2 - 1);
            let len = if len > ARGV_LEN as u32 {
                ARGV_LEN as u32
            } else {
                len
            };
            let r = generated::bpf_probe_read_user(
                (*ev).argv.as_mut_ptr().cast(),
                len,
                start as *const _,
            );
            if r == 0 {
                (*ev).argv_len = len;
            } else {
                (*ev).flags |= EXEC_ARGV_UNAVAILABLE;
            }
        }
    }
    entry.submit(crate::events::batched());
    Ok(())
}

#[tracepoint]
pub fn vigil_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current();
    if tgid == conf!(agent_tgid) || !task_in_scope() {
        return Ok(());
    }
    // Report the process, not each thread: on kernels with `group_dead` the
    // last thread out reports; otherwise the group leader does.
    let group_dead_off = conf!(tp_exit_group_dead);
    let last = if group_dead_off != OFFSET_UNKNOWN {
        unsafe { ctx.read_at::<u8>(group_dead_off as usize).unwrap_or(0) != 0 }
    } else {
        tgid == tid
    };
    if !last {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop(EventKind::Exit);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::Exit, tgid, tid);
        crate::mem::comm_into(&raw mut (*ev).comm);
        match read_field::<u32>(current_task(), conf!(task_exit_code)) {
            Some(code) => {
                (*ev).exit_code = code;
                (*ev).flags = EXIT_CODE_KNOWN;
            }
            None => {
                (*ev).exit_code = 0;
                (*ev).flags = 0;
            }
        }
    }
    entry.submit(crate::events::batched());
    Ok(())
}

#[inline(always)]
fn emit_fork(
    parent_tgid: u32,
    parent_tid: u32,
    child_tgid: u32,
    child_tid: u32,
    flags: u32,
    child_start: Option<u64>,
) {
    if parent_tgid == conf!(agent_tgid) || !task_in_scope() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count_drop(EventKind::Fork);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::Fork, parent_tgid, parent_tid);
        (*ev).child_tgid = child_tgid;
        (*ev).child_tid = child_tid;
        (*ev)._pad = 0;
        match child_start {
            Some(t) => {
                (*ev).child_start_boottime_ns = t;
                (*ev).flags = flags | FORK_START_KNOWN;
            }
            None => {
                (*ev).child_start_boottime_ns = 0;
                (*ev).flags = flags;
            }
        }
    }
    entry.submit(crate::events::batched());
}

/// Tier 1: `tp_btf/sched_process_fork(parent, child)`.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn vigil_fork_btf(ctx: BtfTracePointContext) -> u32 {
    let child: u64 = ctx.arg(1);
    let child_tgid = unsafe { read_field::<u32>(child, conf!(task_tgid)) };
    let child_tid = unsafe { read_field::<u32>(child, conf!(task_pid)) };
    let (tgid, tid) = current();
    match (child_tgid, child_tid) {
        (Some(ctgid), Some(ctid)) if ctgid == ctid => {
            // Set by copy_process before this tracepoint; exec keeps it, so
            // the child's GUID is the same before and after it execs.
            let start = unsafe { read_field::<u64>(child, conf!(task_start_boottime)) };
            emit_fork(tgid, tid, ctgid, ctid, 0, start)
        }
        (Some(_), Some(_)) => {} // a new thread, not a new process
        _ => emit_fork(tgid, tid, 0, 0, FORK_MAYBE_THREAD, None),
    }
    0
}

/// Tier 2: the plain tracepoint names the child's tid only.
#[tracepoint]
pub fn vigil_fork_tp(ctx: TracePointContext) -> u32 {
    let child: i32 = unsafe { ctx.read_at(conf!(tp_fork_child_pid) as usize).unwrap_or(0) };
    let (tgid, tid) = current();
    emit_fork(
        tgid,
        tid,
        child as u32,
        child as u32,
        FORK_MAYBE_THREAD,
        None,
    );
    0
}
