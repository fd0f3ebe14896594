//! `quarantine_file`: moves the alert's executable under the state
//! directory with its hash, path, mode and owner, so it can be restored;
//! refused for a protected file (a package's, or under
//! `response.protected_prefixes`) that the step does not name.

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "quarantine_file",
    keys: &["allow_protected"],
    inverse: "restore the file with its path, mode and owner",
    parse: |k| {
        Some(StepAction::QuarantineFile(QuarantineFile {
            allow_protected: k.file_paths("allow_protected")?,
        }))
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineFile {
    /// Protected files this step may quarantine, by exact path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_protected: Vec<String>,
}

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
        let allow = self.allow_protected.clone();
        Ok(Box::new(move |ex| ex.quarantine(&path, &allow)))
    }
}
