//! Screening log events before their observations are built changes
//! nothing but the cost.
//!
//! The pipeline passes a log event without building its observation when
//! no index of the snapshot finds anything in the values its mapping would
//! write (`observe::prefilter`). These tests run the same events through
//! two pipelines, one screening and one building every observation, and
//! require the same objects, in the same order, and the same counters.
//!
//! Events are the example files of every format (read with `auto`);
//! indicators are drawn from patterns over the values those events carry,
//! so that many match: exact values, values reached through references
//! (`network-traffic:dst_ref.value`), CIDR blocks, `LIKE` and `MATCHES`,
//! hashes, list elements, `!=` (which no index can anchor), and
//! `FOLLOWEDBY`/`AND` across events. A fixed seed makes a failure
//! reproducible; `PROPTEST_RNG_SEED` explores beyond it.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::{RngSeed, TestRunner};
use serde_json::Value;
use sightline::matcher::{Catalog, IndicatorRecord, Snapshot};
use sightline::observe::decoder::Decoder;
use sightline::pipeline::{Pipeline, PipelineConfig, PipelineStats};

/// Seed of the property ("SCREEN" in ASCII).
const SEED: u64 = 0x5343_5245_454e;

const FORMATS: [&str; 5] = ["ecs", "ocsf", "zeek", "suricata", "observed-data"];

fn example_lines() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/events");
    let mut lines = Vec::new();
    for format in FORMATS {
        let text = std::fs::read_to_string(dir.join(format!("{format}.jsonl")))
            .expect("example events are readable");
        // The examples hold a malformed line or two on purpose; only
        // events take part here.
        let events = text
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok());
        lines.extend(events.map(String::from));
    }
    lines
}

/// Every string and number the example events hold, to build patterns
/// that hit them.
fn event_values(lines: &[String]) -> (Vec<String>, Vec<i64>) {
    fn walk(value: &Value, strings: &mut BTreeSet<String>, numbers: &mut BTreeSet<i64>) {
        match value {
            Value::String(s) if !s.is_empty() && !s.contains(['\'', '\\']) => {
                strings.insert(s.clone());
                strings.insert(s.to_lowercase());
            }
            Value::Number(n) => {
                numbers.extend(n.as_i64());
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, strings, numbers)),
            Value::Object(map) => map.values().for_each(|v| walk(v, strings, numbers)),
            _ => {}
        }
    }
    let mut strings = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for line in lines {
        let value: Value = serde_json::from_str(line).expect("example lines are JSON");
        walk(&value, &mut strings, &mut numbers);
    }
    (strings.into_iter().collect(), numbers.into_iter().collect())
}

/// One comparison over a value of the examples.
fn comparison(template: usize, text: &str, number: i64) -> String {
    let escaped = regex_escape(text);
    let tail: String = text
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match template {
        0 => format!("ipv4-addr:value = '{text}'"),
        1 => format!("ipv6-addr:value = '{text}'"),
        2 => format!("network-traffic:dst_ref.value = '{text}'"),
        3 => format!("network-traffic:src_ref.value = '{text}'"),
        4 => format!("ipv4-addr:value ISSUBSET '{}'", cidr16(text)),
        5 => format!("network-traffic:dst_port = {number}"),
        6 => format!("network-traffic:src_port > {number}"),
        7 => format!("domain-name:value = '{text}'"),
        8 => format!("domain-name:value LIKE '%{tail}'"),
        9 => format!("url:value = '{text}'"),
        10 => format!("url:value MATCHES '{escaped}'"),
        11 => format!("file:hashes.'SHA-256' = '{text}'"),
        12 => format!("file:name = '{text}'"),
        13 => format!("email-addr:value = '{text}'"),
        14 => format!("network-traffic:protocols[*] = '{text}'"),
        15 => format!("user-account:user_id = '{text}'"),
        16 => format!("process:name = '{text}'"),
        17 => format!("x509-certificate:subject LIKE '%{tail}%'"),
        18 => format!("domain-name:resolves_to_refs[*].value = '{text}'"),
        19 => format!("email-message:from_ref.value = '{text}'"),
        20 => format!("file:size = {number}"),
        21 => format!("network-traffic:dst_ref.value ISSUBSET '{}'", cidr16(text)),
        // No index can anchor these: every object of the type is checked.
        22 => format!("ipv4-addr:value != '{text}'"),
        _ => format!("domain-name:value NOT LIKE '%{tail}'"),
    }
}

const TEMPLATES: usize = 24;

/// The /16 block of an IPv4 address, or a block no event is in.
fn cidr16(text: &str) -> String {
    let octets: Vec<&str> = text.split('.').collect();
    match octets.as_slice() {
        [a, b, _, _] if octets.iter().all(|o| o.parse::<u8>().is_ok()) => format!("{a}.{b}.0.0/16"),
        _ => "198.18.0.0/16".into(),
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(12) {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone)]
struct Leaf {
    template: usize,
    text: usize,
    number: usize,
}

#[derive(Debug, Clone)]
enum Shape {
    One(Leaf),
    Or(Leaf, Leaf),
    FollowedBy(Leaf, Leaf),
    And(Leaf, Leaf),
}

fn leaf() -> impl Strategy<Value = Leaf> {
    (0..TEMPLATES, any::<usize>(), any::<usize>()).prop_map(|(template, text, number)| Leaf {
        template,
        text,
        number,
    })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        6 => leaf().prop_map(Shape::One),
        1 => (leaf(), leaf()).prop_map(|(a, b)| Shape::Or(a, b)),
        1 => (leaf(), leaf()).prop_map(|(a, b)| Shape::FollowedBy(a, b)),
        1 => (leaf(), leaf()).prop_map(|(a, b)| Shape::And(a, b)),
    ]
}

