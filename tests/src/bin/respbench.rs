//! Time to block (`cargo xtask bench`, root): from the authentication
//! failure that decides a brute force to the first connection the attacker
//! can no longer make, for Vigil (shipped brute-force playbook, kernel
//! blocklist) and fail2ban (Debian package, pyinotify backend, nftables
//! action), on the same hydra attack against the same sshd.
//!
//! Both are timed the same way. T0: the kernel timestamp (PAM uretprobe,
//! seen by a Vigil agent in both runs) of the failure at which the tool
//! decides: Vigil's alert-raising event; fail2ban's `maxretry`-th failure.
//! T1: the start of the first TCP connect from the attacker's namespace
//! that fails (one every 2 ms to an unrelated port, so both tools must
//! block the whole address: Vigil always does, fail2ban with
//! `nftables[type=allports]`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::*;

/// fail2ban bans at this many failures: the count at which Vigil's default
/// brute-force bucket raises its alert (the runs print both counts).
const MAXRETRY: usize = 5;
const S: u8 = 240;

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Vigil,
    Fail2ban,
}

struct Sample {
    latency_ms: f64,
    /// Vigil only: deciding event to the block action record's timestamp.
    internal_ms: Option<f64>,
    failures_before: usize,
}

fn rfc3339_ns(ts: &str) -> Option<i128> {
    // 2026-11-25T20:30:53.123456Z — date via days-from-civil, then the clock.
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    let frac_ns: i128 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
}

/// A fail2ban configuration: the Debian package's files, its jail.d
/// defaults removed, one sshd jail on the test sshd's log.
fn fail2ban_conf(dir: &Path, sshd_log: &Path) -> PathBuf {
    let conf = dir.join("fail2ban");
    let _ = std::fs::remove_dir_all(&conf);
    run("cp", &["-r", "/etc/fail2ban", &conf.to_string_lossy()]);
    for e in std::fs::read_dir(conf.join("jail.d"))
        .expect("jail.d")
        .flatten()
    {
        let _ = std::fs::remove_file(e.path());
    }
    std::fs::write(
        conf.join("fail2ban.local"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {0}/f2b.log\nsocket = {0}/f2b.sock\n\
             pidfile = {0}/f2b.pid\ndbfile = :memory:\n",
            conf.display()
        ),
    )
    .expect("fail2ban.local");
    // sshd -E writes bare messages (no syslog prefix); only the prefix
    // pattern changes, the stock failregex still decides.
    std::fs::write(
        conf.join("filter.d/sshd.local"),
        "[Definition]\nprefregex = ^<F-MLFID></F-MLFID>(?:(?:error|fatal): (?:PAM: )?)?<F-CONTENT>.+</F-CONTENT>$\n",
    )
    .expect("sshd.local");
    std::fs::write(
        conf.join("jail.local"),
        format!(
            "[sshd]\nenabled = true\nport = 2222\nlogpath = {}\nbackend = pyinotify\n\
             datepattern = {{NONE}}\nmaxretry = {MAXRETRY}\nfindtime = 600\nbantime = 600\n\
             action = nftables[type=allports]\n",
            sshd_log.display()
        ),
    )
    .expect("jail.local");
    conf
}

fn fail2ban_ready(topo: &Topology, conf: &Path) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &topo.h, "fail2ban-client", "-c"])
        .arg(conf)
        .args(["status", "sshd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn read_line(child: &mut Child) -> Value {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read");
    serde_json::from_str(&line).unwrap_or(Value::Null)
}

