//! `action` records: every enforcement change, as one JSON line with
//! `kind, id, ts, host, action, target, ttl_s, state`.

use std::path::Path;

use serde::Serialize;

use crate::util::clock::now_rfc3339;
pub use crate::util::id::new_id;

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub kind: &'static str,
    pub id: String,
    pub ts: String,
    pub host: String,
    /// block, unblock, expire, isolate, unisolate, kill, freeze.
    pub action: &'static str,
    pub target: String,
    pub ttl_s: Option<u64>,
    /// applied, refused, failed, expired, noop.
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Action {
    pub fn new(
        host: &str,
        action: &'static str,
        target: impl Into<String>,
        ttl_s: Option<u64>,
        state: &'static str,
        detail: impl Into<String>,
    ) -> Action {
        Action {
            kind: "action",
            id: new_id(),
            ts: now_rfc3339(),
            host: host.to_string(),
            action,
            target: target.into(),
            ttl_s,
            state,
            detail: detail.into(),
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Appends to the hash-chained audit log `<state_dir>/audit.jsonl`,
    /// synced before returning.
    pub fn record(&self, state_dir: &Path) -> Result<(), crate::enforce::audit::AuditError> {
        let v = serde_json::to_value(self).unwrap_or_default();
        crate::enforce::audit::append(state_dir, &v)
    }
}
