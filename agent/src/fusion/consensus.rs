//! Fleet IoC consensus. Stage 1 re-keys alerts by the indicators they name
//! ([`sightings`]); stage 2 ([`on_sighting`], [`on_tick`], [`on_unblock`])
//! keeps, per indicator, the recent sightings and the current decision, and
//! publishes a decision when a rule holds. Both are pure: the driver feeds
//! them records and the clock, and writes what they return.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::config::{FusionConfig, FusionMode, Rule};
use super::inventory::{Allowlist, Inventory};
use super::model::{AlertIn, Indicator};

/// One alert's word about one indicator (the repartition topic's value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub indicator: Indicator,
    pub host: String,
    pub detector: String,
    pub confidence: f64,
    pub alert: String,
    /// The alert's time, Unix seconds.
    pub ts: f64,
    pub techniques: Vec<String>,
}

/// Stage 1: an alert's sightings, one per indicator it names. Count updates
/// of an alert and alerts without a readable time carry none.
pub fn sightings(a: &AlertIn) -> Vec<Sighting> {
    let Some(ts) = a.ts_s() else {
        return Vec::new();
    };
    if a.update || !a.confidence.is_finite() || a.is_evidence() {
        return Vec::new();
    }
    a.indicators()
        .into_iter()
        .map(|indicator| Sighting {
            indicator,
            host: a.host.clone(),
            detector: a.detector.clone(),
            confidence: a.confidence.clamp(0.0, 1.0),
            alert: a.id.clone(),
            ts,
            techniques: a.technique_ids(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Block,
    WouldBlock,
}

/// The decision currently in force for an indicator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    pub id: String,
    pub rule: String,
    pub verdict: Verdict,
    pub ttl_s: u64,
    pub at: f64,
    pub expires_at: f64,
}

/// Per-indicator state (the changelog's value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IocState {
    /// Recent sightings, oldest first, bounded.
    pub sightings: VecDeque<Sighting>,
    /// Decisions published so far; each recurrence doubles the TTL.
    pub episodes: u32,
    pub active: Option<Decided>,
    /// After an operator's unblock, no decision on the same evidence before this.
    pub lifted_until: Option<f64>,
}

/// Sightings kept per indicator; the oldest go first.
pub const MAX_SIGHTINGS: usize = 256;

/// What fusion publishes to `threat.enriched` (signed by the driver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Hash of indicator, rule version and episode: the same evidence
    /// re-processed after a restart yields the same id.
    pub id: String,
    /// Unix seconds (agents check it with the TTL).
    pub ts: i64,
    pub indicator: String,
    pub ttl_s: u64,
    pub action: Verdict,
    pub rule: String,
    pub rule_version: String,
    pub episode: u32,
    pub hosts: Vec<String>,
    pub detectors: Vec<String>,
    pub alerts: Vec<String>,
    pub techniques: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConsensusOut {
    Publish(Decision),
    /// Lift: a tombstone for the indicator on `threat.enriched`.
    Lift {
        indicator: String,
        decision: String,
        reason: &'static str,
    },
    /// Evidence that will never decide, and why (counted).
    Ignored(&'static str),
    /// A rule held but the decision budget was spent (counted).
    RateLimited {
        indicator: String,
        rule: String,
    },
}

/// Decisions per minute across indicators (per fusion instance).
#[derive(Debug, Default)]
pub struct Budget {
    recent: VecDeque<f64>,
}

impl Budget {
    fn take(&mut self, now: f64, per_minute: u32) -> bool {
        while self.recent.front().is_some_and(|t| now - t >= 60.0) {
            self.recent.pop_front();
        }
        if self.recent.len() >= per_minute as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// What a consensus step needs besides the indicator's own state.
pub struct Ctx<'a> {
    pub cfg: &'a FusionConfig,
    pub rule_version: &'a str,
    pub allow: &'a Allowlist,
    pub fleet: &'a Inventory,
    pub budget: &'a mut Budget,
}

fn longest_window(cfg: &FusionConfig) -> f64 {
    cfg.rules.iter().map(|r| r.window_s).max().unwrap_or(3600) as f64
}

/// Distinct hosts whose sightings satisfy `rule`, each weighed by its
/// most trusted detector.
fn weighed_hosts<'s>(
    rule: &Rule,
    cfg: &FusionConfig,
    s: &'s IocState,
    now: f64,
) -> (f64, Vec<&'s Sighting>) {
    let mut best: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut used = Vec::new();
    for x in &s.sightings {
        let fresh = now - x.ts.min(now) <= rule.window_s as f64;
        let trusted = rule.detectors.is_empty() || rule.detectors.contains(&x.detector);
        if fresh && trusted && x.confidence >= rule.min_confidence {
            let w = cfg.weight(&x.detector);
            if w > 0.0 {
                let e = best.entry(x.host.as_str()).or_insert(0.0);
                *e = e.max(w);
                used.push(x);
            }
        }
    }
    (best.values().sum(), used)
}

/// Stage 2: a sighting for this state's indicator. Returns the new state
/// (`None` deletes it) and what to publish.
pub fn on_sighting(
    state: Option<IocState>,
    s: &Sighting,
    now: f64,
    ctx: &mut Ctx<'_>,
) -> (Option<IocState>, Vec<ConsensusOut>) {
    if let Some(why) = ctx.allow.reason(&s.indicator, ctx.fleet) {
        return (state, vec![ConsensusOut::Ignored(why)]);
    }
    let mut st = state.unwrap_or_default();
    // A re-delivered sighting changes nothing (at-least-once input).
    if st
        .sightings
        .iter()
        .any(|x| x.alert == s.alert && x.host == s.host)
    {
        return (Some(st), Vec::new());
    }
    st.sightings.push_back(s.clone());
    let horizon = now - longest_window(ctx.cfg);
    st.sightings.retain(|x| x.ts >= horizon);
    while st.sightings.len() > MAX_SIGHTINGS {
        st.sightings.pop_front();
    }
    let mut out = Vec::new();
    let blocked = st.active.as_ref().is_some_and(|d| d.expires_at > now);
    let lifted = st.lifted_until.is_some_and(|t| t > now);
    if !blocked && !lifted {
        if let Some(d) = decide(&mut st, &s.indicator, now, ctx) {
            out.push(d);
        }
    }
    (Some(st), out)
}

fn decide(st: &mut IocState, ind: &Indicator, now: f64, ctx: &mut Ctx<'_>) -> Option<ConsensusOut> {
    let cfg = ctx.cfg;
    let (rule, used) = cfg.rules.iter().find_map(|r| {
        let (w, used) = weighed_hosts(r, cfg, st, now);
        (w >= r.min_hosts).then_some((r, used))
    })?;
    let key = ind.key();
    if !ctx.budget.take(now, cfg.max_decisions_per_minute) {
        return Some(ConsensusOut::RateLimited {
            indicator: key,
            rule: rule.name.clone(),
        });
    }
    let episode = st.episodes + 1;
    let doubled = cfg
        .ttl_s
        .saturating_mul(1u64.checked_shl(episode - 1).unwrap_or(u64::MAX));
    let ttl_s = doubled.min(cfg.max_ttl_s);
    let id = super::digest(&[
        key.as_bytes(),
        ctx.rule_version.as_bytes(),
        &episode.to_be_bytes(),
    ])[..32]
        .to_string();
    let set = |f: fn(&Sighting) -> Vec<String>| -> Vec<String> {
        used.iter()
            .flat_map(|x| f(x))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let verdict = match cfg.mode {
        FusionMode::Enforce => Verdict::Block,
        FusionMode::Simulate => Verdict::WouldBlock,
    };
    let d = Decision {
        id: id.clone(),
        ts: now as i64,
        indicator: key,
        ttl_s,
        action: verdict,
        rule: rule.name.clone(),
        rule_version: ctx.rule_version.to_string(),
        episode,
        hosts: set(|x| vec![x.host.clone()]),
        detectors: set(|x| vec![x.detector.clone()]),
        alerts: set(|x| vec![x.alert.clone()]),
        techniques: set(|x| x.techniques.clone()),
        source: "vigil-fusion".into(),
    };
    st.episodes = episode;
    st.active = Some(Decided {
        id,
        rule: rule.name.clone(),
        verdict,
        ttl_s,
        at: now,
        expires_at: now + ttl_s as f64,
    });
    Some(ConsensusOut::Publish(d))
}

/// The clock: expired decisions are lifted; a state with nothing left to
/// remember is deleted.
pub fn on_tick(
    state: IocState,
    key: &str,
    now: f64,
    cfg: &FusionConfig,
) -> (Option<IocState>, Vec<ConsensusOut>) {
    let mut st = state;
    let mut out = Vec::new();
    if let Some(d) = st.active.take_if(|d| d.expires_at <= now) {
        out.push(ConsensusOut::Lift {
            indicator: key.to_string(),
            decision: d.id,
            reason: "expired",
        });
    }
    let horizon = now - longest_window(cfg);
    st.sightings.retain(|x| x.ts >= horizon);
    if st.lifted_until.is_some_and(|t| t <= now) {
        st.lifted_until = None;
    }
    // The episode count is what doubles the next TTL: keep the state while
    // a recurrence could still find it, forget it a max TTL later.
    let idle = st.sightings.back().map(|x| now - x.ts).unwrap_or(f64::MAX);
    let forget = st.active.is_none()
        && st.lifted_until.is_none()
        && st.sightings.is_empty()
        && idle >= cfg.max_ttl_s as f64;
    if forget || (st.episodes == 0 && st.sightings.is_empty() && st.active.is_none()) {
        return (None, out);
    }
    (Some(st), out)
}

/// An operator's unblock: lift now, and decide nothing on the same
/// evidence until it ages out of every rule's window.
pub fn on_unblock(
    state: Option<IocState>,
    key: &str,
    now: f64,
    cfg: &FusionConfig,
) -> (Option<IocState>, Vec<ConsensusOut>) {
    let mut st = state.unwrap_or_default();
    let mut out = Vec::new();
    if let Some(d) = st.active.take() {
        out.push(ConsensusOut::Lift {
            indicator: key.to_string(),
            decision: d.id,
            reason: "unblocked by an operator",
        });
    }
    st.lifted_until = Some(now + longest_window(cfg));
    (Some(st), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::model::InventoryIn;

    const T0: f64 = 1_796_000_000.0;

    struct World {
        cfg: FusionConfig,
        version: String,
        allow: Allowlist,
        fleet: Inventory,
        budget: Budget,
        state: Option<IocState>,
        published: Vec<Decision>,
        lifted: Vec<(String, &'static str)>,
    }

    impl World {
        fn new(cfg: FusionConfig) -> World {
            let mut fleet = Inventory::default();
            for (h, a) in [("h1", "10.0.0.1"), ("h2", "10.0.0.2"), ("h3", "10.0.0.3")] {
                fleet.put(
                    h,
                    Some(InventoryIn {
                        host: h.into(),
                        addresses: vec![a.parse().expect("ip")],
                        roles: vec![],
                        ts: String::new(),
                    }),
                );
            }
            World {
                version: cfg.rule_version(),
                allow: Allowlist::new(&cfg),
                cfg,
                fleet,
                budget: Budget::default(),
                state: None,
                published: Vec::new(),
                lifted: Vec::new(),
            }
        }

        fn feed(&mut self, s: &Sighting, now: f64) {
            let mut ctx = Ctx {
                cfg: &self.cfg,
                rule_version: &self.version,
                allow: &self.allow,
                fleet: &self.fleet,
                budget: &mut self.budget,
            };
            let (st, out) = on_sighting(self.state.take(), s, now, &mut ctx);
            self.state = st;
            self.take(out);
        }

        fn tick(&mut self, now: f64) {
            if let Some(st) = self.state.take() {
                let (st, out) = on_tick(st, &s_key(), now, &self.cfg);
                self.state = st;
                self.take(out);
            }
        }

        fn take(&mut self, out: Vec<ConsensusOut>) {
            for o in out {
                match o {
                    ConsensusOut::Publish(d) => self.published.push(d),
                    ConsensusOut::Lift {
                        decision, reason, ..
                    } => self.lifted.push((decision, reason)),
                    _ => {}
                }
            }
        }
    }

    fn s_key() -> String {
        "203.0.113.9".into()
    }

    fn seen(host: &str, detector: &str, confidence: f64, alert: &str, ts: f64) -> Sighting {
        Sighting {
            indicator: Indicator::parse("203.0.113.9").expect("ip"),
            host: host.into(),
            detector: detector.into(),
            confidence,
            alert: alert.into(),
            ts,
            techniques: vec!["T1071".into()],
        }
    }

    #[test]
    fn two_hosts_decide_one_does_not() {
        let mut w = World::new(FusionConfig::default());
        w.feed(&seen("h1", "beacon", 0.8, "a1", T0), T0);
        assert!(w.published.is_empty());
        // The same host again, and its re-delivered alert, change nothing.
        w.feed(&seen("h1", "beacon", 0.8, "a2", T0 + 5.0), T0 + 5.0);
        w.feed(&seen("h1", "beacon", 0.8, "a1", T0), T0 + 6.0);
        assert!(w.published.is_empty());
        w.feed(&seen("h2", "beacon", 0.8, "a3", T0 + 10.0), T0 + 10.0);
        assert_eq!(w.published.len(), 1);
        let d = &w.published[0];
        assert_eq!(d.rule, "two-hosts");
        assert_eq!(d.action, Verdict::WouldBlock, "simulate is the default");
        assert_eq!(d.hosts, ["h1", "h2"]);
        assert_eq!(d.ttl_s, 4 * 3600);
        assert_eq!(d.alerts, ["a1", "a2", "a3"]);
        // More evidence while it is in force publishes nothing new.
        w.feed(&seen("h3", "beacon", 0.8, "a4", T0 + 20.0), T0 + 20.0);
        assert_eq!(w.published.len(), 1);
    }

    #[test]
    fn one_confident_host_decides_through_a_trusted_detector_only() {
        let mut w = World::new(FusionConfig {
            mode: FusionMode::Enforce,
            ..FusionConfig::default()
        });
        w.feed(&seen("h1", "beacon", 0.95, "a1", T0), T0);
        assert!(w.published.is_empty(), "beacon is not in the one-host rule");
        w.feed(&seen("h1", "brute_force", 0.95, "a2", T0), T0);
        assert_eq!(w.published.len(), 1);
        assert_eq!(w.published[0].rule, "one-host-high-confidence");
        assert_eq!(w.published[0].action, Verdict::Block);
    }

    #[test]
    fn the_baseline_alone_never_decides() {
        let mut w = World::new(FusionConfig::default());
        for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
            w.feed(&seen(h, "anomaly", 1.0, &format!("a{i}"), T0), T0);
        }
        assert!(w.published.is_empty());
    }

    #[test]
    fn old_evidence_falls_out_of_the_window() {
        let mut w = World::new(FusionConfig::default());
        w.feed(&seen("h1", "scan", 0.5, "a1", T0), T0);
        w.feed(&seen("h2", "scan", 0.5, "a2", T0 + 3601.0), T0 + 3601.0);
        assert!(w.published.is_empty());
    }

    #[test]
    fn expiry_lifts_and_a_recurrence_doubles_the_ttl_up_to_the_cap() {
        let cfg = FusionConfig {
            ttl_s: 100,
            max_ttl_s: 300,
            ..FusionConfig::default()
        };
        let mut w = World::new(cfg);
        let mut now = T0;
        let mut ttls = Vec::new();
        for round in 0..4 {
            let before = w.published.len();
            w.feed(&seen("h1", "scan", 0.5, &format!("x{round}"), now), now);
            if w.published.len() == before {
                w.feed(&seen("h2", "scan", 0.5, &format!("y{round}"), now), now);
            }
            ttls.push(w.published.last().map(|d| d.ttl_s));
            now += w.published.last().map(|d| d.ttl_s).unwrap_or(0) as f64;
            w.tick(now);
        }
        assert_eq!(ttls, [Some(100), Some(200), Some(300), Some(300)]);
        assert_eq!(w.lifted.len(), 4);
        assert!(w.lifted.iter().all(|(_, r)| *r == "expired"));
        let ids: BTreeSet<&str> = w.published.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 4, "each episode has its own id");
    }

    #[test]
    fn replaying_the_same_input_on_restored_state_decides_nothing_twice() {
        let inputs = [
            seen("h1", "beacon", 0.8, "a1", T0),
            seen("h2", "beacon", 0.8, "a2", T0 + 1.0),
        ];
        let mut w = World::new(FusionConfig::default());
        for s in &inputs {
            w.feed(s, s.ts);
        }
        assert_eq!(w.published.len(), 1);
        // A new instance restores the state (as from the changelog) and sees
        // the same records again (offsets not yet committed).
        let saved = serde_json::to_string(&w.state).expect("json");
        let mut again = World::new(FusionConfig::default());
        again.state = serde_json::from_str(&saved).expect("state");
        for s in &inputs {
            again.feed(s, s.ts + 30.0);
        }
        assert!(again.published.is_empty());
        // Without the state, the same evidence yields the same decision id.
        let mut fresh = World::new(FusionConfig::default());
        for s in &inputs {
            fresh.feed(s, s.ts);
        }
        assert_eq!(fresh.published[0].id, w.published[0].id);
    }

    #[test]
    fn allowlisted_and_fleet_addresses_are_never_decided() {
        let mut w = World::new(FusionConfig {
            allowlist: vec!["203.0.113.0/24".into()],
            ..FusionConfig::default()
        });
        w.feed(&seen("h1", "scan", 1.0, "a1", T0), T0);
        w.feed(&seen("h2", "scan", 1.0, "a2", T0), T0);
        assert!(w.published.is_empty());
        assert!(w.state.is_none(), "ignored evidence keeps no state");
        let mut w = World::new(FusionConfig::default());
        let mut s = seen("h1", "scan", 1.0, "a1", T0);
        s.indicator = Indicator::parse("10.0.0.3").expect("ip");
        w.feed(&s, T0);
        assert!(w.published.is_empty());
    }

    #[test]
    fn the_rate_limit_holds_decisions_back() {
        let cfg = FusionConfig {
            max_decisions_per_minute: 1,
            ..FusionConfig::default()
        };
        let version = cfg.rule_version();
        let allow = Allowlist::new(&cfg);
        let fleet = Inventory::default();
        let mut budget = Budget::default();
        let mut outs = Vec::new();
        for ip in ["198.51.100.1", "198.51.100.2"] {
            let mut ctx = Ctx {
                cfg: &cfg,
                rule_version: &version,
                allow: &allow,
                fleet: &fleet,
                budget: &mut budget,
            };
            let mut s = seen("h1", "brute_force", 0.95, ip, T0);
            s.indicator = Indicator::parse(ip).expect("ip");
            outs.extend(on_sighting(None, &s, T0, &mut ctx).1);
        }
        assert!(matches!(outs[0], ConsensusOut::Publish(_)));
        assert!(matches!(outs[1], ConsensusOut::RateLimited { .. }));
    }

    #[test]
    fn an_operator_unblock_lifts_and_holds_off_the_same_evidence() {
        let mut w = World::new(FusionConfig::default());
        w.feed(&seen("h1", "scan", 0.5, "a1", T0), T0);
        w.feed(&seen("h2", "scan", 0.5, "a2", T0), T0);
        assert_eq!(w.published.len(), 1);
        let (st, out) = on_unblock(w.state.take(), &s_key(), T0 + 10.0, &w.cfg);
        w.state = st;
        w.take(out);
        assert_eq!(
            w.lifted,
            [(w.published[0].id.clone(), "unblocked by an operator")]
        );
        w.feed(&seen("h3", "scan", 0.5, "a3", T0 + 20.0), T0 + 20.0);
        assert_eq!(w.published.len(), 1, "held off after the unblock");
    }

    #[test]
    fn sightings_per_indicator_are_bounded() {
        let mut w = World::new(FusionConfig {
            rules: vec![Rule {
                name: "never".into(),
                min_hosts: 1e9,
                ..Rule::default()
            }],
            ..FusionConfig::default()
        });
        for i in 0..1000 {
            w.feed(
                &seen(&format!("h{i}"), "scan", 0.5, &format!("a{i}"), T0),
                T0,
            );
        }
        assert_eq!(
            w.state.as_ref().map(|s| s.sightings.len()),
            Some(MAX_SIGHTINGS)
        );
    }

    #[test]
    fn updates_and_unreadable_alerts_carry_no_sightings() {
        let a: AlertIn = serde_json::from_value(serde_json::json!({
            "id": "a", "ts": "2026-12-01T00:00:00Z", "host": "h1", "detector": "scan",
            "confidence": 0.7, "entities": {"src_ip": "198.51.100.7"}, "update": false
        }))
        .expect("alert");
        assert_eq!(sightings(&a).len(), 1);
        let upd = AlertIn {
            update: true,
            ..a.clone()
        };
        assert!(sightings(&upd).is_empty());
        let evidence = AlertIn {
            severity: "info".into(),
            ..a.clone()
        };
        assert!(sightings(&evidence).is_empty());
        let bad = AlertIn {
            ts: "never".into(),
            ..a
        };
        assert!(sightings(&bad).is_empty());
    }
}
