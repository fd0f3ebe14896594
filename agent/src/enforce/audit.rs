//! The tamper-evident audit log: append-only JSON lines under the state
//! directory, one per decision or action, each carrying the SHA-256 of the
//! previous line, so an edited, deleted or reordered record breaks the
//! chain. Appends hold an exclusive lock (the daemon and the CLI both
//! write) and are synced before they return, so a record exists before the
//! action is reported done.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use sha2::{Digest, Sha256};

pub const FILE: &str = "audit.jsonl";
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit log line {line}: {reason}")]
    Broken { line: usize, reason: String },
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last line of the file (without its newline), read from the end.
fn last_line(f: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut pos = len;
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let step = pos.min(buf.len() as u64);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..step as usize])?;
        let mut chunk = buf[..step as usize].to_vec();
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if pos == 0 {
            return Ok(Some(body.to_vec()));
        }
    }
}

/// Appends `record` (a JSON object) with `seq` and `prev` added.
pub fn append(dir: &Path, record: &serde_json::Value) -> Result<(), AuditError> {
    let path = dir.join(FILE);
    let io = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on an fd we own; released when `f` closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    let (prev, seq) = match last_line(&mut f).map_err(io)? {
        Some(line) => {
            let seq = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .unwrap_or(0);
            (sha256_hex(&line), seq + 1)
        }
        None => (GENESIS.to_string(), 0),
    };
    let mut obj = match record {
        serde_json::Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("record".into(), other.clone());
            m
        }
    };
    obj.insert("seq".into(), seq.into());
    obj.insert("prev".into(), prev.into());
    let line = serde_json::to_string(&obj).unwrap_or_default();
    f.write_all(line.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_data().map_err(io)?;
    Ok(())
}

/// Checks the whole chain; returns the number of records, or the first
/// broken link.
pub fn verify(path: &Path) -> Result<usize, AuditError> {
    let f = File::open(path).map_err(|source| AuditError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut prev_hash = GENESIS.to_string();
    let mut n = 0;
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line.map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let lineno = i + 1;
        let broken = |reason: String| AuditError::Broken {
            line: lineno,
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| broken(format!("not JSON ({e})")))?;
        let prev = v["prev"]
            .as_str()
            .ok_or_else(|| broken("no prev hash".into()))?;
        if prev != prev_hash {
            return Err(broken(format!(
                "prev hash {prev} does not match the previous record ({prev_hash}): a record was edited, removed or reordered before this line"
            )));
        }
        if v["seq"].as_u64() != Some(n as u64) {
            return Err(broken(format!(
                "sequence {} where {n} was expected",
                v["seq"]
            )));
        }
        prev_hash = sha256_hex(&line);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn write(d: &Path, n: usize) -> Vec<String> {
        for i in 0..n {
            append(d, &serde_json::json!({"kind": "action", "n": i})).expect("append");
        }
        std::fs::read_to_string(d.join(FILE))
            .expect("read")
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let d = dir("ok");
        write(&d, 5);
        assert_eq!(verify(&d.join(FILE)).expect("verify"), 5);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn edited_deleted_and_reordered_records_are_caught_at_their_line() {
        for (tag, mutate, want_line) in [
            ("edit", 0usize, 3usize),
            ("delete", 1, 2),
            ("reorder", 2, 2),
        ] {
            let d = dir(tag);
            let mut lines = write(&d, 5);
            match mutate {
                0 => lines[1] = lines[1].replace("\"n\":1", "\"n\":7"),
                1 => {
                    lines.remove(1);
                }
                _ => lines.swap(1, 2),
            }
            std::fs::write(d.join(FILE), lines.join("\n") + "\n").expect("rewrite");
            match verify(&d.join(FILE)) {
                Err(AuditError::Broken { line, .. }) => assert_eq!(line, want_line, "{tag}"),
                other => panic!("{tag}: expected a broken link, got {other:?}"),
            }
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}
