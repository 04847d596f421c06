//! librdkafka glue shared by the worker's parts: client settings, log
//! routing into tracing, consumer lag from statistics, and the rebalance
//! hooks that commit offsets before partitions move.

use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;

/// Settings every client of a worker shares: the brokers and the raw
/// properties of the config (which may override any default set here).
pub fn client_config(config: &WorkerConfig, role: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", format!("sightline-{role}"))
        .set_log_level(RDKafkaLogLevel::Info);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// A partition of a topic.
pub type PartitionKey = (Arc<str>, i32);

/// Context of every client: logs into tracing, lag into metrics, and for
/// the event consumer, commits on revocation and reports partitions
/// revoked to the dispatcher. Clones share the revoked list.
#[derive(Clone)]
pub struct WorkerContext {
    metrics: Arc<Metrics>,
    /// Partitions revoked since the dispatcher last looked.
    revoked: Arc<Mutex<Vec<PartitionKey>>>,
}

impl WorkerContext {
    /// A context recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> WorkerContext {
        WorkerContext {
            metrics,
            revoked: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Takes the partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<PartitionKey> {
        match self.revoked.lock() {
            Ok(mut revoked) => std::mem::take(&mut *revoked),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl ClientContext for WorkerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "rdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "rdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "rdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "rdkafka", facility, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                // librdkafka reports an internal partition -1, and -1 lag
                // for partitions it does not consume.
                if *partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .with_label_values(&[name.as_str(), &partition.to_string()])
                    .set(stats.consumer_lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker outages surface here; librdkafka keeps reconnecting. A
        // failed connection is already in librdkafka's own log line, so
        // it is repeated only at debug level; the end of a partition is
        // news, not an error.
        use rdkafka::types::RDKafkaErrorCode;
        let quiet = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::PartitionEOF)
        );
        if quiet {
            tracing::debug!(target: "rdkafka", error = %error, "{reason}");
        } else {
            tracing::warn!(target: "rdkafka", error = %error, "{reason}");
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        // Offsets stored so far belong to sightings already acknowledged:
        // commit them before another worker takes the partitions over.
        // After a lost assignment (session timeout) the commit would be
        // refused: the partitions already belong to another member.
        if partitions.count() > 0 && !consumer.assignment_lost() {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit before revocation failed"),
            }
        }
        let keys = partition_keys(partitions);
        for (topic, partition) in &keys {
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[&**topic, &partition.to_string()]);
        }
        tracing::info!(partitions = ?keys, "partitions revoked");
        match self.revoked.lock() {
            Ok(mut revoked) => revoked.extend(keys),
            Err(poisoned) => poisoned.into_inner().extend(keys),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Ok(assignment) = consumer.assignment() {
            self.metrics
                .assigned_partitions
                .set(assignment.count() as i64);
        }
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = ?partition_keys(partitions), "partitions assigned")
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::trace!("offsets committed"),
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }
}

fn partition_keys(list: &TopicPartitionList) -> Vec<PartitionKey> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}
