//! Quarantine: moves an executable into a root-only directory under the
//! state directory with its hash, original path, identity, mode and owner,
//! so it can neither run nor be lost, and can be put back exactly.
//!
//! The original's path is untrusted (an unprivileged user may own the
//! directory it is in), so nothing here resolves it by name twice: its
//! parent directory is opened one component at a time with `O_NOFOLLOW`,
//! and the file is opened, checked, removed and later re-created relative
//! to that directory's fd, never following a symbolic link. A link swapped
//! in at the file or anywhere on its path makes the step refuse instead of
//! reading, removing or writing somewhere else.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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
    #[error("quarantine {0}: not an absolute path without `.` or `..`")]
    BadPath(PathBuf),
    #[error("{path}: {what} is a symbolic link, which is never followed; nothing was changed")]
    Symlink { path: PathBuf, what: String },
    #[error(
        "quarantine {path}: {size} bytes is more than response.quarantine_max_bytes ({max}); \
         the file was left in place"
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("quarantine {0}: the file was replaced while it was copied; it was left in place")]
    Replaced(PathBuf),
    #[error(
        "cannot restore {path}: something is there now (a file, a directory or a symbolic link, \
         which is never followed); the quarantined copy stays in {dir}"
    )]
    Occupied { path: PathBuf, dir: PathBuf },
    #[error("cannot restore {path}: the quarantined copy no longer has sha256 {sha256}; it stays in {dir}")]
    Corrupt {
        path: PathBuf,
        sha256: String,
        dir: PathBuf,
    },
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
    /// Device and inode the original had: what was opened, checked and
    /// removed (0 in records written before they were kept).
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
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

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn openat(dir: RawFd, name: &CStr, flags: i32, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; on success the kernel returns a new
    // fd that nothing else owns.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: fd was just opened and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open descriptor, st a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last_error());
    }
    Ok(st)
}

/// What `name` in `dir` is now, without following a link.
fn lstat_at(dir: RawFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: as in fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open, name NUL-terminated, st a valid out pointer.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(last_error());
    }
    Ok(st)
}

fn is_link(dir: RawFd, name: &CStr) -> bool {
    lstat_at(dir, name).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// Removes `name` from `dir` only while it still is inode (dev, ino).
fn unlink_if_same(dir: RawFd, name: &CStr, dev: u64, ino: u64) -> std::io::Result<bool> {
    let st = lstat_at(dir, name)?;
    if st.st_dev != dev || st.st_ino != ino {
        return Ok(false);
    }
    // SAFETY: dir is open, name NUL-terminated.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
        return Err(last_error());
    }
    Ok(true)
}

/// Opens the directory holding `path` by walking its components from `/`
/// with `O_NOFOLLOW`, and returns it with the file's own name.
fn open_parent(path: &Path) -> Result<(OwnedFd, CString), QuarantineError> {
    let bad = || QuarantineError::BadPath(path.to_path_buf());
    let mut parts = Vec::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::Normal(n) => {
                parts.push(CString::new(n.as_bytes()).map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    if !path.is_absolute() {
        return Err(bad());
    }
    let name = parts.pop().ok_or_else(bad)?;
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let mut dir = openat(libc::AT_FDCWD, c"/", dir_flags, 0).map_err(io(path))?;
    let mut walked = PathBuf::from("/");
    for part in &parts {
        walked.push(std::ffi::OsStr::from_bytes(part.as_bytes()));
        dir = match openat(dir.as_raw_fd(), part, dir_flags, 0) {
            Ok(next) => next,
            Err(_) if is_link(dir.as_raw_fd(), part) => {
                return Err(QuarantineError::Symlink {
                    path: path.to_path_buf(),
                    what: format!("directory {}", walked.display()),
                })
            }
            Err(e) => return Err(io(path)(e)),
        };
    }
    Ok((dir, name))
}

/// Copies at most `max` bytes from `from` to `to`, returning the count and
/// the SHA-256, or None when `from` holds more than `max`.
fn copy_capped(from: &mut File, to: &mut File, max: u64) -> std::io::Result<Option<(u64, String)>> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Ok(None);
        }
        hash.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    let hex = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some((total, hex)))
}

