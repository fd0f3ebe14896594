//! Response: YAML playbooks turn alerts into incidents whose steps change
//! the host (through the containment layer), wait for people, expire and
//! roll back.

pub mod action;
pub mod engine;
pub mod executor;
pub mod plan;
pub mod playbook;
pub mod protect;
pub mod quarantine;
pub mod record;
pub mod yaml;
