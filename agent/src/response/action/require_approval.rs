//! `require_approval`: parks the incident until a person approves or
//! denies, or `timeout` applies `on_timeout`.

use serde::{Deserialize, Serialize};

use super::{Act, Effect, Spec, StepAction};
use crate::response::engine::AlertContext;
use crate::response::playbook::Decision;

pub const SPEC: Spec = Spec {
    name: "require_approval",
    keys: &["timeout", "on_timeout"],
    inverse: "none",
    parse: |k| {
        let timeout = k.duration("timeout");
        let on_timeout = k.choice(
            "on_timeout",
            &[("approve", Decision::Approve), ("deny", Decision::Deny)],
            "on_timeout must be `approve` or `deny`",
        );
        Some(StepAction::RequireApproval(RequireApproval {
            timeout_s: timeout?,
            on_timeout: on_timeout?,
        }))
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequireApproval {
    pub timeout_s: u64,
    pub on_timeout: Decision,
}

impl Act for RequireApproval {
    fn describe(&self, _ctx: &AlertContext) -> String {
        "ask again".to_string()
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Approval {
            timeout_s: self.timeout_s,
            on_timeout: self.on_timeout,
        }
    }
}