/// Moves `path` into the quarantine; returns its record. Refuses a link
/// (at the file or on its path), anything but a regular file, and files
/// over `max_bytes`.
pub fn quarantine(state_dir: &Path, path: &Path, max_bytes: u64) -> Result<Meta, QuarantineError> {
    let (dir, name) = open_parent(path)?;
    // O_NONBLOCK: opening a FIFO planted at the path must not hang the agent.
    let fd = match openat(
        dir.as_raw_fd(),
        &name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(QuarantineError::Symlink {
                path: path.to_path_buf(),
                what: "the file".to_string(),
            })
        }
        Err(e) => return Err(io(path)(e)),
    };
    let st = fstat(fd.as_raw_fd()).map_err(io(path))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(QuarantineError::NotAFile(path.to_path_buf()));
    }
    let too_large = |size: u64| QuarantineError::TooLarge {
        path: path.to_path_buf(),
        size,
        max: max_bytes,
    };
    if st.st_size as u64 > max_bytes {
        return Err(too_large(st.st_size as u64));
    }

    let top = root(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&top)
        .map_err(io(&top))?;
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).map_err(io(&top))?;
    // Named by the id first; the hash is only known after the copy.
    let id_base = crate::util::id::new_id();
    let staging = top.join(format!(".{id_base}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io(&staging))?;
    let result = copy_in(&staging, fd, path, max_bytes);
    let (size, sha256) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(too_large(st.st_size as u64));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let id = format!("{}-{id_base}", &sha256[..16]);
    let meta = Meta {
        id: id.clone(),
        path: path.to_path_buf(),
        sha256,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size,
        dev: st.st_dev,
        ino: st.st_ino,
    };
    let meta_path = staging.join("meta.json");
    let body = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let dest = top.join(&id);
    if let Err(e) = std::fs::write(&meta_path, body).and_then(|_| std::fs::rename(&staging, &dest))
    {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io(&dest)(e));
    }
    // The copy is on disk; the original goes only if the name still is the
    // inode that was copied (a swap since the open leaves it alone).
    match unlink_if_same(dir.as_raw_fd(), &name, st.st_dev, st.st_ino) {
        Ok(true) => Ok(meta),
        Ok(false) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(QuarantineError::Replaced(path.to_path_buf()))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(io(path)(e))
        }
    }
}

/// Copies the opened original into `staging/file` (mode 0, synced).
fn copy_in(
    staging: &Path,
    fd: OwnedFd,
    path: &Path,
    max_bytes: u64,
) -> Result<Option<(u64, String)>, QuarantineError> {
    let dest = staging.join("file");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dest)
        .map_err(io(&dest))?;
    let mut src = File::from(fd);
    let done = copy_capped(&mut src, &mut out, max_bytes).map_err(io(path))?;
    out.sync_all().map_err(io(&dest))?;
    Ok(done)
}

/// Puts a quarantined file back with its mode and owner. The name is
/// created anew (`O_CREAT|O_EXCL|O_NOFOLLOW` relative to its parent), so
/// anything now at the path, a dangling link included, makes it refuse
/// and the quarantined copy stays.
pub fn restore(state_dir: &Path, id: &str) -> Result<Meta, QuarantineError> {
    if id.contains('/') || id.starts_with('.') || id.is_empty() {
        return Err(QuarantineError::Unknown(id.to_string()));
    }
    let dir = root(state_dir).join(id);
    let meta_path = dir.join("meta.json");
    let text = std::fs::read(&meta_path).map_err(|_| QuarantineError::Unknown(id.to_string()))?;
    let meta: Meta =
        serde_json::from_slice(&text).map_err(|_| QuarantineError::Unknown(id.to_string()))?;
    let (parent, name) = open_parent(&meta.path)?;
    let occupied = || QuarantineError::Occupied {
        path: meta.path.clone(),
        dir: dir.clone(),
    };
    let out = match openat(
        parent.as_raw_fd(),
        &name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ELOOP)) => {
            return Err(occupied())
        }
        Err(e) => return Err(io(&meta.path)(e)),
    };
    let created = fstat(out.as_raw_fd()).map_err(io(&meta.path))?;
    let mut out = File::from(out);
    let result = write_back(&dir, &meta, &mut out);
    if let Err(e) = result {
        // Take back what was created here, and only that.
        let _ = unlink_if_same(parent.as_raw_fd(), &name, created.st_dev, created.st_ino);
        return Err(e);
    }
    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    Ok(meta)
}

/// Fills the re-created file, then owner, then mode (chown clears setuid).
fn write_back(dir: &Path, meta: &Meta, out: &mut File) -> Result<(), QuarantineError> {
    let src_path = dir.join("file");
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&src_path)
        .map_err(io(&src_path))?;
    let copied = copy_capped(&mut src, out, meta.size).map_err(io(&meta.path))?;
    if copied.map(|(_, h)| h).as_deref() != Some(meta.sha256.as_str()) {
        return Err(QuarantineError::Corrupt {
            path: meta.path.clone(),
            sha256: meta.sha256.clone(),
            dir: dir.to_path_buf(),
        });
    }
    let fd = out.as_raw_fd();
    // SAFETY: fd is the file just created.
    if unsafe { libc::fchown(fd, meta.uid, meta.gid) } != 0 {
        return Err(io(&meta.path)(last_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::fchmod(fd, meta.mode as libc::mode_t) } != 0 {
        return Err(io(&meta.path)(last_error()));
    }
    out.sync_all().map_err(io(&meta.path))
}

#[cfg(test)]
mod tests;
