//! RITA v5's beacon score (`activecm/rita`, `analysis/beacons.go`) as pure
//! functions over one window, plus the regularity gate Vigil adds. Counts
//! of bars (24 per window, 6 for the duration score, an ideal run of 12,
//! 11 for the bimodal fit) are RITA's; a bar is 1/24 of whatever window is
//! scored, so the same constants serve a 15-minute window and a day. RITA
//! v5 normalises the MAD by the median, so no absolute time constant is
//! left to scale except the skew guard (Q3 − Q1 ≥ 10), which is about
//! timestamp resolution, not the window, and stays.

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Quartiles as RITA computes them: medians of the lower and upper halves,
/// leaving out the middle element when n is odd.
pub fn quartiles(sorted: &[f64]) -> (f64, f64, f64) {
    let n = sorted.len();
    let half = n / 2;
    let lower = &sorted[..half];
    let upper = &sorted[n - half..];
    (median(lower), median(sorted), median(upper))
}

/// Skew and MAD score of a series (timestamps' deltas or sizes).
/// `small_median_default` is the score when the median is below 1.
pub fn skew_mad_score(values: &[f64], small_median_default: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    let (q1, q2, q3) = quartiles(&v);
    let skew = if q3 - q1 >= 10.0 && q2 != q1 && q2 != q3 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    let skew_score = 1.0 - skew.abs();
    let mut dev: Vec<f64> = v.iter().map(|x| (x - q2).abs()).collect();
    dev.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mad = median(&dev);
    let mad_score = if q2 >= 1.0 {
        ((q2 - mad) / q2).max(0.0)
    } else {
        small_median_default
    };
    round3((skew_score + mad_score) / 2.0)
}

/// Timestamp score: intervals between sorted starts, zeros dropped, ≥ 3 left.
pub fn ts_score(starts: &[f64]) -> f64 {
    let mut s = starts.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let deltas: Vec<f64> = s
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if deltas.len() < 3 {
        return 0.0;
    }
    skew_mad_score(&deltas, 1.0)
}

/// Data size score: the same statistics on bytes per connection.
pub fn ds_score(sizes: &[f64]) -> f64 {
    skew_mad_score(sizes, 0.0)
}

/// Histogram score over 24 bars of the span: max(1 − CV (0 if CV > 1), bimodal fit).
pub fn hist_score(starts: &[f64], window_start: f64, window_len: f64) -> (f64, [u32; 24]) {
    let mut bars = [0u32; 24];
    for &t in starts {
        let i = (((t - window_start) / window_len) * 24.0).floor();
        let i = i.clamp(0.0, 23.0) as usize;
        bars[i] += 1;
    }
    let n = 24.0;
    let mean = bars.iter().map(|&b| b as f64).sum::<f64>() / n;
    if mean == 0.0 {
        return (0.0, bars);
    }
    let var = bars.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>() / n;
    let cv = var.sqrt() / mean;
    let cv_score = if cv > 1.0 { 0.0 } else { 1.0 - cv };
    // Bimodal fit: share of bars whose height is one of the two most common
    // non-zero heights (one outlier bar forgiven); needs ≥ 11 non-empty bars.
    let nonzero: Vec<u32> = bars.iter().copied().filter(|&b| b > 0).collect();
    let bimodal = if nonzero.len() >= 11 {
        let mut freq: std::collections::BTreeMap<u32, u32> = Default::default();
        for h in &nonzero {
            *freq.entry(*h).or_default() += 1;
        }
        let mut counts: Vec<u32> = freq.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = counts.iter().take(2).sum();
        (top as f64 / (nonzero.len() as f64 - 1.0)).min(1.0)
    } else {
        0.0
    };
    (round3(cv_score.max(bimodal)), bars)
}

/// Duration score when ≥ 6 bars are non-empty: max(coverage of the window,
/// longest run of consecutive non-empty bars / 12), capped at 1.
pub fn dur_score(starts: &[f64], bars: &[u32; 24], window_len: f64) -> f64 {
    let nonempty = bars.iter().filter(|&&b| b > 0).count();
    if nonempty < 6 || starts.is_empty() {
        return 0.0;
    }
    let (lo, hi) = starts
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let coverage = ((hi - lo) / window_len).clamp(0.0, 1.0);
    let (mut run, mut best) = (0, 0);
    for &b in bars {
        run = if b > 0 { run + 1 } else { 0 };
        best = best.max(run);
    }
    round3(coverage.max(best as f64 / 12.0).min(1.0))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub score: f64,
    pub ts: f64,
    pub ds: f64,
    pub dur: f64,
    pub hist: f64,
}

pub fn score(conns: &[(f64, f64)], window_start: f64, window_len: f64) -> Score {
    let starts: Vec<f64> = conns.iter().map(|c| c.0).collect();
    let sizes: Vec<f64> = conns.iter().map(|c| c.1).collect();
    let ts = ts_score(&starts);
    let ds = ds_score(&sizes);
    let (hist, bars) = hist_score(&starts, window_start, window_len);
    let dur = dur_score(&starts, &bars, window_len);
    Score {
        score: round3(0.25 * (ts + ds + dur + hist)),
        ts,
        ds,
        dur,
        hist,
    }
}

