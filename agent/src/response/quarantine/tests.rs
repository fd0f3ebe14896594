//! Quarantine against hostile paths: links at the file, on its path and
//! swapped in before a restore, oversize files and non-files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

const MAX: u64 = 1 << 20;

/// A scratch tree: `base/state` for the agent, `base/drop` for the files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let base = std::env::temp_dir().join(format!("vigil-q-{tag}-{}", std::process::id()));
        // A failed earlier run may have left it behind.
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("state")).expect("state dir");
        std::fs::create_dir_all(base.join("drop")).expect("drop dir");
        Scratch(base)
    }
    fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    fn file(&self, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let p = self.0.join("drop").join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
    /// Entries under `state/quarantine` (staging directories included).
    fn held(&self) -> Vec<String> {
        std::fs::read_dir(self.state().join("quarantine"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn round_trip_keeps_bytes_mode_owner_and_identity() {
    let s = Scratch::new("trip");
    let body = b"#!/bin/sh\necho evil\n";
    let f = s.file("payload", body, 0o4751);
    let (uid, gid) = if root() { (4242, 4343) } else { (0, 0) };
    if root() {
        std::os::unix::fs::chown(&f, Some(uid), Some(gid)).expect("chown");
        // chown clears setuid; put it back for the test.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4751)).expect("chmod");
    }
    let before = std::fs::symlink_metadata(&f).expect("stat");
    let m = quarantine(&s.state(), &f, MAX).expect("quarantine");
    assert!(!f.exists());
    assert_eq!((m.mode, m.size), (0o4751, body.len() as u64));
    assert_eq!((m.dev, m.ino), (before.dev(), before.ino()));
    assert_eq!(s.held(), vec![m.id.clone()], "no staging left behind");
    let q = s.state().join("quarantine").join(&m.id);
    assert_eq!(
        std::fs::metadata(q.join("file")).expect("copy").mode() & 0o777,
        0
    );
    let top = std::fs::metadata(s.state().join("quarantine")).expect("top");
    assert_eq!(top.mode() & 0o777, 0o700);
    let back = restore(&s.state(), &m.id).expect("restore");
    assert_eq!(back.sha256, m.sha256);
    assert_eq!(std::fs::read(&f).expect("restored"), body);
    let after = std::fs::metadata(&f).expect("restored");
    assert_eq!(after.mode() & 0o7777, 0o4751);
    if root() {
        assert_eq!((after.uid(), after.gid()), (uid, gid));
    }
    assert!(matches!(
        restore(&s.state(), &m.id),
        Err(QuarantineError::Unknown(_))
    ));
}

#[test]
fn a_dangling_symlink_swapped_in_before_restore_is_not_followed() {
    let s = Scratch::new("dangle");
    let f = s.file("payload", b"malware", 0o755);
    let m = quarantine(&s.state(), &f, MAX).expect("quarantine");
    // The user plants a link where the file was, aimed at a file of theirs
    // to be (or, as root would be tricked, at /etc/cron.d/x).
    let target = s.0.join("drop").join("created-through-the-link");
    std::os::unix::fs::symlink(&target, &f).expect("symlink");
    let err = restore(&s.state(), &m.id).expect_err("restore through a link");
    assert!(matches!(err, QuarantineError::Occupied { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("symbolic link") && msg.contains("stays in"),
        "{msg}"
    );
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "the link's target was created"
    );
    assert!(std::fs::symlink_metadata(&f)
        .expect("link still there")
        .file_type()
        .is_symlink());
    assert_eq!(s.held(), vec![m.id.clone()], "the copy must stay");
    // Once the path is clear the restore works.
    std::fs::remove_file(&f).expect("rm link");
    restore(&s.state(), &m.id).expect("restore");
    assert_eq!(std::fs::read(&f).expect("back"), b"malware");
}

#[test]
fn a_symlink_at_quarantine_time_is_refused_and_its_target_untouched() {
    let s = Scratch::new("link");
    let victim = s.file("victim", b"innocent", 0o644);
    let link = s.0.join("drop").join("payload");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let err = quarantine(&s.state(), &link, MAX).expect_err("a link");
    assert!(matches!(err, QuarantineError::Symlink { .. }), "{err}");
    assert!(
        err.to_string().contains("the file is a symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"innocent");
    assert!(std::fs::symlink_metadata(&link).is_ok());
    assert!(s.held().is_empty(), "{:?}", s.held());
}

#[test]
fn a_symlinked_directory_on_the_path_is_refused_both_ways() {
    let s = Scratch::new("dirlink");
    let real = s.0.join("real");
    std::fs::create_dir(&real).expect("real dir");
    std::fs::write(real.join("payload"), b"innocent").expect("write");
    let via = s.0.join("drop").join("via");
    std::os::unix::fs::symlink(&real, &via).expect("dir link");
    let err = quarantine(&s.state(), &via.join("payload"), MAX).expect_err("through a dir link");
    assert!(matches!(err, QuarantineError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
    assert_eq!(
        std::fs::read(real.join("payload")).expect("kept"),
        b"innocent"
    );

    // Restore: the file's directory is replaced by a link elsewhere.
    let sub = s.0.join("drop").join("sub");
    std::fs::create_dir(&sub).expect("sub");
    std::fs::write(sub.join("x"), b"malware").expect("write");
    let m = quarantine(&s.state(), &sub.join("x"), MAX).expect("quarantine");
    std::fs::remove_dir(&sub).expect("rmdir");
    let elsewhere = s.0.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, &sub).expect("link");
    let err = restore(&s.state(), &m.id).expect_err("restore through a dir link");
    assert!(matches!(err, QuarantineError::Symlink { .. }), "{err}");
    assert!(!elsewhere.join("x").exists(), "written through the link");
    assert_eq!(s.held(), vec![m.id]);
}

#[test]
fn oversize_files_are_refused_and_left_in_place() {
    let s = Scratch::new("big");
    let f = s.file("payload", &[7u8; 100], 0o755);
    let err = quarantine(&s.state(), &f, 99).expect_err("too large");
    assert!(
        matches!(
            err,
            QuarantineError::TooLarge {
                size: 100,
                max: 99,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("response.quarantine_max_bytes") && msg.contains("left in place"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&f).expect("kept").len(), 100);
    assert!(s.held().is_empty(), "{:?}", s.held());
    // Exactly at the cap is fine.
    quarantine(&s.state(), &f, 100).expect("at the cap");
}

#[test]
fn directories_fifos_and_unclean_paths_are_refused() {
    let s = Scratch::new("odd");
    let d = s.0.join("drop").join("dir");
    std::fs::create_dir(&d).expect("dir");
    let err = quarantine(&s.state(), &d, MAX).expect_err("a directory");
    assert!(matches!(err, QuarantineError::NotAFile(_)), "{err}");
    assert!(d.is_dir());
    let fifo = s.0.join("drop").join("fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).expect("cstr");
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Would block forever on open without O_NONBLOCK.
    let err = quarantine(&s.state(), &fifo, MAX).expect_err("a fifo");
    assert!(matches!(err, QuarantineError::NotAFile(_)), "{err}");
    for bad in ["relative/payload", "/tmp/../etc/passwd", "/"] {
        let err = quarantine(&s.state(), Path::new(bad), MAX).expect_err(bad);
        assert!(matches!(err, QuarantineError::BadPath(_)), "{bad}: {err}");
    }
    assert!(s.held().is_empty(), "{:?}", s.held());
}

#[test]
fn a_rollback_through_the_executor_refuses_a_planted_link_with_a_clear_action() {
    use crate::enforce::actions::{ActionState, Verb};
    use crate::response::engine::Executor;
    use crate::response::executor::HostExecutor;
    let s = Scratch::new("rollback");
    let f = s.file("update.bin", b"malware", 0o755);
    let state = s.state();
    let mut protection = crate::response::protect::Protection::new(Vec::new());
    let mut ex = HostExecutor {
        containment: None,
        state_dir: &state,
        host: "test-host",
        protection: &mut protection,
        quarantine_max_bytes: MAX,
    };
    let done = ex.quarantine(&f.to_string_lossy(), &[]);
    assert_eq!(done.action.state, ActionState::Applied, "{:?}", done.action);
    let undo = done.undo.expect("an applied quarantine can be undone");
    let target = s.0.join("cron-entry");
    std::os::unix::fs::symlink(&target, &f).expect("symlink");
    let back = ex.undo(&undo);
    assert_eq!(
        (back.action.action, back.action.state),
        (Verb::Restore, ActionState::Failed),
        "{:?}",
        back.action
    );
    assert!(
        back.action.detail.contains("symbolic link"),
        "{}",
        back.action.detail
    );
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "target created"
    );
    // Over the cap: a failed quarantine naming the key, the file in place.
    let big = s.file("big.bin", &[1u8; 64], 0o755);
    ex.quarantine_max_bytes = 63;
    let refused = ex.quarantine(&big.to_string_lossy(), &[]);
    assert_eq!(refused.action.state, ActionState::Failed);
    assert!(
        refused.action.detail.contains("quarantine_max_bytes"),
        "{}",
        refused.action.detail
    );
    assert!(refused.undo.is_none() && big.exists());
}
