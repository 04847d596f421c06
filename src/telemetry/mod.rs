//! Metrics and probes of the Kafka workers: every metric is defined here,
//! and [`serve`] answers `/metrics`, `/health` and `/ready` over HTTP.
//!
//! Labels are bounded sets (topic, format, reason, kind): never an
//! indicator id, a value from an event, or an error text.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::matcher::{Change, Snapshot, StreamStats};

/// Every metric of one worker process.
pub struct Metrics {
    registry: Registry,
    /// Messages consumed from event topics, by topic.
    pub events_consumed: IntCounterVec,
    /// Observations decoded, by format label.
    pub observations: IntCounterVec,
    /// Documents or observations that could not be decoded, by reason.
    pub decode_failures: IntCounterVec,
    /// Messages written to the dead-letter topic, by source.
    pub dead_letters: IntCounterVec,
    /// Live indicators, by kind (stateless, stateful).
    pub indicators_active: IntGaugeVec,
    /// Pattern leaves, by anchor (exact, verified, unanchored).
    pub pattern_leaves: IntGaugeVec,
    /// Indicator changes applied, by change.
    pub indicator_updates: IntCounterVec,
    /// Indicators refused, by reason.
    pub indicators_rejected: IntCounterVec,
    /// Matches found.
    pub matches: IntCounter,
    /// Observations not built: screening found nothing an indicator
    /// looks for in their events.
    pub observations_screened: IntCounter,
    /// Sighting objects acknowledged by the broker.
    pub sightings_produced: IntCounter,
    /// STIX objects acknowledged by the broker.
    pub objects_produced: IntCounter,
    /// Per event message: receipt until its outputs are acknowledged and
    /// its offset stored.
    pub processing_seconds: Histogram,
    /// Consumer lag in messages, by topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Time to apply a batch of indicator changes and publish a snapshot.
    pub snapshot_build_seconds: Histogram,
    /// Live indicators in the published snapshot.
    pub snapshot_indicators: IntGauge,
    /// Generation of the published snapshot.
    pub snapshot_generation: IntGauge,
    /// Segments of the published snapshot.
    pub snapshot_segments: IntGauge,
    /// Merges of segments refused because the merged segment would
    /// exceed a size limit.
    pub segment_merges_refused: IntCounter,
    /// Observations dropped from stream windows, by reason.
    pub window_evictions: IntCounterVec,
    /// 1 once the indicator topic was read to its end.
    pub ready: IntGauge,
    /// Event messages being processed or awaiting acknowledgement.
    pub in_flight: IntGauge,
    /// Bytes of the event messages in flight.
    pub in_flight_bytes: IntGauge,
    /// Event partitions assigned to this worker.
    pub assigned_partitions: IntGauge,
    /// Produce attempts repeated after a delivery failure.
    pub produce_retries: IntCounter,
    /// Time spent in each phase of a batch, by phase.
    pub phase_seconds: HistogramVec,
}

/// Registers a metric and returns it; registration can only fail on a
/// duplicate name, which this module's single definition list rules out.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name)),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, metric)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name)),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, metric)
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, metric)
}

