//! Answers to control socket requests (`vigil status`, `approve`, …),
//! computed from the agent's own state inside its loop.

use crate::response::engine::{By, ResponseError};
use crate::response::playbook::{self, Decision};
use crate::response::record::ResponseRecord;
use crate::service::control::{Call, Request, Response};
use crate::util::clock::monotonic_ns;

use super::agent::{wall_s, Agent};

/// A listing as a successful answer.
fn list(v: Result<serde_json::Value, serde_json::Error>) -> Response {
    Response::ok(v.unwrap_or_default())
}

impl Agent {
    /// Answers a call, then writes and saves what it changed.
    pub fn on_call(&mut self, call: Call) {
        let (resp, out) = self.answer(call.request, call.uid);
        let _ = call.reply.send(resp);
        self.respond(out);
        self.sinks.flush();
    }

    /// The answer to one request from `uid`, and the records it produced.
    pub fn answer(&mut self, request: Request, uid: u32) -> (Response, Vec<ResponseRecord>) {
        let now = wall_s();
        let list =
            |v: Result<serde_json::Value, serde_json::Error>| Response::ok(v.unwrap_or_default());
        match request {
            Request::Status => (Response::ok(self.status()), Vec::new()),
            Request::Alerts { .. } => (list(serde_json::to_value(&self.alerts.recent)), Vec::new()),
            Request::Approvals => {
                let a: Vec<_> = self.response.responder.approvals.values().collect();
                (list(serde_json::to_value(a)), Vec::new())
            }
            Request::Incidents => (
                list(serde_json::to_value(
                    self.response.responder.save().incidents,
                )),
                Vec::new(),
            ),
            Request::Approve { id } => self.decide(&id, Decision::Approve, uid, now),
            Request::Deny { id } => self.decide(&id, Decision::Deny, uid, now),
            Request::Rollback { incident } => {
                let r = self
                    .response
                    .act(|r, ex| r.rollback(&incident, By::Uid(uid), ex));
                match r {
                    Ok(o) => (list(serde_json::to_value(&o)), o),
                    Err(e) => (Response::err(e), Vec::new()),
                }
            }
            Request::Reload => match self.reload() {
                Ok(n) => (
                    Response::ok(serde_json::json!({"playbooks": n})),
                    Vec::new(),
                ),
                Err(e) => (
                    Response::err(format!("reload refused, the running playbooks stay:\n{e}")),
                    Vec::new(),
                ),
            },
        }
    }

    fn decide(
        &mut self,
        id: &str,
        d: Decision,
        uid: u32,
        now: f64,
    ) -> (Response, Vec<ResponseRecord>) {
        if !self.response.responder.approvals.contains_key(id) {
            return (
                Response::err(ResponseError::NoApproval(id.to_string())),
                Vec::new(),
            );
        }
        match self
            .response
            .act(|r, ex| r.decide(id, d, By::Uid(uid), now, ex))
        {
            Ok(o) => (list(serde_json::to_value(&o)), o),
            Err(e) => (Response::err(e), Vec::new()),
        }
    }

    /// What `vigil status` shows.
    pub fn status(&self) -> serde_json::Value {
        let blocks: Vec<serde_json::Value> = self
            .response
            .containment
            .as_ref()
            .map(|c| {
                let now = monotonic_ns();
                c.blocks
                    .list_counted()
                    .into_iter()
                    .filter(|e| e.expires_ns > now)
                    .map(|e| {
                        serde_json::json!({
                            "target": e.target.to_string(),
                            "ttl_s": (e.expires_ns - now) / 1_000_000_000,
                            "packets": e.packets,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let responder = &self.response.responder;
        let playbooks: Vec<serde_json::Value> = responder
            .playbooks
            .iter()
            .map(|p| {
                let mode = match p.mode {
                    Some(playbook::Mode::DryRun) => "dry-run",
                    Some(playbook::Mode::Enforce) => "enforce",
                    None => "inherit",
                };
                serde_json::json!({"name": p.name, "mode": mode, "file": p.file, "steps": p.steps.len()})
            })
            .collect();
        let detectors = self
            .engine
            .as_ref()
            .map(|e| serde_json::to_value(&e.alerts_by_detector).unwrap_or_default())
            .unwrap_or_default();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "probes": self.probes,
            "stats": self.stats(),
            "detectors": detectors,
            "blocks": blocks,
            "isolation_remaining_s": crate::enforce::isolate::remaining_s(),
            "approvals": responder.approvals.values().collect::<Vec<_>>(),
            "response_mode": self.cfg.response.mode,
            "playbooks": playbooks,
            "incidents": responder.incidents.len(),
            "rate_limited": responder.rate_limited,
            "incidents_evicted": responder.incidents_evicted,
            "approvals_refused": responder.approvals_refused,
            "approvals_expired": responder.approvals_expired,
            "kafka": self.sinks.status_of("kafka"),
            "outputs": self.sinks.status(),
            "audit_failures": crate::enforce::audit::failures(),
            "state_write_errors": crate::util::statefile::write_errors(),
        })
    }
}
