//! Fleet fusion: correlates what every agent reports on Kafka, turns one
//! host's evidence into protection for the whole fleet, and assembles
//! incidents that cross hosts. Each stage is a pure function of its state
//! and one record (`consensus`, `chains`, `incidents`); the Kafka driver
//! feeds them, writes their outputs and keeps their state in compacted
//! changelog topics, so any instance can die and another take over.

pub mod chains;
pub mod config;
pub mod consensus;
pub mod groups;
pub mod incidents;
pub mod inventory;
pub mod model;
pub mod narrative;
pub mod run;
pub mod stream;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("fusion config: {0}")]
    Config(String),
    #[error("fusion kafka: {0}")]
    Kafka(String),
}

/// Hex SHA-256 over the parts, each length-prefixed so no two part lists
/// collide; ids derived from it are stable across restarts.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The stages together on a synthetic fleet, as the driver wires them
/// (without Kafka): benign noise, a C2 seen by three hosts, an SSH chain
/// A→B→C, allowlisted decoys, duplicates and records out of order.
#[cfg(test)]
mod fleet_tests {
    use std::collections::{BTreeMap, HashMap};

    use super::chains::{self, ChainIn, ChainOut, HostChains};
    use super::config::{FusionConfig, FusionMode};
    use super::consensus::{self, Budget, ConsensusOut, Ctx, Decision, IocState};
    use super::incidents::{self, IncidentIn, Incidents};
    use super::inventory::{Allowlist, Inventory};
    use super::model::{AlertIn, ConnectIn, InventoryIn};

    const T0: f64 = 1_796_000_000.0;

    fn rfc(t: f64) -> String {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    }

    enum In {
        Alert(AlertIn),
        Connect(ConnectIn),
    }

    fn alert(
        id: &str,
        host: &str,
        detector: &str,
        t: f64,
        ent: serde_json::Value,
        tech: &str,
    ) -> In {
        In::Alert(
            serde_json::from_value(serde_json::json!({
                "id": id, "ts": rfc(t), "host": host, "detector": detector, "confidence": 0.8,
                "severity": "medium", "techniques": [{"id": tech}], "entities": ent
            }))
            .expect("alert"),
        )
    }

    fn connect(host: &str, dst: &str, port: u16, t: f64) -> In {
        In::Connect(ConnectIn {
            ts: rfc(t),
            host: host.into(),
            src_ip: "10.0.0.9".parse().expect("ip"),
            dst_ip: dst.parse().expect("ip"),
            dst_port: port,
            exe: None,
            pid: None,
        })
    }

    struct Fleet {
        cfg: FusionConfig,
        inv: Inventory,
        ioc: HashMap<String, IocState>,
        hosts: HashMap<String, HostChains>,
        inc: Incidents,
        budget: Budget,
        decisions: Vec<Decision>,
    }

    impl Fleet {
        fn new() -> Fleet {
            let mut inv = Inventory::default();
            for (h, a) in [
                ("a", "10.0.0.1"),
                ("b", "10.0.0.2"),
                ("c", "10.0.0.3"),
                ("d", "10.0.0.4"),
            ] {
                inv.put(
                    h,
                    Some(InventoryIn {
                        host: h.into(),
                        addresses: vec![a.parse().expect("ip")],
                        roles: vec![],
                        ts: String::new(),
                    }),
                );
            }
            Fleet {
                cfg: FusionConfig {
                    mode: FusionMode::Enforce,
                    allowlist: vec!["192.0.2.0/24".into()],
                    ..FusionConfig::default()
                },
                inv,
                ioc: HashMap::new(),
                hosts: HashMap::new(),
                inc: Incidents::default(),
                budget: Budget::default(),
                decisions: Vec::new(),
            }
        }

        fn chain(&mut self, host: &str, input: ChainIn<'_>, now: f64) {
            let st = self.hosts.remove(host);
            let (st, out) = chains::on_record(st, host, input, now, &self.cfg, &self.inv);
            if let Some(st) = st {
                self.hosts.insert(host.to_string(), st);
            }
            for o in out {
                match o {
                    ChainOut::Link(l) => {
                        incidents::on_record(&mut self.inc, IncidentIn::Link(&l), 86_400);
                    }
                    ChainOut::Pending(p) => {
                        let to = p.to.clone();
                        self.chain(&to, ChainIn::Pending(&p), now);
                    }
                }
            }
        }

        fn feed(&mut self, input: &In, now: f64) {
            match input {
                In::Alert(a) => {
                    let version = self.cfg.rule_version();
                    let allow = Allowlist::new(&self.cfg);
                    for s in consensus::sightings(a) {
                        let key = s.indicator.key();
                        let mut ctx = Ctx {
                            cfg: &self.cfg,
                            rule_version: &version,
                            allow: &allow,
                            fleet: &self.inv,
                            budget: &mut self.budget,
                        };
                        let (st, out) =
                            consensus::on_sighting(self.ioc.remove(&key), &s, now, &mut ctx);
                        if let Some(st) = st {
                            self.ioc.insert(key, st);
                        }
                        for o in out {
                            if let ConsensusOut::Publish(d) = o {
                                incidents::on_record(
                                    &mut self.inc,
                                    IncidentIn::Decision(&d),
                                    86_400,
                                );
                                self.decisions.push(d);
                            }
                        }
                    }
                    incidents::on_record(&mut self.inc, IncidentIn::Alert(a), 86_400);
                    self.chain(&a.host.clone(), ChainIn::Alert(a), now);
                }
                In::Connect(c) => self.chain(&c.host.clone(), ChainIn::Connect(c), now),
            }
        }
    }

