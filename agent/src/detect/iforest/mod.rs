//! Isolation Forest (Liu, Ting & Zhou, ICDM 2008) on ndarray: seeded,
//! serializable, and faithful to the paper and to scikit-learn's defaults
//! (100 trees, ψ = min(256, n) samples without replacement, height limit
//! ⌈log₂ ψ⌉, split uniform in [min, max) of a random non-constant feature,
//! c(n) added at leaves). One deliberate difference: the trees' samples are
//! consecutive blocks of one shuffled order of the rows (reshuffled when it
//! runs out) rather than independent draws, so every row is in as many
//! samples as its neighbours — each sample is still uniform, and the
//! AUC varies less from seed to seed (see docs/performance.md).

mod layout;
mod synth;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod walk256;

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use layout::Layout;
pub use synth::{auc, clustered, correlated, planted, planted_with_shift};

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
    /// Scoring layout, built from `trees` at the first score.
    #[serde(skip)]
    layout: std::sync::OnceLock<Layout>,
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
            // A tree, not a graph: no node is the child of two splits.
            let mut has_parent = vec![false; n];
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
                    if std::mem::replace(&mut has_parent[child], true) {
                        return Err(format!("tree {t} node {child} has two parents"));
                    }
                }
            }
        }
        Ok(IsolationForest {
            trees: f.trees,
            psi: f.psi,
            features: f.features,
            seed: f.seed,
            layout: std::sync::OnceLock::new(),
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

/// Tree samples: consecutive blocks of ψ rows of a shuffled order of all
/// n rows, reshuffled when fewer than ψ remain.
struct Sampler {
    order: Vec<usize>,
    psi: usize,
    next: usize,
}

impl Sampler {
    fn new(n: usize, psi: usize) -> Sampler {
        Sampler {
            order: (0..n).collect(),
            psi: psi.min(n),
            next: n,
        }
    }

    fn next(&mut self, rng: &mut Rng) -> &[usize] {
        let n = self.order.len();
        if self.next + self.psi > n {
            // Fisher-Yates.
            for i in (1..n).rev() {
                self.order.swap(i, rng.below(i + 1));
            }
            self.next = 0;
        }
        let at = self.next;
        self.next += self.psi;
        &self.order[at..at + self.psi]
    }
}

impl IsolationForest {
    /// Fits `n_trees` trees, each on ψ = min(`max_samples`, n) rows:
    /// consecutive blocks of a shuffled order of all rows, reshuffled when
    /// fewer than ψ remain.
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
        let mut sampler = Sampler::new(n, psi);
        let trees = (0..n_trees)
            .map(|_| {
                let mut rows = sampler.next(&mut rng).to_vec();
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
            layout: std::sync::OnceLock::new(),
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

    fn layout(&self) -> &Layout {
        self.layout.get_or_init(|| Layout::build(&self.trees))
    }

    fn score_of_total(&self, total: f64) -> f64 {
        score_from_depth(total / self.trees.len() as f64, self.psi)
    }

    /// s(x) = 2^(−E[h(x)]/c(ψ)): near 1 anomalous, ≤ 0.5 normal.
    pub fn score(&self, x: ArrayView1<f64>) -> f64 {
        if self.trees.is_empty() {
            return 0.5;
        }
        let total = match x.as_slice() {
            Some(s) => self.layout().total_path_until(s, f64::INFINITY),
            None => self.layout().total_path_until(&x.to_vec(), f64::INFINITY),
        };
        self.score_of_total(total)
    }

    /// The score when it is at least `min_score`, else None. Exact: it
    /// stops only once the remaining trees cannot lift the score that high.
    pub fn score_at_least(&self, x: &[f64], min_score: f64) -> Option<f64> {
        if self.trees.is_empty() || min_score <= 0.0 {
            return Some(self.score(ArrayView1::from(x)));
        }
        // s ≥ min ⇔ mean depth ≤ −c(ψ)·log₂(min).
        let cap = -c(self.psi) * min_score.log2() * self.trees.len() as f64;
        let total = self.layout().total_path_until(x, cap);
        if total > cap {
            return None;
        }
        Some(self.score_of_total(total))
    }

    /// Scores of the row-major `rows` (`features()` values each, the last
    /// partial row ignored), several vectors walked down each tree at once;
    /// equal bit for bit to [`IsolationForest::score`] on each row.
    pub fn score_rows(&self, rows: &[f64]) -> Vec<f64> {
        let d = self.features.max(1);
        let mut out = vec![0.0; rows.len() / d];
        if self.trees.is_empty() {
            out.fill(0.5);
            return out;
        }
        self.layout()
            .total_paths(&rows[..out.len() * d], d, &mut out);
        for s in out.iter_mut() {
            *s = self.score_of_total(*s);
        }
        out
    }

    pub fn score_all(&self, data: ArrayView2<f64>) -> Vec<f64> {
        match data.as_slice() {
            Some(rows) if data.ncols() == self.features => self.score_rows(rows),
            _ => data.rows().into_iter().map(|r| self.score(r)).collect(),
        }
    }
}
