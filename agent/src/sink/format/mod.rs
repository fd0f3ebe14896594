//! Output formats: each sink writes `native` (docs/events.md), OCSF 1.5.0
//! or ECS 8.11. The translations are pure functions of the typed records
//! ([`super::Output`]); records a format has no class or category for
//! (agent status, decisions, notifications, fleet commands) are not
//! written by a sink in that format, and the sink counts them.

pub mod ecs;
pub mod native;
pub mod ocsf;

use serde::{Deserialize, Serialize};

use super::Output;

/// What a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The agent's own records (docs/events.md).
    #[default]
    Native,
    /// OCSF 1.5.0 events.
    Ocsf,
    /// Elastic Common Schema 8.11 documents.
    Ecs,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
        }
    }

    /// `out` in this format, as one JSON line; None when the format has no
    /// mapping for its kind. `native` is the record's native line.
    pub fn render(self, out: &Output<'_>, native: &str) -> Option<String> {
        match self {
            Format::Native => Some(native.to_string()),
            // serde_json's writer, not Display (which goes through fmt).
            Format::Ocsf => ocsf::translate(out).and_then(|v| serde_json::to_string(&v).ok()),
            Format::Ecs => ecs::translate(out).and_then(|v| serde_json::to_string(&v).ok()),
        }
    }
}

impl Format {
    /// Where the format keeps a record's id: OCSF `metadata.uid`, ECS
    /// `event.id` (None for native, whose records have `id`).
    fn id_slot(self) -> Option<(&'static str, &'static str)> {
        match self {
            Format::Native => None,
            Format::Ocsf => Some(("metadata", "uid")),
            Format::Ecs => Some(("event", "id")),
        }
    }

    /// `out` in this format with an id, for consumers that drop duplicates
    /// (Kafka): the record's own (alerts, actions), else a new one. None
    /// for native and for kinds the format does not map.
    pub fn render_with_id(self, out: &Output<'_>) -> Option<(String, String)> {
        let (object, key) = self.id_slot()?;
        let mut v = match self {
            Format::Ocsf => ocsf::translate(out)?,
            _ => ecs::translate(out)?,
        };
        let slot = v.get_mut(object)?.as_object_mut()?;
        let id = match slot.get(key).and_then(|x| x.as_str()) {
            Some(id) => id.to_string(),
            None => {
                let id = crate::util::id::new_id();
                slot.insert(key.into(), id.clone().into());
                id
            }
        };
        Some((serde_json::to_string(&v).ok()?, id))
    }

    /// The id [`Self::render_with_id`] put in a line of this format.
    pub fn id_in(self, line: &[u8]) -> Option<String> {
        let (object, key) = self.id_slot()?;
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        v.get(object)?.get(key)?.as_str().map(str::to_string)
    }
}

/// The product, as both formats name it.
pub const PRODUCT: &str = "Vigil";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the epoch of an RFC 3339 time; 0 when unparsable
/// (every time the agent writes is its own, so this does not happen).
pub fn epoch_ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// The last path component.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// An ATT&CK tactic's id and display name from its short name (the first
/// tactic our table lists for a technique).
pub fn tactic(short: &str) -> Option<(&'static str, &'static str)> {
    Some(match short {
        "reconnaissance" => ("TA0043", "Reconnaissance"),
        "resource-development" => ("TA0042", "Resource Development"),
        "initial-access" => ("TA0001", "Initial Access"),
        "execution" => ("TA0002", "Execution"),
        "persistence" => ("TA0003", "Persistence"),
        "privilege-escalation" => ("TA0004", "Privilege Escalation"),
        "defense-evasion" => ("TA0005", "Defense Evasion"),
        "credential-access" => ("TA0006", "Credential Access"),
        "discovery" => ("TA0007", "Discovery"),
        "lateral-movement" => ("TA0008", "Lateral Movement"),
        "collection" => ("TA0009", "Collection"),
        "command-and-control" => ("TA0011", "Command and Control"),
        "exfiltration" => ("TA0010", "Exfiltration"),
        "impact" => ("TA0040", "Impact"),
        _ => return None,
    })
}

/// A record field that names an address, as text.
pub fn entity_str<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
}

pub fn entity_u64(v: &serde_json::Value, key: &str) -> Option<u64> {
    v.get(key).and_then(|x| x.as_u64())
}

#[cfg(test)]
mod golden;
#[cfg(test)]
pub mod samples;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tactic_in_the_attack_table_has_an_id() {
        let table = include_str!("../../detect/attack-enterprise.tsv");
        for line in table
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            for short in line.split('\t').nth(2).unwrap_or("").split(',') {
                assert!(tactic(short).is_some(), "{short} in {line}");
            }
        }
    }

    #[test]
    fn times_parse() {
        assert_eq!(
            epoch_ms("2026-12-01T10:00:00.123456789Z"),
            1_796_119_200_123
        );
        assert_eq!(epoch_ms("garbage"), 0);
    }
}
