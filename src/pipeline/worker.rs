//! The event side of a worker: a consumer group over the event topics, one
//! task per assigned partition (order kept within a partition, partitions
//! in parallel), matching off the async reactor, and an offset stored only
//! once the broker has acknowledged every message its event produced.
//!
//! ```text
//! consumer ──► dispatcher ──► partition task ──► ack task ──► store offset
//!              (in-flight     (batch: decode,     (await each
//!               permits)       match, enqueue)     delivery, in order)
//! ```
//!
//! In-flight messages are bounded by a semaphore: reading stops while the
//! limit is reached, so a slow broker slows the worker instead of growing
//! its memory. This file starts the worker and dispatches; the partition
//! and acknowledgement tasks are in `partition.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use prometheus::IntCounter;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::indicators::{self, FeedState};
use super::kafka::{PartitionKey, WorkerContext, client_config};
use super::output::{self, Origin};
use super::partition::{BATCH, Envelope, EventConsumer, Permits, Shared, partition_task};
use super::{Pipeline, PipelineConfig};
use crate::config::WorkerConfig;
use crate::observe::decoder::Decoder;
use crate::telemetry::{self, Metrics, Probe};

/// How long shutdown waits for in-flight messages.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the dispatcher stopped.
enum Stop {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// A fault: the worker exits with an error.
    Fault(String),
}

/// A running partition task.
struct PartitionTask {
    sender: mpsc::Sender<Envelope>,
    handle: JoinHandle<()>,
}

/// Runs a worker until SIGTERM or Ctrl-C: metrics endpoint, indicator
/// feed, then the event consumer.
///
/// # Errors
///
/// When the configuration is refused by librdkafka, a mapping cannot be
/// read, the metrics address cannot be bound, or the indicator topic
/// cannot be read to its end in time.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let probe = Probe::new(Arc::clone(&metrics));
    let bound = telemetry::serve(config.metrics_addr, probe.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.metrics_addr))?;
    tracing::info!(addr = %bound, "metrics, health and readiness endpoint up");
    tracing::info!(config = ?config, "starting worker");

    let decoders = decoders(&config)?;
    let context = WorkerContext::new(Arc::clone(&metrics));
    let producer = output::producer(&config, context.clone())?;
    let mut feed = indicators::start(
        &config,
        context.clone(),
        producer.clone(),
        Arc::clone(&metrics),
    )?;

    let mut signal = std::pin::pin!(shutdown_signal());
    let loaded = tokio::select! {
        state = feed.state.wait_for(|s| *s != FeedState::Loading) => {
            state.map(|s| s.clone()).unwrap_or(FeedState::Failed("indicator feed ended".into()))
        }
        () = &mut signal => FeedState::Loading,
    };
    match loaded {
        FeedState::Ready => {}
        FeedState::Loading => {
            stop_feed(feed).await;
            return Ok(());
        }
        FeedState::Failed(reason) => {
            stop_feed(feed).await;
            bail!("{reason}");
        }
    }
    probe.set_ready(true);

    let consumer = Arc::new(event_consumer(&config, context.clone())?);
    let topics: Vec<&str> = config.events.iter().map(|e| e.topic.as_str()).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("cannot subscribe to {topics:?}"))?;
    tracing::info!(topics = ?topics, group = %config.group, "consuming events");

    let shared = Arc::new(Shared {
        consumer: Arc::clone(&consumer),
        producer: producer.clone(),
        metrics: Arc::clone(&metrics),
        snapshot: Arc::clone(&feed.snapshot),
        sightings_topic: Arc::from(config.sightings_topic.as_str()),
        dead_letter_topic: Arc::from(config.dead_letter_topic.as_str()),
        fault: tokio::sync::watch::Sender::new(None),
    });
    let mut faults = shared.fault.subscribe();
    let mut feed_state = feed.state.clone();
    let mut stop = std::pin::pin!(async move {
        tokio::select! {
            () = signal => Stop::Signal,
            fault = faults.wait_for(Option::is_some) => Stop::Fault(
                fault.ok().and_then(|f| f.clone()).unwrap_or_default()
            ),
            state = feed_state.wait_for(|s| matches!(s, FeedState::Failed(_))) => Stop::Fault(
                match state.as_deref() {
                    Ok(FeedState::Failed(reason)) => reason.clone(),
                    _ => "indicator feed ended".into(),
                }
            ),
        }
    });
    let pipeline_config = PipelineConfig {
        sensor_name: config.sensor_name.clone(),
        aggregate_window_nanos: (config.aggregate_window_seconds > 0)
            .then(|| i128::from(config.aggregate_window_seconds) * 1_000_000_000),
        ..PipelineConfig::default()
    };
    let mut dispatcher = Dispatcher {
        shared,
        context,
        decoders,
        pipeline_config,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        in_flight_kib: Arc::new(Semaphore::new(kib(config.max_in_flight_bytes))),
        in_flight_kib_limit: kib(config.max_in_flight_bytes),
        topics: config
            .events
            .iter()
            .map(|e| {
                let handle = TopicHandle {
                    name: Arc::from(e.topic.as_str()),
                    consumed: metrics
                        .events_consumed
                        .with_label_values(&[e.topic.as_str()]),
                };
                (e.topic.clone(), handle)
            })
            .collect(),
        tasks: HashMap::new(),
        draining: Vec::new(),
    };
    let stopped = dispatcher.run(&mut stop).await;

    tracing::info!("shutting down: finishing in-flight messages");
    dispatcher.drain().await;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
    }
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "producer flush failed at shutdown");
    }
    stop_feed(feed).await;
    if let Stop::Fault(reason) = stopped {
        bail!("{reason}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn stop_feed(feed: indicators::Feed) {
    feed.stop.store(true, std::sync::atomic::Ordering::Release);
    let thread = feed.thread;
    let joined = tokio::task::spawn_blocking(move || thread.join());
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        tracing::warn!("indicator feed did not stop within 10 s");
    }
}

