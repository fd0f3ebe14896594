//! Isolation Forest (Liu, Ting & Zhou, ICDM 2008) on ndarray: seeded,
//! serializable, and faithful to the paper and to scikit-learn's defaults
//! (100 trees, ψ = min(256, n) samples without replacement, height limit
//! ⌈log₂ ψ⌉, split uniform in [min, max] of a random non-constant feature).

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

const EULER_GAMMA: f64 = 0.577_215_664_9;
/// Bounds a loaded forest must respect (far above what training makes).
const MAX_TREES: usize = 10_000;
const MAX_PSI: usize = 1 << 16;

/// Average path length of an unsuccessful BST search among n points.
pub fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Anomaly score for an expected path length with ψ samples per tree.
pub fn score_from_depth(mean_depth: f64, psi: usize) -> f64 {
    2f64.powf(-mean_depth / c(psi))
}

/// xoshiro256** seeded through splitmix64: small, fast, reproducible.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Node {
    Split {
        feature: u16,
        value: f64,
        left: u32,
        right: u32,
    },
    Leaf {
        size: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
}

/// A forest read from a file is checked before it is used: every split
/// names a feature the forest has and children after it in its tree, so
/// scoring can neither index out of range nor loop (found by fuzz/forest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "SavedForest")]
pub struct IsolationForest {
    trees: Vec<Tree>,
    psi: usize,
    features: usize,
    pub seed: u64,
    /// Scoring layout, rebuilt from `trees` after deserialization.
    #[serde(skip)]
    flat: std::sync::OnceLock<Flat>,
}

#[derive(Deserialize)]
struct SavedForest {
    trees: Vec<Tree>,
    psi: usize,
    features: usize,
    seed: u64,
}

impl TryFrom<SavedForest> for IsolationForest {
    type Error = String;

    fn try_from(f: SavedForest) -> Result<IsolationForest, String> {
        for (t, tree) in f.trees.iter().enumerate() {
            let n = tree.nodes.len();
            if n == 0 {
                return Err(format!("tree {t} has no nodes"));
            }
            for (i, node) in tree.nodes.iter().enumerate() {
                let Node::Split {
                    feature,
                    left,
                    right,
                    ..
                } = node
                else {
                    continue;
                };
                if *feature as usize >= f.features {
                    return Err(format!(
                        "tree {t} node {i} splits on feature {feature} of {}",
                        f.features
                    ));
                }
                // Children come after their parent (the order trees grow in).
                for child in [*left as usize, *right as usize] {
                    if child <= i || child >= n {
                        return Err(format!("tree {t} node {i} points to node {child} (of {n})"));
                    }
                }
            }
        }
        Ok(IsolationForest {
            trees: f.trees,
            psi: f.psi,
            features: f.features,
            seed: f.seed,
            flat: std::sync::OnceLock::new(),
        })
    }
}

impl PartialEq for IsolationForest {
    fn eq(&self, other: &Self) -> bool {
        self.trees == other.trees
            && self.psi == other.psi
            && self.features == other.features
            && self.seed == other.seed
    }
}

impl Tree {
    fn grow(
        data: &ArrayView2<f64>,
        rows: &mut [usize],
        depth: usize,
        limit: usize,
        rng: &mut Rng,
        nodes: &mut Vec<Node>,
    ) -> u32 {
        let id = nodes.len() as u32;
        nodes.push(Node::Leaf {
            size: rows.len() as u32,
        });
        if rows.len() <= 1 || depth >= limit {
            return id;
        }
        // Features whose values differ within this node.
        let mut candidates: Vec<(usize, f64, f64)> = Vec::new();
        for f in 0..data.ncols() {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in rows.iter() {
                let v = data[[r, f]];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                candidates.push((f, lo, hi));
            }
        }
        if candidates.is_empty() {
            return id;
        }
        let (feature, lo, hi) = candidates[rng.below(candidates.len())];
        let value = lo + rng.unit() * (hi - lo);
        // Partition rows: < value to the left.
        let mut i = 0;
        for j in 0..rows.len() {
            if data[[rows[j], feature]] < value {
                rows.swap(i, j);
                i += 1;
            }
        }
        let (l, r) = rows.split_at_mut(i);
        let left = Tree::grow(data, l, depth + 1, limit, rng, nodes);
        let right = Tree::grow(data, r, depth + 1, limit, rng, nodes);
        nodes[id as usize] = Node::Split {
            feature: feature as u16,
            value,
            left,
            right,
        };
        id
    }
}

