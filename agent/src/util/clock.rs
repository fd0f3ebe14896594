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

pub fn rfc3339_ns(wall_ns: i64) -> String {
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
}
