//! Fleet commands (`defense.commands`) and indicators (`threat.enriched`):
//! each message is authenticated by an HMAC-SHA256 over its exact body
//! bytes, carried hex-encoded in the `hmac-sha256` header, with the key from
//! the config file. Anything unsigned, forged, stale, replayed or aimed at
//! another host is rejected with a reason and changes nothing. The ids of
//! executed commands are remembered (and saved in the state directory by
//! the daemon) until their `ts` is too old to pass the age check, so a
//! replay is refused across restarts too.

use std::collections::{BTreeMap, VecDeque};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const HMAC_HEADER: &str = "hmac-sha256";
/// A tombstone's issue time; its signature covers [`tombstone_body`].
pub const TS_HEADER: &str = "ts";

/// What a tombstone's HMAC covers: it has no body, so its key and issue
/// time (a replayed old lift cannot undo a newer decision).
pub fn tombstone_body(key: &str, ts: i64) -> Vec<u8> {
    format!("tombstone\n{key}\n{ts}").into_bytes()
}

/// What a fleet decision asks of the agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndicatorAction {
    /// Block the address (the default, also for feeds that predate it).
    #[default]
    Block,
    /// Fusion in simulate mode: record it, change nothing.
    WouldBlock,
}

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
    #[error("more than {0} fleet commands and indicators in a minute (kafka.max_commands_per_minute): refused")]
    RateLimited(usize),
    #[error("message of {0} bytes is over the {max}-byte limit for fleet messages: refused unread", max = super::producer::MAX_INBOUND_BYTES)]
    TooLarge(usize),
}

impl CommandError {
    /// A short name for counters and summaries.
    pub fn reason(&self) -> &'static str {
        match self {
            CommandError::Unsigned => "unsigned",
            CommandError::NoKey => "no_key",
            CommandError::BadSignature => "forged",
            CommandError::Malformed(_) => "malformed",
            CommandError::Stale { .. } => "stale",
            CommandError::Replay(_) => "replay",
            CommandError::RateLimited(_) => "rate_limited",
            CommandError::TooLarge(_) => "too_large",
        }
    }
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
    #[serde(default)]
    pub action: IndicatorAction,
}

/// Executed command ids with their `ts`, as saved in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenIds {
    pub ids: BTreeMap<String, i64>,
}

pub struct Verifier {
    key: Option<Vec<u8>>,
    pub max_age_s: u64,
    /// Executed ids and their `ts`; an id is forgotten once its `ts` is
    /// older than `max_age_s` (the age check refuses it by then).
    seen: BTreeMap<String, i64>,
    /// Bound on remembered ids; past it the one with the oldest `ts` goes
    /// (counted in `seen_evicted`). The command budget keeps the set far
    /// below it: at most a minute's budget per minute of `max_age_s`.
    pub max_seen: usize,
    pub seen_evicted: u64,
    /// The remembered ids changed since the last save.
    dirty: bool,
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
            seen: BTreeMap::new(),
            max_seen: 65_536,
            seen_evicted: 0,
            dirty: false,
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

    /// Whether `ts` is older than the age limit at `now_s`.
    fn expired(&self, ts: i64, now_s: i64) -> bool {
        now_s.saturating_sub(ts) > i64::try_from(self.max_age_s).unwrap_or(i64::MAX)
    }

    /// Stale or already executed; remembers nothing (see [`remember`](Self::remember)).
    pub fn check_fresh(&self, id: &str, ts: i64, now_s: i64) -> Result<(), CommandError> {
        let age = now_s.saturating_sub(ts);
        if age.unsigned_abs() > self.max_age_s {
            return Err(CommandError::Stale {
                id: id.to_string(),
                age_s: age,
                limit_s: self.max_age_s,
            });
        }
        if self.seen.contains_key(id) {
            return Err(CommandError::Replay(id.to_string()));
        }
        Ok(())
    }

