//! The `sightline` binary as a user runs it: exit codes, messages, output.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn sightline(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sightline binary starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("stdin accepts input");
    child.wait_with_output().expect("sightline finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sightline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file written");
    path
}

#[test]
fn check_exit_codes_and_caret() {
    let ok = sightline(&["check", "[ipv4-addr:value = '198.51.100.7']"], "");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    let bad = sightline(
        &[
            "check",
            "[ipv4-addr:value = '198.51.100.7']",
            "[file:name = ]",
        ],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    let out = text(&bad.stdout);
    assert!(
        out.contains("invalid argument 2: column 14: expected a literal value"),
        "{out}"
    );
    assert!(
        out.contains("\n               ^\n"),
        "caret under column 14:\n{out}"
    );
}

#[test]
fn check_reads_stdin_and_files_with_line_numbers() {
    let input = "# comment\n[domain-name:value = 'a.example']\n\n[x:y LIKE 5]\n";
    let from_stdin = sightline(&["check"], input);
    assert_eq!(from_stdin.status.code(), Some(1));
    assert!(text(&from_stdin.stdout).contains("invalid <stdin>:4: column 11"));

    let path = temp_file("patterns.txt", input);
    let from_file = sightline(&["check", "--file", path.to_str().unwrap_or_default()], "");
    assert_eq!(from_file.status.code(), Some(1));
    assert!(text(&from_file.stdout).contains("patterns.txt:4: column 11"));

    let canonical = sightline(&["check", "--canonical", "[a:b == 1 AND (a:c <> 'x')]"], "");
    assert_eq!(text(&canonical.stdout), "[a:b = 1 AND a:c != 'x']\n");
}

#[test]
fn check_of_a_missing_file_is_an_error() {
    let missing = sightline(&["check", "--file", "/nonexistent/patterns.txt"], "");
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot open /nonexistent/patterns.txt"));
}

fn sightings(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect()
}

/// The sightings of an output, as (indicator id prefix, the minutes of the
/// observations they cite); the example events are one minute apart,
/// starting at 09:00.
fn sightings_by_minute(objects: &[Value]) -> Vec<(String, Vec<String>)> {
    let by_id: std::collections::HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    objects
        .iter()
        .filter(|o| o["type"] == "sighting")
        .map(|s| {
            let minutes = s["observed_data_refs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|r| {
                    let observed = by_id.get(r).expect("cited observed-data is in the output");
                    let first = observed["first_observed"].as_str().unwrap_or_default();
                    first[14..16].to_string()
                })
                .collect();
            let indicator = s["sighting_of_ref"].as_str().unwrap_or_default();
            (indicator[11..19].to_string(), minutes)
        })
        .collect()
}

