//! Benchmarks of the compiled matcher against synthetic indicator feeds.
//!
//! The workload is generated deterministically: indicator `i` is a pure
//! function of `i`, so events can carry values that hit the first thousand
//! indicators, which every catalog size holds. Indicator values and random
//! event values come from disjoint spaces (IPv4 first octets 1–100 against
//! 101–223, random 48-bit labels), so only the injected values match.
//!
//! Before the criterion groups run, the binary prints three kinds of lines
//! on stderr: `memory:` (RSS per indicator of a 1M catalog), `check:` (the
//! compiled matcher against the reference interpreter on the same events)
//! and `update-latency:` (percentiles of single changes on the 1M catalog).
//! Before each size of the `match` groups it prints `passes:`, the best and
//! median of 60 timed passes over the events: the best pass is the figure
//! to compare builds by on a shared machine.
//!
//! The `match` group cycles over a few hundred events that stay in cache,
//! as an event just decoded by a pipeline does; `match_cold` cycles over
//! ten thousand, so every object access misses the cache.
//!
//! Run with `cargo bench --bench matcher -- --noplot`. Without `--bench`
//! (as `cargo test --benches` runs it) only the 1,000-indicator case runs.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::{Value, json};
use sightline::eval::matches;
use sightline::matcher::{Catalog, IndicatorRecord, StreamState};
use sightline::pattern::{Pattern, parse};
use sightline::stix::observation::Observation;
use sightline::stix::timestamp::Timestamp;

mod feed;
use feed::{Feed, Rng, Spec, domain, dotted, hex, indicator_id, ipv6, url};

/// The feed of this benchmark: indicator IPv4 addresses have first octets
/// 1–100; event addresses use 101–223.
const FEED: Feed = Feed { first_octet: 1 };

/// 64 hex digits derived from `seed`.
fn hex_digest(seed: u64) -> String {
    hex(seed, 64)
}

/// The same allocator as the `sightline` binary, for both sides of every
/// comparison, counting the bytes in use so that the memory figure can be
/// given as live heap beside the resident set.
#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes currently allocated through [`GLOBAL`].
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to mimalloc unchanged; only a counter
// is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees are passed on.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees are passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees are passed on.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees are passed on.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Catalog sizes of the throughput benchmarks.
const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// Size of the catalog used for memory, updates and the largest compile.
const LARGE: u64 = 1_000_000;

/// Indicators matched by the reference interpreter for the baseline.
const NAIVE_SIZE: u64 = 1_000;

/// Events generated once; the check and the cold runs use all of them.
const EVENT_COUNT: usize = 10_000;

/// Events replayed by the main throughput benchmarks. In a pipeline an
/// event is matched right after it is decoded, while its objects are still
/// in cache; cycling over a few hundred events models that. The `cold` run
/// cycles over all [`EVENT_COUNT`] events (tens of megabytes), so every
/// object access misses the cache, to show the cost of that.
const HOT_EVENTS: usize = 512;

/// Share of events, in percent, that carry a value of some indicator.
const HIT_PERCENT: u64 = 1;

/// Events compared against the reference interpreter by the check.
const CHECK_EVENTS: usize = 2_000;

/// Changes timed one by one outside criterion.
const LATENCY_CHANGES: usize = 1_000;

/// First event time: 2024-05-01T08:00:00Z.
const START_SECS: i64 = 1_714_550_400;

/// Seed of the event generator.
const EVENT_SEED: u64 = 0x5eed_f00d;

