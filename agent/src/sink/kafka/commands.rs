//! Fleet commands (`defense.commands`) and indicators (`threat.enriched`):
//! each message is authenticated by an HMAC-SHA256 over its exact body
//! bytes, carried hex-encoded in the `hmac-sha256` header, with the key from
//! the config file. Anything unsigned, forged, stale, replayed or aimed at
//! another host is rejected with a reason and changes nothing.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

pub const HMAC_HEADER: &str = "hmac-sha256";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("no {HMAC_HEADER} header: unsigned messages are refused")]
    Unsigned,
    #[error("the agent has no kafka.hmac_key: every command is refused")]
    NoKey,
    #[error("HMAC does not match the body: forged or altered")]
    BadSignature,
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("command {id} is {age_s}s old (limit {limit_s}s): refused as stale")]
    Stale {
        id: String,
        age_s: i64,
        limit_s: u64,
    },
    #[error("command {0} was already executed: replay refused")]
    Replay(String),
}

/// What a verified message asks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Block { target: String, ttl_s: u64 },
    Unblock { target: String },
    Approve { approval: String },
    Deny { approval: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Unique per command: replays are refused by id.
    pub id: String,
    /// Unix seconds when it was issued.
    pub ts: i64,
    /// Host name this is for; `*` or absent means every host.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(flatten)]
    pub command: Command,
}

/// An indicator of compromise from `threat.enriched`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Indicator {
    pub id: String,
    pub ts: i64,
    /// An address or CIDR.
    pub indicator: String,
    pub ttl_s: u64,
    #[serde(default)]
    pub source: String,
}

pub struct Verifier {
    key: Option<Vec<u8>>,
    pub max_age_s: u64,
    seen: HashSet<String>,
    order: VecDeque<String>,
    /// Remembered ids (bounded: the oldest is forgotten, and by then its
    /// `ts` is stale anyway).
    pub max_seen: usize,
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hex HMAC-SHA256 of `body` (what a signer puts in the header).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Verifier {
    pub fn new(key: &str, max_age_s: u64) -> Verifier {
        Verifier {
            key: (!key.is_empty()).then(|| key.as_bytes().to_vec()),
            max_age_s,
            seen: HashSet::new(),
            order: VecDeque::new(),
            max_seen: 65_536,
        }
    }

    fn authenticate(&self, body: &[u8], header: Option<&[u8]>) -> Result<(), CommandError> {
        let key = self.key.as_deref().ok_or(CommandError::NoKey)?;
        let tag = header.ok_or(CommandError::Unsigned)?;
        let tag = std::str::from_utf8(tag)
            .ok()
            .and_then(|t| hex_decode(t.trim()))
            .ok_or(CommandError::BadSignature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| CommandError::NoKey)?;
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&tag)
            .map_err(|_| CommandError::BadSignature)
    }

    fn fresh(&mut self, id: &str, ts: i64, now_s: i64) -> Result<(), CommandError> {
        let age = now_s - ts;
        if age.unsigned_abs() > self.max_age_s {
            return Err(CommandError::Stale {
                id: id.to_string(),
                age_s: age,
                limit_s: self.max_age_s,
            });
        }
        if self.seen.contains(id) {
            return Err(CommandError::Replay(id.to_string()));
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        while self.order.len() > self.max_seen {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        Ok(())
    }

    /// Authenticates and parses a `defense.commands` message. `Ok(None)`:
    /// genuine but addressed to another host.
    pub fn command(
        &mut self,
        body: &[u8],
        header: Option<&[u8]>,
        host: &str,
        now_s: i64,
    ) -> Result<Option<Envelope>, CommandError> {
        self.authenticate(body, header)?;
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| CommandError::Malformed(e.to_string()))?;
        if env.host.as_deref().is_some_and(|h| h != "*" && h != host) {
            return Ok(None);
        }
        self.fresh(&env.id, env.ts, now_s)?;
        Ok(Some(env))
    }

    /// Authenticates and parses a `threat.enriched` indicator.
    pub fn indicator(
        &mut self,
        body: &[u8],
        header: Option<&[u8]>,
        now_s: i64,
    ) -> Result<Indicator, CommandError> {
        self.authenticate(body, header)?;
        let ioc: Indicator =
            serde_json::from_slice(body).map_err(|e| CommandError::Malformed(e.to_string()))?;
        if ioc.ttl_s == 0 {
            return Err(CommandError::Malformed("ttl_s must be positive".into()));
        }
        self.fresh(&ioc.id, ioc.ts, now_s)?;
        Ok(ioc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "fleet-secret";

    fn signed(body: &str) -> (Vec<u8>, String) {
        (
            body.as_bytes().to_vec(),
            sign(KEY.as_bytes(), body.as_bytes()),
        )
    }

    #[test]
    fn a_signed_block_is_accepted_once() {
        let mut v = Verifier::new(KEY, 300);
        let (b, h) =
            signed(r#"{"id":"c1","ts":1000,"cmd":"block","target":"203.0.113.9","ttl_s":60}"#);
        let env = v
            .command(&b, Some(h.as_bytes()), "web1", 1010)
            .unwrap()
            .unwrap();
        assert_eq!(
            env.command,
            Command::Block {
                target: "203.0.113.9".into(),
                ttl_s: 60
            }
        );
        assert_eq!(
            v.command(&b, Some(h.as_bytes()), "web1", 1011),
            Err(CommandError::Replay("c1".into()))
        );
    }

    #[test]
    fn unsigned_forged_altered_and_stale_commands_are_refused() {
        let mut v = Verifier::new(KEY, 300);
        let body = r#"{"id":"c2","ts":1000,"cmd":"unblock","target":"10.0.0.1"}"#;
        assert_eq!(
            v.command(body.as_bytes(), None, "h", 1000),
            Err(CommandError::Unsigned)
        );
        let forged = sign(b"wrong-key", body.as_bytes());
        assert_eq!(
            v.command(body.as_bytes(), Some(forged.as_bytes()), "h", 1000),
            Err(CommandError::BadSignature)
        );
        let (_, h) = signed(body);
        let altered = body.replace("10.0.0.1", "10.0.0.2");
        assert_eq!(
            v.command(altered.as_bytes(), Some(h.as_bytes()), "h", 1000),
            Err(CommandError::BadSignature)
        );
        assert!(matches!(
            v.command(body.as_bytes(), Some(h.as_bytes()), "h", 2000),
            Err(CommandError::Stale { .. })
        ));
        let mut keyless = Verifier::new("", 300);
        assert_eq!(
            keyless.command(body.as_bytes(), Some(h.as_bytes()), "h", 1000),
            Err(CommandError::NoKey)
        );
    }

    #[test]
    fn commands_for_other_hosts_are_ignored_and_indicators_parse() {
        let mut v = Verifier::new(KEY, 300);
        let (b, h) =
            signed(r#"{"id":"c3","ts":5,"host":"db1","cmd":"approve","approval":"apr-1"}"#);
        assert_eq!(v.command(&b, Some(h.as_bytes()), "web1", 5), Ok(None));
        let (b, h) = signed(
            r#"{"id":"i1","ts":5,"indicator":"198.51.100.0/24","ttl_s":600,"source":"misp"}"#,
        );
        let ioc = v.indicator(&b, Some(h.as_bytes()), 6).unwrap();
        assert_eq!(ioc.indicator, "198.51.100.0/24");
        let (b, h) = signed(r#"{"id":"i2","ts":5,"indicator":"x"}"#);
        assert!(matches!(
            v.indicator(&b, Some(h.as_bytes()), 6),
            Err(CommandError::Malformed(_))
        ));
    }
}
