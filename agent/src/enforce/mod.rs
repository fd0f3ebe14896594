//! Containment enforced locally: the kernel blocklist (XDP in, cgroup_skb
//! out), nftables host isolation and process kill, all behind the
//! never-block guard, all with expiry, all recorded as `action` records.

pub mod actions;
pub mod attach;
pub mod audit;
pub mod blocklist;
pub mod caps;
pub mod cidr;
pub mod containment;
pub mod guard;
pub mod isolate;
pub mod kill;
pub mod state;
pub mod testrun;

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("enforcement map {name}: {reason}")]
    Map { name: String, reason: String },
    #[error(
        "loading the enforcement programs failed: {0} (needs root with CAP_BPF and CAP_NET_ADMIN)"
    )]
    Load(#[from] aya::EbpfError),
    #[error("enforcement program {name}: {reason}")]
    Program { name: String, reason: String },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error(transparent)]
    Guard(#[from] guard::GuardRefusal),
    #[error(transparent)]
    Cidr(#[from] cidr::CidrError),
    #[error("nft: {0}")]
    Nft(String),
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
    #[error("{0}")]
    Kill(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