impl Spec {
    /// Rewrites `objects` (an event, see [`random_objects`]) so that it
    /// carries a value this indicator looks for.
    fn inject(&self, rng: &mut Rng, objects: &mut Vec<Value>) {
        let dst = |objects: &mut Vec<Value>, value: Value| objects[1] = value;
        match self {
            Spec::Ipv4(ip) => dst(objects, ipv4_object(*ip)),
            Spec::Ipv6(suffix) => dst(
                objects,
                json!({"type": "ipv6-addr", "value": ipv6(*suffix)}),
            ),
            Spec::Subnet24([a, b, c]) => dst(objects, ipv4_object([*a, *b, *c, rng.octet(0, 255)])),
            Spec::Subnet16([a, b]) => {
                let ip = [*a, *b, rng.octet(0, 255), rng.octet(0, 255)];
                dst(objects, ipv4_object(ip));
            }
            Spec::Domain(name) => replace_extra(objects, domain_object(name)),
            Spec::Url(u) => replace_extra(objects, url_object(u)),
            Spec::Sha256(hex) => replace_extra(objects, file_object("hit.bin", 512, hex)),
            Spec::LikeZone(i) => {
                let name = format!("q{}.badzone{i}z.example", rng.below(1000));
                replace_extra(objects, domain_object(&name));
            }
            Spec::RegexUrl(i) => {
                let u = format!("https://abc.evil{i:07}{}.example/x", rng.below(100));
                replace_extra(objects, url_object(&u));
            }
            Spec::FileNameSize(i) => {
                let hash = hex_digest(rng.next());
                replace_extra(objects, file_object(&format!("x{i}.exe"), 4096, &hash));
            }
            Spec::FollowedBy(name, ip) => {
                dst(objects, ipv4_object(*ip));
                replace_extra(objects, domain_object(name));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Events

fn ipv4_object(ip: [u8; 4]) -> Value {
    json!({"type": "ipv4-addr", "value": dotted(ip)})
}

fn domain_object(name: &str) -> Value {
    json!({"type": "domain-name", "value": name})
}

fn url_object(u: &str) -> Value {
    json!({"type": "url", "value": u})
}

fn file_object(name: &str, size: u64, sha256: &str) -> Value {
    json!({"type": "file", "name": name, "size": size, "hashes": {"SHA-256": sha256}})
}

/// A random address outside the indicator space: IPv4 with a first octet
/// of 101–223 (four times in five), else IPv6 outside `2001:db8::/64`.
fn random_address(rng: &mut Rng) -> Value {
    if rng.below(5) == 0 {
        let value = format!(
            "2001:db8:0:1:{:x}::{:x}",
            rng.below(1 << 16),
            rng.below(1 << 16)
        );
        return json!({"type": "ipv6-addr", "value": value});
    }
    let ip = [
        rng.octet(101, 223),
        rng.octet(0, 255),
        rng.octet(0, 255),
        rng.octet(1, 254),
    ];
    ipv4_object(ip)
}

/// 3–8 random objects: source and destination addresses (keys "0" and "1"),
/// the network traffic between them, then 0–5 of domain, URL and file.
fn random_objects(rng: &mut Rng) -> Vec<Value> {
    let mut objects = vec![
        random_address(rng),
        random_address(rng),
        json!({
            "type": "network-traffic", "src_ref": "0", "dst_ref": "1",
            "dst_port": 443, "protocols": ["tcp"]
        }),
    ];
    for _ in 0..rng.below(6) {
        let extra = match rng.below(3) {
            0 => domain_object(&domain(rng.next())),
            1 => url_object(&url(rng.next(), rng.next())),
            _ => {
                let name = format!("f{:08x}.dat", rng.next() as u32);
                file_object(&name, rng.below(1 << 20), &hex_digest(rng.next()))
            }
        };
        objects.push(extra);
    }
    objects
}

/// Puts `object` in place of the last extra object, or adds it.
fn replace_extra(objects: &mut Vec<Value>, object: Value) {
    if objects.len() > 3 {
        objects.pop();
    }
    objects.push(object);
}

/// `count` events one second apart; [`HIT_PERCENT`] of them carry a value
/// of one of the first [`NAIVE_SIZE`] indicators.
fn events(count: usize) -> Vec<Arc<Observation>> {
    let mut rng = Rng::new(EVENT_SEED);
    (0..count)
        .map(|k| {
            let mut objects = random_objects(&mut rng);
            if rng.below(100) < HIT_PERCENT {
                FEED.spec(rng.below(NAIVE_SIZE))
                    .inject(&mut rng, &mut objects);
            }
            let keyed: BTreeMap<String, Value> = objects
                .into_iter()
                .enumerate()
                .map(|(key, object)| (key.to_string(), object))
                .collect();
            let time = Timestamp::from_parts(START_SECS + k as i64, 0);
            Arc::new(Observation::single(time, keyed))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Measurements outside criterion

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm is readable");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("the second field of statm is the resident page count");
    pages * 4096
}

/// Builds the large catalog and prints its RSS cost per indicator.
fn large_catalog_with_memory() -> Catalog {
    let before = rss_bytes();
    let live_before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let catalog = FEED.catalog(LARGE);
    let elapsed = started.elapsed();
    let after = rss_bytes();
    let live_after = LIVE_BYTES.load(Ordering::Relaxed);

    // Memory freed during the build goes back to the system once the
    // allocator purges it (after a short delay, on later activity), as
    // it does in a running worker; measure again after that.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..1000 {
        black_box(vec![0u8; 1024]);
    }
    let settled = rss_bytes();
    eprintln!(
        "memory: {} bytes/indicator at 1M once settled (RSS delta)",
        settled.saturating_sub(before) / LARGE
    );
    // What the commands do after a bulk load.
    sightline::memory::release_freed();
    let released = rss_bytes();
    eprintln!(
        "memory: {} bytes/indicator at 1M after release_freed (RSS delta)",
        released.saturating_sub(before) / LARGE
    );

    let per_indicator = after.saturating_sub(before) / LARGE;
    let live_per_indicator = live_after.saturating_sub(live_before) as u64 / LARGE;
    eprintln!(
        "memory: {per_indicator} bytes/indicator at 1M (RSS delta), \
         {live_per_indicator} bytes/indicator allocated"
    );
    let snapshot = catalog.snapshot();
    eprintln!(
        "memory: RSS {} MiB -> {} MiB; build took {elapsed:.2?}; {:?}",
        before >> 20,
        after >> 20,
        snapshot.stats()
    );
    catalog
}

/// Matches of single-observation indicators, as (event, indicator id).
type MatchSet = BTreeSet<(usize, String)>;

/// Compares the compiled matcher with the reference interpreter over the
/// first [`CHECK_EVENTS`] events and the indicators `0..NAIVE_SIZE`.
fn check_against_reference(events: &[Arc<Observation>]) {
    let events = &events[..CHECK_EVENTS.min(events.len())];
    let catalog = FEED.catalog(NAIVE_SIZE);
    let snapshot = catalog.snapshot();
    let mut stream = StreamState::default();
    let single: BTreeSet<String> = (0..NAIVE_SIZE)
        .filter(|&i| FEED.spec(i).is_single())
        .map(indicator_id)
        .collect();

    let mut compiled = MatchSet::new();
    for (k, obs) in events.iter().enumerate() {
        for m in stream.process(&snapshot, Arc::clone(obs)) {
            if single.contains(&*m.indicator.to_string()) {
                compiled.insert((k, m.indicator.to_string()));
            }
        }
    }
    let mut reference = MatchSet::new();
    for (i, pattern) in naive_patterns() {
        if !FEED.spec(i).is_single() {
            continue;
        }
        for (k, obs) in events.iter().enumerate() {
            if matches(&pattern, std::slice::from_ref(&**obs)).unwrap_or(false) {
                reference.insert((k, indicator_id(i)));
            }
        }
    }

    let missing: Vec<_> = reference.difference(&compiled).take(5).collect();
    let extra: Vec<_> = compiled.difference(&reference).take(5).collect();
    eprintln!(
        "check: {} events x {NAIVE_SIZE} indicators: compiled {} matches, reference {}; \
         missing {missing:?}, extra {extra:?}",
        events.len(),
        compiled.len(),
        reference.len()
    );
}

/// The indicators `0..NAIVE_SIZE`, parsed, with their indexes.
fn naive_patterns() -> Vec<(u64, Pattern)> {
    (0..NAIVE_SIZE)
        .map(|i| {
            let pattern = parse(&FEED.spec(i).pattern()).expect("generated patterns parse");
            (i, pattern)
        })
        .collect()
}

/// A fresh indicator for update benchmarks; ids start far above the feed.
fn update_record(k: u64) -> IndicatorRecord {
    let i = (1 << 40) + k;
    IndicatorRecord::new(&indicator_id(i), &FEED.spec(i).pattern())
}

/// Times [`LATENCY_CHANGES`] single adds and removes on `catalog` and
/// prints their percentiles.
fn update_latency(catalog: &mut Catalog) {
    let mut adds = Vec::with_capacity(LATENCY_CHANGES);
    let mut removes = Vec::with_capacity(LATENCY_CHANGES);
    for k in 0..LATENCY_CHANGES as u64 {
        let record = update_record(k);
        let id = Arc::clone(&record.id);

        let started = Instant::now();
        catalog.upsert(record).expect("generated patterns compile");
        adds.push(started.elapsed());

        let started = Instant::now();
        catalog.remove(&id);
        removes.push(started.elapsed());
    }
    print_latency("add", &mut adds);
    print_latency("remove", &mut removes);
    eprintln!(
        "update-latency: segments after the loop: {}",
        catalog.snapshot().segment_count()
    );
}

fn print_latency(what: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "update-latency: {what} n={} p50={:.1?} p99={:.1?} max={:.1?}",
        samples.len(),
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    );
}

// ---------------------------------------------------------------------------
// Criterion groups

/// `match/indicators/{N}` and `match/baseline_naive/1000`.
fn bench_match(c: &mut Criterion, sizes: &[u64], large: &Catalog, events: &[Arc<Observation>]) {
    bench_match_group(
        c,
        "match",
        sizes,
        large,
        &events[..HOT_EVENTS.min(events.len())],
        true,
    );
}

/// `match_cold/indicators/{N}`: as `match`, over every event.
fn bench_match_cold(c: &mut Criterion, large: &Catalog, events: &[Arc<Observation>]) {
    bench_match_group(c, "match_cold", &[LARGE], large, events, false);
}

fn bench_match_group(
    c: &mut Criterion,
    name: &str,
    sizes: &[u64],
    large: &Catalog,
    events: &[Arc<Observation>],
    with_baseline: bool,
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));

    for &n in sizes {
        let owned;
        let catalog = if n == LARGE {
            large
        } else {
            owned = FEED.catalog(n);
            &owned
        };
        let snapshot = catalog.snapshot();
        report_match_count(n, &snapshot, events);
        best_passes(n, &snapshot, events);

        let mut stream = StreamState::default();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("indicators", n), |b| {
            b.iter(|| {
                let obs = Arc::clone(&events[next % events.len()]);
                next += 1;
                stream.process(&snapshot, obs)
            })
        });
    }

    if !with_baseline {
        group.finish();
        return;
    }
    let patterns: Vec<Pattern> = naive_patterns().into_iter().map(|(_, p)| p).collect();
    let mut next = 0;
    group.bench_function(BenchmarkId::new("baseline_naive", NAIVE_SIZE), |b| {
        b.iter(|| {
            let obs = &events[next % events.len()];
            next += 1;
            let one = std::slice::from_ref(&**obs);
            patterns
                .iter()
                .filter(|p| matches(p, one).unwrap_or(false))
                .count()
        })
    });
    group.finish();
}

/// Passes timed by [`best_passes`].
const PASSES: usize = 60;

/// Observations matched in one timed pass.
const PASS_LEN: usize = 4096;

/// Times [`PASSES`] passes of [`PASS_LEN`] observations over `events` at
/// size `n` and prints the best and the median pass as observations per
/// second. On a shared machine, the best pass is the figure least touched
/// by other work; compare builds by it, run after run.
fn best_passes(n: u64, snapshot: &sightline::matcher::Snapshot, events: &[Arc<Observation>]) {
    let mut stream = StreamState::default();
    let mut next = 0;
    let mut rates: Vec<f64> = (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PASS_LEN {
                black_box(stream.process(snapshot, Arc::clone(&events[next % events.len()])));
                next += 1;
            }
            PASS_LEN as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    eprintln!(
        "passes: N={n}: best {:.2} M obs/s, median {:.2} M obs/s ({PASSES} passes of {PASS_LEN})",
        rates[PASSES - 1] / 1e6,
        rates[PASSES / 2] / 1e6
    );
}

/// Prints how many matches one pass over the events yields at size `n`.
fn report_match_count(
    n: u64,
    snapshot: &sightline::matcher::Snapshot,
    events: &[Arc<Observation>],
) {
    let mut stream = StreamState::default();
    let started = Instant::now();
    let found: usize = events
        .iter()
        .map(|obs| stream.process(snapshot, Arc::clone(obs)).len())
        .sum();
    eprintln!(
        "matches: N={n}: {found} over {} events (one pass {:.2?}, {} segment(s))",
        events.len(),
        started.elapsed(),
        snapshot.segment_count()
    );
}

/// `compile/{N}`: one `Catalog::load` of the whole feed.
fn bench_compile(c: &mut Criterion, sizes: &[u64]) {
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1));
    for &n in sizes {
        let feed = FEED.records(n).collect::<Vec<_>>();
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || feed.clone(),
                |feed| {
                    let mut catalog = Catalog::new();
                    black_box(catalog.load(feed));
                    catalog
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// `update/{N}`: one add and one removal, each publishing a snapshot.
fn bench_update(c: &mut Criterion, n: u64, catalog: &mut Catalog) {
    let mut group = c.benchmark_group("update");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut k = LATENCY_CHANGES as u64;
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            let record = update_record(k);
            k += 1;
            let id = Arc::clone(&record.id);
            catalog.upsert(record).expect("generated patterns compile");
            catalog.remove(&id)
        })
    });
    group.finish();
}

fn main() {
    let is_bench = std::env::args().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let events = events(EVENT_COUNT);

    if !is_bench {
        // Test mode: one quick pass over the smallest case.
        bench_match(&mut criterion, &[NAIVE_SIZE], &Catalog::new(), &events);
        criterion.final_summary();
        return;
    }

    let mut large = large_catalog_with_memory();
    check_against_reference(&events);
    bench_match(&mut criterion, &SIZES, &large, &events);
    bench_match_cold(&mut criterion, &large, &events);
    update_latency(&mut large);
    bench_update(&mut criterion, LARGE, &mut large);
    drop(large);
    bench_compile(&mut criterion, &[100_000, LARGE]);
    criterion.final_summary();
}
