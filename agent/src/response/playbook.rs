//! Playbook schema (version 1, docs/playbooks.md): parsing, validation that
//! reports every problem with its line and column, and trigger matching.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::action::block_ip::Endpoint;
pub use super::action::StepAction;
use super::action::{self, ACTIONS};
use super::yaml::{self, Node, Value};
use crate::detect::registry::{self, DETECTORS};
use crate::detect::{attack, Alert, Severity};
use crate::enforce::cidr::parse_duration;

pub const SCHEMA_VERSION: u64 = 1;

/// One problem in one playbook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("cannot read playbook {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("two playbooks are named {name}: {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Enforce,
    DryRun,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "dry-run" => Some(Mode::DryRun),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// A condition checked just before a step runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub min_severity: Option<Severity>,
    pub min_confidence: Option<f64>,
    /// Technique ids (prefix match) the alert must carry.
    pub techniques: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub action: StepAction,
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub detectors: Vec<String>,
    pub techniques: Vec<String>,
    /// Sigma rule ids (`evidence.rule_id` of `sigma` alerts); empty: any.
    pub rule_ids: Vec<String>,
    pub min_severity: Option<Severity>,
    pub min_confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    /// None follows the global `response.mode`.
    pub mode: Option<Mode>,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    pub file: PathBuf,
}

/// `T1110` matches `T1110` and `T1110.001`; `T1110.001` matches only itself.
pub fn technique_matches(pattern: &str, id: &str) -> bool {
    id == pattern
        || (id.len() > pattern.len()
            && id.starts_with(pattern)
            && id.as_bytes()[pattern.len()] == b'.')
}

fn alert_has_technique(alert: &Alert, patterns: &[String]) -> bool {
    patterns.is_empty()
        || alert
            .techniques
            .iter()
            .any(|t| patterns.iter().any(|p| technique_matches(p, t.id)))
}

impl Trigger {
    pub fn matches(&self, alert: &Alert) -> bool {
        (self.detectors.is_empty() || self.detectors.iter().any(|d| d == alert.detector))
            && (self.rule_ids.is_empty()
                || alert.evidence["rule_id"]
                    .as_str()
                    .is_some_and(|id| self.rule_ids.iter().any(|r| r.eq_ignore_ascii_case(id))))
            && alert_has_technique(alert, &self.techniques)
            && match self.min_severity {
                Some(s) => alert.severity >= s,
                // Evidence is not acted on unless a playbook asks for it.
                None => alert.severity > Severity::Info,
            }
            && alert.confidence >= self.min_confidence
    }
}

impl Condition {
    pub fn holds(&self, alert: &Alert) -> bool {
        self.min_severity.is_none_or(|s| alert.severity >= s)
            && self.min_confidence.is_none_or(|c| alert.confidence >= c)
            && alert_has_technique(alert, &self.techniques)
    }
}

