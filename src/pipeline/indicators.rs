//! The indicator feed: every worker reads all partitions of the indicator
//! topic from the beginning and keeps following it, applying new versions,
//! revocations, tombstones and expiry to its catalog and publishing each
//! batch as a new matcher snapshot.
//!
//! It runs on a thread of its own (compiling is CPU work). It reports
//! *caught up* once it has read every partition up to the high watermark
//! seen at start; the worker matches no event before that.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rdkafka::Message as _;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde_json::Value;

use super::kafka::{WorkerContext, client_config};
use super::output::{DeadLetter, Origin, Outgoing, Producer, capped};
use crate::config::WorkerConfig;
use crate::matcher::{Catalog, IndicatorError, Snapshot, Update};
use crate::stix::indicator::{IndicatorUpdate, document_objects, read_indicator};
use crate::stix::timestamp::Timestamp;
use crate::telemetry::Metrics;

/// Most messages applied in one snapshot while catching up, and after.
const CATCH_UP_BATCH: usize = 50_000;
const LIVE_BATCH: usize = 5_000;
/// Most message bytes held for one batch (kept for dead letters).
const MAX_BATCH_BYTES: usize = 64 << 20;
/// A batch at least this large is followed by returning freed memory to
/// the operating system (loads and catch-up, not live trickles).
const BULK_CHANGES: usize = 10_000;
/// Longest a read change waits before it is published.
const LIVE_DELAY: Duration = Duration::from_millis(200);
/// How often indicators past their `valid_until` are dropped.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Progress of the feed, as the worker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedState {
    /// Still reading the topic up to where it was at start.
    Loading,
    /// Caught up: events may be matched.
    Ready,
    /// The feed cannot go on (the reason is in the text).
    Failed(String),
}

/// Handles the feed thread shares with the worker.
pub struct Feed {
    /// The published snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set to stop the thread.
    pub stop: Arc<AtomicBool>,
    /// Progress.
    pub state: tokio::sync::watch::Receiver<FeedState>,
    /// The thread.
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the feed thread.
///
/// # Errors
///
/// When the consumer cannot be created (bad configuration) or the thread
/// cannot be spawned.
pub fn start(
    config: &WorkerConfig,
    context: WorkerContext,
    producer: Producer,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Feed> {
    let mut client = client_config(config, "indicators");
    // The raw properties come first here: what follows is not theirs to
    // change. No consumer group: every worker reads every partition from
    // the beginning and commits nothing. End-of-partition events tell
    // when a partition is read to its end even where the last offsets
    // hold no message (compacted away, or transaction markers).
    client
        .set("group.id", format!("{}-indicators-unused", config.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<WorkerContext> = client.create_with_context(context)?;

    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
    let stop = Arc::new(AtomicBool::new(false));
    let (state_tx, state) = tokio::sync::watch::channel(FeedState::Loading);
    let mut reader = Reader {
        consumer,
        producer,
        metrics,
        topic: Arc::from(config.indicators_topic.as_str()),
        dead_letter_topic: Arc::from(config.dead_letter_topic.as_str()),
        catalog: Catalog::new(),
        snapshot: Arc::clone(&snapshot),
        stop: Arc::clone(&stop),
        state: state_tx,
        ready_timeout: config.ready_timeout,
    };
    let thread = std::thread::Builder::new()
        .name("indicator-feed".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.run()));
            if outcome.is_err() {
                // The worker watches this state and stops: matching on a
                // snapshot nobody updates any more would be wrong.
                reader
                    .state
                    .send_replace(FeedState::Failed("indicator feed panicked".into()));
            }
        })?;
    Ok(Feed {
        snapshot,
        stop,
        state,
        thread,
    })
}

struct Reader {
    consumer: BaseConsumer<WorkerContext>,
    producer: Producer,
    metrics: Arc<Metrics>,
    topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    catalog: Catalog,
    snapshot: Arc<ArcSwap<Snapshot>>,
    stop: Arc<AtomicBool>,
    state: tokio::sync::watch::Sender<FeedState>,
    ready_timeout: Duration,
}

/// One change read from the topic, with the message it came from.
struct Pending {
    update: Update,
    message: usize,
}

/// A read message, kept for the dead-letter topic.
struct Kept {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    origin: Origin,
    /// What was refused in it: (reason label, reason).
    refused: Vec<(&'static str, String)>,
}

impl Reader {
    fn run(&mut self) {
        let started = Instant::now();
        let targets = match self.assign_all(started) {
            Ok(targets) => targets,
            Err(reason) => {
                tracing::error!(topic = %self.topic, reason = %reason, "indicator feed stopped");
                self.state.send_replace(FeedState::Failed(reason));
                return;
            }
        };
        let mut positions: HashMap<i32, i64> = HashMap::new();
        let mut at_end: HashSet<i32> = HashSet::new();
        let mut ready = false;
        let mut last_expiry = Instant::now();

        while !self.stop.load(Ordering::Acquire) {
            let (limit, delay) = if ready {
                (LIVE_BATCH, LIVE_DELAY)
            } else {
                (CATCH_UP_BATCH, Duration::from_secs(2))
            };
            let mut kept = Vec::new();
            let mut kept_bytes = 0;
            let mut pending = Vec::new();
            let batch_started = Instant::now();
            while pending.len() < limit
                && kept_bytes < MAX_BATCH_BYTES
                && batch_started.elapsed() < delay
            {
                let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                    break;
                };
                match result {
                    Ok(message) => {
                        positions.insert(message.partition(), message.offset() + 1);
                        kept_bytes += message.payload_len();
                        self.read(&message, &mut kept, &mut pending);
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        at_end.insert(partition);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "indicator read failed")
                    }
                }
            }
            if !pending.is_empty() {
                self.apply(pending, &mut kept);
            }
            self.send_refused(&kept);

