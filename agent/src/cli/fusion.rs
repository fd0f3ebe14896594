//! `vigil fusion …`: run the stages, read incidents, lift a decision.

use std::path::Path;

use vigil::fusion::run::{self as fusion, STAGES};

use super::load_config;

pub fn run(config: Option<&Path>, stages: Vec<String>) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let stages = if stages.is_empty() {
        STAGES.iter().map(|s| s.to_string()).collect()
    } else {
        stages
    };
    fusion::run(&cfg, &stages)?;
    Ok(())
}

pub fn incidents(config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let all = fusion::incidents(&cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>5} {:>6} {:>6} {:<18} HOSTS",
        "ID", "HOSTS", "STAGE", "CONF", "FURTHEST"
    );
    for i in &all {
        let hosts: Vec<&str> = i["hosts"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()).collect())
            .unwrap_or_default();
        let a = &i["analysis"];
        println!(
            "{:<22} {:>5} {:>6.2} {:>6.2} {:<18} {}",
            i["id"].as_str().unwrap_or("?"),
            hosts.len(),
            a["stage_score"].as_f64().unwrap_or(0.0),
            a["confidence"].as_f64().unwrap_or(0.0),
            a["furthest_tactic"].as_str().unwrap_or("-"),
            hosts.join(",")
        );
    }
    println!("{} incidents", all.len());
    Ok(())
}

pub fn show(config: Option<&Path>, id: &str, json: bool) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let Some(inc) = fusion::incidents(&cfg)?.into_iter().find(|i| i["id"] == id) else {
        anyhow::bail!("no incident {id} (see `vigil fusion incidents`)");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&inc)?);
    } else {
        print!("{}", inc["analysis"]["narrative"].as_str().unwrap_or(""));
    }
    Ok(())
}

pub fn unblock(config: Option<&Path>, indicator: &str) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let by = format!("uid {}", unsafe_uid());
    let id = fusion::unblock(&cfg, indicator, &by)?;
    println!("unblock of {indicator} sent ({id}); fusion lifts it and publishes a tombstone");
    Ok(())
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}
