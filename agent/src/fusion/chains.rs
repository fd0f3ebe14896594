//! Cross-host chains: which host led to which. Per host, keyed by host name
//! (so the stage scales by partitions), three inputs:
//! - alerts about the host make it suspect for a while, and an alert that
//!   names another fleet host as its source (an attack from it) or, from
//!   the lateral detector, as its destination links the two at once;
//! - a connection from a suspect host to another fleet host's admin port
//!   becomes a pending link, re-keyed to the destination host;
//! - at the destination, a pending link followed within the window by an
//!   alert on that host links A→B.
//!
//! The stage is pure: [`on_record`] takes the host's state and one input.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::FusionConfig;
use super::inventory::Inventory;
use super::model::{ts_s, AlertIn, ConnectIn};

/// A host-to-host step of an attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub from: String,
    pub to: String,
    pub technique: String,
    pub port: Option<u16>,
    /// Unix seconds of the evidence that closed the link.
    pub ts: f64,
    /// How it was seen: `attack_from` (B's alert names A as its source),
    /// `lateral_alert` (A's lateral alert names B), `connect_then_alert`.
    pub how: String,
    /// Alert ids behind it.
    pub evidence: Vec<String>,
}

/// A suspect host's connection to another fleet host's admin port, waiting
/// for an alert on the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub ts: f64,
    /// Alerts that made `from` suspect.
    pub because: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub alert: String,
    pub ts: f64,
}

/// One host's chain state (the changelog's value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostChains {
    /// Suspect until this time (Unix seconds), and why.
    pub suspect_until: f64,
    pub suspect_alerts: VecDeque<Seen>,
    /// Pending links into this host.
    pub pending: VecDeque<Pending>,
    /// Recent alerts on this host, for pending links that arrive late.
    pub recent: VecDeque<Seen>,
}

const MAX_KEPT: usize = 64;

