//! Fleet fusion: correlates what every agent reports on Kafka, turns one
//! host's evidence into protection for the whole fleet, and assembles
//! incidents that cross hosts. Each stage is a pure function of its state
//! and one record (`consensus`, `chains`, `incidents`); the Kafka driver
//! feeds them, writes their outputs and keeps their state in compacted
//! changelog topics, so any instance can die and another take over.

pub mod chains;
pub mod config;
pub mod consensus;
pub mod groups;
pub mod incidents;
pub mod inventory;
pub mod model;
pub mod narrative;
pub mod run;
pub mod stream;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("fusion config: {0}")]
    Config(String),
    #[error("fusion kafka: {0}")]
    Kafka(String),
}

/// Hex SHA-256 over the parts, each length-prefixed so no two part lists
/// collide; ids derived from it are stable across restarts.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