/// The decoder of each event topic, built once so that a bad mapping file
/// stops the worker at start rather than at the first event.
fn decoders(config: &WorkerConfig) -> anyhow::Result<HashMap<String, Decoder>> {
    let mut decoders = HashMap::new();
    for topic in &config.events {
        let format = topic.format.as_deref().unwrap_or("auto");
        let decoder = crate::cli::decoder(format, topic.mapping.as_deref())
            .with_context(|| format!("event topic {}", topic.topic))?;
        decoders.insert(topic.topic.clone(), decoder);
    }
    Ok(decoders)
}

fn event_consumer(
    config: &WorkerConfig,
    context: WorkerContext,
) -> Result<EventConsumer, KafkaError> {
    let mut client = client_config(config, "events");
    // Defaults the raw properties (applied by `client_config`) may not
    // have set; then what at-least-once depends on, which they may not
    // change: offsets are stored by hand once outputs are acknowledged.
    for (key, value) in [
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("auto.commit.interval.ms", "1000"),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "5000"),
    ] {
        if !config.properties.contains_key(key) {
            client.set(key, value);
        }
    }
    client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    client.create_with_context(context)
}

/// Reads messages and hands them to their partition's task.
struct Dispatcher {
    shared: Arc<Shared>,
    context: WorkerContext,
    decoders: HashMap<String, Decoder>,
    pipeline_config: PipelineConfig,
    in_flight: Arc<Semaphore>,
    /// The byte budget of messages in flight, in KiB permits.
    in_flight_kib: Arc<Semaphore>,
    /// The permits `in_flight_kib` started with.
    in_flight_kib_limit: usize,
    topics: HashMap<String, TopicHandle>,
    tasks: HashMap<PartitionKey, PartitionTask>,
    draining: Vec<JoinHandle<()>>,
}

/// `bytes` in KiB permits, rounded up (at least one).
fn kib(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(usize::MAX)
}

