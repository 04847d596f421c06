//! Throughput of the whole matching path on ECS log lines, next to the cost
//! of merely parsing the same lines.
//!
//! `pipeline/match_ecs_100k` feeds every line through a [`Pipeline`] with
//! the shipped ECS mapping and 100,000 indicators: selective decode,
//! observation, match, and the STIX objects of each sighting.
//! `pipeline/parse_only` parses the same lines into a `serde_json::Value`
//! and does nothing else. Both report bytes per second. Any consumer that
//! looks at JSON pays at least a parse, so the ratio of the two times says
//! what matching costs on top of reading the data at all.
//!
//! The workload is deterministic. Indicator `i` is a pure function of `i`,
//! with the mix of `benches/matcher.rs`. About one line in a hundred
//! carries a value some indicator looks for; every other value comes from
//! a space no indicator uses (private addresses, public IPv4 with a first
//! octet of 101–223, `.com`/`.net`/`.org` names, `https` URLs), so only
//! those lines match.
//!
//! Before criterion runs, the binary prints `workload:` lines on stderr:
//! line sizes, lines that carry an indicator value, and what one pass over
//! the lines decodes, matches and writes; then the ratio of the two sides
//! timed in alternating passes (200 rounds), which a shared machine's
//! changing load disturbs less than criterion's groups run one after the
//! other.
//!
//! Run with `cargo bench --bench pipeline -- --noplot`. Without `--bench`
//! (as `cargo test --benches` runs it) a 1,000-indicator catalog and 200
//! lines run once.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use serde_json::{Value, json};
use sightline::matcher::Snapshot;
use sightline::observe::decoder::{Decoder, builtin_mapping};
use sightline::observe::fields::Fields;
use sightline::pipeline::{Pipeline, PipelineConfig};
use sightline::stix::timestamp::Timestamp;

mod feed;
use feed::{Feed, Rng, Spec, dotted, hex, ipv6};

/// The feed of this benchmark: indicator IPv4 addresses have first octets
/// 11–100, which keeps the private `10.0.0.0/8` of the events out of every
/// network.
const FEED: Feed = Feed { first_octet: 11 };

/// The same allocator as the `sightline` binary, for both sides of every
/// comparison.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Indicators in the catalog of the benchmark.
const INDICATORS: u64 = 100_000;

/// ECS lines matched per iteration.
const LINES: usize = 2_000;

/// Catalog size and line count of the test-mode run.
const TEST_INDICATORS: u64 = 1_000;
const TEST_LINES: usize = 200;

/// Share of lines, in percent, that carry a value of some indicator.
const HIT_PERCENT: u64 = 1;

/// Every generated line must fit these bounds, in bytes.
const LINE_BYTES: std::ops::RangeInclusive<usize> = 300..=900;

/// Time of the first line: 2024-05-01T08:00:00Z. Lines are one second
/// apart, so a two-part indicator (`FOLLOWEDBY ... WITHIN 600 SECONDS`)
/// injected over two consecutive lines matches.
const START_SECS: i64 = 1_714_550_400;

/// Seed of the line generator.
const LINE_SEED: u64 = 0xec5_11e5;

// ---------------------------------------------------------------------------
// Indicators

/// A value a line carries so that it hits an indicator.
enum Carried {
    /// `destination.ip` of a firewall flow.
    DstIp(String),
    /// `dns.question.name` of a DNS answer.
    DnsQuery(String),
    /// `url.full` of an HTTP request.
    UrlFull(String),
    /// `file.hash.sha256` of a file event.
    Sha256(String),
    /// `file.name` and `file.size` of a file event.
    NamedFile(String, u64),
}

impl Spec {
    /// The values that consecutive lines carry to hit this indicator: one
    /// line, or two for `FOLLOWEDBY` (the lookup, then the connection).
    fn carried(&self, rng: &mut Rng) -> Vec<Carried> {
        let octet = |rng: &mut Rng| rng.below(256) as u8;
        let one = match self {
            Spec::Ipv4(ip) => Carried::DstIp(dotted(*ip)),
            Spec::Ipv6(suffix) => Carried::DstIp(ipv6(*suffix)),
            Spec::Subnet24([a, b, c]) => Carried::DstIp(dotted([*a, *b, *c, octet(rng)])),
            Spec::Subnet16([a, b]) => Carried::DstIp(dotted([*a, *b, octet(rng), octet(rng)])),
            Spec::Domain(name) => Carried::DnsQuery(name.clone()),
            Spec::Url(u) => Carried::UrlFull(u.clone()),
            Spec::Sha256(digest) => Carried::Sha256(digest.clone()),
            Spec::LikeZone(i) => {
                Carried::DnsQuery(format!("q{}.badzone{i}z.example", rng.below(1000)))
            }
            Spec::RegexUrl(i) => Carried::UrlFull(format!(
                "https://abc.evil{i:07}{}.example/x",
                rng.below(100)
            )),
            Spec::FileNameSize(i) => Carried::NamedFile(format!("x{i}.exe"), 4096),
            Spec::FollowedBy(name, ip) => {
                return vec![Carried::DnsQuery(name.clone()), Carried::DstIp(dotted(*ip))];
            }
        };
        vec![one]
    }
}

