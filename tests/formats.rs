//! `sightline match` on each shipped log format: the example events in
//! `examples/events/` against `examples/indicators.json` give exactly the
//! sightings listed in `examples/README.md`, in both the explicit format
//! and `auto`, and everything written passes the OASIS validator. (DNS
//! answers, mapped one object per element, sight the C2 address on each
//! file's DNS answer line.)

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use sightline::observe::decoder::{Decoder, builtin_mapping};
use sightline::observe::documents::RawDocuments;

/// Expected sightings: (short indicator id, cited event lines).
type Expected = &'static [(&'static str, &'static [usize])];

const ECS: Expected = &[
    ("3f1c6a0e", &[1]),
    ("c4d8e2f6", &[1]),
    ("9b1f3e5d", &[2]),
    ("3f1c6a0e", &[3]),
    ("1d3f5b7a", &[2, 3]),
    ("7a2e9d41", &[4]),
    ("7a2e9d41", &[5]),
    ("7a2e9d41", &[6]),
    ("5e7a9c1b", &[4, 5, 6]),
    ("e8a2c4b6", &[7]),
    ("c4d8e2f6", &[8]),
    ("7a2e9d41", &[10]),
];

const ZEEK: Expected = &[
    ("3f1c6a0e", &[1]),
    ("c4d8e2f6", &[1]),
    ("9b1f3e5d", &[4]),
    ("3f1c6a0e", &[5]),
    ("1d3f5b7a", &[4, 5]),
    ("3f1c6a0e", &[6]),
    ("c4d8e2f6", &[6]),
    ("7a2e9d41", &[8]),
    ("7a2e9d41", &[9]),
    ("7a2e9d41", &[10]),
    ("5e7a9c1b", &[8, 9, 10]),
    ("e8a2c4b6", &[11]),
];

const SURICATA: Expected = &[
    ("c4d8e2f6", &[1]),
    ("3f1c6a0e", &[2]),
    ("c4d8e2f6", &[2]),
    ("9b1f3e5d", &[4]),
    ("3f1c6a0e", &[5]),
    ("c4d8e2f6", &[5]),
    ("1d3f5b7a", &[4, 5]),
    ("3f1c6a0e", &[6]),
    ("c4d8e2f6", &[6]),
    ("1d3f5b7a", &[4, 6]),
    ("7a2e9d41", &[7]),
    ("7a2e9d41", &[8]),
    ("7a2e9d41", &[9]),
    ("5e7a9c1b", &[7, 8, 9]),
    ("e8a2c4b6", &[10]),
];

const OCSF: Expected = &[
    ("3f1c6a0e", &[1]),
    ("c4d8e2f6", &[1]),
    ("9b1f3e5d", &[2]),
    ("3f1c6a0e", &[3]),
    ("c4d8e2f6", &[3]),
    ("1d3f5b7a", &[2, 3]),
    ("7a2e9d41", &[4]),
    ("7a2e9d41", &[5]),
    ("7a2e9d41", &[6]),
    ("5e7a9c1b", &[4, 5, 6]),
    ("e8a2c4b6", &[7]),
    ("7a2e9d41", &[10]),
];

fn events_path(format: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/events/{format}.jsonl"))
}

fn run_match(format_flag: &str, events: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "match",
            "--indicators",
            "examples/indicators.json",
            "--format",
            format_flag,
        ])
        // One sighting per hit, so that each line's hits show.
        .arg("--no-aggregate")
        .arg("--events")
        .arg(events)
        .output()
        .expect("sightline runs")
}

/// Event time (first_observed, as STIX text) of each line of the file, as
/// the format's mapping reads it.
fn line_times(format: &str) -> HashMap<String, usize> {
    let decoder = Decoder::Mapped(Box::new(builtin_mapping(format).expect("shipped mapping")));
    let file = File::open(events_path(format)).expect("example events");
    let mut times = HashMap::new();
    for (line, text) in RawDocuments::new(BufReader::new(file)).flatten() {
        for decoded in decoder.decode(&text).into_iter().flatten() {
            let time = decoded.observation.first_observed.to_stix_millis();
            assert!(
                times.insert(time, line).is_none(),
                "{format}: two lines share a time"
            );
        }
    }
    times
}

