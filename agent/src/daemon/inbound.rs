//! Fleet messages from Kafka (`defense.commands`, `threat.enriched`).
//! A message whose sender is not shown to hold the key (unsigned, forged,
//! unreadable) is only counted: one `command_summary` record and one audit
//! record per minute at most carry the counts, so a flood of junk grows
//! neither the audit log nor the spool. An authenticated message is
//! checked (age, replay), spends the command budget
//! (`kafka.max_commands_per_minute`, separate from the playbooks' budget),
//! is executed within the breadth and TTL caps, and is recorded one by
//! one; refusals of authenticated messages are recorded one by one too,
//! up to the same number per minute, and summarised past it.

use std::collections::BTreeMap;

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};

use super::agent::{wall_s, Agent};
use crate::enforce::actions::{Action, ActionState};
use crate::enforce::caps::Caps;
use crate::enforce::cidr::Cidr;
use crate::enforce::containment::Containment;
use crate::response::engine::By;
use crate::response::playbook::Decision;
use crate::response::record::ResponseRecord;
use crate::sink::kafka::commands::{Budget, Command, CommandError, SeenIds, Verifier};

use crate::sink::kafka::consumer::Offsets;
use crate::sink::kafka::producer::Inbound;
use crate::sink::{CommandRecord, CommandSummary, Output, RefusalCount};
use crate::util::clock::now_rfc3339;
use crate::util::statefile;

pub const OFFSETS_FILE: &str = "kafka-offsets.json";
/// Executed command ids, so a replay is refused after a restart too.
pub const SEEN_FILE: &str = "kafka-seen.json";
/// Seconds between two summaries of counted refusals.
pub const SUMMARY_EVERY_S: f64 = 60.0;

/// Refusals counted since the last summary, by (topic, reason).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: BTreeMap<(String, &'static str), u64>,
    since: Option<String>,
    last_summary_s: Option<f64>,
}

/// Fleet messages: who may send them, how many may act, and how far they
/// were read.
pub struct Fleet {
    pub verifier: Verifier,
    pub offsets: Offsets,
    /// Offsets moved since the last save.
    pub offsets_dirty: bool,
    /// Authenticated, fresh messages that may execute per minute.
    pub budget: Budget,
    /// Refusals of authenticated messages recorded one by one per minute.
    pub record_budget: Budget,
    pub caps: Caps,
    pub refusals: Refusals,
    /// Fleet decisions in force here: indicator → (decision id, its ts).
    pub applied: std::collections::BTreeMap<String, (String, i64)>,
    pub applied_dirty: bool,
    /// Fleet decisions applied per minute (`kafka.max_indicators_per_minute`).
    pub decision_budget: Budget,
}

impl Fleet {
    pub fn new(cfg: &crate::config::Config) -> Fleet {
        let per_minute = cfg.kafka.max_commands_per_minute;
        Fleet {
            verifier: Verifier::new(&cfg.kafka.hmac_key, cfg.kafka.command_max_age_s),
            offsets: Offsets::new(),
            offsets_dirty: false,
            budget: Budget::new(per_minute),
            record_budget: Budget::new(per_minute),
            caps: Caps::from_config(&cfg.enforce),
            refusals: Refusals::default(),
            applied: Default::default(),
            applied_dirty: false,
            decision_budget: Budget::new(cfg.kafka.max_indicators_per_minute),
        }
    }
}

/// What became of an authenticated message.
enum Judged {
    Executed(Vec<ResponseRecord>),
    Refused(String),
}

impl Agent {
    /// Loads the saved offsets and executed ids (a corrupt file is moved
    /// aside and the fleet state starts empty).
    pub fn restore_fleet(&mut self) {
        let dir = &self.cfg.state_dir;
        if let Some(o) = statefile::load_json(&dir.join(OFFSETS_FILE), |_| Ok(())).found() {
            self.fleet.offsets = o;
        }
        if let Some(s) = statefile::load_json::<SeenIds>(&dir.join(SEEN_FILE), |_| Ok(())).found() {
            self.fleet.verifier.restore_seen(s, wall_s() as i64);
        }
        let applied = dir.join(super::decisions::APPLIED_FILE);
        if let Some(a) = statefile::load_json(&applied, |_| Ok(())).found() {
            self.fleet.applied = a;
        }
    }

