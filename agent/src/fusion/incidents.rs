//! Incident assembly: links between hosts and fleet decisions open
//! incidents; alerts, actions and approvals on their hosts join them; two
//! incidents that come to share a host merge. The state is the set of open
//! incidents (one key: the graph crosses partitions), and each change is
//! published whole, keyed by incident id, on the compacted incidents topic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::chains::Link;
use super::consensus::{Decision, Verdict};
use super::model::{ts_s, ActionIn, AlertIn};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub technique: String,
    pub port: Option<u16>,
    pub ts: f64,
    pub how: String,
    pub link: String,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRef {
    pub id: String,
    pub host: String,
    pub detector: String,
    pub severity: String,
    pub confidence: f64,
    pub ts: f64,
    pub techniques: Vec<String>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorRef {
    pub indicator: String,
    #[serde(default)]
    pub techniques: Vec<String>,
    pub decision: String,
    pub verdict: Verdict,
    pub ttl_s: u64,
    pub rule: String,
    pub hosts: Vec<String>,
    pub ts: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRef {
    pub id: String,
    pub host: String,
    pub ts: f64,
    /// `block 203.0.113.9: applied`, `decision approval_requested: apr-…`.
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub host: String,
    pub requested: f64,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub opened: f64,
    pub updated: f64,
    pub hosts: BTreeSet<String>,
    pub edges: Vec<Edge>,
    pub alerts: Vec<AlertRef>,
    pub indicators: Vec<IndicatorRef>,
    pub actions: Vec<ActionRef>,
    pub approvals: Vec<Approval>,
    /// Alerts left out past the cap (the count is kept).
    pub alerts_dropped: u64,
}

pub const MAX_ALERTS: usize = 500;
pub const MAX_ACTIONS: usize = 200;
pub const MAX_EDGES: usize = 500;
/// Open incidents held at once; the least recently updated is closed.
pub const MAX_OPEN: usize = 10_000;

impl Incident {
    pub fn techniques(&self) -> BTreeSet<String> {
        let mut t: BTreeSet<String> = self.edges.iter().map(|e| e.technique.clone()).collect();
        for a in &self.alerts {
            t.extend(a.techniques.iter().cloned());
        }
        for i in &self.indicators {
            t.extend(i.techniques.iter().cloned());
        }
        t
    }

    fn touch(&mut self, ts: f64) {
        self.updated = self.updated.max(ts);
    }

    fn add_alert(&mut self, a: AlertRef) -> bool {
        if self.alerts.iter().any(|x| x.id == a.id) {
            return false;
        }
        if self.alerts.len() >= MAX_ALERTS {
            self.alerts_dropped += 1;
            return true;
        }
        self.hosts.insert(a.host.clone());
        self.touch(a.ts);
        self.alerts.push(a);
        self.alerts
            .sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.id.cmp(&b.id)));
        true
    }

    fn absorb(&mut self, other: Incident) {
        self.opened = self.opened.min(other.opened);
        self.hosts.extend(other.hosts);
        for e in other.edges {
            if !self.edges.iter().any(|x| x.link == e.link) && self.edges.len() < MAX_EDGES {
                self.edges.push(e);
            }
        }
        for a in other.alerts {
            if !self.alerts.iter().any(|x| x.id == a.id) && self.alerts.len() < MAX_ALERTS {
                self.alerts.push(a);
            }
        }
        for i in other.indicators {
            if !self.indicators.iter().any(|x| x.decision == i.decision) {
                self.indicators.push(i);
            }
        }
        for a in other.actions {
            if !self.actions.iter().any(|x| x.id == a.id) && self.actions.len() < MAX_ACTIONS {
                self.actions.push(a);
            }
        }
        for a in other.approvals {
            if !self.approvals.iter().any(|x| x.id == a.id) {
                self.approvals.push(a);
            }
        }
        self.alerts_dropped += other.alerts_dropped;
        self.touch(other.updated);
        self.alerts
            .sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.id.cmp(&b.id)));
        self.edges
            .sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.link.cmp(&b.link)));
    }
}

