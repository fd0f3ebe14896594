//! `vigil model train|score` run as a program on real files: the model it
//! writes is one the agent loads, its scores are the forest's, and bad
//! input is refused with the line and column named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vigil::detect::anomaly::{AnomalyDetector, Model, STATE_FILE};
use vigil::detect::iforest::{auc, planted};
use vigil::detect::Detector;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vigil-model-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// 16-feature vectors (5,000 inliers, 50 planted outliers: more than one
/// scoring batch) with a header.
fn planted_csv() -> (String, Vec<bool>) {
    let (data, labels) = planted(5000, 50, 16, 21);
    let mut csv: String = (0..16)
        .map(|j| format!("f{j}"))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for row in data.rows() {
        let cols: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        csv.push_str(&cols.join(","));
        csv.push('\n');
    }
    (csv, labels)
}

#[test]
fn train_then_score_gives_the_agents_model_and_its_scores() {
    let dir = Scratch::new("roundtrip");
    let (csv, labels) = planted_csv();
    let csv = dir.file("flows.csv", &csv);
    let model = dir.0.join("iforest.json");
    let o = vigil(&["model", "train", "--csv", s(&csv), "--out", s(&model)]);
    assert!(o.status.success(), "train: {}", stderr(&o));
    assert!(stderr(&o).contains("trained on 5050 vectors of 16 features (100 trees"));

    // The agent takes the file as its baseline.
    let bytes = std::fs::read(&model).expect("model written");
    let mut agent = AnomalyDetector::new(Default::default());
    agent
        .load_state(STATE_FILE, &bytes)
        .expect("the agent loads it");
    let m: Model = serde_json::from_slice(&bytes).expect("model");

    let o = vigil(&["model", "score", "--model", s(&model), "--csv", s(&csv)]);
    assert!(o.status.success(), "score: {}", stderr(&o));
    let scores: Vec<f64> = String::from_utf8(o.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| l.parse().expect("a score per line"))
        .collect();
    assert_eq!(scores.len(), labels.len(), "one score per vector");
    // The same numbers as the forest scoring in process, in order.
    let (data, _) = planted(5000, 50, 16, 21);
    for (row, got) in data.rows().into_iter().zip(&scores) {
        assert_eq!(m.forest.score(row), *got);
    }
    let a = auc(&scores, &labels);
    assert!(a > 0.99, "AUC {a}");
}

#[test]
fn settings_come_from_the_agent_config_when_given() {
    let dir = Scratch::new("config");
    let (csv, _) = planted_csv();
    let csv = dir.file("flows.csv", &csv);
    let cfg = dir.file(
        "vigil.yaml",
        "detect:\n  anomaly:\n    n_trees: 7\n    max_samples: 64\n    seed: 3\n",
    );
    let model = dir.0.join("m.json");
    let o = vigil(&[
        "model",
        "train",
        "--csv",
        s(&csv),
        "--out",
        s(&model),
        "--config",
        s(&cfg),
    ]);
    assert!(o.status.success(), "train: {}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&model).expect("model")).expect("json");
    assert_eq!(v["forest"]["trees"].as_array().map(Vec::len), Some(7));
    assert_eq!(v["forest"]["psi"], 64);
    assert_eq!(v["forest"]["seed"], 3);
}

#[test]
fn bad_files_are_refused_naming_the_place() {
    let dir = Scratch::new("bad");
    let (good, _) = planted_csv();
    let good = dir.file("good.csv", &good);
    let model = dir.0.join("m.json");
    assert!(
        vigil(&["model", "train", "--csv", s(&good), "--out", s(&model)])
            .status
            .success()
    );
    let few = dir.file("few.csv", "1,2\n3,4\n");
    let typo = dir.file("typo.csv", "1,2\n3,4\n5,x6\n");
    let ragged = dir.file("ragged.csv", "1,2\n3,4,5\n");
    let narrow = dir.file("narrow.csv", "1,2\n");
    let junk = dir.file("junk.json", "{\"forest\": 1}");
    for (args, want) in [
        (
            vec!["model", "train", "--csv", s(&few)],
            "2 vectors, the agent trains on at least 256",
        ),
        (
            vec!["model", "train", "--csv", s(&typo)],
            "typo.csv: line 3, column 2: \"x6\" is not a number",
        ),
        (
            vec!["model", "train", "--csv", s(&ragged)],
            "ragged.csv: line 2 has 3 columns, expected 2",
        ),
        (
            vec!["model", "score", "--model", s(&model), "--csv", s(&narrow)],
            "narrow.csv: line 1 has 2 columns, expected 16",
        ),
        (
            vec!["model", "score", "--model", s(&junk), "--csv", s(&good)],
            "junk.json: not a model",
        ),
        (
            vec![
                "model",
                "score",
                "--model",
                s(&model),
                "--csv",
                "/nonexistent.csv",
            ],
            "/nonexistent.csv: No such file",
        ),
    ] {
        let o = vigil(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // A refused training run leaves no model behind.
    let out = dir.0.join("never.json");
    let o = vigil(&["model", "train", "--csv", s(&typo), "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(!out.exists());
}

/// A baseline written before the scoring layout changed (the fuzz seed of
/// commit c73808b) still loads in the agent and scores through the CLI.
#[test]
fn a_baseline_from_before_the_new_layout_still_loads_and_scores() {
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iforest-before-issue14.json");
    let bytes = std::fs::read(&old).expect("fixture");
    let mut agent = AnomalyDetector::new(Default::default());
    agent
        .load_state(STATE_FILE, &bytes)
        .expect("the agent loads it");
    let dir = Scratch::new("old");
    let row: Vec<String> = (0..16).map(|j| (j * 7).to_string()).collect();
    let csv = dir.file(
        "one.csv",
        &format!("{}\n{}\n", row.join(","), row.join(",")),
    );
    let o = vigil(&["model", "score", "--model", s(&old), "--csv", s(&csv)]);
    assert!(o.status.success(), "score: {}", stderr(&o));
    let out = String::from_utf8(o.stdout).expect("utf-8");
    let scores: Vec<f64> = out.lines().map(|l| l.parse().expect("score")).collect();
    assert_eq!(scores.len(), 2);
    // 2^(−E[h]/c(ψ)) for x = (0, 7, …, 105), walked by hand over the file
    // (a few lines of Python following the definition).
    for s in scores {
        assert!((s - 0.550805969798768).abs() < 1e-12, "{out}");
    }
}