    pub fn on_inbound(&mut self, m: Inbound) {
        let now = wall_s();
        let host = self.pipeline.host();
        let recorded = if let Some(size) = m.too_large {
            self.count_refusal(&m.topic, &CommandError::TooLarge(size));
            false
        } else if m.topic == self.cfg.kafka.topics.commands {
            match self
                .fleet
                .verifier
                .open_command(&m.payload, m.hmac.as_deref(), &host)
            {
                Err(e) => {
                    self.count_refusal(&m.topic, &e);
                    false
                }
                // Addressed to other hosts: not ours to record.
                Ok(None) => false,
                Ok(Some(env)) => self.judge(&m, env.id, env.ts, env.command, now),
            }
        } else {
            self.on_decision(&m, now)
        };
        self.fleet
            .offsets
            .insert(format!("{}/{}", m.topic, m.partition), m.offset + 1);
        self.fleet.offsets_dirty = true;
        // Junk is not worth a sync each: its offsets go with the next save.
        if recorded {
            self.save_offsets();
        }
        self.summarise_refusals(now, false);
        self.sinks.flush();
    }

    /// Checks, budgets and runs an authenticated message; returns whether
    /// it was recorded on its own.
    fn judge(&mut self, m: &Inbound, id: String, ts: i64, cmd: Command, now: f64) -> bool {
        let judged = match self.fleet.verifier.check_fresh(&id, ts, now as i64) {
            Err(e) => Err(e),
            Ok(()) if !self.fleet.budget.take(now) => {
                Err(CommandError::RateLimited(self.fleet.budget.per_minute))
            }
            Ok(()) => {
                // Saved before it acts, so a crash cannot make it run twice.
                self.fleet.verifier.remember(&id, ts);
                self.save_seen(now);
                Ok(match self.execute(cmd, &id, now) {
                    Ok(records) => Judged::Executed(records),
                    Err(detail) => Judged::Refused(detail),
                })
            }
        };
        let judged = match judged {
            Ok(j) => j,
            Err(e) => {
                if !self.fleet.record_budget.take(now) {
                    self.count_refusal(&m.topic, &e);
                    return false;
                }
                self.note_refusal(&m.topic, &e);
                Judged::Refused(e.to_string())
            }
        };
        let (result, detail, records) = match judged {
            Judged::Executed(records) => ("executed", String::new(), records),
            Judged::Refused(e) => {
                tracing::warn!(
                    "refused a {} message (partition {} offset {}): {e}",
                    m.topic,
                    m.partition,
                    m.offset
                );
                ("refused", e, Vec::new())
            }
        };
        self.record_command(m, id, result, detail, records);
        true
    }

    /// One `command` record (output, audit log, metrics) for a judged
    /// fleet message, then what it did.
    pub(super) fn record_command(
        &mut self,
        m: &Inbound,
        message_id: String,
        result: &'static str,
        detail: String,
        records: Vec<ResponseRecord>,
    ) {
        let rec = CommandRecord {
            kind: "command",
            id: crate::util::id::new_id(),
            ts: now_rfc3339(),
            host: self.pipeline.host().to_string(),
            topic: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
            message_id,
            result,
            detail,
        };
        let audit = serde_json::to_value(&rec).unwrap_or_default();
        if let Err(e) = crate::enforce::audit::append(&self.cfg.state_dir, &audit) {
            tracing::warn!("could not append to the audit log: {e}");
        }
        if let Some(mm) = &self.metrics {
            mm.commands
                .with_label_values(&[m.topic.as_str(), result])
                .inc();
        }
        self.sinks.emit(Output::Command(&rec));
        self.respond(records);
    }

    /// Counts a refusal in the metrics.
    pub(super) fn note_refusal(&self, topic: &str, e: &CommandError) {
        if let Some(mm) = &self.metrics {
            mm.command_refusals
                .with_label_values(&[topic, e.reason()])
                .inc();
        }
    }

    /// Counts a refusal for the next summary instead of recording it.
    pub(super) fn count_refusal(&mut self, topic: &str, e: &CommandError) {
        self.note_refusal(topic, e);
        let r = &mut self.fleet.refusals;
        r.since.get_or_insert_with(now_rfc3339);
        *r.counts.entry((topic.to_string(), e.reason())).or_insert(0) += 1;
    }

