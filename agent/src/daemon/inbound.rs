//! Fleet messages from Kafka (`defense.commands`, `threat.enriched`):
//! verified, executed or refused, recorded either way, and their offset
//! saved so a restart resumes after them.

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};

use super::agent::{wall_s, Agent};
use crate::enforce::actions::{Action, ActionState};
use crate::enforce::cidr::Cidr;
use crate::enforce::containment::Containment;
use crate::response::engine::By;
use crate::response::playbook::Decision;
use crate::response::record::ResponseRecord;
use crate::sink::kafka::commands::Command;
use crate::sink::kafka::consumer;
use crate::sink::kafka::producer::Inbound;
use crate::sink::{CommandRecord, Output};
use crate::util::clock::now_rfc3339;

pub const OFFSETS_FILE: &str = "kafka-offsets.json";

impl Agent {
    pub fn on_inbound(&mut self, m: Inbound) {
        let now = wall_s();
        let host = self.pipeline.host();
        let is_command = m.topic == self.cfg.kafka.topics.commands;
        let verified = if is_command {
            self.fleet
                .verifier
                .command(&m.payload, m.hmac.as_deref(), &host, now as i64)
                .map(|env| env.map(|e| (e.id, e.command)))
        } else {
            self.fleet
                .verifier
                .indicator(&m.payload, m.hmac.as_deref(), now as i64)
                .map(|ioc| {
                    let block = Command::Block {
                        target: ioc.indicator,
                        ttl_s: ioc.ttl_s,
                    };
                    Some((ioc.id, block))
                })
        };
        let judged = match verified {
            // Addressed to other hosts: not ours to record.
            Ok(None) => None,
            Ok(Some((id, cmd))) => {
                let outcome = self.execute(cmd, &id, now);
                Some((id, outcome))
            }
            Err(e) => Some((String::new(), Err(e.to_string()))),
        };
        if let Some((message_id, outcome)) = judged {
            let (result, detail, records) = match outcome {
                Ok(records) => ("executed", String::new(), records),
                Err(e) => {
                    tracing::warn!(
                        "refused a {} message (partition {} offset {}): {e}",
                        m.topic,
                        m.partition,
                        m.offset
                    );
                    ("refused", e, Vec::new())
                }
            };
            let rec = CommandRecord {
                kind: "command",
                id: crate::util::id::new_id(),
                ts: now_rfc3339(),
                host: host.to_string(),
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
        self.fleet
            .offsets
            .insert(format!("{}/{}", m.topic, m.partition), m.offset + 1);
        consumer::save_offsets(&self.cfg.state_dir.join(OFFSETS_FILE), &self.fleet.offsets);
        self.sinks.flush();
    }

    /// Runs a verified command; its records come back for the output.
    fn execute(&mut self, cmd: Command, id: &str, now: f64) -> Result<Vec<ResponseRecord>, String> {
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
