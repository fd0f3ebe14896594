//! The kernel side as userspace sees it: loading the eBPF object, the probe
//! table, kernel BTF and tracefs offsets, and libpam's private layout.

pub mod attach;
pub mod btf;
pub mod loader;
pub mod mapops;
pub mod pam;
pub mod probes;
pub mod stats;
pub mod tracefs;
