//! Synthetic data sets with planted anomalies and the AUC that scores a
//! detector on them (tests, benches, and the side-by-side with
//! scikit-learn).

use ndarray::Array2;

use super::Rng;

/// Area under the ROC curve of scores against labels (true = anomaly).
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[a]
            .partial_cmp(&scores[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        // Average ranks over ties.
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            if labels[idx[k]] {
                rank_sum += avg;
                pos += 1.0;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// A planted-outlier dataset: `n` Gaussian inliers and `k` outliers shifted
/// far along random features (deterministic for `seed`).
pub fn planted(n: usize, k: usize, dims: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    planted_with_shift(n, k, dims, seed, 6.0)
}

/// As [`planted`], with outliers shifted by `shift` standard deviations.
pub fn planted_with_shift(
    n: usize,
    k: usize,
    dims: usize,
    seed: u64,
    shift: f64,
) -> (Array2<f64>, Vec<bool>) {
    let mut rng = Rng::new(seed);
    let mut gauss = || {
        let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let mut data = Array2::<f64>::zeros((n + k, dims));
    let mut labels = vec![false; n + k];
    for i in 0..n + k {
        for j in 0..dims {
            data[[i, j]] = gauss();
        }
        if i >= n {
            labels[i] = true;
            for j in 0..dims {
                if j % 3 == i % 3 {
                    data[[i, j]] += shift;
                }
            }
        }
    }
    (data, labels)
}

/// Standard normal draws (Box-Muller) from `rng`.
fn gauss(rng: &mut Rng) -> f64 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Correlated features: inliers share four latent factors (feature j
/// follows factor j mod 4 with correlation 0.8 between features of one
/// factor); the `k` anomalies have the same per-feature spread but each
/// feature draws its own factor, so only the broken correlation betrays
/// them.
pub fn correlated(n: usize, k: usize, dims: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    let mut rng = Rng::new(seed);
    let (load, noise) = (0.8f64.sqrt(), 0.2f64.sqrt());
    let mut data = Array2::<f64>::zeros((n + k, dims));
    let mut labels = vec![false; n + k];
    for i in 0..n + k {
        let factors: [f64; 4] = std::array::from_fn(|_| gauss(&mut rng));
        for j in 0..dims {
            let f = if i < n {
                factors[j % 4]
            } else {
                gauss(&mut rng)
            };
            data[[i, j]] = load * f + noise * gauss(&mut rng);
        }
        labels[i] = i >= n;
    }
    (data, labels)
}

/// Clustered anomalies: `k` points packed tightly (σ = 0.2) around one
/// spot 3 σ out on a quarter of the features, which masks them from
/// detectors that only see isolated points.
pub fn clustered(n: usize, k: usize, dims: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    let mut rng = Rng::new(seed);
    let mut data = Array2::<f64>::zeros((n + k, dims));
    let mut labels = vec![false; n + k];
    for i in 0..n + k {
        for j in 0..dims {
            data[[i, j]] = if i < n {
                gauss(&mut rng)
            } else {
                let centre = if j % 4 == 0 { 3.0 } else { 0.0 };
                centre + 0.2 * gauss(&mut rng)
            };
        }
        labels[i] = i >= n;
    }
    (data, labels)
}
