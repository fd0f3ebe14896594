//! Fusion stage throughput on one core, without Kafka: records per second
//! through each pure stage (re-key, consensus, chains, incident assembly)
//! on a synthetic fleet of 1,000 hosts — what one instance can sustain per
//! partition before the broker and the network count. Reported, not judged.

mod common;
use common::pin_to_one_core;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use vigil::fusion::chains::{self, ChainIn, ChainOut, HostChains};
use vigil::fusion::config::FusionConfig;
use vigil::fusion::consensus::{self, Budget, Ctx, IocState};
use vigil::fusion::incidents::{self, IncidentIn, Incidents};
use vigil::fusion::inventory::{Allowlist, Inventory};
use vigil::fusion::model::{AlertIn, ConnectIn, InventoryIn};

const HOSTS: u32 = 1_000;
const T0: f64 = 1_796_000_000.0;

fn host_ip(h: u32) -> String {
    format!("10.{}.{}.{}", h >> 16, (h >> 8) & 255, h & 255)
}

fn rfc(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// Alerts from random hosts naming one of 5,000 outside addresses, a tenth
/// of them naming another fleet host as their source.
fn alerts(n: u32) -> Vec<AlertIn> {
    (0..n)
        .map(|i| {
            // Each outside address is seen by a different host each time round.
            let host = (i * 7919 + i / 5000) % HOSTS;
            let src = if i % 10 == 0 {
                host_ip((host + 1) % HOSTS)
            } else {
                format!("203.0.{}.{}", (i % 5000) >> 8, (i % 5000) & 255)
            };
            let detector = ["scan", "beacon", "brute_force", "lateral"][(i % 4) as usize];
            serde_json::from_value(serde_json::json!({
                "id": format!("a{i}"), "ts": rfc(T0 + i as f64 * 0.01), "host": format!("h{host}"),
                "detector": detector,
                "severity": "medium", "confidence": 0.7,
                "techniques": [{"id": "T1046"}], "entities": {"src_ip": src, "dst_port": 22}
            }))
            .expect("alert")
        })
        .collect()
}

fn fleet() -> Inventory {
    let mut f = Inventory::default();
    for h in 0..HOSTS {
        f.put(
            &format!("h{h}"),
            Some(InventoryIn {
                host: format!("h{h}"),
                addresses: vec![host_ip(h).parse().expect("ip")],
                roles: vec![],
                ts: String::new(),
            }),
        );
    }
    f
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    pin_to_one_core();
    // No decision budget: measure the decision path too, not the limiter.
    let cfg = FusionConfig {
        max_decisions_per_minute: u32::MAX,
        ..FusionConfig::default()
    };
    let fleet = fleet();
    let alerts = alerts(200_000);

    // Stage 1: re-key (parse is the driver's; this is the stage itself).
    let t = Instant::now();
    let mut sightings = Vec::new();
    for a in &alerts {
        sightings.extend(consensus::sightings(a));
    }
    let rekey = rate(alerts.len(), t);

    // Stage 2: consensus, state per indicator in a map as the driver keeps it.
    let version = cfg.rule_version();
    let allow = Allowlist::new(&cfg);
    let mut budget = Budget::default();
    let mut states: HashMap<String, IocState> = HashMap::new();
    let mut decisions = 0usize;
    let mut held = 0usize;
    let mut ignored = 0usize;
    let t = Instant::now();
    for s in &sightings {
        let key = s.indicator.key();
        let mut ctx = Ctx {
            cfg: &cfg,
            rule_version: &version,
            allow: &allow,
            fleet: &fleet,
            budget: &mut budget,
        };
        let (st, out) = consensus::on_sighting(states.remove(&key), s, s.ts, &mut ctx);
        for o in &out {
            match o {
                consensus::ConsensusOut::Publish(_) => decisions += 1,
                consensus::ConsensusOut::RateLimited { .. } => held += 1,
                consensus::ConsensusOut::Ignored(_) => ignored += 1,
                consensus::ConsensusOut::Lift { .. } => {}
            }
        }
        if let Some(st) = st {
            states.insert(key, st);
        }
    }
    let consensus_rate = rate(sightings.len(), t);

    // Stage 3: chains on the alerts plus as many connections.
    let conns: Vec<ConnectIn> = (0..alerts.len() as u32)
        .map(|i| ConnectIn {
            ts: rfc(T0 + i as f64 * 0.01),
            host: format!("h{}", (i * 7919) % HOSTS),
            src_ip: "10.0.0.1".parse().expect("ip"),
            dst_ip: host_ip((i * 31) % HOSTS).parse().expect("ip"),
            dst_port: if i % 20 == 0 { 22 } else { 443 },
            exe: None,
            pid: None,
        })
        .collect();
    let mut hosts: HashMap<String, HostChains> = HashMap::new();
    let mut links = Vec::new();
    let t = Instant::now();
    for (a, c) in alerts.iter().zip(&conns) {
        for (host, input) in [(&a.host, ChainIn::Alert(a)), (&c.host, ChainIn::Connect(c))] {
            let (st, out) = chains::on_record(
                hosts.remove(host.as_str()),
                host,
                input,
                T0 + 1.0,
                &cfg,
                &fleet,
            );
            if let Some(st) = st {
                hosts.insert(host.clone(), st);
            }
            for o in out {
                match o {
                    ChainOut::Link(l) => links.push(l),
                    ChainOut::Pending(p) => {
                        let (st, out) = chains::on_record(
                            hosts.remove(&p.to),
                            &p.to.clone(),
                            ChainIn::Pending(&p),
                            T0 + 1.0,
                            &cfg,
                            &fleet,
                        );
                        if let Some(st) = st {
                            hosts.insert(p.to.clone(), st);
                        }
                        links.extend(out.into_iter().filter_map(|o| match o {
                            ChainOut::Link(l) => Some(l),
                            ChainOut::Pending(_) => None,
                        }));
                    }
                }
            }
        }
    }
    let chains_rate = rate(alerts.len() * 2, t);

    // Stage 4: incident assembly over the links and the alerts.
    let mut inc = Incidents::default();
    let t = Instant::now();
    let mut n = 0;
    for l in links.iter().take(20_000) {
        black_box(incidents::on_record(&mut inc, IncidentIn::Link(l), 86_400));
        n += 1;
    }
    for a in alerts.iter().take(20_000) {
        black_box(incidents::on_record(&mut inc, IncidentIn::Alert(a), 86_400));
        n += 1;
    }
    let incident_rate = rate(n, t);

    println!("fusion stages, one core, {HOSTS} hosts, no Kafka:");
    println!(
        "  re-key:     {rekey:>12.0} alerts/s  ({} sightings)",
        sightings.len()
    );
    println!(
        "  consensus:  {consensus_rate:>12.0} sightings/s ({} indicators, {decisions} decisions, \
         {held} held by the rate limit, {ignored} allowlisted)",
        states.len()
    );
    println!(
        "  chains:     {chains_rate:>12.0} records/s ({} links)",
        links.len()
    );
    println!(
        "  incidents:  {incident_rate:>12.0} records/s ({} open incidents)",
        inc.open.len()
    );
}
