//! A compiled set of Sigma rules: rule texts in, one rsigma engine per log
//! source category out, with what every rule carries into an alert, and
//! each rule that could not be used with why and where (file:line).
//!
//! Two kinds of trouble: an *error* is a file that is not valid Sigma
//! (bad YAML, a missing title or detection, an unknown modifier, a condition
//! that does not parse); an *unsupported* rule is valid Sigma that vigil
//! cannot evaluate faithfully (another log source, a field our records do
//! not carry, a correlation). Errors make a set bad (a reload keeps the
//! last good one); unsupported rules are skipped and counted.

use std::collections::HashMap;
use std::sync::Arc;

use rsigma_eval::{Engine, RuleFieldSet};
use rsigma_parser::{parse_sigma_yaml, Level, SigmaCollection, SigmaRule, Status};

use super::fields::{Category, SigmaEvent};
use crate::detect::{attack, Severity};

/// One rule file's text, named by its path.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    pub text: String,
}

/// A rule that did not load, or a file that is not Sigma.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    pub file: String,
    pub line: usize,
    /// The rule's id or title, when the document got that far.
    pub rule: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "{}:{}: {r}: {}", self.file, self.line, self.reason),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.reason),
        }
    }
}

/// What a loaded rule puts in its alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMeta {
    /// The rule's `id`, else its title.
    pub id: String,
    pub title: String,
    pub author: Option<String>,
    pub falsepositives: Vec<String>,
    pub references: Vec<String>,
    pub license: Option<String>,
    pub level: &'static str,
    pub status: &'static str,
    pub severity: Severity,
    pub confidence: f64,
    /// ATT&CK ids from the rule's `attack.tNNNN[.NNN]` tags that our table
    /// knows; others are dropped (and listed in `unknown_tags`).
    pub techniques: Vec<&'static str>,
    pub unknown_tags: Vec<String>,
    pub file: String,
}

/// The compiled rules.
pub struct RuleSet {
    engines: Vec<(Category, Engine)>,
    meta: HashMap<String, Arc<RuleMeta>>,
    pub unsupported: Vec<Trouble>,
    pub errors: Vec<Trouble>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            engines: Category::ALL
                .into_iter()
                .map(|c| {
                    let mut e = Engine::new();
                    // One Aho-Corasick automaton over every rule's
                    // substrings per field skips the rules none of whose
                    // needles occur: ~4x on ordinary command lines
                    // (docs/performance.md). The bloom pre-filter is left
                    // off: in rsigma-eval 0.23 it dropped a `startswith`
                    // match (docs/sigma.md).
                    e.set_cross_rule_ac(true);
                    (c, e)
                })
                .collect(),
            meta: HashMap::new(),
            unsupported: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// The 1-based line of the first line `pred` holds for, else 1.
fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> usize {
    text.lines().position(pred).map_or(1, |i| i + 1)
}

/// The line that names `field` as a detection key (`Field:` or `Field|…:`).
fn field_line(text: &str, field: &str) -> usize {
    line_of(text, |l| {
        let l = l.trim_start().trim_start_matches("- ");
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('|'))
    })
}

/// Where a parser message points: its `line N`, else the line holding the
/// token it quotes (`Unknown modifier 'x'`), else 1.
fn error_line(text: &str, msg: &str) -> usize {
    let stated = msg
        .split("line ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    if let Some(n) = stated {
        return n;
    }
    match msg.split('\'').nth(1).filter(|t| !t.is_empty()) {
        Some(token) => line_of(text, |l| l.contains(token)),
        None => 1,
    }
}

fn key_line(text: &str, key: &str) -> usize {
    line_of(text, |l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|r| r.starts_with(':'))
    })
}

pub fn severity(level: Option<Level>) -> (Severity, &'static str) {
    match level {
        Some(Level::Critical) => (Severity::Critical, "critical"),
        Some(Level::High) => (Severity::High, "high"),
        Some(Level::Medium) => (Severity::Medium, "medium"),
        Some(Level::Low) => (Severity::Low, "low"),
        Some(Level::Informational) => (Severity::Info, "informational"),
        // Sigma says a rule without a level is of unknown importance.
        None => (Severity::Low, "none"),
    }
}

/// How far a rule's status says it has been proven.
fn confidence(status: Option<Status>) -> (f64, &'static str) {
    match status {
        Some(Status::Stable) => (0.8, "stable"),
        Some(Status::Test) => (0.7, "test"),
        Some(Status::Experimental) => (0.5, "experimental"),
        Some(Status::Deprecated) => (0.4, "deprecated"),
        Some(Status::Unsupported) => (0.4, "unsupported"),
        None => (0.5, "none"),
    }
}

/// `attack.t1059.004` → `T1059.004` when the ATT&CK table has it.
pub fn techniques(tags: &[String]) -> (Vec<&'static str>, Vec<String>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for tag in tags {
        let Some(rest) = tag
            .to_ascii_lowercase()
            .strip_prefix("attack.t")
            .map(str::to_string)
        else {
            continue;
        };
        let id = format!("T{}", rest.to_ascii_uppercase());
        match attack::find(&id) {
            Some(t) if !known.contains(&t.id) => known.push(t.id),
            Some(_) => {}
            None => unknown.push(tag.clone()),
        }
    }
    (known, unknown)
}

fn meta(rule: &SigmaRule, file: &str) -> RuleMeta {
    let (severity, level) = severity(rule.level);
    let (confidence, status) = confidence(rule.status);
    let (techniques, unknown_tags) = techniques(&rule.tags);
    RuleMeta {
        id: rule.id.clone().unwrap_or_else(|| rule.title.clone()),
        title: rule.title.clone(),
        author: rule.author.clone(),
        falsepositives: rule.falsepositives.clone(),
        references: rule.references.clone(),
        license: rule.license.clone(),
        level,
        status,
        severity,
        confidence,
        techniques,
        unknown_tags,
        file: file.to_string(),
    }
}

