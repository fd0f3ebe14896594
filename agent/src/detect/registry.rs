//! The one list of detectors. Each detector declares next to its code its
//! name (also its section under `detect:`), the ATT&CK techniques its
//! findings may carry and how it is built ([`Declared`]); this list names
//! them in the order they see each record. The engine, `vigil playbook
//! check` and the tests all read it, so adding a detector is its own file,
//! one line here and its config field.

use super::anomaly::AnomalyDetector;
use super::beacon::{BeaconDetector, Beaconing};
use super::brute_force::BruteForceDetector;
use super::config::DetectConfig;
use super::exfil::ExfilDetector;
use super::lateral::LateralDetector;
use super::process::ProcessDetector;
use super::scan::ScanDetector;
use super::sigma::SigmaDetector;
use super::Detector;
#[cfg(test)]
use super::Finding;

/// Every detector, in the order it sees each record (beacon before exfil:
/// exfil reads the destinations beacon flags on the same flow).
pub const DETECTORS: &[Entry] = &[
    entry::<BruteForceDetector>(),
    entry::<ScanDetector>(),
    entry::<BeaconDetector>(),
    entry::<ExfilDetector>(),
    entry::<LateralDetector>(),
    entry::<ProcessDetector>(),
    entry::<AnomalyDetector>(),
    entry::<SigmaDetector>(),
];

/// State detectors share, made once per engine.
#[derive(Default)]
pub struct Shared {
    /// Destinations the beacon detector flags; exfil adds T1041 for them.
    pub beaconing: Beaconing,
}

/// What a detector declares about itself.
pub trait Declared: Detector + Sized + 'static {
    /// Its name in alerts, playbook triggers and metrics, and the key of
    /// its section under `detect:`.
    const NAME: &'static str;
    /// Every ATT&CK technique (exact id, sub-techniques spelled out) its
    /// findings may carry.
    const TECHNIQUES: &'static [&'static str];
    /// True when its findings carry the techniques of rules loaded at run
    /// time (any technique in the ATT&CK table) instead of `TECHNIQUES`.
    const RULE_DRIVEN: bool = false;
    /// Builds it from its section of the `detect:` config.
    fn build(cfg: &DetectConfig, shared: &Shared) -> Self;
    /// Findings from synthetic input that makes every finding kind it has
    /// fire, so a test can hold its findings to its declaration.
    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding>;
}

/// One detector in [`DETECTORS`].
pub struct Entry {
    pub name: &'static str,
    pub techniques: &'static [&'static str],
    /// See [`Declared::RULE_DRIVEN`].
    pub rule_driven: bool,
    pub build: fn(&DetectConfig, &Shared) -> Box<dyn Detector>,
    #[cfg(test)]
    pub fire_every_finding: fn() -> Vec<Finding>,
}

const fn entry<T: Declared>() -> Entry {
    Entry {
        name: T::NAME,
        techniques: T::TECHNIQUES,
        rule_driven: T::RULE_DRIVEN,
        build: build::<T>,
        #[cfg(test)]
        fire_every_finding: T::fire_every_finding,
    }
}

fn build<T: Declared>(cfg: &DetectConfig, shared: &Shared) -> Box<dyn Detector> {
    Box::new(T::build(cfg, shared))
}

/// The registered detector called `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    DETECTORS.iter().find(|e| e.name == name)
}

/// Every detector, built from the config, in registry order.
pub fn build_all(cfg: &DetectConfig) -> Vec<Box<dyn Detector>> {
    let shared = Shared::default();
    DETECTORS.iter().map(|e| (e.build)(cfg, &shared)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::detect::attack;

    #[test]
    fn no_detector_raises_a_technique_it_does_not_declare() {
        for e in DETECTORS {
            let findings = (e.fire_every_finding)();
            assert!(
                !findings.is_empty(),
                "{}: the exercise fired nothing",
                e.name
            );
            let mut raised = BTreeSet::new();
            for f in &findings {
                assert_eq!(f.detector, e.name, "{f:?}");
                for t in &f.techniques {
                    if e.rule_driven {
                        assert!(attack::exists(t), "{}: unknown technique {t}", e.name);
                        raised.insert(*t);
                        continue;
                    }
                    assert!(
                        e.techniques.contains(t),
                        "{} raised {t}, which it does not declare ({:?})",
                        e.name,
                        e.techniques
                    );
                    raised.insert(*t);
                }
            }
            // And every declared technique is raised by some finding kind,
            // so a playbook trigger that passes the check can fire.
            if e.rule_driven {
                continue;
            }
            let declared: BTreeSet<&str> = e.techniques.iter().copied().collect();
            assert_eq!(raised, declared, "{}: declared but never raised", e.name);
        }
    }

    #[test]
    fn declared_techniques_are_in_the_attack_table() {
        for e in DETECTORS {
            for t in e.techniques {
                assert!(attack::exists(t), "{}: unknown technique {t}", e.name);
                assert!(!attack::technique(t).name.is_empty(), "{t}");
            }
        }
    }

    #[test]
    fn names_are_unique_and_each_is_a_config_section_its_detector_answers_to() {
        let cfg = DetectConfig::default();
        let detectors = build_all(&cfg);
        assert_eq!(detectors.len(), DETECTORS.len());
        for (e, d) in DETECTORS.iter().zip(&detectors) {
            assert_eq!(d.name(), e.name);
            assert_eq!(d.techniques(), e.techniques, "{}", e.name);
            assert_eq!(DETECTORS.iter().filter(|x| x.name == e.name).count(), 1);
            // `detect.<name>` is a known key (the config denies unknown ones).
            let section = serde_json::json!({ e.name: {} });
            serde_json::from_value::<DetectConfig>(section)
                .unwrap_or_else(|err| panic!("detect.{} is not a config section: {err}", e.name));
        }
        assert!(find("beacon").is_some() && find("nope").is_none());
    }

    /// Technique ids a section of docs/detectors.md names: `T1071`, and
    /// sub-techniques written out (`T1110.001`) or after their parent
    /// (`T1071 (.001, .004)`, `T1021.001/.002`).
    fn documented(section: &str) -> BTreeSet<String> {
        let b = section.as_bytes();
        let digits = |at: usize, n: usize| {
            at + n <= b.len()
                && b[at..at + n].iter().all(u8::is_ascii_digit)
                && b.get(at + n).is_none_or(|c| !c.is_ascii_digit())
        };
        let mut out = BTreeSet::new();
        let mut parent: Option<&str> = None;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'T' && digits(i + 1, 4) && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                parent = Some(&section[i..i + 5]);
                let n = if b.get(i + 5) == Some(&b'.') && digits(i + 6, 3) {
                    9
                } else {
                    5
                };
                out.insert(section[i..i + n].to_string());
                i += n;
            } else if b[i] == b'.' && digits(i + 1, 3) && (i == 0 || !b[i - 1].is_ascii_digit()) {
                if let Some(p) = parent {
                    out.insert(format!("{p}{}", &section[i..i + 4]));
                }
                i += 4;
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn docs_name_exactly_the_declared_techniques() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/detectors.md"),
        )
        .expect("docs/detectors.md");
        for e in DETECTORS {
            let head = format!("\n## {} — ", e.name);
            let start = doc
                .find(&head)
                .unwrap_or_else(|| panic!("docs/detectors.md has no `## {} — …`", e.name));
            let rest = &doc[start + 1..];
            let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |n| n + 3)];
            let declared: BTreeSet<String> = e.techniques.iter().map(|t| t.to_string()).collect();
            assert_eq!(
                documented(section),
                declared,
                "docs/detectors.md, {}",
                e.name
            );
        }
    }
}
