//! The `detect:` section of the config: every detector's thresholds, with
//! the documented defaults (docs/detectors.md), and the engine built from
//! it through the registry (a detector's section is keyed by its name).

use serde::{Deserialize, Serialize};

use super::anomaly::AnomalyConfig;
use super::beacon::BeaconConfig;
use super::brute_force::BruteForceConfig;
use super::exfil::ExfilConfig;
use super::lateral::LateralConfig;
use super::process::ProcessConfig;
use super::scan::ScanConfig;
use super::sigma::SigmaConfig;
use super::{registry, Engine};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Run the detectors at all.
    pub enabled: bool,
    /// Seconds during which repeats of one attack fold into one alert.
    pub dedup_window_s: f64,
    /// Seconds between re-emissions of a folded alert with its new count.
    pub update_interval_s: f64,
    pub brute_force: BruteForceConfig,
    pub scan: ScanConfig,
    pub beacon: BeaconConfig,
    pub exfil: ExfilConfig,
    pub lateral: LateralConfig,
    pub process: ProcessConfig,
    pub anomaly: AnomalyConfig,
    pub sigma: SigmaConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            dedup_window_s: 600.0,
            update_interval_s: 30.0,
            brute_force: BruteForceConfig::default(),
            scan: ScanConfig::default(),
            beacon: BeaconConfig::default(),
            exfil: ExfilConfig::default(),
            lateral: LateralConfig::default(),
            process: ProcessConfig::default(),
            anomaly: AnomalyConfig::default(),
            sigma: SigmaConfig::default(),
        }
    }
}

pub fn engine(cfg: &DetectConfig) -> Option<Engine> {
    if !cfg.enabled {
        return None;
    }
    let mut e = Engine::new(registry::build_all(cfg));
    e.dedup_window_s = cfg.dedup_window_s;
    e.update_interval_s = cfg.update_interval_s;
    Some(e)
}
