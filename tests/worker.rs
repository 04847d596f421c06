//! `sightline run` against a real Kafka-protocol broker: the one
//! `.ci/test` starts (`SIGHTLINE_TEST_BROKERS`). Every test makes its own
//! topics and group. Without a broker these tests fail: they never pass
//! by skipping.

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_support::*;
use serde_json::{Value, json};

/// The worker writes exactly what `sightline match` writes for the same
/// indicators and events (one event partition, so the stream state is the
/// same), and `/metrics` is valid Prometheus text with the documented
/// names.
#[test]
fn sightings_equal_the_match_command_and_metrics_parse() {
    let topics = Topics::new("equal", 1);
    topics.create();
    produce_indicator_file(&topics.indicators, "examples/indicators.json");
    produce_lines(&topics.events, "examples/events/ecs.jsonl");

    let expected = match_output(&[
        "--indicators",
        "examples/indicators.json",
        "--events",
        "examples/events/ecs.jsonl",
        "--format",
        "ecs",
    ]);
    let worker = Worker::start(&topics, &["--format", "ecs"]);
    let got = consume(&topics.sightings, expected.len(), Duration::from_secs(60));
    let got: Vec<Value> = got.iter().map(|m| m.json()).collect();
    assert_eq!(
        as_set(&got),
        as_set(&expected),
        "worker output differs from match"
    );
    // Keys are the object ids, so compaction keeps the newest version.
    for message in consume(&topics.sightings, expected.len(), Duration::from_secs(5)) {
        assert_eq!(
            Some(message.json()["id"].as_str().unwrap_or("")),
            message.key_str()
        );
    }

    // Lag comes from librdkafka's statistics, every few seconds.
    wait_until("consumer lag reported", || {
        worker.metrics().contains("sightline_consumer_lag{")
    });
    let metrics = worker.metrics();
    check_prometheus_text(&metrics);
    for name in [
        "sightline_events_consumed_total",
        "sightline_observations_total",
        "sightline_indicators_active",
        "sightline_indicator_updates_total",
        "sightline_indicators_rejected_total",
        "sightline_matches_total",
        "sightline_sightings_produced_total",
        "sightline_processing_seconds_bucket",
        "sightline_consumer_lag",
        "sightline_snapshot_build_seconds_count",
        "sightline_snapshot_indicators",
        "sightline_ready",
        "sightline_in_flight_messages",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let sightings = expected.iter().filter(|o| o["type"] == "sighting").count();
    assert_eq!(
        metric_value(&metrics, "sightline_sightings_produced_total"),
        sightings as f64
    );
    assert_eq!(metric_value(&metrics, "sightline_snapshot_indicators"), 7.0);
    assert_eq!(worker.get("/ready").0, 200);
    assert_eq!(worker.get("/health").0, 200);
}

/// A config file names two event topics with their own formats; the
/// worker's output is what `match` writes for each, and the in-flight
/// gauge never passes the configured bound.
#[test]
fn config_file_topics_have_their_own_formats() {
    let topics = Topics::new("config", 1);
    topics.create();
    let zeek_topic = unique("config-zeek");
    create_topics(&[(&zeek_topic, 1, false)]);
    produce_indicator_file(&topics.indicators, "examples/indicators.json");
    produce_lines(&topics.events, "examples/events/ecs.jsonl");
    produce_lines(&zeek_topic, "examples/events/zeek.jsonl");

    let port = free_port();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("sightline-config")));
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup = \"{}\"\n\
         [topics]\nindicators = \"{}\"\nsightings = \"{}\"\ndead_letter = \"{}\"\n\
         [[events]]\ntopic = \"{}\"\nformat = \"ecs\"\n\
         [[events]]\ntopic = \"{zeek_topic}\"\nformat = \"zeek\"\n\
         [metrics]\naddr = \"127.0.0.1:{port}\"\n\
         [worker]\nmax_in_flight = 3\nmax_in_flight_bytes = 1024\n",
        brokers(),
        topics.group,
        topics.indicators,
        topics.sightings,
        topics.dead_letter,
        topics.events,
    );
    std::fs::write(&config, text).expect("config file");
    let args = [
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut worker = Worker::spawn(&args, port);
    worker.wait_ready();

    let mut expected = Vec::new();
    for (file, format) in [("ecs.jsonl", "ecs"), ("zeek.jsonl", "zeek")] {
        let events = format!("examples/events/{file}");
        expected.extend(match_output(&[
            "--indicators",
            "examples/indicators.json",
            "--events",
            &events,
            "--format",
            format,
        ]));
    }
    // Sample the in-flight gauge while the sightings are read.
    let reading = std::sync::atomic::AtomicBool::new(true);
    let (got, most_in_flight) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most = 0.0f64;
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                let metrics = worker.metrics();
                most = most.max(metric_value(&metrics, "sightline_in_flight_messages"));
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        });
        let got = consume(&topics.sightings, expected.len(), Duration::from_secs(60));
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        (got, sampler.join().unwrap_or(f64::INFINITY))
    });
    let got: Vec<Value> = got.iter().map(|m| m.json()).collect();
    let (got, expected) = (as_set(&got), as_set(&expected));
    let missing: Vec<&String> = expected.difference(&got).collect();
    let extra: Vec<&String> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    assert!(most_in_flight <= 3.0, "in flight: {most_in_flight}");
    let metrics = worker.metrics();
    assert!(
        metrics.contains("sightline_observations_total{format=\"zeek/conn\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sightline_observations_total{format=\"ecs/event\"}"),
        "{metrics}"
    );
    let _ = std::fs::remove_file(&config);
}

