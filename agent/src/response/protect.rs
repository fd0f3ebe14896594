//! Files a playbook may not kill or quarantine on an alert's word: those a
//! package owns (dpkg's `/var/lib/dpkg/info/*.list`) and those under the
//! configured protected prefixes (`response.protected_prefixes`). An alert
//! can be wrong about a file, and quarantining `/usr/bin/id` breaks the
//! host; a playbook step that names the path (`allow_protected`) may.
//!
//! The package index holds a keyed 64-bit hash per listed path (about 8
//! bytes a path; a Debian host lists ~125,000), is built on first use and
//! rebuilt when the dpkg directory changes (dpkg renames its lists into
//! place, which changes the directory's mtime). A hash collision can only
//! make a file look protected, never the reverse.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where dpkg lists each package's files.
pub const DPKG_INFO: &str = "/var/lib/dpkg/info";

/// Most package paths indexed (64 MiB of hashes); past it the rest are
/// left out and counted, and the index says it is incomplete.
const MAX_PACKAGE_PATHS: usize = 8 << 20;

/// With merged /usr (Debian 12), `/bin/ls` in a package list is
/// `/usr/bin/ls` on disk; both sides are compared in the /usr form.
fn merged_usr(path: &str) -> Cow<'_, str> {
    const ALIASED: [&str; 6] = ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"];
    if ALIASED.iter().any(|a| path.starts_with(a)) {
        Cow::Owned(format!("/usr{path}"))
    } else {
        Cow::Borrowed(path)
    }
}

/// Paths owned by installed packages, as keyed hashes.
struct PackageIndex {
    /// The dpkg directory's mtime when this was read.
    mtime: Option<SystemTime>,
    keys: RandomState,
    /// Sorted, deduplicated.
    hashes: Vec<u64>,
    /// Paths left out by [`MAX_PACKAGE_PATHS`].
    shed: u64,
}

impl PackageIndex {
    fn hash(keys: &RandomState, path: &str) -> u64 {
        keys.hash_one(merged_usr(path).as_ref())
    }

    fn load(dir: &Path, mtime: Option<SystemTime>) -> PackageIndex {
        let keys = RandomState::new();
        let mut hashes = Vec::new();
        let mut shed = 0u64;
        // A host without dpkg has an empty index: the prefixes still hold.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "list") {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    tracing::warn!("package index: cannot read {}", path.display());
                    continue;
                };
                for line in text.lines().filter(|l| l.starts_with('/')) {
                    if hashes.len() < MAX_PACKAGE_PATHS {
                        hashes.push(Self::hash(&keys, line));
                    } else {
                        shed += 1;
                    }
                }
            }
        }
        if shed > 0 {
            tracing::warn!("package index: {shed} paths past {MAX_PACKAGE_PATHS} left out");
        }
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        PackageIndex {
            mtime,
            keys,
            hashes,
            shed,
        }
    }

    fn owns(&self, path: &str) -> bool {
        self.hashes
            .binary_search(&Self::hash(&self.keys, path))
            .is_ok()
    }
}

/// The protection check the executor runs before a kill or a quarantine.
pub struct Protection {
    prefixes: Vec<String>,
    dpkg_info: PathBuf,
    index: Option<PackageIndex>,
}

impl Protection {
    pub fn new(prefixes: Vec<String>) -> Protection {
        Protection::with_dpkg_info(prefixes, PathBuf::from(DPKG_INFO))
    }

    /// As [`Protection::new`], reading package lists from `dir`.
    pub fn with_dpkg_info(prefixes: Vec<String>, dir: PathBuf) -> Protection {
        Protection {
            prefixes,
            dpkg_info: dir,
            index: None,
        }
    }

    /// The package index, (re)built when the dpkg directory changed.
    fn index(&mut self) -> &PackageIndex {
        let mtime = std::fs::metadata(&self.dpkg_info)
            .and_then(|m| m.modified())
            .ok();
        if self.index.as_ref().is_some_and(|i| i.mtime != mtime) {
            self.index = None;
        }
        let dir = &self.dpkg_info;
        self.index
            .get_or_insert_with(|| PackageIndex::load(dir, mtime))
    }

    /// Paths and packages indexed, and paths shed (for tests and figures).
    pub fn indexed(&mut self) -> (usize, u64) {
        let i = self.index();
        (i.hashes.len(), i.shed)
    }

