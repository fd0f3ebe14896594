//! What Vigil costs the host (`cargo xtask bench`, root): an exec storm
//! (fork + exec of /bin/true from two threads, bounded) without the agent
//! and with it, in one run, several rounds, alternating which goes first. With the agent: its
//! CPU time and RSS, per-program kernel cost (`bpf_stats` run_time_ns /
//! run_cnt, read from the agent's own /metrics) and events lost in the
//! kernel (ring buffer reserve failures, which the agent counts).
//!
//! The agent runs its default configuration except: state and output in a
//! scratch directory, /metrics on a private port, and enforcement off (it
//! would attach XDP to this host's interfaces and leave pinned links; it
//! runs on no exec path). `bpf_stats` (off in the default configuration)
//! is held on by this bench for the whole run, without and with the agent
//! alike, so the per-program figures exist and the comparison is fair.

use std::time::{Duration, Instant};

use vigil_integration::*;

const ROUNDS: usize = 3;
const THREADS: usize = 2;
const EXECS_PER_THREAD: usize = 2_000;
const METRICS: &str = "127.0.0.1:19184";
/// Programs on the exec path and what else the storm touches.
const PROGRAMS: &[&str] = &[
    "vigil_exec",
    "vigil_fork_btf",
    "vigil_fork_tp",
    "vigil_exit",
    "vigil_file_opened",
    "vigil_file_write",
];

/// Fork + exec + wait of /bin/true, `THREADS` at a time: execs per second.
fn exec_storm() -> f64 {
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..EXECS_PER_THREAD {
                    let ok = std::process::Command::new("/bin/true")
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false);
                    assert!(ok, "/bin/true failed");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("storm thread");
    }
    (THREADS * EXECS_PER_THREAD) as f64 / start.elapsed().as_secs_f64()
}

fn metrics() -> String {
    http_get(METRICS, "/metrics").1
}

fn series(text: &str, name: &str, program: &str) -> f64 {
    metric(text, &format!("{name}{{program=\"{program}\"}}")).unwrap_or(0.0)
}

/// utime + stime of `pid` in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / hz
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the agent's metrics job has run after now (it refreshes the
/// program counters once a second).
fn settle() {
    std::thread::sleep(Duration::from_millis(2_500));
}

struct WithAgent {
    rate: f64,
    cpu_pct: f64,
    rss_mb: f64,
    hwm_mb: f64,
    /// (program, runs, ns per run) during the storm.
    programs: Vec<(String, f64, f64)>,
    lost: f64,
}

fn with_agent() -> WithAgent {
    let mut agent = Agent::start_with(&format!(
        "enforce:\n  enabled: false\nmetrics:\n  listen: \"{METRICS}\"\n"
    ));
    let pid = agent.pid().expect("agent pid");
    settle();
    let m0 = metrics();
    let c0 = cpu_s(pid);
    let t0 = Instant::now();
    let rate = exec_storm();
    let storm_s = t0.elapsed().as_secs_f64();
    let c1 = cpu_s(pid);
    let rss_mb = status_kb(pid, "VmRSS:") as f64 / 1024.0;
    settle();
    let m1 = metrics();
    let programs = PROGRAMS
        .iter()
        .map(|p| {
            let runs = series(&m1, "vigil_program_runs_total", p)
                - series(&m0, "vigil_program_runs_total", p);
            let secs = series(&m1, "vigil_program_run_time_seconds_total", p)
                - series(&m0, "vigil_program_run_time_seconds_total", p);
            let ns = if runs > 0.0 { secs * 1e9 / runs } else { 0.0 };
            (p.to_string(), runs, ns)
        })
        .filter(|(_, runs, _)| *runs > 0.0)
        .collect();
    let lost = metric(&m1, "vigil_kernel_reserve_failures_total").unwrap_or(0.0)
        - metric(&m0, "vigil_kernel_reserve_failures_total").unwrap_or(0.0);
    let hwm_mb = status_kb(pid, "VmHWM:") as f64 / 1024.0;
    assert!(agent.stop(), "agent did not stop cleanly");
    WithAgent {
        rate,
        cpu_pct: (c1 - c0) / storm_s * 100.0,
        rss_mb,
        hwm_mb,
        programs,
        lost,
    }
}

fn main() {
    require_root();
    let _stats = vigil::kernel::stats::enable_run_time().expect("BPF_ENABLE_STATS");
    println!(
        "host cost: exec storm ({THREADS} threads x {EXECS_PER_THREAD} fork+exec of /bin/true), \
         without and with the agent, {ROUNDS} rounds"
    );
    for round in 1..=ROUNDS {
        // Alternate which goes first: the machine's state drifts.
        let (bare, w) = if round % 2 == 1 {
            let bare = exec_storm();
            (bare, with_agent())
        } else {
            let w = with_agent();
            (exec_storm(), w)
        };
        println!(
            "  round {round}: without {bare:.0} execs/s, with {:.0} execs/s ({:+.1} %); \
             agent CPU {:.1} % of one core, RSS {:.1} MB (peak {:.1} MB), events lost {}",
            w.rate,
            (w.rate / bare - 1.0) * 100.0,
            w.cpu_pct,
            w.rss_mb,
            w.hwm_mb,
            w.lost
        );
        for (p, runs, ns) in &w.programs {
            println!("    {p:<18} {runs:>8.0} runs  {ns:>8.0} ns/run");
        }
    }
}