/// Until the indicator topic is read to its end the worker is not ready;
/// when it cannot be read within the configured time, the worker exits
/// with an error that names it.
#[test]
fn not_ready_without_the_indicator_topic() {
    let topics = Topics::new("unready", 1);
    let port = free_port();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("sightline-config")));
    std::fs::write(&config, "[worker]\nready_timeout_seconds = 3\n").expect("config file");
    let args: Vec<String> = [
        "run",
        "--config",
        &config.display().to_string(),
        "--brokers",
        &brokers(),
        "--indicators-topic",
        &topics.indicators,
        "--events-topic",
        &topics.events,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut worker = Worker::spawn(&args, port);
    let mut saw_unready = false;
    for _ in 0..20 {
        if let Some((status, _)) = worker.try_get("/ready") {
            assert_eq!(status, 503, "ready without indicators");
            saw_unready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_unready, "/ready never answered:\n{}", worker.log_text());
    let status = worker.exit_within(Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = worker.log_text();
    assert!(log.contains(&topics.indicators), "{log}");
    let _ = std::fs::remove_file(&config);
}

/// New versions, revocations and tombstones on the indicator topic change
/// what matches without a restart.
#[test]
fn indicator_changes_apply_live() {
    let topics = Topics::new("live", 1);
    topics.create();
    let a = indicator(
        "indicator--00000000-0000-4000-8000-00000000000a",
        "[ipv4-addr:value = '192.0.2.10']",
        false,
    );
    produce(&topics.indicators, Some(id_of(&a)), Some(&a.to_string()));
    let worker = Worker::start(&topics, &["--format", "ecs", "--aggregate-window", "0"]);

    let mut seen = SightingLog::new(&topics.sightings);
    // Each event gets a new time, so each hit is a new sighting id.
    let mut n = 0;
    let mut event = |destination: &str| {
        n += 1;
        produce_event(&topics.events, n, destination);
    };
    event("192.0.2.10");
    seen.wait_for(id_of(&a), 1);

    // A new indicator matches without restart.
    let b = indicator(
        "indicator--00000000-0000-4000-8000-00000000000b",
        "[ipv4-addr:value = '192.0.2.11']",
        false,
    );
    produce(&topics.indicators, Some(id_of(&b)), Some(&b.to_string()));
    wait_until("indicator b live", || {
        event("192.0.2.11");
        seen.poll_for(id_of(&b), 1, Duration::from_secs(2))
    });

    // Revoking a: its events no longer match. A sentinel event for b after
    // the a event proves the a event was processed.
    let mut revoked = a.clone();
    revoked["revoked"] = json!(true);
    revoked["modified"] = json!("2026-02-01T00:00:00.000Z");
    produce(
        &topics.indicators,
        Some(id_of(&a)),
        Some(&revoked.to_string()),
    );
    wait_until("revocation applied", || {
        let before_a = seen.count(id_of(&a));
        let before_b = seen.count(id_of(&b));
        event("192.0.2.10");
        event("192.0.2.11");
        seen.poll_for(id_of(&b), before_b + 1, Duration::from_secs(5))
            && seen.count(id_of(&a)) == before_a
    });

    // A tombstone removes b.
    produce(&topics.indicators, Some(id_of(&b)), None);
    let c = indicator(
        "indicator--00000000-0000-4000-8000-00000000000c",
        "[ipv4-addr:value = '192.0.2.12']",
        false,
    );
    produce(&topics.indicators, Some(id_of(&c)), Some(&c.to_string()));
    wait_until("tombstone applied", || {
        let before_b = seen.count(id_of(&b));
        let before_c = seen.count(id_of(&c));
        event("192.0.2.11");
        event("192.0.2.12");
        seen.poll_for(id_of(&c), before_c + 1, Duration::from_secs(5))
            && seen.count(id_of(&b)) == before_b
    });
    // An indicator whose validity ended before the events never matches.
    let mut expired = indicator(
        "indicator--00000000-0000-4000-8000-00000000000e",
        "[ipv4-addr:value = '192.0.2.13']",
        false,
    );
    expired["valid_until"] = json!("2026-06-01T00:00:00.000Z");
    produce(
        &topics.indicators,
        Some(id_of(&expired)),
        Some(&expired.to_string()),
    );
    // Loaded: c and the expired one are the live indicators now.
    wait_until("the expired indicator loaded", || {
        metric_value(&worker.metrics(), "sightline_snapshot_indicators") == 2.0
    });

    // And stays removed.
    let settled_a = seen.count(id_of(&a));
    let settled_b = seen.count(id_of(&b));
    let settled_c = seen.count(id_of(&c));
    event("192.0.2.10");
    event("192.0.2.11");
    event("192.0.2.13");
    event("192.0.2.12");
    assert!(seen.poll_for(id_of(&c), settled_c + 1, Duration::from_secs(30)));
    assert_eq!(seen.count(id_of(&expired)), 0, "expired indicator matched");
    assert_eq!(
        seen.count(id_of(&a)),
        settled_a,
        "revoked indicator matched"
    );
    assert_eq!(
        seen.count(id_of(&b)),
        settled_b,
        "deleted indicator matched"
    );

    let metrics = worker.metrics();
    assert!(
        metric_value(
            &metrics,
            "sightline_indicator_updates_total{change=\"revoked\"}"
        ) >= 1.0
    );
    assert!(
        metric_value(
            &metrics,
            "sightline_indicator_updates_total{change=\"removed\"}"
        ) >= 1.0
    );
}

/// Malformed events and indicators land in the dead-letter topic with the
/// original bytes, the reason and their origin; the worker goes on.
#[test]
fn malformed_messages_go_to_the_dead_letter_topic() {
    let topics = Topics::new("dlq", 1);
    topics.create();
    let good = indicator(
        "indicator--00000000-0000-4000-8000-0000000000d1",
        "[ipv4-addr:value = '192.0.2.50']",
        false,
    );
    let bad_pattern = indicator(
        "indicator--00000000-0000-4000-8000-0000000000d2",
        "[ipv4-addr:value = ",
        false,
    );
    produce(
        &topics.indicators,
        Some(id_of(&good)),
        Some(&good.to_string()),
    );
    produce(
        &topics.indicators,
        Some(id_of(&bad_pattern)),
        Some(&bad_pattern.to_string()),
    );
    produce(&topics.indicators, Some("junk"), Some("{not json"));

    produce_raw(&topics.events, None, Some(b"{\"truncated\": "));
    produce_raw(
        &topics.events,
        Some(b"bin"),
        Some(&[0xff, 0xfe, 0x00, 0x41]),
    );
    produce_raw(&topics.events, None, Some(br#"{"hello":"world"}"#));
    let worker = Worker::start(&topics, &["--format", "auto", "--aggregate-window", "0"]);
    produce_event(&topics.events, 1, "192.0.2.50");

    let mut seen = SightingLog::new(&topics.sightings);
    seen.wait_for(id_of(&good), 1);
    let letters = consume(&topics.dead_letter, 5, Duration::from_secs(30));
    assert_eq!(letters.len(), 5, "dead letters: {letters:?}");
    let by_kind: BTreeMap<String, &Received> = letters
        .iter()
        .map(|m| (m.header("sightline-reason-kind").unwrap_or_default(), m))
        .collect();
    let kinds: BTreeSet<&str> = by_kind.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "invalid_json",
            "invalid_pattern",
            "not_utf8",
            "unknown_format"
        ]),
        "{letters:?}"
    );
    let pattern = by_kind["invalid_pattern"];
    assert_eq!(
        pattern.header("sightline-source-topic").as_deref(),
        Some(topics.indicators.as_str())
    );
    assert_eq!(
        pattern.header("sightline-source-offset").as_deref(),
        Some("1")
    );
    assert!(
        pattern
            .header("sightline-reason")
            .unwrap_or_default()
            .contains("indicator--00000000-0000-4000-8000-0000000000d2")
    );
    assert_eq!(
        pattern.payload.as_deref(),
        Some(bad_pattern.to_string().as_bytes())
    );
    let binary = by_kind["not_utf8"];
    assert_eq!(
        binary.payload.as_deref(),
        Some(&[0xff, 0xfe, 0x00, 0x41][..])
    );
    assert_eq!(binary.key.as_deref(), Some(&b"bin"[..]));
    assert_eq!(
        binary.header("sightline-source-topic").as_deref(),
        Some(topics.events.as_str())
    );
    assert_eq!(
        binary.header("sightline-source-partition").as_deref(),
        Some("0")
    );
    assert_eq!(
        binary.header("sightline-source-offset").as_deref(),
        Some("1")
    );
    let event_json = letters
        .iter()
        .filter(|m| m.header("sightline-reason-kind").as_deref() == Some("invalid_json"))
        .count();
    assert_eq!(event_json, 2, "one bad event and one bad indicator message");

    let metrics = worker.metrics();
    assert_eq!(
        metric_value(&metrics, "sightline_dead_letters_total{source=\"events\"}"),
        3.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "sightline_dead_letters_total{source=\"indicators\"}"
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "sightline_indicators_rejected_total{reason=\"invalid_pattern\"}"
        ),
        1.0
    );
}

