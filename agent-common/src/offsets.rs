//! Layout facts about the running kernel that the kernel programs cannot
//! know at compile time (no CO-RE from Rust): struct field offsets resolved
//! from `/sys/kernel/btf/vmlinux` and tracepoint field offsets parsed from
//! tracefs. Userspace fills one [`AgentConfig`] and writes it into the
//! object's read-only `CONFIG` global before load.

/// Offset value meaning "not resolved"; the kernel side then skips the read.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Thread group id of the agent itself, whose own events are dropped in the kernel.
    pub agent_tgid: u32,
    /// Offsets into `struct task_struct`.
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    /// `u64 start_boottime`: what `/proc/PID/stat` field 22 is computed from.
    pub task_start_boottime: u32,
    /// `kuid_t loginuid` (CONFIG_AUDIT): the audit login uid.
    pub task_loginuid: u32,
    /// `struct files_struct *files`, for the file an fd names.
    pub task_files: u32,
    /// Offsets into `struct mm_struct`.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `struct file *exe_file`: the executable the process maps.
    pub mm_exe_file: u32,
    /// `files_struct.fdt`, `fdtable.max_fds` and `fdtable.fd`.
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    /// `file.f_inode`, `inode.{i_ino,i_sb,i_generation}`, `super_block.s_dev`:
    /// a file's identity (dev, inode, generation).
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_generation: u32,
    pub sb_dev: u32,
    /// Offset of `skc_net` in `struct sock` (through `__sk_common`).
    pub sock_net: u32,
    /// `sched/sched_process_exec`: `__data_loc char[] filename`.
    pub tp_exec_filename: u32,
    /// `sched/sched_process_exit`: `bool group_dead` (unknown on older kernels).
    pub tp_exit_group_dead: u32,
    /// `sched/sched_process_fork`: `parent_pid`, `child_pid`.
    pub tp_fork_parent_pid: u32,
    pub tp_fork_child_pid: u32,
    /// `sock/inet_sock_set_state` fields.
    pub tp_sk_skaddr: u32,
    pub tp_sk_oldstate: u32,
    pub tp_sk_newstate: u32,
    pub tp_sk_sport: u32,
    pub tp_sk_dport: u32,
    pub tp_sk_family: u32,
    pub tp_sk_protocol: u32,
    pub tp_sk_saddr: u32,
    pub tp_sk_daddr: u32,
    pub tp_sk_saddr_v6: u32,
    pub tp_sk_daddr_v6: u32,
    /// `tcp/tcp_send_reset`: `skaddr` and the sockaddr blobs.
    pub tp_rst_skaddr: u32,
    pub tp_rst_saddr: u32,
    pub tp_rst_daddr: u32,
    /// Offsets of `service_name`, `user` and `rhost` in libpam's private
    /// `struct pam_handle`, verified against the installed build.
    pub pam_service: u32,
    pub pam_user: u32,
    pub pam_rhost: u32,
    /// `syscalls/sys_enter_openat`: `filename` pointer and `flags`.
    pub tp_openat_filename: u32,
    pub tp_openat_flags: u32,
    /// `syscalls/sys_exit_openat`: `long ret` (the new fd, or -errno).
    pub tp_openat_exit_ret: u32,
    /// Network namespace (inode number) whose events are kept; 0 keeps
    /// every namespace (`scope.netns: host`).
    pub scope_netns: u32,
    /// `task_struct.nsproxy`, `nsproxy.net_ns`, and the offset of
    /// `ns.inum` in `struct net`: the namespace of a task or a socket.
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub net_inum: u32,
    /// `tcp/tcp_send_reset`: `skbaddr`; `sk_buff.dev` and the offset of the
    /// `struct net *` in `net_device.nd_net`: the namespace of a reset sent
    /// without a socket (a closed port).
    pub tp_rst_skbaddr: u32,
    pub skb_dev: u32,
    pub dev_net: u32,
    /// What an exec runs, beyond its identity: `inode.i_nlink` (0 for a
    /// memfd or a deleted file), `file.f_path.dentry` and
    /// `dentry.d_name.name` (each a sum of two member offsets).
    pub inode_nlink: u32,
    pub file_dentry: u32,
    pub dentry_name: u32,
    /// Offsets from a `struct sock *` of the fields `sock/inet_sock_set_state`
    /// builds its record from, for its `tp_btf` form: `inet_sock.inet_sport`
    /// and `inet_saddr` (the local end: `skc_num` is zeroed before a close
    /// is traced), `skc_dport` (ports in network order), `skc_family`,
    /// `skc_daddr`, `skc_v6_rcv_saddr`, `skc_v6_daddr` and `sk_protocol` (a
    /// plain u16 since 5.6; unresolved where it is a bit-field).
    pub sk_sport: u32,
    pub sk_dport: u32,
    pub sk_family: u32,
    pub sk_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_protocol: u32,
}

