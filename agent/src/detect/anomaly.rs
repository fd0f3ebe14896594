//! Behavioural anomaly over the 16 flow features with an Isolation Forest:
//! learn a per-host baseline, then score every flow. Alerts carry the score,
//! its percentile among the training scores and the features that drove it
//! (largest robust z-scores against the baseline). The model is retrained
//! periodically on recent flows it did not flag, and persisted by the daemon
//! through `take_state`/`load_state` (this module does no I/O); a loaded
//! model is validated before it scores anything.

use std::collections::VecDeque;

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::iforest::IsolationForest;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::Body;
use crate::record::FEATURE_NAMES;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Flows collected before the first model is trained.
    pub learn_flows: usize,
    /// Train anyway after this many seconds if `min_train` flows were seen.
    pub max_learn_s: f64,
    pub min_train: usize,
    /// Seconds between retrainings on recent unflagged flows.
    pub retrain_interval_s: f64,
    pub n_trees: usize,
    pub max_samples: usize,
    pub seed: u64,
    /// Alert when the score is at or above this percentile of training
    /// scores and at or above `min_score`.
    pub threshold_percentile: f64,
    pub min_score: f64,
    /// Recent unflagged flows kept for retraining.
    pub reservoir: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            learn_flows: 4096,
            max_learn_s: 3600.0,
            min_train: 256,
            retrain_interval_s: 86_400.0,
            n_trees: 100,
            max_samples: 256,
            seed: 1,
            threshold_percentile: 99.5,
            min_score: 0.62,
            reservoir: 16_384,
        }
    }
}

/// What is persisted under the state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub forest: IsolationForest,
    /// Training scores, sorted, for percentiles.
    pub train_scores: Vec<f64>,
    pub medians: Vec<f64>,
    /// Scaled MADs (1.4826·MAD), floored to avoid division by zero.
    pub mads: Vec<f64>,
    pub trained_at: f64,
    pub trained_on: usize,
}

pub const STATE_FILE: &str = "iforest.json";

pub struct AnomalyDetector {
    cfg: AnomalyConfig,
    learn: Vec<[f64; 16]>,
    learn_started: Option<f64>,
    recent: VecDeque<[f64; 16]>,
    pub model: Option<Model>,
    dirty: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn train(rows: &[[f64; 16]], cfg: &AnomalyConfig, now: f64) -> Model {
    let mut data = Array2::<f64>::zeros((rows.len(), 16));
    for (mut row, x) in data.rows_mut().into_iter().zip(rows) {
        row.assign(&ArrayView1::from(x));
    }
    train_matrix(data.view(), cfg, now)
}

/// A model on any number of features (one row per vector), with the
/// agent's settings from `cfg`: `vigil model train` and the agent share it.
pub fn train_matrix(data: ArrayView2<f64>, cfg: &AnomalyConfig, now: f64) -> Model {
    let forest = IsolationForest::fit(data, cfg.n_trees, cfg.max_samples, cfg.seed);
    let mut train_scores = forest.score_all(data);
    train_scores.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let (mut medians, mut mads) = (Vec::new(), Vec::new());
    for col in data.columns() {
        let mut col = col.to_vec();
        let m = median(&mut col);
        let mut dev: Vec<f64> = col.iter().map(|x| (x - m).abs()).collect();
        medians.push(m);
        mads.push((1.4826 * median(&mut dev)).max(1e-6));
    }
    Model {
        forest,
        train_scores,
        medians,
        mads,
        trained_at: now,
        trained_on: data.nrows(),
    }
}

impl Model {
    /// Checks a loaded model before it scores anything: the forest (see
    /// [`IsolationForest::validate`]), 16 finite medians and positive
    /// MADs, and sorted, finite training scores.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_for(16)
    }

