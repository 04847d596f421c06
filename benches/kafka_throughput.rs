//! Kafka throughput of `sightline run` beside a plain consumer, on the same
//! topic and broker in the same run.
//!
//! ```console
//! $ cargo bench --bench kafka_throughput
//! ```
//!
//! Uses the broker in `SIGHTLINE_BENCH_BROKERS` (or
//! `SIGHTLINE_TEST_BROKERS`); without one it starts `tansu` (as `.ci/test`
//! installs it) on a free loopback port in a scratch directory.
//!
//! Workload: `SIGHTLINE_BENCH_EVENTS` ECS events (default 200,000) on one
//! topic of 4 partitions, 100,000 address indicators, 1% of the events hit.
//! Each round reads the whole topic once with a plain rdkafka consumer
//! (in a fresh group; it only touches each payload) and once with a
//! `sightline run` worker (in a fresh group: decode, match, produce
//! sightings, store offsets after acknowledgement), timed from the first
//! event consumed until the last is acknowledged. Three rounds,
//! alternating; medians and the ratio are printed.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};

#[path = "../tests/kafka_support/mod.rs"]
mod kafka_support;
use kafka_support::OwnBroker;

const INDICATORS: u64 = 100_000;
const PARTITIONS: i32 = 4;
const ROUNDS: usize = 3;

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench
    // means this one is not wanted.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with("--") && !"kafka_throughput".contains(a.as_str()))
    {
        return;
    }
    let events: u64 = std::env::var("SIGHTLINE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);

    let mut own_broker = None;
    let brokers = match std::env::var("SIGHTLINE_BENCH_BROKERS")
        .or_else(|_| std::env::var("SIGHTLINE_TEST_BROKERS"))
    {
        Ok(brokers) => brokers,
        Err(_) => {
            let broker = OwnBroker::start();
            let brokers = broker.address();
            own_broker = Some(broker);
            brokers
        }
    };

    let run = format!("bench-{}", std::process::id());
    let indicators_topic = format!("{run}-indicators");
    let events_topic = format!("{run}-events");
    create_topics(
        &brokers,
        &[(&indicators_topic, 2), (&events_topic, PARTITIONS)],
    );
    eprintln!("producing {INDICATORS} indicators and {events} events to {brokers}");
    produce(&brokers, &indicators_topic, (0..INDICATORS).map(indicator));
    produce(&brokers, &events_topic, (0..events).map(event));

    let mut raw = Vec::new();
    let mut worker = Vec::new();
    for round in 0..ROUNDS {
        let seconds = raw_consume(&brokers, &events_topic, &run, round, events);
        eprintln!(
            "round {round}: plain consumer {:.0} events/s",
            events as f64 / seconds
        );
        raw.push(seconds);
        let sightings = format!("{run}-sightings-{round}");
        create_topics(
            &brokers,
            &[(&sightings, 1), (&format!("{run}-dlq-{round}"), 1)],
        );
        let seconds = worker_consume(
            &brokers,
            &run,
            round,
            &indicators_topic,
            &events_topic,
            events,
        );
        eprintln!(
            "round {round}: sightline run {:.0} events/s",
            events as f64 / seconds
        );
        worker.push(seconds);
    }
    let raw = median(raw);
    let worker = median(worker);
    println!(
        "kafka_throughput: {events} events, {INDICATORS} indicators, {PARTITIONS} partitions, \
         median of {ROUNDS}"
    );
    println!("  plain consumer:  {:>9.0} events/s", events as f64 / raw);
    println!(
        "  sightline run:   {:>9.0} events/s",
        events as f64 / worker
    );
    println!("  ratio:           {:>9.2} (target >= 0.8)", raw / worker);
    drop(own_broker);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn address(i: u64) -> String {
    format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256)
}

