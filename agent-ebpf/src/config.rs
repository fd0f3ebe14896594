//! Read-only configuration written by the loader (see `AgentConfig`).

use agent_common::AgentConfig;

#[unsafe(no_mangle)]
pub(crate) static CONFIG: AgentConfig = AgentConfig::DEFAULT;

/// Reads one field of the loader-provided config. Volatile so the compiler
/// cannot fold in the compile-time default.
macro_rules! conf {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::config::CONFIG.$field) };
        v
    }};
}
pub(crate) use conf;