/// Collects problems while walking the tree.
struct Checker<'a> {
    file: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn err(&mut self, n: &Node, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: n.line,
            col: n.col,
            message: message.into(),
        });
    }

    /// Returns the entries of a mapping, reporting keys outside `allowed`.
    fn map<'n>(
        &mut self,
        n: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let Value::Map(entries) = &n.value else {
            self.err(n, format!("{what} must be a mapping, found {}", n.kind()));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(k, format!("{what}: keys must be plain words"));
                continue;
            };
            if !allowed.contains(&key) {
                self.err(
                    k,
                    format!(
                        "unknown key `{key}` in {what} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                self.err(k, format!("duplicate key `{key}` in {what}"));
                continue;
            }
            out.push((key, v));
        }
        Some(out)
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(n, format!("{what} must be a string, found {}", n.kind()));
                None
            }
        }
    }

    fn strings(&mut self, n: &Node, what: &str) -> Vec<(String, Node)> {
        match &n.value {
            Value::Scalar(s) => vec![(s.clone(), n.clone())],
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| self.string(i, what).map(|s| (s, i.clone())))
                .collect(),
            Value::Map(_) => {
                self.err(n, format!("{what} must be a list of strings"));
                Vec::new()
            }
        }
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<u64> {
        let s = self.string(n, what)?;
        match parse_duration(&s) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    n,
                    format!("bad duration `{s}` for {what} (use e.g. 30s, 15m, 4h, 1d)"),
                );
                None
            }
        }
    }

    fn severity(&mut self, n: &Node, what: &str) -> Option<Severity> {
        let s = self.string(n, what)?;
        let v = Severity::parse(&s);
        if v.is_none() {
            self.err(
                n,
                format!(
                    "unknown severity `{s}` for {what} (expected one of: {})",
                    Severity::NAMES.join(", ")
                ),
            );
        }
        v
    }

    fn confidence(&mut self, n: &Node, what: &str) -> Option<f64> {
        let s = self.string(n, what)?;
        match s.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
            _ => {
                self.err(
                    n,
                    format!("{what} `{s}` can never be met: confidence is a number from 0 to 1"),
                );
                None
            }
        }
    }

    fn technique_list(&mut self, n: &Node, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (t, at) in self.strings(n, what) {
            if attack::exists(&t) {
                out.push(t);
            } else {
                self.err(
                    &at,
                    format!("unknown ATT&CK technique `{t}` in {what}: it can never match"),
                );
            }
        }
        out
    }

    fn trigger(&mut self, n: &Node) -> Trigger {
        let mut t = Trigger::default();
        let Some(entries) = self.map(
            n,
            "trigger",
            &[
                "detectors",
                "techniques",
                "rule_ids",
                "min_severity",
                "min_confidence",
            ],
        ) else {
            return t;
        };
        let named = entries
            .iter()
            .any(|(k, _)| *k == "detectors" || *k == "techniques" || *k == "rule_ids");
        let mut rule_ids_at = None;
        for (k, v) in entries {
            match k {
                "detectors" => {
                    for (d, at) in self.strings(v, "trigger.detectors") {
                        if registry::find(&d).is_some() {
                            t.detectors.push(d);
                        } else {
                            let names: Vec<&str> = DETECTORS.iter().map(|e| e.name).collect();
                            self.err(
                                &at,
                                format!(
                                    "unknown detector `{d}`: the trigger can never match (detectors: {})",
                                    names.join(", ")
                                ),
                            );
                        }
                    }
                }
                "techniques" => t.techniques = self.technique_list(v, "trigger.techniques"),
                "rule_ids" => {
                    rule_ids_at = Some(v.clone());
                    for (id, at) in self.strings(v, "trigger.rule_ids") {
                        let id = id.trim().to_string();
                        if id.is_empty() {
                            self.err(&at, "empty Sigma rule id in trigger.rule_ids");
                        } else {
                            t.rule_ids.push(id);
                        }
                    }
                }
                "min_severity" => t.min_severity = self.severity(v, "trigger.min_severity"),
                "min_confidence" => {
                    t.min_confidence = self.confidence(v, "trigger.min_confidence").unwrap_or(0.0)
                }
                _ => {}
            }
        }
        if !named {
            self.err(
                n,
                "trigger names no detector and no technique: it would act on every alert",
            );
        }
        // Rule ids name Sigma rules: only the sigma detector's alerts have them.
        if let Some(at) = rule_ids_at {
            if !t.detectors.iter().any(|d| d == "sigma") {
                self.err(
                    &at,
                    "trigger.rule_ids match only `sigma` alerts: add `sigma` to trigger.detectors",
                );
            }
        }
        // Named detectors must be able to raise at least one named technique:
        // detectors declare exact ids, so the trigger's pattern must match one.
        // A rule-driven detector (sigma) may raise any technique.
        let rule_driven = t
            .detectors
            .iter()
            .filter_map(|d| registry::find(d))
            .any(|e| e.rule_driven);
        if !t.detectors.is_empty() && !t.techniques.is_empty() && !rule_driven {
            let reachable = t.techniques.iter().any(|want| {
                t.detectors
                    .iter()
                    .filter_map(|d| registry::find(d))
                    .flat_map(|e| e.techniques.iter())
                    .any(|have| technique_matches(want, have))
            });
            if !reachable {
                self.err(
                    n,
                    format!(
                        "trigger can never match: detectors [{}] raise none of [{}]",
                        t.detectors.join(", "),
                        t.techniques.join(", ")
                    ),
                );
            }
        }
        t
    }

    fn condition(&mut self, n: &Node) -> Condition {
        let mut c = Condition::default();
        let Some(entries) = self.map(n, "when", &["min_severity", "min_confidence", "techniques"])
        else {
            return c;
        };
        for (k, v) in entries {
            match k {
                "min_severity" => c.min_severity = self.severity(v, "when.min_severity"),
                "min_confidence" => c.min_confidence = self.confidence(v, "when.min_confidence"),
                "techniques" => c.techniques = self.technique_list(v, "when.techniques"),
                _ => {}
            }
        }
        c
    }

    fn step(&mut self, n: &Node, index: usize) -> Option<Step> {
        let keys = step_keys();
        let entries = self.map(n, "step", &keys)?;
        let get = |key: &str| entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let id = match get("id") {
            Some(v) => self.string(v, "step id")?,
            None => format!("step{}", index + 1),
        };
        let Some(action_node) = get("action") else {
            self.err(n, format!("step {id} has no `action`"));
            return None;
        };
        let action_name = self.string(action_node, "action")?;
        let Some(spec) = action::find(&action_name) else {
            let names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
            self.err(
                action_node,
                format!(
                    "unknown action `{action_name}` (expected one of: {})",
                    names.join(", ")
                ),
            );
            return None;
        };
        for (k, v) in &entries {
            if !COMMON_STEP_KEYS.contains(k) && !spec.keys.contains(k) {
                self.err(v, format!("`{k}` does not apply to {action_name}"));
            }
        }
        let action = (spec.parse)(&mut StepKeys {
            checker: self,
            step: n,
            entries: &entries,
            action: spec.name,
            id: &id,
        })?;
        let when = get("when").map(|w| self.condition(w));
        Some(Step { id, action, when })
    }
}