fn indicator(i: u64) -> (String, String) {
    let id = format!("indicator--00000000-0000-4000-8000-{i:012x}");
    let object = serde_json::json!({
        "type": "indicator", "spec_version": "2.1", "id": id,
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
        "pattern": format!("[ipv4-addr:value = '{}']", address(i)),
        "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00.000Z"
    });
    (id, object.to_string())
}

/// An ECS connection event; every hundredth goes to an indicator's address.
fn event(n: u64) -> (String, String) {
    let destination = if n % 100 == 0 {
        address(n * 7919 % INDICATORS)
    } else {
        format!("172.{}.{}.{}", 16 + n / 65_536 % 16, n / 256 % 256, n % 256)
    };
    let line = serde_json::json!({
        "@timestamp": format!("2026-11-20T{:02}:{:02}:{:02}.{:03}Z",
            n / 3_600_000 % 24, n / 60_000 % 60, n / 1000 % 60, n % 1000),
        "ecs": {"version": "8.11.0"},
        "event": {"kind": "event", "category": ["network"], "type": ["connection"],
            "dataset": "network_traffic.flow", "duration": 1_250_000},
        "network": {"transport": "tcp", "type": "ipv4", "direction": "outbound"},
        "source": {"ip": format!("192.168.{}.{}", n / 256 % 256, n % 256), "port": 40_000 + n % 20_000,
            "bytes": 512},
        "destination": {"ip": destination, "port": 443, "bytes": 4096},
        "host": {"name": format!("ws-{}", n % 500)},
        "user": {"name": format!("user{}", n % 1000)}
    });
    (format!("ws-{}", n % 500), line.to_string())
}

fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for result in runtime
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

fn produce(brokers: &str, topic: &str, messages: impl Iterator<Item = (String, String)>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    for (key, value) in messages {
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
}

/// Longest a side may take to read the topic before the bench gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(600);

/// Seconds a plain consumer takes to read `count` messages, in a group of
/// its own for this round (a group that has read the topic before would
/// start at its end).
fn raw_consume(brokers: &str, topic: &str, run: &str, round: usize, count: u64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{run}-raw-{round}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut read = 0u64;
    let mut bytes = 0usize;
    let mut started = None;
    let began = Instant::now();
    while read < count {
        assert!(
            began.elapsed() < ROUND_LIMIT,
            "the plain consumer read {read} of {count} events in {ROUND_LIMIT:?}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            read += 1;
        }
    }
    std::hint::black_box(bytes);
    started.map_or(0.0, |s| s.elapsed().as_secs_f64())
}

/// Seconds a `sightline run` worker takes from its first event consumed
/// until `count` events are processed and acknowledged.
fn worker_consume(
    brokers: &str,
    run: &str,
    round: usize,
    indicators: &str,
    events: &str,
    count: u64,
) -> f64 {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args([
            "run",
            "--brokers",
            brokers,
            "--group",
            &format!("{run}-group-{round}"),
        ])
        .args(["--indicators-topic", indicators, "--events-topic", events])
        .args(["--sightings-topic", &format!("{run}-sightings-{round}")])
        .args(["--dead-letter-topic", &format!("{run}-dlq-{round}")])
        .args([
            "--format",
            "ecs",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("SIGHTLINE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("sightline run");
    let mut started = None;
    let began = Instant::now();
    let seconds = loop {
        std::thread::sleep(Duration::from_millis(20));
        if began.elapsed() > ROUND_LIMIT {
            let _ = child.kill();
            panic!("sightline run did not process {count} events in {ROUND_LIMIT:?}");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sightline run exited: {status}");
        }
        let Some(metrics) = get_metrics(port) else {
            continue;
        };
        let consumed = sample(&metrics, "sightline_events_consumed_total{");
        let done = sample(&metrics, "sightline_processing_seconds_count");
        if consumed > 0.0 {
            started.get_or_insert_with(Instant::now);
        }
        if done >= count as f64 {
            break started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    seconds
}

fn get_metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Sum of the samples whose name (with labels) starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