/// A worker killed with SIGKILL in the middle of a stream and started
/// again loses no sighting; repeats carry the same ids.
#[test]
fn killed_worker_resumes_without_loss() {
    let topics = Topics::new("crash", 3);
    topics.create();
    let (events, expected, hits) = synthetic_setup(&topics, 3000, 40);
    assert_eq!(expected.len(), hits, "the oracle sees every planted hit");

    let args = ["--format", "ecs", "--aggregate-window", "0"];
    let mut worker = Worker::start(&topics, &args);
    produce_lines_keyed(&topics.events, &events);
    let mut seen = SightingLog::new(&topics.sightings);
    wait_until("some sightings before the kill", || {
        seen.poll(Duration::from_millis(200));
        seen.sighting_ids().len() >= expected.len() / 10
    });
    worker.kill();
    let before_restart = seen.sighting_ids().len();
    assert!(
        before_restart < expected.len(),
        "the kill came too late to test anything"
    );

    let _worker = Worker::start(&topics, &args);
    wait_until("every sighting after the restart", || {
        seen.poll(Duration::from_millis(500));
        seen.sighting_ids().len() >= expected.len()
    });
    seen.poll(Duration::from_secs(2));
    assert_eq!(
        seen.sighting_ids(),
        expected,
        "missing or unexpected sightings"
    );
}

