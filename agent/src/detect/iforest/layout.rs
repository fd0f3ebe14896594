//! The forest laid out for scoring: every tree padded to a complete binary
//! tree of the forest's height, all trees in one array per field (struct of
//! arrays), so a walk is a fixed number of branch-free steps and several
//! vectors can go down one tree at once. Forests too tall to pad (large ψ,
//! or a loaded file with a deep chain) keep a linked layout.

use super::{c, Node, Tree};

/// Tallest forest padded to complete trees: 2^12 leaf slots per tree
/// (ψ up to 4,096 at the default height limit).
const MAX_PADDED_HEIGHT: usize = 12;

/// Most padded slots per real node (trained forests need under 1).
const PAD_RATIO: usize = 4;
/// Slots always allowed, however few the nodes.
const MIN_PAD_BUDGET: usize = 1 << 12;

/// Vectors walked down one tree together: independent walks the core can
/// overlap while each waits on its loads.
const BATCH: usize = 16;

/// Trees one vector walks together, for the same reason.
const TREES_TOGETHER: usize = 8;

#[derive(Debug, Clone)]
pub(super) enum Layout {
    Padded(Padded),
    Linked(Linked),
}

impl Layout {
    pub(super) fn build(trees: &[Tree]) -> Layout {
        match Padded::build(trees) {
            Some(p) => Layout::Padded(p),
            None => Layout::Linked(Linked::build(trees)),
        }
    }

    /// Sum over trees of the path length of `x`, stopping once it exceeds
    /// `cap` (path lengths are never negative). Trees are summed in order,
    /// so an uncapped result equals [`Layout::total_paths`]'s bit for bit.
    pub(super) fn total_path_until(&self, x: &[f64], cap: f64) -> f64 {
        match self {
            Layout::Padded(p) => p.total_path_until(x, cap),
            Layout::Linked(l) => l.total_path_until(x, cap),
        }
    }

    /// Total path lengths of the row-major `rows` (`features` values each)
    /// into `out`, one per row.
    pub(super) fn total_paths(&self, rows: &[f64], features: usize, out: &mut [f64]) {
        match self {
            Layout::Padded(p) => p.total_paths(rows, features, out),
            Layout::Linked(l) => {
                for (x, o) in rows.chunks_exact(features).zip(out.iter_mut()) {
                    *o = l.total_path_until(x, f64::INFINITY);
                }
            }
        }
    }
}

/// A split of a padded tree: threshold and feature side by side, so one
/// cache line serves both loads of a step.
#[derive(Debug, Clone, Copy, Default)]
struct Split {
    threshold: f64,
    feature: u32,
}

/// Complete trees of height `height`, numbered as a heap from 1: node i
/// has children 2i (taken when x < threshold) and 2i + 1. A leaf shallower
/// than `height` fills every slot below it with its value, so which way
/// the padding nodes send a vector does not matter.
#[derive(Debug, Clone)]
pub(super) struct Padded {
    height: usize,
    /// 2^height: tree t's splits and leaf slots start at t·width.
    width: usize,
    /// Tree t's node i at t·width + i (slot 0 unused).
    split: Vec<Split>,
    /// Tree t's leaf slot j at t·width + j, holding depth + c(size).
    leaf: Vec<f64>,
}

/// The agent's flow vectors have this many features; walks over them
/// are specialised (fixed-size rows, no bounds checks on x).
const FLOW_FEATURES: usize = 16;

impl Padded {
    fn build(trees: &[Tree]) -> Option<Padded> {
        let height = trees
            .iter()
            .map(tree_height)
            .try_fold(0, |h, t| t.map(|t| h.max(t)))?;
        let width = 1usize << height;
        // A loaded forest of thin, tall trees (a chain per tree) would pad
        // a few nodes into thousands of slots: a small file making a large
        // allocation. Trained trees fill their width; such forests link.
        let nodes: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if width * trees.len() > PAD_RATIO * nodes.max(MIN_PAD_BUDGET) {
            return None;
        }
        let mut p = Padded {
            height,
            width,
            split: vec![Split::default(); width * trees.len()],
            leaf: vec![0.0; width * trees.len()],
        };
        for (t, tree) in trees.iter().enumerate() {
            let base = t * width;
            // (tree node, heap slot, depth); bounded by height, so ≤ 2^height pushes.
            let mut stack = vec![(0usize, 1usize, 0usize)];
            while let Some((id, slot, depth)) = stack.pop() {
                match &tree.nodes[id] {
                    Node::Split {
                        feature,
                        value,
                        left,
                        right,
                    } => {
                        p.split[base + slot] = Split {
                            threshold: *value,
                            feature: u32::from(*feature),
                        };
                        stack.push((*left as usize, 2 * slot, depth + 1));
                        stack.push((*right as usize, 2 * slot + 1, depth + 1));
                    }
                    Node::Leaf { size } => {
                        let value = depth as f64 + c(*size as usize);
                        // The slots under `slot` at the bottom level.
                        let shift = height - depth;
                        let first = (slot << shift) - width;
                        p.leaf[base + first..base + first + (1 << shift)].fill(value);
                    }
                }
            }
        }
        Some(p)
    }

