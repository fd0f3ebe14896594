//! Vigil userspace agent. Each folder owns one concern:
//! `kernel` loads and attaches the eBPF programs; `pipeline` turns ring
//! buffer bytes into typed [`record`]s; `detect` raises ATT&CK-mapped alerts;
//! `response` runs playbooks over `enforce` (blocklist, nftables, kill,
//! audit log); `sink` writes records out (JSON lines, Kafka); `service`
//! holds the daemon's endpoints (metrics, control socket, systemd notify);
//! `rules` reads Sigma rule files for the `sigma` detector;
//! `daemon` wires them together and runs the loop.

pub mod config;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod fusion;
pub mod kernel;
pub mod pipeline;
pub mod record;
pub mod response;
pub mod rules;
pub mod service;
pub mod sink;
pub mod util;