/// Keys every step takes, whatever its action.
const COMMON_STEP_KEYS: &[&str] = &["id", "action", "when"];

/// Every key a step may have: the common ones, then each action's, in
/// table order.
fn step_keys() -> Vec<&'static str> {
    let mut keys = COMMON_STEP_KEYS.to_vec();
    for k in ACTIONS.iter().flat_map(|a| a.keys.iter()) {
        if !keys.contains(k) {
            keys.push(k);
        }
    }
    keys
}

/// One step's keys, while its action reads them; problems are reported
/// with the playbook's others.
pub struct StepKeys<'k, 'f> {
    checker: &'k mut Checker<'f>,
    step: &'k Node,
    entries: &'k [(&'k str, &'k Node)],
    action: &'static str,
    id: &'k str,
}

impl<'k> StepKeys<'k, '_> {
    /// A required key's value; a missing one is reported on the step.
    pub fn need(&mut self, key: &str) -> Option<&'k Node> {
        let v = self
            .entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v);
        if v.is_none() {
            let message = format!("{} step {} needs `{key}`", self.action, self.id);
            self.checker.err(self.step, message);
        }
        v
    }

    /// A required duration (`30s`, `15m`, `4h`, `1d`) in seconds.
    pub fn duration(&mut self, key: &str) -> Option<u64> {
        let v = self.need(key)?;
        self.checker.duration(v, key)
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        let v = self.need(key)?;
        self.checker.string(v, key)
    }

    /// An optional list of absolute file paths, empty when absent; each
    /// must be plain (no `.`/`..` components, `//` or trailing `/`), since
    /// it is compared with paths exactly.
    pub fn file_paths(&mut self, key: &str) -> Option<Vec<String>> {
        let Some(v) = self
            .entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
        else {
            return Some(Vec::new());
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (p, at) in self.checker.strings(v, key) {
            let plain = p.len() > 1
                && p.starts_with('/')
                && p[1..]
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if plain {
                out.push(p);
            } else {
                let message = format!(
                    "{key}: `{p}` is not a plain absolute file path (paths are compared exactly)"
                );
                self.checker.err(&at, message);
                ok = false;
            }
        }
        ok.then_some(out)
    }

    /// A required key whose value must be one of `choices`; `message`
    /// otherwise.
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        choices: &[(&str, T)],
        message: &str,
    ) -> Option<T> {
        let v = self.need(key)?;
        let found = v
            .as_str()
            .and_then(|s| choices.iter().find(|(name, _)| *name == s))
            .map(|(_, t)| *t);
        if found.is_none() {
            self.checker.err(v, message);
        }
        found
    }
}

