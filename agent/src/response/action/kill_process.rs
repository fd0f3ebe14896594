//! `kill_process`: SIGKILL through a pidfd to the alert's pid, refused when
//! the pid is no longer the process the alert named (its start time, or
//! its executable) or when that executable is protected (a package's file
//! or under `response.protected_prefixes`) and the step does not name it.

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "kill_process",
    keys: &["allow_protected"],
    inverse: "none: a killed process cannot be revived",
    parse: |k| {
        Some(StepAction::KillProcess(KillProcess {
            allow_protected: k.file_paths("allow_protected")?,
        }))
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillProcess {
    /// Protected executables this step may kill, by exact path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_protected: Vec<String>,
}

impl Act for KillProcess {
    fn describe(&self, ctx: &AlertContext) -> String {
        let pid = ctx
            .pid()
            .map_or_else(|| "null".to_string(), |p| p.to_string());
        format!("kill pid {pid}")
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Change(self)
    }
}

impl HostChange for KillProcess {
    fn resolve(&self, ctx: &AlertContext) -> Result<Apply, String> {
        let pid = ctx.pid().ok_or("alert has no pid")?;
        let exe = ctx.exe().map(str::to_string);
        let start = ctx.start_time();
        let allow = self.allow_protected.clone();
        Ok(Box::new(move |ex| {
            ex.kill(pid, exe.as_deref(), start, &allow)
        }))
    }
}