#[test]
fn match_examples_give_the_expected_sightings() {
    let args = [
        "match",
        "--indicators",
        "examples/indicators.json",
        "--events",
        "examples/events/observed-data.jsonl",
        "--no-aggregate",
    ];
    let output = sightline(&args, "");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let objects = sightings(&output);
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("c4d8e2f6", vec!["00"]),
        ("9b1f3e5d", vec!["01"]),
        ("3f1c6a0e", vec!["03"]),
        ("1d3f5b7a", vec!["01", "03"]),
        ("7a2e9d41", vec!["04"]),
        ("7a2e9d41", vec!["05"]),
        ("7a2e9d41", vec!["06"]),
        ("5e7a9c1b", vec!["04", "05", "06"]),
        ("e8a2c4b6", vec!["07"]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .into_iter()
        .map(|(i, r)| (i.to_string(), r.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(sightings_by_minute(&objects), expected);

    // One identity, written first; every object once.
    assert_eq!(objects[0]["type"], "identity");
    let mut ids: Vec<&str> = objects.iter().filter_map(|o| o["id"].as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no object is written twice");

    // Same input, same objects.
    let again = sightline(&args, "");
    assert_eq!(text(&output.stdout), text(&again.stdout));
}

#[test]
fn repeated_hits_on_one_observable_become_one_sighting() {
    let output = sightline(
        &[
            "match",
            "--indicators",
            "examples/indicators.json",
            "--events",
            "examples/events/observed-data.jsonl",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0));
    let objects = sightings(&output);
    let range: Vec<&Value> = objects
        .iter()
        .filter(|o| o["type"] == "sighting")
        .filter(|o| o["sighting_of_ref"] == "indicator--7a2e9d41-0b7c-4f3a-8c55-2e8f1a9b6c02")
        .collect();
    // 198.51.100.20 at 09:04 and 09:05: one sighting, written twice (the
    // second a newer version with count 2); 198.51.100.21 at 09:06: another.
    assert_eq!(range.len(), 3);
    assert_eq!(range[0]["id"], range[1]["id"]);
    assert_ne!(range[1]["id"], range[2]["id"]);
    assert_eq!(range[0]["count"], 1);
    assert_eq!(range[1]["count"], 2);
    assert_eq!(range[1]["first_seen"], "2026-11-20T09:04:00.000Z");
    assert_eq!(range[1]["last_seen"], "2026-11-20T09:05:00.000Z");
    assert!(range[1]["modified"].as_str() > range[0]["modified"].as_str());
    assert_eq!(
        range[1]["observed_data_refs"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(range[2]["count"], 1);

    // A window shorter than the gap keeps them apart.
    let short = sightline(
        &[
            "match",
            "--indicators",
            "examples/indicators.json",
            "--events",
            "examples/events/observed-data.jsonl",
            "--aggregate-window",
            "30",
        ],
        "",
    );
    let ids: std::collections::BTreeSet<String> = sightings(&short)
        .iter()
        .filter(|o| o["sighting_of_ref"] == "indicator--7a2e9d41-0b7c-4f3a-8c55-2e8f1a9b6c02")
        .filter_map(|o| o["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn match_bundle_holds_the_same_objects() {
    let lines = sightline(
        &[
            "match",
            "--indicators",
            "examples/indicators.json",
            "--events",
            "examples/events/observed-data.jsonl",
        ],
        "",
    );
    let bundled = sightline(
        &[
            "match",
            "--indicators",
            "examples/indicators.json",
            "--events",
            "examples/events/observed-data.jsonl",
            "--bundle",
        ],
        "",
    );
    assert_eq!(bundled.status.code(), Some(0));
    let bundle: Value = serde_json::from_slice(&bundled.stdout).expect("one JSON bundle");
    assert_eq!(bundle["type"], "bundle");
    let in_bundle = bundle["objects"].as_array().cloned().unwrap_or_default();
    // The bundle holds each id once, at its last version, in the order ids
    // first appeared.
    let mut expected: Vec<Value> = Vec::new();
    for object in sightings(&lines) {
        match expected.iter_mut().find(|o| o["id"] == object["id"]) {
            Some(slot) => *slot = object,
            None => expected.push(object),
        }
    }
    assert_eq!(in_bundle.len(), expected.len());
    assert!(
        in_bundle == expected,
        "bundle differs from the last versions of the lines"
    );
}

#[test]
fn match_skips_bad_lines_and_goes_on() {
    let events = concat!(
        "{\"type\": \"observed-data\", \"id\": \"observed-data--1\", \"number_observed\": 1,",
        " \"first_observed\": \"2026-11-20T09:00:00Z\", \"last_observed\": \"2026-11-20T09:00:00Z\",",
        " \"objects\": {\"0\": {\"type\": \"domain-name\", \"value\": \"login-update.example\"}}}\n",
        "{not json\n",
        "{\"type\": \"observed-data\", \"id\": \"observed-data--2\", \"number_observed\": 0,",
        " \"first_observed\": \"2026-11-20T09:00:00Z\", \"last_observed\": \"2026-11-20T09:00:00Z\",",
        " \"objects\": {}}\n",
        "{\"type\": \"observed-data\", \"id\": \"observed-data--3\", \"number_observed\": 1,",
        " \"first_observed\": \"2026-11-20T09:00:00Z\", \"last_observed\": \"2026-11-20T09:00:00Z\",",
        " \"objects\": {\"0\": {\"type\": \"domain-name\", \"value\": \"login-update.example\"}}}\n",
    );
    let output = sightline(
        &[
            "match",
            "--indicators",
            "examples/indicators.json",
            "--events",
            "-",
        ],
        events,
    );
    assert_eq!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("<stdin>: line 2: invalid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: observed-data observed-data--2: number_observed"));
    assert!(stderr.contains("2 rejected inputs"), "{stderr}");
    let objects = sightings(&output);
    assert_eq!(
        objects.iter().filter(|o| o["type"] == "sighting").count(),
        2
    );
}

#[test]
fn match_without_usable_indicators_fails() {
    let path = temp_file(
        "bad-indicators.jsonl",
        "{\"type\": \"indicator\", \"id\": \"indicator--1\", \"pattern\": \"[x:y = ]\"}\n",
    );
    let output = sightline(
        &[
            "match",
            "--indicators",
            path.to_str().unwrap_or_default(),
            "--events",
            "-",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("indicator indicator--1: invalid pattern: column 8"),
        "{stderr}"
    );
    assert!(stderr.contains("no usable indicator"), "{stderr}");
}

/// Without brokers, `run` is the file pipeline: the same objects as
/// `match`, read from standard input until it ends; with neither brokers
/// nor files it says what to give.
#[test]
fn run_without_brokers_reads_files_like_match() {
    let events = std::fs::read_to_string("examples/events/zeek.jsonl").expect("example events");
    let indicators = ["--indicators", "examples/indicators.json"];
    let matched = sightline(
        &[&["match"][..], &indicators, &["--events", "-"]].concat(),
        &events,
    );
    let ran = sightline(
        &[&["run"][..], &indicators, &["--events", "-"]].concat(),
        &events,
    );
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert!(!matched.stdout.is_empty());
    assert_eq!(text(&ran.stdout), text(&matched.stdout));

    let neither = sightline(&["run"], "");
    assert_eq!(neither.status.code(), Some(2));
    let message = text(&neither.stderr);
    assert!(
        message.contains("--brokers") && message.contains("--events"),
        "{message}"
    );
}
