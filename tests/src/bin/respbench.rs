//! Time to block (`cargo xtask bench`, root): from the authentication
//! failure that decides a brute force to the first connection the attacker
//! can no longer make, for Vigil (shipped brute-force playbook, kernel
//! blocklist), fail2ban (Debian package, pyinotify backend, nftables
//! action) and CrowdSec (Debian's crowdsec 1.4.6 with its vendored hub,
//! the `crowdsecurity/ssh-bf` scenario on sshd's syslog file written by
//! rsyslog, and crowdsec-firewall-bouncer 0.0.25 in nftables mode at its
//! default 10 s poll and at 100 ms), on the same hydra attack against the
//! same sshd.
//!
//! All are timed the same way. T0: the kernel timestamp (PAM uretprobe,
//! seen by a Vigil agent in every run) of the failure at which the tool
//! decides: Vigil's alert-raising event; fail2ban's `maxretry`-th failure;
//! CrowdSec's sixth (ssh-bf is a leaky bucket of capacity 5: the sixth
//! failure overflows it).
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

/// ssh-bf's bucket holds 5 failures; the sixth overflows it.
const CROWDSEC_DECIDES_AT: usize = 6;

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Vigil,
    Fail2ban,
    /// The bouncer's `update_frequency`.
    CrowdSec(&'static str),
}

