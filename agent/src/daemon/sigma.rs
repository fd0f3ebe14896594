//! Sigma rules in the running agent: loaded at start (bad rule files stop
//! start-up, like bad playbooks), swapped in on SIGHUP only when the new
//! set has no errors, and counted in `agent_start` and the metrics.

use std::sync::Arc;

use super::agent::Agent;
use super::DaemonError;
use crate::config::Config;
use crate::detect::sigma::fields::Users;
use crate::detect::sigma::rules::RuleSet;
use crate::record::SigmaRuleCounts;

/// A compiled rule set and the user names `User` is matched against.
pub type Loaded = (Arc<RuleSet>, Arc<Users>);

/// The rules of `detect.sigma.dirs`, compiled; None when none are configured.
pub fn load_at_start(cfg: &Config) -> Result<Option<Loaded>, DaemonError> {
    if cfg.detect.sigma.dirs.is_empty() {
        return Ok(None);
    }
    let set = crate::rules::load(&cfg.detect.sigma.dirs);
    if !set.is_good() {
        let lines: Vec<String> = set.errors.iter().map(|t| t.to_string()).collect();
        return Err(DaemonError::Sigma(lines.join("\n")));
    }
    log_counts(&set);
    Ok(Some((Arc::new(set), crate::rules::read_users())))
}

fn log_counts(set: &RuleSet) {
    tracing::info!(
        "{} Sigma rules loaded, {} skipped as unsupported (`vigil rules check` lists why)",
        set.loaded(),
        set.unsupported.len()
    );
}

pub fn counts(set: &RuleSet) -> SigmaRuleCounts {
    SigmaRuleCounts {
        loaded: set.loaded(),
        unsupported: set.unsupported.len(),
        errors: set.errors.len(),
    }
}

impl Agent {
    /// Hands a compiled set to the sigma detector and updates the gauges.
    pub fn install_sigma(&mut self, set: Arc<RuleSet>, users: Arc<Users>) {
        if let Some(m) = &self.metrics {
            m.sigma_rules
                .with_label_values(&["loaded"])
                .set(set.loaded() as i64);
            m.sigma_rules
                .with_label_values(&["skipped"])
                .set(set.skipped() as i64);
        }
        if let Some(d) = self.engine.as_mut().and_then(|e| e.sigma_mut()) {
            d.set_rules(set, users);
        }
    }

    /// Counts of the running set (zero when detection is off).
    pub fn sigma_counts(&mut self) -> SigmaRuleCounts {
        self.engine
            .as_mut()
            .and_then(|e| e.sigma_mut())
            .map(|d| counts(d.rules()))
            .unwrap_or_default()
    }

    /// SIGHUP: reads the rules again; a set with errors is refused and the
    /// running one stays. Returns the counts of the set now running.
    pub fn reload_sigma(&mut self) -> Result<SigmaRuleCounts, String> {
        let dirs = self.cfg.detect.sigma.dirs.clone();
        if dirs.is_empty() {
            return Ok(self.sigma_counts());
        }
        let set = crate::rules::load(&dirs);
        if !set.is_good() {
            let lines: Vec<String> = set.errors.iter().map(|t| t.to_string()).collect();
            let why = lines.join("\n");
            tracing::error!("Sigma rule reload refused; keeping the running set:\n{why}");
            return Err(why);
        }
        log_counts(&set);
        let c = counts(&set);
        self.install_sigma(Arc::new(set), crate::rules::read_users());
        Ok(c)
    }
}