/// The sightings of an output as (short indicator id, cited lines).
fn sightings(output: &Output, times: &HashMap<String, usize>) -> Vec<(String, Vec<usize>)> {
    let objects: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect();
    let by_id: HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    objects
        .iter()
        .filter(|o| o["type"] == "sighting")
        .map(|s| {
            let mut lines: Vec<usize> = s["observed_data_refs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|r| {
                    let observed = by_id.get(r).expect("cited observed-data is written");
                    let first = observed["first_observed"].as_str().unwrap_or_default();
                    *times
                        .get(first)
                        .unwrap_or_else(|| panic!("no line at {first}"))
                })
                .collect();
            lines.sort_unstable();
            let id = s["sighting_of_ref"].as_str().unwrap_or_default();
            (id.get(11..19).unwrap_or_default().to_string(), lines)
        })
        .collect()
}

fn check_format(format: &str, expected: Expected) {
    let times = line_times(format);
    let expected: Vec<(String, Vec<usize>)> = expected
        .iter()
        .map(|(id, lines)| (id.to_string(), lines.to_vec()))
        .collect();
    for flag in [format, "auto"] {
        let output = run_match(flag, &events_path(format));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{format} ({flag}): {stderr}");
        assert!(
            stderr.contains("1 rejected inputs"),
            "{format} ({flag}): {stderr}"
        );
        assert_eq!(
            sightings(&output, &times),
            expected,
            "{format} with --format {flag}"
        );
        if flag == "auto" {
            assert!(
                stderr.contains(&format!("{format}/")),
                "auto detected {format}: {stderr}"
            );
        }
    }
}

#[test]
fn ecs_events() {
    check_format("ecs", ECS);
}

#[test]
fn zeek_events() {
    check_format("zeek", ZEEK);
}

#[test]
fn suricata_events() {
    check_format("suricata", SURICATA);
}

#[test]
fn ocsf_events() {
    check_format("ocsf", OCSF);
}

#[test]
fn every_format_output_passes_the_oasis_validator() {
    let dir = std::env::temp_dir().join(format!("sightline-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for format in ["ecs", "zeek", "suricata", "ocsf"] {
        let path = dir.join(format!("{format}.json"));
        let status = Command::new(env!("CARGO_BIN_EXE_sightline"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "match",
                "--indicators",
                "examples/indicators.json",
                "--bundle",
                "--events",
            ])
            .arg(events_path(format))
            .arg("--output")
            .arg(&path)
            .status()
            .expect("sightline runs");
        assert!(status.success());
        let run = Command::new("stix2_validator")
            .args(["--version", "2.1"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("stix2_validator cannot run ({e}); pip install stix2-validator")
            });
        let report = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            run.status.success() && !report.contains("[X]"),
            "{format}:\n{report}"
        );
    }
}

#[test]
fn a_user_mapping_file_is_used() {
    let dir = std::env::temp_dir().join(format!("sightline-mapping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mapping = dir.join("proxy.toml");
    std::fs::write(
        &mapping,
        r#"
format = "proxy"
[[kind]]
name = "request"
detect = { fields = ["client", "host"] }
time = { field = "when", format = "epoch_millis" }
[[kind.object]]
key = "domain"
type = "domain-name"
properties = { value = { field = "host", as = "domain" } }
"#,
    )
    .expect("mapping written");
    let events = dir.join("proxy.jsonl");
    std::fs::write(
        &events,
        "{\"when\": 1795165200000, \"client\": \"10.0.0.9\", \"host\": \"LOGIN-UPDATE.example.\"}\n\
         {\"when\": 1795165201000, \"client\": \"10.0.0.9\", \"host\": \"benign.example\"}\n",
    )
    .expect("events written");
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "match",
            "--indicators",
            "examples/indicators.json",
            "--mapping",
        ])
        .arg(&mapping)
        .arg("--events")
        .arg(&events)
        .output()
        .expect("sightline runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("proxy/request: 2"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let sightings: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|o| o["type"] == "sighting")
        .collect();
    assert_eq!(sightings.len(), 1);
    assert_eq!(
        sightings[0]["sighting_of_ref"],
        "indicator--c4d8e2f6-1a3b-4c5d-9e7f-8a0b1c2d3e03"
    );

    // A broken mapping file is a clear error.
    std::fs::write(&mapping, "format = \"proxy\"\n[[kind]]\nname = 3\n").expect("written");
    let broken = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "match",
            "--indicators",
            "examples/indicators.json",
            "--mapping",
        ])
        .arg(&mapping)
        .arg("--events")
        .arg(&events)
        .output()
        .expect("sightline runs");
    assert_eq!(broken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("mapping"));
}