            if !ready {
                let caught_up = targets.iter().all(|(partition, high)| {
                    at_end.contains(partition)
                        || positions.get(partition).copied().unwrap_or(0) >= *high
                });
                if caught_up {
                    ready = true;
                    tracing::info!(
                        topic = %self.topic,
                        indicators = self.catalog.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "indicator topic read to its end; matching starts"
                    );
                    self.state.send_replace(FeedState::Ready);
                } else if started.elapsed() > self.ready_timeout {
                    let reason = format!(
                        "indicator topic {} not read to its end within {} s",
                        self.topic,
                        self.ready_timeout.as_secs()
                    );
                    self.state.send_replace(FeedState::Failed(reason));
                    return;
                }
            }
            if last_expiry.elapsed() >= EXPIRY_INTERVAL {
                last_expiry = Instant::now();
                self.expire();
            }
        }
    }

    /// Assigns every partition from the beginning and returns the high
    /// watermark of each at this moment. Retries until the topic is known
    /// or the ready timeout passes.
    fn assign_all(&self, started: Instant) -> Result<Vec<(i32, i64)>, String> {
        loop {
            match self.targets() {
                Ok(targets) => {
                    let mut list = TopicPartitionList::new();
                    for (partition, _) in &targets {
                        list.add_partition_offset(&self.topic, *partition, Offset::Beginning)
                            .map_err(|e| e.to_string())?;
                    }
                    self.consumer.assign(&list).map_err(|e| e.to_string())?;
                    tracing::info!(
                        topic = %self.topic,
                        partitions = targets.len(),
                        messages = targets.iter().map(|(_, high)| high).sum::<i64>(),
                        "reading the indicator topic"
                    );
                    return Ok(targets);
                }
                Err(e) if started.elapsed() < self.ready_timeout => {
                    tracing::warn!(topic = %self.topic, error = %e, "indicator topic not available yet");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(format!("indicator topic {}: {e}", self.topic)),
            }
            if self.stop.load(Ordering::Acquire) {
                return Err("stopped".into());
            }
        }
    }

    fn targets(&self) -> Result<Vec<(i32, i64)>, KafkaError> {
        let timeout = Duration::from_secs(10);
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let Some(topic) = metadata.topics().first() else {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopic,
            ));
        };
        if let Some(e) = topic.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        let mut targets = Vec::new();
        for partition in topic.partitions() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition.id(), timeout)?;
            targets.push((partition.id(), high));
        }
        Ok(targets)
    }

    /// Turns one message into updates; what cannot be used becomes a dead
    /// letter.
    fn read(&self, message: &BorrowedMessage<'_>, kept: &mut Vec<Kept>, out: &mut Vec<Pending>) {
        let origin = Origin {
            topic: Arc::clone(&self.topic),
            partition: message.partition(),
            offset: message.offset(),
        };
        let key = message.key().map(<[u8]>::to_vec);
        let Some(payload) = message.payload() else {
            // A tombstone: the key names the indicator to forget.
            match key.as_deref().map(std::str::from_utf8) {
                Some(Ok(id)) => out.push(Pending {
                    update: Update::Remove(Arc::from(id)),
                    message: usize::MAX,
                }),
                _ => {
                    let reason = "tombstone without a UTF-8 key naming the indicator";
                    self.metrics
                        .indicators_rejected
                        .with_label_values(&["invalid_object"])
                        .inc();
                    self.dead_letter(&Kept {
                        key,
                        payload: Vec::new(),
                        origin,
                        refused: vec![("invalid_object", reason.into())],
                    });
                }
            }
            return;
        };
        let index = kept.len();
        kept.push(Kept {
            key,
            payload: payload.to_vec(),
            origin,
            refused: Vec::new(),
        });
        let document: Value = match serde_json::from_slice(payload) {
            Ok(document) => document,
            Err(e) => {
                let reason = format!("invalid JSON: {e}");
                return self.reject(&mut kept[index], "invalid_json", reason);
            }
        };
        for object in document_objects(&document) {
            match read_indicator(object) {
                None => {}
                Some(Ok(IndicatorUpdate::Upsert(record))) => out.push(Pending {
                    update: Update::Upsert(record),
                    message: index,
                }),
                Some(Ok(IndicatorUpdate::Revoke { id, modified })) => out.push(Pending {
                    update: Update::Revoke { id, modified },
                    message: index,
                }),
                Some(Ok(IndicatorUpdate::Skipped { id, reason })) => {
                    tracing::debug!(id = %id, reason = %reason, "indicator skipped");
                    self.metrics
                        .indicators_rejected
                        .with_label_values(&["unsupported_pattern_type"])
                        .inc();
                }
                Some(Err(e)) => self.reject(&mut kept[index], "invalid_object", e.to_string()),
            }
        }
    }

    /// Applies a batch and publishes the snapshot.
    fn apply(&mut self, pending: Vec<Pending>, kept: &mut [Kept]) {
        let started = Instant::now();
        let bulk = pending.len() >= BULK_CHANGES;
        let origins: Vec<usize> = pending.iter().map(|p| p.message).collect();
        let results = self.catalog.apply(pending.into_iter().map(|p| p.update));
        for (result, message) in results.into_iter().zip(origins) {
            match result {
                Ok(change) => self.metrics.record_change(change),
                Err(e) => {
                    let kind = match e {
                        IndicatorError::InvalidPattern { .. } => "invalid_pattern",
                        IndicatorError::TooLarge { .. } => "size_limit",
                    };
                    match kept.get_mut(message) {
                        Some(original) => self.reject(original, kind, e.to_string()),
                        None => tracing::warn!(error = %e, "indicator refused"),
                    }
                }
            }
        }
        self.publish(started);
        if bulk {
            crate::memory::release_freed();
        }
    }

    fn publish(&self, started: Instant) {
        let snapshot = self.catalog.snapshot();
        self.metrics.record_snapshot(&snapshot);
        self.metrics
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        let refused = self.catalog.merges_refused();
        let counted = self.metrics.segment_merges_refused.get();
        if refused > counted {
            self.metrics
                .segment_merges_refused
                .inc_by(refused - counted);
            tracing::warn!(
                refused,
                error = self.catalog.last_merge_error().unwrap_or_default(),
                "snapshot segments could not be merged; they stay apart"
            );
        }
        tracing::debug!(
            indicators = snapshot.len(),
            generation = snapshot.generation(),
            segments = snapshot.segment_count(),
            "snapshot published"
        );
        self.snapshot.store(snapshot);
    }

    /// Drops indicators whose validity ended.
    fn expire(&mut self) {
        let started = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = Timestamp::from_unix_nanos(since_epoch.as_nanos() as i128);
        let count = self.catalog.expire(now);
        if count > 0 {
            self.metrics
                .indicator_updates
                .with_label_values(&["expired"])
                .inc_by(count as u64);
            tracing::info!(count, "expired indicators dropped");
            self.publish(started);
        }
    }

    /// Counts a refused indicator (or message) and notes it on its
    /// message, which goes to the dead-letter topic once per batch.
    fn reject(&self, original: &mut Kept, kind: &'static str, reason: String) {
        self.metrics
            .indicators_rejected
            .with_label_values(&[kind])
            .inc();
        original.refused.push((kind, reason));
    }

    /// Sends one dead letter for each message with something refused.
    fn send_refused(&self, kept: &[Kept]) {
        for original in kept.iter().filter(|k| !k.refused.is_empty()) {
            self.dead_letter(original);
        }
    }

    fn dead_letter(&self, original: &Kept) {
        let kind = original
            .refused
            .first()
            .map_or("invalid_object", |(kind, _)| kind);
        let reasons: Vec<&str> = original.refused.iter().map(|(_, r)| r.as_str()).collect();
        let reason = capped(reasons.join("; "));
        tracing::warn!(
            topic = %original.origin.topic,
            partition = original.origin.partition,
            offset = original.origin.offset,
            refused = original.refused.len(),
            reason = %reason,
            "indicator message refused"
        );
        let letter = Outgoing {
            topic: Arc::clone(&self.dead_letter_topic),
            key: original.key.clone(),
            payload: original.payload.clone(),
            dead_letter: Some(DeadLetter {
                kind,
                reason,
                origin: original.origin.clone(),
            }),
            is_sighting: false,
        };
        // The indicator topic is re-read from the start on every restart,
        // so a lost dead letter comes again; no need to wait for the ack.
        match letter.enqueue_blocking(&self.producer, &self.stop) {
            Ok(_) => self
                .metrics
                .dead_letters
                .with_label_values(&["indicators"])
                .inc(),
            Err(e) => tracing::error!(error = %e, "dead letter could not be queued"),
        }
    }
}
