//! Parse speed of STIX patterns on a mix shaped like real feeds.
//!
//! Each case is measured twice: `parse/pattern/<case>` parses the pattern
//! text (validation included, so `MATCHES` pays for compiling its regular
//! expression), and `parse/json/<case>` reads a JSON indicator object that
//! carries the same pattern into a `serde_json::Value`. Feeds deliver every
//! pattern inside such an object, so the ratio of the two says what pattern
//! parsing adds to reading an indicator at all. `parse/*/mix` runs every
//! case once per iteration and reports indicators per second.
//!
//! Run with `cargo bench --bench parse -- --noplot`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sightline::pattern::parse;

/// One benchmarked pattern.
struct Case {
    name: &'static str,
    pattern: String,
}

fn case(name: &'static str, pattern: impl Into<String>) -> Case {
    Case {
        name,
        pattern: pattern.into(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("ipv4_equals", "[ipv4-addr:value = '198.51.100.7']"),
        case(
            "domain_equals",
            "[domain-name:value = 'login.example-bank.com']",
        ),
        case(
            "url_equals",
            "[url:value = 'https://cdn.example.net/assets/js/update.php?id=4711&t=x']",
        ),
        case(
            "sha256_equals",
            "[file:hashes.'SHA-256' = \
             'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
        ),
        case("or_10_md5", md5_or_list(10)),
        case("or_100_md5", md5_or_list(100)),
        case(
            "followedby_within",
            "([process:name = 'powershell.exe' AND process:command_line LIKE '%-enc %'] \
             FOLLOWEDBY [network-traffic:dst_port = 443 AND \
             network-traffic:dst_ref.value ISSUBSET '203.0.113.0/24']) \
             WITHIN 600 SECONDS",
        ),
        case(
            "matches_regex",
            "[file:name MATCHES '^[a-z]{8}\\\\.(exe|dll|scr)$']",
        ),
        case(
            "issubset_cidr",
            "[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
        ),
    ]
}

/// `[file:hashes.MD5 = '…' OR …]` with `count` distinct digests, the way
/// feeds pack one campaign's samples into one indicator.
fn md5_or_list(count: u64) -> String {
    let tests: Vec<String> = (0..count)
        .map(|i| {
            let digest = format!("{:016x}{:016x}", mix64(2 * i), mix64(2 * i + 1));
            format!("file:hashes.MD5 = '{digest}'")
        })
        .collect();
    format!("[{}]", tests.join(" OR "))
}

/// A fixed scrambling of `x` (the SplitMix64 finaliser), for digests that
/// look random but are the same on every run.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A STIX 2.1 indicator object carrying `pattern`, as a feed would send it.
fn indicator_json(pattern: &str) -> String {
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2024-05-01T08:00:00.000Z",
        "modified": "2024-05-01T08:00:00.000Z",
        "name": "feed entry",
        "indicator_types": ["malicious-activity"],
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2024-05-01T08:00:00Z"
    })
    .to_string()
}

fn bench_parse(c: &mut Criterion) {
    let cases = cases();
    let documents: Vec<String> = cases.iter().map(|c| indicator_json(&c.pattern)).collect();

    let mut group = c.benchmark_group("parse");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (case, document) in cases.iter().zip(&documents) {
        // A case that fails to parse would time the error path instead.
        if let Err(e) = parse(&case.pattern) {
            panic!("benchmark case {} does not parse: {e}", case.name);
        }
        group.throughput(Throughput::Bytes(case.pattern.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("pattern", case.name),
            &case.pattern,
            |b, text| b.iter(|| parse(black_box(text))),
        );
        group.throughput(Throughput::Bytes(document.len() as u64));
        group.bench_with_input(BenchmarkId::new("json", case.name), document, |b, text| {
            b.iter(|| serde_json::from_str::<Value>(black_box(text)))
        });
    }

    group.throughput(Throughput::Elements(cases.len() as u64));
    group.bench_function(BenchmarkId::new("pattern", "mix"), |b| {
        b.iter(|| {
            for case in &cases {
                black_box(parse(black_box(&case.pattern)).is_ok());
            }
        })
    });
    group.bench_function(BenchmarkId::new("json", "mix"), |b| {
        b.iter(|| {
            for document in &documents {
                black_box(serde_json::from_str::<Value>(black_box(document)).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
