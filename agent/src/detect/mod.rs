//! Local detection: pure detectors fed the typed record stream, each with
//! bounded per-key state, and an engine that maps their findings to
//! ATT&CK, de-duplicates them and turns them into `alert` records.

pub mod anomaly;
pub mod attack;
pub mod beacon;
pub mod brute_force;
pub mod config;
pub mod exfil;
pub mod iforest;
pub mod lateral;
pub mod lru;
pub mod process;
pub mod registry;
pub mod rita;
pub mod scan;
pub mod sigma;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::record::Body;

impl Severity {
    pub const NAMES: &'static [&'static str] = &["info", "low", "medium", "high", "critical"];

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}
use attack::Technique;

/// How detectors name the process behind a flow: its executable, else its pid.
pub fn process_label(exe: Option<&str>, pid: Option<u32>) -> String {
    match (exe, pid) {
        (Some(e), _) => e.to_string(),
        (None, Some(p)) => format!("pid:{p}"),
        (None, None) => "unknown".to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Evidence, not an alert: recorded for investigation and correlation;
    /// a playbook acts on it only when it asks for `info` by name.
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// What a detector reports; the engine adds ids, names and de-duplication.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub detector: &'static str,
    /// Same attack, same key: one alert with an updated count.
    pub key: String,
    pub severity: Severity,
    pub confidence: f64,
    pub techniques: Vec<&'static str>,
    pub summary: String,
    pub entities: serde_json::Value,
    pub evidence: serde_json::Value,
}

/// A detector: fed every record with its wall-clock time in seconds, it
/// returns findings. No I/O; state bounded per key.
pub trait Detector: Send {
    /// Its registry name ([`registry::Declared::NAME`]).
    fn name(&self) -> &'static str;
    /// The techniques its findings may carry ([`registry::Declared::TECHNIQUES`]).
    fn techniques(&self) -> &'static [&'static str];
    fn on_record(&mut self, now_s: f64, body: &Body, out: &mut Vec<Finding>);
    /// Whether its findings carry the techniques of loaded rules rather
    /// than a fixed declaration ([`registry::Declared::RULE_DRIVEN`]).
    fn rule_driven(&self) -> bool {
        false
    }
    /// The Sigma detector, so the daemon can hand it a reloaded rule set.
    fn as_sigma(&mut self) -> Option<&mut sigma::SigmaDetector> {
        None
    }
    /// Files under the state directory this detector persists.
    fn state_files(&self) -> &'static [&'static str] {
        &[]
    }
    /// State to persist now (file name, bytes), when it changed.
    fn take_state(&mut self) -> Option<(&'static str, Vec<u8>)> {
        None
    }
    /// Restores persisted state; an error leaves the detector as it was.
    fn load_state(&mut self, _name: &str, _bytes: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: &'static str,
    pub id: String,
    pub ts: String,
    pub host: Arc<str>,
    pub detector: &'static str,
    pub severity: Severity,
    pub confidence: f64,
    pub techniques: Vec<Technique>,
    pub summary: String,
    pub entities: serde_json::Value,
    pub evidence: serde_json::Value,
    /// Findings folded into this alert so far.
    pub count: u64,
    pub first_seen: String,
    /// False for the first record of an alert, true for count updates.
    pub update: bool,
}

struct Open {
    id: String,
    count: u64,
    first_seen: String,
    last_emit_s: f64,
    last_seen_s: f64,
    severity: Severity,
}

/// Runs every detector and de-duplicates: the first finding for a key is an
/// alert; repeats within `dedup_window_s` only bump its count, re-emitted
/// (same id, `update: true`) at most every `update_interval_s` or when the
/// severity rises.
pub struct Engine {
    detectors: Vec<Box<dyn Detector>>,
    open: lru::Bounded<String, Open>,
    pub dedup_window_s: f64,
    pub update_interval_s: f64,
    pub alerts_by_detector: BTreeMap<&'static str, u64>,
}

impl Engine {
    pub fn new(detectors: Vec<Box<dyn Detector>>) -> Engine {
        Engine {
            detectors,
            open: lru::Bounded::new(16_384),
            dedup_window_s: 600.0,
            update_interval_s: 30.0,
            alerts_by_detector: BTreeMap::new(),
        }
    }

    /// Persisted state that changed since the last call.
    pub fn take_states(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        self.detectors
            .iter_mut()
            .filter_map(|d| d.take_state())
            .collect()
    }

    /// Loads persisted state through `read`; returns each file that could
    /// not be used, with why (the detector then starts fresh).
    pub fn load_states(
        &mut self,
        read: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        for d in &mut self.detectors {
            for name in d.state_files() {
                if let Some(bytes) = read(name) {
                    if let Err(e) = d.load_state(name, &bytes) {
                        errors.push((*name, e));
                    }
                }
            }
        }
        errors
    }