    /// One tree's (splits, leaves).
    fn trees(&self) -> impl Iterator<Item = (&[Split], &[f64])> {
        self.split
            .chunks_exact(self.width)
            .zip(self.leaf.chunks_exact(self.width))
    }

    /// One vector down TREES_TOGETHER trees at a time (independent walks
    /// that overlap, as BATCH vectors do in `block`), summed in tree order;
    /// the cap is checked between groups, which stays exact: it only ever
    /// stops a sum that already exceeds it.
    fn total_path_until(&self, x: &[f64], cap: f64) -> f64 {
        let (w, mask) = (self.width, self.width - 1);
        let group = TREES_TOGETHER * w;
        let mut splits = self.split.chunks_exact(group);
        let mut leaves = self.leaf.chunks_exact(group);
        let mut sum = 0.0;
        for (split, leaf) in (&mut splits).zip(&mut leaves) {
            if sum > cap {
                return sum;
            }
            let mut i = [1usize; TREES_TOGETHER];
            for _ in 0..self.height {
                for (t, i) in i.iter_mut().enumerate() {
                    let s = split[t * w + (*i & mask)];
                    let go_right = goes_right(x[s.feature as usize], s.threshold);
                    *i = 2 * *i + go_right as usize;
                }
            }
            for (t, i) in i.iter().enumerate() {
                sum += leaf[t * w + (i & mask)];
            }
        }
        let rest = splits
            .remainder()
            .chunks_exact(w)
            .zip(leaves.remainder().chunks_exact(w));
        for (split, leaf) in rest {
            if sum > cap {
                return sum;
            }
            let mut i = 1;
            for _ in 0..self.height {
                let s = split[i & mask];
                let go_right = goes_right(x[s.feature as usize], s.threshold);
                i = 2 * i + go_right as usize;
            }
            sum += leaf[i & mask];
        }
        sum
    }

    fn total_paths(&self, rows: &[f64], features: usize, out: &mut [f64]) {
        let mut blocks = rows.chunks_exact(features * BATCH);
        let mut outs = out.chunks_exact_mut(BATCH);
        for (block, o) in (&mut blocks).zip(&mut outs) {
            if features == FLOW_FEATURES {
                let xs: [[f64; FLOW_FEATURES]; BATCH] =
                    std::array::from_fn(|v| std::array::from_fn(|j| block[v * FLOW_FEATURES + j]));
                // Features were checked below FLOW_FEATURES when the forest
                // was read; the mask only spares the bounds checks.
                self.block(&xs, |x, f| x[f & (FLOW_FEATURES - 1)], o);
            } else {
                let xs: [&[f64]; BATCH] =
                    std::array::from_fn(|v| &block[v * features..(v + 1) * features]);
                self.block(&xs, |x, f| x[f], o);
            }
        }
        let rest = blocks.remainder();
        for (x, o) in rest
            .chunks_exact(features)
            .zip(outs.into_remainder().iter_mut())
        {
            *o = self.total_path_until(x, f64::INFINITY);
        }
    }

    /// BATCH vectors down every tree, their walks interleaved step by step
    /// (independent loads the core overlaps); trees summed in order.
    #[inline(always)]
    fn block<X>(&self, xs: &[X; BATCH], get: impl Fn(&X, usize) -> f64, out: &mut [f64]) {
        let mask = self.width - 1;
        let mut sum = [0.0; BATCH];
        for (split, leaf) in self.trees() {
            let mut i = [1usize; BATCH];
            for _ in 0..self.height {
                for v in 0..BATCH {
                    let s = split[i[v] & mask];
                    let go_right = goes_right(get(&xs[v], s.feature as usize), s.threshold);
                    i[v] = 2 * i[v] + go_right as usize;
                }
            }
            for v in 0..BATCH {
                sum[v] += leaf[i[v] & mask];
            }
        }
        out.copy_from_slice(&sum);
    }
}

/// Whether a split sends `x` right: when it is not below the threshold,
/// NaN included, exactly as training partitioned (`< threshold` left).
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn goes_right(x: f64, threshold: f64) -> bool {
    !(x < threshold)
}

/// Deepest leaf of `tree` walked from its root, or None past
/// MAX_PADDED_HEIGHT (a loaded tree may share children between splits,
/// so the walk is bounded by depth, not by node count).
fn tree_height(tree: &Tree) -> Option<usize> {
    let mut height = 0;
    let mut stack = vec![(0usize, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        if depth > MAX_PADDED_HEIGHT {
            return None;
        }
        height = height.max(depth);
        if let Node::Split { left, right, .. } = &tree.nodes[id] {
            stack.push((*left as usize, depth + 1));
            stack.push((*right as usize, depth + 1));
        }
    }
    Some(height)
}

/// Trees as linked nodes, one array per field: leaves marked by `LEAF`
/// with their full path contribution (depth + c(size)) precomputed.
#[derive(Debug, Clone, Default)]
pub(super) struct Linked {
    feature: Vec<u16>,
    value: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    roots: Vec<u32>,
}

const LEAF: u16 = u16::MAX;

impl Linked {
    pub(super) fn build(trees: &[Tree]) -> Linked {
        let mut f = Linked::default();
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
