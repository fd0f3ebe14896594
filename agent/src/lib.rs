//! Vigil userspace agent: loads the kernel programs, turns their events and
//! flow sums into typed records, and writes them out.

pub mod audit;
pub mod btf;
pub mod clock;
pub mod community_id;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod enforce;
pub mod event;
pub mod flow;
pub mod loader;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod pam;
pub mod pipeline;
pub mod proc_cache;
pub mod report;
pub mod response;
pub mod tracefs;