/// Parses and validates one playbook; every problem is reported at once.
pub fn parse(text: &str, file: &Path) -> Result<Playbook, Vec<Problem>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![Problem {
            file: file.to_path_buf(),
            line: e.line,
            col: e.col,
            message: format!("YAML syntax: {}", e.message),
        }]
    })?;
    let mut c = Checker {
        file,
        problems: Vec::new(),
    };
    let keys = ["version", "name", "description", "mode", "trigger", "steps"];
    let Some(entries) = c.map(&root, "playbook", &keys) else {
        return Err(c.problems);
    };
    let get = |key: &str| entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    match get("version") {
        Some(v) if v.as_str() == Some(&SCHEMA_VERSION.to_string()) => {}
        Some(v) => c.err(
            v,
            format!("unsupported playbook version (this agent reads version {SCHEMA_VERSION})"),
        ),
        None => c.err(&root, format!("missing `version: {SCHEMA_VERSION}`")),
    }
    let name = match get("name") {
        Some(v) => c.string(v, "name").unwrap_or_default(),
        None => {
            c.err(&root, "missing `name`");
            String::new()
        }
    };
    let description = get("description")
        .and_then(|v| c.string(v, "description"))
        .unwrap_or_default();
    let mode = get("mode").and_then(|v| {
        let s = c.string(v, "mode")?;
        let m = Mode::parse(&s);
        if m.is_none() {
            c.err(
                v,
                format!("unknown mode `{s}` (expected enforce or dry-run)"),
            );
        }
        m
    });
    let trigger = match get("trigger") {
        Some(v) => c.trigger(v),
        None => {
            c.err(&root, "missing `trigger`");
            Trigger::default()
        }
    };
    let mut steps = Vec::new();
    match get("steps") {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = c.step(item, i) {
                    if steps.iter().any(|x: &Step| x.id == s.id) {
                        c.err(item, format!("duplicate step id `{}`", s.id));
                    }
                    steps.push(s);
                }
            }
        }
        Some(v) => c.err(v, "steps must be a non-empty list"),
        None => c.err(&root, "missing `steps`"),
    }
    if let Some(last) = steps.last() {
        if matches!(last.action, StepAction::RequireApproval(_)) {
            c.err(&root, "the last step is require_approval: it gates nothing");
        }
    }
    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line, p.col));
        return Err(c.problems);
    }
    Ok(Playbook {
        name,
        description,
        mode,
        trigger,
        steps,
        file: file.to_path_buf(),
    })
}

pub fn load_file(path: &Path) -> Result<Playbook, PlaybookError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlaybookError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path).map_err(PlaybookError::Invalid)
}

