//! `vigil run`: start → serve → shutdown. `start` wires the components,
//! `serve` is one task that hands each source (ring buffer, timer, control
//! calls, fleet messages, signals) to the agent until SIGINT or SIGTERM,
//! `shutdown` drains and emits what is left. Single task, so the
//! components need no locks.

pub mod agent;
pub mod control;
pub mod decisions;
pub mod flows;
pub mod inbound;
pub mod schedule;
pub mod sigma;
pub mod start;
pub mod telemetry;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::record::Body;
use crate::service::notify::notify;
use agent::Agent;
use schedule::Job;
use start::Running;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("vigil run must be started as root (it loads eBPF programs): run it with sudo")]
    NotRoot,
    #[error(transparent)]
    Loader(#[from] crate::kernel::loader::LoaderError),
    #[error(transparent)]
    Output(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceError),
    #[error(transparent)]
    Metrics(#[from] crate::service::metrics::MetricsError),
    #[error("refusing to start with bad Sigma rules (detect.sigma.dirs):\n{0}")]
    Sigma(String),
    #[error("refusing to start with bad playbooks:\n{0}")]
    Playbooks(#[from] crate::response::playbook::PlaybookError),
    #[error(transparent)]
    Control(#[from] crate::service::control::ControlError),
    #[error(transparent)]
    Kafka(#[from] crate::sink::kafka::producer::KafkaError),
    #[error("kernel map {name} unusable: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    let (mut agent, mut running) = start::start(cfg).await?;
    serve(&mut agent, &mut running).await?;
    shutdown(&mut agent, &mut running);
    Ok(())
}

/// Where the agent says until when it polls (the kernel's `AGENT_BUSY`).
trait BusyMark {
    fn mark(&mut self, until_ns: u64);
}

impl BusyMark for aya::maps::Array<aya::maps::MapData, u64> {
    fn mark(&mut self, until_ns: u64) {
        // A failed write only costs wake-ups: the kernel then wakes us for
        // lone events as if we were idle.
        let _ = self.set(0, until_ns, 0);
    }
}

/// When to drain the ring buffer next without a wake-up: every
/// `EVENTS_POLL_MS` while records came within `EVENTS_BUSY_MS`, else every
/// `EVENTS_IDLE_POLL_MS`. Counted from the last drain, whichever branch
/// did it, so a woken drain pushes the poll back.
struct RingPoll {
    next: tokio::time::Instant,
    last_record: tokio::time::Instant,
}

impl RingPoll {
    fn new(now: tokio::time::Instant) -> RingPoll {
        RingPoll {
            next: now,
            last_record: now,
        }
    }

    /// After a drain. With records, tells the kernel (`AGENT_BUSY`) it
    /// need not wake us for the next `EVENTS_BUSY_MS - EVENTS_POLL_MS`: an
    /// event before then is read by a poll that comes within
    /// `EVENTS_POLL_MS`, however close to the end of the busy time.
    fn drained(&mut self, now: tokio::time::Instant, got_records: bool, busy: &mut impl BusyMark) {
        use agent_common::maps::{EVENTS_BUSY_MS, EVENTS_IDLE_POLL_MS, EVENTS_POLL_MS};
        use std::time::Duration;
        if got_records {
            self.last_record = now;
            let ahead = (EVENTS_BUSY_MS - EVENTS_POLL_MS) * 1_000_000;
            busy.mark(crate::util::clock::monotonic_ns() + ahead);
        }
        let busy = now.duration_since(self.last_record) < Duration::from_millis(EVENTS_BUSY_MS);
        let every = if busy {
            EVENTS_POLL_MS
        } else {
            EVENTS_IDLE_POLL_MS
        };
        self.next = now + Duration::from_millis(every);
    }
}

async fn serve(agent: &mut Agent, run: &mut Running) -> Result<(), DaemonError> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // High-rate events are submitted without waking us (events.rs
    // `batched`): one that finds the ring empty wakes us, at most once per
    // EVENTS_POLL_MS, and the others wait for this drain, every
    // EVENTS_POLL_MS while busy. Idle, it is only a safety net.
    let mut ring_poll = RingPoll::new(tokio::time::Instant::now());
    loop {
        if let Some(m) = &agent.metrics {
            m.beat();
        }
        // The close linger's 50 ms tick was half of an idle agent's
        // wake-ups; it has work only while a close waits for its flow, and
        // such a close arrives through a turn of this loop.
        let closes = agent.flows.has_closes();
        let jobs_due = run.schedule.next_except(|j| j == Job::Closes && !closes);
        // Checked in this order: under a flood the ring buffer is always
        // ready, and picking among ready sources at random would leave the
        // watchdog, the timer and the operator waiting on chance.
        tokio::select! {
            biased;
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = sighup.recv() => {
                let _ = agent.reload();
                let _ = agent.reload_sigma();
            }
            _ = tokio::time::sleep_until(jobs_due) => {
                for job in run.schedule.due(tokio::time::Instant::now()) {
                    run_job(agent, &run.ebpf, job);
                }
            }
            Some(call) = run.calls.recv() => agent.on_call(call),
            _ = tokio::time::sleep_until(ring_poll.next) => {
                let mut n = 0usize;
                let each = |d: &[u8]| {
                    n += 1;
                    agent.on_ring_record(d);
                };
                // Out of budget, the kernel has forced a wake-up (far more
                // than the budget is unread), so the branch below resumes.
                drain(run.ring.get_mut(), each, DRAIN_BUDGET);
                if n > 0 {
                    agent.sinks.flush();
                }
                ring_poll.drained(tokio::time::Instant::now(), n > 0, &mut run.busy);
            }
            guard = run.ring.readable_mut() => {
                let mut guard = guard?;
                let mut n = 0usize;
                let each = |d: &[u8]| {
                    n += 1;
                    agent.on_ring_record(d);
                };
                let drained = drain(guard.get_inner_mut(), each, DRAIN_BUDGET);
                if drained == Drained::Empty {
                    guard.clear_ready();
                }
                agent.sinks.flush();
                ring_poll.drained(tokio::time::Instant::now(), n > 0, &mut run.busy);
                if drained == Drained::Budget {
                    // A flood the loop cannot keep up with: fleet messages
                    // get a bounded share here (their own branch would
                    // never be reached), then the task yields so the
                    // endpoints run; readiness stays set, so the loop
                    // comes straight back.
                    for _ in 0..INBOUND_PER_DRAIN {
                        match run.inbound.try_recv() {
                            Ok(m) => agent.on_inbound(m),
                            Err(_) => break,
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }
            // After the ring buffer, so a Kafka writer cannot starve detection.
            Some(m) = run.inbound.recv() => agent.on_inbound(m),
        }
    }
}

/// Fleet messages handled after each drain that ran out of budget.
const INBOUND_PER_DRAIN: usize = 16;

/// Most records handled per turn of the loop, and the most time: under a
/// sustained flood the ring buffer never empties, and draining it all
/// in one go would starve the watchdog, the timer and the endpoints.
pub const DRAIN_BUDGET: Budget = Budget {
    records: 4096,
    time: std::time::Duration::from_millis(10),
};

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub records: usize,
    pub time: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The ring buffer was emptied.
    Empty,
    /// The budget ran out with records left.
    Budget,
}

/// Hands queued records to the agent until the ring buffer is empty or the
/// budget is spent. Generic over the source so the budget is unit-tested.
pub fn drain<R: RingSource>(ring: &mut R, mut each: impl FnMut(&[u8]), budget: Budget) -> Drained {
    let start = std::time::Instant::now();
    let mut n = 0usize;
    while ring.next_record(&mut each) {
        n += 1;
        // The clock is read every 16 records (a read costs far less than a
        // record, but not nothing).
        if n >= budget.records || (n.is_multiple_of(16) && start.elapsed() >= budget.time) {
            return Drained::Budget;
        }
    }
    Drained::Empty
}

/// A queue of raw records (the kernel ring buffer, or a test's vector).
pub trait RingSource {
    /// Hands the next record to `f`; false when there is none.
    fn next_record(&mut self, f: &mut impl FnMut(&[u8])) -> bool;
}

impl<T: std::borrow::BorrowMut<aya::maps::MapData>> RingSource for aya::maps::RingBuf<T> {
    fn next_record(&mut self, f: &mut impl FnMut(&[u8])) -> bool {
        match self.next() {
            Some(item) => {
                f(&item);
                true
            }
            None => false,
        }
    }
}

fn run_job(agent: &mut Agent, ebpf: &aya::Ebpf, job: Job) {
    match job {
        Job::Closes if agent.flows.has_closes() => {
            agent.flush_closed(false);
            agent.sinks.flush();
        }
        Job::Closes => {}
        Job::Sweep => {
            agent.sweep(false);
            agent.sinks.flush();
        }
        Job::Stats => {
            let s = agent.stats();
            agent.write_agent(Body::AgentStats(s));
        }
        Job::Watchdog => notify("WATCHDOG=1"),
        Job::Metrics => agent.update_metrics(&telemetry::program_stats(ebpf)),
        Job::Maintain => {
            agent.maintain();
            agent.sinks.flush();
        }
        Job::Approvals if !agent.response.responder.approvals.is_empty() => {
            agent.respond_tick();
            agent.sinks.flush();
        }
        Job::Approvals => {}
        Job::Outputs => agent.sinks.tick(),
        Job::Housekeeping => {
            agent.housekeeping();
            agent.sinks.flush();
        }
        Job::Inventory => agent.publish_inventory(),
    }
}

/// Drains what the kernel already queued, emits every live flow, and
/// hands the sinks what they hold.
fn shutdown(agent: &mut Agent, run: &mut Running) {
    notify("STOPPING=1");
    let rb = run.ring.get_mut();
    while let Some(item) = rb.next() {
        let data = item.to_vec();
        drop(item);
        agent.on_ring_record(&data);
    }
    agent.flush_closed(true);
    agent.sweep(true);
    agent.persist();
    let s = agent.stats();
    agent.write_agent(Body::AgentStop(s));
    if !agent.cfg.control.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&agent.cfg.control.socket);
    }
    agent.sinks.close();
    tracing::info!("vigil stopped; programs detached");
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod drain_tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    impl RingSource for VecDeque<Vec<u8>> {
        fn next_record(&mut self, f: &mut impl FnMut(&[u8])) -> bool {
            match self.pop_front() {
                Some(r) => {
                    f(&r);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn the_ring_is_polled_fast_while_records_come_and_slowly_when_idle() {
        use agent_common::maps::{EVENTS_BUSY_MS, EVENTS_IDLE_POLL_MS, EVENTS_POLL_MS};
        // A record the kernel did not wake us for came within EVENTS_POLL_MS
        // of a wake-up that read records: the fast polling must outlast it.
        const { assert!(EVENTS_BUSY_MS > EVENTS_POLL_MS) };
        struct Marks(Vec<u64>);
        impl BusyMark for Marks {
            fn mark(&mut self, until_ns: u64) {
                self.0.push(until_ns);
            }
        }
        let mut marks = Marks(Vec::new());
        let ms = Duration::from_millis;
        let t0 = tokio::time::Instant::now();
        let mut p = RingPoll::new(t0);
        let before = crate::util::clock::monotonic_ns();
        p.drained(t0, true, &mut marks);
        // The kernel is told to stay quiet for less than the fast polling.
        assert_eq!(marks.0.len(), 1);
        let quiet = marks.0[0] - before;
        assert!(quiet >= (EVENTS_BUSY_MS - EVENTS_POLL_MS) * 1_000_000);
        assert_eq!(p.next, t0 + ms(EVENTS_POLL_MS));
        // Empty drains keep the fast pace until EVENTS_BUSY_MS pass.
        let t1 = t0 + ms(EVENTS_BUSY_MS - 1);
        p.drained(t1, false, &mut marks);
        assert_eq!(p.next, t1 + ms(EVENTS_POLL_MS));
        let t2 = t0 + ms(EVENTS_BUSY_MS);
        p.drained(t2, false, &mut marks);
        assert_eq!(p.next, t2 + ms(EVENTS_IDLE_POLL_MS));
        // A record (a wake-up) makes it fast again.
        let t3 = t2 + ms(1);
        p.drained(t3, true, &mut marks);
        assert_eq!(p.next, t3 + ms(EVENTS_POLL_MS));
        assert_eq!(marks.0.len(), 2, "only drains with records mark");
    }

    #[test]
    fn a_drain_stops_at_its_record_budget_and_resumes_where_it_stopped() {
        let mut ring: VecDeque<Vec<u8>> =
            (0..10_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let budget = Budget {
            records: 4096,
            time: Duration::from_secs(3600),
        };
        let mut seen = Vec::new();
        let mut each = |d: &[u8]| seen.push(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
        assert_eq!(drain(&mut ring, &mut each, budget), Drained::Budget);
        assert_eq!(drain(&mut ring, &mut each, budget), Drained::Budget);
        assert_eq!(drain(&mut ring, &mut each, budget), Drained::Empty);
        assert_eq!(seen, (0..10_000).collect::<Vec<u32>>());
    }

    #[test]
    fn a_drain_stops_when_its_time_is_spent() {
        let mut ring: VecDeque<Vec<u8>> = (0..1_000).map(|_| vec![0u8]).collect();
        let budget = Budget {
            records: usize::MAX,
            time: Duration::from_millis(20),
        };
        let mut n = 0;
        let slow = |_: &[u8]| {
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(drain(&mut ring, slow, budget), Drained::Budget);
        // Checked every 16 records: 16 records of 2 ms each are past 20 ms.
        assert_eq!(n, 16);
        assert_eq!(ring.len(), 1_000 - 16);
    }
}
