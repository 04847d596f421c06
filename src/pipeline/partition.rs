//! One event partition's work, in order: a task matches batches of
//! messages off the async reactor and queues their outputs on the
//! producer; its acknowledgement task awaits every delivery in order and
//! only then stores the batch's last offset and releases the in-flight
//! permits. A fault (an output that can never be written for a reason
//! other than its size, a matching panic) stops the worker instead of
//! storing an offset past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::IntGauge;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::DeliveryFuture;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::Pipeline;
use super::kafka::WorkerContext;
use super::output::{DeadLetter, Origin, Outgoing, Producer, capped};
use crate::matcher::Snapshot;
use crate::observe::decoder::DecodeError;
use crate::telemetry::Metrics;

/// Most messages matched in one batch of a partition task.
pub(super) const BATCH: usize = 256;
/// Batches of one partition waiting for acknowledgement, at most.
const ACK_QUEUE: usize = 64;
/// Longest pause between two attempts to deliver one message.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The event consumer of a worker.
pub(super) type EventConsumer = StreamConsumer<WorkerContext>;

/// What every partition task shares.
pub(super) struct Shared {
    pub(super) consumer: Arc<EventConsumer>,
    pub(super) producer: Producer,
    pub(super) metrics: Arc<Metrics>,
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) sightings_topic: Arc<str>,
    pub(super) dead_letter_topic: Arc<str>,
    /// Set once when the worker cannot go on without losing data.
    pub(super) fault: tokio::sync::watch::Sender<Option<String>>,
}

impl Shared {
    /// Stops the worker with `reason`: nothing after this point stores an
    /// offset that a lost message would have needed, so a restart reads
    /// again from the last commit.
    pub(super) fn fail(&self, reason: String) {
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

/// One consumed event message, holding its in-flight permits.
pub(super) struct Envelope {
    pub(super) origin: Origin,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) received: Instant,
    pub(super) permit: Permits,
}

/// What one message holds of the in-flight limits until its outputs are
/// acknowledged: one message, and its bytes. Dropping it, on whatever
/// path, gives both back and updates the in-flight gauges.
pub(super) struct Permits {
    _message: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    size: i64,
    messages_gauge: IntGauge,
    bytes_gauge: IntGauge,
}

impl Permits {
    /// Permits for a message of `size` bytes, counted in `metrics`.
    pub(super) fn new(
        message: OwnedSemaphorePermit,
        bytes: OwnedSemaphorePermit,
        size: usize,
        metrics: &Metrics,
    ) -> Permits {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        metrics.in_flight.inc();
        metrics.in_flight_bytes.add(size);
        Permits {
            _message: message,
            _bytes: bytes,
            size,
            messages_gauge: metrics.in_flight.clone(),
            bytes_gauge: metrics.in_flight_bytes.clone(),
        }
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.messages_gauge.dec();
        self.bytes_gauge.sub(self.size);
    }
}

/// What one message produced, waiting for the broker.
struct Inflight {
    origin: Origin,
    received: Instant,
    deliveries: Vec<(Outgoing, Option<DeliveryFuture>)>,
    permit: Permits,
}

/// Matches one partition's messages in order and hands their outputs to
/// the acknowledgement task.
pub(super) async fn partition_task(
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
    metrics
        .observations_screened
        .inc_by(after.screened - before.screened);
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