pub enum IncidentIn<'a> {
    Link(&'a Link),
    Decision(&'a Decision),
    Alert(&'a AlertIn),
    Action(&'a ActionIn),
}

#[derive(Debug, Clone, PartialEq)]
pub enum IncidentOut {
    /// Publish the incident (keyed by its id).
    Updated(String),
    /// The incident was merged into another: a tombstone for its key.
    Merged { from: String, into: String },
}

/// The open incidents (the stage's whole state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    pub open: BTreeMap<String, Incident>,
    /// Incidents closed to stay under [`MAX_OPEN`].
    pub evicted: u64,
    /// Recent alerts per host, so an incident opened by a later link or
    /// decision still gets the alerts that led to it.
    #[serde(default)]
    pub recent: BTreeMap<String, VecDeque<AlertRef>>,
}

/// Alerts remembered per host, and hosts remembered, for late incidents.
pub const RECENT_PER_HOST: usize = 32;
pub const RECENT_HOSTS: usize = 10_000;

fn alert_ref(a: &AlertIn, ts: f64) -> AlertRef {
    AlertRef {
        id: a.id.clone(),
        host: a.host.clone(),
        detector: a.detector.clone(),
        severity: a.severity.clone(),
        confidence: a.confidence,
        ts,
        techniques: a.technique_ids(),
        summary: a.summary.chars().take(300).collect(),
    }
}

impl Incidents {
    fn remember(&mut self, a: AlertRef, window: f64) {
        let q = self.recent.entry(a.host.clone()).or_default();
        if q.iter().any(|x| x.id == a.id) {
            return;
        }
        let newest = a.ts;
        q.push_back(a);
        while q.len() > RECENT_PER_HOST || q.front().is_some_and(|x| newest - x.ts > window) {
            q.pop_front();
        }
        while self.recent.len() > RECENT_HOSTS {
            let oldest = self
                .recent
                .iter()
                .min_by(|a, b| {
                    let t = |q: &VecDeque<AlertRef>| q.back().map(|x| x.ts).unwrap_or(0.0);
                    t(a.1).total_cmp(&t(b.1))
                })
                .map(|(h, _)| h.clone());
            match oldest {
                Some(h) => self.recent.remove(&h),
                None => break,
            };
        }
    }

    /// Gives incident `id` the remembered alerts of its hosts within the
    /// window before `ts`.
    fn attach_recent(&mut self, id: &str, ts: f64, window: f64) {
        let Some(inc) = self.open.get_mut(id) else {
            return;
        };
        let hosts: Vec<String> = inc.hosts.iter().cloned().collect();
        for h in hosts {
            for a in self.recent.get(&h).into_iter().flatten() {
                if ts - a.ts <= window && a.ts <= ts + window {
                    inc.add_alert(a.clone());
                }
            }
        }
    }

    /// Open incidents holding any of `hosts` that were updated within the
    /// window before `ts`, oldest first.
    fn holding(&self, hosts: &[&str], ts: f64, window: f64) -> Vec<String> {
        let mut ids: Vec<(f64, String)> = self
            .open
            .values()
            .filter(|i| ts - i.updated <= window && hosts.iter().any(|h| i.hosts.contains(*h)))
            .map(|i| (i.opened, i.id.clone()))
            .collect();
        ids.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// The incident for `hosts`: the oldest that holds any, with every other
    /// one merged in; or a new one named by `seed`.
    fn gather(
        &mut self,
        hosts: &[&str],
        ts: f64,
        window: f64,
        seed: &str,
        out: &mut Vec<IncidentOut>,
    ) -> String {
        let ids = self.holding(hosts, ts, window);
        let Some(first) = ids.first().cloned() else {
            let id = format!("inc-{}", &super::digest(&[seed.as_bytes()])[..16]);
            self.open.entry(id.clone()).or_insert_with(|| Incident {
                id: id.clone(),
                opened: ts,
                updated: ts,
                ..Incident::default()
            });
            return id;
        };
        for other in &ids[1..] {
            if let Some(o) = self.open.remove(other) {
                if let Some(keep) = self.open.get_mut(&first) {
                    keep.absorb(o);
                }
                out.push(IncidentOut::Merged {
                    from: other.clone(),
                    into: first.clone(),
                });
            }
        }
        first
    }

    fn evict(&mut self) {
        while self.open.len() > MAX_OPEN {
            let Some(oldest) = self
                .open
                .values()
                .min_by(|a, b| a.updated.total_cmp(&b.updated))
                .map(|i| i.id.clone())
            else {
                break;
            };
            self.open.remove(&oldest);
            self.evicted += 1;
        }
    }
}

/// One input; returns which incidents changed.
pub fn on_record(st: &mut Incidents, input: IncidentIn<'_>, window_s: u64) -> Vec<IncidentOut> {
    let window = window_s as f64;
    let mut out = Vec::new();
    let changed = match input {
        IncidentIn::Link(l) => {
            let id = st.gather(&[&l.from, &l.to], l.ts, window, &l.id, &mut out);
            let changed = st.open.get_mut(&id).and_then(|inc| {
                if inc.edges.iter().any(|e| e.link == l.id) || inc.edges.len() >= MAX_EDGES {
                    return None;
                }
                inc.edges.push(Edge {
                    from: l.from.clone(),
                    to: l.to.clone(),
                    technique: l.technique.clone(),
                    port: l.port,
                    ts: l.ts,
                    how: l.how.clone(),
                    link: l.id.clone(),
                    evidence: l.evidence.clone(),
                });
                inc.edges
                    .sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.link.cmp(&b.link)));
                inc.hosts.insert(l.from.clone());
                inc.hosts.insert(l.to.clone());
                inc.touch(l.ts);
                Some(id)
            });
            if let Some(id) = &changed {
                st.attach_recent(id, l.ts, window);
            }
            changed
        }
        IncidentIn::Decision(d) => {
            let ts = d.ts as f64;
            let hosts: Vec<&str> = d.hosts.iter().map(String::as_str).collect();
            if hosts.is_empty() {
                return out;
            }
            let id = st.gather(&hosts, ts, window, &d.id, &mut out);
            let changed = st.open.get_mut(&id).and_then(|inc| {
                if inc.indicators.iter().any(|i| i.decision == d.id) {
                    return None;
                }
                inc.indicators.push(IndicatorRef {
                    indicator: d.indicator.clone(),
                    techniques: d.techniques.clone(),
                    decision: d.id.clone(),
                    verdict: d.action,
                    ttl_s: d.ttl_s,
                    rule: d.rule.clone(),
                    hosts: d.hosts.clone(),
                    ts,
                });
                inc.hosts.extend(d.hosts.iter().cloned());
                inc.touch(ts);
                Some(id)
            });
            if let Some(id) = &changed {
                st.attach_recent(id, ts, window);
            }
            changed
        }
        IncidentIn::Alert(a) => {
            let Some(ts) = a.ts_s() else {
                return out;
            };
            if a.update {
                return out;
            }
            // Alerts join incidents; alone they open none (one host's
            // alert is its own agent's business), but are remembered.
            let r = alert_ref(a, ts);
            st.remember(r.clone(), window);
            let ids = st.holding(&[&a.host], ts, window);
            let id = ids.first().cloned();
            id.filter(|id| st.open.get_mut(id).is_some_and(|inc| inc.add_alert(r)))
        }
        IncidentIn::Action(x) => {
            let Some(ts) = ts_s(&x.ts) else {
                return out;
            };
            let id = st.holding(&[&x.host], ts, window).first().cloned();
            id.filter(|id| {
                st.open
                    .get_mut(id)
                    .is_some_and(|inc| add_action(inc, x, ts))
            })
        }
    };
    if let Some(id) = changed {
        out.push(IncidentOut::Updated(id));
    }
    st.evict();
    out
}

/// The approval id an agent's decision record names (`apr-…`).
fn approval_id(detail: &str) -> Option<String> {
    let start = detail.find("apr-")?;
    let id: String = detail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (id.len() > 4).then_some(id)
}

fn add_action(inc: &mut Incident, x: &ActionIn, ts: f64) -> bool {
    if inc.actions.iter().any(|a| a.id == x.id) {
        return false;
    }
    let detail = x.detail.clone().unwrap_or_default();
    let what = match (x.kind.as_str(), &x.decision) {
        ("decision", Some(d)) => {
            if let Some(apr) = approval_id(&detail) {
                match d.as_str() {
                    "approval_requested" if !inc.approvals.iter().any(|a| a.id == apr) => {
                        inc.approvals.push(Approval {
                            id: apr,
                            host: x.host.clone(),
                            requested: ts,
                            state: "pending".into(),
                            detail: detail.chars().take(300).collect(),
                        });
                    }
                    "approved" | "timeout_approved" | "denied" | "timeout_denied" => {
                        if let Some(a) = inc.approvals.iter_mut().find(|a| a.id == apr) {
                            a.state = if d.contains("approved") {
                                "approved"
                            } else {
                                "denied"
                            }
                            .into();
                        }
                    }
                    _ => {}
                }
            }
            format!(
                "decision {d}: {}",
                detail.chars().take(120).collect::<String>()
            )
        }
        _ => format!(
            "{} {}: {}",
            x.action.as_deref().unwrap_or(&x.kind),
            x.target.as_deref().unwrap_or(""),
            x.state.as_deref().unwrap_or("")
        ),
    };
    if inc.actions.len() < MAX_ACTIONS {
        inc.actions.push(ActionRef {
            id: x.id.clone(),
            host: x.host.clone(),
            ts,
            what,
        });
    }
    inc.touch(ts);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_796_000_000.0;
    const DAY: u64 = 86_400;

    fn link(from: &str, to: &str, t: f64, id: &str) -> Link {
        Link {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            technique: "T1021.004".into(),
            port: Some(22),
            ts: t,
            how: "connect_then_alert".into(),
            evidence: vec![format!("ev-{id}")],
        }
    }

    fn rfc(t: f64) -> String {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    }

    fn alert(id: &str, host: &str, t: f64) -> AlertIn {
        serde_json::from_value(serde_json::json!({
            "id": id, "ts": rfc(t), "host": host, "detector": "brute_force", "severity": "high",
            "confidence": 0.9, "techniques": [{"id": "T1110"}], "summary": "s"
        }))
        .expect("alert")
    }

    #[test]
    fn links_grow_one_incident_and_alerts_join_it() {
        let mut st = Incidents::default();
        // Alone, an alert opens nothing.
        assert!(on_record(&mut st, IncidentIn::Alert(&alert("a0", "h1", T0)), DAY).is_empty());
        let o = on_record(
            &mut st,
            IncidentIn::Link(&link("h1", "h2", T0 + 1.0, "l1")),
            DAY,
        );
        let IncidentOut::Updated(id) = &o[0] else {
            panic!("{o:?}")
        };
        on_record(
            &mut st,
            IncidentIn::Link(&link("h2", "h3", T0 + 2.0, "l2")),
            DAY,
        );
        on_record(
            &mut st,
            IncidentIn::Alert(&alert("a1", "h3", T0 + 3.0)),
            DAY,
        );
        assert_eq!(st.open.len(), 1);
        let inc = &st.open[id];
        assert_eq!(inc.hosts.iter().collect::<Vec<_>>(), ["h1", "h2", "h3"]);
        assert_eq!(inc.edges.len(), 2);
        // a0 came before the first link and joins with it.
        let ids: Vec<&str> = inc.alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a0", "a1"]);
        // Replays change nothing.
        assert!(on_record(
            &mut st,
            IncidentIn::Link(&link("h2", "h3", T0 + 2.0, "l2")),
            DAY
        )
        .is_empty());
        assert!(on_record(
            &mut st,
            IncidentIn::Alert(&alert("a1", "h3", T0 + 3.0)),
            DAY
        )
        .is_empty());
    }

    #[test]
    fn alerts_that_came_before_the_link_join_the_incident() {
        let mut st = Incidents::default();
        on_record(&mut st, IncidentIn::Alert(&alert("early", "h2", T0)), DAY);
        on_record(
            &mut st,
            IncidentIn::Alert(&alert("other-host", "h9", T0)),
            DAY,
        );
        on_record(
            &mut st,
            IncidentIn::Link(&link("h1", "h2", T0 + 5.0, "l1")),
            DAY,
        );
        let inc = st.open.values().next().expect("one");
        let ids: Vec<&str> = inc.alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["early"]);
    }

    #[test]
    fn two_incidents_that_meet_merge_into_the_older() {
        let mut st = Incidents::default();
        on_record(&mut st, IncidentIn::Link(&link("h1", "h2", T0, "l1")), DAY);
        on_record(
            &mut st,
            IncidentIn::Link(&link("h3", "h4", T0 + 1.0, "l2")),
            DAY,
        );
        assert_eq!(st.open.len(), 2);
        let out = on_record(
            &mut st,
            IncidentIn::Link(&link("h2", "h3", T0 + 2.0, "l3")),
            DAY,
        );
        assert_eq!(st.open.len(), 1);
        assert!(out.iter().any(|o| matches!(o, IncidentOut::Merged { .. })));
        let inc = st.open.values().next().expect("one");
        assert_eq!(inc.hosts.len(), 4);
        assert_eq!(inc.edges.len(), 3);
        assert_eq!(inc.opened, T0);
    }

    #[test]
    fn a_stale_incident_is_not_joined() {
        let mut st = Incidents::default();
        on_record(&mut st, IncidentIn::Link(&link("h1", "h2", T0, "l1")), 3600);
        on_record(
            &mut st,
            IncidentIn::Link(&link("h2", "h3", T0 + 7200.0, "l2")),
            3600,
        );
        assert_eq!(st.open.len(), 2);
    }

    #[test]
    fn approvals_are_tracked_from_requested_to_decided() {
        let mut st = Incidents::default();
        on_record(&mut st, IncidentIn::Link(&link("h1", "h2", T0, "l1")), DAY);
        let req = ActionIn {
            kind: "decision".into(),
            id: "d1".into(),
            ts: rfc(T0 + 1.0),
            host: "h2".into(),
            action: None,
            target: None,
            state: None,
            decision: Some("approval_requested".into()),
            incident: Some("inc-x".into()),
            alert: None,
            detail: Some("apr-19a-2-3 waits up to 600s, then deny: isolate".into()),
        };
        on_record(&mut st, IncidentIn::Action(&req), DAY);
        let inc = st.open.values().next().expect("one");
        assert_eq!(inc.approvals[0].id, "apr-19a-2-3");
        assert_eq!(inc.approvals[0].state, "pending");
        let ok = ActionIn {
            id: "d2".into(),
            decision: Some("approved".into()),
            detail: Some("apr-19a-2-3".into()),
            ..req
        };
        on_record(&mut st, IncidentIn::Action(&ok), DAY);
        assert_eq!(
            st.open.values().next().expect("one").approvals[0].state,
            "approved"
        );
    }
}
