//! Playbook actions. Each declares in its own file what it is: its name,
//! the keys it takes and how they parse ([`Spec`]), how it reads like a
//! sentence, what it needs from the alert and what it does ([`Act`],
//! [`HostChange`]), and its inverse. The [`actions!`] line below is the one
//! table of them; the parser, the engine, `vigil playbook check` and the
//! documentation test read it.

pub mod block_ip;
pub mod isolate_host;
pub mod kill_process;
pub mod notify;
pub mod quarantine_file;
pub mod require_approval;

use serde::{Deserialize, Serialize};

use super::engine::{AlertContext, Executor, Outcome};
use super::playbook::{Decision, StepKeys};

/// What an action declares about itself, without a step in hand.
pub struct Spec {
    /// Its `action:` name in playbooks and in records.
    pub name: &'static str,
    /// Keys it takes besides `id`, `action` and `when`; its parser reads
    /// each as required or optional.
    pub keys: &'static [&'static str],
    /// What rollback does about a step of it.
    pub inverse: &'static str,
    /// Reads its keys (only keys in `keys` reach it) into a step action.
    pub parse: fn(&mut StepKeys<'_, '_>) -> Option<StepAction>,
}

/// What running a step means to the engine.
pub enum Effect<'a> {
    /// Changes the host: obeys the mode and the rate limits, and may leave
    /// an undo for rollback.
    Change(&'a dyn HostChange),
    /// Writes a `notification` record.
    Notify(&'a str),
    /// Parks the incident until a person or the timeout decides.
    Approval {
        timeout_s: u64,
        on_timeout: Decision,
    },
}

/// A parsed step's behaviour.
pub trait Act {
    /// What the step does to this alert, as approvals and dry-run records
    /// show it (after `<step id>: `).
    fn describe(&self, ctx: &AlertContext) -> String;
    fn effect(&self) -> Effect<'_>;
}

/// A host change with its target read from the alert, ready to apply.
pub type Apply = Box<dyn FnOnce(&mut dyn Executor) -> Outcome>;

/// An action that changes the host through the executor.
pub trait HostChange {
    /// Reads what it acts on from the alert; the reason when the alert
    /// has none (the step is then skipped, not failed).
    fn resolve(&self, ctx: &AlertContext) -> Result<Apply, String>;
    /// Whether it adds a kernel block (bounded by `max_concurrent_blocks`).
    fn adds_block(&self) -> bool {
        false
    }
}

/// The table: one line per action, `Variant(module::Type)`, where the
/// module declares `SPEC` and the type implements [`Act`]. It makes the
/// step's serde shape (`action: <name>` beside its keys, kept in
/// response.json) and [`ACTIONS`].
macro_rules! actions {
    ($($variant:ident($module:ident::$ty:ident)),+ $(,)?) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "action", rename_all = "snake_case")]
        pub enum StepAction {
            $($variant($module::$ty)),+
        }

        /// Every action, in the order error messages list them.
        pub const ACTIONS: &[&Spec] = &[$(&$module::SPEC),+];

        impl StepAction {
            pub fn spec(&self) -> &'static Spec {
                match self {
                    $(StepAction::$variant(_) => &$module::SPEC),+
                }
            }

            pub fn act(&self) -> &dyn Act {
                match self {
                    $(StepAction::$variant(a) => a),+
                }
            }
        }
    };
}

actions! {
    BlockIp(block_ip::BlockIp),
    IsolateHost(isolate_host::IsolateHost),
    KillProcess(kill_process::KillProcess),
    QuarantineFile(quarantine_file::QuarantineFile),
    Notify(notify::Notify),
    RequireApproval(require_approval::RequireApproval),
}

impl StepAction {
    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// The inverse each step derives, used by rollback.
    pub fn inverse(&self) -> &'static str {
        self.spec().inverse
    }

    /// Whether the step changes the host (and so obeys mode and rate limits).
    pub fn enforces(&self) -> bool {
        matches!(self.act().effect(), Effect::Change(_))
    }
}

/// The action called `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    ACTIONS.iter().copied().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::response::playbook;

    /// One valid step per action, as a playbook would write it.
    fn example(name: &str) -> &'static str {
        match name {
            "block_ip" => "action: block_ip\n    target: source\n    ttl: 1h",
            "isolate_host" => "action: isolate_host\n    ttl: 1h",
            "kill_process" => "action: kill_process\n    allow_protected: [/usr/local/bin/agent]",
            "quarantine_file" => "action: quarantine_file",
            "notify" => "action: notify\n    message: hi",
            "require_approval" => "action: require_approval\n    timeout: 5m\n    on_timeout: deny",
            other => panic!("add an example step for {other}"),
        }
    }

    #[test]
    fn each_action_parses_under_its_name_and_keeps_it_in_saved_state() {
        for spec in ACTIONS {
            let text = format!(
                "version: 1\nname: t\ntrigger:\n  techniques: [T1046]\nsteps:\n  - {}\n  - action: notify\n    message: end\n",
                example(spec.name)
            );
            let p = playbook::parse(&text, Path::new("t.yaml"))
                .unwrap_or_else(|e| panic!("{}: {e:?}", spec.name));
            let action = &p.steps[0].action;
            assert_eq!(action.name(), spec.name);
            assert!(!action.inverse().is_empty());
            let v = serde_json::to_value(action).expect("serialise");
            assert_eq!(v["action"], spec.name);
            let back: StepAction = serde_json::from_value(v).expect("deserialise");
            assert_eq!(&back, action);
        }
    }

    #[test]
    fn every_action_is_documented_with_its_keys() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/playbooks.md"),
        )
        .expect("docs/playbooks.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split(" | ").collect())
            .collect();
        for spec in ACTIONS {
            let row = rows
                .iter()
                .find(|r| r[0] == format!("| `{}`", spec.name))
                .unwrap_or_else(|| panic!("docs/playbooks.md has no row for {}", spec.name));
            for key in spec.keys {
                assert!(
                    row[1].contains(&format!("`{key}")),
                    "{}: key {key} not documented",
                    spec.name
                );
            }
            if spec.keys.is_empty() {
                assert_eq!(row[1], "—", "{}", spec.name);
            }
        }
        for r in &rows {
            let name = r[0].trim_start_matches("| `").trim_end_matches('`');
            assert!(
                find(name).is_some(),
                "docs/playbooks.md documents unknown action {name}"
            );
        }
    }
}
