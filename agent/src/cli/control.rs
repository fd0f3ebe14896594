//! The operator commands that talk to the running agent over the control
//! socket: tables for people, `--json` for scripts.

use std::path::Path;

use serde_json::Value;
use vigil::service::control::{self, Request};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn alert_row(a: &Value) {
    let techniques: Vec<String> = a["techniques"]
        .as_array()
        .map(|t| t.iter().map(|t| s(&t["id"])).collect())
        .unwrap_or_default();
    println!(
        "{:<25} {:<8} {:<12} {:<22} {}",
        s(&a["ts"]),
        s(&a["severity"]),
        s(&a["detector"]),
        techniques.join(","),
        s(&a["summary"])
    );
}

fn approvals_table(list: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no pending approvals");
        return;
    }
    println!(
        "{:<36} {:<28} {:>9} {:<8} PROPOSED",
        "ID", "PLAYBOOK", "DEADLINE", "TIMEOUT"
    );
    for a in rows {
        let left = a["deadline_s"].as_f64().unwrap_or(0.0) - now;
        let proposed: Vec<String> = a["proposed"]
            .as_array()
            .map(|p| p.iter().map(s).collect())
            .unwrap_or_default();
        println!(
            "{:<36} {:<28} {:>8}s {:<8} {}",
            s(&a["id"]),
            s(&a["playbook"]),
            left.max(0.0) as u64,
            s(&a["on_timeout"]),
            proposed.join("; ")
        );
        println!("{:<36} alert: {}", "", s(&a["alert"]));
    }
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let v = control::request(socket, &Request::Status)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "vigil {} (pid {}), response mode {}",
        s(&v["version"]),
        s(&v["pid"]),
        s(&v["response_mode"])
    );
    println!("\nPROGRAMS");
    for p in v["probes"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<46} tier {} {:<9} {}",
            s(&p["name"]),
            s(&p["hook"]),
            s(&p["tier"]),
            s(&p["state"]),
            s(&p["detail"])
        );
    }
    let st = &v["stats"];
    println!("\nEVENTS");
    for (k, n) in st["events"].as_object().into_iter().flatten() {
        println!("  {k:<22} {n}");
    }
    println!(
        "  decode errors {}, kernel reserve failures {}, flows tracked {}",
        s(&st["decode_errors"]),
        s(&st["kernel_reserve_failures"]),
        s(&st["flows_tracked"])
    );
    println!("\nALERTS BY DETECTOR");
    for (k, n) in v["detectors"].as_object().into_iter().flatten() {
        println!("  {k:<22} {n}");
    }
    let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
    println!("\nBLOCKS ({} active)", blocks.len());
    for b in blocks.iter().take(20) {
        println!(
            "  {:<40} ttl {:>7}s dropped {}",
            s(&b["target"]),
            s(&b["ttl_s"]),
            s(&b["packets"])
        );
    }
    match v["isolation_remaining_s"].as_u64() {
        Some(t) => println!("\nISOLATION active, {t}s left"),
        None => println!("\nISOLATION off"),
    }
    println!("\nPENDING APPROVALS");
    approvals_table(&v["approvals"]);
    println!("\nPLAYBOOKS");
    for p in v["playbooks"].as_array().into_iter().flatten() {
        println!(
            "  {:<30} mode {:<8} {} steps  {}",
            s(&p["name"]),
            s(&p["mode"]),
            s(&p["steps"]),
            s(&p["file"])
        );
    }
    println!("\nOUTPUTS");
    for (name, o) in v["outputs"].as_object().into_iter().flatten() {
        let f = &o["failures"];
        let st = &o["status"];
        let pending = st["pending_bytes"]
            .as_u64()
            .or_else(|| st["backlog_bytes"].as_u64())
            .unwrap_or(0);
        let shed = st["shed_lines"]
            .as_u64()
            .or_else(|| st["backlog_shed"].as_u64())
            .unwrap_or(0);
        println!(
            "  {name:<8} {} failed writes, {pending} bytes waiting to be retried, {shed} shed{}",
            s(&f["errors"]),
            match f["last_error"].as_str() {
                Some(e) if !e.is_empty() => format!(" (last: {e})"),
                _ => String::new(),
            }
        );
    }
    println!(
        "  audit appends failed {}, state file writes failed {}",
        s(&v["audit_failures"]),
        s(&v["state_write_errors"])
    );
    let k = &v["kafka"];
    if k.is_null() {
        println!("\nKAFKA off (kafka.brokers is empty)");
    } else {
        println!(
            "\nKAFKA {}: {} records ({} bytes) waiting in the spool, {} delivered, {} delivery errors{}",
            s(&k["brokers"]),
            s(&k["spool_records"]),
            s(&k["spool_bytes"]),
            s(&k["delivered"]),
            s(&k["delivery_errors"]),
            match k["last_error"].as_str() {
                Some(e) if !e.is_empty() => format!(" (last: {e})"),
                _ => String::new(),
            }
        );
        println!(
            "  shed: telemetry over rate {}, spool full telemetry {}, spool full alerts/actions {}",
            s(&k["telemetry_shed"]),
            s(&k["spool"]["shed_telemetry"]),
            s(&k["spool"]["shed_alerts_actions"])
        );
    }
    println!(
        "\n{} incidents kept, {} steps rate-limited",
        s(&v["incidents"]),
        s(&v["rate_limited"])
    );
    Ok(())
}

pub fn alerts(socket: &Path, follow: bool, json: bool) -> anyhow::Result<()> {
    let show = |a: &Value| {
        if json {
            println!("{a}");
        } else {
            alert_row(a);
        }
    };
    if follow {
        control::follow(socket, show)?;
        return Ok(());
    }
    let v = control::request(socket, &Request::Alerts { follow: false })?;
    for a in v.as_array().into_iter().flatten() {
        show(a);
    }
    Ok(())
}

pub fn approvals(socket: &Path, json: bool) -> anyhow::Result<()> {
    let v = control::request(socket, &Request::Approvals)?;
    if json {
        print_json(&v);
    } else {
        approvals_table(&v);
    }
    Ok(())
}

pub fn incidents(socket: &Path, json: bool) -> anyhow::Result<()> {
    let v = control::request(socket, &Request::Incidents)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<36} {:<28} {:<9} {:<18} STEPS",
        "ID", "PLAYBOOK", "MODE", "STATE"
    );
    for i in v.as_array().into_iter().flatten() {
        let steps: Vec<String> = i["results"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|r| format!("{}={}", s(&r["step"]), s(&r["state"])))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<36} {:<28} {:<9} {:<18} {}",
            s(&i["id"]),
            s(&i["playbook"]),
            s(&i["mode"]),
            s(&i["state"]),
            steps.join(" ")
        );
    }
    Ok(())
}

/// approve, deny, rollback, reload: prints what happened.
pub fn act(socket: &Path, req: Request, json: bool) -> anyhow::Result<()> {
    let v = control::request(socket, &req)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    match v.as_array() {
        Some(records) => {
            for r in records {
                match r["kind"].as_str() {
                    Some("decision") => println!(
                        "{} {} ({})",
                        s(&r["decision"]),
                        s(&r["incident"]),
                        s(&r["playbook"])
                    ),
                    Some("action") => println!(
                        "  {} {} -> {} {}",
                        s(&r["action"]),
                        s(&r["target"]),
                        s(&r["state"]),
                        s(&r["detail"])
                    ),
                    _ => println!("  {r}"),
                }
            }
        }
        None => println!("{v}"),
    }
    Ok(())
}
