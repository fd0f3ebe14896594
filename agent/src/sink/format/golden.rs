//! Golden tests: every record kind a format maps, validated by tools from
//! the registries (never a schema copied into the tree): OCSF 1.5.0 by the
//! PyPI package ocsf-emitter 0.3.0 (tools/ocsf_validate.py), ECS 8.11 by the
//! field set of the npm package @elastic/ecs 8.11.5
//! (tools/ecs_validate.js). `cargo xtask setup --test-tools` installs
//! both under target/tools; the tests that need them are ignored in a
//! plain `cargo test` and run by `cargo xtask test`. Also the generated
//! examples in docs/events.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::samples::samples;
use super::Format;

/// Every native kind that has an OCSF and an ECS mapping; the samples
/// must cover them all.
const MAPPED_KINDS: &[&str] = &[
    "process_exec",
    "process_exit",
    "process_fork",
    "net_connect",
    "net_accept",
    "net_close",
    "net_connect_failed",
    "net_refused",
    "auth_attempt",
    "file_write",
    "flow",
    "alert",
    "action",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The validator command for `format`, reading a JSON lines file.
pub fn validator(format: Format) -> Command {
    let root = root();
    match format {
        Format::Ocsf => {
            let mut c = Command::new(root.join("target/tools/ocsf-venv/bin/python3"));
            c.arg(root.join("tools/ocsf_validate.py"));
            c
        }
        _ => {
            let mut c = Command::new("node");
            c.arg(root.join("tools/ecs_validate.js"))
                .arg(root.join("target/tools/ecs/node_modules/@elastic/ecs"));
            c
        }
    }
}

/// Runs the validator on `lines`; returns (passed, its output).
pub fn validate(format: Format, lines: &[String], name: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!(
        "vigil-golden-{name}-{}-{}.jsonl",
        format.as_str(),
        std::process::id()
    ));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write lines");
    let out = validator(format)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {} validator: {e}", format.as_str()));
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn rendered(format: Format) -> Vec<(&'static str, String)> {
    let s = samples();
    s.outputs()
        .iter()
        .map(|(kind, out)| {
            let native = out.to_json().expect("native");
            let line = format
                .render(out, &native)
                .unwrap_or_else(|| panic!("{kind} has no {} mapping", format.as_str()));
            (*kind, line)
        })
        .collect()
}

fn golden(format: Format, broken: impl Fn(&mut serde_json::Value)) {
    let lines = rendered(format);
    for kind in MAPPED_KINDS {
        assert!(
            lines.iter().any(|(k, _)| k == kind),
            "no {kind} sample: the golden test must cover every mapped kind"
        );
    }
    let lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    let (ok, out) = validate(format, &lines, "all");
    assert!(ok, "{} validation failed:\n{out}", format.as_str());
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok")).count(),
        lines.len(),
        "{out}"
    );
    // The validator must be able to say no: one broken record fails.
    let mut v: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    broken(&mut v);
    let (ok, out) = validate(format, &[v.to_string()], "broken");
    assert!(
        !ok,
        "a broken record passed the {} validator: {v}\n{out}",
        format.as_str()
    );
}

#[test]
#[ignore = "needs ocsf-emitter 0.3.0 in target/tools/ocsf-venv (cargo xtask setup --test-tools)"]
fn every_record_kind_is_valid_ocsf_1_5_0() {
    golden(Format::Ocsf, |v| {
        v["process"]["parent_process"]["guid"] = "not an OCSF attribute".into();
    });
    // The exec is a Launch (activity 1): 100702 is another activity's.
    let (kind, line) = &rendered(Format::Ocsf)[1];
    assert_eq!(*kind, "process_exec");
    let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
    v["type_uid"] = 100_702.into();
    assert!(
        !validate(Format::Ocsf, &[v.to_string()], "type").0,
        "a wrong type_uid passed"
    );
}

#[test]
#[ignore = "needs @elastic/ecs 8.11.5 in target/tools/ecs and node (cargo xtask setup --test-tools)"]
fn every_record_kind_is_valid_ecs_8_11() {
    golden(Format::Ecs, |v| {
        v["process"]["guid"] = "not an ECS field".into();
    });
    let mut v: serde_json::Value = serde_json::from_str(&rendered(Format::Ecs)[0].1).expect("json");
    v["event"]["kind"] = "detection".into();
    assert!(
        !validate(Format::Ecs, &[v.to_string()], "kind").0,
        "a wrong event.kind passed"
    );
}

const START: &str = "<!-- format-examples:start -->\n";
const END: &str = "<!-- format-examples:end -->";

/// The examples docs/events.md shows: one exec, connect, flow, alert and
/// action, each in every format.
fn examples() -> String {
    let s = samples();
    let mut doc = String::new();
    for (kind, out) in s.outputs() {
        let kill = kind == "action" && out.to_json().is_ok_and(|l| l.contains("\"kill\""));
        if !kill && !["process_exec", "net_connect", "flow", "alert"].contains(&kind) {
            continue;
        }
        doc.push_str(&format!("### `{kind}`\n\n"));
        for format in [Format::Native, Format::Ocsf, Format::Ecs] {
            let pretty = match format {
                // Field order as the agent writes it.
                Format::Native => match out {
                    super::Output::Event(r) => serde_json::to_string_pretty(r),
                    super::Output::Alert(a) => serde_json::to_string_pretty(a),
                    super::Output::Response(r) => serde_json::to_string_pretty(r),
                    _ => Ok(String::new()),
                }
                .expect("native"),
                f => {
                    let native = out.to_json().expect("native");
                    let line = f.render(&out, &native).expect("mapped");
                    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
                    serde_json::to_string_pretty(&v).expect("pretty")
                }
            };
            doc.push_str(&format!(
                "<details><summary>{}</summary>\n\n```json\n{pretty}\n```\n</details>\n\n",
                format.as_str()
            ));
        }
    }
    doc
}

#[test]
fn format_examples_in_docs_are_generated() {
    let path = root().join("docs/events.md");
    let doc = std::fs::read_to_string(&path).expect("docs/events.md");
    let start = doc.find(START).expect("format-examples:start marker") + START.len();
    let end = doc[start..].find(END).expect("format-examples:end marker") + start;
    let want = examples();
    if doc[start..end] == want {
        return;
    }
    if std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..]))
            .expect("rewrite docs/events.md");
        return;
    }
    panic!(
        "docs/events.md: the format examples differ from the translations.\n\
         Regenerate them with: VIGIL_BLESS=1 cargo test -p vigil --lib format_examples"
    );
}
