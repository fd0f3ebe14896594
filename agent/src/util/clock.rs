//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall time.

use chrono::{DateTime, SecondsFormat, Utc};

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, in the kernel programs' time base.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime − monotonic, sampled once; NTP slews after start are ignored.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    pub fn wall_ns(&self, ktime_ns: u64) -> i64 {
        (ktime_ns as i128 + self.offset_ns) as i64
    }

    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        rfc3339_ns(self.wall_ns(ktime_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A wall-clock time in ns as RFC 3339 with microseconds and `Z`, byte for
/// byte what chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` writes
/// for it (the test below compares them), without chrono's formatter: this
/// runs for every record.
pub fn rfc3339_ns(wall_ns: i64) -> String {
    // Floor division, as chrono's `from_timestamp_nanos`: a time before the
    // epoch keeps a positive fraction of its (earlier) second, and the
    // microseconds are truncated, not rounded.
    let secs = wall_ns.div_euclid(1_000_000_000);
    let micros = (wall_ns.rem_euclid(1_000_000_000) / 1_000) as u32;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400) as u32;
    // An i64 of ns spans 1677..2262, always four digits; anything else
    // would need chrono's signed form.
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        return chrono_rfc3339_ns(wall_ns);
    };
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut b[0..4], year);
    digits(&mut b[5..7], month);
    digits(&mut b[8..10], day);
    digits(&mut b[11..13], of_day / 3600);
    digits(&mut b[14..16], of_day / 60 % 60);
    digits(&mut b[17..19], of_day % 60);
    digits(&mut b[20..26], micros);
    // All ASCII digits and separators: the check cannot fail.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// Writes the low decimal digits of `v` right-aligned into `out`, zero-padded.
fn digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Counts in 400-year eras (146,097 days) that begin on 1 March, so the
/// leap day is the last day of its year and months have a fixed pattern.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // 0000-03-01 is 719,468 days before the epoch.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    // Leap days so far in this era are taken out before dividing by 365.
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31,30,31,30,31 repeats, i.e. 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The reference [`rfc3339_ns`] matches.
fn chrono_rfc3339_ns(wall_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(wall_ns).to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_now_maps_to_wall_now() {
        let c = Clock::new();
        let wall = c.wall_ns(monotonic_ns());
        let now = Utc::now().timestamp_nanos_opt().expect("in range");
        assert!((wall - now).abs() < 1_000_000_000);
        assert!(c.rfc3339(monotonic_ns()).ends_with('Z'));
    }

    /// Every output byte as chrono writes it: each day boundary of the
    /// whole i64 range (leap days, century and 400-year rules, the epoch,
    /// times before it) with the ns either side, the range's ends,
    /// sub-microsecond truncation, and random times.
    #[test]
    fn rfc3339_is_what_chrono_writes() {
        let check = |ns: i64| assert_eq!(rfc3339_ns(ns), chrono_rfc3339_ns(ns), "at {ns} ns");
        const DAY: i64 = 86_400 * 1_000_000_000;
        let mut day = i64::MIN.div_euclid(DAY) + 1;
        while day <= i64::MAX.div_euclid(DAY) {
            let at = day * DAY;
            for delta in [
                -1_000_000_000,
                -1_000,
                -1,
                0,
                1,
                999,
                1_000,
                1_999,
                43_200_000_000_001,
            ] {
                if let Some(ns) = at.checked_add(delta) {
                    check(ns);
                }
            }
            day += 1;
        }
        for ns in [
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            0,
            -1,
            1,
            -999,
            -1_000,
            -1_001,
            999,
            1_000,
            999_999_999,
            -999_999_999,
            // 2000-02-29, 2100-03-01, 1900-02-28 23:59:59.9999999
            951_782_400_123_456_789,
            4_107_542_400_000_000_000,
            -2_203_977_600_000_000_100,
        ] {
            check(ns);
        }
        // xorshift64*: reproducible, spread over the whole range.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            check(r as i64);
            // And near now, where the agent's records are.
            check(1_700_000_000_000_000_000 + (r % 1_000_000_000_000_000_000) as i64);
        }
    }

    #[test]
    fn civil_dates_by_hand() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(rfc3339_ns(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339_ns(1_999), "1970-01-01T00:00:00.000001Z");
    }
}