fn once(tool: Tool, i: usize, books: &Path) -> Option<Sample> {
    let topo = Topology::new("rsb", S);
    let pins = Pins::new(&format!("rsb{i}"));
    let dir = TempDir::new("rsb");
    let (mode, enforce, playbooks) = match tool {
        Tool::Vigil => ("enforce", "true", books.to_path_buf()),
        Tool::Fail2ban => ("dry-run", "false", dir.0.join("none")),
    };
    let config = format!(
        "stats_interval_s: 0\nmetrics:\n  listen: \"\"\ncontrol:\n  socket: \"\"\n\
         enforce:\n  enabled: {enforce}\n  pin_dir: {}\n  management_cidrs: [\"10.{S}.3.0/24\"]\n\
         response:\n  mode: {mode}\nplaybooks:\n  dir: {}\n",
        pins.pin_dir,
        playbooks.display()
    );
    let mut agent = Agent::start_in(Some(&topo.h), &config, dir);
    let sshd = Sshd::start(&topo);
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7500"]);
    let mut f2b = None;
    if tool == Tool::Fail2ban {
        let conf = fail2ban_conf(&agent.dir.0, &sshd.log);
        f2b = Some(GroupGuard::spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &topo.h,
                    "fail2ban-server",
                    "-f",
                    "-x",
                    "-c",
                ])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        let start = Instant::now();
        while !fail2ban_ready(&topo, &conf) {
            assert!(start.elapsed() < PATIENCE, "fail2ban did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let a = topo.peers[0].clone();
    let mut watch = topo.spawn_raw(
        &a,
        &[
            "block-watch",
            &format!("{}:7500", topo.host_ip(1)),
            "2",
            "90",
        ],
    );
    read_line(&mut watch);
    let words: Vec<String> = (0..40).map(|k| format!("guess-{k}")).collect();
    let list = agent.dir.0.join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").expect("wordlist");
    let hydra = GroupGuard::spawn(
        Command::new("ip")
            .args([
                "netns", "exec", &a, "hydra", "-I", "-t", "4", "-l", USER, "-P",
            ])
            .arg(&list)
            .arg(format!("ssh://{}:2222", topo.host_ip(1)))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let result = read_line(&mut watch);
    drop(hydra);
    let _ = watch.wait();
    // Give the agent a moment to write the last records, then read them.
    std::thread::sleep(Duration::from_millis(300));
    let attacker = topo.peer_ip(1);
    let records = agent.records();
    drop(f2b);
    agent.stop();
    let t1 = result["blocked_at_ns"].as_u64()? as i128;
    let mut failures: Vec<i128> = records
        .iter()
        .filter(|r| {
            r["kind"] == "auth_attempt"
                && r["result"] == "failure"
                && r["rhost"] == attacker.as_str()
        })
        .filter_map(|r| rfc3339_ns(r["ts"].as_str()?))
        .collect();
    failures.sort();
    let (t0, internal_ms) = match tool {
        Tool::Vigil => {
            let alert = records.iter().find(|r| {
                r["kind"] == "alert"
                    && r["detector"] == "brute_force"
                    && r["entities"]["src_ip"] == attacker.as_str()
            })?;
            let t0 = rfc3339_ns(alert["ts"].as_str()?)?;
            let applied = records.iter().find(|r| {
                r["kind"] == "action" && r["action"] == "block" && r["state"] == "applied"
            })?;
            let t_act = rfc3339_ns(applied["ts"].as_str()?)?;
            (t0, Some((t_act - t0) as f64 / 1e6))
        }
        Tool::Fail2ban => (*failures.get(MAXRETRY - 1)?, None),
    };
    Some(Sample {
        latency_ms: (t1 - t0) as f64 / 1e6,
        internal_ms,
        failures_before: failures.iter().filter(|t| **t <= t0).count(),
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    require_root();
    let runs: usize = std::env::var("VIGIL_RESPBENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let books = TempDir::new("rsb-books");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/brute_force_response.yaml");
    std::fs::copy(&src, books.0.join("brute_force_response.yaml")).expect("copy playbook");
    println!("time to block: hydra -t 4 against sshd, {runs} runs per tool");
    let mut summary = Vec::new();
    for (tool, name) in [(Tool::Vigil, "vigil"), (Tool::Fail2ban, "fail2ban")] {
        let mut lat = Vec::new();
        let mut internal = Vec::new();
        let mut failures = Vec::new();
        let mut lost = 0;
        for i in 0..runs {
            match once(tool, i, &books.0) {
                Some(s) => {
                    lat.push(s.latency_ms);
                    internal.extend(s.internal_ms);
                    failures.push(s.failures_before);
                }
                None => lost += 1,
            }
        }
        lat.sort_by(f64::total_cmp);
        internal.sort_by(f64::total_cmp);
        println!(
            "  {name:<9} p50 {:>9.2} ms  p99 {:>9.2} ms  min {:>8.2}  max {:>8.2}  (n={}, no block seen {lost}; failures at decision {:?})",
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            lat.first().copied().unwrap_or(f64::NAN),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len(),
            failures
        );
        if !internal.is_empty() {
            println!(
                "  {:<9} deciding event to the block action record: p50 {:.3} ms p99 {:.3} ms",
                "",
                pct(&internal, 50.0),
                pct(&internal, 99.0)
            );
        }
        summary.push((name, pct(&lat, 50.0)));
    }
    if let [(_, v), (_, f)] = summary[..] {
        println!("  fail2ban median / vigil median = {:.1}x", f / v);
    }
}
