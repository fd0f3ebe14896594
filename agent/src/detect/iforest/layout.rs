//! The forest laid out for scoring: every tree padded to a complete binary
//! tree of the forest's height, all trees in one array per field (struct of
//! arrays), so a walk is a fixed number of branch-free steps and several
//! vectors can go down one tree at once; values are compared as integer
//! keys. Flow vectors down trees of height 8 (the agent's default forest)
//! go through the written-out x86-64 walk of `walk256`, which reads a
//! second copy of the trees (one 2,304-byte slab a tree, bounded as the
//! padded arrays are). Forests too tall to pad (large ψ, or a loaded file
//! with a deep chain) keep a linked layout.

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

/// Vectors that go down one tree before the next tree (whole batches).
const ROWS: usize = 4 * BATCH;

/// Trees one vector walks together, for the same reason.
const TREES_TOGETHER: usize = 16;

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

    /// The padded trees' height, None when linked.
    #[cfg(test)]
    pub(super) fn padded_height(&self) -> Option<usize> {
        match self {
            Layout::Padded(p) => Some(p.height),
            Layout::Linked(_) => None,
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

/// Complete trees of height `height`, numbered as a heap from 1: node i
/// has children 2i (taken when x is not below the threshold) and 2i + 1
/// (x below it), so a step is `i = 2i + (x < t)`, one add with carry. A
/// leaf shallower than `height` fills every slot below it with its value,
/// so which way the padding nodes send a vector does not matter.
///
/// Values are compared as integers: every feature value and threshold
/// becomes its order key (see [`key`]), so a step is one integer compare
/// (an FP compare and FP load take several cycles more, and the walk is
/// bound by that latency). x < t ⇔ key(x) < key(t) for the values the
/// walk sees: NaN is taken out first, a NaN feature walked as +∞ and a
/// NaN threshold as −∞, which both go right at every split as training
/// sent them (`< threshold` left); −0 is walked as +0 (they compare equal).
#[derive(Debug, Clone)]
pub(super) struct Padded {
    /// Every tree's height: tree t's nodes and leaf slots start at
    /// t·2^height.
    height: usize,
    /// Tree t's node i at t·2^height + i (slot 0 unused): key(threshold).
    threshold: Vec<u64>,
    feature: Vec<u16>,
    /// Tree t's leaf slot j at t·2^height + j, holding depth + c(size).
    leaf: Vec<f64>,
    /// Every split is on one of the first FLOW_FEATURES features, so a
    /// flow row's walk may mask feature numbers without changing them.
    flow: bool,
    /// The trees again as the x86-64 walk reads them, when they are flow
    /// trees of height 8 (else empty).
    #[cfg(target_arch = "x86_64")]
    slabs: Vec<[u64; super::walk256::SLAB]>,
}

/// The agent's flow vectors have this many features; walks over them
/// are specialised (fixed-size rows, no bounds checks on x).
const FLOW_FEATURES: usize = 16;

/// A value as the walk compares it: NaN as +∞ (`nan`, for a feature) or
/// −∞ (for a threshold), −0 as +0, then its IEEE bits made to order as
/// unsigned integers (negative values' bits reversed, positive values'
/// sign bit set), so for any two walked values a < b ⇔ key(a) < key(b).
#[inline(always)]
fn key(x: f64, nan: f64) -> u64 {
    // Adding +0 turns −0 into +0 and leaves every other value as it is.
    let x = if x.is_nan() { nan } else { x + 0.0 };
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// A feature value's key.
#[inline(always)]
fn walked(x: f64) -> u64 {
    key(x, f64::INFINITY)
}

/// Calls `$f::<W>($args)` with W = 2^`$height` a constant, so each
/// height gets a walk with a fixed number of steps and indices whose
/// range the compiler knows (no bounds checks).
macro_rules! by_width {
    ($height:expr, $f:ident($($arg:expr),*)) => {
        match $height {
            0 => $f::<1, _>($($arg),*),
            1 => $f::<2, _>($($arg),*),
            2 => $f::<4, _>($($arg),*),
            3 => $f::<8, _>($($arg),*),
            4 => $f::<16, _>($($arg),*),
            5 => $f::<32, _>($($arg),*),
            6 => $f::<64, _>($($arg),*),
            7 => $f::<128, _>($($arg),*),
            8 => $f::<256, _>($($arg),*),
            9 => $f::<512, _>($($arg),*),
            10 => $f::<1024, _>($($arg),*),
            11 => $f::<2048, _>($($arg),*),
            _ => $f::<4096, _>($($arg),*),
        }
    };
}

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
            threshold: vec![0; width * trees.len()],
            feature: vec![0; width * trees.len()],
            leaf: vec![0.0; width * trees.len()],
            flow: true,
            #[cfg(target_arch = "x86_64")]
            slabs: Vec::new(),
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
                        p.threshold[base + slot] = key(*value, f64::NEG_INFINITY);
                        p.feature[base + slot] = *feature;
                        p.flow &= usize::from(*feature) < FLOW_FEATURES;
                        stack.push((*right as usize, 2 * slot, depth + 1));
                        stack.push((*left as usize, 2 * slot + 1, depth + 1));
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
        #[cfg(target_arch = "x86_64")]
        if p.flow && height == 8 {
            let (threshold, feature, _) = self::trees::<256>(&p);
            p.slabs = threshold
                .iter()
                .zip(feature)
                .map(|(k, f)| super::walk256::slab(k, f))
                .collect();
        }
        Some(p)
    }

    /// Sum of the path lengths of `x`, trees in order, stopping once past `cap`.
    fn total_path_until(&self, x: &[f64], cap: f64) -> f64 {
        let flow = <&[f64; FLOW_FEATURES]>::try_from(x)
            .ok()
            .filter(|_| self.flow);
        if let Some(x) = flow {
            let x: [u64; FLOW_FEATURES] = std::array::from_fn(|f| walked(x[f]));
            #[cfg(target_arch = "x86_64")]
            if !self.slabs.is_empty() {
                return path_until256(self, &x, cap);
            }
            by_width!(self.height, path_until(self, &x, cap))
        } else {
            let x: Vec<u64> = x.iter().map(|&v| walked(v)).collect();
            by_width!(self.height, path_until(self, x.as_slice(), cap))
        }
    }

    fn total_paths(&self, rows: &[f64], features: usize, out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if features == FLOW_FEATURES && !self.slabs.is_empty() {
            return self.total_paths256(rows, out);
        }
        let mut blocks = rows.chunks_exact(features * ROWS);
        let mut outs = out.chunks_exact_mut(ROWS);
        if features == FLOW_FEATURES && self.flow {
            for (block, o) in (&mut blocks).zip(&mut outs) {
                let xs: [[u64; FLOW_FEATURES]; ROWS] = std::array::from_fn(|v| {
                    std::array::from_fn(|j| walked(block[v * FLOW_FEATURES + j]))
                });
                by_width!(self.height, paths(self, &xs, o));
            }
        } else {
            let mut scratch = vec![0; features * ROWS];
            for (block, o) in (&mut blocks).zip(&mut outs) {
                for (s, &v) in scratch.iter_mut().zip(block) {
                    *s = walked(v);
                }
                let xs: [&[u64]; ROWS] =
                    std::array::from_fn(|v| &scratch[v * features..(v + 1) * features]);
                by_width!(self.height, paths(self, &xs, o));
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
}

impl Padded {
    /// As [`Padded::total_paths`], for flow vectors down the default
    /// forest's trees (height 8), through the x86-64 walk.
    #[cfg(target_arch = "x86_64")]
    fn total_paths256(&self, rows: &[f64], out: &mut [f64]) {
        use super::walk256::{LANES, ROWS, XS};
        let mut blocks = rows.chunks_exact(FLOW_FEATURES * ROWS);
        let mut outs = out.chunks_exact_mut(ROWS);
        // Keys of ROWS vectors, LANES to a padded buffer (see walk256::XS).
        let mut xs = vec![[0u64; XS]; ROWS / LANES];
        for (block, o) in (&mut blocks).zip(&mut outs) {
            for (v, x) in block.as_chunks::<FLOW_FEATURES>().0.iter().enumerate() {
                let row = &mut xs[v / LANES][v % LANES * FLOW_FEATURES..][..FLOW_FEATURES];
                for (k, &x) in row.iter_mut().zip(x) {
                    *k = walked(x);
                }
            }
            paths256(self, &xs, o);
        }
        let rest = blocks.remainder();
        for (x, o) in rest
            .chunks_exact(FLOW_FEATURES)
            .zip(outs.into_remainder().iter_mut())
        {
            *o = self.total_path_until(x, f64::INFINITY);
        }
    }
}

/// A vector's features as the walk reads them: a flow row (16 values,
/// used only when every split is on one of them (`Padded::flow`), so the
/// mask only spares the bounds check) or any row.
trait Row {
    fn at(&self, f: u16) -> u64;
}

impl Row for [u64; FLOW_FEATURES] {
    #[inline(always)]
    fn at(&self, f: u16) -> u64 {
        self[f as usize & (FLOW_FEATURES - 1)]
    }
}

impl Row for &[u64] {
    #[inline(always)]
    fn at(&self, f: u16) -> u64 {
        self[f as usize]
    }
}

impl Row for [u64] {
    #[inline(always)]
    fn at(&self, f: u16) -> u64 {
        self[f as usize]
    }
}

/// The padded trees as arrays of W slots.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn trees<const W: usize>(p: &Padded) -> (&[[u64; W]], &[[u16; W]], &[[f64; W]]) {
    (
        p.threshold.as_chunks::<W>().0,
        p.feature.as_chunks::<W>().0,
        p.leaf.as_chunks::<W>().0,
    )
}

/// One step down a complete tree of W slots: from node `i` (below W) to
/// its child, 2i + 1 when x is below the threshold.
#[inline(always)]
fn step<const W: usize, X: Row + ?Sized>(
    threshold: &[u64; W],
    feature: &[u16; W],
    x: &X,
    i: usize,
) -> usize {
    let j = i & (W - 1);
    let left = x.at(feature[j]) < threshold[j];
    2 * i + usize::from(left)
}

/// ROWS vectors down every tree, walked BATCH at a time (independent
/// walks the core overlaps while each waits on its loads), all ROWS down
/// one tree before the next so its nodes stay in L1; trees summed in order.
#[inline(always)]
fn paths<const W: usize, X: Row>(p: &Padded, xs: &[X; ROWS], out: &mut [f64]) {
    let (threshold, feature, leaf) = trees::<W>(p);
    let mut sum = [0.0; ROWS];
    for ((threshold, feature), leaf) in threshold.iter().zip(feature).zip(leaf) {
        for (xs, sum) in xs
            .as_chunks::<BATCH>()
            .0
            .iter()
            .zip(sum.as_chunks_mut::<BATCH>().0)
        {
            let mut i = [1usize; BATCH];
            let mut level = 1;
            if W > 1 {
                // Every walk starts at the root: its split is read once.
                let (f, t) = (feature[1], threshold[1]);
                for v in 0..BATCH {
                    let left = xs[v].at(f) < t;
                    i[v] = 2 + usize::from(left);
                }
                level = 2;
            }
            while level < W {
                for v in 0..BATCH {
                    i[v] = step(threshold, feature, &xs[v], i[v]);
                }
                level *= 2;
            }
            for v in 0..BATCH {
                sum[v] += leaf[i[v] & (W - 1)];
            }
        }
    }
    out.copy_from_slice(&sum);
}

/// As [`paths`], for flow vectors down the default forest's trees
/// (height 8), through the x86-64 walk.
#[cfg(target_arch = "x86_64")]
fn paths256(p: &Padded, xs: &[[u64; super::walk256::XS]], out: &mut [f64]) {
    use super::walk256::{walk, LANES, ROWS};
    let (threshold, feature, leaf) = trees::<256>(p);
    let mut sum = [0.0; ROWS];
    let trees = p.slabs.iter().zip(threshold).zip(feature).zip(leaf);
    for (((slab, threshold), feature), leaf) in trees {
        let (f, t) = (usize::from(feature[1]) & (FLOW_FEATURES - 1), threshold[1]);
        for (xs, sum) in xs.iter().zip(sum.as_chunks_mut::<LANES>().0) {
            let left = std::array::from_fn(|v| xs[v * FLOW_FEATURES + f] < t);
            for (j, s) in walk(slab, xs, left).iter().zip(sum) {
                *s += leaf[*j];
            }
        }
    }
    out.copy_from_slice(&sum);
}

/// One vector down TREES_TOGETHER trees at a time (independent walks
/// that overlap, as BATCH vectors do in `paths`), summed in tree order;
/// the cap is checked between groups, which stays exact: it only ever
/// stops a sum that already exceeds it.
#[inline(always)]
fn path_until<const W: usize, X: Row + ?Sized>(p: &Padded, x: &X, cap: f64) -> f64 {
    let (threshold, feature, leaf) = trees::<W>(p);
    let (tg, trest) = threshold.as_chunks::<TREES_TOGETHER>();
    let (fg, frest) = feature.as_chunks::<TREES_TOGETHER>();
    let (lg, lrest) = leaf.as_chunks::<TREES_TOGETHER>();
    let mut sum = 0.0;
    for ((threshold, feature), leaf) in tg.iter().zip(fg).zip(lg) {
        if sum > cap {
            return sum;
        }
        let mut i = [1usize; TREES_TOGETHER];
        let mut level = 1;
        while level < W {
            for t in 0..TREES_TOGETHER {
                i[t] = step(&threshold[t], &feature[t], x, i[t]);
            }
            level *= 2;
        }
        for t in 0..TREES_TOGETHER {
            sum += leaf[t][i[t] & (W - 1)];
        }
    }
    for ((threshold, feature), leaf) in trest.iter().zip(frest).zip(lrest) {
        if sum > cap {
            return sum;
        }
        let mut i = 1;
        let mut level = 1;
        while level < W {
            i = step(threshold, feature, x, i);
            level *= 2;
        }
        sum += leaf[i & (W - 1)];
    }
    sum
}

/// As [`path_until`], for a flow vector down the default forest's trees
/// (height 8), LANES trees at a time through the x86-64 walk.
#[cfg(target_arch = "x86_64")]
fn path_until256(p: &Padded, x: &[u64; FLOW_FEATURES], cap: f64) -> f64 {
    use super::walk256::{walk_trees, LANES, X};
    let mut padded = [0u64; X];
    padded[..FLOW_FEATURES].copy_from_slice(x);
    let (threshold, feature, leaf) = trees::<256>(p);
    let (groups, _) = p.slabs.as_chunks::<LANES>();
    let (lg, lrest) = leaf.as_chunks::<LANES>();
    let mut sum = 0.0;
    for (slabs, leaf) in groups.iter().zip(lg) {
        if sum > cap {
            return sum;
        }
        for (j, leaf) in walk_trees(slabs, &padded).iter().zip(leaf) {
            sum += leaf[*j];
        }
    }
    let done = groups.len() * LANES;
    let rest = threshold[done..].iter().zip(&feature[done..]).zip(lrest);
    for ((threshold, feature), leaf) in rest {
        if sum > cap {
            return sum;
        }
        let mut i = 1;
        for _ in 0..8 {
            i = step(threshold, feature, x, i);
        }
        sum += leaf[i & 255];
    }
    sum
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
