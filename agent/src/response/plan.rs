//! What the loaded playbooks would decide for an alert, without acting:
//! which playbooks trigger, in which mode, and which of their steps would
//! run (a step's `when` checked, steps after an approval left pending).
//! Pure, so `vigil simulate` can ask it about alerts the agent raised.

use std::sync::Arc;

use serde::Serialize;

use super::action::StepAction;
use super::engine::AlertContext;
use super::playbook::{Mode, Playbook};
use crate::detect::{attack, registry, Alert, Severity};
use crate::enforce::cidr::Cidr;
use crate::enforce::guard::{Guard, GuardInputs};

/// Why an alert record cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("alert record has no `{0}`")]
    Missing(&'static str),
    #[error("alert names detector `{0}`, which this build does not have")]
    UnknownDetector(String),
    #[error("alert has severity `{0}`, expected one of info, low, medium, high, critical")]
    BadSeverity(String),
}

/// One step and what would happen to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub action: &'static str,
    /// What it would do to what, as the incident would record it
    /// (`block 203.0.113.9 for 3600s`).
    pub what: String,
    /// `run`, `skipped: when` (its condition does not hold),
    /// `after approval` (an earlier step waits for a person) or
    /// `fails: no address` (a block whose alert names no such address),
    /// `refused: loopback` (a block the never-block guard refuses on any
    /// host; the host's own addresses, gateways and resolvers it learns at
    /// run time are not known here).
    pub fate: &'static str,
}

/// One triggered playbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub playbook: String,
    pub mode: Mode,
    pub steps: Vec<PlannedStep>,
}

/// Rebuilds the detector-side alert from its JSON record (the agent's
/// output or the control socket); unknown techniques are kept by id.
pub fn alert_from_json(v: &serde_json::Value) -> Result<Alert, PlanError> {
    let str_of = |k: &'static str| v[k].as_str().ok_or(PlanError::Missing(k));
    let det = str_of("detector")?;
    let detector = registry::find(det)
        .ok_or_else(|| PlanError::UnknownDetector(det.to_string()))?
        .name;
    let sev = str_of("severity")?;
    let severity = Severity::parse(sev).ok_or_else(|| PlanError::BadSeverity(sev.to_string()))?;
    let techniques = v["techniques"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().and_then(attack::find))
        .collect();
    Ok(Alert {
        kind: "alert",
        id: str_of("id")?.to_string(),
        ts: v["ts"].as_str().unwrap_or_default().to_string(),
        host: Arc::from(v["host"].as_str().unwrap_or_default()),
        detector,
        severity,
        confidence: v["confidence"]
            .as_f64()
            .ok_or(PlanError::Missing("confidence"))?,
        techniques,
        summary: v["summary"].as_str().unwrap_or_default().to_string(),
        entities: v["entities"].clone(),
        evidence: v["evidence"].clone(),
        count: v["count"].as_u64().unwrap_or(1),
        first_seen: v["first_seen"].as_str().unwrap_or_default().to_string(),
        update: v["update"].as_bool().unwrap_or(false),
    })
}

/// A block whose alert has no address on the side it names.
fn blocks_nothing(action: &StepAction, ctx: &AlertContext) -> bool {
    matches!(action, StepAction::BlockIp(b) if ctx.ip(b.target).is_none())
}

/// A block of an address every host's guard protects.
fn blocks_loopback(action: &StepAction, ctx: &AlertContext) -> bool {
    let StepAction::BlockIp(b) = action else {
        return false;
    };
    ctx.ip(b.target).is_some_and(|ip| {
        Guard::new(&GuardInputs::default())
            .check(&Cidr::host(ip))
            .is_err()
    })
}