pub enum ChainIn<'a> {
    Alert(&'a AlertIn),
    Connect(&'a ConnectIn),
    Pending(&'a Pending),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChainOut {
    Link(Link),
    /// To the pending-links topic, keyed by `to`.
    Pending(Pending),
}

/// The technique an admin-port hop is, by port.
pub fn hop_technique(port: u16) -> &'static str {
    match port {
        22 => "T1021.004",
        3389 => "T1021.001",
        139 | 445 => "T1021.002",
        135 => "T1021.003",
        5985 | 5986 => "T1021.006",
        _ => "T1021",
    }
}

fn link(
    from: &str,
    to: &str,
    technique: &str,
    port: Option<u16>,
    ts: f64,
    how: &str,
    evidence: Vec<String>,
) -> Link {
    let first = evidence.first().map(String::as_str).unwrap_or("");
    Link {
        id: super::digest(&[
            from.as_bytes(),
            to.as_bytes(),
            technique.as_bytes(),
            first.as_bytes(),
        ])[..24]
            .to_string(),
        from: from.to_string(),
        to: to.to_string(),
        technique: technique.to_string(),
        port,
        ts,
        how: how.to_string(),
        evidence,
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, x: T) {
    q.push_back(x);
    while q.len() > MAX_KEPT {
        q.pop_front();
    }
}

/// One input for `host` (the record's key). Returns the new state and what
/// to publish.
pub fn on_record(
    state: Option<HostChains>,
    host: &str,
    input: ChainIn<'_>,
    now: f64,
    cfg: &FusionConfig,
    fleet: &Inventory,
) -> (Option<HostChains>, Vec<ChainOut>) {
    let mut st = state.unwrap_or_default();
    let window = cfg.chain_window_s as f64;
    let mut out = Vec::new();
    match input {
        ChainIn::Alert(a) => {
            let Some(ts) = a.ts_s() else {
                return (Some(st), out);
            };
            // Re-delivered, evidence (`info`), or from a detector the fleet
            // does not trust (weight 0: the statistical baseline by default)
            // — an outlier alone neither makes a host suspect nor closes a
            // link.
            if a.update
                || a.is_evidence()
                || st.recent.iter().any(|s| s.alert == a.id)
                || cfg.weight(&a.detector) <= 0.0
            {
                return (Some(st), out);
            }
            st.suspect_until = st.suspect_until.max(ts + cfg.suspect_window_s as f64);
            push_bounded(
                &mut st.suspect_alerts,
                Seen {
                    alert: a.id.clone(),
                    ts,
                },
            );
            push_bounded(
                &mut st.recent,
                Seen {
                    alert: a.id.clone(),
                    ts,
                },
            );
            let technique = a
                .techniques
                .first()
                .map(|t| t.id.as_str())
                .unwrap_or("T1021");
            // Attacked from another fleet host: that host led here.
            if let Some(from) = a.src_ip().and_then(|ip| fleet.host_of(&ip)) {
                if from != host {
                    out.push(ChainOut::Link(link(
                        from,
                        host,
                        technique,
                        a.dst_port(),
                        ts,
                        "attack_from",
                        vec![a.id.clone()],
                    )));
                }
            }
            if a.detector == "lateral" {
                if let Some(to) = a.dst_ip().and_then(|ip| fleet.host_of(&ip)) {
                    if to != host {
                        out.push(ChainOut::Link(link(
                            host,
                            to,
                            technique,
                            a.dst_port(),
                            ts,
                            "lateral_alert",
                            vec![a.id.clone()],
                        )));
                    }
                }
            }
            // Pending hops into this host that this alert follows.
            let (hit, keep): (Vec<Pending>, Vec<Pending>) = st
                .pending
                .drain(..)
                .partition(|p| ts >= p.ts && ts - p.ts <= window);
            st.pending = keep.into_iter().collect();
            for p in hit {
                let mut evidence = p.because.clone();
                evidence.push(a.id.clone());
                out.push(ChainOut::Link(link(
                    &p.from,
                    host,
                    hop_technique(p.port),
                    Some(p.port),
                    ts,
                    "connect_then_alert",
                    evidence,
                )));
            }
        }
        ChainIn::Connect(c) => {
            let Some(ts) = ts_s(&c.ts) else {
                return (Some(st), out);
            };
            let suspect = ts <= st.suspect_until;
            let admin = cfg.admin_ports.contains(&c.dst_port);
            if let (true, true, Some(to)) = (suspect, admin, fleet.host_of(&c.dst_ip)) {
                if to != host {
                    out.push(ChainOut::Pending(Pending {
                        from: host.to_string(),
                        to: to.to_string(),
                        port: c.dst_port,
                        ts,
                        because: st.suspect_alerts.iter().map(|s| s.alert.clone()).collect(),
                    }));
                }
            }
        }
        ChainIn::Pending(p) => {
            // An alert on this host may have come first (out of order).
            let followed = st
                .recent
                .iter()
                .find(|s| s.ts >= p.ts && s.ts - p.ts <= window)
                .cloned();
            match followed {
                Some(s) => {
                    let mut evidence = p.because.clone();
                    evidence.push(s.alert);
                    out.push(ChainOut::Link(link(
                        &p.from,
                        host,
                        hop_technique(p.port),
                        Some(p.port),
                        s.ts,
                        "connect_then_alert",
                        evidence,
                    )));
                }
                None if !st.pending.iter().any(|q| q == p) => {
                    push_bounded(&mut st.pending, p.clone())
                }
                None => {}
            }
        }
    }
    // Forget what no window can use any more.
    let horizon = now - window.max(cfg.suspect_window_s as f64);
    st.pending.retain(|p| p.ts >= horizon);
    st.recent.retain(|s| s.ts >= horizon);
    st.suspect_alerts.retain(|s| s.ts >= horizon);
    let empty = st.pending.is_empty() && st.recent.is_empty() && st.suspect_until < now;
    (if empty { None } else { Some(st) }, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::model::InventoryIn;

    const T0: f64 = 1_796_000_000.0;

    fn fleet() -> Inventory {
        let mut f = Inventory::default();
        for (h, a) in [("h1", "10.0.0.1"), ("h2", "10.0.0.2"), ("h3", "10.0.0.3")] {
            f.put(
                h,
                Some(InventoryIn {
                    host: h.into(),
                    addresses: vec![a.parse().expect("ip")],
                    roles: vec![],
                    ts: String::new(),
                }),
            );
        }
        f
    }

    fn rfc(t: f64) -> String {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    }

    fn alert(
        id: &str,
        host: &str,
        detector: &str,
        t: f64,
        entities: serde_json::Value,
        tech: &str,
    ) -> AlertIn {
        serde_json::from_value(serde_json::json!({
            "id": id, "ts": rfc(t), "host": host, "detector": detector, "confidence": 0.8,
            "techniques": [{"id": tech}], "entities": entities
        }))
        .expect("alert")
    }

    fn connect(host: &str, dst: &str, port: u16, t: f64) -> ConnectIn {
        ConnectIn {
            ts: rfc(t),
            host: host.into(),
            src_ip: "10.0.0.9".parse().expect("ip"),
            dst_ip: dst.parse().expect("ip"),
            dst_port: port,
            exe: Some("/usr/bin/ssh".into()),
            pid: Some(7),
        }
    }

    /// Runs records through per-host states the way the driver does,
    /// re-keying pending links to their destination.
    struct Chain {
        cfg: FusionConfig,
        fleet: Inventory,
        states: std::collections::BTreeMap<String, HostChains>,
        links: Vec<Link>,
    }

    impl Chain {
        fn new() -> Chain {
            Chain {
                cfg: FusionConfig::default(),
                fleet: fleet(),
                states: Default::default(),
                links: Vec::new(),
            }
        }

        fn feed(&mut self, host: &str, input: ChainIn<'_>, now: f64) {
            let st = self.states.remove(host);
            let (st, out) = on_record(st, host, input, now, &self.cfg, &self.fleet);
            if let Some(st) = st {
                self.states.insert(host.to_string(), st);
            }
            for o in out {
                match o {
                    ChainOut::Link(l) => self.links.push(l),
                    ChainOut::Pending(p) => {
                        let to = p.to.clone();
                        self.feed(&to, ChainIn::Pending(&p), now);
                    }
                }
            }
        }

        fn pairs(&self) -> Vec<(String, String, String)> {
            self.links
                .iter()
                .map(|l| (l.from.clone(), l.to.clone(), l.technique.clone()))
                .collect()
        }
    }

    #[test]
    fn a_brute_force_from_a_fleet_host_then_a_lateral_hop_links_one_two_three() {
        let mut c = Chain::new();
        // h2 is brute-forced from h1's address.
        let bf = alert(
            "a1",
            "h2",
            "brute_force",
            T0,
            serde_json::json!({"src_ip": "10.0.0.1", "dst_port": 22}),
            "T1110",
        );
        c.feed("h2", ChainIn::Alert(&bf), T0);
        // h2 then connects to h3's SSH port, and h3 raises an alert.
        c.feed(
            "h2",
            ChainIn::Connect(&connect("h2", "10.0.0.3", 22, T0 + 60.0)),
            T0 + 60.0,
        );
        let on3 = alert(
            "a2",
            "h3",
            "brute_force",
            T0 + 90.0,
            serde_json::json!({"src_ip": "10.0.0.2"}),
            "T1110",
        );
        c.feed("h3", ChainIn::Alert(&on3), T0 + 90.0);
        let pairs = c.pairs();
        assert!(
            pairs.contains(&("h1".into(), "h2".into(), "T1110".into())),
            "{pairs:?}"
        );
        assert!(
            pairs.contains(&("h2".into(), "h3".into(), "T1021.004".into())),
            "{pairs:?}"
        );
    }

    #[test]
    fn a_lateral_alert_links_at_once_and_an_alert_first_still_links_a_late_hop() {
        let mut c = Chain::new();
        let lat = alert(
            "l1",
            "h2",
            "lateral",
            T0,
            serde_json::json!({"dst_ip": "10.0.0.3", "dst_port": 22}),
            "T1021.004",
        );
        c.feed("h2", ChainIn::Alert(&lat), T0);
        assert_eq!(c.pairs(), [("h2".into(), "h3".into(), "T1021.004".into())]);
        // Out of order: h3's alert is read before h2's connection.
        let mut c = Chain::new();
        let first = alert(
            "s1",
            "h2",
            "scan",
            T0,
            serde_json::json!({"src_ip": "198.51.100.4"}),
            "T1046",
        );
        c.feed("h2", ChainIn::Alert(&first), T0);
        let on3 = alert(
            "x3",
            "h3",
            "process",
            T0 + 30.0,
            serde_json::json!({}),
            "T1059",
        );
        c.feed("h3", ChainIn::Alert(&on3), T0 + 30.0);
        c.feed(
            "h2",
            ChainIn::Connect(&connect("h2", "10.0.0.3", 3389, T0 + 10.0)),
            T0 + 31.0,
        );
        assert_eq!(c.pairs(), [("h2".into(), "h3".into(), "T1021.001".into())]);
        assert_eq!(c.links[0].evidence, ["s1", "x3"]);
    }

    #[test]
    fn benign_hops_do_not_link() {
        let mut c = Chain::new();
        // Not suspect: an admin connection alone is ordinary work.
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.2", 22, T0)),
            T0,
        );
        let later = alert("b", "h2", "scan", T0 + 5.0, serde_json::json!({}), "T1046");
        c.feed("h2", ChainIn::Alert(&later), T0 + 5.0);
        // Suspect, but to a non-admin port, or outside the fleet.
        let sus = alert(
            "s",
            "h1",
            "beacon",
            T0,
            serde_json::json!({"dst_ip": "203.0.113.9"}),
            "T1071",
        );
        c.feed("h1", ChainIn::Alert(&sus), T0);
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.2", 8080, T0 + 1.0)),
            T0 + 1.0,
        );
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "192.0.2.1", 22, T0 + 2.0)),
            T0 + 2.0,
        );
        // A hop whose alert comes after the window.
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.3", 22, T0 + 3.0)),
            T0 + 3.0,
        );
        let late = alert(
            "z",
            "h3",
            "scan",
            T0 + 3.0 + 901.0,
            serde_json::json!({}),
            "T1046",
        );
        c.feed("h3", ChainIn::Alert(&late), T0 + 904.0);
        assert!(c.links.is_empty(), "{:?}", c.pairs());
    }

    #[test]
    fn an_untrusted_detector_neither_makes_a_host_suspect_nor_closes_a_link() {
        let mut c = Chain::new();
        let weak = alert("w1", "h1", "anomaly", T0, serde_json::json!({}), "T1071");
        c.feed("h1", ChainIn::Alert(&weak), T0);
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.2", 22, T0 + 1.0)),
            T0 + 1.0,
        );
        let sus = alert("s1", "h1", "scan", T0 + 2.0, serde_json::json!({}), "T1046");
        c.feed("h1", ChainIn::Alert(&sus), T0 + 2.0);
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.3", 22, T0 + 3.0)),
            T0 + 3.0,
        );
        let weak3 = alert(
            "w3",
            "h3",
            "anomaly",
            T0 + 4.0,
            serde_json::json!({}),
            "T1071",
        );
        c.feed("h3", ChainIn::Alert(&weak3), T0 + 4.0);
        let weak2 = alert(
            "w2",
            "h2",
            "anomaly",
            T0 + 4.0,
            serde_json::json!({}),
            "T1071",
        );
        c.feed("h2", ChainIn::Alert(&weak2), T0 + 4.0);
        assert!(c.links.is_empty(), "{:?}", c.pairs());
    }

    #[test]
    fn evidence_neither_makes_a_host_suspect_nor_closes_a_link() {
        let mut c = Chain::new();
        let mut info = alert("i1", "h1", "process", T0, serde_json::json!({}), "T1059");
        info.severity = "info".into();
        c.feed("h1", ChainIn::Alert(&info), T0);
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.2", 22, T0 + 1.0)),
            T0 + 1.0,
        );
        let mut info2 = alert(
            "i2",
            "h2",
            "process",
            T0 + 2.0,
            serde_json::json!({}),
            "T1059",
        );
        info2.severity = "info".into();
        c.feed("h2", ChainIn::Alert(&info2), T0 + 2.0);
        assert!(c.links.is_empty(), "{:?}", c.pairs());
        // The same as medium alerts would link h1 to h2.
        let mut c = Chain::new();
        let a1 = alert("m1", "h1", "process", T0, serde_json::json!({}), "T1059");
        c.feed("h1", ChainIn::Alert(&a1), T0);
        c.feed(
            "h1",
            ChainIn::Connect(&connect("h1", "10.0.0.2", 22, T0 + 1.0)),
            T0 + 1.0,
        );
        let a2 = alert(
            "m2",
            "h2",
            "process",
            T0 + 2.0,
            serde_json::json!({}),
            "T1059",
        );
        c.feed("h2", ChainIn::Alert(&a2), T0 + 2.0);
        assert!(!c.links.is_empty(), "{:?}", c.pairs());
    }

    #[test]
    fn replays_and_floods_are_bounded() {
        let mut c = Chain::new();
        let a = alert(
            "a1",
            "h2",
            "brute_force",
            T0,
            serde_json::json!({"src_ip": "10.0.0.1"}),
            "T1110",
        );
        c.feed("h2", ChainIn::Alert(&a), T0);
        c.feed("h2", ChainIn::Alert(&a), T0 + 1.0);
        assert_eq!(c.links.len(), 1, "a re-delivered alert links once");
        for i in 0..500 {
            let s = alert(
                &format!("f{i}"),
                "h1",
                "scan",
                T0,
                serde_json::json!({}),
                "T1046",
            );
            c.feed("h1", ChainIn::Alert(&s), T0);
            c.feed(
                "h1",
                ChainIn::Connect(&connect("h1", "10.0.0.3", 22, T0 + i as f64)),
                T0,
            );
        }
        assert!(c
            .states
            .values()
            .all(|s| s.pending.len() <= MAX_KEPT && s.recent.len() <= MAX_KEPT));
    }
}