fn pattern(shape: &Shape, strings: &[String], numbers: &[i64]) -> String {
    let leaf = |l: &Leaf| {
        comparison(
            l.template,
            &strings[l.text % strings.len()],
            numbers[l.number % numbers.len()],
        )
    };
    match shape {
        Shape::One(a) => format!("[{}]", leaf(a)),
        Shape::Or(a, b) => format!("[{} OR {}]", leaf(a), leaf(b)),
        Shape::FollowedBy(a, b) => {
            format!(
                "([{}] FOLLOWEDBY [{}]) WITHIN 3600 SECONDS",
                leaf(a),
                leaf(b)
            )
        }
        Shape::And(a, b) => format!("[{}] AND [{}]", leaf(a), leaf(b)),
    }
}

/// A snapshot of `patterns`; the ones the parser refuses are left out.
fn snapshot(patterns: &[String]) -> std::sync::Arc<Snapshot> {
    let mut catalog = Catalog::new();
    let records = patterns.iter().enumerate().map(|(n, text)| {
        let id = format!("indicator--00000000-0000-4000-8000-{n:012}");
        IndicatorRecord::new(&id, text)
    });
    catalog.load(records);
    catalog.snapshot()
}

/// The objects and counters of one pass over `lines`.
fn run(snapshot: &Snapshot, lines: &[&String], screen_events: bool) -> (Vec<Value>, PipelineStats) {
    let config = PipelineConfig {
        screen_events,
        ..PipelineConfig::default()
    };
    let decoder = Decoder::for_format("auto", None).expect("auto decoder");
    let mut pipeline = Pipeline::new(decoder, &config);
    let mut out = Vec::new();
    for line in lines {
        let errors = pipeline.process(snapshot, line, &mut out);
        assert!(
            errors.is_empty(),
            "example line refused: {errors:?}\n{line}"
        );
    }
    (out, pipeline.stats().clone())
}

/// The same objects and counters with and without screening; returns how
/// many observations screening passed.
fn compare(snapshot: &Snapshot, lines: &[&String]) -> u64 {
    let (screened, screened_stats) = run(snapshot, lines, true);
    let (built, built_stats) = run(snapshot, lines, false);
    assert_eq!(built_stats.screened, 0);
    assert_eq!(
        screened,
        built,
        "screening changed the output ({} vs {} objects)",
        screened.len(),
        built.len()
    );
    let PipelineStats {
        screened: passed, ..
    } = screened_stats;
    assert_eq!(
        PipelineStats {
            screened: 0,
            ..screened_stats
        },
        built_stats
    );
    passed
}

#[test]
fn screening_changes_no_output_on_random_indicator_sets() {
    let lines = example_lines();
    let (strings, numbers) = event_values(&lines);
    let config = ProptestConfig {
        cases: 192,
        rng_seed: match ProptestConfig::default().rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            chosen => chosen,
        },
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let line_count = lines.len();
    let strategy = (
        vec(shape(), 1..16),
        subsequence(
            (0..line_count).collect::<Vec<_>>(),
            line_count / 2..=line_count,
        ),
    );
    let totals = Cell::new((0u64, 0u64, 0u64));
    let result = runner.run(&strategy, |(shapes, chosen)| {
        let patterns: Vec<String> = shapes
            .iter()
            .map(|s| pattern(s, &strings, &numbers))
            .collect();
        let snapshot = snapshot(&patterns);
        let picked: Vec<&String> = chosen.iter().map(|&i| &lines[i]).collect();
        let passed = compare(&snapshot, &picked);
        let (_, stats) = run(&snapshot, &picked, true);
        let (p, m, o) = totals.get();
        let observations: u64 = stats.observations.values().sum();
        totals.set((p + passed, m + stats.matches, o + observations));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The property means something only if both sides of the screen were
    // exercised: many events passed unbuilt, many matched.
    let (passed, matches, observations) = totals.get();
    assert!(
        passed > observations / 10,
        "only {passed} of {observations} passed"
    );
    assert!(matches > 500, "only {matches} matches in all cases");
}

#[test]
fn screening_passes_events_of_every_log_format_with_the_example_indicators() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/indicators.json"),
    )
    .expect("example indicators");
    let doc: Value = serde_json::from_str(&text).expect("example indicators are JSON");
    let patterns: Vec<String> = doc["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["pattern_type"] == "stix")
        .filter_map(|o| o["pattern"].as_str().map(String::from))
        .collect();
    assert!(patterns.len() >= 5);
    let snapshot = snapshot(&patterns);
    let lines = example_lines();
    let all: Vec<&String> = lines.iter().collect();
    let passed = compare(&snapshot, &all);
    assert!(passed >= 10, "only {passed} events passed unbuilt");
}

#[test]
fn an_unanchored_leaf_makes_every_event_of_its_type_built() {
    // `!=` reaches every IPv4 address; events with one must be built, and
    // the matches must still be the same.
    let snapshot = snapshot(&["[ipv4-addr:value != '203.0.113.1']".to_string()]);
    let lines = example_lines();
    let all: Vec<&String> = lines.iter().collect();
    compare(&snapshot, &all);
    let (_, stats) = run(&snapshot, &all, true);
    assert!(stats.matches > 20, "{stats:?}");
}

#[test]
fn every_template_parses_for_some_event_value() {
    // Each template yields a pattern the parser takes for some value.
    let lines = example_lines();
    let (strings, numbers) = event_values(&lines);
    for template in 0..TEMPLATES {
        let accepted = strings.iter().any(|s| {
            let text = format!("[{}]", comparison(template, s, numbers[0]));
            sightline::pattern::parse(&text).is_ok()
        });
        assert!(accepted, "template {template} never parses");
    }
}