    /// Writes the counted refusals as one `command_summary` record (output
    /// and audit log) when a minute passed since the last one, or `now`
    /// regardless when `force` (shutdown).
    pub fn summarise_refusals(&mut self, now: f64, force: bool) {
        let r = &mut self.fleet.refusals;
        if r.counts.is_empty() {
            return;
        }
        if !force && r.last_summary_s.is_some_and(|t| now - t < SUMMARY_EVERY_S) {
            return;
        }
        r.last_summary_s = Some(now);
        let counts: Vec<RefusalCount> = std::mem::take(&mut r.counts)
            .into_iter()
            .map(|((topic, reason), count)| RefusalCount {
                topic,
                reason,
                count,
            })
            .collect();
        let rec = CommandSummary {
            kind: "command_summary",
            id: crate::util::id::new_id(),
            ts: now_rfc3339(),
            host: self.pipeline.host().to_string(),
            since: r.since.take().unwrap_or_default(),
            refused: counts.iter().map(|c| c.count).sum(),
            counts,
        };
        tracing::warn!(
            "refused {} fleet messages since {} without recording each: {}",
            rec.refused,
            rec.since,
            rec.counts
                .iter()
                .map(|c| format!("{} {} on {}", c.count, c.reason, c.topic))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let audit = serde_json::to_value(&rec).unwrap_or_default();
        if let Err(e) = crate::enforce::audit::append(&self.cfg.state_dir, &audit) {
            tracing::warn!("could not append to the audit log: {e}");
        }
        self.sinks.emit(Output::Summary(&rec));
    }

    /// Saves the read offsets when they moved.
    pub fn save_offsets(&mut self) {
        if !self.fleet.offsets_dirty {
            return;
        }
        let path = self.cfg.state_dir.join(OFFSETS_FILE);
        match statefile::write_json(&path, &self.fleet.offsets, statefile::Sync::Full) {
            Ok(()) => self.fleet.offsets_dirty = false,
            Err(e) => tracing::warn!("could not save kafka offsets: {e}"),
        }
    }

    /// Saves the executed ids when they changed (retried by housekeeping
    /// when it fails).
    pub fn save_seen(&mut self, now: f64) {
        let Some(seen) = self.fleet.verifier.seen_snapshot(now as i64) else {
            return;
        };
        let path = self.cfg.state_dir.join(SEEN_FILE);
        match statefile::write_json(&path, &seen, statefile::Sync::Full) {
            Ok(()) => self.fleet.verifier.seen_saved(),
            Err(e) => tracing::warn!(
                "could not save executed command ids ({e}); a replay after a restart would pass until it is saved"
            ),
        }
    }

    /// Runs a verified command; its records come back for the output.
    pub(super) fn execute(
        &mut self,
        cmd: Command,
        id: &str,
        now: f64,
    ) -> Result<Vec<ResponseRecord>, String> {
        let action = |mut a: Action| {
            a.command = Some(id.to_string());
            match a.state {
                ActionState::Applied | ActionState::Noop => Ok(vec![ResponseRecord::Action(a)]),
                _ => Err(format!(
                    "{} {}: {}",
                    a.action.as_str(),
                    a.state.as_str(),
                    a.detail
                )),
            }
        };
        match cmd {
            Command::Block { target, ttl_s } => {
                let cidr: Cidr = target.parse().map_err(|e| format!("{e}"))?;
                if ttl_s == 0 {
                    return Err("ttl_s must be positive".into());
                }
                self.fleet
                    .caps
                    .check(&cidr, ttl_s)
                    .map_err(|e| e.to_string())?;
                let c = self.containment()?;
                action(c.block(&cidr, ttl_s, BLOCK_INGRESS | BLOCK_EGRESS))
            }
            Command::Unblock { target } => {
                let cidr: Cidr = target.parse().map_err(|e| format!("{e}"))?;
                let c = self.containment()?;
                action(c.unblock(&cidr))
            }
            Command::Approve { approval } => self.decide_by(&approval, Decision::Approve, id, now),
            Command::Deny { approval } => self.decide_by(&approval, Decision::Deny, id, now),
        }
    }

    fn containment(&mut self) -> Result<&mut Containment, String> {
        self.response
            .containment
            .as_mut()
            .ok_or_else(|| "enforcement is disabled on this host".to_string())
    }

    fn decide_by(
        &mut self,
        approval: &str,
        d: Decision,
        id: &str,
        now: f64,
    ) -> Result<Vec<ResponseRecord>, String> {
        self.response
            .act(|r, ex| r.decide(approval, d, By::Command(id.to_string()), now, ex))
            .map_err(|e| e.to_string())
    }
}