    /// As [`Model::validate`], for a model on `features` features.
    pub fn validate_for(&self, features: usize) -> Result<(), String> {
        self.forest.validate(features)?;
        if self.medians.len() != features || self.mads.len() != features {
            return Err(format!("model is not for {features} features"));
        }
        if self.medians.iter().any(|m| !m.is_finite()) {
            return Err("a median is not finite".into());
        }
        if self.mads.iter().any(|m| !m.is_finite() || *m <= 0.0) {
            return Err("a MAD is not a positive number".into());
        }
        if self.train_scores.is_empty() || self.train_scores.len() > 1 << 24 {
            return Err(format!("{} training scores", self.train_scores.len()));
        }
        if self.train_scores.iter().any(|s| !s.is_finite()) {
            return Err("a training score is not finite".into());
        }
        if self.train_scores.windows(2).any(|w| w[0] > w[1]) {
            return Err("training scores are not sorted".into());
        }
        if !self.trained_at.is_finite() {
            return Err("trained_at is not finite".into());
        }
        Ok(())
    }

    pub fn percentile(&self, s: f64) -> f64 {
        let below = self.train_scores.partition_point(|&t| t < s);
        100.0 * below as f64 / self.train_scores.len().max(1) as f64
    }

    /// The three features furthest from the baseline, as (name, value, z).
    pub fn drivers(&self, x: &[f64; 16]) -> Vec<(&'static str, f64, f64)> {
        let mut z: Vec<(usize, f64)> = (0..16)
            .map(|j| (j, (x[j] - self.medians[j]) / self.mads[j]))
            .collect();
        z.sort_by(|a, b| {
            b.1.abs()
                .partial_cmp(&a.1.abs())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        z.into_iter()
            .take(3)
            .map(|(j, zj)| (FEATURE_NAMES[j], x[j], (zj * 100.0).round() / 100.0))
            .collect()
    }
}

impl AnomalyDetector {
    pub fn new(cfg: AnomalyConfig) -> Self {
        AnomalyDetector {
            cfg,
            learn: Vec::new(),
            learn_started: None,
            recent: VecDeque::new(),
            model: None,
            dirty: false,
        }
    }

    fn retrain(&mut self, rows: &[[f64; 16]], now: f64) {
        self.model = Some(train(rows, &self.cfg, now));
        self.dirty = true;
    }
}

/// A technique suggested by what drove the anomaly.
fn technique_for(drivers: &[(&'static str, f64, f64)], x: &[f64; 16]) -> &'static str {
    let top: Vec<&str> = drivers.iter().map(|d| d.0).collect();
    if top
        .iter()
        .any(|n| *n == "syn_fraction" || *n == "rst_fraction")
    {
        "T1046"
    } else if x[5] > 0.8
        && top
            .iter()
            .any(|n| n.starts_with("bytes_out") || *n == "upload_ratio")
    {
        "T1048"
    } else {
        "T1071"
    }
}

impl Declared for AnomalyDetector {
    const NAME: &'static str = "anomaly";
    const TECHNIQUES: &'static [&'static str] = &["T1046", "T1048", "T1071"];

    fn build(cfg: &DetectConfig, _shared: &Shared) -> Self {
        Self::new(cfg.anomaly.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for AnomalyDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        let Body::Flow(f) = body else { return };
        let x = f.features;
        let Some(model) = &self.model else {
            let started = *self.learn_started.get_or_insert(now);
            self.learn.push(x);
            let enough = self.learn.len() >= self.cfg.learn_flows
                || (now - started >= self.cfg.max_learn_s
                    && self.learn.len() >= self.cfg.min_train);
            if enough {
                let rows = std::mem::take(&mut self.learn);
                self.retrain(&rows, now);
            }
            return;
        };
        // Most flows are normal: stop scoring once the score cannot reach
        // the alert floor (exact, see score_at_least).
        let scored = model.forest.score_at_least(&x, self.cfg.min_score);
        let s = scored.unwrap_or(0.0);
        let pct = if scored.is_some() {
            model.percentile(s)
        } else {
            0.0
        };
        if scored.is_some() && pct >= self.cfg.threshold_percentile {
            let drivers = model.drivers(&x);
            let technique = technique_for(&drivers, &x);
            let severity = if s >= 0.75 {
                Severity::Medium
            } else {
                Severity::Low
            };
            out.push(Finding {
                detector: Self::NAME,
                key: format!("{}|{}|{}", f.exe.as_deref().unwrap_or("?"), f.dst_ip, f.dst_port),
                severity,
                confidence: ((s - 0.5) * 2.0).clamp(0.0, 1.0),
                techniques: vec![technique],
                summary: format!(
                    "unusual {} flow {}:{} → {}:{} (score {:.3}, above {:.1}% of the baseline; driven by {})",
                    f.proto,
                    f.src_ip,
                    f.src_port,
                    f.dst_ip,
                    f.dst_port,
                    s,
                    pct,
                    drivers.iter().map(|d| d.0).collect::<Vec<_>>().join(", ")
                ),
                entities: serde_json::json!({"pid": f.pid, "exe": f.exe, "src_ip": f.src_ip, "dst_ip": f.dst_ip, "dst_port": f.dst_port}),
                evidence: serde_json::json!({
                    "score": s, "percentile": pct,
                    "drivers": drivers.iter().map(|(n, v, z)| serde_json::json!({"feature": n, "value": v, "robust_z": z})).collect::<Vec<_>>(),
                    "trained_on": model.trained_on,
                }),
            });
        } else {
            self.recent.push_back(x);
            while self.recent.len() > self.cfg.reservoir {
                self.recent.pop_front();
            }
        }
        let due = now - model.trained_at >= self.cfg.retrain_interval_s;
        if due && self.recent.len() >= self.cfg.min_train {
            let rows: Vec<[f64; 16]> = self.recent.iter().copied().collect();
            self.retrain(&rows, now);
        }
    }

    fn take_state(&mut self) -> Option<(&'static str, Vec<u8>)> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let m = self.model.as_ref()?;
        serde_json::to_vec(m).ok().map(|b| (STATE_FILE, b))
    }

    fn load_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        if name != STATE_FILE {
            return Ok(());
        }
        let m: Model = serde_json::from_slice(bytes).map_err(|e| format!("{STATE_FILE}: {e}"))?;
        m.validate().map_err(|e| format!("{STATE_FILE}: {e}"))?;
        self.model = Some(m);
        Ok(())
    }

    fn state_files(&self) -> &'static [&'static str] {
        &[STATE_FILE]
    }
}

/// A flow record carrying only `x` (all the detector reads), for tests
/// here and of the daemon's baseline persistence.
#[cfg(test)]
pub fn flow_with_features(x: [f64; 16]) -> Body {
    Body::Flow(Box::new(crate::record::Flow {
        community_id: String::new(),
        proto: "tcp",
        direction: "outbound",
        src_ip: "10.0.0.1".parse().expect("ip"),
        src_port: 1,
        dst_ip: "10.0.0.2".parse().expect("ip"),
        dst_port: 443,
        pid: None,
        comm: None,
        exe: None,
        packets_out: 0,
        packets_in: 0,
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0.0,
        syn: 0,
        rst: 0,
        fin: 0,
        end_reason: "close",
        features: x,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::iforest::{planted, Rng};

    fn flow(x: [f64; 16]) -> Body {
        flow_with_features(x)
    }

    fn row(data: &Array2<f64>, i: usize) -> [f64; 16] {
        let mut x = [0.0; 16];
        for j in 0..16 {
            x[j] = data[[i, j]];
        }
        x
    }

    #[test]
    fn learns_then_flags_outliers_with_drivers_and_persists() {
        let cfg = AnomalyConfig {
            learn_flows: 1000,
            ..Default::default()
        };
        let mut d = AnomalyDetector::new(cfg.clone());
        let (data, _) = planted(1200, 0, 16, 5);
        let mut out = Vec::new();
        for i in 0..1000 {
            d.on_record(i as f64, &flow(row(&data, i)), &mut out);
        }
        assert!(out.is_empty(), "no alerts while learning");
        let (_, bytes) = d.take_state().expect("trained model to persist");
        // Inliers are mostly quiet; a planted outlier fires with drivers.
        for i in 1000..1200 {
            d.on_record(2000.0, &flow(row(&data, i)), &mut out);
        }
        assert!(out.len() <= 4, "{} inliers flagged", out.len());
        out.clear();
        let mut odd = row(&data, 1000);
        for j in [0, 3, 6, 9, 12] {
            odd[j] += 8.0;
        }
        odd[14] += 12.0;
        odd[15] += 12.0;
        d.on_record(2001.0, &flow(odd), &mut out);
        assert_eq!(out.len(), 1);
        let ev = &out[0].evidence;
        assert!(ev["percentile"].as_f64().unwrap_or(0.0) >= 99.5, "{ev}");
        assert!(ev["drivers"].to_string().contains("syn_fraction"), "{ev}");
        assert_eq!(out[0].techniques, vec!["T1046"]);
        // A restarted agent reloads the same model.
        let mut again = AnomalyDetector::new(cfg);
        again.load_state(STATE_FILE, &bytes).expect("reload");
        assert!(again.model == d.model, "reloaded model differs");
        assert!(again.load_state(STATE_FILE, b"{garbage").is_err());
        let _ = Rng::new(0);
    }

    #[test]
    fn a_loaded_model_that_fails_its_checks_is_refused() {
        let cfg = AnomalyConfig {
            learn_flows: 300,
            n_trees: 10,
            ..Default::default()
        };
        let mut d = AnomalyDetector::new(cfg.clone());
        let (data, _) = planted(300, 0, 16, 7);
        let mut out = Vec::new();
        for i in 0..300 {
            d.on_record(i as f64, &flow(row(&data, i)), &mut out);
        }
        let (_, bytes) = d.take_state().expect("trained");
        let good: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let mut fresh = AnomalyDetector::new(cfg.clone());
        fresh
            .load_state(STATE_FILE, &bytes)
            .expect("a good model loads");
        type Edit = fn(&mut serde_json::Value);
        let cases: Vec<(&str, Edit)> = vec![
            ("short medians", |v| v["medians"] = serde_json::json!([0.0])),
            ("zero mad", |v| v["mads"][3] = 0.0.into()),
            ("unsorted scores", |v| {
                v["train_scores"] = serde_json::json!([0.9, 0.1]);
            }),
            ("no scores", |v| v["train_scores"] = serde_json::json!([])),
            ("bad child", |v| {
                let nodes = v["forest"]["trees"][0]["nodes"]
                    .as_array_mut()
                    .expect("nodes");
                let i = nodes
                    .iter()
                    .position(|n| n.get("Split").is_some())
                    .expect("split");
                nodes[i]["Split"]["right"] = (i as u64).into();
            }),
        ];
        for (what, edit) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let bytes = serde_json::to_vec(&v).expect("json");
            let mut d = AnomalyDetector::new(cfg.clone());
            let e = d.load_state(STATE_FILE, &bytes).expect_err(what);
            assert!(e.contains(STATE_FILE), "{what}: {e}");
            assert!(d.model.is_none(), "{what}: a refused model was kept");
        }
    }

    /// One finding kind, whose technique follows what drove it: SYN/RST
    /// fractions, upload-heavy volume, or anything else.
    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut d = AnomalyDetector::new(AnomalyConfig {
            learn_flows: 1000,
            ..Default::default()
        });
        let (data, _) = planted(1000, 0, 16, 5);
        let mut out = Vec::new();
        for i in 0..1000 {
            d.on_record(i as f64, &flow(row(&data, i)), &mut out);
        }
        assert!(out.is_empty(), "no alerts while learning");
        let base = row(&data, 0);
        let mut scan = base;
        scan[14] += 20.0;
        scan[15] += 20.0;
        let mut upload = base;
        let mut other = base;
        for j in [0, 1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13] {
            scan[j] += 8.0;
            upload[j] += 8.0;
            other[j] += 12.0;
        }
        upload[3] += 20.0;
        upload[5] = 20.0;
        other[5] = 0.0;
        for x in [scan, upload, other] {
            let before = out.len();
            d.on_record(2000.0, &flow(x), &mut out);
            assert_eq!(out.len(), before + 1, "an outlier was not flagged");
        }
        out
    }
}