const _: () = assert!(core::mem::size_of::<AgentConfig>() == 63 * 4);

impl AgentConfig {
    /// Offsets as seen on Linux 6.x x86-64 tracefs; struct offsets unknown.
    /// Userspace overwrites each with what it resolves on the running kernel.
    pub const DEFAULT: AgentConfig = AgentConfig {
        agent_tgid: 0,
        task_real_parent: OFFSET_UNKNOWN,
        task_tgid: OFFSET_UNKNOWN,
        task_pid: OFFSET_UNKNOWN,
        task_mm: OFFSET_UNKNOWN,
        task_exit_code: OFFSET_UNKNOWN,
        task_start_boottime: OFFSET_UNKNOWN,
        task_loginuid: OFFSET_UNKNOWN,
        task_files: OFFSET_UNKNOWN,
        mm_arg_start: OFFSET_UNKNOWN,
        mm_arg_end: OFFSET_UNKNOWN,
        mm_exe_file: OFFSET_UNKNOWN,
        files_fdt: OFFSET_UNKNOWN,
        fdt_max_fds: OFFSET_UNKNOWN,
        fdt_fd: OFFSET_UNKNOWN,
        file_inode: OFFSET_UNKNOWN,
        inode_ino: OFFSET_UNKNOWN,
        inode_sb: OFFSET_UNKNOWN,
        inode_generation: OFFSET_UNKNOWN,
        sb_dev: OFFSET_UNKNOWN,
        sock_net: OFFSET_UNKNOWN,
        tp_exec_filename: 8,
        tp_exit_group_dead: OFFSET_UNKNOWN,
        tp_fork_parent_pid: 12,
        tp_fork_child_pid: 20,
        tp_sk_skaddr: 8,
        tp_sk_oldstate: 16,
        tp_sk_newstate: 20,
        tp_sk_sport: 24,
        tp_sk_dport: 26,
        tp_sk_family: 28,
        tp_sk_protocol: 30,
        tp_sk_saddr: 32,
        tp_sk_daddr: 36,
        tp_sk_saddr_v6: 40,
        tp_sk_daddr_v6: 56,
        tp_rst_skaddr: 16,
        tp_rst_saddr: 32,
        tp_rst_daddr: 60,
        pam_service: OFFSET_UNKNOWN,
        pam_user: OFFSET_UNKNOWN,
        pam_rhost: OFFSET_UNKNOWN,
        tp_openat_filename: 24,
        tp_openat_flags: 32,
        tp_openat_exit_ret: 16,
        scope_netns: 0,
        task_nsproxy: OFFSET_UNKNOWN,
        nsproxy_net_ns: OFFSET_UNKNOWN,
        net_inum: OFFSET_UNKNOWN,
        tp_rst_skbaddr: 8,
        skb_dev: OFFSET_UNKNOWN,
        dev_net: OFFSET_UNKNOWN,
        inode_nlink: OFFSET_UNKNOWN,
        file_dentry: OFFSET_UNKNOWN,
        dentry_name: OFFSET_UNKNOWN,
        sk_sport: OFFSET_UNKNOWN,
        sk_dport: OFFSET_UNKNOWN,
        sk_family: OFFSET_UNKNOWN,
        sk_saddr: OFFSET_UNKNOWN,
        sk_daddr: OFFSET_UNKNOWN,
        sk_v6_rcv_saddr: OFFSET_UNKNOWN,
        sk_v6_daddr: OFFSET_UNKNOWN,
        sk_protocol: OFFSET_UNKNOWN,
    };
}
