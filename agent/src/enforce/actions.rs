//! `action` records: every enforcement change, as one JSON line with
//! `kind, id, ts, host, action, target, ttl_s, state`, then `detail`,
//! `incident` and `command` when they are set, and once the action went
//! to the audit log, `audited` with the chain position (`audit_seq`,
//! `audit_hash`) that lets a consumer of `defense.actions` notice records
//! cut from the host's log.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

use crate::util::clock::now_rfc3339;
pub use crate::util::id::new_id;

/// What was done (the record's `action` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Block,
    Unblock,
    /// A block's expiry removed by maintenance.
    Expire,
    Isolate,
    Unisolate,
    Kill,
    Freeze,
    Quarantine,
    Restore,
    /// A playbook step recorded without changing the host (dry-run,
    /// rate-limited), named by its playbook action (`block_ip`, …).
    Step(&'static str),
}

impl Verb {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verb::Block => "block",
            Verb::Unblock => "unblock",
            Verb::Expire => "expire",
            Verb::Isolate => "isolate",
            Verb::Unisolate => "unisolate",
            Verb::Kill => "kill",
            Verb::Freeze => "freeze",
            Verb::Quarantine => "quarantine",
            Verb::Restore => "restore",
            Verb::Step(action) => action,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Verb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How it went (the record's `state` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    Applied,
    /// Not attempted: the guard, a reused pid, a failed precondition.
    Refused,
    Failed,
    /// A block that lapsed and was removed.
    Expired,
    /// Nothing to do (not blocked, not isolated).
    Noop,
    /// What a playbook step would have done in dry-run mode.
    DryRun,
    /// A playbook step held back by the response rate limits.
    RateLimited,
}

impl ActionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionState::Applied => "applied",
            ActionState::Refused => "refused",
            ActionState::Failed => "failed",
            ActionState::Expired => "expired",
            ActionState::Noop => "noop",
            ActionState::DryRun => "dry-run",
            ActionState::RateLimited => "rate-limited",
        }
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename = "action")]
pub struct Action {
    pub id: String,
    pub ts: String,
    pub host: String,
    pub action: Verb,
    pub target: String,
    pub ttl_s: Option<u64>,
    pub state: ActionState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The response incident whose step this was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// The id of the fleet command this executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Whether the audit append succeeded; absent for records that are
    /// not audited (dry-run and rate-limited steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audited: Option<bool>,
    /// The audit chain's head after this record: its sequence number…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
    /// …and the SHA-256 of its line in `audit.jsonl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_hash: Option<String>,
}

impl Action {
    pub fn new(
        host: &str,
        action: Verb,
        target: impl Into<String>,
        ttl_s: Option<u64>,
        state: ActionState,
        detail: impl Into<String>,
    ) -> Action {
        Action {
            id: new_id(),
            ts: now_rfc3339(),
            host: host.to_string(),
            action,
            target: target.into(),
            ttl_s,
            state,
            detail: detail.into(),
            incident: None,
            command: None,
            audited: None,
            audit_seq: None,
            audit_hash: None,
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Appends to the hash-chained audit log `<state_dir>/audit.jsonl`,
    /// synced before returning, and notes the outcome in the record
    /// (`audited`, `audit_seq`, `audit_hash`).
    pub fn record(&mut self, state_dir: &Path) -> Result<(), crate::enforce::audit::AuditError> {
        let v = serde_json::to_value(&*self).unwrap_or_default();
        match crate::enforce::audit::append(state_dir, &v) {
            Ok(head) => {
                self.audited = Some(true);
                self.audit_seq = Some(head.seq);
                self.audit_hash = Some(head.hash);
                Ok(())
            }
            Err(e) => {
                self.audited = Some(false);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_its_field_names_and_values() {
        let mut a = Action::new(
            "h",
            Verb::Step("block_ip"),
            "b: block 192.0.2.1 for 60s",
            None,
            ActionState::DryRun,
            "incident inc-1",
        );
        a.id = "x".into();
        a.ts = "t".into();
        assert_eq!(
            a.to_line(),
            r#"{"kind":"action","id":"x","ts":"t","host":"h","action":"block_ip","target":"b: block 192.0.2.1 for 60s","ttl_s":null,"state":"dry-run","detail":"incident inc-1"}"#
        );
        a.state = ActionState::RateLimited;
        a.detail.clear();
        a.incident = Some("inc-1".into());
        a.command = Some("c-1".into());
        let v = serde_json::to_value(&a).expect("value");
        assert_eq!(v["state"], "rate-limited");
        assert_eq!(v["incident"], "inc-1");
        assert_eq!(v["command"], "c-1");
        assert!(v.get("detail").is_none());
        assert!(
            v.get("audited").is_none(),
            "not audited, so no audit fields"
        );
        // Audited: the chain position; a failed append says so.
        let dir = std::env::temp_dir().join(format!("vigil-actions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        a.record(&dir).expect("audit");
        let v = serde_json::to_value(&a).expect("value");
        assert_eq!(
            (v["audited"].as_bool(), v["audit_seq"].as_u64()),
            (Some(true), Some(0))
        );
        assert_eq!(v["audit_hash"].as_str().map(str::len), Some(64));
        let blocker = dir.join(crate::enforce::audit::FILE).join("x");
        assert!(a.record(&blocker).is_err());
        assert_eq!(serde_json::to_value(&a).expect("value")["audited"], false);
        let _ = std::fs::remove_dir_all(&dir);
        for (s, name) in [
            (ActionState::Applied, "applied"),
            (ActionState::Refused, "refused"),
            (ActionState::Failed, "failed"),
            (ActionState::Expired, "expired"),
            (ActionState::Noop, "noop"),
        ] {
            assert_eq!(serde_json::to_value(s).expect("state"), name);
            assert_eq!(s.as_str(), name);
        }
    }
}
