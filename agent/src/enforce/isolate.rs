//! Host isolation through one nftables table, `inet vigil`, applied as one
//! atomic `nft -f` batch. Everything is dropped except loopback, neighbour
//! discovery and the allowed prefixes (management networks, resolvers,
//! brokers, the operator's session: the guard's list). The drop rules match
//! only while the `until4`/`until6` sets hold their single element, whose
//! nft timeout is the isolation TTL: isolation lapses in the kernel even if
//! the agent is dead. Un-isolating deletes the table, and with it exactly
//! what isolation added.

use std::io::Write;
use std::process::{Command, Stdio};

use super::cidr::Cidr;
use super::EnforceError;

pub const TABLE: &str = "vigil";

fn nft(script: &str) -> Result<(), EnforceError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            EnforceError::Nft(format!(
                "cannot run nft ({e}): install the nftables package"
            ))
        })?;
    child
        .stdin
        .take()
        .ok_or_else(|| EnforceError::Nft("no stdin".into()))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(EnforceError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn elements(allow: &[Cidr], v4: bool, always: &str) -> String {
    let mut e: Vec<String> = allow
        .iter()
        .filter(|c| c.addr.is_ipv4() == v4)
        .map(|c| c.to_string())
        .collect();
    e.push(always.to_string());
    e.sort();
    e.dedup();
    e.join(", ")
}

/// The whole table, for a first isolation.
pub fn script(ttl_s: u64, allow: &[Cidr]) -> String {
    let a4 = elements(allow, true, "127.0.0.0/8");
    let a6 = elements(allow, false, "::1");
    format!(
        "table inet {TABLE} {{
  set allow4 {{ type ipv4_addr; flags interval, timeout; auto-merge; elements = {{ {a4} }} }}
  set allow6 {{ type ipv6_addr; flags interval, timeout; auto-merge; elements = {{ {a6} }} }}
  set until4 {{ type ipv4_addr; flags interval, timeout; elements = {{ 0.0.0.0/0 timeout {ttl_s}s }} }}
  set until6 {{ type ipv6_addr; flags interval, timeout; elements = {{ ::/0 timeout {ttl_s}s }} }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iif \"lo\" accept
    ip saddr @allow4 accept
    ip6 saddr @allow6 accept
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept
    ip saddr @until4 drop
    ip6 saddr @until6 drop
  }}
  chain output {{
    type filter hook output priority filter - 10; policy accept;
    oif \"lo\" accept
    ip daddr @allow4 accept
    ip6 daddr @allow6 accept
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
    ip daddr @until4 drop
    ip6 daddr @until6 drop
  }}
}}
"
    )
}

/// Isolates the host for `ttl_s` seconds, or renews a running isolation.
/// Returns true when this call created the isolation.
pub fn isolate(ttl_s: u64, allow: &[Cidr]) -> Result<bool, EnforceError> {
    if table_exists() {
        let a4 = elements(allow, true, "127.0.0.0/8");
        let a6 = elements(allow, false, "::1");
        nft(&format!(
            "flush set inet {TABLE} until4
flush set inet {TABLE} until6
add element inet {TABLE} until4 {{ 0.0.0.0/0 timeout {ttl_s}s }}
add element inet {TABLE} until6 {{ ::/0 timeout {ttl_s}s }}
add element inet {TABLE} allow4 {{ {a4} }}
add element inet {TABLE} allow6 {{ {a6} }}
"
        ))?;
        Ok(false)
    } else {
        nft(&script(ttl_s, allow))?;
        Ok(true)
    }
}

/// Removes the isolation table; false when there was none.
pub fn unisolate() -> Result<bool, EnforceError> {
    if !table_exists() {
        return Ok(false);
    }
    nft(&format!("delete table inet {TABLE}\n"))?;
    Ok(true)
}

/// Seconds of isolation left, None when not isolated (or lapsed).
pub fn remaining_s() -> Option<u64> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", TABLE, "until4"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o["set"]["elem"].as_array().cloned())?
        .iter()
        .find_map(|e| e["elem"]["expires"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_every_allowed_prefix_and_the_ttl() {
        let allow: Vec<Cidr> = vec![
            "10.9.0.0/24".parse().expect("cidr"),
            "fd00:9::/64".parse().expect("cidr"),
            "10.0.0.53".parse().expect("cidr"),
        ];
        let s = script(300, &allow);
        assert!(s.contains("10.0.0.53, 10.9.0.0/24, 127.0.0.0/8"), "{s}");
        assert!(s.contains("::1, fd00:9::/64"), "{s}");
        assert!(s.contains("0.0.0.0/0 timeout 300s"));
        assert!(s.contains("flags interval, timeout"));
    }
}
