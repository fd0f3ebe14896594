//! Unit tests of the forest: reference values, seeding, validation of
//! saved forests, and the scoring layouts against each other.
use super::*;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() < tol, "{a} vs {b}");
}

#[test]
fn reference_values() {
    close(c(256), 10.2448, 1e-4);
    close(c(100), 8.3647, 1e-4);
    assert_eq!(c(2), 1.0);
    assert_eq!(c(1), 0.0);
    close(score_from_depth(2.0, 256), 0.873, 1e-3);
    close(score_from_depth(4.0, 256), 0.763, 1e-3);
    close(score_from_depth(6.0, 256), 0.666, 1e-3);
    close(score_from_depth(8.0, 256), 0.582, 1e-3);
}

#[test]
fn separates_planted_outliers() {
    let (data, labels) = planted(2000, 40, 16, 1);
    let f = IsolationForest::fit(data.view(), 100, 256, 42);
    let scores = f.score_all(data.view());
    let a = auc(&scores, &labels);
    assert!(a >= 0.95, "AUC {a}");
}

#[test]
fn seeded_and_serializable() {
    let (data, _) = planted(500, 5, 16, 3);
    let a = IsolationForest::fit(data.view(), 20, 256, 9);
    let b = IsolationForest::fit(data.view(), 20, 256, 9);
    assert_eq!(a, b);
    let json = serde_json::to_string(&a).expect("serialize");
    let back: IsolationForest = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back.score(data.row(0)), a.score(data.row(0)));
}

#[test]
fn early_exit_agrees_with_the_full_score() {
    let (data, _) = planted(1000, 20, 16, 4);
    let f = IsolationForest::fit(data.view(), 100, 256, 1);
    for r in data.rows() {
        let full = f.score(r);
        let x = r.to_vec();
        match f.score_at_least(&x, 0.6) {
            Some(s) => assert!((s - full).abs() < 1e-12 && full >= 0.6),
            None => assert!(full < 0.6),
        }
    }
}

/// A small forest as JSON, edited by `f`, then validated.
fn edited(f: impl FnOnce(&mut serde_json::Value)) -> Result<(), String> {
    let (data, _) = planted(200, 0, 16, 3);
    let forest = IsolationForest::fit(data.view(), 5, 64, 1);
    let mut v = serde_json::to_value(&forest).expect("json");
    f(&mut v);
    let back: IsolationForest = serde_json::from_value(v).map_err(|e| e.to_string())?;
    back.validate(16)
}

/// The first node of tree 0 of `kind` (`Split` or `Leaf`): its index
/// and its fields.
fn first<'a>(v: &'a mut serde_json::Value, kind: &str) -> (usize, &'a mut serde_json::Value) {
    let nodes = v["trees"][0]["nodes"].as_array_mut().expect("nodes");
    let i = nodes
        .iter()
        .position(|n| n.get(kind).is_some())
        .expect("a node of that kind");
    (i, &mut nodes[i][kind])
}

fn split(v: &mut serde_json::Value) -> &mut serde_json::Value {
    first(v, "Split").1
}

#[test]
fn a_trained_forest_validates_and_bad_ones_are_refused() {
    assert_eq!(edited(|_| {}), Ok(()));
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "out of range",
            Box::new(|v| split(v)["left"] = 100_000.into()),
        ),
        ("cycle", Box::new(|v| split(v)["right"] = 0.into())),
        (
            "self loop",
            Box::new(|v| {
                let (i, n) = first(v, "Split");
                n["left"] = i.into();
            }),
        ),
        ("feature", Box::new(|v| split(v)["feature"] = 16.into())),
        (
            "threshold",
            Box::new(|v| split(v)["value"] = serde_json::Value::Null),
        ),
        ("no trees", Box::new(|v| v["trees"] = serde_json::json!([]))),
        (
            "empty tree",
            Box::new(|v| v["trees"][0]["nodes"] = serde_json::json!([])),
        ),
        ("psi", Box::new(|v| v["psi"] = 0.into())),
        ("features", Box::new(|v| v["features"] = 15.into())),
        (
            "leaf size",
            Box::new(|v| first(v, "Leaf").1["size"] = 1_000_000.into()),
        ),
    ];
    for (what, f) in cases {
        assert!(edited(f).is_err(), "{what} was accepted");
    }
}

