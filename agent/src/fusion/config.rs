//! The `fusion:` section of the config: decision rules with trust weights,
//! the allowlist, TTLs, rate limits, chain windows and topic names. The
//! Kafka brokers and the fleet key come from the `kafka:` section, shared
//! with the agents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `simulate` publishes decisions as `would_block`, which agents record
/// and never enforce; `enforce` publishes `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMode {
    Simulate,
    Enforce,
}

/// One way evidence becomes a fleet-wide decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Distinct hosts needed, each counted with its detector's trust weight.
    pub min_hosts: f64,
    /// Sightings below this confidence do not count.
    pub min_confidence: f64,
    /// Detectors whose alerts count; empty means every detector.
    pub detectors: Vec<String>,
    /// Sightings older than this (seconds before now) do not count.
    pub window_s: u64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            name: String::new(),
            min_hosts: 1.0,
            min_confidence: 0.0,
            detectors: Vec::new(),
            window_s: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionTopics {
    /// Alerts re-keyed by indicator (the repartition topic), and operators'
    /// signed unblock requests.
    pub sightings: String,
    /// Consensus state by indicator (compacted changelog).
    pub consensus_changelog: String,
    /// Connections from suspect hosts to fleet hosts' admin ports, keyed by
    /// the destination host (repartition topic).
    pub pending_links: String,
    /// Chain state by host (compacted changelog).
    pub chains_changelog: String,
    /// Alerts, actions, decisions and links for incident assembly, keyed
    /// `fleet` on one partition: one active incident stage at a time.
    pub incident_events: String,
    /// Incidents by id (compacted; the incident stage's state).
    pub incidents: String,
}

impl Default for FusionTopics {
    fn default() -> Self {
        FusionTopics {
            sightings: "fusion.sightings".into(),
            consensus_changelog: "fusion.consensus.changelog".into(),
            pending_links: "fusion.pending-links".into(),
            chains_changelog: "fusion.chains.changelog".into(),
            incident_events: "fusion.incident-events".into(),
            incidents: "fusion.incidents".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionConfig {
    /// `simulate` (default) or `enforce`.
    pub mode: FusionMode,
    /// Tried in order; the first that holds decides.
    pub rules: Vec<Rule>,
    /// Trust weight per detector (a missing detector weighs 1.0). The
    /// statistical baseline weighs nothing by default: an outlier alone
    /// never blocks a fleet.
    pub detector_weights: BTreeMap<String, f64>,
    /// TTL of a first decision; each recurrence after expiry doubles it.
    pub ttl_s: u64,
    /// Cap on a doubled TTL (the agents refuse longer ones).
    pub max_ttl_s: u64,
    /// Prefixes never decided on: own networks, resolvers, mirrors.
    /// Loopback, link-local, multicast and unspecified are always allowed.
    pub allowlist: Vec<String>,
    /// Decide on the fleet's own hosts (addresses from fleet.inventory).
    /// Off by default: one compromised host should be isolated by its own
    /// agent, not cut off from every other host.
    pub block_fleet_hosts: bool,
    /// Decisions published per minute; the excess is dropped and counted.
    pub max_decisions_per_minute: u32,
    /// Ports whose connection from a suspect host to another fleet host
    /// counts toward a chain (SSH, RDP, SMB, WinRM, …).
    pub admin_ports: Vec<u16>,
    /// A host stays suspect this long after an alert about it.
    pub suspect_window_s: u64,
    /// An alert on B links A→B when it follows A's connection within this.
    pub chain_window_s: u64,
    /// Alerts and links this close to an incident join it.
    pub incident_window_s: u64,
    /// Techniques seen before the group-overlap hint is shown.
    pub hint_min_techniques: usize,
    /// Seconds between expiry sweeps.
    pub tick_s: u64,
    /// Consumer group prefix; each stage joins `<prefix>.<stage>`.
    pub group_prefix: String,
    pub topics: FusionTopics,
}

impl Default for FusionConfig {
    fn default() -> Self {
        let deterministic = [
            "brute_force",
            "scan",
            "beacon",
            "exfil",
            "lateral",
            "process",
        ];
        FusionConfig {
            mode: FusionMode::Simulate,
            rules: vec![
                Rule {
                    name: "two-hosts".into(),
                    min_hosts: 2.0,
                    min_confidence: 0.0,
                    detectors: deterministic.iter().map(|d| d.to_string()).collect(),
                    window_s: 3600,
                },
                Rule {
                    name: "one-host-high-confidence".into(),
                    min_hosts: 1.0,
                    min_confidence: 0.9,
                    detectors: ["brute_force", "scan", "process"]
                        .iter()
                        .map(|d| d.to_string())
                        .collect(),
                    window_s: 3600,
                },
            ],
            detector_weights: [("anomaly".to_string(), 0.0)].into_iter().collect(),
            ttl_s: 4 * 3600,
            max_ttl_s: 7 * 24 * 3600,
            allowlist: Vec::new(),
            block_fleet_hosts: false,
            max_decisions_per_minute: 60,
            admin_ports: vec![22, 135, 139, 445, 3389, 5985, 5986],
            suspect_window_s: 3600,
            chain_window_s: 900,
            incident_window_s: 24 * 3600,
            hint_min_techniques: 8,
            tick_s: 5,
            group_prefix: "vigil-fusion".into(),
            topics: FusionTopics::default(),
        }
    }
}

impl FusionConfig {
    /// A problem with the section, named.
    pub fn problem(&self) -> Option<String> {
        for c in &self.allowlist {
            if let Err(e) = c.parse::<crate::enforce::cidr::Cidr>() {
                return Some(format!("fusion.allowlist: {e}"));
            }
        }
        if self.rules.is_empty() {
            return Some("fusion.rules: at least one rule is needed".into());
        }
        for r in &self.rules {
            if r.name.is_empty() {
                return Some("fusion.rules: every rule needs a name".into());
            }
            if r.min_hosts <= 0.0 || !r.min_hosts.is_finite() {
                return Some(format!(
                    "fusion.rules.{}: min_hosts must be positive",
                    r.name
                ));
            }
            if r.window_s == 0 {
                return Some(format!(
                    "fusion.rules.{}: window_s must be positive",
                    r.name
                ));
            }
        }
        if self.ttl_s == 0 || self.ttl_s > self.max_ttl_s {
            return Some("fusion.ttl_s must be positive and at most fusion.max_ttl_s".into());
        }
        if self
            .detector_weights
            .values()
            .any(|w| !w.is_finite() || *w < 0.0)
        {
            return Some("fusion.detector_weights must be finite and not negative".into());
        }
        None
    }

    /// The rules' version: decisions made under other rules get other ids.
    pub fn rule_version(&self) -> String {
        let text =
            serde_json::to_string(&(&self.rules, &self.detector_weights)).unwrap_or_default();
        crate::fusion::digest(&[text.as_bytes()])[..12].to_string()
    }

    pub fn weight(&self, detector: &str) -> f64 {
        self.detector_weights.get(detector).copied().unwrap_or(1.0)
    }
}
