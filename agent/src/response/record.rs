//! What the response writes to the output and the audit log: `action`,
//! `decision` and `notification` records, typed, each serialised with its
//! `kind` first and the fields docs/playbooks.md lists.

use serde::Serialize;

use crate::enforce::actions::Action;

/// One record the response engine produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponseRecord {
    Action(Action),
    Decision(DecisionRecord),
    Notification(NotificationRecord),
}

impl ResponseRecord {
    /// The record's `kind`, which also picks its Kafka topic.
    pub fn kind(&self) -> &'static str {
        match self {
            ResponseRecord::Action(_) => "action",
            ResponseRecord::Decision(_) => "decision",
            ResponseRecord::Notification(_) => "notification",
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn action(&self) -> Option<&Action> {
        match self {
            ResponseRecord::Action(a) => Some(a),
            _ => None,
        }
    }

    pub fn decision(&self) -> Option<&DecisionRecord> {
        match self {
            ResponseRecord::Decision(d) => Some(d),
            _ => None,
        }
    }
}

/// What happened to an incident or an approval (the `decision` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    IncidentOpened,
    ApprovalRequested,
    Approved,
    Denied,
    TimeoutApproved,
    TimeoutDenied,
    /// A step failed; what the incident applied is being undone.
    IncidentFailed,
    Rollback,
    /// An approval was needed but `max_pending_approvals` were waiting:
    /// the incident is denied without asking.
    ApprovalRefused,
    /// An approval's deadline passed while the agent was not running (or
    /// its approval was lost): the incident is denied, nothing applied.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename = "decision")]
pub struct DecisionRecord {
    pub id: String,
    pub ts: String,
    pub host: String,
    pub incident: String,
    pub playbook: String,
    /// The alert's id.
    pub alert: String,
    pub decision: DecisionKind,
    pub detail: String,
    /// The person who decided, by uid (control socket peer credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_uid: Option<u32>,
    /// The signed fleet command that decided, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename = "notification")]
pub struct NotificationRecord {
    pub id: String,
    pub ts: String,
    pub host: String,
    pub incident: String,
    pub playbook: String,
    pub message: String,
    /// The alert's summary.
    pub alert: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::actions::{ActionState, Verb};

    fn keys(r: &ResponseRecord) -> Vec<String> {
        let line = r.to_line();
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["kind"], r.kind(), "{line}");
        assert!(line.starts_with(&format!("{{\"kind\":\"{}\",\"id\":", r.kind())));
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn records_keep_the_documented_fields() {
        let d = DecisionRecord {
            id: "d".into(),
            ts: "t".into(),
            host: "h".into(),
            incident: "inc-1".into(),
            playbook: "p".into(),
            alert: "a".into(),
            decision: DecisionKind::TimeoutApproved,
            detail: String::new(),
            by_uid: None,
            by_command: None,
        };
        let r = ResponseRecord::Decision(d.clone());
        assert_eq!(
            keys(&r),
            ["alert", "decision", "detail", "host", "id", "incident", "kind", "playbook", "ts"]
        );
        assert!(r
            .to_line()
            .contains(r#""decision":"timeout_approved","detail":"""#));
        let by = ResponseRecord::Decision(DecisionRecord {
            by_uid: Some(0),
            ..d.clone()
        });
        assert!(by.to_line().ends_with(r#""by_uid":0}"#), "{}", by.to_line());
        let by = ResponseRecord::Decision(DecisionRecord {
            by_command: Some("c".into()),
            ..d
        });
        assert!(by.to_line().ends_with(r#""by_command":"c"}"#));
        let n = ResponseRecord::Notification(NotificationRecord {
            id: "n".into(),
            ts: "t".into(),
            host: "h".into(),
            incident: "inc-1".into(),
            playbook: "p".into(),
            message: "m".into(),
            alert: "s".into(),
        });
        assert_eq!(
            keys(&n),
            ["alert", "host", "id", "incident", "kind", "message", "playbook", "ts"]
        );
        let mut a = Action::new(
            "h",
            Verb::Block,
            "192.0.2.1/32",
            Some(60),
            ActionState::Applied,
            "in+out",
        );
        a.incident = Some("inc-1".into());
        let a = ResponseRecord::Action(a);
        assert_eq!(
            keys(&a),
            [
                "action", "detail", "host", "id", "incident", "kind", "state", "target", "ts",
                "ttl_s"
            ]
        );
        assert_eq!(a.action().map(|a| a.state), Some(ActionState::Applied));
        assert!(a.decision().is_none());
    }
}
