//! The `sigma` detector: SigmaHQ-format rules the operator points
//! `detect.sigma.dirs` at, evaluated on live records. Pure: the daemon reads
//! the rule files and hands in the compiled [`RuleSet`] (and the user names
//! `User` is matched against); records come in, findings go out. A rule's
//! tags give the alert its ATT&CK techniques, its level the severity, and
//! its id, title, author and false positives travel in the evidence (the
//! Detection Rule License asks for attribution).

pub mod fields;
pub mod rules;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::registry::{Declared, Shared};
use super::{Detector, Finding};
use crate::record::Body;
use fields::{Category, SigmaEvent, Users};
use rules::{RuleMeta, RuleSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SigmaConfig {
    /// Directories searched (recursively) for `*.yml`/`*.yaml` Sigma rules;
    /// empty runs no rules. A SIGHUP reloads them.
    pub dirs: Vec<PathBuf>,
}

pub struct SigmaDetector {
    rules: Arc<RuleSet>,
    users: Arc<Users>,
}

impl SigmaDetector {
    pub fn new(rules: Arc<RuleSet>, users: Arc<Users>) -> SigmaDetector {
        SigmaDetector { rules, users }
    }

    /// Swaps in another compiled set (a reload that succeeded).
    pub fn set_rules(&mut self, rules: Arc<RuleSet>, users: Arc<Users>) {
        self.rules = rules;
        self.users = users;
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }
}

fn finding(m: &RuleMeta, category: Category, event: &SigmaEvent, who: &str) -> Finding {
    let fields = event.json();
    Finding {
        detector: SigmaDetector::NAME,
        key: format!("{}:{who}", m.id),
        severity: m.severity,
        confidence: m.confidence,
        techniques: m.techniques.clone(),
        summary: format!("Sigma rule matched: {} ({who})", m.title),
        entities: fields.clone(),
        evidence: serde_json::json!({
            "rule_id": m.id,
            "rule_title": m.title,
            "author": m.author,
            "falsepositives": m.falsepositives,
            "references": m.references,
            "license": m.license.as_deref().unwrap_or("Detection Rule License 1.1 (unless the rule says otherwise)"),
            "level": m.level,
            "status": m.status,
            "category": category.name(),
            "rule_file": m.file,
            "unknown_tags": m.unknown_tags,
            "fields": fields,
        }),
    }
}

impl Detector for SigmaDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn rule_driven(&self) -> bool {
        true
    }

    fn as_sigma(&mut self) -> Option<&mut SigmaDetector> {
        Some(self)
    }

    fn on_record(&mut self, _now_s: f64, body: &Body, out: &mut Vec<Finding>) {
        if self.rules.loaded() == 0 {
            return;
        }
        let users = &self.users;
        let (category, event, who) = match body {
            Body::ProcessExec(e) => (
                Category::ProcessCreation,
                SigmaEvent::process(e, users),
                e.exe.as_str(),
            ),
            Body::NetConnect(c) => (
                Category::NetworkConnection,
                SigmaEvent::connection(c, true, users),
                c.exe.as_deref().unwrap_or("unknown"),
            ),
            Body::NetAccept(c) => (
                Category::NetworkConnection,
                SigmaEvent::connection(c, false, users),
                c.exe.as_deref().unwrap_or("unknown"),
            ),
            Body::FileWrite(w) => (
                Category::FileEvent,
                SigmaEvent::file(w),
                w.exe.as_deref().unwrap_or("unknown"),
            ),
            _ => return,
        };
        for m in self.rules.matches(category, &event) {
            out.push(finding(&m, category, &event, who));
        }
    }
}

impl Declared for SigmaDetector {
    const NAME: &'static str = "sigma";
    /// None of its own: its findings carry the techniques of the rule that
    /// matched ([`Declared::RULE_DRIVEN`]).
    const TECHNIQUES: &'static [&'static str] = &[];
    const RULE_DRIVEN: bool = true;

    fn build(_cfg: &DetectConfig, _shared: &Shared) -> Self {
        // Rules arrive from the daemon (`Engine::sigma_mut`): reading
        // files is not a detector's business.
        SigmaDetector::new(Arc::new(RuleSet::default()), Arc::new(Users::new()))
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

#[cfg(test)]
mod tests;