/// SIGTERM finishes in-flight work, commits and exits 0: a new worker in
/// the same group reads nothing again.
#[test]
fn sigterm_commits_and_exits_cleanly() {
    let topics = Topics::new("term", 2);
    topics.create();
    let (events, expected, _) = synthetic_setup(&topics, 500, 10);
    let args = ["--format", "ecs", "--aggregate-window", "0"];
    let mut worker = Worker::start(&topics, &args);
    produce_lines_keyed(&topics.events, &events);
    let mut seen = SightingLog::new(&topics.sightings);
    wait_until("every sighting", || {
        seen.poll(Duration::from_millis(200));
        seen.sighting_ids().len() >= expected.len()
    });
    let status = worker.terminate();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        worker.log_text()
    );
    assert!(
        worker.log_text().contains("stopped"),
        "{}",
        worker.log_text()
    );

    let _next = Worker::start(&topics, &args);
    let sentinel = (String::new(), ecs_event(100_000, "10.77.0.1"));
    produce_lines_keyed(&topics.events, &[sentinel]);
    wait_until("the sentinel's sighting", || {
        seen.poll(Duration::from_millis(200));
        seen.sighting_ids().len() > expected.len()
    });
    seen.poll(Duration::from_secs(2));
    assert_eq!(
        seen.duplicates(),
        0,
        "events were read again after a clean stop"
    );
}