/// Every `*.yaml`/`*.yml` in `dir`, sorted by file name; all problems of all
/// files are reported together. A missing directory is an empty set.
pub fn load_dir(dir: &Path) -> Result<Vec<Playbook>, PlaybookError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PlaybookError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    files.sort();
    let mut out: Vec<Playbook> = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match load_file(&f) {
            Ok(p) => {
                if let Some(first) = out.iter().find(|q| q.name == p.name) {
                    return Err(PlaybookError::Duplicate {
                        name: p.name.clone(),
                        first: first.file.clone(),
                        second: f,
                    });
                }
                out.push(p)
            }
            Err(PlaybookError::Invalid(mut ps)) => problems.append(&mut ps),
            Err(e) => return Err(e),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(PlaybookError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks")
    }

    #[test]
    fn every_shipped_playbook_parses() {
        let set = load_dir(&shipped_dir()).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "brute_force_response",
            "data_exfiltration_block",
            "lateral_movement_isolation",
            "malware_containment",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        for p in &set {
            let text = std::fs::read_to_string(&p.file).unwrap();
            assert!(
                text.starts_with("# ") && text.lines().next().unwrap().contains("T1"),
                "{}: header comment must name the ATT&CK techniques",
                p.file.display()
            );
        }
    }

    /// Each broken fixture names the line its problem is on in its first
    /// comment: `# expect LINE: substring`.
    #[test]
    fn broken_fixtures_report_the_expected_problem_and_line() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/playbooks-broken");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let expects: Vec<(usize, String)> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect "))
                .map(|l| {
                    let (line, msg) = l.split_once(": ").unwrap();
                    (line.parse().unwrap(), msg.to_string())
                })
                .collect();
            assert!(!expects.is_empty(), "{} has no expectation", path.display());
            let problems = parse(&text, &path).expect_err(&path.display().to_string());
            for (line, msg) in &expects {
                assert!(
                    problems
                        .iter()
                        .any(|p| p.line == *line && p.message.contains(msg.as_str())),
                    "{}: wanted line {line} `{msg}`, got {problems:#?}",
                    path.display()
                );
            }
            assert_eq!(problems.len(), expects.len(), "{problems:#?}");
            n += 1;
        }
        assert!(n >= 6, "only {n} fixtures");
    }

    fn alert(detector: &'static str, techniques: &[&'static str], sev: Severity) -> Alert {
        Alert {
            kind: "alert",
            id: "a1".into(),
            ts: String::new(),
            host: "h".into(),
            detector,
            severity: sev,
            confidence: 0.8,
            techniques: techniques.iter().map(|t| attack::technique(t)).collect(),
            summary: String::new(),
            entities: serde_json::json!({}),
            evidence: serde_json::json!({}),
            count: 1,
            first_seen: String::new(),
            update: false,
        }
    }

    #[test]
    fn triggers_match_on_detector_technique_prefix_severity_and_confidence() {
        let t = Trigger {
            detectors: vec!["brute_force".into()],
            techniques: vec!["T1110".into()],
            rule_ids: vec![],
            min_severity: Some(Severity::Medium),
            min_confidence: 0.7,
        };
        assert!(t.matches(&alert("brute_force", &["T1110.001"], Severity::High)));
        assert!(t.matches(&alert("brute_force", &["T1110"], Severity::Medium)));
        assert!(!t.matches(&alert("brute_force", &["T1110.001"], Severity::Low)));
        assert!(!t.matches(&alert("scan", &["T1110"], Severity::High)));
        assert!(!t.matches(&alert("brute_force", &["T1078"], Severity::High)));
        let mut low = alert("brute_force", &["T1110"], Severity::High);
        low.confidence = 0.5;
        assert!(!t.matches(&low));
        // A sub-technique pattern does not match its parent or siblings.
        let sub = Trigger {
            techniques: vec!["T1110.003".into()],
            ..Trigger::default()
        };
        assert!(!sub.matches(&alert("brute_force", &["T1110"], Severity::High)));
        assert!(!sub.matches(&alert("brute_force", &["T1110.001"], Severity::High)));
        // Evidence (info) is acted on only by a playbook that names it.
        let any = Trigger {
            techniques: vec!["T1059".into()],
            ..Trigger::default()
        };
        assert!(!any.matches(&alert("process", &["T1059"], Severity::Info)));
        assert!(any.matches(&alert("process", &["T1059"], Severity::Low)));
        let info = Trigger {
            min_severity: Some(Severity::Info),
            ..any
        };
        assert!(info.matches(&alert("process", &["T1059"], Severity::Info)));
        assert!(sub.matches(&alert("brute_force", &["T1110.003"], Severity::High)));
        assert!(!technique_matches("T111", "T1110"));
    }

    #[test]
    fn sigma_triggers_select_rules_by_id() {
        let text = "version: 1\nname: s\ntrigger:\n  detectors: [sigma]\n  rule_ids: [0D7ABD00-4dbd-448a-8e04-86238412a05e]\n  techniques: [T1548]\nsteps:\n  - action: notify\n    message: setuid\n";
        let p = parse(text, Path::new("s.yaml")).unwrap_or_else(|e| panic!("{e:?}"));
        let mut a = alert("sigma", &["T1548.001"], Severity::Medium);
        assert!(!p.trigger.matches(&a), "no rule id in the evidence");
        a.evidence = serde_json::json!({"rule_id": "0d7abd00-4dbd-448a-8e04-86238412a05e"});
        assert!(p.trigger.matches(&a));
        a.evidence = serde_json::json!({"rule_id": "46f2b9ae-9bf5-4838-8db2-5a76d64bc3fe"});
        assert!(!p.trigger.matches(&a));
    }

    /// The step-level messages derived from the action table read as they
    /// did when the keys and names were written out by hand.
    #[test]
    fn step_messages_list_keys_and_actions_in_table_order() {
        assert_eq!(
            step_keys(),
            [
                "id",
                "action",
                "when",
                "target",
                "ttl",
                "allow_protected",
                "message",
                "timeout",
                "on_timeout"
            ]
        );
        let text = "version: 1\nname: t\ntrigger: {techniques: [T1046]}\nsteps:\n  - action: nope\n    ttl: 1h\n    bogus: 1\n";
        let problems = parse(text, Path::new("t.yaml")).expect_err("invalid");
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown action `nope` (expected one of: block_ip, isolate_host, kill_process, quarantine_file, notify, require_approval)",
                "unknown key `bogus` in step (expected one of: id, action, when, target, ttl, allow_protected, message, timeout, on_timeout)",
            ]
        );
    }
}
