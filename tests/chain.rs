//! The whole sharing loop, with real peers at every step: indicators pulled
//! from the OASIS TAXII server `medallion` into the indicators topic, a
//! `sightline run` worker matching ECS events from the events topic, the
//! sightings served by `sightline taxii serve` from the sightings topic,
//! read back page by page with the OASIS client `taxii2-client` and checked
//! with `stix2-validator`. What the partner reads is what `sightline match`
//! writes for the same indicators and events.

#[path = "taxii/common.rs"]
mod common;
mod kafka_support;
#[path = "taxii/medallion.rs"]
mod medallion;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{
    free_port, newest_versions, output, read_pairs, require_python_modules, scratch, sightline,
    start_server, stderr,
};
use kafka_support::{Topics, Worker, consume, match_output, produce_lines};
use medallion::{COLLECTION, PASSWORD, USER, start_medallion};

#[test]
fn indicators_from_taxii_to_sightings_over_taxii() {
    require_python_modules(&["taxii2client", "stix2validator"]);
    let dir = scratch("chain");
    let topics = Topics::new("chain", 1);
    topics.create();

    // A feed on medallion: the example bundle's objects.
    let bundle: Value = serde_json::from_str(
        &std::fs::read_to_string("examples/indicators.json").expect("example indicators"),
    )
    .expect("example bundle");
    let objects = bundle["objects"].as_array().cloned().unwrap_or_default();
    let (_medallion, url) = start_medallion(&dir, free_port(), &objects);
    let pull = output(
        sightline()
            .args([
                "taxii",
                "pull",
                "--once",
                "--limit",
                "3",
                "--type",
                "indicator",
            ])
            .args(["--url", &url, "--collection", COLLECTION])
            .args(["--user", USER, "--password", PASSWORD])
            .args(["--brokers", &kafka_support::brokers()])
            .args(["--indicators-topic", &topics.indicators])
            .arg("--checkpoint")
            .arg(dir.join("checkpoint.json")),
    );
    assert!(pull.status.success(), "pull failed:\n{}", stderr(&pull));

    // The worker matches the example ECS events.
    let _worker = Worker::start(&topics, &["--format", "ecs"]);
    produce_lines(&topics.events, "examples/events/ecs.jsonl");
    let expected = match_output(&[
        "--indicators",
        "examples/indicators.json",
        "--events",
        "examples/events/ecs.jsonl",
        "--format",
        "ecs",
    ]);
    let written = consume(&topics.sightings, expected.len(), Duration::from_secs(60));
    assert_eq!(
        written.len(),
        expected.len(),
        "the worker wrote what match writes"
    );

    // The server fills from the sightings topic; the OASIS client reads it.
    let db = dir.join("taxii.db");
    let brokers = kafka_support::brokers();
    let group = format!("{}-taxii", topics.group);
    let (_server, base) = start_server(
        &db,
        &[
            "--user",
            "partner",
            "--password",
            "shared-secret",
            "--brokers",
            &brokers,
            "--sightings-topic",
            &topics.sightings,
            "--group",
            &group,
        ],
    );
    let latest = newest_versions(&expected);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/taxii/read_all.py");
    let mut summary = Value::Null;
    for _ in 0..100 {
        let run = Command::new("python3")
            .arg(&script)
            .args([base.as_str(), "partner", "shared-secret", "5"])
            .arg(&dir)
            .output()
            .expect("python3 runs");
        assert!(
            run.status.success(),
            "taxii2-client failed:\n{}",
            stderr(&run)
        );
        summary = serde_json::from_slice(&run.stdout).expect("summary JSON");
        let read = summary["api_roots"][0]["collections"][0]["objects"]
            .as_array()
            .map_or(0, Vec::len);
        if read >= latest.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let sightings = &summary["api_roots"][0]["collections"][0];
    assert_eq!(sightings["alias"], "sightings");
    let read: BTreeMap<String, String> = read_pairs(sightings).into_iter().collect();
    assert_eq!(
        read, latest,
        "the partner reads the newest version of every object"
    );

    let file = sightings["file"].as_str().unwrap_or_default();
    let check = Command::new("stix2_validator")
        .args(["--version", "2.1", file])
        .output()
        .unwrap_or_else(|e| panic!("stix2_validator cannot run ({e})"));
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success() && !report.contains("[X]"),
        "{report}"
    );
}
