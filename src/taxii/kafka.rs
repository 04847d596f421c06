//! Kafka ends of the TAXII commands: `pull` writes indicators to the
//! indicators topic (key = id, so compaction keeps each newest version),
//! and `serve` fills its store from the sightings topic.
//!
//! Extra librdkafka properties (SASL, SSL) come from the environment, as
//! for `sightline run`: `SIGHTLINE_KAFKA__<NAME>`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use serde_json::Value;

use super::ingest::IngestReport;
use super::sink::{IndicatorSink, SinkError};
use super::store::{Store, StoreError};
use crate::stix::indicator::document_objects;

/// Objects stored per batch when reading the sightings topic.
const BATCH_OBJECTS: usize = 1000;

/// A client configuration for `brokers`, with `SIGHTLINE_KAFKA__*`
/// properties from the environment.
fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in std::env::vars() {
        if let Some(property) = name.strip_prefix("SIGHTLINE_KAFKA__") {
            config.set(property.to_ascii_lowercase().replace('_', "."), value);
        }
    }
    config
}

/// Counts deliveries that failed, and keeps the last reason.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The producer's context: a shared [`Deliveries`].
#[derive(Clone, Default)]
struct DeliveryLog(Arc<Deliveries>);

impl rdkafka::ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.0.last_error.lock() {
                *last = Some(error.to_string());
            }
        }
    }
}

/// Writes pulled objects to the indicators topic.
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryLog>,
    deliveries: DeliveryLog,
    topic: String,
}

impl KafkaSink {
    /// A sink writing to `topic` on `brokers` with an idempotent producer.
    ///
    /// # Errors
    ///
    /// When librdkafka refuses the configuration.
    pub fn new(brokers: &str, topic: &str) -> Result<KafkaSink, SinkError> {
        let deliveries = DeliveryLog::default();
        let producer = client(brokers)
            .set("enable.idempotence", "true")
            .set("client.id", "sightline-taxii-pull")
            .create_with_context(deliveries.clone())
            .map_err(|e| SinkError::Unavailable(format!("kafka producer: {e}")))?;
        Ok(KafkaSink {
            producer,
            deliveries,
            topic: topic.to_string(),
        })
    }
}

impl IndicatorSink for KafkaSink {
    fn write(&mut self, objects: &[Value]) -> Result<(), SinkError> {
        for object in objects {
            let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
            let payload = object.to_string();
            let mut record = BaseRecord::to(&self.topic).key(id).payload(&payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        return Err(SinkError::Unavailable(format!(
                            "topic {}: cannot queue {id}: {e}",
                            self.topic
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(|e| SinkError::Unavailable(format!("topic {}: flush: {e}", self.topic)))?;
        let failed = self.deliveries.0.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let reason = self
                .deliveries
                .0
                .last_error
                .lock()
                .ok()
                .and_then(|last| last.clone())
                .unwrap_or_default();
            return Err(SinkError::Unavailable(format!(
                "topic {}: {failed} objects not delivered ({reason})",
                self.topic
            )));
        }
        Ok(())
    }
}

/// Why reading the sightings topic stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The consumer could not be set up.
    #[error("kafka consumer for {topic}: {cause}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        cause: KafkaError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads `topic` into the store until `stop` is set, in consumer group
/// `group`; offsets are committed after each stored batch, so a restart
/// goes on where the last one stopped (the store ignores any repeat).
///
/// # Errors
///
/// When the consumer cannot be created or the store cannot be written.
pub fn follow_topic(
    store: &mut Store,
    brokers: &str,
    topic: &str,
    group: &str,
    stop: &AtomicBool,
) -> Result<IngestReport, TopicError> {
    let kafka = |cause| TopicError::Kafka {
        topic: topic.to_string(),
        cause,
    };
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", group)
        .set("client.id", "sightline-taxii-serve")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka)?;
    consumer.subscribe(&[topic]).map_err(kafka)?;

    let mut report = IngestReport::default();
    let mut pending: Vec<Value> = Vec::new();
    let mut started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            match result {
                Ok(message) => match message.payload().map(serde_json::from_slice::<Value>) {
                    Some(Ok(doc)) => pending.extend(document_objects(&doc).into_iter().cloned()),
                    Some(Err(e)) => {
                        report.unreadable += 1;
                        tracing::warn!(
                            topic,
                            partition = message.partition(),
                            offset = message.offset(),
                            error = %e,
                            "sightings message is not JSON"
                        );
                    }
                    // A tombstone: the store keeps history, nothing to do.
                    None => {}
                },
                Err(e) => tracing::warn!(topic, error = %e, "sightings topic read failed"),
            }
        }
        let due = started.elapsed() >= Duration::from_millis(500);
        if pending.len() >= BATCH_OBJECTS || (due && !pending.is_empty()) {
            let batch = store.insert(&pending)?;
            report.stored.added += batch.added;
            report.stored.duplicates += batch.duplicates;
            report.stored.refused += batch.refused;
            pending.clear();
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(topic, error = %e, "offset commit failed"),
            }
        }
        if due {
            started = Instant::now();
        }
    }
    if !pending.is_empty() {
        let batch = store.insert(&pending)?;
        report.stored.added += batch.added;
        report.stored.duplicates += batch.duplicates;
        report.stored.refused += batch.refused;
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    Ok(report)
}
