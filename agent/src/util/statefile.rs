//! State files written so a crash or a full disk never leaves half of one:
//! the new content goes to a temporary file in the same directory (created
//! exclusively, mode 0600), is synced, renamed over the old name, and the
//! directory is synced. A file that cannot be parsed at start is moved
//! aside to `<name>.corrupt-<unix time>` with a warning, and its component
//! starts empty instead of refusing to start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: cannot serialise: {reason}")]
    Encode { path: PathBuf, reason: String },
}

/// How far a write is made durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// File synced, renamed, directory synced: the new content survives a
    /// power loss once this returns.
    Full,
    /// File synced and renamed, directory not synced: after a power loss
    /// the old or the new content is there, never a mix. For files written
    /// very often whose readers accept a slightly stale value.
    NoDir,
}

/// Temporary names are unique within the process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
/// Writes that failed in this process, for the metrics.
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// State file writes that failed so far (disk full, I/O errors).
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Syncs a directory, so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically (see the module comment).
pub fn write(path: &Path, bytes: &[u8], sync: Sync) -> Result<(), StateFileError> {
    let r = write_inner(path, bytes, sync);
    if r.is_err() {
        WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn write_inner(path: &Path, bytes: &[u8], sync: Sync) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = tmp_name(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if sync == Sync::Full {
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    }
    Ok(())
}

/// [`write`] of a value as JSON.
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    sync: Sync,
) -> Result<(), StateFileError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StateFileError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write(path, &bytes, sync)
}

/// What loading a state file found.
#[derive(Debug, PartialEq)]
pub enum Loaded<T> {
    /// No file: a first start.
    Missing,
    Found(T),
    /// It could not be parsed; it now lives at the given path.
    MovedAside(PathBuf),
    /// It could not be read (permissions, I/O error); it was left in place.
    Unreadable(String),
}

impl<T> Loaded<T> {
    /// The value, when there was a good one.
    pub fn found(self) -> Option<T> {
        match self {
            Loaded::Found(v) => Some(v),
            _ => None,
        }
    }
}

/// Reads `path` and parses it with `parse`. A file that does not parse is
/// moved aside with a warning naming both paths and the reason.
pub fn load<T>(path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> Loaded<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => {
            tracing::warn!("cannot read {} ({e}); starting without it", path.display());
            return Loaded::Unreadable(e.to_string());
        }
    };
    match parse(&bytes) {
        Ok(v) => Loaded::Found(v),
        Err(reason) => match move_aside(path) {
            Ok(to) => {
                tracing::warn!(
                    "{} is corrupt ({reason}); moved it to {} and starting without it",
                    path.display(),
                    to.display()
                );
                Loaded::MovedAside(to)
            }
            Err(e) => {
                tracing::warn!(
                    "{} is corrupt ({reason}) and could not be moved aside ({e}); starting without it",
                    path.display()
                );
                Loaded::Unreadable(reason)
            }
        },
    }
}

/// [`load`] of a JSON value, with an extra check on the parsed value.
pub fn load_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Loaded<T> {
    load(path, |b| {
        let v: T = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        check(&v)?;
        Ok(v)
    })
}

/// Renames `path` to `<path>.corrupt-<unix seconds>` (with a counter when
/// that name is taken).
pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100u32 {
        let suffix = if n == 0 {
            format!("{name}.corrupt-{secs}")
        } else {
            format!("{name}.corrupt-{secs}-{n}")
        };
        let to = path.with_file_name(suffix);
        if to.symlink_metadata().is_err() {
            std::fs::rename(path, &to)?;
            return Ok(to);
        }
    }
    Err(std::io::Error::other("too many corrupt copies already"))
}

/// Creates `dir` (mode 0700) or tightens an existing one that others can
/// read: the state directory holds the audit log, saved blocks and the
/// spool, none of which is anyone else's business.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::info!(
            "state directory {} was mode {mode:o}; setting 0700",
            dir.display()
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-statefile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_write_replaces_the_file_with_mode_0600_and_leaves_no_temp() {
        let d = dir("write");
        let p = d.join("x.json");
        write_json(&p, &vec![1, 2, 3], Sync::Full).expect("write");
        write_json(&p, &vec![4], Sync::NoDir).expect("write again");
        assert_eq!(std::fs::read(&p).expect("read"), b"[4]");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&d)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["x.json"], "a temporary file was left behind");
        let got: Loaded<Vec<u32>> = load_json(&p, |_| Ok(()));
        assert_eq!(got, Loaded::Found(vec![4]));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let d = dir("fail");
        let p = d.join("x.json");
        write(&p, b"old", Sync::Full).expect("write");
        // A directory where the temp would go makes the write fail midway.
        let missing = d.join("gone").join("x.json");
        assert!(write(&missing, b"new", Sync::Full).is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_a_missing_one_is_missing() {
        let d = dir("corrupt");
        let p = d.join("blocks.json");
        assert_eq!(load_json::<Vec<u32>>(&p, |_| Ok(())), Loaded::Missing);
        std::fs::write(&p, "{not json").expect("write");
        let Loaded::MovedAside(to) = load_json::<Vec<u32>>(&p, |_| Ok(())) else {
            panic!("not moved aside");
        };
        assert!(!p.exists());
        assert_eq!(std::fs::read(&to).expect("aside"), b"{not json");
        assert!(to
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("blocks.json.corrupt-")));
        // A value that parses but fails the check is corrupt too.
        std::fs::write(&p, "[7]").expect("write");
        let got = load_json::<Vec<u32>>(&p, |v| {
            if v[0] > 5 {
                Err("too big".into())
            } else {
                Ok(())
            }
        });
        assert!(matches!(got, Loaded::MovedAside(_)), "{got:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_state_dir_is_made_private() {
        let d = dir("private");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&d).expect("private");
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let sub = d.join("a/b");
        private_dir(&sub).expect("create");
        let mode = std::fs::metadata(&sub).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let _ = std::fs::remove_dir_all(&d);
    }
}
