//! What the worker writes to Kafka: STIX objects to the sightings topic
//! (key = object id) and dead letters (the original bytes, with the reason
//! and origin in headers), through one idempotent producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::kafka::{WorkerContext, client_config};
use crate::config::WorkerConfig;

/// The producer type of a worker.
pub type Producer = FutureProducer<WorkerContext>;

/// Header names of a dead letter.
pub mod headers {
    /// Why the message could not be used, in words.
    pub const REASON: &str = "sightline-reason";
    /// The reason as a short label (the metric label).
    pub const KIND: &str = "sightline-reason-kind";
    /// Topic the message came from.
    pub const TOPIC: &str = "sightline-source-topic";
    /// Partition the message came from.
    pub const PARTITION: &str = "sightline-source-partition";
    /// Offset of the message.
    pub const OFFSET: &str = "sightline-source-offset";
}

/// Where a consumed message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A message to write, kept until the broker acknowledges it so that it
/// can be sent again.
pub struct Outgoing {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Vec<u8>,
    /// Dead-letter headers, if this is one.
    pub dead_letter: Option<DeadLetter>,
    /// A STIX sighting (counted as such once written).
    pub is_sighting: bool,
}

/// Why a message went to the dead-letter topic and where it came from.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Short label, e.g. `invalid_json`.
    pub kind: &'static str,
    /// The reason in words, with the position where there is one.
    pub reason: String,
    /// The message's origin.
    pub origin: Origin,
}

impl DeadLetter {
    fn headers(&self) -> OwnedHeaders {
        let partition = self.origin.partition.to_string();
        let offset = self.origin.offset.to_string();
        OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: headers::REASON,
                value: Some(self.reason.as_bytes()),
            })
            .insert(Header {
                key: headers::KIND,
                value: Some(self.kind.as_bytes()),
            })
            .insert(Header {
                key: headers::TOPIC,
                value: Some(self.origin.topic.as_bytes()),
            })
            .insert(Header {
                key: headers::PARTITION,
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: headers::OFFSET,
                value: Some(offset.as_bytes()),
            })
    }
}

/// Creates the worker's producer: idempotent, so retries neither reorder
/// nor duplicate within a session.
///
/// # Errors
///
/// When librdkafka refuses the configuration.
pub fn producer(config: &WorkerConfig, context: WorkerContext) -> Result<Producer, KafkaError> {
    let mut client = client_config(config, "producer");
    // librdkafka retries in order until the broker takes a message,
    // however long an outage lasts (a raw `message.timeout.ms` may set a
    // limit; the worker then sends again itself). Idempotence is not the
    // raw properties' to change: without it, retries could reorder.
    for (key, value) in [("linger.ms", "5"), ("message.timeout.ms", "0")] {
        if !config.properties.contains_key(key) {
            client.set(key, value);
        }
    }
    client.set("enable.idempotence", "true");
    client.create_with_context(context)
}

impl Outgoing {
    /// Hands the message to librdkafka, waiting while its queue is full.
    ///
    /// # Errors
    ///
    /// When the message cannot be queued for another reason (too large,
    /// unknown topic, fatal producer error).
    pub async fn enqueue(&self, producer: &Producer) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match producer.send_result(self.record()) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Like [`Outgoing::enqueue`], for threads outside the runtime.
    ///
    /// # Errors
    ///
    /// As [`Outgoing::enqueue`].
    /// Gives up with [`KafkaError::Canceled`] once `stop` is set.
    pub fn enqueue_blocking(
        &self,
        producer: &Producer,
        stop: &AtomicBool,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match producer.send_result(self.record()) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if stop.load(Ordering::Acquire) {
                        return Err(KafkaError::Canceled);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic).payload(self.payload.as_slice());
        if let Some(key) = &self.key {
            record = record.key(key.as_slice());
        }
        if let Some(letter) = &self.dead_letter {
            record = record.headers(letter.headers());
        }
        record
    }
}

/// Longest reason text put in a dead-letter header.
const MAX_REASON_BYTES: usize = 4096;

/// `reason`, cut at [`MAX_REASON_BYTES`] (on a character boundary) so
/// that many errors on one message cannot make its dead letter too large
/// for the broker.
pub fn capped(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(" (cut)");
    }
    reason
}