    /// Why `path` may not be acted on, or None. `allowed` are the paths the
    /// playbook step names; they are compared exactly.
    pub fn refusal(&mut self, path: &str, allowed: &[String]) -> Option<String> {
        // The path as the alert named it and as it resolves now: a
        // symlink into /usr is as protected as /usr.
        let resolved = std::fs::canonicalize(path)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p != path);
        let names: Vec<&str> = std::iter::once(path).chain(resolved.as_deref()).collect();
        if names.iter().any(|n| allowed.iter().any(|a| a == n)) {
            return None;
        }
        for name in &names {
            if let Some(prefix) = self.prefixes.iter().find(|p| name.starts_with(p.as_str())) {
                return Some(format!(
                    "{name} is under the protected prefix {prefix} (response.protected_prefixes); \
                     a playbook step must name it in allow_protected"
                ));
            }
        }
        let index = self.index();
        names.iter().find(|n| index.owns(n)).map(|name| {
            format!(
                "{name} belongs to an installed package; a playbook step must name it in \
                 allow_protected"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("vigil-protect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp");
        Tmp(d)
    }

    #[test]
    fn package_files_and_prefixes_are_refused_unless_named() {
        let t = tmp("pkg");
        let info = t.0.join("info");
        std::fs::create_dir_all(&info).expect("info");
        std::fs::write(
            info.join("coreutils.list"),
            "/.\n/bin\n/bin/ls\n/usr/bin/id\n",
        )
        .expect("list");
        std::fs::write(info.join("coreutils.md5sums"), "/opt/not-a-list\n").expect("md5");
        let mut p = Protection::with_dpkg_info(vec!["/boot/".into()], info.clone());
        // Merged /usr: listed as /bin/ls, executed as /usr/bin/ls.
        let why = p.refusal("/usr/bin/ls", &[]).expect("package file refused");
        assert!(why.contains("package"), "{why}");
        assert!(p.refusal("/usr/bin/id", &[]).is_some());
        assert!(p
            .refusal("/boot/vmlinuz", &[])
            .is_some_and(|w| w.contains("prefix /boot/")));
        assert_eq!(
            p.refusal("/opt/not-a-list", &[]),
            None,
            "only *.list files count"
        );
        assert_eq!(p.refusal("/srv/app/update", &[]), None);
        // A playbook that names the exact path may act on it.
        assert_eq!(p.refusal("/usr/bin/id", &["/usr/bin/id".to_string()]), None);
        assert!(p
            .refusal("/usr/bin/id", &["/usr/bin/".to_string()])
            .is_some());
    }

    #[test]
    fn the_index_follows_dpkg_and_symlinks_resolve() {
        let t = tmp("reload");
        let info = t.0.join("info");
        std::fs::create_dir_all(&info).expect("info");
        let owned = t.0.join("tool");
        std::fs::write(&owned, "x").expect("tool");
        let owned = owned.to_string_lossy().into_owned();
        let mut p = Protection::with_dpkg_info(Vec::new(), info.clone());
        assert_eq!(p.refusal(&owned, &[]), None);
        // A package is installed: dpkg adds its list (the directory changes).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(info.join("tool.list"), format!("{owned}\n")).expect("list");
        assert!(p.refusal(&owned, &[]).is_some(), "index not reloaded");
        // A link to it elsewhere is refused as well.
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&owned, &link).expect("symlink");
        assert!(p.refusal(&link.to_string_lossy(), &[]).is_some());
    }

    /// Loads this host's dpkg lists and prints what the index costs.
    /// `cargo test -p vigil --lib package_index_of_this_host -- --nocapture`
    #[test]
    fn package_index_of_this_host() {
        if !Path::new(DPKG_INFO).is_dir() {
            eprintln!("skipped: no {DPKG_INFO} on this host");
            return;
        }
        let rss_kib = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
                })
                .unwrap_or(0)
        };
        let before = rss_kib();
        let mut p = Protection::new(Vec::new());
        let t = std::time::Instant::now();
        let (n, shed) = p.indexed();
        eprintln!(
            "package index: {n} paths, {} KiB of hashes, built in {:?}, {shed} shed, \
             RSS {} KiB more",
            n * 8 / 1024,
            t.elapsed(),
            rss_kib() - before
        );
        assert_eq!(shed, 0);
        assert!(p.refusal("/usr/bin/dpkg", &[]).is_some());
    }
}
