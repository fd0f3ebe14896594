//! What fusion reads off the agents' topics, reduced to the fields it uses,
//! and the indicators it keys evidence by. Every input is someone's: a field
//! that is missing or malformed drops the record (counted by the driver),
//! never the stage.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// RFC 3339 → Unix seconds; `None` when unparsable.
pub fn ts_s(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_micros() as f64 / 1e6)
}

/// Something evidence can name and a fleet can block or hunt: a remote
/// address, or an executable by content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Indicator {
    Ip(IpAddr),
    Sha256(String),
}

impl Indicator {
    /// The Kafka key and the `indicator` field agents read.
    pub fn key(&self) -> String {
        match self {
            Indicator::Ip(ip) => ip.to_string(),
            Indicator::Sha256(h) => format!("sha256:{h}"),
        }
    }

    pub fn parse(key: &str) -> Option<Indicator> {
        match key.strip_prefix("sha256:") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(Indicator::Sha256(h.to_ascii_lowercase()))
            }
            Some(_) => None,
            None => key.parse().ok().map(Indicator::Ip),
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Indicator::Ip(ip) => Some(*ip),
            Indicator::Sha256(_) => None,
        }
    }
}

/// An alert from `defense.alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertIn {
    pub id: String,
    pub ts: String,
    pub host: String,
    pub detector: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub techniques: Vec<TechniqueIn>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub entities: serde_json::Value,
    /// Count updates of an alert already seen carry no new evidence.
    #[serde(default)]
    pub update: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechniqueIn {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tactic: String,
}

impl AlertIn {
    pub fn ts_s(&self) -> Option<f64> {
        ts_s(&self.ts)
    }

    /// Severity `info` is evidence a host recorded (an exec from /tmp with
    /// no second signal), not an alert: it is no sighting and makes no
    /// host suspect, or one build tree would spread across the fleet.
    pub fn is_evidence(&self) -> bool {
        self.severity == "info"
    }

    fn address(&self, field: &str) -> Option<IpAddr> {
        self.entities.get(field)?.as_str()?.parse().ok()
    }

    pub fn src_ip(&self) -> Option<IpAddr> {
        self.address("src_ip")
    }

    pub fn dst_ip(&self) -> Option<IpAddr> {
        self.address("dst_ip")
    }

    pub fn dst_port(&self) -> Option<u16> {
        self.entities
            .get("dst_port")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    }

    /// The indicators the alert names: the addresses in its entities and
    /// the executable's SHA-256 (agents add it to process alerts). Which of
    /// them are the fleet's own is for the allowlist to say.
    pub fn indicators(&self) -> BTreeSet<Indicator> {
        let mut out: BTreeSet<Indicator> = [self.src_ip(), self.dst_ip()]
            .into_iter()
            .flatten()
            .map(Indicator::Ip)
            .collect();
        if let Some(h) = self
            .entities
            .get("sha256")
            .and_then(|v| v.as_str())
            .and_then(|h| Indicator::parse(&format!("sha256:{h}")))
        {
            out.insert(h);
        }
        out
    }

    pub fn technique_ids(&self) -> Vec<String> {
        self.techniques.iter().map(|t| t.id.clone()).collect()
    }
}

/// A `net_connect` telemetry record from `security.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectIn {
    pub ts: String,
    pub host: String,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    #[serde(default)]
    pub exe: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
}

/// One host in `fleet.inventory` (compacted, keyed by host name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryIn {
    pub host: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub ts: String,
}

/// An `action` or `decision` record from `defense.actions`, for the
/// incident's list of what was done and what waits for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionIn {
    pub kind: String,
    pub id: String,
    pub ts: String,
    pub host: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub incident: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indicators_are_keyed_and_parsed_back() {
        let ip = Indicator::parse("203.0.113.9").expect("ip");
        assert_eq!(ip.key(), "203.0.113.9");
        let h = "ab".repeat(32);
        let sha = Indicator::parse(&format!("sha256:{}", h.to_uppercase())).expect("sha");
        assert_eq!(sha.key(), format!("sha256:{h}"));
        assert_eq!(Indicator::parse("sha256:zz"), None);
        assert_eq!(Indicator::parse("not an address"), None);
    }

    #[test]
    fn an_alert_names_its_addresses_and_executable() {
        let a: AlertIn = serde_json::from_value(serde_json::json!({
            "id": "a1", "ts": "2026-12-01T10:00:00Z", "host": "h1", "detector": "process",
            "entities": {"src_ip": "10.0.0.1", "dst_ip": "203.0.113.9", "sha256": "cd".repeat(32),
                          "dst_port": 443}
        }))
        .expect("alert");
        let keys: Vec<String> = a.indicators().iter().map(Indicator::key).collect();
        assert_eq!(
            keys,
            [
                "10.0.0.1".to_string(),
                "203.0.113.9".to_string(),
                format!("sha256:{}", "cd".repeat(32))
            ]
        );
        assert_eq!(a.dst_port(), Some(443));
        assert_eq!(a.ts_s(), Some(1_796_119_200.0));
    }

    #[test]
    fn hostile_fields_are_dropped_not_trusted() {
        let a: AlertIn = serde_json::from_value(serde_json::json!({
            "id": "a1", "ts": "yesterday", "host": "h1", "detector": "scan",
            "entities": {"src_ip": 7, "dst_ip": "999.1.1.1", "sha256": "../../etc", "dst_port": 70000}
        }))
        .expect("alert");
        assert!(a.indicators().is_empty());
        assert_eq!(a.dst_port(), None);
        assert_eq!(a.ts_s(), None);
    }
}
