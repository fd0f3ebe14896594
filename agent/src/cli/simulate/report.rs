//! The rows `vigil simulate` reports: one per stand-in, as a table for
//! people and JSON for scripts.

use serde::Serialize;
use vigil::response::plan::Planned;

/// What became of one stand-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The agent raised the expected detection.
    Passed,
    /// Attempted, and the expected detection did not come (why).
    Failed(String),
    /// Not attempted (why, e.g. how long it would take).
    Skipped(String),
    /// The agent deliberately does not raise it for a stand-in (why).
    NotRaisedByDesign(String),
}

impl Outcome {
    pub fn attempted(&self) -> bool {
        matches!(self, Outcome::Passed | Outcome::Failed(_))
    }

    fn label(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed(r) => format!("FAILED: {r}"),
            Outcome::Skipped(r) => format!("skipped: {r}"),
            Outcome::NotRaisedByDesign(r) => format!("not raised by design: {r}"),
        }
    }
}

/// The alert the running agent raised for a stand-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seen {
    pub id: String,
    pub detector: String,
    pub severity: String,
    pub techniques: Vec<String>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The stand-in, e.g. `port sweep`.
    pub standin: &'static str,
    /// The detection it should raise, e.g. `scan T1046`.
    pub expected: &'static str,
    pub outcome: Outcome,
    pub alert: Option<Seen>,
    /// Seconds from the stand-in's start to the alert being read back.
    pub seconds: Option<f64>,
    /// What the loaded playbooks would do (never done by `simulate`).
    pub response: Vec<Planned>,
    /// What it did, for the record (addresses, counts).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Addresses only the simulation uses: an agent in enforce mode may
    /// block them, which touches nothing else.
    pub simulation_addresses: Vec<String>,
    pub response_mode: String,
    pub passed: bool,
}

impl Report {
    pub fn new(rows: Vec<Row>, simulation_addresses: Vec<String>, response_mode: String) -> Report {
        let passed = rows.iter().any(|r| r.outcome.attempted())
            && rows
                .iter()
                .all(|r| !matches!(r.outcome, Outcome::Failed(_)));
        Report {
            rows,
            simulation_addresses,
            response_mode,
            passed,
        }
    }

    /// The response column: each triggered playbook with the actions that
    /// would run, or why none would.
    fn response_text(r: &Row) -> String {
        if r.alert.is_none() {
            return "-".into();
        }
        if r.response.is_empty() {
            return "no playbook triggers".into();
        }
        r.response
            .iter()
            .map(|p| {
                let steps: Vec<String> = p
                    .steps
                    .iter()
                    .map(|s| match s.fate {
                        "run" => s.what.clone(),
                        other => format!("{} ({other})", s.what),
                    })
                    .collect();
                let mode = serde_json::to_value(p.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{} [{mode}]: {}", p.playbook, steps.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:<22} {:<40} {:>7}  RESPONSE (dry-run: what the playbooks would do)\n",
            "STAND-IN", "EXPECTED", "RESULT", "SECONDS"
        );
        for r in &self.rows {
            let secs = r
                .seconds
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<24} {:<22} {:<40} {:>7}  {}\n",
                r.standin,
                r.expected,
                r.outcome.label(),
                secs,
                Self::response_text(r)
            ));
            if let Some(a) = &r.alert {
                out.push_str(&format!(
                    "{:<24} alert {} {}: {}\n",
                    "", a.severity, a.id, a.summary
                ));
            }
            if !r.detail.is_empty() {
                out.push_str(&format!("{:<24} {}\n", "", r.detail));
            }
        }
        out.push_str(&format!(
            "\nresponse mode of the running agent: {}; simulate itself never acts.\n\
             Addresses only the simulation uses (an enforcing agent may block them): {}\n{}\n",
            self.response_mode,
            if self.simulation_addresses.is_empty() {
                "none".to_string()
            } else {
                self.simulation_addresses.join(", ")
            },
            if self.passed {
                "every attempted stand-in was detected"
            } else {
                "NOT every attempted stand-in was detected"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil::response::plan::PlannedStep;
    use vigil::response::playbook::Mode;

    fn row(outcome: Outcome) -> Row {
        Row {
            standin: "memfd exec",
            expected: "process T1620",
            outcome,
            alert: None,
            seconds: None,
            response: Vec::new(),
            detail: String::new(),
        }
    }

    #[test]
    fn passes_only_when_every_attempted_row_passed() {
        let ok = Report::new(
            vec![
                row(Outcome::Passed),
                row(Outcome::Skipped("needs 10 minutes".into())),
            ],
            vec![],
            "dry-run".into(),
        );
        assert!(ok.passed);
        let bad = Report::new(
            vec![
                row(Outcome::Passed),
                row(Outcome::Failed("no alert in 30 s".into())),
            ],
            vec![],
            "dry-run".into(),
        );
        assert!(!bad.passed);
        // Nothing attempted proves nothing.
        let none = Report::new(
            vec![row(Outcome::NotRaisedByDesign("untrusted".into()))],
            vec![],
            "dry-run".into(),
        );
        assert!(!none.passed);
    }

    #[test]
    fn table_shows_result_latency_response_and_the_simulation_addresses() {
        let mut r = row(Outcome::Passed);
        r.seconds = Some(1.25);
        r.alert = Some(Seen {
            id: "a-1".into(),
            detector: "process".into(),
            severity: "high".into(),
            techniques: vec!["T1620".into()],
            summary: "fileless".into(),
        });
        r.response = vec![Planned {
            playbook: "malware_containment".into(),
            mode: Mode::DryRun,
            steps: vec![
                PlannedStep {
                    id: "kill".into(),
                    action: "kill_process",
                    what: "kill pid 7".into(),
                    fate: "run",
                },
                PlannedStep {
                    id: "i".into(),
                    action: "isolate_host",
                    what: "isolate the host for 3600s".into(),
                    fate: "skipped: when",
                },
            ],
        }];
        let mut none = row(Outcome::Skipped("needs 15 minutes".into()));
        none.standin = "beacon";
        let t = Report::new(vec![r, none], vec!["198.18.86.2".into()], "dry-run".into()).table();
        assert!(t.contains("passed"), "{t}");
        assert!(t.contains("1.25"), "{t}");
        assert!(
            t.contains(
                "malware_containment [dry-run]: kill pid 7, isolate the host for 3600s (skipped: when)"
            ),
            "{t}"
        );
        assert!(t.contains("skipped: needs 15 minutes"), "{t}");
        assert!(t.contains("198.18.86.2"), "{t}");
        assert!(t.contains("every attempted stand-in was detected"), "{t}");
    }

    #[test]
    fn json_names_the_outcome_and_its_reason() {
        let v = serde_json::to_value(Report::new(
            vec![row(Outcome::Failed("no alert".into()))],
            vec![],
            "enforce".into(),
        ))
        .expect("json");
        assert_eq!(v["passed"], false);
        assert_eq!(v["rows"][0]["outcome"]["state"], "failed");
        assert_eq!(v["rows"][0]["outcome"]["reason"], "no alert");
        assert_eq!(v["rows"][0]["alert"], serde_json::Value::Null);
    }
}