// ---------------------------------------------------------------------------
// ECS lines
//
// Five event shapes, after `examples/events/ecs.jsonl`: firewall flows,
// DNS answers, HTTP requests, file creations and process starts. Values no
// indicator looks for are drawn here; `Carried` values replace them.

const USERS: [&str; 5] = ["jdoe", "asmith", "mlopez", "kchen", "svc-backup"];
const WORDS: [&str; 8] = [
    "cdn",
    "api",
    "static",
    "mail",
    "login",
    "update",
    "img",
    "telemetry",
];
const ZONES: [&str; 4] = [
    "example.com",
    "example.net",
    "example.org",
    "corp.example.com",
];

/// An address on the internal network.
fn private_ip(rng: &mut Rng) -> String {
    format!("10.20.{}.{}", rng.below(8), rng.between(2, 254))
}

/// A public address outside the indicator space: IPv4 with a first octet
/// of 101–223 (nine times in ten), else IPv6 outside `2001:db8::/64`.
fn public_ip(rng: &mut Rng) -> String {
    if rng.below(10) == 0 {
        return format!(
            "2001:db8:0:1:{:x}::{:x}",
            rng.below(1 << 16),
            rng.below(1 << 16)
        );
    }
    let first = rng.between(101, 223);
    format!(
        "{first}.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        rng.between(1, 254)
    )
}

/// A domain name outside the indicator zone.
fn public_domain(rng: &mut Rng) -> String {
    let word = rng.pick(&WORDS);
    let number = rng.below(1 << 16);
    format!("{word}-{number:04x}.{}", rng.pick(&ZONES))
}

/// An `https` URL (indicator URLs are `http`) on a public domain.
fn public_url(rng: &mut Rng) -> String {
    let host = public_domain(rng);
    let dir = rng.pick(&WORDS);
    let page = hex(rng.next(), 8);
    format!("https://{host}/{dir}/{page}.php?id={}", rng.below(100_000))
}

/// The scheme, host and path of `url`.
fn url_parts(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (scheme, host, path)
}

fn agent(kind: &str) -> Value {
    json!({"type": kind, "version": "8.11.3"})
}

fn workstation(user: &str) -> Value {
    json!({
        "name": format!("ws-{user}"),
        "os": {"family": "windows", "name": "Windows 11 Pro"},
        "ip": "10.20.0.15"
    })
}

fn sensor() -> Value {
    json!({"name": "sensor-01", "hostname": "sensor-01", "ip": "10.20.0.250"})
}

/// A flow ended at the edge firewall, outbound; to `dst` when given.
fn flow(rng: &mut Rng, time: Timestamp, dst: Option<String>) -> Value {
    let dst = dst.unwrap_or_else(|| public_ip(rng));
    let family = if dst.contains(':') { "ipv6" } else { "ipv4" };
    let src = if family == "ipv6" {
        format!("2001:db8:20::{:x}", rng.between(2, 0xfff))
    } else {
        private_ip(rng)
    };
    let end = Timestamp::from_unix_nanos(time.unix_nanos() + 1_000_000 * rng.below(60_000) as i128);
    let (src_bytes, dst_bytes) = (rng.between(60, 20_000), rng.between(60, 90_000));
    let dst_port = [443, 443, 80, 8443, 22][rng.below(5) as usize];
    json!({
        "@timestamp": time.to_stix_millis(),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["network"], "type": ["connection", "end"],
            "action": "flow_terminated", "outcome": "success", "dataset": "panw.panos",
            "start": time.to_stix_millis(), "end": end.to_stix_millis()
        },
        "observer": {
            "vendor": "Palo Alto Networks", "product": "PAN-OS", "type": "firewall",
            "name": "fw-edge-01"
        },
        "source": {
            "ip": src, "port": rng.between(32_768, 60_999), "bytes": src_bytes,
            "packets": 1 + src_bytes / 900
        },
        "destination": {
            "ip": dst, "port": dst_port,
            "bytes": dst_bytes, "packets": 1 + dst_bytes / 1400
        },
        "network": {
            "transport": "tcp", "type": family, "direction": "outbound",
            "bytes": src_bytes + dst_bytes
        },
        "rule": {"name": "allow-outbound-web"}
    })
}

