//! `notify`: a `notification` record with the playbook's message.

use serde::{Deserialize, Serialize};

use super::{Act, Effect, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "notify",
    keys: &["message"],
    inverse: "none",
    parse: |k| {
        Some(StepAction::Notify(Notify {
            message: k.string("message")?,
        }))
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notify {
    pub message: String,
}

impl Act for Notify {
    fn describe(&self, _ctx: &AlertContext) -> String {
        format!("notify \"{}\"", self.message)
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Notify(&self.message)
    }
}
