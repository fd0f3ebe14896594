//! `block_ip`: the alert's source or destination in the kernel blocklist,
//! both directions, through the never-block guard, for `ttl`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Act, Apply, Effect, HostChange, Spec, StepAction};
use crate::response::engine::AlertContext;

pub const SPEC: Spec = Spec {
    name: "block_ip",
    keys: &["target", "ttl"],
    inverse: "unblock (restoring any block it replaced)",
    parse: |k| {
        let target = k.choice(
            "target",
            &[
                ("source", Endpoint::Source),
                ("destination", Endpoint::Destination),
            ],
            "target must be `source` or `destination` of the alert",
        );
        let ttl = k.duration("ttl");
        Some(StepAction::BlockIp(BlockIp {
            target: target?,
            ttl_s: ttl?,
        }))
    },
};

/// Which address of the alert a step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `entities.src_ip`
    Source,
    /// `entities.dst_ip`
    Destination,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockIp {
    pub target: Endpoint,
    pub ttl_s: u64,
}

impl Act for BlockIp {
    fn describe(&self, ctx: &AlertContext) -> String {
        let ip = ctx
            .ip(self.target)
            .map(|i| i.to_string())
            .unwrap_or_else(|| "?".into());
        format!("block {ip} for {}s", self.ttl_s)
    }

    fn effect(&self) -> Effect<'_> {
        Effect::Change(self)
    }
}

impl HostChange for BlockIp {
    fn resolve(&self, ctx: &AlertContext) -> Result<Apply, String> {
        let ip: IpAddr = ctx
            .ip(self.target)
            .ok_or_else(|| format!("alert has no {:?} address", self.target).to_lowercase())?;
        let ttl_s = self.ttl_s;
        Ok(Box::new(move |ex| ex.block(ip, ttl_s)))
    }

    fn adds_block(&self) -> bool {
        true
    }
}
