//! The matching pipeline: document in, STIX objects out. `sightline match`
//! runs it over files and pipes; the Kafka workers ([`worker`]) run the
//! same [`Pipeline`] over messages, one per event partition.
//!
//! Per document: decode (STIX or a log mapping) → observations → match
//! against the current snapshot → the evidence objects (cyber-observables,
//! observed-data) and a sighting per match, aggregated per indicator and
//! observable when asked. The sensor identity is written before the first
//! sighting; an object already written is not written again.

pub mod indicators;
pub mod kafka;
pub mod output;
mod partition;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::matcher::{Snapshot, StreamConfig, StreamState};
use crate::observe::decoder::{DecodeError, Decoder, Item};
use crate::observe::prefilter::Prefilter;
use crate::stix::sighting::{Aggregator, EmittedIds, SensorIdentity, evidence, sighting};

/// How the pipeline writes sightings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Name of the sensor identity. Default "sightline".
    pub sensor_name: String,
    /// Fold repeated hits of one indicator on one observable within this
    /// many nanoseconds of event time into one sighting; `None` writes one
    /// sighting per hit. Default one hour.
    pub aggregate_window_nanos: Option<i128>,
    /// Most aggregates open at once. Default 100,000.
    pub max_aggregates: usize,
    /// Most object ids remembered to avoid writing an object twice.
    /// Default 1,048,576.
    pub max_remembered_ids: usize,
    /// Bounds of the stream state.
    pub stream: StreamConfig,
    /// Screen log events against the indexes before building their
    /// observations, so that an event no indicator can match costs its
    /// decoding only. The output is the same either way. Default on.
    pub screen_events: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            sensor_name: "sightline".into(),
            aggregate_window_nanos: Some(3600 * 1_000_000_000),
            max_aggregates: 100_000,
            max_remembered_ids: 1 << 20,
            stream: StreamConfig::default(),
            screen_events: true,
        }
    }
}

/// Counters of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Documents offered.
    pub documents: u64,
    /// Observations decoded, by format label (`stix`, `zeek/conn`, …).
    pub observations: BTreeMap<String, u64>,
    /// Documents or observed-data refused.
    pub rejected: u64,
    /// Observations (counted in `observations` too) that were not built:
    /// screening found nothing an indicator looks for in their events.
    pub screened: u64,
    /// Matches found.
    pub matches: u64,
    /// Sighting objects written (updates of an aggregate included).
    pub sightings_written: u64,
}

/// One pipeline: a decoder, stream state and output bookkeeping.
pub struct Pipeline {
    decoder: Decoder,
    stream: StreamState,
    sensor: SensorIdentity,
    emitted: EmittedIds,
    aggregator: Option<Aggregator>,
    stats: PipelineStats,
    screen_events: bool,
    prefilter: Prefilter,
}

impl Pipeline {
    /// A pipeline reading documents with `decoder`.
    pub fn new(decoder: Decoder, config: &PipelineConfig) -> Pipeline {
        Pipeline {
            decoder,
            stream: StreamState::new(config.stream),
            sensor: SensorIdentity::new(&config.sensor_name),
            emitted: EmittedIds::new(config.max_remembered_ids),
            aggregator: config
                .aggregate_window_nanos
                .map(|window| Aggregator::new(window, config.max_aggregates)),
            stats: PipelineStats::default(),
            screen_events: config.screen_events,
            prefilter: Prefilter::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The stream state (for its counters).
    pub fn stream(&self) -> &StreamState {
        &self.stream
    }

    /// Processes one document's text: appends the objects to write to
    /// `out` and returns what could not be decoded.
    pub fn process(
        &mut self,
        snapshot: &Snapshot,
        text: &str,
        out: &mut Vec<Value>,
    ) -> Vec<DecodeError> {
        self.stats.documents += 1;
        let mut errors = Vec::new();
        let screen = self
            .screen_events
            .then_some((snapshot, &mut self.prefilter));
        let items = self.decoder.decode_items(text, screen);
        for item in items {
            let decoded = match item {
                Ok(Item::Observed(decoded)) => decoded,
                Ok(Item::Cleared {
                    last_observed,
                    label,
                }) => {
                    self.count_observation(&label);
                    self.stats.screened += 1;
                    self.stream.pass(last_observed);
                    continue;
                }
                Err(e) => {
                    self.stats.rejected += 1;
                    errors.push(e);
                    continue;
                }
            };
            self.count_observation(&decoded.label);
            for m in self.stream.process(snapshot, Arc::new(decoded.observation)) {
                self.stats.matches += 1;
                let (objects, sighted) = evidence(&m, &self.sensor);
                let sighting = match (&mut self.aggregator, sighted) {
                    (Some(aggregator), Some(observable)) => {
                        aggregator.sighting(&m, &observable, &self.sensor)
                    }
                    _ => sighting(&m, &self.sensor),
                };
                self.emit(self.sensor.object.clone(), out);
                for object in objects {
                    self.emit(object, out);
                }
                self.stats.sightings_written += 1;
                // Sightings are always written: an aggregate's new version
                // keeps its id.
                out.push(sighting);
            }
        }
        errors
    }

    fn count_observation(&mut self, label: &str) {
        match self.stats.observations.get_mut(label) {
            Some(count) => *count += 1,
            None => {
                self.stats.observations.insert(label.to_string(), 1);
            }
        }
    }

    fn emit(&mut self, object: Value, out: &mut Vec<Value>) {
        let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
        if self.emitted.first_time(id) {
            out.push(object);
        }
    }
}
