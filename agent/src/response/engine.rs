//! Turns alerts into incidents: runs the matching playbooks' steps through
//! an [`Executor`], parks steps behind approvals, applies timeouts, and
//! rolls incidents back in reverse order. No I/O of its own: the executor
//! changes the host and writes the audit log, so this is unit-testable.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::action::{Effect, HostChange};
use super::playbook::{Decision, Endpoint, Mode, Playbook, Step};
use super::record::{DecisionKind, DecisionRecord, NotificationRecord, ResponseRecord};
use crate::detect::{Alert, Severity};
use crate::enforce::actions::{new_id, Action, ActionState, Verb};
use crate::util::clock::now_rfc3339;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResponseError {
    #[error("no pending approval {0} (see `vigil approvals`)")]
    NoApproval(String),
    #[error("no incident {0} (see `vigil incidents`)")]
    NoIncident(String),
    #[error("incident {0} was already rolled back")]
    AlreadyRolledBack(String),
}

/// What a step needs undone; kept with the incident so rollback survives a
/// restart of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Remove the block, or put back the block it replaced.
    Unblock {
        target: String,
        prior_expires_ns: Option<u64>,
        prior_flags: u32,
    },
    Unisolate,
    Restore {
        quarantine_id: String,
    },
}

/// The result of one host change.
pub struct Outcome {
    pub action: Action,
    pub undo: Option<Undo>,
}

/// Changes the host. The daemon's executor drives the kernel blocklist,
/// nftables, pidfd kill and the quarantine; tests use a recorder.
pub trait Executor {
    fn block(&mut self, ip: IpAddr, ttl_s: u64) -> Outcome;
    fn isolate(&mut self, ttl_s: u64) -> Outcome;
    /// SIGKILL to `pid` if it is still the process the alert named: its
    /// start time (clock ticks) when known, and its executable, which must
    /// not be protected unless the step names it in `allow_protected`.
    fn kill(
        &mut self,
        pid: u32,
        exe: Option<&str>,
        start_time: Option<u64>,
        allow_protected: &[String],
    ) -> Outcome;
    /// Moves `path` into the quarantine unless it is protected and the
    /// step does not name it in `allow_protected`.
    fn quarantine(&mut self, path: &str, allow_protected: &[String]) -> Outcome;
    fn undo(&mut self, undo: &Undo) -> Outcome;
    fn active_blocks(&self) -> usize;
    /// Appends a record to the audit log before it is reported.
    fn audit(&mut self, record: &ResponseRecord);
    fn host(&self) -> &str;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Running,
    AwaitingApproval,
    Done,
    Denied,
    /// A step failed and what the incident applied was rolled back.
    Failed,
    RolledBack,
}

/// Where a step got to; an action's own state when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Applied,
    DryRun,
    /// Its condition did not hold, or the alert lacks what it acts on.
    Skipped,
    Refused,
    Failed,
    RateLimited,
    /// Waiting on an approval (the detail names it).
    Pending,
    Approved,
    Denied,
    RolledBack,
    Noop,
    Expired,
}

impl From<ActionState> for StepState {
    fn from(s: ActionState) -> StepState {
        match s {
            ActionState::Applied => StepState::Applied,
            ActionState::Refused => StepState::Refused,
            ActionState::Failed => StepState::Failed,
            ActionState::Expired => StepState::Expired,
            ActionState::Noop => StepState::Noop,
            ActionState::DryRun => StepState::DryRun,
            ActionState::RateLimited => StepState::RateLimited,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: String,
    pub action: String,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
}

/// The alert fields steps read, copied so incidents outlive the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertContext {
    pub id: String,
    pub detector: String,
    pub severity: Severity,
    pub confidence: f64,
    pub techniques: Vec<String>,
    pub summary: String,
    pub entities: serde_json::Value,
}

/// The entities steps act on, read in one place.
impl AlertContext {
    /// The process (`entities.pid`).
    pub fn pid(&self) -> Option<u32> {
        self.entities.get("pid")?.as_u64().map(|p| p as u32)
    }

    /// The process's executable (`entities.exe`).
    pub fn exe(&self) -> Option<&str> {
        self.entities.get("exe")?.as_str()
    }

    /// The process's start time in clock ticks (`entities.start_time`),
    /// which tells it from a later process that reuses its pid.
    pub fn start_time(&self) -> Option<u64> {
        self.entities.get("start_time")?.as_u64()
    }

    /// `entities.src_ip` or `entities.dst_ip`.
    pub fn ip(&self, e: Endpoint) -> Option<IpAddr> {
        let key = match e {
            Endpoint::Source => "src_ip",
            Endpoint::Destination => "dst_ip",
        };
        self.entities.get(key)?.as_str()?.parse().ok()
    }
}

impl AlertContext {
    pub fn from_alert(a: &Alert) -> AlertContext {
        AlertContext {
            id: a.id.clone(),
            detector: a.detector.to_string(),
            severity: a.severity,
            confidence: a.confidence,
            techniques: a.techniques.iter().map(|t| t.id.to_string()).collect(),
            summary: a.summary.clone(),
            entities: a.entities.clone(),
        }
    }

