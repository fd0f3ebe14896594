//! The walk of the default forest (trees of height 8, ψ = 256) over flow
//! vectors (16 features), written out for x86-64. The walk is bound by
//! the latency of each step's chain of dependent loads (node → feature →
//! value → compare), so the core needs many walks in flight; LLVM keeps
//! only a few of their indices in registers and spends 9–14 instructions
//! a step on spills and address arithmetic. Here ten walks run with every
//! index in a register, at four instructions a step.

/// Walks run together: ten vectors down one tree ([`walk`]), or one
/// vector down ten trees ([`walk_trees`]).
pub(super) const LANES: usize = 10;

/// Vectors that go down one tree before the next (whole walks of LANES),
/// so a tree's nodes are read from L1 by all but the first.
pub(super) const ROWS: usize = 16 * LANES;

/// Words of one tree: 256 keys (slot 0 unused), then 256 feature bytes.
pub(super) const SLAB: usize = 256 + 32;

/// Words of a row buffer: LANES rows of 16 keys, then padding so a read
/// at any feature byte (up to 255) stays inside.
pub(super) const XS: usize = LANES * 16 + 256;

/// A row of one vector's keys padded as the rows of [`XS`].
pub(super) const X: usize = 256;

/// A tree's keys and features as one slab of [`SLAB`] words: key of
/// node i at word i, feature of node i at byte 2,048 + i (little-endian).
pub(super) fn slab(keys: &[u64; 256], features: &[u16; 256]) -> [u64; SLAB] {
    let mut s = [0u64; SLAB];
    s[..256].copy_from_slice(keys);
    for (i, &f) in features.iter().enumerate() {
        // Features are below 16 here (flow trees); a byte holds them.
        s[256 + i / 8] |= u64::from(f as u8) << (8 * (i % 8));
    }
    s
}

/// One step of the walk held in register `{i}`, for the vector at byte
/// offset `x` of `{xs}` down the tree at byte offset `t` of `{tree}`: the
/// node's feature byte, the vector's key for that feature, compared with
/// the node's key; CF is set when the value is below the threshold (see
/// `Padded`), and `i = 2i + CF` goes to the child.
macro_rules! step {
    ($i:literal, $x:literal, $t:literal) => {
        concat!(
            "movzx {t:e}, byte ptr [{tree} + {",
            $i,
            "} + 2048 + ",
            $t,
            "]\n",
            "mov {t}, qword ptr [{xs} + {t}*8 + ",
            $x,
            "]\n",
            "cmp {t}, qword ptr [{tree} + {",
            $i,
            "}*8 + ",
            $t,
            "]\n",
            "adc {",
            $i,
            "}, {",
            $i,
            "}\n",
        )
    };
}

/// One level for LANES vectors (rows of 128 bytes) down one tree.
macro_rules! vectors_level {
    () => {
        concat!(
            step!("i0", "0", "0"),
            step!("i1", "128", "0"),
            step!("i2", "256", "0"),
            step!("i3", "384", "0"),
            step!("i4", "512", "0"),
            step!("i5", "640", "0"),
            step!("i6", "768", "0"),
            step!("i7", "896", "0"),
            step!("i8", "1024", "0"),
            step!("i9", "1152", "0"),
        )
    };
}

/// One level for one vector down LANES consecutive slabs (2,304 bytes).
macro_rules! trees_level {
    () => {
        concat!(
            step!("i0", "0", "0"),
            step!("i1", "0", "2304"),
            step!("i2", "0", "4608"),
            step!("i3", "0", "6912"),
            step!("i4", "0", "9216"),
            step!("i5", "0", "11520"),
            step!("i6", "0", "13824"),
            step!("i7", "0", "16128"),
            step!("i8", "0", "18432"),
            step!("i9", "0", "20736"),
        )
    };
}

/// Runs `$levels` (a template) with the walks' indices `$i` in and out
/// of registers, reading from the two pointers.
macro_rules! run {
    ($levels:expr, $i:ident, $tree:expr, $xs:expr) => {{
        let [mut i0, mut i1, mut i2, mut i3, mut i4, mut i5, mut i6, mut i7, mut i8, mut i9] = $i;
        // SAFETY: reads only, inside the arrays behind the two pointers
        // (see the callers); no stack; the clobbered registers and flags
        // are declared.
        unsafe {
            std::arch::asm!(
                $levels,
                tree = in(reg) $tree,
                xs = in(reg) $xs,
                t = out(reg) _,
                i0 = inout(reg) i0,
                i1 = inout(reg) i1,
                i2 = inout(reg) i2,
                i3 = inout(reg) i3,
                i4 = inout(reg) i4,
                i5 = inout(reg) i5,
                i6 = inout(reg) i6,
                i7 = inout(reg) i7,
                i8 = inout(reg) i8,
                i9 = inout(reg) i9,
                options(nostack, readonly, pure),
            );
        }
        [i0, i1, i2, i3, i4, i5, i6, i7, i8, i9]
    }};
}

/// Leaf slots (0..256) of LANES vectors (rows of 16 keys at the start of
/// `xs`) walked down one tree of height 8 (node i's children 2i and
/// 2i + 1, the latter when x < threshold), from the root's children:
/// `left` says which each vector goes to (the root is the same node for
/// every walk, so the caller compares it once, off the walks' chains).
///
/// Sound for any contents: an index starts at 2 or 3 and each step makes
/// it 2i or 2i + 1, so before the k-th of the 7 steps it is below 2^(k+1)
/// ≤ 256: every node read is inside the slab. A feature byte is at most
/// 255, and XS pads the last row for that.
#[inline(always)]
pub(super) fn walk(tree: &[u64; SLAB], xs: &[u64; XS], left: [bool; LANES]) -> [usize; LANES] {
    let i = left.map(|l| 2 + usize::from(l));
    let i = run!(
        concat!(
            vectors_level!(),
            vectors_level!(),
            vectors_level!(),
            vectors_level!(),
            vectors_level!(),
            vectors_level!(),
            vectors_level!(),
        ),
        i,
        tree.as_ptr(),
        xs.as_ptr()
    );
    i.map(|i| i & 255)
}

/// Leaf slots (0..256) of one vector (its 16 keys at the start of `x`)
/// walked down LANES trees of height 8 at once.
///
/// Sound for any contents: an index starts at 1 and each step makes it
/// 2i or 2i + 1, so before the k-th of the 8 steps it is below 2^k ≤ 256:
/// every node read is inside its tree's slab; a feature byte is at most
/// 255, inside `x`.
#[inline(always)]
pub(super) fn walk_trees(trees: &[[u64; SLAB]; LANES], x: &[u64; X]) -> [usize; LANES] {
    let i = [1usize; LANES];
    let i = run!(
        concat!(
            trees_level!(),
            trees_level!(),
            trees_level!(),
            trees_level!(),
            trees_level!(),
            trees_level!(),
            trees_level!(),
            trees_level!(),
        ),
        i,
        trees.as_ptr(),
        x.as_ptr()
    );
    i.map(|i| i & 255)
}
