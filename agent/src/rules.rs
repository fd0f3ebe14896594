//! The I/O side of the sigma detector: reads the rule files under
//! `detect.sigma.dirs` and the passwd user table, and compiles them into a
//! [`RuleSet`]. Bounded: files over [`MAX_FILE_BYTES`], more than
//! [`MAX_FILES`] files or deeper than [`MAX_DEPTH`] are errors, not hangs;
//! symbolic links are not followed (a rule directory is configuration, and
//! a link out of it is someone else's file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::detect::sigma::fields::Users;
use crate::detect::sigma::rules::{RuleSet, Source, Trouble};

pub const MAX_FILE_BYTES: u64 = 1 << 20;
pub const MAX_FILES: usize = 20_000;
pub const MAX_DEPTH: usize = 16;

fn trouble(path: &Path, reason: String) -> Trouble {
    Trouble {
        file: path.display().to_string(),
        line: 0,
        rule: None,
        reason,
    }
}

fn is_rule_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yml" || e == "yaml")
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, errors: &mut Vec<Trouble>) {
    if depth > MAX_DEPTH {
        errors.push(trouble(dir, format!("deeper than {MAX_DEPTH} directories")));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(trouble(dir, format!("cannot read the directory: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            walk(&p, depth + 1, out, errors);
        } else if md.is_file() && is_rule_file(&p) {
            if out.len() >= MAX_FILES {
                errors.push(trouble(&p, format!("more than {MAX_FILES} rule files")));
                return;
            }
            out.push(p);
        }
    }
}

/// Every rule file under `dirs` (a file named directly is taken as is),
/// read; what could not be read is an error.
pub fn read_sources(dirs: &[PathBuf]) -> (Vec<Source>, Vec<Trouble>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for d in dirs {
        match std::fs::symlink_metadata(d) {
            Ok(md) if md.is_file() => files.push(d.clone()),
            Ok(_) | Err(_) => walk(d, 0, &mut files, &mut errors),
        }
    }
    let mut sources = Vec::new();
    for f in files {
        match std::fs::metadata(&f) {
            Ok(md) if md.len() > MAX_FILE_BYTES => {
                errors.push(trouble(&f, format!("larger than {MAX_FILE_BYTES} bytes")));
                continue;
            }
            _ => {}
        }
        match std::fs::read_to_string(&f) {
            Ok(text) => sources.push(Source {
                file: f.display().to_string(),
                text,
            }),
            Err(e) => errors.push(trouble(&f, format!("cannot read: {e}"))),
        }
    }
    (sources, errors)
}

/// Reads and compiles the rules under `dirs`; unreadable files are in the
/// set's errors.
pub fn load(dirs: &[PathBuf]) -> RuleSet {
    let (sources, read_errors) = read_sources(dirs);
    let mut set = RuleSet::compile(&sources);
    set.errors.extend(read_errors);
    set
}

/// uid → name from passwd-format text (`name:x:uid:…`).
pub fn parse_passwd(text: &str) -> Users {
    let mut users = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            users.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    users
}

/// The local user table (`/etc/passwd`); empty when unreadable, and then
/// `User` is matched as the numeric uid.
pub fn read_users() -> Arc<Users> {
    Arc::new(parse_passwd(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_first_name_wins_and_junk_is_skipped() {
        let u = parse_passwd("root:x:0:0::/root:/bin/bash\ntoor:x:0:0::/:/bin/sh\njunk\nbob:x:abc:1\nann:x:1000:1000::/home/ann:/bin/sh\n");
        assert_eq!(u.get(&0).map(String::as_str), Some("root"));
        assert_eq!(u.get(&1000).map(String::as_str), Some("ann"));
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn loads_the_project_rules_and_names_what_it_cannot_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigma-rules");
        let set = load(&[root.clone(), root.join("missing")]);
        assert_eq!(set.loaded(), 11);
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert!(
            set.errors[0].reason.contains("cannot read"),
            "{:?}",
            set.errors
        );
    }

    #[test]
    fn oversized_files_and_links_out_are_refused() {
        let dir = std::env::temp_dir().join(format!("vigil-rules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.yml"), vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let target =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigma-rules/chmod_setuid.yml");
        std::os::unix::fs::symlink(target, dir.join("link.yml")).unwrap();
        let set = load(std::slice::from_ref(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(set.loaded(), 0);
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert!(set.errors[0].reason.contains("larger than"));
    }
}