    fn holds(&self, c: &super::playbook::Condition) -> bool {
        c.min_severity.is_none_or(|s| self.severity >= s)
            && c.min_confidence.is_none_or(|m| self.confidence >= m)
            && (c.techniques.is_empty()
                || self.techniques.iter().any(|id| {
                    c.techniques
                        .iter()
                        .any(|p| super::playbook::technique_matches(p, id))
                }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub ts: String,
    pub playbook: String,
    pub mode: Mode,
    pub alert: AlertContext,
    /// The playbook's steps as they were when the incident opened, so a
    /// reload never changes a running incident.
    pub steps: Vec<Step>,
    pub results: Vec<StepResult>,
    pub next: usize,
    pub state: IncidentState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub incident: String,
    pub playbook: String,
    pub alert: String,
    /// The steps that run if approved.
    pub proposed: Vec<String>,
    pub created: String,
    /// Wall-clock seconds.
    pub deadline_s: f64,
    pub on_timeout: Decision,
}

/// Who decided an approval or asked for a rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum By {
    /// A person, by uid from the control socket's peer credentials.
    Uid(u32),
    /// The approval's own deadline.
    Timeout,
    /// A signed fleet command, by its id.
    Command(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_actions_per_minute: usize,
    pub max_concurrent_blocks: usize,
    /// Approvals pending at once; past it an incident that would ask for
    /// one is denied, so alerts cannot pile up incidents waiting forever.
    pub max_pending_approvals: usize,
}

/// What survives a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    pub incidents: Vec<Incident>,
    pub approvals: Vec<Approval>,
}

pub struct Responder {
    pub playbooks: Vec<Playbook>,
    pub mode: Mode,
    pub limits: Limits,
    recent: VecDeque<f64>,
    pub incidents: BTreeMap<String, Incident>,
    order: VecDeque<String>,
    pub approvals: BTreeMap<String, Approval>,
    pub max_incidents: usize,
    /// Finished incidents dropped to stay within `max_incidents`.
    pub incidents_evicted: u64,
    pub rate_limited: u64,
    /// Incidents denied because `max_pending_approvals` were waiting.
    pub approvals_refused: u64,
    /// Approvals expired at start: their deadline passed while the agent
    /// was not running, or their incident was gone.
    pub approvals_expired: u64,
    dirty: bool,
}

type Out = Vec<ResponseRecord>;

/// `<step id>: <what the action does to this alert>`.
fn describe(step: &Step, ctx: &AlertContext) -> String {
    format!("{}: {}", step.id, step.action.act().describe(ctx))
}

fn result(step: &Step, state: StepState, detail: impl Into<String>) -> StepResult {
    StepResult {
        step: step.id.clone(),
        action: step.action.name().to_string(),
        state,
        detail: detail.into(),
        undo: None,
    }
}

impl Responder {
    pub fn new(playbooks: Vec<Playbook>, mode: Mode, limits: Limits) -> Responder {
        Responder {
            playbooks,
            mode,
            limits,
            recent: VecDeque::new(),
            incidents: BTreeMap::new(),
            order: VecDeque::new(),
            approvals: BTreeMap::new(),
            max_incidents: 1024,
            incidents_evicted: 0,
            rate_limited: 0,
            approvals_refused: 0,
            approvals_expired: 0,
            dirty: false,
        }
    }

    /// Global dry-run wins over a playbook's `enforce`: it is the switch
    /// an operator flips to trust nothing.
    fn effective_mode(&self, p: &Playbook) -> Mode {
        match (self.mode, p.mode) {
            (Mode::DryRun, _) | (_, Some(Mode::DryRun)) => Mode::DryRun,
            _ => Mode::Enforce,
        }
    }

    /// Whether the state changed since the last call (then save it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn save(&self) -> Saved {
        Saved {
            incidents: self
                .order
                .iter()
                .filter_map(|id| self.incidents.get(id).cloned())
                .collect(),
            approvals: self.approvals.values().cloned().collect(),
        }
    }

    pub fn restore(&mut self, saved: Saved) {
        for i in saved.incidents {
            self.order.push_back(i.id.clone());
            self.incidents.insert(i.id.clone(), i);
        }
        for a in saved.approvals {
            if self.incidents.contains_key(&a.incident) {
                self.approvals.insert(a.id.clone(), a);
            } else {
                // Its incident was evicted: nothing left to approve.
                self.approvals_expired += 1;
                self.dirty = true;
            }
        }
    }

    fn decision(
        ex: &mut dyn Executor,
        out: &mut Out,
        inc: &Incident,
        what: DecisionKind,
        by: &By,
        detail: String,
    ) {
        let r = ResponseRecord::Decision(DecisionRecord {
            id: new_id(),
            ts: now_rfc3339(),
            host: ex.host().to_string(),
            incident: inc.id.clone(),
            playbook: inc.playbook.clone(),
            alert: inc.alert.id.clone(),
            decision: what,
            detail,
            by_uid: match by {
                By::Uid(uid) => Some(*uid),
                _ => None,
            },
            by_command: match by {
                By::Command(id) => Some(id.clone()),
                _ => None,
            },
        });
        ex.audit(&r);
        out.push(r);
    }

    /// Opens an incident per matching playbook for a new alert (updates of
    /// an alert already handled are ignored).
    pub fn on_alert(&mut self, alert: &Alert, now_s: f64, ex: &mut dyn Executor) -> Out {
        let mut out = Vec::new();
        if alert.update {
            return out;
        }
        let matching: Vec<(String, Mode, Vec<Step>)> = self
            .playbooks
            .iter()
            .filter(|p| p.trigger.matches(alert))
            .map(|p| (p.name.clone(), self.effective_mode(p), p.steps.clone()))
            .collect();
        for (name, mode, steps) in matching {
            let inc = Incident {
                id: format!("inc-{}", new_id()),
                ts: now_rfc3339(),
                playbook: name,
                mode,
                alert: AlertContext::from_alert(alert),
                steps,
                results: Vec::new(),
                next: 0,
                state: IncidentState::Running,
            };
            let mode_s = if mode == Mode::DryRun {
                "dry-run"
            } else {
                "enforce"
            };
            Self::decision(
                ex,
                &mut out,
                &inc,
                DecisionKind::IncidentOpened,
                &By::Timeout,
                format!("{mode_s}: {}", inc.alert.summary),
            );
            let id = inc.id.clone();
            self.insert_incident(inc);
            self.run(&id, now_s, ex, &mut out);
        }
        out
    }

    fn insert_incident(&mut self, inc: Incident) {
        self.order.push_back(inc.id.clone());
        self.incidents.insert(inc.id.clone(), inc);
        while self.order.len() > self.max_incidents {
            // Drop the oldest incident that is not waiting on a person.
            let Some(pos) = self.order.iter().position(|id| {
                self.incidents
                    .get(id)
                    .is_none_or(|i| i.state != IncidentState::AwaitingApproval)
            }) else {
                break;
            };
            if let Some(id) = self.order.remove(pos) {
                self.incidents.remove(&id);
                self.incidents_evicted += 1;
            }
        }
        self.dirty = true;
    }

    fn rate_ok(&mut self, now_s: f64) -> bool {
        while self.recent.front().is_some_and(|t| now_s - t >= 60.0) {
            self.recent.pop_front();
        }
        self.recent.len() < self.limits.max_actions_per_minute
    }

    /// Runs an incident's steps from `next` until it finishes or waits.
    fn run(&mut self, id: &str, now_s: f64, ex: &mut dyn Executor, out: &mut Out) {
        let Some(mut inc) = self.incidents.remove(id) else {
            return;
        };
        self.dirty = true;
        while inc.next < inc.steps.len() {
            let i = inc.next;
            inc.next += 1;
            let step = inc.steps[i].clone();
            if let Some(c) = &step.when {
                if !inc.alert.holds(c) {
                    inc.results
                        .push(result(&step, StepState::Skipped, "condition not met"));
                    continue;
                }
            }
            match step.action.act().effect() {
                Effect::Approval {
                    timeout_s,
                    on_timeout,
                } => {
                    if inc.mode == Mode::DryRun {
                        inc.results.push(result(
                            &step,
                            StepState::DryRun,
                            "would wait for approval",
                        ));
                        continue;
                    }
                    if self.approvals.len() >= self.limits.max_pending_approvals {
                        self.approvals_refused += 1;
                        let why = format!(
                            "{} approvals already pending (response.max_pending_approvals); \
                             denied without asking",
                            self.approvals.len()
                        );
                        inc.results
                            .push(result(&step, StepState::Refused, why.clone()));
                        Self::deny_rest(&mut inc);
                        Self::decision(
                            ex,
                            out,
                            &inc,
                            DecisionKind::ApprovalRefused,
                            &By::Timeout,
                            why,
                        );
                        self.incidents.insert(inc.id.clone(), inc);
                        return;
                    }
                    let proposed = inc.steps[inc.next..]
                        .iter()
                        .map(|s| describe(s, &inc.alert))
                        .collect();
                    let a = Approval {
                        id: format!("apr-{}", new_id()),
                        incident: inc.id.clone(),
                        playbook: inc.playbook.clone(),
                        alert: inc.alert.summary.clone(),
                        proposed,
                        created: now_rfc3339(),
                        deadline_s: now_s + timeout_s as f64,
                        on_timeout,
                    };
                    inc.results
                        .push(result(&step, StepState::Pending, a.id.clone()));
                    inc.state = IncidentState::AwaitingApproval;
                    let detail = format!(
                        "{} waits up to {timeout_s}s, then {:?}: {}",
                        a.id,
                        on_timeout,
                        a.proposed.join("; ")
                    )
                    .to_lowercase();
                    Self::decision(
                        ex,
                        out,
                        &inc,
                        DecisionKind::ApprovalRequested,
                        &By::Timeout,
                        detail,
                    );
                    self.approvals.insert(a.id.clone(), a);
                    self.incidents.insert(inc.id.clone(), inc);
                    return;
                }
                Effect::Notify(message) => {
                    out.push(ResponseRecord::Notification(NotificationRecord {
                        id: new_id(),
                        ts: now_rfc3339(),
                        host: ex.host().to_string(),
                        incident: inc.id.clone(),
                        playbook: inc.playbook.clone(),
                        message: message.to_string(),
                        alert: inc.alert.summary.clone(),
                    }));
                    inc.results.push(result(&step, StepState::Applied, message));
                }
                Effect::Change(change) => {
                    let r = self.enforce(&inc, change, &step, now_s, ex, out);
                    let failed = r.state == StepState::Failed;
                    inc.results.push(r);
                    if failed {
                        let detail = format!("step {} failed; undoing what was applied", step.id);
                        Self::decision(
                            ex,
                            out,
                            &inc,
                            DecisionKind::IncidentFailed,
                            &By::Timeout,
                            detail,
                        );
                        Self::undo_all(&mut inc, ex, out);
                        inc.state = IncidentState::Failed;
                        self.incidents.insert(inc.id.clone(), inc);
                        return;
                    }
                }
            }
        }
        inc.state = IncidentState::Done;
        self.incidents.insert(inc.id.clone(), inc);
    }

    /// Applies one host-changing step and returns its result (`failed`
    /// when the change failed).
    fn enforce(
        &mut self,
        inc: &Incident,
        change: &dyn HostChange,
        step: &Step,
        now_s: f64,
        ex: &mut dyn Executor,
        out: &mut Out,
    ) -> StepResult {
        let what = describe(step, &inc.alert);
        // Resolve the target first: a step without one is skipped, not failed.
        let apply = match change.resolve(&inc.alert) {
            Ok(apply) => apply,
            Err(why) => return result(step, StepState::Skipped, why),
        };
        // What the step would have done, recorded without changing the host.
        let verb = Verb::Step(step.action.name());
        let mut synthetic = |ex: &mut dyn Executor, state: ActionState, detail: String| {
            let a = Action::new(ex.host(), verb, what.clone(), None, state, detail);
            let r = ResponseRecord::Action(a);
            ex.audit(&r);
            out.push(r);
        };
        if inc.mode == Mode::DryRun {
            synthetic(ex, ActionState::DryRun, format!("incident {}", inc.id));
            return result(step, StepState::DryRun, what);
        }
        let over_blocks =
            change.adds_block() && ex.active_blocks() >= self.limits.max_concurrent_blocks;
        if over_blocks || !self.rate_ok(now_s) {
            self.rate_limited += 1;
            let why = if over_blocks {
                format!(
                    "{} blocks already active (max_concurrent_blocks)",
                    ex.active_blocks()
                )
            } else {
                format!(
                    "more than {} actions in a minute (max_actions_per_minute)",
                    self.limits.max_actions_per_minute
                )
            };
            synthetic(ex, ActionState::RateLimited, why.clone());
            return result(step, StepState::RateLimited, why);
        }
        self.recent.push_back(now_s);
        let o = apply(ex);
        let mut r = result(step, o.action.state.into(), o.action.detail.clone());
        r.undo = o.undo;
        let mut a = o.action;
        a.incident = Some(inc.id.clone());
        out.push(ResponseRecord::Action(a));
        r
    }

    /// Undoes every applied step of `inc`, last first.
    fn undo_all(inc: &mut Incident, ex: &mut dyn Executor, out: &mut Out) {
        for r in inc.results.iter_mut().rev() {
            let Some(undo) = r.undo.take() else { continue };
            let mut a = ex.undo(&undo).action;
            a.incident = Some(inc.id.clone());
            if a.state == ActionState::Failed {
                // Keep it so a later rollback can try again.
                r.detail = format!("undo failed: {}", a.detail);
                r.undo = Some(undo);
            } else {
                r.state = StepState::RolledBack;
            }
            out.push(ResponseRecord::Action(a));
        }
    }

    /// A person (uid) or the timeout decides a pending approval.
    pub fn decide(
        &mut self,
        approval: &str,
        decision: Decision,
        by: By,
        now_s: f64,
        ex: &mut dyn Executor,
    ) -> Result<Out, ResponseError> {
        let a = self
            .approvals
            .remove(approval)
            .ok_or_else(|| ResponseError::NoApproval(approval.to_string()))?;
        let mut out = Vec::new();
        let Some(mut inc) = self.incidents.remove(&a.incident) else {
            return Err(ResponseError::NoIncident(a.incident));
        };
        self.dirty = true;
        let what = match (decision, &by) {
            (Decision::Approve, By::Timeout) => DecisionKind::TimeoutApproved,
            (Decision::Deny, By::Timeout) => DecisionKind::TimeoutDenied,
            (Decision::Approve, _) => DecisionKind::Approved,
            (Decision::Deny, _) => DecisionKind::Denied,
        };
        let state = if decision == Decision::Approve {
            StepState::Approved
        } else {
            StepState::Denied
        };
        if let Some(r) = inc.results.iter_mut().rev().find(|r| r.detail == a.id) {
            r.state = state;
        }
        Self::decision(ex, &mut out, &inc, what, &by, a.id.clone());
        match decision {
            Decision::Approve => {
                inc.state = IncidentState::Running;
                let id = inc.id.clone();
                self.incidents.insert(id.clone(), inc);
                self.run(&id, now_s, ex, &mut out);
            }
            Decision::Deny => {
                Self::deny_rest(&mut inc);
                self.incidents.insert(inc.id.clone(), inc);
            }
        }
        Ok(out)
    }

    /// Marks the steps not yet run as denied and the incident as denied.
    fn deny_rest(inc: &mut Incident) {
        for s in &inc.steps[inc.next..] {
            inc.results.push(result(s, StepState::Denied, ""));
        }
        inc.next = inc.steps.len();
        inc.state = IncidentState::Denied;
    }

    /// At start, after [`restore`](Self::restore): an approval whose
    /// deadline passed while the agent was not running is expired (its
    /// steps are not run, whatever `on_timeout` says: the alert is stale),
    /// and so is an incident left waiting without an approval (its
    /// approval was lost or evicted). Counted and recorded.
    pub fn expire_stale(&mut self, now_s: f64, ex: &mut dyn Executor) -> Out {
        let mut out = Vec::new();
        let stale: Vec<String> = self
            .approvals
            .values()
            .filter(|a| a.deadline_s <= now_s)
            .map(|a| a.id.clone())
            .collect();
        for id in stale {
            let Some(a) = self.approvals.remove(&id) else {
                continue;
            };
            self.approvals_expired += 1;
            self.dirty = true;
            if let Some(mut inc) = self.incidents.remove(&a.incident) {
                if let Some(r) = inc.results.iter_mut().rev().find(|r| r.detail == a.id) {
                    r.state = StepState::Expired;
                }
                Self::deny_rest(&mut inc);
                let detail = format!(
                    "{}: deadline passed while the agent was not running; not applied",
                    a.id
                );
                Self::decision(
                    ex,
                    &mut out,
                    &inc,
                    DecisionKind::Expired,
                    &By::Timeout,
                    detail,
                );
                self.incidents.insert(inc.id.clone(), inc);
            }
        }
        let waiting: std::collections::BTreeSet<&str> = self
            .approvals
            .values()
            .map(|a| a.incident.as_str())
            .collect();
        let orphans: Vec<String> = self
            .incidents
            .values()
            .filter(|i| {
                i.state == IncidentState::AwaitingApproval && !waiting.contains(i.id.as_str())
            })
            .map(|i| i.id.clone())
            .collect();
        for id in orphans {
            if let Some(mut inc) = self.incidents.remove(&id) {
                self.approvals_expired += 1;
                self.dirty = true;
                Self::deny_rest(&mut inc);
                Self::decision(
                    ex,
                    &mut out,
                    &inc,
                    DecisionKind::Expired,
                    &By::Timeout,
                    "its approval was lost; not applied".to_string(),
                );
                self.incidents.insert(inc.id.clone(), inc);
            }
        }
        out
    }

    /// Applies `on_timeout` to approvals past their deadline.
    pub fn tick(&mut self, now_s: f64, ex: &mut dyn Executor) -> Out {
        let due: Vec<(String, Decision)> = self
            .approvals
            .values()
            .filter(|a| a.deadline_s <= now_s)
            .map(|a| (a.id.clone(), a.on_timeout))
            .collect();
        let mut out = Vec::new();
        for (id, d) in due {
            if let Ok(mut o) = self.decide(&id, d, By::Timeout, now_s, ex) {
                out.append(&mut o);
            }
        }
        out
    }

    /// Undoes every applied step of an incident in reverse order and
    /// cancels its pending approval.
    pub fn rollback(
        &mut self,
        incident: &str,
        by: By,
        ex: &mut dyn Executor,
    ) -> Result<Out, ResponseError> {
        let mut inc = self
            .incidents
            .remove(incident)
            .ok_or_else(|| ResponseError::NoIncident(incident.to_string()))?;
        if inc.state == IncidentState::RolledBack {
            self.incidents.insert(inc.id.clone(), inc);
            return Err(ResponseError::AlreadyRolledBack(incident.to_string()));
        }
        self.dirty = true;
        self.approvals.retain(|_, a| a.incident != inc.id);
        let mut out = Vec::new();
        Self::decision(
            ex,
            &mut out,
            &inc,
            DecisionKind::Rollback,
            &by,
            String::new(),
        );
        Self::undo_all(&mut inc, ex, &mut out);
        inc.next = inc.steps.len();
        inc.state = IncidentState::RolledBack;
        self.incidents.insert(inc.id.clone(), inc);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::attack;
    use crate::response::action::require_approval::RequireApproval;
    use crate::response::action::StepAction;
    use crate::response::playbook;
    use std::path::Path;

    /// Records every call; `fail` names a call that fails.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        audit: Vec<ResponseRecord>,
        fail: Option<&'static str>,
        blocks: usize,
    }

    impl Recorder {
        fn outcome(
            &mut self,
            call: &'static str,
            verb: Verb,
            target: String,
            undo: Option<Undo>,
        ) -> Outcome {
            self.calls.push(format!("{call} {target}"));
            let failed = self.fail == Some(call);
            let state = if failed {
                ActionState::Failed
            } else {
                ActionState::Applied
            };
            Outcome {
                action: Action::new("h", verb, target, None, state, ""),
                undo: if failed { None } else { undo },
            }
        }
    }

    impl Executor for Recorder {
        fn block(&mut self, ip: IpAddr, _ttl: u64) -> Outcome {
            self.blocks += 1;
            let undo = Undo::Unblock {
                target: ip.to_string(),
                prior_expires_ns: None,
                prior_flags: 0,
            };
            self.outcome("block", Verb::Block, ip.to_string(), Some(undo))
        }
        fn isolate(&mut self, _ttl: u64) -> Outcome {
            self.outcome(
                "isolate",
                Verb::Isolate,
                "host".into(),
                Some(Undo::Unisolate),
            )
        }
        fn kill(
            &mut self,
            pid: u32,
            _exe: Option<&str>,
            _start: Option<u64>,
            _allow: &[String],
        ) -> Outcome {
            self.outcome("kill", Verb::Kill, pid.to_string(), None)
        }
        fn quarantine(&mut self, path: &str, _allow: &[String]) -> Outcome {
            let undo = Undo::Restore {
                quarantine_id: path.into(),
            };
            self.outcome("quarantine", Verb::Quarantine, path.into(), Some(undo))
        }
        fn undo(&mut self, undo: &Undo) -> Outcome {
            let (verb, t) = match undo {
                Undo::Unblock { target, .. } => (Verb::Unblock, format!("unblock {target}")),
                Undo::Unisolate => (Verb::Unisolate, "unisolate".into()),
                Undo::Restore { quarantine_id } => {
                    (Verb::Restore, format!("restore {quarantine_id}"))
                }
            };
            self.outcome("undo", verb, t, None)
        }
        fn active_blocks(&self) -> usize {
            self.blocks
        }
        fn audit(&mut self, r: &ResponseRecord) {
            self.audit.push(r.clone());
        }
        fn host(&self) -> &str {
            "h"
        }
    }

    fn shipped(name: &str) -> Playbook {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../playbooks")
            .join(format!("{name}.yaml"));
        playbook::load_file(&p).unwrap()
    }

    fn alert(detector: &'static str, tech: &'static str, sev: Severity) -> Alert {
        Alert {
            kind: "alert",
            id: "al-1".into(),
            ts: String::new(),
            host: "h".into(),
            detector,
            severity: sev,
            confidence: 0.9,
            techniques: vec![attack::technique(tech)],
            summary: "test".into(),
            entities: serde_json::json!({"src_ip": "192.0.2.9", "dst_ip": "198.51.100.4",
                "pid": 4242, "exe": "/tmp/x"}),
            evidence: serde_json::json!({}),
            count: 1,
            first_seen: String::new(),
            update: false,
        }
    }

    const LIMITS: Limits = Limits {
        max_actions_per_minute: 100,
        max_concurrent_blocks: 100,
        max_pending_approvals: 100,
    };

    fn enforce(p: Vec<Playbook>) -> Responder {
        Responder::new(p, Mode::Enforce, LIMITS)
    }

    fn enforce_with(name: &str, limits: Limits) -> Responder {
        Responder::new(vec![shipped(name)], Mode::Enforce, limits)
    }

    #[test]
    fn brute_force_blocks_the_source_and_updates_do_nothing() {
        let mut r = enforce(vec![shipped("brute_force_response")]);
        let mut ex = Recorder::default();
        let a = alert("brute_force", "T1110.001", Severity::Medium);
        let out = r.on_alert(&a, 0.0, &mut ex);
        assert_eq!(ex.calls, vec!["block 192.0.2.9"]);
        assert!(out.iter().any(|v| v.kind() == "notification"));
        assert_eq!(r.incidents.len(), 1);
        let upd = Alert { update: true, ..a };
        assert!(r.on_alert(&upd, 1.0, &mut ex).is_empty());
        assert_eq!(ex.calls.len(), 1);
        // Scans are not this playbook's business.
        r.on_alert(&alert("scan", "T1046", Severity::High), 2.0, &mut ex);
        assert_eq!(ex.calls.len(), 1);
    }

    #[test]
    fn approval_waits_then_runs_when_approved() {
        let mut r = enforce(vec![shipped("lateral_movement_isolation")]);
        let mut ex = Recorder::default();
        r.on_alert(&alert("lateral", "T1021.004", Severity::High), 0.0, &mut ex);
        assert!(ex.calls.is_empty(), "{:?}", ex.calls);
        let id = r.approvals.keys().next().unwrap().clone();
        assert!(r.approvals[&id].proposed[0].contains("isolate"));
        let out = r
            .decide(&id, Decision::Approve, By::Uid(0), 5.0, &mut ex)
            .unwrap();
        assert_eq!(ex.calls, vec!["isolate host"]);
        assert!(out
            .iter()
            .filter_map(ResponseRecord::decision)
            .any(|d| { d.decision == DecisionKind::Approved && d.by_uid == Some(0) }));
        assert!(r.approvals.is_empty());
        assert_eq!(
            r.decide(&id, Decision::Approve, By::Uid(0), 6.0, &mut ex),
            Err(ResponseError::NoApproval(id))
        );
    }

    #[test]
    fn approval_timeout_applies_on_timeout_both_ways() {
        for (on_timeout, expect_calls) in [(Decision::Deny, 0), (Decision::Approve, 1)] {
            let mut p = shipped("lateral_movement_isolation");
            p.steps[1].action = StepAction::RequireApproval(RequireApproval {
                timeout_s: 60,
                on_timeout,
            });
            let mut r = enforce(vec![p]);
            let mut ex = Recorder::default();
            r.on_alert(&alert("lateral", "T1021", Severity::High), 100.0, &mut ex);
            assert!(r.tick(159.0, &mut ex).is_empty());
            let out = r.tick(160.0, &mut ex);
            let what = if on_timeout == Decision::Deny {
                DecisionKind::TimeoutDenied
            } else {
                DecisionKind::TimeoutApproved
            };
            assert!(
                out.iter()
                    .filter_map(ResponseRecord::decision)
                    .any(|d| d.decision == what),
                "{out:?}"
            );
            assert_eq!(ex.calls.len(), expect_calls);
            let inc = r.incidents.values().next().unwrap();
            let want = if on_timeout == Decision::Deny {
                IncidentState::Denied
            } else {
                IncidentState::Done
            };
            assert_eq!(inc.state, want);
        }
    }

    #[test]
    fn rollback_undoes_applied_steps_in_reverse_order() {
        let mut r = enforce(vec![shipped("malware_containment")]);
        let mut ex = Recorder::default();
        r.on_alert(&alert("process", "T1204.002", Severity::High), 0.0, &mut ex);
        assert_eq!(
            ex.calls,
            vec!["kill 4242", "quarantine /tmp/x", "block 198.51.100.4"]
        );
        let id = r.incidents.keys().next().unwrap().clone();
        ex.calls.clear();
        r.rollback(&id, By::Uid(0), &mut ex).unwrap();
        // Kill has no inverse; the others come back last-first.
        assert_eq!(
            ex.calls,
            vec!["undo unblock 198.51.100.4", "undo restore /tmp/x"]
        );
        assert_eq!(r.incidents[&id].state, IncidentState::RolledBack);
        assert!(matches!(
            r.rollback(&id, By::Uid(0), &mut ex),
            Err(ResponseError::AlreadyRolledBack(_))
        ));
    }

    #[test]
    fn a_failed_step_rolls_back_what_the_incident_applied() {
        let mut r = enforce(vec![shipped("malware_containment")]);
        let mut ex = Recorder {
            fail: Some("block"),
            ..Recorder::default()
        };
        r.on_alert(&alert("process", "T1204.002", Severity::High), 0.0, &mut ex);
        assert_eq!(
            ex.calls,
            vec![
                "kill 4242",
                "quarantine /tmp/x",
                "block 198.51.100.4",
                "undo restore /tmp/x"
            ]
        );
        let inc = r.incidents.values().next().unwrap();
        assert_eq!(inc.state, IncidentState::Failed);
        assert!(!inc.results.iter().any(|s| s.step == "tell"));
    }

    #[test]
    fn dry_run_changes_nothing_but_records_what_it_would_do() {
        let mut r = Responder::new(
            vec![shipped("data_exfiltration_block")],
            Mode::DryRun,
            LIMITS,
        );
        let mut ex = Recorder::default();
        let out = r.on_alert(&alert("exfil", "T1048", Severity::High), 0.0, &mut ex);
        assert!(ex.calls.is_empty());
        assert!(r.approvals.is_empty());
        let dry_run =
            |v: &&ResponseRecord| v.action().is_some_and(|a| a.state == ActionState::DryRun);
        let dry: Vec<_> = out.iter().filter(dry_run).collect();
        assert_eq!(dry.len(), 2, "{out:?}");
        assert!(ex.audit.iter().any(|v| dry_run(&v)));
        // A playbook's own dry-run holds under a global enforce.
        let mut p = shipped("brute_force_response");
        p.mode = Some(Mode::DryRun);
        let mut r = enforce(vec![p]);
        r.on_alert(&alert("brute_force", "T1110", Severity::High), 0.0, &mut ex);
        assert!(ex.calls.is_empty());
    }

    #[test]
    fn rate_limits_stop_an_attacker_from_blocking_the_world() {
        let mut r = enforce_with(
            "brute_force_response",
            Limits {
                max_actions_per_minute: 3,
                ..LIMITS
            },
        );
        let mut ex = Recorder::default();
        for i in 0..5 {
            let mut a = alert("brute_force", "T1110", Severity::High);
            a.entities["src_ip"] = format!("192.0.2.{i}").into();
            r.on_alert(&a, i as f64, &mut ex);
        }
        assert_eq!(ex.calls.len(), 3);
        assert_eq!(r.rate_limited, 2);
        // A minute later the budget is back.
        let a = alert("brute_force", "T1110", Severity::High);
        r.on_alert(&a, 61.0, &mut ex);
        assert_eq!(ex.calls.len(), 4);
    }

    #[test]
    fn conditions_skip_steps() {
        let mut r = enforce(vec![shipped("data_exfiltration_block")]);
        let mut ex = Recorder::default();
        let mut a = alert("exfil", "T1048", Severity::High);
        a.confidence = 0.7;
        r.on_alert(&a, 0.0, &mut ex);
        assert_eq!(ex.calls, vec!["block 198.51.100.4"]);
        assert!(r.approvals.is_empty());
        let inc = r.incidents.values().next().unwrap();
        assert_eq!(inc.results[1].state, StepState::Skipped);
    }

    #[test]
    fn state_survives_a_restart() {
        let mut r = enforce(vec![shipped("lateral_movement_isolation")]);
        let mut ex = Recorder::default();
        r.on_alert(&alert("lateral", "T1021", Severity::High), 0.0, &mut ex);
        let saved = serde_json::to_string(&r.save()).unwrap();
        let mut r2 = enforce(vec![]);
        r2.restore(serde_json::from_str(&saved).unwrap());
        let id = r2.approvals.keys().next().unwrap().clone();
        r2.decide(&id, Decision::Approve, By::Uid(0), 1.0, &mut ex)
            .unwrap();
        assert_eq!(ex.calls, vec!["isolate host"]);
    }

    /// response.json written before the records were typed (one line of
    /// each step state and undo kind) loads and saves back unchanged.
    #[test]
    fn saved_state_from_before_typed_records_round_trips() {
        let text = include_str!("../../tests/response-state-v1.json").trim_end();
        let saved: Saved = serde_json::from_str(text).expect("load");
        assert_eq!(saved.incidents.len(), 7);
        assert_eq!(serde_json::to_string(&saved).expect("save"), text);
    }

    #[test]
    fn skipped_steps_say_what_the_alert_lacks() {
        let mut r = enforce(vec![shipped("malware_containment")]);
        let mut ex = Recorder::default();
        let mut a = alert("process", "T1204.002", Severity::High);
        a.entities = serde_json::json!({});
        r.on_alert(&a, 0.0, &mut ex);
        assert!(ex.calls.is_empty());
        let inc = r.incidents.values().next().unwrap();
        let got: Vec<(StepState, &str)> = inc
            .results
            .iter()
            .map(|s| (s.state, s.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (StepState::Skipped, "alert has no pid"),
                (StepState::Skipped, "alert has no executable"),
                (StepState::Skipped, "alert has no destination address"),
                (StepState::Applied, "contained a malicious executable"),
            ]
        );
    }

    #[test]
    fn records_carry_their_incident_and_describe_the_step() {
        let mut r = enforce(vec![shipped("malware_containment")]);
        let mut ex = Recorder::default();
        let out = r.on_alert(&alert("process", "T1204.002", Severity::High), 0.0, &mut ex);
        let kinds: Vec<&str> = out.iter().map(ResponseRecord::kind).collect();
        assert_eq!(
            kinds,
            ["decision", "action", "action", "action", "notification"]
        );
        let inc = r.incidents.keys().next().unwrap().clone();
        for a in out.iter().filter_map(ResponseRecord::action) {
            assert_eq!(a.incident.as_deref(), Some(inc.as_str()));
        }
        let ctx = &r.incidents[&inc].alert;
        let steps = &r.incidents[&inc].steps;
        let described: Vec<String> = steps.iter().map(|s| describe(s, ctx)).collect();
        assert_eq!(
            described,
            [
                "kill: kill pid 4242",
                "quarantine: quarantine \"/tmp/x\"",
                "block_c2: block 198.51.100.4 for 86400s",
                "tell: notify \"contained a malicious executable\"",
            ]
        );
    }

    fn lateral(i: u8) -> Alert {
        let mut a = alert("lateral", "T1021.004", Severity::High);
        a.id = format!("al-{i}");
        a.entities["src_ip"] = format!("192.0.2.{i}").into();
        a
    }

    fn decisions(out: &[ResponseRecord]) -> Vec<DecisionKind> {
        out.iter()
            .filter_map(ResponseRecord::decision)
            .map(|d| d.decision)
            .collect()
    }

    #[test]
    fn pending_approvals_are_capped_and_the_excess_is_denied_with_the_reason() {
        let mut r = enforce_with(
            "lateral_movement_isolation",
            Limits {
                max_pending_approvals: 2,
                ..LIMITS
            },
        );
        let mut ex = Recorder::default();
        r.on_alert(&lateral(1), 0.0, &mut ex);
        r.on_alert(&lateral(2), 0.0, &mut ex);
        let out = r.on_alert(&lateral(3), 0.0, &mut ex);
        assert_eq!(r.approvals.len(), 2);
        assert_eq!(r.approvals_refused, 1);
        assert!(ex.calls.is_empty(), "{:?}", ex.calls);
        assert_eq!(
            decisions(&out),
            [DecisionKind::IncidentOpened, DecisionKind::ApprovalRefused]
        );
        let refused = out
            .iter()
            .filter_map(ResponseRecord::decision)
            .find(|d| d.decision == DecisionKind::ApprovalRefused)
            .expect("refusal");
        assert!(
            refused.detail.contains("max_pending_approvals"),
            "{}",
            refused.detail
        );
        assert!(ex
            .audit
            .iter()
            .filter_map(ResponseRecord::decision)
            .any(|d| d.decision == DecisionKind::ApprovalRefused));
        let inc = r
            .incidents
            .values()
            .find(|i| i.alert.id == "al-3")
            .expect("incident kept");
        assert_eq!(inc.state, IncidentState::Denied);
        assert!(inc.results.iter().any(|s| s.state == StepState::Refused));
        // Deciding one frees a place.
        let id = r.approvals.keys().next().expect("pending").clone();
        r.decide(&id, Decision::Deny, By::Uid(0), 1.0, &mut ex)
            .expect("deny");
        r.on_alert(&lateral(4), 2.0, &mut ex);
        assert_eq!(r.approvals.len(), 2);
        assert_eq!(r.approvals_refused, 1);
    }

    #[test]
    fn an_approval_whose_deadline_passed_while_the_agent_was_down_expires_at_start() {
        let mut p = shipped("lateral_movement_isolation");
        // Even one that would approve itself on timeout: the alert is stale.
        p.steps[1].action = StepAction::RequireApproval(RequireApproval {
            timeout_s: 60,
            on_timeout: Decision::Approve,
        });
        let mut r = enforce(vec![p]);
        let mut ex = Recorder::default();
        r.on_alert(&lateral(1), 100.0, &mut ex);
        r.on_alert(&lateral(2), 150.0, &mut ex);
        let saved = serde_json::to_string(&r.save()).expect("save");
        // Restarted at 200 s: the first deadline (160) passed, the second (210) did not.
        let mut r2 = enforce(vec![]);
        r2.restore(serde_json::from_str(&saved).expect("load"));
        let out = r2.expire_stale(200.0, &mut ex);
        assert_eq!(decisions(&out), [DecisionKind::Expired]);
        assert!(ex.calls.is_empty(), "{:?}", ex.calls);
        assert_eq!(r2.approvals.len(), 1);
        assert_eq!(r2.approvals_expired, 1);
        let first = r2
            .incidents
            .values()
            .find(|i| i.alert.id == "al-1")
            .expect("incident");
        assert_eq!(first.state, IncidentState::Denied);
        assert!(first.results.iter().any(|s| s.state == StepState::Expired));
        assert!(r2.take_dirty());
        // The live one is still decided by its own deadline.
        assert!(r2.tick(209.0, &mut ex).is_empty());
        r2.tick(210.0, &mut ex);
        assert_eq!(ex.calls, ["isolate host"]);
    }

    #[test]
    fn an_approval_without_its_incident_and_an_incident_without_its_approval_expire() {
        let mut r = enforce(vec![shipped("lateral_movement_isolation")]);
        let mut ex = Recorder::default();
        r.on_alert(&lateral(1), 0.0, &mut ex);
        r.on_alert(&lateral(2), 0.0, &mut ex);
        let mut saved = r.save();
        // The first incident was evicted; the second lost its approval.
        let gone = saved.incidents.remove(0);
        saved.approvals.retain(|a| a.incident == gone.id);
        let mut r2 = enforce(vec![]);
        r2.restore(saved);
        assert!(r2.approvals.is_empty());
        assert_eq!(r2.approvals_expired, 1);
        let out = r2.expire_stale(1.0, &mut ex);
        assert_eq!(decisions(&out), [DecisionKind::Expired]);
        assert_eq!(r2.approvals_expired, 2);
        let inc = r2.incidents.values().next().expect("incident");
        assert_eq!(inc.state, IncidentState::Denied);
        assert!(ex.calls.is_empty());
    }
}
