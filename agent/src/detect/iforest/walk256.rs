//! The walk of the default forest (trees of height 8, ψ = 256) over flow
//! vectors (16 features), written out for x86-64: LLVM keeps at most a
//! few of the interleaved walks' node indices in registers and spends
//! 9–14 instructions a step on spills and address arithmetic; here a
//! step is five instructions with every index in a register.

/// Vectors walked down one tree together by [`walk`], and trees one
/// vector walks together in [`walk_trees`].
pub(super) const LANES: usize = 9;

/// Vectors that go down one tree before the next (whole walks of LANES),
/// so a tree's nodes are read from L1 by all but the first.
pub(super) const ROWS: usize = 8 * LANES;

/// One step of the walk held in register `{i}`, for the vector at byte
/// offset `x` of `{xs}` down the tree at byte offsets `f` of `{feature}`
/// and `t` of `{threshold}`: the node's feature (masked below 16, so the
/// read stays in the vector whatever the tree holds), the vector's key
/// for it, compared with the node's key; CF is set when the value is
/// below the threshold (see `Padded`), and `i = 2i + CF` goes to the child.
macro_rules! step {
    ($i:literal, $x:literal, $f:literal, $t:literal) => {
        concat!(
            "movzx {t:e}, word ptr [{feature} + {",
            $i,
            "}*2 + ",
            $f,
            "]\n",
            "and {t:e}, 15\n",
            "mov {t}, qword ptr [{xs} + {t}*8 + ",
            $x,
            "]\n",
            "cmp {t}, qword ptr [{threshold} + {",
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
            step!("i0", "0", "0", "0"),
            step!("i1", "128", "0", "0"),
            step!("i2", "256", "0", "0"),
            step!("i3", "384", "0", "0"),
            step!("i4", "512", "0", "0"),
            step!("i5", "640", "0", "0"),
            step!("i6", "768", "0", "0"),
            step!("i7", "896", "0", "0"),
            step!("i8", "1024", "0", "0"),
        )
    };
}

/// One level for one vector down LANES consecutive trees (features 512
/// bytes a tree, keys 2,048).
macro_rules! trees_level {
    () => {
        concat!(
            step!("i0", "0", "0", "0"),
            step!("i1", "0", "512", "2048"),
            step!("i2", "0", "1024", "4096"),
            step!("i3", "0", "1536", "6144"),
            step!("i4", "0", "2048", "8192"),
            step!("i5", "0", "2560", "10240"),
            step!("i6", "0", "3072", "12288"),
            step!("i7", "0", "3584", "14336"),
            step!("i8", "0", "4096", "16384"),
        )
    };
}

/// Runs `$levels` (a template) with the walks' indices `$i` in and out
/// of registers, reading from the three pointers.
macro_rules! run {
    ($levels:expr, $i:ident, $threshold:expr, $feature:expr, $xs:expr) => {{
        let [mut i0, mut i1, mut i2, mut i3, mut i4, mut i5, mut i6, mut i7, mut i8] = $i;
        // SAFETY: reads only, within the arrays behind the three pointers
        // (see the callers); no stack; the clobbered registers and flags
        // are declared.
        unsafe {
            std::arch::asm!(
                $levels,
                threshold = in(reg) $threshold,
                feature = in(reg) $feature,
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
                options(nostack, readonly, pure),
            );
        }
        [i0, i1, i2, i3, i4, i5, i6, i7, i8]
    }};
}

/// Leaf slots (0..256) of one vector walked down LANES trees of height 8
/// at once (node i's children 2i and 2i + 1, the latter when x < t).
///
/// Sound for any contents: an index starts at 1 and each step makes it 2i
/// or 2i + 1, so before the k-th of the 8 steps it is below 2^k ≤ 256 and
/// every node read is inside its tree's 256-slot arrays (the trees are
/// consecutive arrays: tree t at t·512 bytes of `feature`, t·2,048 of
/// `threshold`); features are masked below 16, inside the vector.
#[inline(always)]
pub(super) fn walk_trees(
    threshold: &[[u64; 256]; LANES],
    feature: &[[u16; 256]; LANES],
    x: &[u64; 16],
) -> [usize; LANES] {
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
        threshold.as_ptr(),
        feature.as_ptr(),
        x.as_ptr()
    );
    i.map(|i| i & 255)
}

/// Leaf slots (0..256) of LANES vectors walked down one tree of height 8
/// (node i's children 2i and 2i + 1, the latter when x < threshold),
/// from the root's children: `left` says which each vector goes to (the
/// root is the same node for every walk, so the caller compares it once,
/// off the walks' chains of dependent loads).
///
/// Sound for any contents: an index starts at 2 or 3 and each step makes
/// it 2i or 2i + 1, so before the k-th of the 7 steps it is below 2^(k+1)
/// ≤ 256 and every node read is inside the 256-slot arrays; features are
/// masked below 16, inside each 16-value row.
#[inline(always)]
pub(super) fn walk(
    threshold: &[u64; 256],
    feature: &[u16; 256],
    xs: &[[u64; 16]; LANES],
    left: [bool; LANES],
) -> [usize; LANES] {
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
        threshold.as_ptr(),
        feature.as_ptr(),
        xs.as_ptr()
    );
    i.map(|i| i & 255)
}