/// A DNS answer seen by the network sensor; for `name` when given.
fn dns(rng: &mut Rng, time: Timestamp, name: Option<String>) -> Value {
    let name = name.unwrap_or_else(|| public_domain(rng));
    let answer = public_ip(rng);
    let record = if answer.contains(':') { "AAAA" } else { "A" };
    json!({
        "@timestamp": time.to_stix_millis(),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["network"], "type": ["connection", "protocol"],
            "dataset": "network_traffic.dns", "duration": rng.between(200_000, 40_000_000)
        },
        "network": {"type": "ipv4", "transport": "udp", "protocol": "dns"},
        "source": {"ip": private_ip(rng), "port": rng.between(32_768, 60_999), "bytes": 38},
        "destination": {"ip": "10.20.0.2", "port": 53, "bytes": 54},
        "dns": {
            "id": rng.below(1 << 16), "type": "answer", "response_code": "NOERROR",
            "question": {"name": name, "type": record, "class": "IN"},
            "answers": [{"name": name, "type": record, "ttl": 300, "data": answer}],
            "resolved_ip": [answer]
        },
        "host": sensor(),
        "agent": agent("packetbeat")
    })
}

/// An HTTP request seen by the network sensor; to `url` when given.
fn http(rng: &mut Rng, time: Timestamp, url: Option<String>) -> Value {
    let url = url.unwrap_or_else(|| public_url(rng));
    let (scheme, host, path) = url_parts(&url);
    let port = if scheme == "https" { 443 } else { 80 };
    json!({
        "@timestamp": time.to_stix_millis(),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["network", "web"], "type": ["connection"],
            "dataset": "network_traffic.http", "duration": rng.between(1_000_000, 90_000_000)
        },
        "source": {"ip": private_ip(rng), "port": rng.between(32_768, 60_999)},
        "destination": {"ip": public_ip(rng), "port": port},
        "network": {"type": "ipv4", "transport": "tcp", "protocol": "http"},
        "url": {"full": url, "scheme": scheme, "domain": host, "path": path},
        "http": {
            "version": "1.1",
            "request": {"method": rng.pick(&["GET", "GET", "POST"]), "bytes": rng.below(900)},
            "response": {"status_code": 200, "bytes": rng.below(60_000)}
        },
        "user_agent": {"original": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"},
        "host": sensor(),
        "agent": agent("packetbeat")
    })
}

/// A file written by a browser download: `name` and `size`, and the
/// SHA-256 `sha256`, when given.
fn file(
    rng: &mut Rng,
    time: Timestamp,
    name: Option<(String, u64)>,
    sha256: Option<String>,
) -> Value {
    let user = rng.pick(&USERS);
    let (name, size) = name.unwrap_or_else(|| {
        let stem = hex(rng.next(), 6);
        let ext = rng.pick(&["pdf", "docx", "zip", "exe"]);
        (
            format!("{}_{stem}.{ext}", rng.pick(&WORDS)),
            rng.between(1_000, 5_000_000),
        )
    });
    let sha256 = sha256.unwrap_or_else(|| hex(rng.next(), 64));
    json!({
        "@timestamp": time.to_stix_millis(),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["file"], "type": ["creation"],
            "dataset": "endpoint.events.file"
        },
        "file": {
            "name": name,
            "directory": format!("C:\\Users\\{user}\\Downloads"),
            "size": size,
            "hash": {"md5": hex(rng.next(), 32), "sha256": sha256}
        },
        "process": {"pid": rng.between(400, 30_000), "name": "msedge.exe"},
        "user": {"name": user, "domain": "CORP"},
        "host": workstation(user),
        "agent": agent("endpoint")
    })
}

/// A process started from a shell.
fn process(rng: &mut Rng, time: Timestamp) -> Value {
    let user = rng.pick(&USERS);
    let (name, command) = match rng.below(3) {
        0 => (
            "powershell.exe",
            "powershell.exe -NoProfile -Command Get-Date".to_string(),
        ),
        1 => ("cmd.exe", format!("cmd.exe /c dir C:\\Users\\{user}")),
        _ => {
            let host = public_domain(rng);
            ("curl.exe", format!("curl.exe -s https://{host}/status"))
        }
    };
    json!({
        "@timestamp": time.to_stix_millis(),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["process"], "type": ["start"],
            "dataset": "endpoint.events.process"
        },
        "process": {
            "pid": rng.between(400, 30_000),
            "name": name,
            "command_line": command,
            "hash": {"sha256": hex(rng.next(), 64)},
            "parent": {"pid": rng.between(400, 30_000), "name": "explorer.exe"}
        },
        "user": {"name": user, "domain": "CORP"},
        "host": workstation(user),
        "agent": agent("endpoint")
    })
}

