//! The technique-overlap hint: which ATT&CK groups' known techniques look
//! most like an incident's, by TF-IDF cosine over MITRE ATT&CK Enterprise
//! v18.1 group→technique links, and the techniques those groups use that
//! were not seen yet (a hunt list). A hint for analysts, never a verdict:
//! many groups share tooling, and a technique set says nothing of who.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::Serialize;

static TABLE: &str = include_str!("attack-groups.tsv");

struct Group {
    id: &'static str,
    name: &'static str,
    techniques: Vec<&'static str>,
}

struct Model {
    groups: Vec<Group>,
    idf: HashMap<&'static str, f64>,
    /// Euclidean norm of each group's TF-IDF vector.
    norms: Vec<f64>,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let groups: Vec<Group> = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let mut f = l.split('\t');
                let id = f.next()?;
                let name = f.next()?;
                let techniques = f.next()?.split(',').filter(|t| !t.is_empty()).collect();
                Some(Group {
                    id,
                    name,
                    techniques,
                })
            })
            .collect();
        let mut df: HashMap<&'static str, f64> = HashMap::new();
        for g in &groups {
            for t in expand(&g.techniques) {
                *df.entry(t).or_default() += 1.0;
            }
        }
        let n = groups.len() as f64;
        let idf: HashMap<&'static str, f64> = df
            .into_iter()
            .map(|(t, d)| (t, (n / d).ln() + 1.0))
            .collect();
        let norms = groups
            .iter()
            .map(|g| {
                expand(&g.techniques)
                    .iter()
                    .map(|t| idf.get(t).copied().unwrap_or(0.0).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        Model { groups, idf, norms }
    })
}

/// A technique set with each sub-technique's parent added, so T1110.001
/// and T1110 meet.
fn expand<'a>(ids: &[&'a str]) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for t in ids {
        out.insert(*t);
        if let Some((parent, _)) = t.split_once('.') {
            out.insert(parent);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupHint {
    pub id: String,
    pub name: String,
    /// Cosine similarity, 0..1.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hint {
    /// Always present: how to read the list.
    pub label: &'static str,
    pub groups: Vec<GroupHint>,
    /// Techniques the hinted groups use that the incident has not shown,
    /// most telling first.
    pub hunt: Vec<String>,
}

pub const LABEL: &str = "technique-overlap hint (ATT&CK v18.1 groups), not attribution";

/// The hint for an incident's techniques, when it has at least `min`.
pub fn hint(seen: &BTreeSet<String>, min: usize, top: usize) -> Option<Hint> {
    if seen.len() < min {
        return None;
    }
    let m = model();
    let ids: Vec<&str> = seen.iter().map(String::as_str).collect();
    let mine = expand(&ids);
    let w = |t: &str| m.idf.get(t).copied().unwrap_or(0.0);
    let my_norm = mine.iter().map(|t| w(t).powi(2)).sum::<f64>().sqrt();
    if my_norm == 0.0 {
        return None;
    }
    let mut scored: Vec<(f64, usize)> = m
        .groups
        .iter()
        .enumerate()
        .filter(|(i, _)| m.norms[*i] > 0.0)
        .map(|(i, g)| {
            let theirs = expand(&g.techniques);
            let dot: f64 = mine.intersection(&theirs).map(|t| w(t).powi(2)).sum();
            (dot / (my_norm * m.norms[i]), i)
        })
        .filter(|(s, _)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(top);
    let mut hunt: BTreeMap<&str, f64> = BTreeMap::new();
    for (s, i) in &scored {
        for t in &m.groups[*i].techniques {
            if !mine.contains(t) {
                *hunt.entry(t).or_default() += s * w(t);
            }
        }
    }
    let mut hunt: Vec<(&str, f64)> = hunt.into_iter().collect();
    hunt.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    Some(Hint {
        label: LABEL,
        groups: scored
            .iter()
            .map(|(s, i)| GroupHint {
                id: m.groups[*i].id.to_string(),
                name: m.groups[*i].name.to_string(),
                score: (s * 1000.0).round() / 1000.0,
            })
            .collect(),
        hunt: hunt
            .into_iter()
            .take(10)
            .map(|(t, _)| t.to_string())
            .collect(),
    })
}

pub fn group_count() -> usize {
    model().groups.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_groups_with_techniques() {
        assert!(group_count() > 100, "{}", group_count());
        let m = model();
        let axiom = m.groups.iter().find(|g| g.id == "G0001").expect("G0001");
        assert_eq!(axiom.name, "Axiom");
        assert!(axiom
            .techniques
            .iter()
            .all(|t| crate::detect::attack::exists(t)));
    }

    #[test]
    fn a_groups_own_techniques_point_back_at_it() {
        let m = model();
        let g = m
            .groups
            .iter()
            .filter(|g| g.techniques.len() >= 12)
            .max_by_key(|g| g.techniques.len())
            .expect("a large group");
        let seen: BTreeSet<String> = g.techniques.iter().map(|t| t.to_string()).collect();
        let h = hint(&seen, 8, 3).expect("hint");
        assert_eq!(h.groups[0].id, g.id, "{h:?}");
        assert_eq!(h.groups[0].score, 1.0);
        assert!(h.hunt.iter().all(|t| !seen.contains(t)));
        assert_eq!(h.label, LABEL);
    }

    #[test]
    fn no_hint_below_the_minimum_and_a_hunt_list_of_unseen_techniques() {
        let few: BTreeSet<String> = ["T1110", "T1046"].iter().map(|s| s.to_string()).collect();
        assert_eq!(hint(&few, 8, 3), None);
        let eight: BTreeSet<String> = [
            "T1110.001",
            "T1046",
            "T1021.004",
            "T1059.004",
            "T1071.001",
            "T1105",
            "T1041",
            "T1078",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let h = hint(&eight, 8, 3).expect("hint");
        assert_eq!(h.groups.len(), 3);
        assert!(h.groups.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(!h.hunt.is_empty());
        assert!(h.hunt.iter().all(|t| !eight.contains(t) && t != "T1110"));
    }
}
