//! Helpers of the broker tests: topics per test, producing and reading
//! messages with rdkafka, and `sightline run` as a child process.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

thread_local! {
    /// A broker this test thread uses instead of the shared one.
    static OWN_BROKERS: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Makes the helpers of the calling test thread use `brokers`.
pub fn use_brokers(brokers: &str) {
    OWN_BROKERS.with(|own| *own.borrow_mut() = Some(brokers.to_string()));
}

/// The broker of the test run. Panics when none is configured: these
/// tests need one and must not pass without it.
pub fn brokers() -> String {
    if let Some(own) = OWN_BROKERS.with(|own| own.borrow().clone()) {
        return own;
    }
    std::env::var("SIGHTLINE_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "SIGHTLINE_TEST_BROKERS is not set: run the suite with .ci/test, which starts a \
             Kafka-protocol broker, or point it at one"
        )
    })
}

pub fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The topics and group of one test.
pub struct Topics {
    pub indicators: String,
    pub events: String,
    pub sightings: String,
    pub dead_letter: String,
    pub group: String,
    pub event_partitions: i32,
}

impl Topics {
    pub fn new(name: &str, event_partitions: i32) -> Topics {
        Topics {
            indicators: unique(&format!("{name}-indicators")),
            events: unique(&format!("{name}-events")),
            sightings: unique(&format!("{name}-sightings")),
            dead_letter: unique(&format!("{name}-dlq")),
            group: unique(&format!("{name}-group")),
            event_partitions,
        }
    }

    pub fn create(&self) {
        create_topics(&[
            (&self.indicators, 2, true),
            (&self.events, self.event_partitions, false),
            (&self.sightings, 2, true),
            (&self.dead_letter, 1, false),
        ]);
    }
}

/// Creates topics: (name, partitions, compacted).
pub fn create_topics(topics: &[(&str, i32, bool)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

fn producer() -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produces one message and waits for it to be written.
pub fn produce(topic: &str, key: Option<&str>, payload: Option<&str>) {
    produce_raw(topic, key.map(str::as_bytes), payload.map(str::as_bytes));
}

pub fn produce_raw(topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>) {
    let producer = producer();
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces each line of a file as one message (no key).
pub fn produce_lines(topic: &str, path: &str) {
    let text = std::fs::read_to_string(path).expect("read events");
    let lines: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (String::new(), l.to_string()))
        .collect();
    produce_lines_keyed(topic, &lines);
}

/// Produces `(key, value)` pairs in order; an empty key means none.
pub fn produce_lines_keyed(topic: &str, lines: &[(String, String)]) {
    let producer = producer();
    for (key, line) in lines {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(line.as_str());
        if !key.is_empty() {
            record = record.key(key.as_str());
        }
        let mut pending = Some(record);
        while let Some(record) = pending.take() {
            if let Err((_, record)) = producer.send(record) {
                std::thread::sleep(Duration::from_millis(5));
                pending = Some(record);
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Produces every STIX object of an indicator file, keyed by id.
pub fn produce_indicator_file(topic: &str, path: &str) {
    let text = std::fs::read_to_string(path).expect("read indicators");
    let bundle: Value = serde_json::from_str(&text).expect("indicator bundle");
    let objects = bundle["objects"].as_array().expect("bundle objects");
    let lines: Vec<(String, String)> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap_or("").to_string(), o.to_string()))
        .collect();
    produce_lines_keyed(topic, &lines);
}

/// An ECS connection event `n` (its time is `n` seconds into the day) to
/// `destination`.
pub fn ecs_event(n: u64, destination: &str) -> String {
    json!({
        "@timestamp": format!("2026-11-20T10:{:02}:{:02}.{:03}Z", (n / 60) % 60, n % 60, n / 3600 % 1000),
        "ecs": {"version": "8.11.0"},
        "event": {"kind": "event", "category": ["network"], "type": ["connection"]},
        "network": {"transport": "tcp"},
        "source": {"ip": "10.30.0.5", "port": 40000 + (n % 20000)},
        "destination": {"ip": destination, "port": 443}
    })
    .to_string()
}

pub fn produce_event(topic: &str, n: u64, destination: &str) {
    produce(topic, None, Some(&ecs_event(n, destination)));
}

/// An indicator object.
pub fn indicator(id: &str, pattern: &str, revoked: bool) -> Value {
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": id,
        "created": "2026-01-01T00:00:00.000Z",
        "modified": "2026-01-01T00:00:00.000Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00.000Z",
        "revoked": revoked
    })
}

/// `count` indicators on single addresses and `events` ECS events of which
/// every tenth hits one of them. Returns the indicators, the keyed event
/// lines and the number of hits.
pub fn synthetic_feed(events: u64, count: u64) -> (Vec<Value>, Vec<(String, String)>, usize) {
    let address = |i: u64| format!("10.77.{}.{}", i / 250, i % 250 + 1);
    let indicators = (0..count)
        .map(|i| {
            let id = format!("indicator--00000000-0000-4000-8000-{i:012x}");
            indicator(&id, &format!("[ipv4-addr:value = '{}']", address(i)), false)
        })
        .collect();
    let mut lines = Vec::new();
    let mut hits = 0;
    for n in 0..events {
        let destination = if n % 10 == 0 {
            hits += 1;
            address((n / 10) % count)
        } else {
            format!("172.16.{}.{}", n / 250 % 250, n % 250 + 1)
        };
        lines.push((format!("host-{}", n % 17), ecs_event(n, &destination)));
    }
    (indicators, lines, hits)
}

fn sightline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
}

/// Runs `sightline match` and returns the objects it writes.
pub fn match_output(args: &[&str]) -> Vec<Value> {
    let output = sightline()
        .arg("match")
        .args(args)
        .output()
        .expect("run sightline match");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("match output is JSON"))
        .collect()
}

