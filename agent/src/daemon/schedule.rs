//! The daemon's periodic jobs on one timer: each job has a period and a
//! next due time, and the loop sleeps until the earliest.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Emit closed flows whose linger is over.
    Closes,
    /// Walk the kernel flow map for idle and long flows.
    Sweep,
    /// Write an `agent_stats` record.
    Stats,
    /// Tell systemd the loop is turning.
    Watchdog,
    /// Refresh the Prometheus gauges and mirrored counters.
    Metrics,
    /// Expire blocks, attach XDP to new interfaces.
    Maintain,
    /// Apply approval deadlines.
    Approvals,
    /// Let the sinks do their periodic work (Kafka produces from its spool).
    Outputs,
    /// Save what changed (offsets, executed ids, response state, detector
    /// baselines) and summarise refused fleet messages.
    Housekeeping,
    /// Publish this host on `fleet.inventory` (Kafka only).
    Inventory,
}

pub struct Schedule {
    jobs: Vec<(Job, Duration, Instant)>,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule { jobs: Vec::new() }
    }

    /// Runs `job` every `period`, first after `delay`.
    pub fn every(&mut self, job: Job, period: Duration, delay: Duration, now: Instant) {
        let period = period.max(Duration::from_millis(1));
        self.jobs.push((job, period, now + delay));
    }

    /// When the next job is due (an hour away when there is none).
    pub fn next(&self) -> Instant {
        self.next_except(|_| false)
    }

    /// When the next job is due, leaving out those `idle` says have
    /// nothing to do: the loop need not wake for them. One left out keeps
    /// its time, so it runs on the first turn after it has work again.
    pub fn next_except(&self, idle: impl Fn(Job) -> bool) -> Instant {
        self.jobs
            .iter()
            .filter(|j| !idle(j.0))
            .map(|j| j.2)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// The jobs due at `now`, each moved to its next time. A job late by
    /// more than a period runs once, not once per missed period.
    pub fn due(&mut self, now: Instant) -> Vec<Job> {
        let mut out = Vec::new();
        for (job, period, at) in &mut self.jobs {
            if *at <= now {
                out.push(*job);
                *at += *period;
                if *at <= now {
                    *at = now + *period;
                }
            }
        }
        out
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn jobs_come_due_on_their_own_periods() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.every(Job::Sweep, 1000 * MS, Duration::ZERO, t0);
        s.every(Job::Closes, 50 * MS, Duration::ZERO, t0);
        s.every(Job::Stats, 60_000 * MS, 60_000 * MS, t0);
        assert_eq!(s.due(t0), [Job::Sweep, Job::Closes]);
        assert_eq!(s.next(), t0 + 50 * MS);
        assert!(s.due(t0 + 49 * MS).is_empty());
        assert_eq!(s.due(t0 + 50 * MS), [Job::Closes]);
        assert_eq!(s.due(t0 + 1000 * MS), [Job::Sweep, Job::Closes]);
    }

    #[test]
    fn an_idle_job_does_not_set_the_wake_up_but_runs_once_it_has_work() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.every(Job::Closes, 50 * MS, Duration::ZERO, t0);
        s.every(Job::Sweep, 1000 * MS, 1000 * MS, t0);
        let idle = |j: Job| j == Job::Closes;
        assert_eq!(s.next_except(idle), t0 + 1000 * MS);
        assert_eq!(s.next(), t0);
        // Work arrived late: the job is overdue and runs on the next turn.
        assert_eq!(s.due(t0 + 300 * MS), [Job::Closes]);
        assert_eq!(s.next(), t0 + 350 * MS);
    }

    #[test]
    fn a_late_job_runs_once_and_keeps_its_period() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.every(Job::Closes, 50 * MS, Duration::ZERO, t0);
        s.due(t0);
        assert_eq!(s.due(t0 + 500 * MS), [Job::Closes]);
        assert!(s.due(t0 + 520 * MS).is_empty());
        assert_eq!(s.next(), t0 + 550 * MS);
    }
}
