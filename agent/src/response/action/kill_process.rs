//! `kill_process`: SIGKILL through a pidfd to the alert's pid, refused when
//! the pid now runs something other than the alert's executable.

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "kill_process",
    keys: &[],
    inverse: "none: a killed process cannot be revived",
    parse: |_| Some(StepAction::KillProcess(KillProcess {})),
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillProcess {}

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
        Ok(Box::new(move |ex| ex.kill(pid, exe.as_deref())))
    }
}