/// Metric names and help texts are constants of this module; an invalid
/// one is a programming error caught by the tests.
fn unreachable_metric(name: &str) -> ! {
    panic!("metric {name} has an invalid definition")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let latency = prometheus::exponential_buckets(0.000_1, 2.0, 18).unwrap_or_default();
        let build = prometheus::exponential_buckets(0.000_1, 2.5, 16).unwrap_or_default();
        let phase = HistogramVec::new(
            HistogramOpts::new(
                "sightline_batch_phase_seconds",
                "Time spent per batch of event messages, by phase (match, produce).",
            )
            .buckets(latency.clone()),
            &["phase"],
        )
        .unwrap_or_else(|_| unreachable_metric("sightline_batch_phase_seconds"));
        Arc::new(Metrics {
            events_consumed: counter_vec(
                &r,
                "sightline_events_consumed_total",
                "Messages consumed from event topics.",
                &["topic"],
            ),
            observations: counter_vec(
                &r,
                "sightline_observations_total",
                "Observations decoded from events, by format and event kind.",
                &["format"],
            ),
            decode_failures: counter_vec(
                &r,
                "sightline_decode_failures_total",
                "Event documents or observations that could not be decoded.",
                &["reason"],
            ),
            dead_letters: counter_vec(
                &r,
                "sightline_dead_letters_total",
                "Messages written to the dead-letter topic.",
                &["source"],
            ),
            indicators_active: gauge_vec(
                &r,
                "sightline_indicators_active",
                "Live indicators in the matcher, by kind.",
                &["kind"],
            ),
            pattern_leaves: gauge_vec(
                &r,
                "sightline_pattern_leaves",
                "Comparison leaves of live patterns, by how they are found.",
                &["anchor"],
            ),
            indicator_updates: counter_vec(
                &r,
                "sightline_indicator_updates_total",
                "Indicator changes read from the indicator topic, by effect.",
                &["change"],
            ),
            indicators_rejected: counter_vec(
                &r,
                "sightline_indicators_rejected_total",
                "Indicators refused, by reason.",
                &["reason"],
            ),
            matches: counter(&r, "sightline_matches_total", "Matches found."),
            observations_screened: counter(
                &r,
                "sightline_observations_screened_total",
                "Log events passed without building their observation: no index \
                 of the indicator set finds anything in them.",
            ),
            sightings_produced: counter(
                &r,
                "sightline_sightings_produced_total",
                "Sighting objects acknowledged by the broker.",
            ),
            objects_produced: counter(
                &r,
                "sightline_objects_produced_total",
                "STIX objects (sightings and evidence) acknowledged by the broker.",
            ),
            processing_seconds: histogram(
                &r,
                "sightline_processing_seconds",
                "Per event message, from receipt until its outputs are acknowledged.",
                latency,
            ),
            consumer_lag: gauge_vec(
                &r,
                "sightline_consumer_lag",
                "Messages behind the end of each event partition.",
                &["topic", "partition"],
            ),
            snapshot_build_seconds: histogram(
                &r,
                "sightline_snapshot_build_seconds",
                "Time to apply a batch of indicator changes and publish a snapshot.",
                build,
            ),
            snapshot_indicators: gauge(
                &r,
                "sightline_snapshot_indicators",
                "Live indicators in the published snapshot.",
            ),
            snapshot_generation: gauge(
                &r,
                "sightline_snapshot_generation",
                "Generation of the published snapshot.",
            ),
            snapshot_segments: gauge(
                &r,
                "sightline_snapshot_segments",
                "Segments of the published snapshot.",
            ),
            segment_merges_refused: counter(
                &r,
                "sightline_segment_merges_refused_total",
                "Merges of snapshot segments refused because the merged segment would exceed a \
                 size limit.",
            ),
            window_evictions: counter_vec(
                &r,
                "sightline_window_evictions_total",
                "Observations dropped from stateful windows, by reason.",
                &["reason"],
            ),
            ready: gauge(
                &r,
                "sightline_ready",
                "1 once the indicator topic was read to its end.",
            ),
            in_flight: gauge(
                &r,
                "sightline_in_flight_messages",
                "Event messages being processed or awaiting acknowledgement.",
            ),
            in_flight_bytes: gauge(
                &r,
                "sightline_in_flight_bytes",
                "Bytes (keys and payloads) of the event messages in flight.",
            ),
            assigned_partitions: gauge(
                &r,
                "sightline_assigned_partitions",
                "Event partitions assigned to this worker.",
            ),
            produce_retries: counter(
                &r,
                "sightline_produce_retries_total",
                "Produce attempts repeated after a failed delivery.",
            ),
            phase_seconds: register(&r, phase),
            registry: r,
        })
    }

    /// Records the state of a newly published snapshot.
    pub fn record_snapshot(&self, snapshot: &Snapshot) {
        let stats = snapshot.stats();
        let total = snapshot.len() as i64;
        let stateful = stats.stateful as i64;
        self.snapshot_indicators.set(total);
        self.snapshot_generation.set(snapshot.generation() as i64);
        self.snapshot_segments.set(snapshot.segment_count() as i64);
        self.indicators_active
            .with_label_values(&["stateful"])
            .set(stateful);
        self.indicators_active
            .with_label_values(&["stateless"])
            .set(total - stateful);
        for (anchor, leaves) in [
            ("exact", stats.exact),
            ("verified", stats.verified),
            ("unanchored", stats.unanchored),
        ] {
            self.pattern_leaves
                .with_label_values(&[anchor])
                .set(leaves as i64);
        }
    }

    /// Counts one indicator change.
    pub fn record_change(&self, change: Change) {
        let label = match change {
            Change::Added => "added",
            Change::Replaced => "replaced",
            Change::Ignored => "ignored",
            Change::Revoked => "revoked",
            Change::Removed => "removed",
        };
        self.indicator_updates.with_label_values(&[label]).inc();
    }

    /// Adds the window evictions between two readings of stream counters.
    pub fn record_evictions(&self, before: StreamStats, after: StreamStats) {
        for (reason, was, now) in [
            ("full", before.evicted_full, after.evicted_full),
            ("age", before.evicted_age, after.evicted_age),
            ("windows", before.evicted_windows, after.evicted_windows),
        ] {
            if now > was {
                self.window_evictions
                    .with_label_values(&[reason])
                    .inc_by(now - was);
            }
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What the probes report.
#[derive(Clone)]
pub struct Probe {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl Probe {
    /// A probe over `metrics`, not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Probe {
        Probe {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the worker ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        self.metrics.ready.set(i64::from(ready));
    }

    /// True once the worker is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Binds `addr` and answers `/metrics`, `/health` and `/ready` until the
/// process ends.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, probe: Probe) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(probe);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probe.metrics.render(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(probe): State<Probe>) -> (StatusCode, &'static str) {
    if probe.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading indicators\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered_with_its_name() {
        let metrics = Metrics::new();
        metrics.events_consumed.with_label_values(&["t"]).inc();
        metrics
            .decode_failures
            .with_label_values(&["invalid_json"])
            .inc();
        metrics.dead_letters.with_label_values(&["events"]).inc();
        metrics
            .indicators_rejected
            .with_label_values(&["invalid_pattern"])
            .inc();
        metrics.consumer_lag.with_label_values(&["t", "0"]).set(3);
        metrics.window_evictions.with_label_values(&["age"]).inc();
        metrics.observations.with_label_values(&["stix"]).inc();
        metrics
            .phase_seconds
            .with_label_values(&["match"])
            .observe(0.1);
        metrics.record_change(Change::Added);
        metrics.record_snapshot(&Snapshot::empty());
        let text = metrics.render();
        for name in [
            "sightline_events_consumed_total",
            "sightline_observations_total",
            "sightline_decode_failures_total",
            "sightline_dead_letters_total",
            "sightline_indicators_active",
            "sightline_pattern_leaves",
            "sightline_indicator_updates_total",
            "sightline_indicators_rejected_total",
            "sightline_matches_total",
            "sightline_observations_screened_total",
            "sightline_sightings_produced_total",
            "sightline_objects_produced_total",
            "sightline_processing_seconds",
            "sightline_consumer_lag",
            "sightline_snapshot_build_seconds",
            "sightline_snapshot_indicators",
            "sightline_snapshot_generation",
            "sightline_snapshot_segments",
            "sightline_segment_merges_refused_total",
            "sightline_window_evictions_total",
            "sightline_ready",
            "sightline_in_flight_messages",
            "sightline_in_flight_bytes",
            "sightline_assigned_partitions",
            "sightline_produce_retries_total",
            "sightline_batch_phase_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}