#[test]
fn auc_of_perfect_and_random() {
    assert_eq!(auc(&[0.1, 0.2, 0.9], &[false, false, true]), 1.0);
    assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
}

/// fuzz/forest: a saved forest whose split pointed past its tree
/// panicked at the first score (index out of bounds in Flat::build),
/// so a damaged iforest.json crashed the agent at every start. Such a
/// file, a split pointing back up its tree (a loop) and a split on a
/// feature the forest lacks are now refused when read.
#[test]
fn a_damaged_saved_forest_is_refused_when_read_not_when_scored() {
    let forest = |nodes: &str| {
        format!(r#"{{"trees":[{{"nodes":[{nodes}]}}],"psi":2,"features":16,"seed":1}}"#)
    };
    let leaf = r#"{"Leaf":{"size":1}}"#;
    let split = |feature: u32, left: u32, right: u32| {
        format!(r#"{{"Split":{{"feature":{feature},"value":1.0,"left":{left},"right":{right}}}}}"#)
    };
    let good = forest(&format!("{},{leaf},{leaf}", split(3, 1, 2)));
    let f: IsolationForest = serde_json::from_str(&good).expect("a sound forest loads");
    assert!(f.score_at_least(&[0.0; 16], 0.0).is_some());
    for (bad, why) in [
        (
            forest(&format!("{},{leaf}", split(13, 1, 77))),
            "points to node 77",
        ),
        (
            forest(&format!("{},{leaf}", split(0, 0, 1))),
            "points to node 0",
        ),
        (
            forest(&format!("{},{leaf},{leaf}", split(16, 1, 2))),
            "feature 16",
        ),
        (forest(""), "no nodes"),
    ] {
        let e = serde_json::from_str::<IsolationForest>(&bad).expect_err(&bad);
        assert!(e.to_string().contains(why), "{e}");
    }
}

/// Scores of every row of `data` one at a time and as a batch, equal bit
/// for bit, through the padded layout and the linked one.
fn layouts_agree(forest: &IsolationForest, data: &ndarray::Array2<f64>) {
    let single: Vec<f64> = data.rows().into_iter().map(|r| forest.score(r)).collect();
    let rows: Vec<f64> = data.iter().copied().collect();
    assert_eq!(forest.score_rows(&rows), single);
    let linked = layout::Layout::Linked(layout::Linked::build(&forest.trees));
    for (r, s) in data.rows().into_iter().zip(&single) {
        let x = r.to_vec();
        let total = linked.total_path_until(&x, f64::INFINITY);
        assert_eq!(forest.score_of_total(total), *s);
    }
}

#[test]
fn batch_single_and_linked_scores_are_identical() {
    // 16 features (the flow path) and 5 (the generic path), row counts
    // that leave a partial batch.
    for (dims, n) in [(16, 1001), (5, 333)] {
        let (data, _) = planted_with_shift(n, 10, dims, 8, 3.0);
        let forest = IsolationForest::fit(data.view(), 30, 256, 2);
        assert_eq!(forest.layout().padded_height(), Some(8));
        layouts_agree(&forest, &data);
    }
}

#[test]
fn a_forest_too_tall_to_pad_scores_through_links() {
    // ψ = 8192: height limit 13, past what is padded.
    let (data, _) = planted(8192, 0, 4, 9);
    let forest = IsolationForest::fit(data.view(), 3, 8192, 2);
    assert!(matches!(forest.layout(), layout::Layout::Linked(_)));
    layouts_agree(&forest, &data);
    let x = data.row(0).to_vec();
    let full = forest.score(data.row(0));
    assert_eq!(forest.score_at_least(&x, 0.0), Some(full));
}

/// Balanced samples: over n/ψ trees every row is in exactly one sample
/// (independent draws would leave some rows out and repeat others).
#[test]
fn samples_cover_every_row_evenly() {
    let mut rng = Rng::new(5);
    let mut sampler = Sampler::new(1000, 250);
    let mut seen = vec![0u32; 1000];
    for _ in 0..8 {
        let sample = sampler.next(&mut rng);
        assert_eq!(sample.len(), 250);
        for &r in sample {
            seen[r] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 2), "{seen:?}");
    // ψ = n: every tree sees every row.
    let mut all = Sampler::new(10, 10);
    assert_eq!(all.next(&mut rng).len(), 10);
    assert_eq!(all.next(&mut rng).len(), 10);
}

/// A saved forest of thin, tall trees (each a chain of 12 splits, 25 nodes)
/// would pad to 4,096 slots a tree; it is scored through links instead, so
/// a small file cannot make a large allocation.
#[test]
fn thin_tall_loaded_trees_are_not_padded() {
    // Split i: leaf on the left, the next split on the right.
    let chain = |depth: usize| {
        let mut nodes = Vec::new();
        for d in 0..depth {
            let i = nodes.len() as u32;
            nodes.push(Node::Split {
                feature: 0,
                value: d as f64,
                left: i + 1,
                right: i + 2,
            });
            nodes.push(Node::Leaf { size: 1 });
        }
        nodes.push(Node::Leaf { size: 1 });
        Tree { nodes }
    };
    let trees: Vec<Tree> = (0..200).map(|_| chain(12)).collect();
    assert!(matches!(
        layout::Layout::build(&trees),
        layout::Layout::Linked(_)
    ));
    // The same height in a forest that fills its width is padded.
    let (data, _) = planted(4096, 0, 2, 3);
    let full = IsolationForest::fit(data.view(), 4, 4096, 1);
    assert!(matches!(full.layout(), layout::Layout::Padded(_)));
}

/// The padded walk compares without NaN (a NaN feature walked as +∞, a
/// NaN threshold as −∞): scores must still equal the linked walk's
/// `x < t`, bit for bit, on NaN, ±∞, ±0 and on vectors sitting exactly on
/// a threshold, for flow rows (16 features) and any other width.
#[test]
fn non_finite_values_and_exact_thresholds_score_alike() {
    for dims in [16, 5] {
        let (mut data, _) = planted(600, 10, dims, 21);
        for (k, mut row) in data.rows_mut().into_iter().enumerate() {
            match k % 7 {
                0 => row[0] = f64::INFINITY,
                1 => row[1] = f64::NEG_INFINITY,
                2 => row[2] = f64::NAN,
                3 => row[3] = -0.0,
                4 => row[3] = 0.0,
                _ => {}
            }
        }
        // ψ = 256: height 8, the default forest's, walked by walk256 on x86-64.
        let forest = IsolationForest::fit(data.view(), 20, 256, 3);
        assert_eq!(forest.layout().padded_height(), Some(8));
        let splits: Vec<(usize, f64)> = forest
            .trees
            .iter()
            .flat_map(|t| &t.nodes)
            .filter_map(|n| match n {
                Node::Split { feature, value, .. } => Some((*feature as usize, *value)),
                Node::Leaf { .. } => None,
            })
            .collect();
        // −∞ on feature 1 makes lo + u·(hi − lo) NaN: the case is covered.
        assert!(splits.iter().any(|(_, v)| v.is_nan()), "no NaN threshold");
        let mut probes: Vec<f64> = data.iter().copied().collect();
        let base = data.row(5).to_vec();
        for &(f, v) in &splits {
            let mut x = base.clone();
            x[f] = v;
            probes.extend(&x);
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0] {
            probes.extend(std::iter::repeat_n(v, dims));
        }
        let probes =
            ndarray::Array2::from_shape_vec((probes.len() / dims, dims), probes).expect("rows");
        layouts_agree(&forest, &probes);
    }
}

/// −0 and +0 compare equal: on a split at either, both go right (the
/// walk's integer keys would order them apart if −0 were not walked as +0).
#[test]
fn signed_zeros_go_the_same_way() {
    for t in ["0.0", "-0.0"] {
        let json = format!(
            r#"{{"trees":[{{"nodes":[{{"Split":{{"feature":3,"value":{t},"left":1,"right":2}}}},{{"Leaf":{{"size":1}}}},{{"Leaf":{{"size":2}}}}]}}],"psi":2,"features":16,"seed":1}}"#
        );
        let forest: IsolationForest = serde_json::from_str(&json).expect("forest");
        let mut rows = Vec::new();
        for x in [-0.0, 0.0, -1e-300, 1e-300] {
            let mut v = [0.5; 16];
            v[3] = x;
            rows.extend(v);
        }
        let data = ndarray::Array2::from_shape_vec((4, 16), rows).expect("rows");
        layouts_agree(&forest, &data);
        let s = forest.score_all(data.view());
        // Right leaf (2 samples: depth 1 + c(2) = 2) for ±0 and above.
        assert_eq!(s[0], s[1]);
        assert_eq!(s[0], s[3]);
        assert_ne!(s[0], s[2]);
    }
}