struct Sample {
    latency_ms: f64,
    /// Vigil only: deciding event to the block action record's timestamp.
    internal_ms: Option<f64>,
    failures_before: usize,
    /// The attacker's first failed password (PAM return) to the block: the
    /// same start for every tool.
    from_first_ms: Option<f64>,
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

/// rsyslogd on `/dev/log`, writing sshd's messages to `auth.log` in the
/// traditional format a packaged Debian host has in /var/log/auth.log.
/// Killed and its socket removed on drop.
struct Syslog {
    _child: GroupGuard,
    log: PathBuf,
    /// The same lines with rsyslog's reception time to the microsecond:
    /// when each line became readable, which is CrowdSec's T0.
    precise: PathBuf,
}

impl Syslog {
    fn start(dir: &Path) -> Syslog {
        // Another daemon owning /dev/log would get sshd's lines instead.
        assert!(
            !Path::new("/dev/log").exists(),
            "/dev/log exists: stop the host's syslog daemon for the CrowdSec runs"
        );
        let log = dir.join("auth.log");
        let precise = dir.join("auth-precise.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "module(load=\"imuxsock\" SysSock.RateLimit.Interval=\"0\")\n\
                 $WorkDirectory {}\n\
                 $ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat\n\
                 auth,authpriv.* {}\n\
                 template(name=\"precise\" type=\"string\" string=\"%timegenerated:::date-rfc3339%|%msg%\\n\")\n\
                 auth,authpriv.* action(type=\"omfile\" file=\"{}\" template=\"precise\")\n",
                dir.display(),
                log.display(),
                precise.display()
            ),
        )
        .expect("rsyslog.conf");
        let child = GroupGuard::spawn(
            Command::new("rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        while !Path::new("/dev/log").exists() {
            assert!(start.elapsed() < PATIENCE, "rsyslogd did not open /dev/log");
            std::thread::sleep(Duration::from_millis(50));
        }
        Syslog {
            _child: child,
            log,
            precise,
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/dev/log");
    }
}

/// CrowdSec's agent + local API and its firewall bouncer, in namespace `ns`
/// with a private copy of the package's configuration and an empty
/// database, so no run sees another's decisions. Everything is removed
/// with `dir` and the namespace.
struct CrowdSec {
    _agent: GroupGuard,
    _bouncer: GroupGuard,
}

fn cscli(cfg: &Path, args: &[&str]) {
    let out = Command::new("cscli")
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .expect("cscli");
    assert!(
        out.status.success(),
        "cscli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl CrowdSec {
    fn start(ns: &str, dir: &Path, auth_log: &Path, poll: &str) -> CrowdSec {
        let conf = dir.join("crowdsec");
        let data = dir.join("crowdsec-data");
        let _ = std::fs::remove_dir_all(&conf);
        std::fs::create_dir_all(&data).expect("data dir");
        run("cp", &["-a", "/etc/crowdsec", &conf.to_string_lossy()]);
        // The hub's whitelist parser drops private source addresses, and the
        // attacker here is 10.x in a namespace; a real attacker would not be.
        let _ = std::fs::remove_file(conf.join("parsers/s02-enrich/whitelists.yaml"));
        let _ = std::fs::remove_dir_all(conf.join("acquis.d"));
        std::fs::write(
            conf.join("acquis.yaml"),
            format!(
                "filenames:\n  - {}\nlabels:\n  type: syslog\n",
                auth_log.display()
            ),
        )
        .expect("acquis.yaml");
        let c = conf.display();
        let cfg = conf.join("bench.yaml");
        // No online_client: the central API is never contacted.
        std::fs::write(
            &cfg,
            format!(
                "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {d}\n  working_dir: .\n\
                 config_paths:\n  config_dir: {c}/\n  data_dir: {d}/\n  simulation_path: {c}/simulation.yaml\n  \
                 hub_dir: /var/lib/crowdsec/hub/\n  index_path: /var/lib/crowdsec/hub/.index.json\n  \
                 notification_dir: {c}/notifications/\n  plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 crowdsec_service:\n  acquisition_path: {c}/acquis.yaml\n  parser_routines: 1\n\
                 cscli:\n  output: human\n\
                 db_config:\n  type: sqlite\n  db_path: {d}/crowdsec.db\n  use_wal: true\n\
                 api:\n  client:\n    credentials_path: {c}/local_api_credentials.yaml\n  \
                 server:\n    listen_uri: 127.0.0.1:8080\n    profiles_path: {c}/profiles.yaml\n    \
                 console_path: {c}/console.yaml\n    trusted_ips: [127.0.0.1]\n\
                 prometheus:\n  enabled: false\n",
                d = data.display()
            ),
        )
        .expect("crowdsec config");
        let creds = conf.join("local_api_credentials.yaml");
        let _ = std::fs::remove_file(&creds);
        cscli(
            &cfg,
            &[
                "machines",
                "add",
                "respbench",
                "--auto",
                "--force",
                "-f",
                &creds.to_string_lossy(),
            ],
        );
        let key = "6e3b1f0a9c2d4e5f8a7b6c5d4e3f2a1b";
        cscli(&cfg, &["bouncers", "add", "respbench-bouncer", "-k", key]);
        let agent = GroupGuard::spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, "crowdsec", "-c"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        while !port_open_from(ns, "127.0.0.1:8080") {
            assert!(
                start.elapsed() < PATIENCE,
                "crowdsec's local API did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let bcfg = dir.join("bouncer.yaml");
        std::fs::write(
            &bcfg,
            format!(
                "mode: nftables\nupdate_frequency: {poll}\ndaemonize: false\nlog_mode: file\n\
                 log_dir: {d}/\nlog_level: info\napi_url: http://127.0.0.1:8080/\napi_key: {key}\n\
                 disable_ipv6: true\ndeny_action: DROP\ndeny_log: false\n\
                 supported_decisions_types:\n  - ban\n\
                 nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    \
                 chain: crowdsec-chain\n  ipv6:\n    enabled: false\n",
                d = dir.display()
            ),
        )
        .expect("bouncer config");
        let bouncer = GroupGuard::spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, "crowdsec-firewall-bouncer", "-c"])
                .arg(&bcfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // Ready when the bouncer has made its table in the namespace.
        let start = Instant::now();
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "list", "tables"])
                .output()
                .expect("nft");
            if String::from_utf8_lossy(&out.stdout).contains("crowdsec") {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the bouncer made no nftables table"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        CrowdSec {
            _agent: agent,
            _bouncer: bouncer,
        }
    }
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
        Tool::Fail2ban | Tool::CrowdSec(_) => ("dry-run", "false", dir.0.join("none")),
    };
    let config = format!(
        "stats_interval_s: 0\nmetrics:\n  listen: \"\"\ncontrol:\n  socket: \"\"\n\
         enforce:\n  enabled: {enforce}\n  pin_dir: {}\n  management_cidrs: [\"10.{S}.3.0/24\"]\n\
         response:\n  mode: {mode}\nplaybooks:\n  dir: {}\n",
        pins.pin_dir,
        playbooks.display()
    );
    let mut agent = Agent::start_in(Some(&topo.h), &config, dir);
    let mut syslog = None;
    let mut crowdsec = None;
    let sshd = match tool {
        Tool::CrowdSec(_) => {
            syslog = Some(Syslog::start(&agent.dir.0));
            Sshd::start_syslog(&topo)
        }
        _ => Sshd::start(&topo),
    };
    if let (Tool::CrowdSec(poll), Some(log)) = (tool, &syslog) {
        crowdsec = Some(CrowdSec::start(&topo.h, &agent.dir.0, &log.log, poll));
    }
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
    let precise_log = syslog
        .as_ref()
        .map(|s| s.precise.clone())
        .unwrap_or_default();
    if matches!(tool, Tool::CrowdSec(_)) && result["blocked_at_ns"].as_u64().is_none() {
        // Say why: what sshd logged and what CrowdSec made of it.
        for f in [
            "auth.log",
            "crowdsec.log",
            "crowdsec_api.log",
            "crowdsec-firewall-bouncer.log",
        ] {
            for p in [
                agent.dir.0.join(f),
                agent.dir.0.join("crowdsec-data").join(f),
            ] {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    let tail: Vec<&str> = t.lines().rev().take(8).collect();
                    eprintln!(
                        "--- {}:\n{}",
                        p.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }
    drop(f2b);
    drop(crowdsec);
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
        Tool::CrowdSec(_) => {
            let counted = crowdsec_failed_auth_lines(&precise_log, &attacker);
            let Some(t0) = counted.get(CROWDSEC_DECIDES_AT - 1) else {
                eprintln!(
                    "  only {} failed-auth lines before the block",
                    counted.len()
                );
                return None;
            };
            (*t0, None)
        }
    };
    Some(Sample {
        latency_ms: (t1 - t0) as f64 / 1e6,
        internal_ms,
        failures_before: failures.iter().filter(|t| **t <= t0).count(),
        from_first_ms: failures.first().map(|f| (t1 - f) as f64 / 1e6),
    })
}

/// Reception times of the lines about `ip` that the hub's sshd-logs parser
/// marks `ssh_failed-auth` (each one fills ssh-bf's bucket by one). With
/// PAM, one wrong password makes two: pam_unix's "authentication failure"
/// (logged before PAM's failure delay) and sshd's "Failed password".
fn crowdsec_failed_auth_lines(precise: &Path, ip: &str) -> Vec<i128> {
    let text = std::fs::read_to_string(precise).unwrap_or_default();
    let mut at = Vec::new();
    for line in text.lines() {
        let Some((ts, msg)) = line.split_once('|') else {
            continue;
        };
        let counted = (msg.contains("(sshd:auth): authentication failure")
            && msg.contains(&format!("rhost={ip} ")))
            || (msg.contains("Failed ") && msg.contains(&format!(" from {ip} port ")))
            || (msg.contains("Invalid user") && msg.contains(&format!(" from {ip}")))
            || ((msg.contains("Disconnected from authenticating user")
                || msg.contains("Disconnected from invalid user")
                || msg.contains("Connection closed by authenticating user")
                || msg.contains("Connection closed by invalid user"))
                && msg.contains(&format!(" {ip} port "))
                && msg.contains("[preauth]"));
        if counted {
            // 2026-12-01T10:55:02.123456+00:00
            let utc = ts.trim().trim_end_matches("+00:00");
            if let Some(ns) = rfc3339_ns(utc) {
                at.push(ns);
            }
        }
    }
    at.sort();
    at
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
    // VIGIL_RESPBENCH_TOOLS=vigil,crowdsec-100ms picks columns (all by default).
    let only = std::env::var("VIGIL_RESPBENCH_TOOLS").unwrap_or_default();
    println!("time to block: hydra -t 4 against sshd, {runs} runs per tool");
    let mut summary = Vec::new();
    for (tool, name) in [
        (Tool::Vigil, "vigil"),
        (Tool::Fail2ban, "fail2ban"),
        (Tool::CrowdSec("10s"), "crowdsec-10s"),
        (Tool::CrowdSec("100ms"), "crowdsec-100ms"),
    ] {
        if !only.is_empty() && !only.split(',').any(|t| t == name) {
            continue;
        }
        let mut lat = Vec::new();
        let mut internal = Vec::new();
        let mut failures = Vec::new();
        let mut from_first = Vec::new();
        let mut lost = 0;
        for i in 0..runs {
            match once(tool, i, &books.0) {
                Some(s) => {
                    lat.push(s.latency_ms);
                    internal.extend(s.internal_ms);
                    failures.push(s.failures_before);
                    from_first.extend(s.from_first_ms);
                }
                None => lost += 1,
            }
        }
        lat.sort_by(f64::total_cmp);
        internal.sort_by(f64::total_cmp);
        println!(
            "  {name:<14} p50 {:>9.2} ms  p99 {:>9.2} ms  min {:>8.2}  max {:>8.2}  (n={}, no block seen {lost}; failures at decision {:?})",
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            lat.first().copied().unwrap_or(f64::NAN),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len(),
            failures
        );
        from_first.sort_by(f64::total_cmp);
        if !from_first.is_empty() {
            println!(
                "  {:<14} first failed password to block: p50 {:.1} ms p99 {:.1} ms",
                "",
                pct(&from_first, 50.0),
                pct(&from_first, 99.0)
            );
        }
        if !internal.is_empty() {
            println!(
                "  {:<14} deciding event to the block action record: p50 {:.3} ms p99 {:.3} ms",
                "",
                pct(&internal, 50.0),
                pct(&internal, 99.0)
            );
        }
        summary.push((name, pct(&lat, 50.0)));
    }
    if let Some((_, v)) = summary.iter().find(|(n, _)| *n == "vigil") {
        for (name, m) in summary.iter().filter(|(n, _)| *n != "vigil") {
            println!("  {name} median / vigil median = {:.1}x", m / v);
        }
    }
}
