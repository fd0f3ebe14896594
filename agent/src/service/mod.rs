//! The daemon's endpoints: Prometheus metrics, the root-only control
//! socket, and systemd readiness and watchdog notifications.

pub mod accept;
pub mod control;
pub mod metrics;
pub mod notify;
