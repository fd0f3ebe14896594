//! The seed corpora of the fuzz targets (fuzz/corpus/<target>/), made from
//! real records, configs, playbooks, signed messages, spool segments and
//! audit logs. The test fails when a committed seed differs from what the
//! code makes today (a format changed);
//! `VIGIL_BLESS=1 cargo test -p vigil --test fuzz_seeds` writes them again.

use std::path::{Path, PathBuf};

use agent_common::EventKind;
use vigil::pipeline::decode::fixtures;
use vigil::sink::kafka::commands::sign;
use vigil::sink::kafka::spool::{Class, Spool, SpoolConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/corpus").join(target);
    let path = dir.join(name);
    if std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(&path, bytes).expect("write seed");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} differs from what the code makes today; \
         VIGIL_BLESS=1 cargo test -p vigil --test fuzz_seeds writes it again",
        path.display()
    );
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-seeds-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch");
    d
}

#[test]
fn fuzz_seeds_are_made_from_todays_formats() {
    // decode: one of each wire record kind.
    let recs: Vec<(&str, Vec<u8>)> = vec![
        (
            "exec",
            fixtures::exec(4242, 1, "/usr/bin/curl", &["curl", "-s", "http://x"]),
        ),
        ("exit", fixtures::exit(4242, 256)),
        ("fork", fixtures::fork(1, 4242)),
        ("auth", fixtures::auth(300, 7, "root", "192.0.2.9")),
        (
            "connect",
            fixtures::conn(
                EventKind::Connect,
                4242,
                [10, 0, 0, 1],
                40000,
                [192, 0, 2, 1],
                443,
            ),
        ),
        ("accept", fixtures::sshd_accepts()[1].clone()),
        (
            "close_flow",
            fixtures::close_flow([10, 0, 0, 1], 40000, [192, 0, 2, 1], 443, 12, 4096),
        ),
    ];
    for (name, r) in &recs {
        write("decode", name, r);
    }

    // config: the shipped one and small ones.
    let shipped = std::fs::read(root().join("packaging/vigil.yaml")).expect("vigil.yaml");
    write("config", "packaging", &shipped);
    write("config", "empty", b"{}\n");
    write(
        "config",
        "small",
        b"output: \"-\"\nflows:\n  attach: tc\n  udp_idle_timeout_s: 2\nkafka:\n  brokers: \"127.0.0.1:9092\"\n  hmac_key: k\n",
    );

    // playbook: every shipped playbook.
    for e in std::fs::read_dir(root().join("playbooks")).expect("playbooks") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_stem().and_then(|s| s.to_str()).expect("name");
            write("playbook", name, &std::fs::read(&p).expect("read"));
        }
    }

    // verifier: mode byte (0 unsigned, 1 garbage header, 2 signed) + body.
    let bodies: [&[u8]; 4] = [
        br#"{"id":"c1","ts":1000,"cmd":"block","target":"203.0.113.9","ttl_s":60}"#,
        br#"{"id":"c3","ts":1000,"host":"*","cmd":"approve","approval":"apr-1"}"#,
        br#"{"id":"i1","ts":1000,"indicator":"198.51.100.0/24","ttl_s":600,"source":"misp"}"#,
        br#"{"id":"c2","ts":1000,"cmd":"unblock","target":"10.0.0.1"}"#,
    ];
    for (i, b) in bodies.iter().enumerate() {
        write(
            "verifier",
            &format!("signed-{i}"),
            &[&[2u8][..], b].concat(),
        );
    }
    let tag = sign(b"fuzz-key", bodies[0]);
    write(
        "verifier",
        "header",
        &[&[1u8][..], tag.as_bytes(), bodies[0]].concat(),
    );

    // spool: a real segment (acked byte first) of a few records.
    let dir = scratch("spool");
    let cfg = SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        telemetry_share: 0.8,
    };
    let mut sp = Spool::open(&dir, cfg).expect("spool");
    for (class, body) in [
        (Class::Telemetry, &br#"{"kind":"process_exec","pid":1}"#[..]),
        (Class::Alert, br#"{"kind":"alert","id":"a1"}"#),
        (Class::Action, br#"{"kind":"action","id":"x1"}"#),
    ] {
        sp.append(class, body).expect("append");
    }
    drop(sp);
    let seg = std::fs::read_dir(&dir)
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("segment");
    let bytes = std::fs::read(seg).expect("segment bytes");
    write("spool", "three-records", &[&[0u8][..], &bytes].concat());
    write("spool", "one-acked", &[&[1u8][..], &bytes].concat());
    let _ = std::fs::remove_dir_all(&dir);

    // audit: a real chain of a few records.
    let dir = scratch("audit");
    for i in 0..3 {
        let r = serde_json::json!({"kind": "action", "id": format!("x{i}"), "action": "block",
            "target": "192.0.2.9", "state": "applied"});
        vigil::enforce::audit::append(&dir, &r).expect("audit append");
    }
    let log = std::fs::read_dir(&dir)
        .expect("audit dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_file())
        .expect("audit log");
    write("audit", "three-records", &std::fs::read(log).expect("read"));
    let _ = std::fs::remove_dir_all(&dir);

    // forest: a trained baseline in the anomaly detector's state format.
    let rows: Vec<f64> = (0..64 * 16).map(|i| ((i * 7919) % 101) as f64).collect();
    let data = ndarray::Array2::from_shape_vec((64, 16), rows).expect("shape");
    let forest = vigil::detect::iforest::IsolationForest::fit(data.view(), 4, 32, 7);
    let model = serde_json::json!({
        "forest": forest,
        "train_scores": [0.4, 0.5, 0.6],
        "medians": vec![1.0; 16],
        "mads": vec![1.0; 16],
        "trained_at": 0.0,
        "trained_on": 64,
    });
    let text = serde_json::to_vec(&model).expect("json");
    let back: Result<vigil::detect::anomaly::Model, _> = serde_json::from_slice(&text);
    assert!(
        back.is_ok(),
        "the seed must load as a model: {back:?}",
        back = back.err()
    );
    write("forest", "model", &text);
}
