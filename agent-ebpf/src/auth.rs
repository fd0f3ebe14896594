//! Authentication results without reading logs: uprobe and uretprobe on
//! `pam_authenticate` in libpam. The entry remembers the handle per
//! thread; the return reads service, user and rhost from libpam's private
//! struct at offsets the loader verified against the installed libpam.

use agent_common::{AuthEvent, EventKind, AUTH_FIELDS_KNOWN, OFFSET_UNKNOWN};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, generated},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
};

#[map]
static PAM_CALLS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[uprobe]
pub fn vigil_pam_enter(ctx: ProbeContext) -> u32 {
    if let Some(pamh) = ctx.arg::<u64>(0) {
        let _ = PAM_CALLS.insert(&bpf_get_current_pid_tgid(), &pamh, 0);
    }
    0
}

/// Copies the C string whose pointer sits at `pamh + off` into `dst`.
#[inline(always)]
fn read_field(pamh: u64, off: u32, dst: &mut [u8]) {
    if off == OFFSET_UNKNOWN {
        return;
    }
    let Ok(ptr) = (unsafe { bpf_probe_read_user((pamh + off as u64) as *const u64) }) else {
        return;
    };
    if ptr == 0 {
        return;
    }
    unsafe {
        generated::bpf_probe_read_user_str(
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
            ptr as *const _,
        );
    }
}

#[uretprobe]
pub fn vigil_pam_exit(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pamh) = (unsafe { PAM_CALLS.get(&id) }).copied() else {
        return 0;
    };
    let _ = PAM_CALLS.remove(&id);
    let tgid = (id >> 32) as u32;
    if tgid == conf!(agent_tgid) || !crate::scope::task_in_scope() {
        return 0;
    }
    let retval: i32 = ctx.ret();
    let Some(mut entry) = EVENTS.reserve::<AuthEvent>(0) else {
        count_drop(EventKind::Auth);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::Auth, tgid, id as u32);
        (*ev).retval = retval;
        (*ev).uid = bpf_get_current_uid_gid() as u32;
        (*ev)._pad = 0;
        crate::mem::comm_into(&raw mut (*ev).comm);
        (*ev).service = [0; 32];
        (*ev).user = [0; 64];
        (*ev).rhost = [0; 64];
        let known = conf!(pam_user) != OFFSET_UNKNOWN;
        (*ev).flags = if known { AUTH_FIELDS_KNOWN } else { 0 };
        read_field(pamh, conf!(pam_service), &mut (*ev).service);
        read_field(pamh, conf!(pam_user), &mut (*ev).user);
        read_field(pamh, conf!(pam_rhost), &mut (*ev).rhost);
    }
    entry.submit(0);
    0
}
