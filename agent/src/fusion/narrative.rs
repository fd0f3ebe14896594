//! What an analyst reads: the incident with its analysis — techniques and
//! tactics, kill-chain progress, the group-overlap hint, confidence — and a
//! deterministic narrative (the same incident always reads the same).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::consensus::Verdict;
use super::groups::{self, Hint};
use super::incidents::Incident;
use crate::detect::attack;

/// ATT&CK Enterprise tactics in kill-chain order.
pub const TACTICS: [&str; 14] = [
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
];

/// Next steps by technique (parent id): the shipped playbook that answers
/// it and what to check by hand.
const NEXT_STEPS: &[(&str, &str, &str)] = &[
    (
        "T1110",
        "brute_force_response",
        "block the source; look for a success after the failures (T1078)",
    ),
    (
        "T1078",
        "brute_force_response",
        "reset the account's credentials and review its sessions",
    ),
    (
        "T1046",
        "brute_force_response",
        "block the scanner; check what it reached on the open ports",
    ),
    (
        "T1021",
        "lateral_movement_isolation",
        "isolate the hosts the chain reached; review admin logins",
    ),
    (
        "T1210",
        "lateral_movement_isolation",
        "isolate the target; patch the exploited service",
    ),
    (
        "T1204",
        "malware_containment",
        "kill and quarantine the executable; block where it came from",
    ),
    (
        "T1059",
        "malware_containment",
        "kill the shell; find what started it",
    ),
    (
        "T1620",
        "malware_containment",
        "kill the process; memory-only code leaves no file to quarantine",
    ),
    (
        "T1564",
        "malware_containment",
        "quarantine the hidden file; look for persistence",
    ),
    (
        "T1071",
        "data_exfiltration_block",
        "block the C2 destination fleet-wide; find the implant",
    ),
    (
        "T1571",
        "data_exfiltration_block",
        "block the destination; find the process",
    ),
    (
        "T1573",
        "data_exfiltration_block",
        "block the destination; find the process",
    ),
    (
        "T1041",
        "data_exfiltration_block",
        "block the destination; scope what left",
    ),
    (
        "T1048",
        "data_exfiltration_block",
        "block the destination; scope what left",
    ),
    (
        "T1030",
        "data_exfiltration_block",
        "block the destination; scope what left",
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub technique: String,
    pub playbook: String,
    pub advice: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub techniques: Vec<String>,
    /// Tactics reached, in kill-chain order.
    pub tactics: Vec<String>,
    /// Furthest tactic reached as a fraction of the kill chain (0..1).
    pub stage_score: f64,
    pub furthest_tactic: Option<String>,
    /// Highest alert confidence, raised a tenth per further host (max 1).
    pub confidence: f64,
    pub hint: Option<Hint>,
    pub next_steps: Vec<Step>,
    pub pending_approvals: Vec<String>,
    pub narrative: String,
}

/// The record published on the incidents topic: the incident as stored,
/// plus its analysis (recomputed on read, never trusted back).
#[derive(Debug, Clone, Serialize)]
pub struct View<'a> {
    pub kind: &'static str,
    #[serde(flatten)]
    pub incident: &'a Incident,
    pub analysis: Analysis,
}

fn parent(t: &str) -> &str {
    t.split('.').next().unwrap_or(t)
}

fn tactic_of(t: &str) -> Option<String> {
    attack::find(t)
        .or_else(|| attack::find(parent(t)))
        .map(|x| x.tactic.to_string())
        .filter(|s| !s.is_empty())
}

fn at(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{t}"))
}