    fn scenario() -> Vec<In> {
        let mut v = Vec::new();
        // Benign noise: each host alone, low-grade, unrelated addresses;
        // ordinary admin connections before anyone is suspect.
        for (i, h) in ["a", "b", "c", "d"].iter().enumerate() {
            let ip = format!("198.51.100.{}", 10 + i);
            v.push(alert(
                &format!("n{i}"),
                h,
                "anomaly",
                T0 + i as f64,
                serde_json::json!({"dst_ip": ip}),
                "T1071",
            ));
            v.push(connect(h, "10.0.0.4", 22, T0 + 1.0 + i as f64));
        }
        // Decoys named by many hosts: a resolver in the allowlist, and the
        // fleet's own backup server (d) as a bulk-transfer destination.
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            v.push(alert(
                &format!("r{i}"),
                h,
                "exfil",
                T0 + 5.0,
                serde_json::json!({"dst_ip": "192.0.2.53"}),
                "T1048",
            ));
            v.push(alert(
                &format!("f{i}"),
                h,
                "exfil",
                T0 + 5.0,
                serde_json::json!({"dst_ip": "10.0.0.4"}),
                "T1030",
            ));
        }
        // A C2 seen by three hosts.
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            v.push(alert(
                &format!("c2-{i}"),
                h,
                "beacon",
                T0 + 10.0 + i as f64,
                serde_json::json!({"dst_ip": "203.0.113.9"}),
                "T1071",
            ));
        }
        // An SSH chain: a brute-forces b; b hops to c's SSH; c alerts.
        v.push(alert(
            "bf",
            "b",
            "brute_force",
            T0 + 20.0,
            serde_json::json!({"src_ip": "10.0.0.1", "dst_port": 22}),
            "T1110.001",
        ));
        v.push(connect("b", "10.0.0.3", 22, T0 + 25.0));
        v.push(alert(
            "on-c",
            "c",
            "process",
            T0 + 30.0,
            serde_json::json!({"exe": "/tmp/x"}),
            "T1059.004",
        ));
        v
    }

    fn run(records: &[In]) -> Fleet {
        let mut f = Fleet::new();
        for (i, r) in records.iter().enumerate() {
            f.feed(r, T0 + 40.0 + i as f64 * 0.01);
        }
        f
    }

    /// Addresses decided, and each incident's hosts with its edges.
    type Summary = (Vec<String>, BTreeMap<String, Vec<(String, String)>>);

    fn summary(f: &Fleet) -> Summary {
        let decided = f.decisions.iter().map(|d| d.indicator.clone()).collect();
        let incidents = f
            .inc
            .open
            .values()
            .map(|i| {
                let mut edges: Vec<(String, String)> = i
                    .edges
                    .iter()
                    .map(|e| (e.from.clone(), e.to.clone()))
                    .collect();
                edges.sort();
                edges.dedup();
                (i.hosts.iter().cloned().collect::<Vec<_>>().join(","), edges)
            })
            .collect();
        (decided, incidents)
    }

    #[test]
    fn a_synthetic_fleet_yields_one_decision_and_one_chain_incident() {
        let f = run(&scenario());
        let (decided, incidents) = summary(&f);
        assert_eq!(decided, ["203.0.113.9"], "only the C2: no noise, no decoy");
        assert_eq!(
            f.decisions[0].hosts,
            ["a", "b"],
            "decided at the second host"
        );
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        let (hosts, edges) = incidents.iter().next().expect("one");
        assert_eq!(hosts, "a,b,c");
        assert!(edges.contains(&("a".into(), "b".into())), "{edges:?}");
        assert!(edges.contains(&("b".into(), "c".into())), "{edges:?}");
    }

    #[test]
    fn duplicates_and_reordering_change_nothing_that_matters() {
        let once = summary(&run(&scenario()));
        // Every record twice (at-least-once delivery).
        let mut twice = Vec::new();
        for r in scenario().into_iter().zip(scenario()) {
            twice.push(r.0);
            twice.push(r.1);
        }
        assert_eq!(summary(&run(&twice)), once);
        // Out of order: c's alert before b's hop into c (the chain still
        // links), and the C2 sightings reversed.
        let mut shuffled = scenario();
        let n = shuffled.len();
        shuffled.swap(n - 1, n - 2);
        shuffled[12..15].reverse();
        let (decided, incidents) = summary(&run(&shuffled));
        assert_eq!(decided, once.0);
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        assert_eq!(incidents.keys().next().map(String::as_str), Some("a,b,c"));
    }
}
