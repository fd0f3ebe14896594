//! Fleet decisions from `threat.enriched` (compacted, keyed by indicator,
//! read from the start at every start): a signed decision blocks its
//! address for what is left of its TTL, a `would_block` one (fusion in
//! simulate mode) or any one under `response.mode: dry-run` is only
//! recorded, and a signed tombstone lifts the
//! decision this agent applied. Re-reading the topic is harmless: a
//! decision already in force, or expired, is passed over without a record.

use super::agent::Agent;
use crate::sink::kafka::commands::{Command, CommandError, IndicatorAction};
use crate::sink::kafka::producer::Inbound;
use crate::util::statefile;

/// The decisions applied here, so a lift after a restart still finds them.
pub const APPLIED_FILE: &str = "fleet-decisions.json";
/// Decisions remembered at most; the oldest go first.
pub const MAX_APPLIED: usize = 65_536;

impl Agent {
    /// Judges one `threat.enriched` record; returns whether it was recorded.
    pub fn on_decision(&mut self, m: &Inbound, now: f64) -> bool {
        if m.tombstone {
            return self.on_lift(m, now);
        }
        let ioc = match self
            .fleet
            .verifier
            .open_indicator(&m.payload, m.hmac.as_deref())
        {
            Ok(i) => i,
            Err(e) => {
                self.count_refusal(&m.topic, &e);
                return false;
            }
        };
        let until = ioc
            .ts
            .saturating_add(i64::try_from(ioc.ttl_s).unwrap_or(i64::MAX));
        let now_i = now as i64;
        // Lapsed already (the topic still holds it until compaction), in
        // force already (re-read at a restart), or not an address (an
        // executable's hash: nothing to block in the network).
        let in_force = self
            .fleet
            .applied
            .get(&ioc.indicator)
            .is_some_and(|(id, _)| *id == ioc.id);
        if until <= now_i || in_force || ioc.indicator.starts_with("sha256:") {
            return false;
        }
        let refused = |e: CommandError| Err::<(), _>(e);
        let check = if ioc.ts > now_i.saturating_add(self.fleet.verifier.max_age_s as i64) {
            refused(CommandError::Stale {
                id: ioc.id.clone(),
                age_s: now_i - ioc.ts,
                limit_s: self.fleet.verifier.max_age_s,
            })
        } else if !self.fleet.decision_budget.take(now) {
            refused(CommandError::RateLimited(
                self.fleet.decision_budget.per_minute,
            ))
        } else {
            Ok(())
        };
        if let Err(e) = check {
            if !self.fleet.record_budget.take(now) {
                self.count_refusal(&m.topic, &e);
                return false;
            }
            self.note_refusal(&m.topic, &e);
            self.record_command(m, ioc.id, "refused", e.to_string(), Vec::new());
            return true;
        }
        let remaining = (until - now_i) as u64;
        // The operator's dry-run holds for the fleet's decisions too.
        let dry_run = self.cfg.response.mode == crate::response::playbook::Mode::DryRun;
        let (result, detail, records) = match ioc.action {
            IndicatorAction::Block if dry_run => (
                "simulated",
                format!(
                    "response.mode is dry-run: would block {} for {remaining}s",
                    ioc.indicator
                ),
                Vec::new(),
            ),
            IndicatorAction::WouldBlock => (
                "simulated",
                format!(
                    "fusion (simulate mode) would block {} for {remaining}s",
                    ioc.indicator
                ),
                Vec::new(),
            ),
            IndicatorAction::Block => {
                let block = Command::Block {
                    target: ioc.indicator.clone(),
                    ttl_s: remaining,
                };
                match self.execute(block, &ioc.id, now) {
                    Ok(records) => ("executed", String::new(), records),
                    Err(e) => ("refused", e, Vec::new()),
                }
            }
        };
        if result != "refused" {
            self.remember_decision(&ioc.indicator, &ioc.id, ioc.ts);
        }
        self.record_command(m, ioc.id, result, detail, records);
        true
    }

    /// A tombstone: lifts the decision this agent applied for the key,
    /// unless the tombstone is older than that decision.
    fn on_lift(&mut self, m: &Inbound, now: f64) -> bool {
        let ts = match self
            .fleet
            .verifier
            .open_tombstone(&m.key, m.ts_header, m.hmac.as_deref())
        {
            Ok(ts) => ts,
            Err(e) => {
                self.count_refusal(&m.topic, &e);
                return false;
            }
        };
        let Some((id, applied_ts)) = self.fleet.applied.get(&m.key).cloned() else {
            return false;
        };
        if ts < applied_ts {
            return false;
        }
        self.fleet.applied.remove(&m.key);
        self.fleet.applied_dirty = true;
        self.save_decisions();
        let unblock = Command::Unblock {
            target: m.key.clone(),
        };
        let (result, detail, records) = match self.execute(unblock, &id, now) {
            Ok(r) => ("executed", format!("lifted fleet decision {id}"), r),
            Err(e) => ("refused", e, Vec::new()),
        };
        self.record_command(m, format!("lift:{id}"), result, detail, records);
        true
    }

    fn remember_decision(&mut self, indicator: &str, id: &str, ts: i64) {
        let applied = &mut self.fleet.applied;
        applied.insert(indicator.to_string(), (id.to_string(), ts));
        while applied.len() > MAX_APPLIED {
            let oldest = applied
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => applied.remove(&k),
                None => break,
            };
        }
        self.fleet.applied_dirty = true;
        self.save_decisions();
    }

    /// Saves the applied decisions when they changed.
    pub fn save_decisions(&mut self) {
        if !self.fleet.applied_dirty {
            return;
        }
        let path = self.cfg.state_dir.join(APPLIED_FILE);
        match statefile::write_json(&path, &self.fleet.applied, statefile::Sync::Full) {
            Ok(()) => self.fleet.applied_dirty = false,
            Err(e) => tracing::warn!("could not save applied fleet decisions: {e}"),
        }
    }
}