pub fn analyse(inc: &Incident, hint_min: usize) -> Analysis {
    let techniques = inc.techniques();
    let reached: BTreeSet<usize> = techniques
        .iter()
        .filter_map(|t| tactic_of(t))
        .filter_map(|tac| TACTICS.iter().position(|x| *x == tac))
        .collect();
    let furthest = reached.iter().max().copied();
    let top_conf = inc.alerts.iter().map(|a| a.confidence).fold(0.0, f64::max);
    let confidence = (top_conf + 0.1 * inc.hosts.len().saturating_sub(1) as f64).clamp(0.0, 1.0);
    let mut next_steps: Vec<Step> = Vec::new();
    for t in &techniques {
        if let Some((_, pb, advice)) = NEXT_STEPS.iter().find(|(id, _, _)| *id == parent(t)) {
            if !next_steps
                .iter()
                .any(|s| s.playbook == *pb && s.advice == *advice)
            {
                next_steps.push(Step {
                    technique: t.clone(),
                    playbook: pb.to_string(),
                    advice: advice.to_string(),
                });
            }
        }
    }
    let pending_approvals: Vec<String> = inc
        .approvals
        .iter()
        .filter(|a| a.state == "pending")
        .map(|a| format!("{} on {}", a.id, a.host))
        .collect();
    let mut a = Analysis {
        techniques: techniques.iter().cloned().collect(),
        tactics: reached.iter().map(|i| TACTICS[*i].to_string()).collect(),
        stage_score: furthest
            .map(|i| (i + 1) as f64 / TACTICS.len() as f64)
            .unwrap_or(0.0),
        furthest_tactic: furthest.map(|i| TACTICS[i].to_string()),
        confidence: (confidence * 100.0).round() / 100.0,
        hint: groups::hint(&techniques, hint_min, 3),
        next_steps,
        pending_approvals,
        narrative: String::new(),
    };
    a.narrative = narrate(inc, &a);
    a
}

