//! `scope.netns: self`: keep only the events of one network namespace, so
//! an agent can watch one container, or one of several test hosts on a
//! kernel. The loader writes the namespace's inode number; 0 keeps all.

use aya_ebpf::helpers::generated;

use crate::{config::conf, process::read_field};

#[inline(always)]
fn net_is(net: u64, want: u32) -> bool {
    unsafe { read_field::<u32>(net, conf!(net_inum)) == Some(want) }
}

/// Whether the current task belongs to the namespace in scope.
#[inline(always)]
pub(crate) fn task_in_scope() -> bool {
    let want = conf!(scope_netns);
    if want == 0 {
        return true;
    }
    let task = unsafe { generated::bpf_get_current_task() };
    // An exiting task may have dropped its nsproxy already: not ours to report.
    let Some(nsproxy) = (unsafe { read_field::<u64>(task, conf!(task_nsproxy)) }) else {
        return false;
    };
    let Some(net) = (unsafe { read_field::<u64>(nsproxy, conf!(nsproxy_net_ns)) }) else {
        return false;
    };
    net_is(net, want)
}

/// Whether a socket (its `struct sock` address) belongs to the namespace
/// in scope.
#[inline(always)]
pub(crate) fn sock_in_scope(sk: u64) -> bool {
    let want = conf!(scope_netns);
    if want == 0 {
        return true;
    }
    let Some(net) = (unsafe { read_field::<u64>(sk, conf!(sock_net)) }) else {
        return false;
    };
    net_is(net, want)
}

/// Whether a packet (its `struct sk_buff` address) arrived on a device of
/// the namespace in scope.
#[inline(always)]
pub(crate) fn skb_in_scope(skb: u64) -> bool {
    let want = conf!(scope_netns);
    if want == 0 {
        return true;
    }
    let Some(dev) = (unsafe { read_field::<u64>(skb, conf!(skb_dev)) }) else {
        return false;
    };
    let Some(net) = (unsafe { read_field::<u64>(dev, conf!(dev_net)) }) else {
        return false;
    };
    net_is(net, want)
}