    /// Remembers an id about to be executed.
    pub fn remember(&mut self, id: &str, ts: i64) {
        self.seen.insert(id.to_string(), ts);
        self.dirty = true;
        while self.seen.len() > self.max_seen {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, ts)| **ts)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.seen.remove(&id);
                    self.seen_evicted += 1;
                }
                None => break,
            }
        }
    }

    /// [`check_fresh`](Self::check_fresh), then [`remember`](Self::remember).
    fn fresh(&mut self, id: &str, ts: i64, now_s: i64) -> Result<(), CommandError> {
        self.check_fresh(id, ts, now_s)?;
        self.remember(id, ts);
        Ok(())
    }

    /// The remembered ids still young enough to be replayed, for saving
    /// (older ones are forgotten now); `None` when nothing changed since
    /// the last [`seen_saved`](Self::seen_saved).
    pub fn seen_snapshot(&mut self, now_s: i64) -> Option<SeenIds> {
        if !self.dirty {
            return None;
        }
        let limit = i64::try_from(self.max_age_s).unwrap_or(i64::MAX);
        self.seen.retain(|_, ts| now_s.saturating_sub(*ts) <= limit);
        Some(SeenIds {
            ids: self.seen.clone(),
        })
    }

    /// The last snapshot is on disk.
    pub fn seen_saved(&mut self) {
        self.dirty = false;
    }

    /// Restores ids saved by an earlier run, dropping those too old to matter.
    pub fn restore_seen(&mut self, saved: SeenIds, now_s: i64) {
        for (id, ts) in saved.ids {
            if !self.expired(ts, now_s) {
                self.seen.insert(id, ts);
            }
        }
        while self.seen.len() > self.max_seen {
            self.seen.pop_first();
        }
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Authenticates and parses a `defense.commands` message, without the
    /// age and replay checks. `Ok(None)`: genuine but addressed to another host.
    pub fn open_command(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
        host: &str,
    ) -> Result<Option<Envelope>, CommandError> {
        self.authenticate(body, header)?;
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| CommandError::Malformed(e.to_string()))?;
        if env.host.as_deref().is_some_and(|h| h != "*" && h != host) {
            return Ok(None);
        }
        Ok(Some(env))
    }

    /// Authenticates and parses a `threat.enriched` indicator, without the
    /// age and replay checks.
    pub fn open_indicator(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> Result<Indicator, CommandError> {
        self.authenticate(body, header)?;
        let ioc: Indicator =
            serde_json::from_slice(body).map_err(|e| CommandError::Malformed(e.to_string()))?;
        if ioc.ttl_s == 0 {
            return Err(CommandError::Malformed("ttl_s must be positive".into()));
        }
        Ok(ioc)
    }

    /// Authenticates a tombstone on `threat.enriched` (key and issue time).
    pub fn open_tombstone(
        &self,
        key: &str,
        ts: Option<i64>,
        header: Option<&[u8]>,
    ) -> Result<i64, CommandError> {
        let ts =
            ts.ok_or_else(|| CommandError::Malformed("tombstone without a ts header".into()))?;
        self.authenticate(&tombstone_body(key, ts), header)?;
        Ok(ts)
    }

    /// Authenticates, parses and checks a `defense.commands` message,
    /// remembering its id. `Ok(None)`: genuine but addressed to another host.
    pub fn command(
        &mut self,
        body: &[u8],
        header: Option<&[u8]>,
        host: &str,
        now_s: i64,
    ) -> Result<Option<Envelope>, CommandError> {
        let Some(env) = self.open_command(body, header, host)? else {
            return Ok(None);
        };
        self.fresh(&env.id, env.ts, now_s)?;
        Ok(Some(env))
    }

    /// Authenticates, parses and checks a `threat.enriched` indicator,
    /// remembering its id.
    pub fn indicator(
        &mut self,
        body: &[u8],
        header: Option<&[u8]>,
        now_s: i64,
    ) -> Result<Indicator, CommandError> {
        let ioc = self.open_indicator(body, header)?;
        self.fresh(&ioc.id, ioc.ts, now_s)?;
        Ok(ioc)
    }
}

/// A sliding one-minute budget: at most `per_minute` takes in any minute.
#[derive(Debug, Clone)]
pub struct Budget {
    pub per_minute: usize,
    recent: VecDeque<f64>,
}

impl Budget {
    pub fn new(per_minute: usize) -> Budget {
        Budget {
            per_minute,
            recent: VecDeque::new(),
        }
    }

    /// Takes one unit at `now_s` (seconds) if the last minute left room.
    pub fn take(&mut self, now_s: f64) -> bool {
        while self.recent.front().is_some_and(|t| *t <= now_s - 60.0) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return false;
        }
        self.recent.push_back(now_s);
        true
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

    #[test]
    fn the_budget_is_a_sliding_minute() {
        let mut b = Budget::new(2);
        assert!(b.take(0.0) && b.take(10.0));
        assert!(!b.take(59.0));
        assert!(b.take(60.5), "the first take left the window");
        assert!(!b.take(61.0));
    }

    #[test]
    fn executed_ids_are_kept_until_too_old_to_replay_and_bounded() {
        let mut v = Verifier::new(KEY, 300);
        v.remember("old", 1000);
        v.remember("new", 1250);
        assert_eq!(
            v.check_fresh("new", 1250, 1260),
            Err(CommandError::Replay("new".into()))
        );
        // At 1400 "old" can no longer pass the age check: it is not saved.
        let saved = v.seen_snapshot(1400).expect("changed");
        assert_eq!(saved.ids.keys().collect::<Vec<_>>(), ["new"]);
        v.seen_saved();
        assert_eq!(v.seen_snapshot(1400), None, "nothing changed since");
        let mut again = Verifier::new(KEY, 300);
        again.restore_seen(saved.clone(), 1400);
        assert!(matches!(
            again.check_fresh("new", 1250, 1400),
            Err(CommandError::Replay(_))
        ));
        let mut late = Verifier::new(KEY, 300);
        late.restore_seen(saved, 1600);
        assert_eq!(late.seen_len(), 0);
        // Past the bound the oldest ts goes, counted.
        let mut v = Verifier::new(KEY, 300);
        v.max_seen = 2;
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            v.remember(id, 1000 + i as i64);
        }
        assert_eq!((v.seen_len(), v.seen_evicted), (2, 1));
        assert!(v.check_fresh("a", 1000, 1000).is_ok());
    }

    #[test]
    fn every_refusal_has_a_short_reason() {
        assert_eq!(CommandError::Unsigned.reason(), "unsigned");
        assert_eq!(CommandError::BadSignature.reason(), "forged");
        assert_eq!(CommandError::RateLimited(3).reason(), "rate_limited");
        assert_eq!(CommandError::TooLarge(70_000).reason(), "too_large");
    }
}