/// Why a valid rule cannot run here, with the line to look at.
fn unsupported(rule: &SigmaRule, text: &str) -> Result<Category, (usize, String)> {
    let ls = &rule.logsource;
    if ls.product.as_deref().is_some_and(|p| p != "linux") {
        return Err((
            key_line(text, "product"),
            format!(
                "logsource product `{}`: vigil observes linux",
                ls.product.as_deref().unwrap_or_default()
            ),
        ));
    }
    if let Some(service) = &ls.service {
        return Err((
            key_line(text, "service"),
            format!("logsource service `{service}`: vigil reads no log services"),
        ));
    }
    let names = || {
        Category::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(cat) = ls.category.as_deref() else {
        return Err((
            key_line(text, "logsource"),
            format!("logsource names no category (vigil evaluates {})", names()),
        ));
    };
    let Some(category) = Category::parse(cat) else {
        return Err((
            key_line(text, "category"),
            format!(
                "logsource category `{cat}` is not observed (vigil evaluates {})",
                names()
            ),
        ));
    };
    let mut one = SigmaCollection::new();
    one.rules.push(rule.clone());
    let fields = RuleFieldSet::collect(&one, &[], false);
    let offered = category.fields();
    for name in fields.names() {
        if !offered.contains(&name) {
            return Err((
                field_line(text, name),
                format!(
                    "field `{name}` is not in vigil's {cat} records (it has {})",
                    offered.join(", ")
                ),
            ));
        }
    }
    if rule.detection.timeframe.is_some() {
        return Err((
            key_line(text, "timeframe"),
            "aggregation over a timeframe is not evaluated".to_string(),
        ));
    }
    Ok(category)
}

impl RuleSet {
    /// Compiles every rule in `sources`. Never fails: the troubles are in
    /// the set, and [`RuleSet::is_good`] says whether it may replace a
    /// running one.
    pub fn compile(sources: &[Source]) -> RuleSet {
        let mut set = RuleSet::default();
        for src in sources {
            set.add_file(src);
        }
        set
    }

    fn add_file(&mut self, src: &Source) {
        let trouble = |line: usize, rule: Option<&str>, reason: String| Trouble {
            file: src.file.clone(),
            line,
            rule: rule.map(str::to_string),
            reason,
        };
        let collection = match parse_sigma_yaml(&src.text) {
            Ok(c) => c,
            Err(e) => {
                let line = match &e {
                    rsigma_parser::SigmaParserError::Yaml(y) => {
                        y.location().map_or(1, |l| l.line())
                    }
                    other => error_line(&src.text, &other.to_string()),
                };
                self.errors.push(trouble(line, None, e.to_string()));
                return;
            }
        };
        for e in &collection.errors {
            self.errors
                .push(trouble(error_line(&src.text, e), None, e.clone()));
        }
        for c in &collection.correlations {
            self.unsupported.push(trouble(
                key_line(&src.text, "correlation"),
                Some(c.id.as_deref().unwrap_or(&c.title)),
                "correlation rules are not evaluated".to_string(),
            ));
        }
        for f in &collection.filters {
            self.unsupported.push(trouble(
                key_line(&src.text, "filter"),
                Some(f.id.as_deref().unwrap_or(&f.title)),
                "filter documents are not applied".to_string(),
            ));
        }
        for rule in &collection.rules {
            let m = meta(rule, &src.file);
            let category = match unsupported(rule, &src.text) {
                Ok(c) => c,
                Err((line, reason)) => {
                    self.unsupported.push(trouble(line, Some(&m.id), reason));
                    continue;
                }
            };
            if let Some(first) = self.meta.get(&m.id) {
                let reason = format!("duplicate rule id (first in {})", first.file);
                self.errors
                    .push(trouble(key_line(&src.text, "id"), Some(&m.id), reason));
                continue;
            }
            let Some((_, engine)) = self.engines.iter_mut().find(|(c, _)| *c == category) else {
                continue;
            };
            if let Err(e) = engine.add_rule(rule) {
                self.errors.push(trouble(
                    key_line(&src.text, "detection"),
                    Some(&m.id),
                    e.to_string(),
                ));
                continue;
            }
            self.meta.insert(m.id.clone(), Arc::new(m));
        }
    }

    /// Whether the set may replace a running one: no file was bad.
    pub fn is_good(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn loaded(&self) -> usize {
        self.meta.len()
    }

    /// Loaded rules of one category.
    pub fn loaded_in(&self, category: Category) -> usize {
        self.engines
            .iter()
            .find(|(c, _)| *c == category)
            .map_or(0, |(_, e)| e.rule_count())
    }

    /// Rules skipped: unsupported, or in error.
    pub fn skipped(&self) -> usize {
        self.unsupported.len() + self.errors.len()
    }

    /// The rules of `category` that match `event`.
    pub fn matches(&self, category: Category, event: &SigmaEvent) -> Vec<Arc<RuleMeta>> {
        let Some((_, engine)) = self.engines.iter().find(|(c, _)| *c == category) else {
            return Vec::new();
        };
        if engine.rule_count() == 0 {
            return Vec::new();
        }
        engine
            .evaluate(event)
            .into_iter()
            .filter_map(|r| {
                let key = r.header.rule_id.as_deref().unwrap_or(&r.header.rule_title);
                self.meta.get(key).cloned()
            })
            .collect()
    }
}