/// Trees flattened for scoring: one array per field, leaves marked by
/// `LEAF` with their full path contribution (depth + c(size)) precomputed.
#[derive(Debug, Clone, Default)]
struct Flat {
    feature: Vec<u16>,
    value: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    roots: Vec<u32>,
}

const LEAF: u16 = u16::MAX;

impl Flat {
    fn build(trees: &[Tree]) -> Flat {
        let mut f = Flat::default();
        for t in trees {
            let base = f.feature.len() as u32;
            f.roots.push(base);
            // Depth of every node; parents come before their children.
            let mut depth = vec![0.0f64; t.nodes.len()];
            for (i, n) in t.nodes.iter().enumerate() {
                if let Node::Split { left, right, .. } = n {
                    depth[*left as usize] = depth[i] + 1.0;
                    depth[*right as usize] = depth[i] + 1.0;
                }
            }
            for (i, n) in t.nodes.iter().enumerate() {
                match n {
                    Node::Split {
                        feature,
                        value,
                        left,
                        right,
                    } => {
                        f.feature.push(*feature);
                        f.value.push(*value);
                        f.left.push(base + left);
                        f.right.push(base + right);
                    }
                    Node::Leaf { size } => {
                        f.feature.push(LEAF);
                        f.value.push(depth[i] + c(*size as usize));
                        f.left.push(0);
                        f.right.push(0);
                    }
                }
            }
        }
        f
    }

    fn total_path(&self, x: &[f64]) -> f64 {
        self.total_path_until(x, f64::INFINITY)
    }

    /// Sum of path lengths, stopping early once it exceeds `cap` (path
    /// lengths are never negative, so the final sum would too).
    fn total_path_until(&self, x: &[f64], cap: f64) -> f64 {
        let mut sum = 0.0;
        for &root in &self.roots {
            if sum > cap {
                return sum;
            }
            let mut id = root as usize;
            loop {
                let feat = self.feature[id];
                if feat == LEAF {
                    sum += self.value[id];
                    break;
                }
                id = if x[feat as usize] < self.value[id] {
                    self.left[id]
                } else {
                    self.right[id]
                } as usize;
            }
        }
        sum
    }
}

impl IsolationForest {
    /// Fits `n_trees` trees, each on min(256, n) rows drawn without replacement.
    pub fn fit(
        data: ArrayView2<f64>,
        n_trees: usize,
        max_samples: usize,
        seed: u64,
    ) -> IsolationForest {
        let n = data.nrows();
        let psi = max_samples.min(n).max(1);
        let limit = (psi as f64).log2().ceil() as usize;
        let mut rng = Rng::new(seed);
        let mut all: Vec<usize> = (0..n).collect();
        let trees = (0..n_trees)
            .map(|_| {
                // Partial Fisher-Yates: the first psi entries are the sample.
                for i in 0..psi {
                    let j = i + rng.below(n - i);
                    all.swap(i, j);
                }
                let mut rows = all[..psi].to_vec();
                let mut nodes = Vec::new();
                Tree::grow(&data, &mut rows, 0, limit, &mut rng, &mut nodes);
                Tree { nodes }
            })
            .collect();
        IsolationForest {
            trees,
            psi,
            features: data.ncols(),
            seed,
            flat: std::sync::OnceLock::new(),
        }
    }

    pub fn features(&self) -> usize {
        self.features
    }