/// The sighting ids `sightline match --no-aggregate` writes for these
/// indicators and events.
pub fn expected_sighting_ids(
    indicators: &[Value],
    events: &[(String, String)],
) -> BTreeSet<String> {
    let dir = std::env::temp_dir().join(unique("sightline-oracle"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let indicator_file = dir.join("indicators.json");
    let events_file = dir.join("events.jsonl");
    let bundle = json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000000", "objects": indicators});
    std::fs::write(&indicator_file, bundle.to_string()).expect("write indicators");
    let lines: Vec<&str> = events.iter().map(|(_, l)| l.as_str()).collect();
    std::fs::write(&events_file, lines.join("\n")).expect("write events");
    let objects = match_output(&[
        "--indicators",
        indicator_file.to_str().unwrap_or_default(),
        "--events",
        events_file.to_str().unwrap_or_default(),
        "--format",
        "ecs",
        "--no-aggregate",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    objects
        .iter()
        .filter(|o| o["type"] == "sighting")
        .map(|o| o["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).expect("JSON message")
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned()
    }
}

fn reader(topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&list).expect("assign");
    consumer
}

fn received(message: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let mut headers = BTreeMap::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned());
            headers.insert(header.key.to_string(), value.unwrap_or_default());
        }
    }
    Received {
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Reads a topic from the beginning until `count` messages arrived or
/// `timeout` passed.
pub fn consume(topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
    let consumer = reader(topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            out.push(received(&message));
        }
    }
    out
}

/// Follows the sightings topic, remembering every sighting read.
pub struct SightingLog {
    consumer: BaseConsumer,
    /// (sighting id, sighting_of_ref) of every sighting message.
    sightings: Vec<(String, String)>,
}

impl SightingLog {
    pub fn new(topic: &str) -> SightingLog {
        SightingLog {
            consumer: reader(topic),
            sightings: Vec::new(),
        }
    }

    pub fn poll(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(100)) {
                let object = received(&message).json();
                if object["type"] == "sighting" {
                    self.sightings.push((
                        object["id"].as_str().unwrap_or_default().to_string(),
                        object["sighting_of_ref"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
            }
        }
    }

    /// Distinct sightings of `indicator` read so far.
    pub fn count(&self, indicator: &str) -> usize {
        self.sightings
            .iter()
            .filter(|(_, of)| of == indicator)
            .map(|(id, _)| id)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Reads until `indicator` has `count` sightings or `timeout` passes.
    pub fn poll_for(&mut self, indicator: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count(indicator) >= count {
                return true;
            }
            self.poll(Duration::from_millis(200));
        }
        self.count(indicator) >= count
    }

    pub fn wait_for(&mut self, indicator: &str, count: usize) {
        assert!(
            self.poll_for(indicator, count, Duration::from_secs(60)),
            "{indicator} has {} sightings, expected {count}",
            self.count(indicator)
        );
    }

    pub fn sighting_ids(&self) -> BTreeSet<String> {
        self.sightings.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Sighting messages beyond the first of each id.
    pub fn duplicates(&self) -> usize {
        self.sightings.len() - self.sighting_ids().len()
    }
}

/// Repeats `attempt` until it holds, for at most two minutes.
pub fn wait_until(what: &str, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if attempt() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for: {what}");
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `sightline run` child process, killed when dropped.
pub struct Worker {
    child: Child,
    pub metrics_port: u16,
    log: PathBuf,
}

impl Worker {
    /// Starts a worker on the test's topics and waits until it is ready.
    pub fn start(topics: &Topics, extra: &[&str]) -> Worker {
        let port = free_port();
        let mut args: Vec<String> = ["run", "--brokers", &brokers(), "--group", &topics.group]
            .iter()
            .map(|a| a.to_string())
            .collect();
        for (flag, value) in [
            ("--indicators-topic", &topics.indicators),
            ("--events-topic", &topics.events),
            ("--sightings-topic", &topics.sightings),
            ("--dead-letter-topic", &topics.dead_letter),
        ] {
            args.extend([flag.to_string(), value.clone()]);
        }
        args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut worker = Worker::spawn(&args, port);
        worker.wait_ready();
        worker
    }

    /// Starts `sightline ARGS` whose metrics listen on `port`, without
    /// waiting.
    pub fn spawn(args: &[String], port: u16) -> Worker {
        let log = std::env::temp_dir().join(format!("{}.log", unique("sightline-worker")));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = sightline()
            .args(args)
            .env("SIGHTLINE_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start sightline run");
        Worker {
            child,
            metrics_port: port,
            log,
        }
    }

    /// Waits until `/ready` answers 200; fails when the worker exits.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("worker exited with {status}:\n{}", self.log_text());
            }
            if self.try_get("/ready").map(|(s, _)| s) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The exit status, once the process has ended within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to a minute for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed:\n{}", self.log_text()))
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("worker log:\n{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Parses `text` with the Prometheus project's own Python parser.
pub fn check_prometheus_text(text: &str) {
    let script = "import sys\n\
from prometheus_client.parser import text_string_to_metric_families\n\
families = list(text_string_to_metric_families(sys.stdin.read()))\n\
print(len(families))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = child.wait_with_output().expect("parser");
    assert!(
        output.status.success(),
        "metrics do not parse (is prometheus-client installed? .ci/test installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(families >= 10, "only {families} metric families parsed");
}

/// The value of the sample named exactly `name` (with its labels).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// A broker of a test's own (tansu, as `.ci/test` installs it), for tests
/// that stop and restart it. Its data survives a restart.
pub struct OwnBroker {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("sightline-own-broker"));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut broker = OwnBroker {
            child: None,
            dir,
            port,
        };
        broker.restart();
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker process (again) on the same port and data.
    pub fn restart(&mut self) {
        let url = format!("tcp://{}", self.address());
        let log = std::fs::File::create(self.dir.join("broker.log")).expect("broker log");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("tansu cannot run ({e}); .ci/test installs it"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not open port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the broker process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