    /// The Sigma detector, when the engine runs it.
    pub fn sigma_mut(&mut self) -> Option<&mut sigma::SigmaDetector> {
        self.detectors.iter_mut().find_map(|d| d.as_sigma())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    pub fn on_record(&mut self, now_s: f64, ts: &str, host: &Arc<str>, body: &Body) -> Vec<Alert> {
        let mut findings = Vec::new();
        for d in &mut self.detectors {
            let from = findings.len();
            d.on_record(now_s, body, &mut findings);
            debug_assert!(
                findings[from..].iter().all(|f| f.detector == d.name()
                    && f.techniques.iter().all(|t| if d.rule_driven() {
                        attack::exists(t)
                    } else {
                        d.techniques().contains(t)
                    })),
                "{} raised a finding outside its declaration ({:?}): {:?}",
                d.name(),
                d.techniques(),
                &findings[from..]
            );
        }
        findings
            .into_iter()
            .filter_map(|f| self.fold(now_s, ts, host, f))
            .collect()
    }

    fn fold(&mut self, now_s: f64, ts: &str, host: &Arc<str>, f: Finding) -> Option<Alert> {
        let key = format!("{}:{}", f.detector, f.key);
        let (id, count, first_seen, update) = match self.open.get_mut(&key) {
            Some(o) if now_s - o.last_seen_s < self.dedup_window_s => {
                o.count += 1;
                o.last_seen_s = now_s;
                let rises = f.severity > o.severity;
                if !rises && now_s - o.last_emit_s < self.update_interval_s {
                    return None;
                }
                o.last_emit_s = now_s;
                o.severity = o.severity.max(f.severity);
                (o.id.clone(), o.count, o.first_seen.clone(), true)
            }
            _ => {
                let id = crate::util::id::new_id();
                self.open.put(
                    key,
                    Open {
                        id: id.clone(),
                        count: 1,
                        first_seen: ts.to_string(),
                        last_emit_s: now_s,
                        last_seen_s: now_s,
                        severity: f.severity,
                    },
                );
                (id, 1, ts.to_string(), false)
            }
        };
        *self.alerts_by_detector.entry(f.detector).or_default() += 1;
        Some(Alert {
            kind: "alert",
            id,
            ts: ts.to_string(),
            host: host.clone(),
            detector: f.detector,
            severity: f.severity,
            confidence: f.confidence.clamp(0.0, 1.0),
            techniques: f.techniques.into_iter().map(attack::technique).collect(),
            summary: f.summary,
            entities: f.entities,
            evidence: f.evidence,
            count,
            first_seen,
            update,
        })
    }
}

impl Alert {
    /// One readable line for stderr.
    pub fn line(&self) -> String {
        let ids: Vec<&str> = self.techniques.iter().map(|t| t.id).collect();
        format!(
            "ALERT {:?} {} [{}] {} (confidence {:.2}, count {})",
            self.severity,
            self.detector,
            ids.join(","),
            self.summary,
            self.confidence,
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Detectors see records and nothing else: they may use `record` and
    /// `util`, never the pipeline, containment or outputs, so they stay pure.
    #[test]
    fn detectors_import_only_records_and_util() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detect");
        let mut bad = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/detect") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let module: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !module.is_empty()
                        && !["detect", "record", "util"].contains(&module.as_str())
                    {
                        bad.push(format!("{}:{}: crate::{module}", path.display(), i + 1));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "detect reaches outside its inputs:\n{}",
            bad.join("\n")
        );
    }

    struct Always;
    impl Detector for Always {
        fn name(&self) -> &'static str {
            "always"
        }
        fn techniques(&self) -> &'static [&'static str] {
            &["T1046"]
        }
        fn on_record(&mut self, _now: f64, _b: &Body, out: &mut Vec<Finding>) {
            out.push(Finding {
                detector: "always",
                key: "k".into(),
                severity: Severity::Low,
                confidence: 2.0,
                techniques: vec!["T1046"],
                summary: "s".into(),
                entities: serde_json::json!({}),
                evidence: serde_json::json!({}),
            });
        }
    }

    fn body() -> Body {
        Body::ProcessFork(crate::record::ProcessFork {
            pid: 1,
            ppid: 0,
            maybe_thread: false,
        })
    }

    #[test]
    fn repeats_fold_into_one_alert_with_a_count() {
        let mut e = Engine::new(vec![Box::new(Always)]);
        let host: Arc<str> = Arc::from("h");
        let first = e.on_record(0.0, "t0", &host, &body());
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].techniques[0].name, "Network Service Discovery");
        assert_eq!(first[0].confidence, 1.0);
        for i in 1..100 {
            assert!(e.on_record(i as f64 * 0.1, "t", &host, &body()).is_empty());
        }
        let upd = e.on_record(31.0, "t31", &host, &body());
        assert_eq!(upd.len(), 1);
        assert_eq!(upd[0].id, first[0].id);
        assert_eq!(upd[0].count, 101);
        assert!(upd[0].update);
    }
}
