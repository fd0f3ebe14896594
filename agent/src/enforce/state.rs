//! Blocks saved under the state directory, so they can be restored when the
//! pinned maps are gone (reboot, bpffs wiped). Expiry is saved as wall-clock
//! time because the kernel's monotonic clock restarts at boot. The file is
//! replaced atomically; a corrupt one is moved aside at start and the agent
//! starts with the pinned maps alone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::blocklist::{BlockEntry, Blocklist};
use super::cidr::Cidr;
use super::EnforceError;
use crate::util::clock::monotonic_ns;
use crate::util::statefile::{self, Loaded};

/// The file under the state directory.
pub const FILE: &str = "blocks.json";

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
            expires_unix_ms: unix.saturating_add((e.expires_ns - mono) / 1_000_000),
            flags: e.flags,
        })
        .collect()
}

/// Writes atomically (temp file, sync, rename, directory sync) so a crash
/// or a full disk never leaves half a file.
pub fn save(path: &Path, blocks: &[SavedBlock]) -> Result<(), EnforceError> {
    let err = |reason: String| EnforceError::State {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    statefile::write_json(path, &blocks, statefile::Sync::Full).map_err(|e| err(e.to_string()))
}

/// The saved blocks; a corrupt file is moved aside (with a warning) and
/// yields none, so a bad file never stops the agent from starting.
pub fn load(path: &Path) -> Loaded<Vec<SavedBlock>> {
    statefile::load_json(path, |_| Ok(()))
}

/// A wall-clock expiry (ms) on the monotonic clock (ns), saturating: a
/// far-future expiry in an edited file must not wrap into the past.
fn to_mono_ns(expires_unix_ms: u64, unix_ms: u64, mono_ns: u64) -> u64 {
    mono_ns.saturating_add(
        expires_unix_ms
            .saturating_sub(unix_ms)
            .saturating_mul(1_000_000),
    )
}

/// Inserts every unexpired saved block; returns how many went in.
pub fn restore(list: &mut Blocklist, saved: &[SavedBlock]) -> Result<usize, EnforceError> {
    let (mono, unix) = (monotonic_ns(), unix_ms());
    let mut n = 0;
    for b in saved {
        if b.expires_unix_ms <= unix {
            continue;
        }
        let expires_ns = to_mono_ns(b.expires_unix_ms, unix, mono);
        list.insert(&b.target, expires_ns, b.flags)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_and_a_bad_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("vigil-state-{}", std::process::id()));
        let path = dir.join("blocks.json");
        let blocks = vec![SavedBlock {
            target: "10.0.0.0/24".parse().expect("cidr"),
            expires_unix_ms: 42,
            flags: 3,
        }];
        save(&path, &blocks).expect("save");
        assert_eq!(load(&path), Loaded::Found(blocks));
        std::fs::write(&path, "{not json").expect("write");
        let Loaded::MovedAside(aside) = load(&path) else {
            panic!("a corrupt blocks.json was not moved aside");
        };
        assert!(!path.exists());
        assert_eq!(std::fs::read(&aside).expect("aside"), b"{not json");
        assert_eq!(load(&dir.join("missing.json")), Loaded::Missing);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_far_future_expiry_saturates_instead_of_overflowing() {
        assert_eq!(to_mono_ns(u64::MAX, 1_000, 5), u64::MAX);
        assert_eq!(to_mono_ns(3_000, 1_000, 5), 5 + 2_000_000_000);
    }
}
