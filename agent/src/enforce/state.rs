//! Blocks saved under the state directory, so they can be restored when the
//! pinned maps are gone (reboot, bpffs wiped). Expiry is saved as wall-clock
//! time because the kernel's monotonic clock restarts at boot.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::blocklist::{BlockEntry, Blocklist};
use super::cidr::Cidr;
use super::EnforceError;
use crate::util::clock::monotonic_ns;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlock {
    pub target: Cidr,
    pub expires_unix_ms: u64,
    pub flags: u32,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn to_saved(entries: &[BlockEntry]) -> Vec<SavedBlock> {
    let (mono, unix) = (monotonic_ns(), unix_ms());
    entries
        .iter()
        .filter(|e| e.expires_ns > mono)
        .map(|e| SavedBlock {
            target: e.target,
            expires_unix_ms: unix + (e.expires_ns - mono) / 1_000_000,
            flags: e.flags,
        })
        .collect()
}

/// Writes atomically (temp file + rename) so a crash never leaves half a file.
pub fn save(path: &Path, blocks: &[SavedBlock]) -> Result<(), EnforceError> {
    let err = |reason: String| EnforceError::State {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(blocks).map_err(|e| err(e.to_string()))?;
    std::fs::write(&tmp, data).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

pub fn load(path: &Path) -> Result<Vec<SavedBlock>, EnforceError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| EnforceError::State {
            path: path.display().to_string(),
            reason: format!("not a valid block list ({e}); it was left untouched"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(EnforceError::State {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Inserts every unexpired saved block; returns how many went in.
pub fn restore(list: &mut Blocklist, saved: &[SavedBlock]) -> Result<usize, EnforceError> {
    let (mono, unix) = (monotonic_ns(), unix_ms());
    let mut n = 0;
    for b in saved {
        if b.expires_unix_ms <= unix {
            continue;
        }
        let expires_ns = mono + (b.expires_unix_ms - unix) * 1_000_000;
        list.insert(&b.target, expires_ns, b.flags)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_and_bad_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("vigil-state-{}", std::process::id()));
        let path = dir.join("blocks.json");
        let blocks = vec![SavedBlock {
            target: "10.0.0.0/24".parse().expect("cidr"),
            expires_unix_ms: 42,
            flags: 3,
        }];
        save(&path, &blocks).expect("save");
        assert_eq!(load(&path).expect("load"), blocks);
        std::fs::write(&path, "{not json").expect("write");
        let err = load(&path).expect_err("garbage");
        assert!(err.to_string().contains("blocks.json"), "{err}");
        assert!(load(&dir.join("missing.json"))
            .expect("missing is empty")
            .is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