/// The event of line `k`: the shape that can carry `carried`, or a random
/// shape (40% flows, 25% DNS, 15% HTTP, 10% files, 10% processes).
fn event(rng: &mut Rng, k: usize, carried: Option<Carried>) -> Value {
    let millis = rng.below(1000) as u32 * 1_000_000;
    let time = Timestamp::from_parts(START_SECS + k as i64, millis);
    match carried {
        Some(Carried::DstIp(ip)) => flow(rng, time, Some(ip)),
        Some(Carried::DnsQuery(name)) => dns(rng, time, Some(name)),
        Some(Carried::UrlFull(url)) => http(rng, time, Some(url)),
        Some(Carried::Sha256(digest)) => file(rng, time, None, Some(digest)),
        Some(Carried::NamedFile(name, size)) => file(rng, time, Some((name, size)), None),
        None => match rng.below(100) {
            0..40 => flow(rng, time, None),
            40..65 => dns(rng, time, None),
            65..80 => http(rng, time, None),
            80..90 => file(rng, time, None, None),
            _ => process(rng, time),
        },
    }
}

/// The generated lines and how many of them carry an indicator value.
struct Lines {
    lines: Vec<String>,
    carrying: usize,
}

/// `count` ECS lines; `hit_percent` of them start to carry values of a
/// random indicator among `0..indicators`.
fn lines(count: usize, indicators: u64, hit_percent: u64) -> Lines {
    let mut rng = Rng::new(LINE_SEED);
    let mut queued = VecDeque::new();
    let mut carrying = 0;
    let lines = (0..count)
        .map(|k| {
            if queued.is_empty() && rng.below(100) < hit_percent {
                queued.extend(FEED.spec(rng.below(indicators)).carried(&mut rng));
            }
            let carried = queued.pop_front();
            carrying += usize::from(carried.is_some());
            let line = event(&mut rng, k, carried).to_string();
            assert!(
                LINE_BYTES.contains(&line.len()),
                "line {k} is {} bytes, outside {LINE_BYTES:?}: {line}",
                line.len()
            );
            line
        })
        .collect();
    Lines { lines, carrying }
}

// ---------------------------------------------------------------------------
// Benchmark

fn ecs_pipeline() -> Pipeline {
    let mapping = builtin_mapping("ecs").expect("the shipped ECS mapping compiles");
    Pipeline::new(
        Decoder::Mapped(Box::new(mapping)),
        &PipelineConfig::default(),
    )
}

/// Prints the shape of the workload and what one pass of a fresh pipeline
/// makes of it; fails when a line does not decode.
fn describe(workload: &Lines, snapshot: &Snapshot) {
    let sizes: Vec<usize> = workload.lines.iter().map(String::len).collect();
    let total: usize = sizes.iter().sum();
    eprintln!(
        "workload: {} lines, {total} bytes (min {}, mean {}, max {}); \
         {} carry an indicator value; {} indicators",
        sizes.len(),
        sizes.iter().min().unwrap_or(&0),
        total / sizes.len().max(1),
        sizes.iter().max().unwrap_or(&0),
        workload.carrying,
        snapshot.len()
    );

    let mut pipeline = ecs_pipeline();
    let mut out = Vec::new();
    let started = Instant::now();
    for line in &workload.lines {
        let errors = pipeline.process(snapshot, line, &mut out);
        assert!(
            errors.is_empty(),
            "generated line does not decode: {errors:?}\n{line}"
        );
    }
    let elapsed = started.elapsed();
    let stats = pipeline.stats();
    eprintln!(
        "workload: one pass {elapsed:.2?}: {} matches, {} objects written, \
         observations {:?}",
        stats.matches,
        out.len(),
        stats.observations
    );
    if workload.carrying > 0 {
        assert!(
            stats.matches > 0,
            "lines carry indicator values but nothing matched"
        );
    }
}

