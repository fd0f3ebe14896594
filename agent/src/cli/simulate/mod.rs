//! `vigil simulate`: stages safe stand-ins for the detectors next to the
//! running agent and reports which detection it raised, how long that
//! took, and what the loaded playbooks would do (evaluated here, dry-run;
//! the stand-ins' only routable address is one the simulation owns).

mod exfil;
mod report;
mod standin;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil::response::plan;
use vigil::response::playbook::{Mode, Playbook};
use vigil::service::control::{self, Request};

use report::{Outcome, Report, Row, Seen};
use standin::StandinError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ctrl-C and SIGTERM only set a flag: every wait checks it, returns, and
/// the guards' `Drop` removes what was created.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Identity of an alert record: a count update of an old alert is new.
fn key(a: &Value) -> String {
    format!("{}#{}", a["id"], a["count"])
}

/// Reads the agent's recent alerts over the control socket.
struct Watch<'a> {
    socket: &'a Path,
    seen: HashSet<String>,
}

impl Watch<'_> {
    fn recent(&self) -> anyhow::Result<Vec<Value>> {
        let v = control::request(self.socket, &Request::Alerts { follow: false })?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Marks everything raised so far as old.
    fn mark(&mut self) -> anyhow::Result<()> {
        for a in self.recent()? {
            self.seen.insert(key(&a));
        }
        Ok(())
    }

    /// Waits (bounded) for a new alert `want` accepts.
    fn wait(
        &mut self,
        timeout: Duration,
        want: &dyn Fn(&Value) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        let start = Instant::now();
        loop {
            for a in self.recent()? {
                if !self.seen.contains(&key(&a)) && want(&a) {
                    self.seen.insert(key(&a));
                    return Ok(Some(a));
                }
            }
            if interrupted() {
                anyhow::bail!(StandinError::Interrupted);
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn has_technique(a: &Value, prefix: &str) -> bool {
    a["techniques"].as_array().into_iter().flatten().any(|t| {
        t["id"]
            .as_str()
            .is_some_and(|id| vigil::response::playbook::technique_matches(prefix, id))
    })
}

fn seen(a: &Value) -> Seen {
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
    Seen {
        id: s("id"),
        detector: s("detector"),
        severity: s("severity"),
        techniques: a["techniques"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect(),
        summary: s("summary"),
    }
}

struct Ctx<'a> {
    watch: Watch<'a>,
    timeout: Duration,
    playbooks: Vec<Playbook>,
    mode: Mode,
    /// The agent re-reports a repeat of an open alert at most this often.
    update_interval_s: f64,
}

impl Ctx<'_> {
    /// Runs one stand-in and waits for the alert `want` accepts.
    fn row(
        &mut self,
        standin: &'static str,
        expected: &'static str,
        act: impl FnOnce() -> Result<String, StandinError>,
        want: &dyn Fn(&Value) -> bool,
    ) -> anyhow::Result<Row> {
        self.watch.mark()?;
        let start = Instant::now();
        let mut row = Row {
            standin,
            expected,
            outcome: Outcome::Passed,
            alert: None,
            seconds: None,
            response: Vec::new(),
            detail: String::new(),
        };
        match act() {
            Ok(detail) => row.detail = detail,
            Err(StandinError::Interrupted) => anyhow::bail!(StandinError::Interrupted),
            Err(StandinError::Needs(why)) => {
                row.outcome = Outcome::Skipped(why);
                return Ok(row);
            }
            Err(e) => {
                row.outcome = Outcome::Failed(format!("the stand-in could not run: {e}"));
                return Ok(row);
            }
        }
        match self.watch.wait(self.timeout, want)? {
            Some(a) => {
                row.seconds = Some(start.elapsed().as_secs_f64());
                row.response = match plan::alert_from_json(&a) {
                    Ok(alert) => plan::plan(&self.playbooks, self.mode, &alert),
                    Err(e) => {
                        row.detail
                            .push_str(&format!(" (response not evaluated: {e})"));
                        Vec::new()
                    }
                };
                row.alert = Some(seen(&a));
            }
            None => {
                row.outcome = Outcome::Failed(format!(
                    "no {expected} alert within {} s (a repeat within {:.0} s of an earlier run is only counted: run again later)",
                    self.timeout.as_secs(),
                    self.update_interval_s
                ))
            }
        }
        Ok(row)
    }
}

pub fn run(config: Option<&Path>, json: bool, timeout_s: u64) -> anyhow::Result<bool> {
    catch_signals();
    let cfg = super::load_config(config)?;
    let socket = super::socket(config)?;
    let status = control::request(&socket, &Request::Status)
        .map_err(|e| anyhow::anyhow!("no running agent answers on {}: {e}", socket.display()))?;
    let mode = status["response_mode"]
        .as_str()
        .and_then(Mode::parse)
        .unwrap_or(cfg.response.mode);
    let playbooks = if cfg.playbooks.dir.is_dir() {
        vigil::response::playbook::load_dir(&cfg.playbooks.dir)?
    } else {
        Vec::new()
    };
    let timeout = Duration::from_secs(timeout_s.clamp(1, 600));
    let mut ctx = Ctx {
        watch: Watch {
            socket: &socket,
            seen: HashSet::new(),
        },
        timeout,
        playbooks,
        mode,
        update_interval_s: cfg.detect.update_interval_s,
    };
    let mut rows = Vec::new();
    let mut addresses = Vec::new();

    // The namespace rows: a beacon, an admin-port sweep and a port sweep
    // from the simulation's own namespace, and the exfiltration rows into it.
    let n = cfg.detect.scan.port_threshold + 5;
    // Bounded lifetime: each row's stand-in and wait take at most about
    // two timeouts.
    let net = standin::SimNet::create(timeout.as_secs() * 12 + 60);
    match net {
        Ok(net) => {
            addresses.push(standin::SIM_ADDR.to_string());
            addresses.push(standin::HOST_ADDR.to_string());
            addresses.push(standin::SINK_ADDR.to_string());
            addresses.push("10.255.86.0/24 (only inside the stand-in namespace)".to_string());
            let sim = standin::SIM_ADDR.to_string();
            let host = standin::HOST_ADDR.to_string();
            // A jittered beacon, only when the config's shortest window
            // is short enough to fill within the row's timeout.
            let window = shortest_beacon_window(&cfg);
            if window * 1.2 <= timeout.as_secs_f64() {
                let count = 48;
                let interval = Duration::from_secs_f64(window / 40.0);
                rows.push(ctx.row(
                    "jittered beacon",
                    "beacon T1071",
                    || {
                        let (ok, err) = standin::beacon(&net, count, interval, 0.2, &interrupted)?;
                        Ok(format!(
                            "{ok} of {count} connections from {} to {} every {:.2} s ± 20 % (the config's shortest beacon window is {window:.0} s){}",
                            standin::SIM_ADDR,
                            standin::HOST_ADDR,
                            interval.as_secs_f64(),
                            err.map(|e| format!("; last connect error: {e}")).unwrap_or_default()
                        ))
                    },
                    &|a| {
                        a["detector"] == "beacon"
                            && has_technique(a, "T1071")
                            && a["entities"]["dst_ip"] == host.as_str()
                    },
                )?);
            }
            // A failed admin-port sweep of internal peers that exist
            // only inside the stand-in namespace.
            let l = &cfg.detect.lateral;
            let port = l.admin_ports.first().copied().unwrap_or(22);
            rows.push(ctx.row(
                "admin-port sweep",
                "lateral T1210",
                || {
                    let peers = standin::add_peers(&net, l.failed_sweep_peers + 1)?;
                    let refused = standin::admin_sweep(&net, &peers, port)?;
                    Ok(format!(
                        "TCP connects to port {port} of {} addresses of 10.255.86.0/24 inside the stand-in namespace, {refused} refused",
                        peers.len()
                    ))
                },
                &|a| a["detector"] == "lateral" && has_technique(a, "T1210"),
            )?);
            // Exfiltration from the host to a sink simulate owns in the
            // stand-in namespace, sized from the agent's exfil config.
            let x = &cfg.detect.exfil;
            let sink = standin::SINK_ADDR.to_string();
            let to_sink = |a: &Value, technique: &str| {
                a["detector"] == "exfil"
                    && has_technique(a, technique)
                    && a["entities"]["dst_ip"] == sink.as_str()
            };
            match exfil::chunks(x) {
                Ok(c) => rows.push(ctx.row(
                    "equal-size chunks",
                    "exfil T1030",
                    || {
                        let whole = standin::equal_chunks(&net, c.count, c.size, &interrupted)?;
                        Ok(format!(
                            "{whole} of {} TCP connections from the host to {sink}, each pushing exactly {} bytes of zeros (detect.exfil.equal_transfers {}, equal_min_bytes {})",
                            c.count, c.size, x.equal_transfers, x.equal_min_bytes
                        ))
                    },
                    &|a| to_sink(a, "T1030"),
                )?),
                Err(why) => rows.push(skipped("equal-size chunks", "exfil T1030", why)),
            }
            match exfil::bulk_bytes(x) {
                Ok(bytes) => rows.push(ctx.row(
                    "bulk upload",
                    "exfil T1048",
                    || {
                        let secs = standin::bulk_upload(&net, bytes, timeout, &interrupted)?;
                        Ok(format!(
                            "{bytes} bytes of zeros in one TCP upload from the host to {sink} in {secs:.1} s (detect.exfil.absolute_bytes is {}; simulate sends at most {} per row)",
                            x.absolute_bytes,
                            exfil::MAX_BYTES
                        ))
                    },
                    &|a| to_sink(a, "T1048"),
                )?),
                Err(why) => rows.push(skipped("bulk upload", "exfil T1048", why)),
            }
            // Last: an agent whose playbooks block a scanner would cut off
            // 198.18.86.2, and no later row depends on it.
            rows.push(ctx.row(
                "port sweep",
                "scan T1046",
                || {
                    let (refused, tried) = standin::port_sweep(&net, n, &interrupted)?;
                    Ok(format!(
                        "{tried} TCP connects from {} to {}, {refused} refused",
                        standin::SIM_ADDR,
                        standin::HOST_ADDR
                    ))
                },
                &|a| {
                    a["detector"] == "scan"
                        && has_technique(a, "T1046")
                        && a.to_string().contains(&sim)
                },
            )?);
            drop(net);
        }
        Err(e) => {
            for (standin, expected) in [
                ("admin-port sweep", "lateral T1210"),
                ("equal-size chunks", "exfil T1030"),
                ("bulk upload", "exfil T1048"),
                ("port sweep", "scan T1046"),
            ] {
                rows.push(Row {
                    standin,
                    expected,
                    outcome: Outcome::Failed(format!("no stand-in namespace: {e}")),
                    alert: None,
                    seconds: None,
                    response: Vec::new(),
                    detail: String::new(),
                });
            }
        }
    }
    if interrupted() {
        anyhow::bail!(StandinError::Interrupted);
    }

    // Fileless exec from a memfd.
    rows.push(ctx.row(
        "memfd exec",
        "process T1620",
        || {
            standin::memfd_exec()
                .map(|pid| format!("pid {pid} ran /proc/self/fd/N of a memfd copy of /bin/true"))
        },
        &|a| {
            a["detector"] == "process"
                && has_technique(a, "T1620")
                && a["entities"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("/memfd:vigil-simulate"))
        },
    )?);

    // A shell wired to a socket of a loopback listener we own; it lives
    // until its row is decided.
    let mut shell = None;
    rows.push(ctx.row(
        "reverse shell",
        "process T1059.004",
        || {
            let s = standin::reverse_shell()?;
            let detail = format!(
                "pid {}: /bin/sh with a loopback socket as stdin/stdout",
                s.pid
            );
            shell = Some(s);
            Ok(detail)
        },
        &|a| {
            a["detector"] == "process"
                && has_technique(a, "T1059.004")
                && a["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("reverse shell"))
        },
    )?);
    drop(shell);

    // Downloaded by a network process, hidden, then run.
    let base = if cfg.state_dir.is_dir() {
        cfg.state_dir.clone()
    } else {
        std::env::temp_dir()
    };
    let scratch = standin::Scratch::create(&base)?;
    let dir = scratch.0.clone();
    rows.push(ctx.row(
        "download then run",
        "process T1204.002",
        || {
            standin::download_and_run(&dir).map(|p| {
                format!(
                    "{} fetched from a loopback HTTP server, then run",
                    p.display()
                )
            })
        },
        &|a| {
            a["detector"] == "process"
                && has_technique(a, "T1204.002")
                && a.to_string().contains("vigil-simulate")
        },
    )?);
    drop(scratch);

    rows.extend(not_attempted(&cfg, timeout));
    let report = Report::new(
        rows,
        addresses,
        serde_json::to_value(mode)?
            .as_str()
            .unwrap_or("")
            .to_string(),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.passed)
}

/// A row not attempted, and why.
fn skipped(standin: &'static str, expected: &'static str, why: String) -> Row {
    Row {
        standin,
        expected,
        outcome: Outcome::Skipped(why),
        alert: None,
        seconds: None,
        response: Vec::new(),
        detail: String::new(),
    }
}

/// Seconds of the shortest window the beacon detector scores.
fn shortest_beacon_window(cfg: &vigil::config::Config) -> f64 {
    let b = &cfg.detect.beacon;
    b.short_windows_s
        .iter()
        .copied()
        .chain([b.window_s])
        .filter(|w| *w > 0.0)
        .fold(f64::INFINITY, f64::min)
}

/// The rows not attempted, with the reason taken from the config.
fn not_attempted(cfg: &vigil::config::Config, timeout: Duration) -> Vec<Row> {
    let b = &cfg.detect.beacon;
    let shortest = shortest_beacon_window(cfg);
    let minutes = (shortest * 1.2 / 60.0).ceil().max(1.0) as u64;
    let skip = |standin, expected, outcome| Row {
        standin,
        expected,
        outcome,
        alert: None,
        seconds: None,
        response: Vec::new(),
        detail: String::new(),
    };
    let mut rows = Vec::new();
    if shortest * 1.2 > timeout.as_secs_f64() {
        rows.push(skip(
            "jittered beacon",
            "beacon T1071",
            Outcome::Skipped(format!(
                "needs {minutes} minutes (at least {} connections spanning the shortest beacon window, {shortest:.0} s; --timeout-s is {})",
                b.min_connections,
                timeout.as_secs()
            )),
        ));
    }
    rows.extend([skip(
        "PAM brute force",
        "brute_force T1110",
        Outcome::NotRaisedByDesign(
            "auth attempts are trusted only from configured PAM services run by root (issue 11); \
                 a service of simulate's own is not one, and simulate does not weaken that rule"
                .into(),
        ),
    )]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_beacon_row_runs_only_when_its_window_fits_the_timeout() {
        let mut cfg = vigil::config::Config::default();
        // Shipped: 15 min, 1 h and a day; 15 min × 1.2 is 18 minutes.
        assert_eq!(shortest_beacon_window(&cfg), 900.0);
        let rows = not_attempted(&cfg, Duration::from_secs(30));
        let beacon = rows
            .iter()
            .find(|r| r.standin == "jittered beacon")
            .expect("row");
        assert!(
            matches!(&beacon.outcome, Outcome::Skipped(r) if r.starts_with("needs 18 minutes")),
            "{beacon:?}"
        );
        cfg.detect.beacon.window_s = 20.0;
        cfg.detect.beacon.short_windows_s = vec![0.0, 900.0];
        assert_eq!(shortest_beacon_window(&cfg), 20.0);
        let rows = not_attempted(&cfg, Duration::from_secs(30));
        assert!(
            rows.iter().all(|r| r.standin != "jittered beacon"),
            "{rows:?}"
        );
        // The PAM row is never attempted, and says why.
        assert!(rows
            .iter()
            .any(|r| matches!(r.outcome, Outcome::NotRaisedByDesign(_))));
    }

    #[test]
    fn a_count_update_of_an_old_alert_is_new() {
        let a = serde_json::json!({"id": "x", "count": 1});
        let b = serde_json::json!({"id": "x", "count": 2});
        assert_ne!(key(&a), key(&b));
        assert!(has_technique(
            &serde_json::json!({"techniques": [{"id": "T1021.004"}, {"id": "T1210"}]}),
            "T1210"
        ));
        assert!(!has_technique(
            &serde_json::json!({"techniques": [{"id": "T10711"}]}),
            "T1071"
        ));
    }
}
