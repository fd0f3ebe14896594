//! Where records go. Every output record passes through [`Sinks::emit`]:
//! it is serialised once, then each [`Sink`] that wants its kind takes it.
//! One error policy for all of them: a record that cannot be serialised is
//! dropped and counted (never written as an empty line); a sink that fails
//! to take a record is counted and logged, and the daemon carries on —
//! detection and enforcement never stop because an output is unwell.

pub mod backlog;
pub mod format;
pub mod jsonl;
pub mod kafka;

use serde::Serialize;

use crate::detect::Alert;
use crate::record::Record;
use crate::response::record::ResponseRecord;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open output {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    #[error("serializing a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::producer::KafkaError),
}

/// One output record, typed, so a sink that speaks another format can map
/// it; [`Output::to_json`] is the native form (docs/events.md).
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// Telemetry and agent records from the pipeline.
    Event(&'a Record),
    Alert(&'a Alert),
    /// Actions, decisions and notifications from the response engine and
    /// containment.
    Response(&'a ResponseRecord),
    /// A fleet command or indicator as received and judged.
    Command(&'a CommandRecord),
    /// Fleet messages refused without a record each, counted.
    Summary(&'a CommandSummary),
}

impl Output<'_> {
    /// The record's `kind`, as serialised.
    pub fn kind(&self) -> &str {
        match self {
            Output::Event(r) => r.body.kind(),
            Output::Alert(_) => "alert",
            Output::Response(r) => r.kind(),
            Output::Command(_) => "command",
            Output::Summary(_) => "command_summary",
        }
    }

    /// The native JSON line (without a newline).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Output::Event(r) => format::native::line(r),
            Output::Alert(a) => serde_json::to_string(a),
            Output::Response(r) => serde_json::to_string(r),
            Output::Command(c) => serde_json::to_string(c),
            Output::Summary(c) => serde_json::to_string(c),
        }
    }
}

/// A `defense.commands` or `threat.enriched` message: what it asked and
/// whether it ran (docs/kafka.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRecord {
    pub kind: &'static str,
    pub id: String,
    pub ts: String,
    pub host: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub message_id: String,
    /// `executed` or `refused`.
    pub result: &'static str,
    pub detail: String,
}

/// Refused fleet messages counted since `since`, written at most once a
/// minute instead of one record each (docs/kafka.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandSummary {
    pub kind: &'static str,
    pub id: String,
    pub ts: String,
    pub host: String,
    /// When the first of these refusals was counted.
    pub since: String,
    /// All refusals summarised here.
    pub refused: u64,
    pub counts: Vec<RefusalCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusalCount {
    pub topic: String,
    /// `unsigned`, `forged`, `malformed`, `no_key`, `stale`, `replay` or
    /// `rate_limited`.
    pub reason: &'static str,
    pub count: u64,
}

/// A destination for records.
pub trait Sink: Send {
    /// Short name for logs, status and metrics.
    fn name(&self) -> &'static str;
    /// Whether this sink takes records of `kind` at all; when no sink does,
    /// the record is not even serialised.
    fn wants(&self, _kind: &str) -> bool {
        true
    }
    /// Takes one record; `line` is its native JSON form.
    fn write(&mut self, out: &Output<'_>, line: &str) -> Result<(), SinkError>;
    /// Makes what was written visible (buffered writers).
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Periodic work, e.g. producing from a spool.
    fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// At shutdown: hand over what can be handed over in a short wait.
    fn close(&mut self) {}
    /// What `vigil status` shows for this sink.
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Mirrors the sink's own counters into the metrics.
    fn observe(&self, _m: &crate::service::metrics::Metrics) {}
}

/// Failures of one sink, for status and metrics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SinkFailures {
    pub errors: u64,
    pub last_error: String,
}

/// Every configured sink, fed in order, with the shared error policy.
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    failures: Vec<SinkFailures>,
    /// Records dropped because they could not be serialised.
    pub unserializable: u64,
}

impl Sinks {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Sinks {
        let failures = vec![SinkFailures::default(); sinks.len()];
        Sinks {
            sinks,
            failures,
            unserializable: 0,
        }
    }

    /// Serialises `out` once and hands it to every sink that wants it;
    /// returns the native line when anyone took it.
    pub fn emit(&mut self, out: Output<'_>) -> Option<String> {
        let kind = out.kind();
        if !self.sinks.iter().any(|s| s.wants(kind)) {
            return None;
        }
        let line = match out.to_json() {
            Ok(l) => l,
            Err(e) => {
                self.unserializable += 1;
                if self.unserializable.is_power_of_two() {
                    tracing::warn!(
                        "dropped a {kind} record that could not be serialised: {e} ({} so far)",
                        self.unserializable
                    );
                }
                return None;
            }
        };
        for (s, f) in self.sinks.iter_mut().zip(&mut self.failures) {
            if s.wants(kind) {
                let r = s.write(&out, &line);
                note(s.name(), f, r);
            }
        }
        Some(line)
    }

