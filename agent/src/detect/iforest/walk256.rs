//! The walk of the default forest (trees of height 8, ψ = 256) over flow
//! vectors (16 features), written out for x86-64: LLVM keeps at most a
//! few of the interleaved walks' node indices in registers and spends
//! 9–14 instructions a step on spills and address arithmetic; here a
//! step is five instructions with every index in a register.

/// Vectors walked down one tree together by [`walk`].
pub(super) const LANES: usize = 9;

/// Vectors that go down one tree before the next (whole walks of LANES),
/// so a tree's nodes are read from L1 by all but the first.
pub(super) const ROWS: usize = 8 * LANES;

/// One step of the walk held in register `{i}` for the vector at byte
/// offset `off` of `xs`, through SSE register `x`: the node's feature
/// (masked below 16, so the read stays in the vector whatever the tree
/// holds), the vector's value, compared with the node's threshold; CF is
/// set when the value is below it (neither side is NaN, see `Padded`),
/// and `i = 2i + CF` goes to the child.
macro_rules! step {
    ($i:literal, $off:literal) => {
        concat!(
            "movzx {t:e}, word ptr [{feature} + {",
            $i,
            "}*2]\n",
            "and {t:e}, 15\n",
            "mov {t}, qword ptr [{xs} + {t}*8 + ",
            $off,
            "]\n",
            "cmp {t}, qword ptr [{threshold} + {",
            $i,
            "}*8]\n",
            "adc {",
            $i,
            "}, {",
            $i,
            "}\n",
        )
    };
}

/// One level for all LANES walks.
macro_rules! level {
    () => {
        concat!(
            step!("i0", "0"),
            step!("i1", "128"),
            step!("i2", "256"),
            step!("i3", "384"),
            step!("i4", "512"),
            step!("i5", "640"),
            step!("i6", "768"),
            step!("i7", "896"),
            step!("i8", "1024"),
        )
    };
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
    let mut i = left.map(|l| 2 + usize::from(l));
    let [mut i0, mut i1, mut i2, mut i3, mut i4, mut i5, mut i6, mut i7, mut i8] = i;
    // SAFETY: reads only, within the three arrays (see above); no stack,
    // the clobbered registers are declared.
    unsafe {
        std::arch::asm!(
            level!(),
            level!(),
            level!(),
            level!(),
            level!(),
            level!(),
            level!(),
            threshold = in(reg) threshold.as_ptr(),
            feature = in(reg) feature.as_ptr(),
            xs = in(reg) xs.as_ptr(),
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
    i = [i0, i1, i2, i3, i4, i5, i6, i7, i8];
    i.map(|i| i & 255)
}
