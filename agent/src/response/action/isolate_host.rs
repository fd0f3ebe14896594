//! `isolate_host`: nftables isolation for `ttl`, keeping management,
//! resolvers, gateways and brokers reachable.

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "isolate_host",
    keys: &["ttl"],
    inverse: "unisolate (unless the host was already isolated)",
    parse: |k| {
        Some(StepAction::IsolateHost(IsolateHost {
            ttl_s: k.duration("ttl")?,
        }))
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolateHost {
    pub ttl_s: u64,
}

impl Act for IsolateHost {
    fn describe(&self, _ctx: &AlertContext) -> String {
        format!("isolate host for {}s", self.ttl_s)
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Change(self)
    }
}

impl HostChange for IsolateHost {
    fn resolve(&self, _ctx: &AlertContext) -> Result<Apply, String> {
        let ttl_s = self.ttl_s;
        Ok(Box::new(move |ex| ex.isolate(ttl_s)))
    }
}
