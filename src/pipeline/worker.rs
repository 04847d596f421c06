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
//! its memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, Producer as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::indicators::{self, FeedState};
use super::kafka::{PartitionKey, WorkerContext, client_config};
use super::output::{self, DeadLetter, Origin, Outgoing, Producer, capped};
use super::{Pipeline, PipelineConfig};
use crate::config::WorkerConfig;
use crate::matcher::Snapshot;
use crate::observe::decoder::{DecodeError, Decoder};
use crate::telemetry::{self, Metrics, Probe};

/// Most messages matched in one batch of a partition task.
const BATCH: usize = 256;
/// Batches of one partition waiting for acknowledgement, at most.
const ACK_QUEUE: usize = 64;
/// Longest pause between two attempts to deliver one message.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight messages.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

type EventConsumer = StreamConsumer<WorkerContext>;

/// What every partition task shares.
struct Shared {
    consumer: Arc<EventConsumer>,
    producer: Producer,
    metrics: Arc<Metrics>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    sightings_topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    /// Set once when the worker cannot go on without losing data.
    fault: tokio::sync::watch::Sender<Option<String>>,
}

impl Shared {
    /// Stops the worker with `reason`: nothing after this point stores an
    /// offset that a lost message would have needed, so a restart reads
    /// again from the last commit.
    fn fail(&self, reason: String) {
        tracing::error!(reason = %reason, "worker stopping on a fault");
        self.fault.send_if_modified(|fault| {
            if fault.is_none() {
                *fault = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// Why the dispatcher stopped.
enum Stop {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// A fault: the worker exits with an error.
    Fault(String),
}

/// One consumed event message, holding its in-flight permit.
struct Envelope {
    origin: Origin,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    received: Instant,
    permit: OwnedSemaphorePermit,
}

/// What one message produced, waiting for the broker.
struct Inflight {
    origin: Origin,
    received: Instant,
    deliveries: Vec<(Outgoing, Option<DeliveryFuture>)>,
    permit: OwnedSemaphorePermit,
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
    tasks: HashMap<PartitionKey, PartitionTask>,
    draining: Vec<JoinHandle<()>>,
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
            let message = tokio::select! {
                message = self.shared.consumer.recv() => message.map(|m| m.detach()),
                stopped = stop.as_mut() => return stopped,
            };
            // A rebalance runs inside `recv`: retire the tasks of revoked
            // partitions before this message picks its task.
            self.retire_revoked();
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "event consumer error");
                    continue;
                }
            };
            let topic = message.topic();
            self.shared
                .metrics
                .events_consumed
                .with_label_values(&[topic])
                .inc();
            self.shared.metrics.in_flight.inc();
            let envelope = Envelope {
                origin: Origin {
                    topic: Arc::from(topic),
                    partition: message.partition(),
                    offset: message.offset(),
                },
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                received: Instant::now(),
                permit,
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
            self.shared.metrics.in_flight.dec();
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

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

/// Matches one partition's messages in order and hands their outputs to
/// the acknowledgement task.
async fn partition_task(
    shared: Arc<Shared>,
    mut receiver: mpsc::Receiver<Envelope>,
    mut pipeline: Box<Pipeline>,
) {
    let (ack_sender, ack_receiver) = mpsc::channel::<Vec<Inflight>>(ACK_QUEUE);
    let acks = tokio::spawn(ack_task(Arc::clone(&shared), ack_receiver));
    let mut batch = Vec::with_capacity(BATCH);

    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let envelopes = std::mem::take(&mut batch);
        let snapshot = shared.snapshot.load_full();
        let worker = Arc::clone(&shared);
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let processed = process_batch(&worker, &mut pipeline, &snapshot, &envelopes);
            (pipeline, envelopes, processed)
        })
        .await;
        let Ok((returned, envelopes, processed)) = done else {
            shared.fail("matching panicked; the partition's messages will be read again".into());
            break;
        };
        pipeline = returned;
        shared
            .metrics
            .phase_seconds
            .with_label_values(&["match"])
            .observe(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut inflight = Vec::with_capacity(envelopes.len());
        for (envelope, outgoing) in envelopes.into_iter().zip(processed) {
            let mut deliveries = Vec::with_capacity(outgoing.len());
            for message in outgoing {
                match message.enqueue(&shared.producer).await {
                    Ok(delivery) => deliveries.push((message, Some(delivery))),
                    Err(e) if is_too_large(&e) => lost(&message, &e),
                    // Queued later by the acknowledgement task's retries.
                    Err(_) => deliveries.push((message, None)),
                }
            }
            inflight.push(Inflight {
                origin: envelope.origin,
                received: envelope.received,
                deliveries,
                permit: envelope.permit,
            });
        }
        shared
            .metrics
            .phase_seconds
            .with_label_values(&["produce"])
            .observe(started.elapsed().as_secs_f64());
        if ack_sender.send(inflight).await.is_err() {
            break;
        }
        batch = Vec::with_capacity(BATCH);
    }
    drop(ack_sender);
    let _ = acks.await;
}

/// Decodes and matches a batch; returns per message what to produce.
fn process_batch(
    shared: &Shared,
    pipeline: &mut Pipeline,
    snapshot: &Snapshot,
    envelopes: &[Envelope],
) -> Vec<Vec<Outgoing>> {
    let metrics = &shared.metrics;
    let before = pipeline.stats().clone();
    let windows_before = pipeline.stream().stats();
    let mut objects = Vec::new();
    let mut results = Vec::with_capacity(envelopes.len());

    for envelope in envelopes {
        let mut outgoing = Vec::new();
        let Some(payload) = &envelope.payload else {
            // An empty event (a tombstone on an event topic): nothing to do.
            results.push(outgoing);
            continue;
        };
        let text = match std::str::from_utf8(payload) {
            Ok(text) => text,
            Err(e) => {
                metrics
                    .decode_failures
                    .with_label_values(&["not_utf8"])
                    .inc();
                outgoing.push(dead_letter(
                    shared,
                    envelope,
                    "not_utf8",
                    format!("not UTF-8: {e}"),
                ));
                results.push(outgoing);
                continue;
            }
        };
        objects.clear();
        let errors = pipeline.process(snapshot, text, &mut objects);
        for object in objects.drain(..) {
            let id = object
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let is_sighting = object.get("type").and_then(|v| v.as_str()) == Some("sighting");
            let key = id.as_bytes().to_vec();
            match serde_json::to_vec(&object) {
                Ok(payload) => outgoing.push(Outgoing {
                    topic: Arc::clone(&shared.sightings_topic),
                    key: Some(key),
                    payload,
                    dead_letter: None,
                    is_sighting,
                }),
                Err(e) => tracing::error!(id, error = %e, "object could not be serialised"),
            }
        }
        if let Some(first) = errors.first() {
            for e in &errors {
                metrics
                    .decode_failures
                    .with_label_values(&[reason_label(e)])
                    .inc();
            }
            let reason = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            outgoing.push(dead_letter(shared, envelope, reason_label(first), reason));
        }
        results.push(outgoing);
    }

    let after = pipeline.stats();
    for (label, count) in &after.observations {
        let was = before.observations.get(label).copied().unwrap_or(0);
        if *count > was {
            metrics
                .observations
                .with_label_values(&[label])
                .inc_by(count - was);
        }
    }
    metrics.matches.inc_by(after.matches - before.matches);
    metrics.record_evictions(windows_before, pipeline.stream().stats());
    results
}

fn dead_letter(
    shared: &Shared,
    envelope: &Envelope,
    kind: &'static str,
    reason: String,
) -> Outgoing {
    tracing::warn!(
        topic = %envelope.origin.topic,
        partition = envelope.origin.partition,
        offset = envelope.origin.offset,
        reason = %reason,
        "event refused"
    );
    Outgoing {
        topic: Arc::clone(&shared.dead_letter_topic),
        key: envelope.key.clone(),
        payload: envelope.payload.clone().unwrap_or_default(),
        dead_letter: Some(DeadLetter {
            kind,
            reason: capped(reason),
            origin: envelope.origin.clone(),
        }),
        is_sighting: false,
    }
}

/// The metric label of a decode failure.
fn reason_label(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::Json(_) => "invalid_json",
        DecodeError::Stix(_) => "invalid_stix",
        DecodeError::Event(_) => "invalid_event",
        DecodeError::Unknown(_) => "unknown_format",
        DecodeError::NoObservedData => "no_observed_data",
    }
}

/// Awaits the deliveries of one partition in order, sends again what
/// failed, and stores each message's offset once all of its outputs are
/// acknowledged.
async fn ack_task(shared: Arc<Shared>, mut receiver: mpsc::Receiver<Vec<Inflight>>) {
    while let Some(batch) = receiver.recv().await {
        // Messages are acknowledged in order, so the batch's last offset
        // covers every message before it.
        let mut last: Option<Origin> = None;
        let mut finished = Vec::with_capacity(batch.len());
        for message in batch {
            let mut objects = 0u64;
            let mut sightings = 0u64;
            for (outgoing, delivery) in message.deliveries {
                match deliver(&shared, &outgoing, delivery).await {
                    Delivered::Written if outgoing.dead_letter.is_some() => shared
                        .metrics
                        .dead_letters
                        .with_label_values(&["events"])
                        .inc(),
                    Delivered::Written => {
                        objects += 1;
                        sightings += u64::from(outgoing.is_sighting);
                    }
                    Delivered::Lost => {}
                    Delivered::Fault(reason) => {
                        // No offset of this partition moves past the
                        // message: a restart reads it again.
                        shared.fail(reason);
                        return;
                    }
                }
            }
            shared.metrics.objects_produced.inc_by(objects);
            shared.metrics.sightings_produced.inc_by(sightings);
            last = Some(message.origin);
            finished.push((message.received, message.permit));
        }
        if let Some(origin) = last {
            let stored =
                shared
                    .consumer
                    .store_offset(&origin.topic, origin.partition, origin.offset);
            if let Err(e) = stored {
                // The partition moved to another worker, which reads these
                // messages again.
                tracing::debug!(
                    topic = %origin.topic,
                    partition = origin.partition,
                    error = %e,
                    "offset not stored"
                );
            }
        }
        for (received, permit) in finished {
            shared
                .metrics
                .processing_seconds
                .observe(received.elapsed().as_secs_f64());
            shared.metrics.in_flight.dec();
            drop(permit);
        }
    }
}

/// How one output ended.
enum Delivered {
    /// The broker acknowledged it.
    Written,
    /// The broker can never take it (too large); logged, not retried.
    Lost,
    /// The producer cannot go on (fatal or authorization error).
    Fault(String),
}

/// Waits for one delivery (or queues the message first), sending it again
/// after each failure that a retry can fix.
async fn deliver(
    shared: &Shared,
    outgoing: &Outgoing,
    mut delivery: Option<DeliveryFuture>,
) -> Delivered {
    let mut backoff = Duration::from_millis(100);
    loop {
        let error = match delivery.take() {
            Some(pending) => match pending.await {
                Ok(Ok(_)) => return Delivered::Written,
                Ok(Err((error, _))) => error,
                Err(_) => return Delivered::Fault("the producer closed before a delivery".into()),
            },
            None => match outgoing.enqueue(&shared.producer).await {
                Ok(pending) => {
                    delivery = Some(pending);
                    continue;
                }
                Err(error) => error,
            },
        };
        if is_too_large(&error) {
            lost(outgoing, &error);
            return Delivered::Lost;
        }
        if is_fatal(&error) {
            return Delivered::Fault(format!("topic {}: {error}", outgoing.topic));
        }
        shared.metrics.produce_retries.inc();
        tracing::warn!(topic = %outgoing.topic, error = %error, "delivery failed; sending again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Errors that make one message impossible to write.
fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

/// Errors after which the producer cannot write anything.
fn is_fatal(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}

fn lost(outgoing: &Outgoing, error: &KafkaError) {
    tracing::error!(
        topic = %outgoing.topic,
        key = %String::from_utf8_lossy(outgoing.key.as_deref().unwrap_or_default()),
        error = %error,
        "message refused by the broker and not written; an operator must act"
    );
}

/// Counts per label, for the summary of a run.
pub type Counts = BTreeMap<String, u64>;