impl Dispatcher {
    async fn run(&mut self, stop: &mut std::pin::Pin<&mut impl Future<Output = Stop>>) -> Stop {
        loop {
            self.draining.retain(|handle| !handle.is_finished());
            let permit = tokio::select! {
                permit = Arc::clone(&self.in_flight).acquire_owned() => permit,
                stopped = stop.as_mut() => return stopped,
            };
            let Ok(permit) = permit else {
                return Stop::Fault("in-flight limit closed".into());
            };
            let read = tokio::select! {
                message = self.shared.consumer.recv() => {
                    message.map(|m| read_message(&self.topics, &self.shared.metrics, &m))
                }
                stopped = stop.as_mut() => return stopped,
            };
            // A rebalance runs inside `recv`: retire the tasks of revoked
            // partitions before this message picks its task.
            self.retire_revoked();
            let (origin, key, payload) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "event consumer error");
                    continue;
                }
            };
            // The byte budget is taken once the size is known, so one
            // message may arrive past it; a message larger than the whole
            // budget takes all of it and goes alone.
            let size = key.as_ref().map_or(0, Vec::len) + payload.as_ref().map_or(0, Vec::len);
            let wanted = kib(size as u64).min(self.in_flight_kib_limit) as u32;
            let bytes = tokio::select! {
                bytes = Arc::clone(&self.in_flight_kib).acquire_many_owned(wanted) => bytes,
                stopped = stop.as_mut() => return stopped,
            };
            let Ok(bytes) = bytes else {
                return Stop::Fault("in-flight byte limit closed".into());
            };
            let envelope = Envelope {
                origin,
                key,
                payload,
                received: Instant::now(),
                permit: Permits::new(permit, bytes, size, &self.shared.metrics),
            };
            tokio::select! {
                () = self.dispatch(envelope) => {}
                stopped = stop.as_mut() => return stopped,
            }
        }
    }

    fn retire_revoked(&mut self) {
        for key in self.context.take_revoked() {
            if let Some(task) = self.tasks.remove(&key) {
                self.draining.push(task.handle);
            }
        }
    }

    async fn dispatch(&mut self, envelope: Envelope) {
        let key: PartitionKey = (
            Arc::clone(&envelope.origin.topic),
            envelope.origin.partition,
        );
        let task = match self.tasks.get(&key) {
            Some(task) if !task.sender.is_closed() => task,
            _ => {
                let decoder = self.decoders.get(&*key.0).cloned().unwrap_or(Decoder::Stix);
                let pipeline = Pipeline::new(decoder, &self.pipeline_config);
                let (sender, receiver) = mpsc::channel(BATCH * 4);
                let handle = tokio::spawn(partition_task(
                    Arc::clone(&self.shared),
                    receiver,
                    Box::new(pipeline),
                ));
                tracing::debug!(topic = %key.0, partition = key.1, "partition task started");
                self.tasks
                    .entry(key.clone())
                    .insert_entry(PartitionTask { sender, handle })
                    .into_mut()
            }
        };
        if task.sender.send(envelope).await.is_err() {
            // The task ended without being closed: its queued messages were
            // never acknowledged, so their offsets must not be passed.
            self.shared.fail(format!(
                "the task of {} partition {} ended unexpectedly",
                key.0, key.1
            ));
        }
    }

    /// Closes every partition task and waits for its acknowledgements.
    async fn drain(&mut self) {
        let mut handles: Vec<JoinHandle<()>> = self.draining.drain(..).collect();
        handles.extend(self.tasks.drain().map(|(_, task)| task.handle));
        let all = futures_join(handles);
        if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
            tracing::warn!(
                seconds = DRAIN_TIMEOUT.as_secs(),
                "in-flight messages not acknowledged in time; they will be read again"
            );
        }
    }
}

/// An event topic's name and consumed-messages counter, looked up once.
struct TopicHandle {
    name: Arc<str>,
    consumed: IntCounter,
}

/// Copies what the pipeline needs out of a consumed message, and counts it.
fn read_message(
    topics: &HashMap<String, TopicHandle>,
    metrics: &Metrics,
    message: &BorrowedMessage<'_>,
) -> (Origin, Option<Vec<u8>>, Option<Vec<u8>>) {
    let topic = match topics.get(message.topic()) {
        Some(handle) => {
            handle.consumed.inc();
            Arc::clone(&handle.name)
        }
        None => {
            metrics
                .events_consumed
                .with_label_values(&[message.topic()])
                .inc();
            Arc::from(message.topic())
        }
    };
    let origin = Origin {
        topic,
        partition: message.partition(),
        offset: message.offset(),
    };
    (
        origin,
        message.key().map(<[u8]>::to_vec),
        message.payload().map(<[u8]>::to_vec),
    )
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}