/// The incident as prose, from its fields only, in a fixed order.
pub fn narrate(inc: &Incident, a: &Analysis) -> String {
    let mut s = String::new();
    let hosts: Vec<&str> = inc.hosts.iter().map(String::as_str).collect();
    let _ = writeln!(
        s,
        "Incident {} — {} host(s): {}. Opened {}, last activity {}.",
        inc.id,
        hosts.len(),
        hosts.join(", "),
        at(inc.opened),
        at(inc.updated)
    );
    let _ = writeln!(
        s,
        "Confidence {:.2}; kill-chain stage {:.2} (furthest: {}).",
        a.confidence,
        a.stage_score,
        a.furthest_tactic.as_deref().unwrap_or("unknown")
    );
    if !a.techniques.is_empty() {
        let named: Vec<String> = a
            .techniques
            .iter()
            .map(|t| match attack::find(t) {
                Some(x) if !x.name.is_empty() => format!("{t} {}", x.name),
                _ => t.clone(),
            })
            .collect();
        let _ = writeln!(s, "Techniques: {}.", named.join("; "));
    }
    // One timeline of edges, alerts, decisions and actions.
    let mut events: Vec<(f64, u8, String)> = Vec::new();
    for e in &inc.edges {
        let port = e.port.map(|p| format!(" port {p}")).unwrap_or_default();
        events.push((
            e.ts,
            0,
            format!("{} → {} ({}{port}, {})", e.from, e.to, e.technique, e.how),
        ));
    }
    for x in &inc.alerts {
        events.push((
            x.ts,
            1,
            format!(
                "alert on {} by {} [{}]: {}",
                x.host,
                x.detector,
                x.techniques.join(","),
                x.summary
            ),
        ));
    }
    for i in &inc.indicators {
        let verb = match i.verdict {
            Verdict::Block => "fleet block",
            Verdict::WouldBlock => "fleet would block (simulate)",
        };
        events.push((
            i.ts,
            2,
            format!(
                "{verb} of {} for {}s (rule {}, seen by {})",
                i.indicator,
                i.ttl_s,
                i.rule,
                i.hosts.join(", ")
            ),
        ));
    }
    for x in &inc.actions {
        events.push((x.ts, 3, format!("on {}: {}", x.host, x.what)));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    if !events.is_empty() {
        let _ = writeln!(s, "Timeline:");
        for (t, _, line) in &events {
            let _ = writeln!(s, "  {} {line}", at(*t));
        }
    }
    if inc.alerts_dropped > 0 {
        let _ = writeln!(s, "({} further alerts not listed.)", inc.alerts_dropped);
    }
    if !a.pending_approvals.is_empty() {
        let _ = writeln!(
            s,
            "Waiting for approval: {}.",
            a.pending_approvals.join(", ")
        );
    }
    if !a.next_steps.is_empty() {
        let _ = writeln!(s, "Next steps:");
        for st in &a.next_steps {
            let _ = writeln!(s, "  {} ({}): {}", st.playbook, st.technique, st.advice);
        }
    }
    if let Some(h) = &a.hint {
        let g: Vec<String> = h
            .groups
            .iter()
            .map(|g| format!("{} {} ({:.2})", g.id, g.name, g.score))
            .collect();
        let _ = writeln!(s, "Hint — {}: {}.", h.label, g.join(", "));
        if !h.hunt.is_empty() {
            let _ = writeln!(s, "Hunt for: {}.", h.hunt.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::incidents::{AlertRef, Edge};

    fn incident() -> Incident {
        let t0 = 1_796_000_000.0;
        let mut inc = Incident {
            id: "inc-1".into(),
            opened: t0,
            updated: t0 + 60.0,
            ..Incident::default()
        };
        inc.hosts
            .extend(["h1".to_string(), "h2".to_string(), "h3".to_string()]);
        for (i, (f, t, tech)) in [("h1", "h2", "T1110.001"), ("h2", "h3", "T1021.004")]
            .iter()
            .enumerate()
        {
            inc.edges.push(Edge {
                from: f.to_string(),
                to: t.to_string(),
                technique: tech.to_string(),
                port: Some(22),
                ts: t0 + i as f64 * 30.0,
                how: "attack_from".into(),
                link: format!("l{i}"),
                evidence: vec![],
            });
        }
        inc.alerts.push(AlertRef {
            id: "a1".into(),
            host: "h2".into(),
            detector: "brute_force".into(),
            severity: "high".into(),
            confidence: 0.8,
            ts: t0,
            techniques: vec!["T1110.001".into()],
            summary: "password guessing from 10.0.0.1".into(),
        });
        inc
    }

    #[test]
    fn the_analysis_reads_tactics_stage_and_next_steps() {
        let inc = incident();
        let a = analyse(&inc, 8);
        assert_eq!(a.tactics, ["credential-access", "lateral-movement"]);
        assert_eq!(a.furthest_tactic.as_deref(), Some("lateral-movement"));
        assert!((a.stage_score - 10.0 / 14.0).abs() < 1e-9);
        assert_eq!(a.confidence, 1.0);
        assert!(a.hint.is_none(), "two techniques are too few for a hint");
        let books: Vec<&str> = a.next_steps.iter().map(|s| s.playbook.as_str()).collect();
        assert_eq!(
            books,
            ["lateral_movement_isolation", "brute_force_response"]
        );
    }

    #[test]
    fn the_narrative_is_deterministic_and_ordered() {
        let inc = incident();
        let one = analyse(&inc, 8).narrative;
        let two = analyse(&inc, 8).narrative;
        assert_eq!(one, two);
        let first = one.find("h1 → h2").expect("first hop");
        let second = one.find("h2 → h3").expect("second hop");
        assert!(first < second, "{one}");
        assert!(one.contains("Password Guessing"), "{one}");
        assert!(one.contains("Next steps:"), "{one}");
    }

    #[test]
    fn eight_techniques_bring_a_labelled_hint() {
        let mut inc = incident();
        inc.alerts[0].techniques = [
            "T1110.001",
            "T1046",
            "T1059.004",
            "T1071.001",
            "T1105",
            "T1041",
            "T1078",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = analyse(&inc, 8);
        let h = a.hint.expect("hint");
        assert_eq!(h.label, groups::LABEL);
        assert!(a.narrative.contains("not attribution"), "{}", a.narrative);
    }
}
