//! Everything `sightline match` emits must be valid STIX 2.1 according to
//! the OASIS validator (`stix2-validator` from PyPI, installed by
//! `.ci/test`). A missing validator is a failure, not a skip.

use std::path::PathBuf;
use std::process::Command;

fn output_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sightline-stix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Runs `sightline match --bundle` on the example files into a file.
fn match_examples_to(path: &PathBuf) {
    let status = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["match", "--indicators", "examples/indicators.json"])
        .args([
            "--events",
            "examples/events/observed-data.jsonl",
            "--bundle",
            "--output",
        ])
        .arg(path)
        .status()
        .expect("sightline runs");
    assert!(status.success(), "sightline match failed: {status}");
}

#[test]
fn example_sightings_pass_the_oasis_validator() {
    let path = output_file("sightings.json");
    match_examples_to(&path);
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("output written"))
            .expect("output is one JSON bundle");
    let objects = bundle["objects"].as_array().cloned().unwrap_or_default();
    for kind in [
        "identity",
        "sighting",
        "observed-data",
        "ipv4-addr",
        "network-traffic",
        "file",
    ] {
        assert!(
            objects.iter().any(|o| o["type"] == kind),
            "the output holds a {kind}"
        );
    }

    let run = Command::new("stix2_validator")
        .args(["--version", "2.1"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("stix2_validator cannot run ({e}); install it: pip install stix2-validator")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "stix2_validator rejected the output:\n{report}"
    );
    assert!(!report.contains("[X]"), "validator errors:\n{report}");
}