/// The regularity gate: the intervals' MAD, relative to their median, may
/// be at most `SPREAD_PER_ROOT_N`·√n (n intervals), and never more than
/// `MAX_SPREAD`. RITA's score rewards persistence as much as regularity:
/// fixed-size downloads at random (Poisson) times score 0.78–0.87 over a
/// day (hist and duration saturate, sizes are equal), though their
/// intervals spread like an exponential's (MAD ≈ 0.7 × median). Uniform
/// ±j jitter spreads j/2 (0.1 at ±20 %). The allowance grows with n
/// because few intervals can look regular by chance: a Poisson stream
/// passes in 0.24 % of 10-interval windows and 0.06 % of 14-interval ones
/// (simulated), a ±20 % beacon in all of them, a ±50 % one in 26–94 %.
pub const SPREAD_PER_ROOT_N: f64 = 0.05;
pub const MAX_SPREAD: f64 = 0.3;
/// Fewer intervals cannot tell a beacon from chance: random arrivals pass
/// the gate in about 1 % of 5-interval windows, and a short window slides
/// over a day of them.
pub const GATE_MIN_INTERVALS: usize = 10;

/// The intervals' spread (MAD / median) and what is allowed for their
/// number; regular when spread ≤ allowed. None with fewer than
/// [`GATE_MIN_INTERVALS`] intervals.
pub fn regularity(starts: &[f64]) -> Option<(f64, f64)> {
    let mut s = starts.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut deltas: Vec<f64> = s
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if deltas.len() < GATE_MIN_INTERVALS {
        return None;
    }
    deltas.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = median(&deltas);
    let mut dev: Vec<f64> = deltas.iter().map(|d| (d - m).abs()).collect();
    dev.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let spread = median(&dev) / m;
    let allowed = (SPREAD_PER_ROOT_N * (deltas.len() as f64).sqrt()).min(MAX_SPREAD);
    Some((spread, allowed))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn ritas_data_size_vectors() {
        let v: Vec<f64> = (1..=10).map(|x| x as f64).collect();
        assert_eq!(ds_score(&v), 0.773);
        let v = [98.0, 99.0, 99.0, 100.0, 100.0, 100.0, 101.0, 101.0, 102.0];
        assert_eq!(ds_score(&v), 0.995);
        assert_eq!(ds_score(&[0.0; 10]), 0.5);
    }

    /// Deterministic pseudo-random numbers in [0, 1).
    pub fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn jittered_beacon_scores_high() {
        // 60 s period, ±20 % uniform jitter, over a day.
        let mut seed = 7;
        let mut t = 0.0;
        let mut conns = Vec::new();
        while t < 86_400.0 {
            conns.push((t, 512.0));
            t += 60.0 * (1.0 + 0.4 * (lcg(&mut seed) - 0.5));
        }
        let s = score(&conns, 0.0, 86_400.0);
        assert!(s.score >= 0.70, "{s:?}");
    }

    #[test]
    fn irregular_browsing_does_not() {
        // Bursty human browsing: clusters of requests at random times, varied sizes.
        let mut seed = 42;
        let mut conns = Vec::new();
        for _ in 0..25 {
            let base = lcg(&mut seed) * 86_400.0;
            for k in 0..(1 + (lcg(&mut seed) * 6.0) as usize) {
                conns.push((
                    base + k as f64 * lcg(&mut seed) * 30.0,
                    200.0 + lcg(&mut seed) * 90_000.0,
                ));
            }
        }
        let s = score(&conns, 0.0, 86_400.0);
        assert!(s.score < 0.70, "{s:?}");
    }

    #[test]
    fn quartiles_leave_out_the_middle() {
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0]), (1.5, 3.0, 4.5));
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0]), (1.5, 2.5, 3.5));
    }

    #[test]
    fn the_gate_passes_jittered_beacons_and_not_random_arrivals() {
        let mut seed = 3;
        // ±20 % around 60 s, 14 intervals (15 minutes).
        let mut t = 0.0;
        let mut beacon = Vec::new();
        for _ in 0..15 {
            beacon.push(t);
            t += 60.0 * (1.0 + 0.4 * (lcg(&mut seed) - 0.5));
        }
        let (spread, allowed) = regularity(&beacon).expect("enough");
        assert!(spread <= allowed, "{spread} > {allowed}");
        // Exponential gaps with the same mean, many draws: almost none pass.
        let mut passed = 0;
        for _ in 0..1000 {
            let mut t = 0.0;
            let mut arrivals = Vec::new();
            for _ in 0..15 {
                arrivals.push(t);
                t += -60.0 * (1.0 - lcg(&mut seed)).ln();
            }
            let (spread, allowed) = regularity(&arrivals).expect("enough");
            passed += usize::from(spread <= allowed);
        }
        assert!(
            passed <= 5,
            "{passed} of 1000 random streams looked regular"
        );
        let nine: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(regularity(&nine), None);
    }
}