/// `pipeline/match_ecs_100k` and `pipeline/parse_only` over `lines`.
fn bench_pipeline(
    c: &mut Criterion,
    name: &str,
    snapshot: &Snapshot,
    lines: &[String],
    with_stages: bool,
) {
    let total_bytes: usize = lines.iter().map(String::len).sum();
    let mut group = c.benchmark_group(name);
    // An iteration takes milliseconds: flat sampling keeps 20 samples
    // within the measurement time (linear sampling needs 210 iterations).
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(total_bytes as u64));

    // One pipeline for every iteration, as a worker keeps one. Replaying
    // the same lines does not grow it: object ids are derived from content,
    // so after the first pass the remembered ids stop growing (and are
    // capped at `max_remembered_ids` anyway), and the aggregates, keyed by
    // indicator and observable, stay the few dozen the hits open. Later
    // passes write updated sightings only, as a steady stream would.
    let mut pipeline = ecs_pipeline();
    let mut out = Vec::new();
    group.bench_function("match_ecs_100k", |b| {
        b.iter(|| {
            for line in lines {
                black_box(pipeline.process(snapshot, line, &mut out));
                out.clear();
            }
        })
    });

    // The first two stages alone, to show where the path spends its time.
    let mapping =
        with_stages.then(|| builtin_mapping("ecs").expect("the shipped ECS mapping compiles"));
    if let Some(mapping) = &mapping {
        bench_stages(&mut group, mapping, lines);
    }

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            for line in lines {
                black_box(serde_json::from_str::<Value>(line).expect("generated JSON parses"));
            }
        })
    });
    group.finish();
}

/// The whole path against parse-only in alternating passes over `lines`,
/// so that both sides see the same machine: the median and quartiles of
/// the per-round ratio (whole path time / parse-only time). Criterion's
/// groups run one after the other, seconds apart, and on a shared machine
/// the load can change between them.
fn paired_ratio(name: &str, snapshot: &Snapshot, lines: &[String], rounds: usize) {
    let mut pipeline = ecs_pipeline();
    let mut out = Vec::new();
    let mut whole = || {
        let started = Instant::now();
        for line in lines {
            black_box(pipeline.process(snapshot, line, &mut out));
            out.clear();
        }
        started.elapsed().as_secs_f64()
    };
    let parse = || {
        let started = Instant::now();
        for line in lines {
            black_box(serde_json::from_str::<Value>(line).expect("generated JSON parses"));
        }
        started.elapsed().as_secs_f64()
    };
    // Warm both sides up.
    whole();
    parse();
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let w = whole();
                w / parse()
            } else {
                let p = parse();
                whole() / p
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{name}: whole path / parse-only over {rounds} alternating rounds: median {:.2}, \
         quartiles {:.2}–{:.2}",
        at(0.5),
        at(0.25),
        at(0.75)
    );
}

/// `stage_extract` and `stage_extract_observe` over `lines`.
fn bench_stages(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    mapping: &sightline::observe::mapping::Mapping,
    lines: &[String],
) {
    let mut fields = Fields::default();
    group.bench_function("stage_extract", |b| {
        b.iter(|| {
            for line in lines {
                let extracted = mapping.fields().extract_into(line, &mut fields);
                extracted.expect("generated JSON parses");
                black_box(&fields);
            }
        })
    });
    group.bench_function("stage_extract_observe", |b| {
        b.iter(|| {
            for line in lines {
                let extracted = mapping.fields().extract_into(line, &mut fields);
                extracted.expect("generated JSON parses");
                black_box(mapping.observe(&fields).map(|(o, _)| o.objects.len()).ok());
            }
        })
    });
}

fn main() {
    let is_bench = std::env::args().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let (indicators, count) = if is_bench {
        (INDICATORS, LINES)
    } else {
        // Test mode: a small catalog and few lines, run once by criterion.
        (TEST_INDICATORS, TEST_LINES)
    };

    let started = Instant::now();
    let catalog = FEED.catalog(indicators);
    let snapshot = catalog.snapshot();
    eprintln!(
        "workload: catalog of {indicators} loaded in {:.2?}",
        started.elapsed()
    );

    let workload = lines(count, indicators, HIT_PERCENT);
    describe(&workload, &snapshot);
    let rounds = if is_bench { 200 } else { 2 };
    paired_ratio("pipeline", &snapshot, &workload.lines, rounds);
    bench_pipeline(&mut criterion, "pipeline", &snapshot, &workload.lines, true);

    // A back-test with broad indicators: every line carries a value, so
    // the path is held by building sightings and their evidence.
    let all_hit = lines(count, indicators, 100);
    describe(&all_hit, &snapshot);
    paired_ratio("pipeline_all_hit", &snapshot, &all_hit.lines, rounds / 4);
    bench_pipeline(
        &mut criterion,
        "pipeline_all_hit",
        &snapshot,
        &all_hit.lines,
        false,
    );
    criterion.final_summary();
}
