//! `quarantine_file`: moves the alert's executable under the state
//! directory with its hash, path, mode and owner, so it can be restored.

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "quarantine_file",
    keys: &[],
    inverse: "restore the file with its path, mode and owner",
    parse: |_| Some(StepAction::QuarantineFile(QuarantineFile {})),
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineFile {}

impl Act for QuarantineFile {
    fn describe(&self, ctx: &AlertContext) -> String {
        // The path as a JSON string, as approvals have always shown it.
        let exe = ctx.exe().map_or_else(
            || "null".to_string(),
            |e| serde_json::Value::from(e).to_string(),
        );
        format!("quarantine {exe}")
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Change(self)
    }
}

impl HostChange for QuarantineFile {
    fn resolve(&self, ctx: &AlertContext) -> Result<Apply, String> {
        let path = ctx.exe().ok_or("alert has no executable")?.to_string();
        Ok(Box::new(move |ex| ex.quarantine(&path)))
    }
}