/// The broker goes away in the middle of a stream and comes back: the
/// worker retries by itself and no sighting is lost.
#[test]
fn broker_outage_loses_nothing() {
    let mut broker = OwnBroker::start();
    use_brokers(&broker.address());
    let topics = Topics::new("outage", 2);
    topics.create();
    let (events, expected, _) = synthetic_setup(&topics, 2000, 25);
    let worker = Worker::start(&topics, &["--format", "ecs", "--aggregate-window", "0"]);
    let (first, second) = events.split_at(events.len() / 2);
    produce_lines_keyed(&topics.events, first);
    let mut seen = SightingLog::new(&topics.sightings);
    wait_until("sightings of the first half", || {
        seen.poll(Duration::from_millis(200));
        !seen.sighting_ids().is_empty()
    });

    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        worker.get("/health").0,
        200,
        "the worker survives the outage"
    );
    broker.restart();

    produce_lines_keyed(&topics.events, second);
    let mut seen = SightingLog::new(&topics.sightings);
    wait_until("every sighting after the outage", || {
        seen.poll(Duration::from_millis(500));
        seen.sighting_ids().len() >= expected.len()
    });
    assert_eq!(seen.sighting_ids(), expected);
}

/// Two workers in one group share the event partitions and together write
/// exactly the sightings one worker writes.
#[test]
fn two_workers_share_the_partitions() {
    let topics = Topics::new("pair", 4);
    topics.create();
    let (events, expected, _) = synthetic_setup(&topics, 1200, 30);

    let args = ["--format", "ecs", "--aggregate-window", "0"];
    let first = Worker::start(&topics, &args);
    let second = Worker::start(&topics, &args);
    // Wait for the group to settle with both members before producing.
    let assigned = |w: &Worker| metric_value(&w.metrics(), "sightline_assigned_partitions");
    wait_until("both workers assigned", || {
        assigned(&first) > 0.0 && assigned(&second) > 0.0
    });
    assert_eq!(assigned(&first) + assigned(&second), 4.0);
    produce_lines_keyed(&topics.events, &events);

    let mut seen = SightingLog::new(&topics.sightings);
    wait_until("every sighting", || {
        seen.poll(Duration::from_millis(500));
        seen.sighting_ids().len() >= expected.len()
    });
    seen.poll(Duration::from_secs(2));
    assert_eq!(seen.sighting_ids(), expected);
    assert_eq!(
        seen.duplicates(),
        0,
        "a message was matched by both workers"
    );
    let consumed = |w: &Worker| {
        let text = w.metrics();
        text.lines()
            .filter(|l| l.starts_with("sightline_events_consumed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (a, b) = (consumed(&first), consumed(&second));
    assert!(a > 0.0 && b > 0.0, "both workers consume: {a} and {b}");
    assert_eq!(a + b, events.len() as f64);
}

/// Produces the indicators of a synthetic feed to the test's topic;
/// returns its keyed events, the sighting ids `match` gives for them, and
/// the number of planted hits.
fn synthetic_setup(
    topics: &Topics,
    events: u64,
    indicators: u64,
) -> (Vec<(String, String)>, BTreeSet<String>, usize) {
    let (indicators, events, hits) = synthetic_feed(events, indicators);
    for object in &indicators {
        produce(
            &topics.indicators,
            Some(id_of(object)),
            Some(&object.to_string()),
        );
    }
    let expected = expected_sighting_ids(&indicators, &events);
    (events, expected, hits)
}

fn as_set(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(Value::to_string).collect()
}

fn id_of(object: &Value) -> &str {
    object["id"].as_str().unwrap_or_default()
}