    /// Checks a deserialised forest can be scored safely: sizes within
    /// reason, every child index in range and after its parent (so no
    /// cycle, and the scoring walk always ends at a leaf), split features
    /// below `features`, thresholds finite, leaf sizes within ψ. A saved
    /// baseline is data from disk: a bad one must be refused, not panic or
    /// hang the scorer.
    pub fn validate(&self, features: usize) -> Result<(), String> {
        if self.features != features {
            return Err(format!(
                "forest is for {} features, not {features}",
                self.features
            ));
        }
        if self.trees.is_empty() || self.trees.len() > MAX_TREES {
            return Err(format!(
                "{} trees (1 to {MAX_TREES} expected)",
                self.trees.len()
            ));
        }
        if self.psi == 0 || self.psi > MAX_PSI {
            return Err(format!("ψ = {} (1 to {MAX_PSI} expected)", self.psi));
        }
        // A tree on ψ samples has at most 2ψ − 1 nodes.
        let max_nodes = 2 * self.psi;
        for (t, tree) in self.trees.iter().enumerate() {
            let n = tree.nodes.len();
            if n == 0 || n > max_nodes {
                return Err(format!(
                    "tree {t} has {n} nodes (1 to {max_nodes} expected)"
                ));
            }
            for (i, node) in tree.nodes.iter().enumerate() {
                match node {
                    Node::Split {
                        feature,
                        value,
                        left,
                        right,
                    } => {
                        if *feature as usize >= features {
                            return Err(format!("tree {t} node {i} splits on feature {feature}"));
                        }
                        if !value.is_finite() {
                            return Err(format!("tree {t} node {i} has threshold {value}"));
                        }
                        for child in [*left, *right] {
                            let c = child as usize;
                            if c <= i || c >= n {
                                return Err(format!(
                                    "tree {t} node {i} points at node {child} (children come after their parent, below {n})"
                                ));
                            }
                        }
                    }
                    Node::Leaf { size } => {
                        if *size as usize > self.psi {
                            return Err(format!(
                                "tree {t} leaf {i} holds {size} samples, more than ψ = {}",
                                self.psi
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// s(x) = 2^(−E[h(x)]/c(ψ)): near 1 anomalous, ≤ 0.5 normal.
    pub fn score(&self, x: ArrayView1<f64>) -> f64 {
        if self.trees.is_empty() {
            return 0.5;
        }
        let flat = self.flat.get_or_init(|| Flat::build(&self.trees));
        let total = match x.as_slice() {
            Some(s) => flat.total_path(s),
            None => flat.total_path(&x.to_vec()),
        };
        score_from_depth(total / self.trees.len() as f64, self.psi)
    }

    /// The score when it is at least `min_score`, else None. Exact: it
    /// stops only once the remaining trees cannot lift the score that high.
    pub fn score_at_least(&self, x: &[f64], min_score: f64) -> Option<f64> {
        if self.trees.is_empty() || min_score <= 0.0 {
            return Some(self.score(ArrayView1::from(x)));
        }
        let flat = self.flat.get_or_init(|| Flat::build(&self.trees));
        // s ≥ min ⇔ mean depth ≤ −c(ψ)·log₂(min).
        let cap = -c(self.psi) * min_score.log2() * self.trees.len() as f64;
        let total = flat.total_path_until(x, cap);
        if total > cap {
            return None;
        }
        Some(score_from_depth(total / self.trees.len() as f64, self.psi))
    }

    pub fn score_all(&self, data: ArrayView2<f64>) -> Vec<f64> {
        data.rows().into_iter().map(|r| self.score(r)).collect()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn reference_values() {
        close(c(256), 10.2448, 1e-4);
        close(c(100), 8.3647, 1e-4);
        assert_eq!(c(2), 1.0);
        assert_eq!(c(1), 0.0);
        close(score_from_depth(2.0, 256), 0.873, 1e-3);
        close(score_from_depth(4.0, 256), 0.763, 1e-3);
        close(score_from_depth(6.0, 256), 0.666, 1e-3);
        close(score_from_depth(8.0, 256), 0.582, 1e-3);
    }

    #[test]
    fn separates_planted_outliers() {
        let (data, labels) = planted(2000, 40, 16, 1);
        let f = IsolationForest::fit(data.view(), 100, 256, 42);
        let scores = f.score_all(data.view());
        let a = auc(&scores, &labels);
        assert!(a >= 0.95, "AUC {a}");
    }

    #[test]
    fn seeded_and_serializable() {
        let (data, _) = planted(500, 5, 16, 3);
        let a = IsolationForest::fit(data.view(), 20, 256, 9);
        let b = IsolationForest::fit(data.view(), 20, 256, 9);
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).expect("serialize");
        let back: IsolationForest = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.score(data.row(0)), a.score(data.row(0)));
    }

    #[test]
    fn early_exit_agrees_with_the_full_score() {
        let (data, _) = planted(1000, 20, 16, 4);
        let f = IsolationForest::fit(data.view(), 100, 256, 1);
        for r in data.rows() {
            let full = f.score(r);
            let x = r.to_vec();
            match f.score_at_least(&x, 0.6) {
                Some(s) => assert!((s - full).abs() < 1e-12 && full >= 0.6),
                None => assert!(full < 0.6),
            }
        }
    }

    /// A small forest as JSON, edited by `f`, then validated.
    fn edited(f: impl FnOnce(&mut serde_json::Value)) -> Result<(), String> {
        let (data, _) = planted(200, 0, 16, 3);
        let forest = IsolationForest::fit(data.view(), 5, 64, 1);
        let mut v = serde_json::to_value(&forest).expect("json");
        f(&mut v);
        let back: IsolationForest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        back.validate(16)
    }

    /// The first node of tree 0 of `kind` (`Split` or `Leaf`): its index
    /// and its fields.
    fn first<'a>(v: &'a mut serde_json::Value, kind: &str) -> (usize, &'a mut serde_json::Value) {
        let nodes = v["trees"][0]["nodes"].as_array_mut().expect("nodes");
        let i = nodes
            .iter()
            .position(|n| n.get(kind).is_some())
            .expect("a node of that kind");
        (i, &mut nodes[i][kind])
    }

    fn split(v: &mut serde_json::Value) -> &mut serde_json::Value {
        first(v, "Split").1
    }

    #[test]
    fn a_trained_forest_validates_and_bad_ones_are_refused() {
        assert_eq!(edited(|_| {}), Ok(()));
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "out of range",
                Box::new(|v| split(v)["left"] = 100_000.into()),
            ),
            ("cycle", Box::new(|v| split(v)["right"] = 0.into())),
            (
                "self loop",
                Box::new(|v| {
                    let (i, n) = first(v, "Split");
                    n["left"] = i.into();
                }),
            ),
            ("feature", Box::new(|v| split(v)["feature"] = 16.into())),
            (
                "threshold",
                Box::new(|v| split(v)["value"] = serde_json::Value::Null),
            ),
            ("no trees", Box::new(|v| v["trees"] = serde_json::json!([]))),
            (
                "empty tree",
                Box::new(|v| v["trees"][0]["nodes"] = serde_json::json!([])),
            ),
            ("psi", Box::new(|v| v["psi"] = 0.into())),
            ("features", Box::new(|v| v["features"] = 15.into())),
            (
                "leaf size",
                Box::new(|v| first(v, "Leaf").1["size"] = 1_000_000.into()),
            ),
        ];
        for (what, f) in cases {
            assert!(edited(f).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn auc_of_perfect_and_random() {
        assert_eq!(auc(&[0.1, 0.2, 0.9], &[false, false, true]), 1.0);
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
    }

    /// fuzz/forest: a saved forest whose split pointed past its tree
    /// panicked at the first score (index out of bounds in Flat::build),
    /// so a damaged iforest.json crashed the agent at every start. Such a
    /// file, a split pointing back up its tree (a loop) and a split on a
    /// feature the forest lacks are now refused when read.
    #[test]
    fn a_damaged_saved_forest_is_refused_when_read_not_when_scored() {
        let forest = |nodes: &str| {
            format!(r#"{{"trees":[{{"nodes":[{nodes}]}}],"psi":2,"features":16,"seed":1}}"#)
        };
        let leaf = r#"{"Leaf":{"size":1}}"#;
        let split = |feature: u32, left: u32, right: u32| {
            format!(
                r#"{{"Split":{{"feature":{feature},"value":1.0,"left":{left},"right":{right}}}}}"#
            )
        };
        let good = forest(&format!("{},{leaf},{leaf}", split(3, 1, 2)));
        let f: IsolationForest = serde_json::from_str(&good).expect("a sound forest loads");
        assert!(f.score_at_least(&[0.0; 16], 0.0).is_some());
        for (bad, why) in [
            (
                forest(&format!("{},{leaf}", split(13, 1, 77))),
                "points to node 77",
            ),
            (
                forest(&format!("{},{leaf}", split(0, 0, 1))),
                "points to node 0",
            ),
            (
                forest(&format!("{},{leaf},{leaf}", split(16, 1, 2))),
                "feature 16",
            ),
            (forest(""), "no nodes"),
        ] {
            let e = serde_json::from_str::<IsolationForest>(&bad).expect_err(&bad);
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
