//! Quarantine: moves an executable into a root-only directory under the
//! state directory with its hash, original path, mode and owner, so it can
//! neither run nor be lost, and can be put back exactly.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("quarantine {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("quarantine {0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("cannot restore {path}: something new is there; the quarantined copy stays in {dir}")]
    Occupied { path: PathBuf, dir: PathBuf },
    #[error("no quarantined file {0}")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub path: PathBuf,
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QuarantineError + '_ {
    move |source| QuarantineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("quarantine")
}

/// Moves `path` into the quarantine; returns its record.
pub fn quarantine(state_dir: &Path, path: &Path) -> Result<Meta, QuarantineError> {
    let md = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !md.is_file() {
        return Err(QuarantineError::NotAFile(path.to_path_buf()));
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = format!("{}-{}", &sha256[..16], crate::util::id::new_id());
    let dir = root(state_dir).join(&id);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let top = root(state_dir);
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).map_err(io(&top))?;
    let meta = Meta {
        id,
        path: path.to_path_buf(),
        sha256,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.len(),
    };
    let meta_path = dir.join("meta.json");
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
    .map_err(io(&meta_path))?;
    let dest = dir.join("file");
    // The copy is written and synced before the original goes away.
    std::fs::write(&dest, &bytes).map_err(io(&dest))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o000)).map_err(io(&dest))?;
    std::fs::File::open(&dest)
        .and_then(|f| f.sync_all())
        .map_err(io(&dest))?;
    std::fs::remove_file(path).map_err(io(path))?;
    Ok(meta)
}

/// Puts a quarantined file back with its mode and owner.
pub fn restore(state_dir: &Path, id: &str) -> Result<Meta, QuarantineError> {
    if id.contains('/') || id.starts_with('.') {
        return Err(QuarantineError::Unknown(id.to_string()));
    }
    let dir = root(state_dir).join(id);
    let meta_path = dir.join("meta.json");
    let text = std::fs::read(&meta_path).map_err(|_| QuarantineError::Unknown(id.to_string()))?;
    let meta: Meta =
        serde_json::from_slice(&text).map_err(|_| QuarantineError::Unknown(id.to_string()))?;
    if meta.path.exists() {
        return Err(QuarantineError::Occupied {
            path: meta.path.clone(),
            dir,
        });
    }
    let src = dir.join("file");
    let bytes = std::fs::read(&src).map_err(io(&src))?;
    std::fs::write(&meta.path, &bytes).map_err(io(&meta.path))?;
    std::os::unix::fs::chown(&meta.path, Some(meta.uid), Some(meta.gid)).map_err(io(&meta.path))?;
    std::fs::set_permissions(&meta.path, std::fs::Permissions::from_mode(meta.mode))
        .map_err(io(&meta.path))?;
    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_and_restore_keep_content_mode_and_hash() {
        let base = std::env::temp_dir().join(format!("vigil-q-{}", std::process::id()));
        // A failed earlier run may have left it behind.
        let _ = std::fs::remove_dir_all(&base);
        let state = base.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let f = base.join("payload");
        std::fs::write(&f, b"#!/bin/sh\necho evil\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
        let m = quarantine(&state, &f).unwrap();
        assert!(!f.exists());
        assert_eq!(m.mode, 0o751);
        assert_eq!(m.size, 20);
        let q = state.join("quarantine").join(&m.id).join("file");
        assert_eq!(std::fs::metadata(&q).unwrap().mode() & 0o777, 0);
        let back = restore(&state, &m.id).unwrap();
        assert_eq!(back.sha256, m.sha256);
        assert_eq!(std::fs::read(&f).unwrap(), b"#!/bin/sh\necho evil\n");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o751);
        assert!(matches!(
            restore(&state, &m.id),
            Err(QuarantineError::Unknown(_))
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