    pub fn flush(&mut self) {
        for (s, f) in self.sinks.iter_mut().zip(&mut self.failures) {
            let r = s.flush();
            note(s.name(), f, r);
        }
    }

    pub fn tick(&mut self) {
        for (s, f) in self.sinks.iter_mut().zip(&mut self.failures) {
            let r = s.tick();
            note(s.name(), f, r);
        }
    }

    pub fn close(&mut self) {
        self.flush();
        for s in &mut self.sinks {
            s.close();
        }
    }

    /// Per sink: its own status and its failures.
    pub fn status(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (s, f) in self.sinks.iter().zip(&self.failures) {
            m.insert(
                s.name().to_string(),
                serde_json::json!({"status": s.status(), "failures": f}),
            );
        }
        serde_json::Value::Object(m)
    }

    /// The status of the sink called `name`, if configured.
    pub fn status_of(&self, name: &str) -> Option<serde_json::Value> {
        self.sinks
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.status())
    }

    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &SinkFailures)> {
        self.sinks.iter().map(|s| s.name()).zip(&self.failures)
    }

    pub fn observe(&self, m: &crate::service::metrics::Metrics) {
        for (s, f) in self.sinks.iter().zip(&self.failures) {
            m.mirror(
                &format!("output_errors:{}", s.name()),
                f.errors,
                &m.output_errors.with_label_values(&[s.name()]),
            );
            s.observe(m);
        }
    }
}

/// Mirrors a retry backlog into the metrics: what it shed, what it holds.
pub fn observe_backlog(
    m: &crate::service::metrics::Metrics,
    output: &str,
    shed: u64,
    pending_bytes: usize,
) {
    m.mirror(
        &format!("output_shed:{output}"),
        shed,
        &m.output_shed.with_label_values(&[output]),
    );
    m.output_pending_bytes
        .with_label_values(&[output])
        .set(pending_bytes as i64);
}

/// Counts a failure; logs the first and then every power of two.
fn note(name: &str, f: &mut SinkFailures, r: Result<(), SinkError>) {
    if let Err(e) = r {
        f.errors += 1;
        f.last_error = e.to_string();
        if f.errors.is_power_of_two() {
            tracing::warn!("output {name}: {e} ({} failures so far)", f.errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Keeps what it is given; fails when told to.
    struct Keep {
        name: &'static str,
        lines: Arc<Mutex<Vec<String>>>,
        only: Option<&'static str>,
        fail: bool,
    }

    impl Sink for Keep {
        fn name(&self) -> &'static str {
            self.name
        }
        fn wants(&self, kind: &str) -> bool {
            self.only.is_none_or(|k| k == kind)
        }
        fn write(&mut self, _out: &Output<'_>, line: &str) -> Result<(), SinkError> {
            if self.fail {
                return Err(SinkError::Write(std::io::Error::other("disk full")));
            }
            self.lines.lock().expect("lock").push(line.to_string());
            Ok(())
        }
    }

    fn command() -> CommandRecord {
        CommandRecord {
            kind: "command",
            id: "c1".into(),
            ts: "t".into(),
            host: "h".into(),
            topic: "defense.commands".into(),
            partition: 0,
            offset: 7,
            message_id: "m".into(),
            result: "refused",
            detail: "unsigned".into(),
        }
    }

    #[test]
    fn one_serialisation_reaches_every_sink_that_wants_the_kind() {
        let a = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Sinks::new(vec![
            Box::new(Keep {
                name: "keep",
                lines: a.clone(),
                only: None,
                fail: false,
            }),
            Box::new(Keep {
                name: "keep",
                lines: b.clone(),
                only: Some("alert"),
                fail: false,
            }),
        ]);
        let c = command();
        let line = sinks.emit(Output::Command(&c)).expect("taken");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["kind"], "command");
        assert_eq!(v["offset"], 7);
        assert_eq!(a.lock().expect("lock").as_slice(), [line]);
        assert!(b.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_failing_sink_is_counted_and_the_others_still_get_the_record() {
        let good = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Sinks::new(vec![
            Box::new(Keep {
                name: "bad",
                lines: Arc::new(Mutex::new(Vec::new())),
                only: None,
                fail: true,
            }),
            Box::new(Keep {
                name: "keep",
                lines: good.clone(),
                only: None,
                fail: false,
            }),
        ]);
        let c = command();
        sinks.emit(Output::Command(&c));
        sinks.emit(Output::Command(&c));
        assert_eq!(good.lock().expect("lock").len(), 2);
        let f: Vec<_> = sinks.failures().map(|(_, f)| f.errors).collect();
        assert_eq!(f, [2, 0]);
        assert!(sinks.status()["bad"]["failures"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("disk full")));
    }

    #[test]
    fn nothing_is_serialised_when_no_sink_wants_the_kind() {
        let mut sinks = Sinks::new(vec![Box::new(Keep {
            name: "keep",
            lines: Arc::new(Mutex::new(Vec::new())),
            only: Some("alert"),
            fail: false,
        })]);
        assert_eq!(sinks.emit(Output::Command(&command())), None);
    }
}