/// The playbooks `alert` triggers and their steps' fates; `mode` is the
/// global `response.mode` a playbook without its own follows.
pub fn plan(playbooks: &[Playbook], mode: Mode, alert: &Alert) -> Vec<Planned> {
    let ctx = AlertContext::from_alert(alert);
    playbooks
        .iter()
        .filter(|p| p.trigger.matches(alert))
        .map(|p| {
            let mut waiting = false;
            let steps = p
                .steps
                .iter()
                .map(|s| {
                    let fate = if s.when.as_ref().is_some_and(|w| !w.holds(alert)) {
                        "skipped: when"
                    } else if blocks_nothing(&s.action, &ctx) {
                        "fails: no address"
                    } else if blocks_loopback(&s.action, &ctx) {
                        "refused: loopback"
                    } else if waiting {
                        "after approval"
                    } else {
                        "run"
                    };
                    if fate == "run" && s.action.name() == "require_approval" {
                        waiting = true;
                    }
                    PlannedStep {
                        id: s.id.clone(),
                        action: s.action.name(),
                        what: s.action.act().describe(&ctx),
                        fate,
                    }
                })
                .collect();
            Planned {
                playbook: p.name.clone(),
                mode: p.mode.unwrap_or(mode),
                steps,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn playbooks() -> Vec<Playbook> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        crate::response::playbook::load_dir(&dir).expect("repository playbooks")
    }

    fn alert(detector: &str, severity: &str, confidence: f64, techniques: &[&str]) -> Alert {
        let t: Vec<_> = techniques
            .iter()
            .map(|t| serde_json::json!({"id": t}))
            .collect();
        alert_from_json(&serde_json::json!({
            "kind": "alert", "id": "a1", "detector": detector, "severity": severity,
            "confidence": confidence, "techniques": t, "entities": {}, "evidence": {}
        }))
        .expect("alert")
    }

    #[test]
    fn a_memfd_exec_would_be_contained_in_dry_run() {
        let p = plan(
            &playbooks(),
            Mode::DryRun,
            &alert("process", "high", 0.9, &["T1620"]),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].playbook, "malware_containment");
        assert_eq!(p[0].mode, Mode::DryRun);
        let actions: Vec<_> = p[0].steps.iter().map(|s| (s.action, s.fate)).collect();
        // A memfd exec has no destination to block.
        assert_eq!(
            actions,
            [
                ("kill_process", "run"),
                ("quarantine_file", "run"),
                ("block_ip", "fails: no address"),
                ("notify", "run")
            ]
        );
    }

    #[test]
    fn steps_name_what_they_would_act_on() {
        let mut a = alert("brute_force", "high", 0.9, &["T1110"]);
        a.entities = serde_json::json!({"src_ip": "203.0.113.9"});
        let p = plan(&playbooks(), Mode::DryRun, &a);
        assert_eq!(p[0].steps[0].what, "block 203.0.113.9 for 3600s", "{p:?}");
        assert_eq!(p[0].steps[0].fate, "run");
        // A download from loopback names loopback: the guard refuses it.
        let mut m = alert("process", "high", 0.85, &["T1204.002"]);
        m.entities = serde_json::json!({"dst_ip": "127.0.0.1", "pid": 9});
        let p = plan(&playbooks(), Mode::Enforce, &m);
        let block = p[0]
            .steps
            .iter()
            .find(|s| s.action == "block_ip")
            .expect("block");
        assert_eq!(block.fate, "refused: loopback", "{p:?}");
    }

    #[test]
    fn conditions_and_approvals_are_respected() {
        let pbs = playbooks();
        let mut exfil = alert("exfil", "high", 0.5, &["T1048"]);
        exfil.entities = serde_json::json!({"dst_ip": "203.0.113.7"});
        let low = plan(&pbs, Mode::Enforce, &exfil);
        let fates: Vec<_> = low[0].steps.iter().map(|s| s.fate).collect();
        assert_eq!(fates, ["run", "skipped: when", "skipped: when"]);
        let lat = plan(
            &pbs,
            Mode::DryRun,
            &alert("lateral", "medium", 0.9, &["T1021.002"]),
        );
        let fates: Vec<_> = lat[0].steps.iter().map(|s| s.fate).collect();
        assert_eq!(fates, ["run", "run", "after approval"]);
    }

    #[test]
    fn an_alert_no_playbook_takes_and_evidence_plan_nothing() {
        let pbs = playbooks();
        assert!(plan(
            &pbs,
            Mode::DryRun,
            &alert("scan", "medium", 0.8, &["T1046"])
        )
        .is_empty());
        assert!(plan(
            &pbs,
            Mode::DryRun,
            &alert("process", "info", 0.9, &["T1620"])
        )
        .is_empty());
    }

    #[test]
    fn forged_records_are_refused_by_name() {
        let e = alert_from_json(&serde_json::json!({"detector": "nope", "severity": "high"}));
        assert_eq!(e.err(), Some(PlanError::UnknownDetector("nope".into())));
        let e = alert_from_json(&serde_json::json!({"detector": "scan", "severity": "huge"}));
        assert_eq!(e.err(), Some(PlanError::BadSeverity("huge".into())));
        let e = alert_from_json(&serde_json::json!({"severity": "high"}));
        assert_eq!(e.err(), Some(PlanError::Missing("detector")));
    }
}
