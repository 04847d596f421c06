//! Matching a stream of observations, with state for patterns that span
//! several observations.
//!
//! A pattern with observation operators or qualifiers keeps a *window*: the
//! recent observations that satisfied one of its `[...]` leaves, in event
//! time. When a new observation satisfies a leaf, the window is evaluated
//! with the same binding enumeration as the reference interpreter, and every
//! binding that uses the new observation is a match. A late observation is
//! added to the window like any other, so arrival order does not change the
//! answer as long as the observations involved are still in the window.
//!
//! Windows are bounded: at most `max_window_len` observations each; none
//! older, behind the newest event time seen, than the pattern's outer
//! `WITHIN` plus `allowed_lateness` (or `retention` when there is no outer
//! `WITHIN`); and at most `max_windows` windows in all. Every eviction is
//! counted in [`StreamStats`]; an observation arriving later than the
//! window keeps may miss a match with the ones already evicted.

use std::collections::VecDeque;
use std::sync::Arc;

use super::index::FastMap;
use super::segment::{LeafHit, Plan, Scratch};
use super::{IndicatorId, SlotId, Snapshot};
use crate::eval::{ObservationSet, bindings_including};
use crate::pattern::{ComparisonExpr, ObservationExpr, Pattern, Qualifier};
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;

/// Bounds of the stream state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Most observations kept per stateful pattern. Default 256.
    pub max_window_len: usize,
    /// Age limit, in event time, for patterns without an outer `WITHIN`.
    /// Default 24 hours.
    pub retention_nanos: i128,
    /// How late, in event time, an observation may arrive and still combine
    /// with older ones under an outer `WITHIN`: the window keeps
    /// observations for `WITHIN` plus this. Default 5 minutes.
    pub allowed_lateness_nanos: i128,
    /// Most stateful patterns with a live window. Default 100,000.
    pub max_windows: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_window_len: 256,
            retention_nanos: 24 * 3600 * 1_000_000_000,
            allowed_lateness_nanos: 300 * 1_000_000_000,
            max_windows: 100_000,
        }
    }
}

/// Counters of the stream state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Observations matched.
    pub observations: u64,
    /// Matches reported.
    pub matches: u64,
    /// Observations dropped from a full window.
    pub evicted_full: u64,
    /// Observations dropped for age.
    pub evicted_age: u64,
    /// Windows dropped because there were too many.
    pub evicted_windows: u64,
    /// Evaluations abandoned because they grew too large.
    pub too_large: u64,
    /// Hits ignored because the indicator was not valid at the event time.
    pub outside_validity: u64,
}

/// One indicator matched by a set of observations.
#[derive(Clone, Debug)]
pub struct Match {
    /// The indicator's id.
    pub indicator: IndicatorId,
    /// The observations that satisfied its pattern, oldest first.
    pub observations: Vec<Arc<Observation>>,
    /// For a pattern of one `[...]`: the key, in the observation, of the
    /// object that satisfied it (the observable that was sighted).
    pub object_key: Option<String>,
}

struct WindowEntry {
    observation: Arc<Observation>,
    /// Leaves (by number) this observation satisfies.
    leaves: Vec<u32>,
}

struct Window {
    /// The slot whose pattern this window serves; a new version of the
    /// indicator starts a new window.
    slot: SlotId,
    entries: VecDeque<WindowEntry>,
    newest: Timestamp,
}

/// Per-worker matching state. Not shared: each task that matches a
/// partition of the stream owns one.
#[derive(Default)]
pub struct StreamState {
    config: StreamConfig,
    windows: FastMap<IndicatorId, Window>,
    watermark: Option<Timestamp>,
    stats: StreamStats,
    /// Candidate buffer reused between observations.
    scratch: Scratch,
}

impl StreamState {
    /// State with explicit bounds.
    pub fn new(config: StreamConfig) -> StreamState {
        StreamState {
            config,
            ..StreamState::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Observations currently held in windows.
    pub fn window_entries(&self) -> usize {
        self.windows.values().map(|w| w.entries.len()).sum()
    }

    /// Accounts for an observation known to hold no leaf of the snapshot
    /// (no lookup finds anything on it) without building it: all that
    /// such an observation does to the state is move event time, which
    /// ends at `last_observed`.
    pub fn pass(&mut self, last_observed: Timestamp) {
        self.stats.observations += 1;
        let newest = last_observed;
        self.watermark = Some(self.watermark.map_or(newest, |w| w.max(newest)));
    }

    /// Matches `observation` against `snapshot`, updating the windows.
    pub fn process(&mut self, snapshot: &Snapshot, observation: Arc<Observation>) -> Vec<Match> {
        self.pass(observation.last_observed);

        let mut hits: Vec<LeafHit<'_>> = Vec::new();
        snapshot.leaf_hits(&observation, &mut self.scratch, &mut hits);
        hits.sort_by_key(|h| (h.slot.id, h.leaf));

        let mut matches = Vec::new();
        let mut i = 0;
        while i < hits.len() {
            let slot = hits[i].slot;
            let first_object = hits[i].object as usize;
            let mut leaves_hit = Vec::new();
            while i < hits.len() && hits[i].slot.id == slot.id {
                leaves_hit.push(hits[i].leaf);
                i += 1;
            }
            if !slot.is_valid_during(observation.first_observed, observation.last_observed) {
                self.stats.outside_validity += 1;
                continue;
            }
            let indicator = &slot.indicator;
            match &slot.plan {
                Plan::Exact | Plan::Verify(_) => matches.push(Match {
                    indicator: indicator.clone(),
                    object_key: observation.objects.get(first_object).map(|o| o.key.clone()),
                    observations: vec![Arc::clone(&observation)],
                }),
                Plan::Stateful(pattern) => {
                    let entry = WindowEntry {
                        observation: Arc::clone(&observation),
                        leaves: leaves_hit,
                    };
                    if let Some(found) = self.stateful(slot.id, indicator, pattern, entry) {
                        matches.push(found);
                    }
                }
            }
        }
        self.stats.matches += matches.len() as u64;
        matches
    }

    fn stateful(
        &mut self,
        slot: SlotId,
        indicator: &IndicatorId,
        pattern: &Pattern,
        entry: WindowEntry,
    ) -> Option<Match> {
        let retention = match outer_within(pattern) {
            Some(within) => within + self.config.allowed_lateness_nanos,
            None => self.config.retention_nanos,
        };
        let watermark = self.watermark.unwrap_or(Timestamp::EPOCH);
        if !self.windows.contains_key(indicator) && self.windows.len() >= self.config.max_windows {
            self.evict_oldest_window();
        }
        let window = self
            .windows
            .entry(indicator.clone())
            .or_insert_with(|| Window {
                slot,
                entries: VecDeque::new(),
                newest: Timestamp::EPOCH,
            });
        if window.slot != slot {
            // A new version of the indicator: its state starts afresh.
            window.slot = slot;
            window.entries.clear();
        }

        // Age out, then bound the length (dropping the oldest in time).
        let before = window.entries.len();
        window
            .entries
            .retain(|e| watermark.nanos_since(e.observation.last_observed) < retention);
        self.stats.evicted_age += (before - window.entries.len()) as u64;
        if window.entries.len() >= self.config.max_window_len {
            let oldest = window
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.observation.first_observed)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                window.entries.remove(i);
                self.stats.evicted_full += 1;
            }
        }
        window.newest = window.newest.max(entry.observation.last_observed);
        window.entries.push_back(entry);
        let new_index = window.entries.len() - 1;

        let view = WindowView {
            entries: &window.entries,
        };
        let found = match bindings_including(&pattern.root, &view, Some(new_index)) {
            Ok(found) => found,
            Err(_) => {
                self.stats.too_large += 1;
                return None;
            }
        };
        let binding = found
            .into_iter()
            .find(|b| b.observations().any(|i| i == new_index))?;
        let mut observations: Vec<Arc<Observation>> = binding
            .observations()
            .map(|i| Arc::clone(&window.entries[i].observation))
            .collect();
        observations.sort_by_key(|o| o.first_observed);
        Some(Match {
            indicator: indicator.clone(),
            observations,
            object_key: None,
        })
    }

    fn evict_oldest_window(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.newest)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.windows.remove(&key);
            self.stats.evicted_windows += 1;
        }
    }
}

/// The `WITHIN` that applies to the whole pattern, if any, in nanoseconds:
/// no binding spans that long. Only qualifiers above any `REPEATS` count: a
/// `WITHIN` under `REPEATS` bounds each repetition, not their union.
fn outer_within(pattern: &Pattern) -> Option<i128> {
    let mut expr = &pattern.root;
    let mut limit: Option<i128> = None;
    while let ObservationExpr::Qualified(inner, qualifier) = expr {
        match qualifier {
            Qualifier::Within(seconds) => {
                let nanos = seconds.as_nanos();
                limit = Some(limit.map_or(nanos, |l| l.min(nanos)));
            }
            Qualifier::Repeats(_) => break,
            Qualifier::StartStop { .. } => {}
        }
        expr = inner;
    }
    limit
}

/// A window as the binding enumeration sees it.
struct WindowView<'a> {
    entries: &'a VecDeque<WindowEntry>,
}

impl ObservationSet for WindowView<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn interval(&self, i: usize) -> (Timestamp, Timestamp) {
        let o = &self.entries[i].observation;
        (o.first_observed, o.last_observed)
    }

    fn count(&self, i: usize) -> u32 {
        self.entries[i].observation.number_observed
    }

    fn leaf_matches(&self, leaf: usize, _comparison: &ComparisonExpr, i: usize) -> bool {
        self.entries[i].leaves.binary_search(&(leaf as u32)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::matcher::{Catalog, IndicatorRecord};

    fn observation(secs: i64, domain: &str) -> Arc<Observation> {
        let objects = BTreeMap::from([(
            "0".to_string(),
            json!({"type": "domain-name", "value": domain}),
        )]);
        Arc::new(Observation::single(Timestamp::from_parts(secs, 0), objects))
    }

    fn snapshot(pattern: &str) -> Arc<Snapshot> {
        let mut catalog = Catalog::new();
        catalog
            .upsert(IndicatorRecord::new("indicator--a", pattern))
            .unwrap();
        catalog.snapshot()
    }

    #[test]
    fn late_observations_still_combine() {
        let snapshot = snapshot(
            "[domain-name:value = 'a.example'] FOLLOWEDBY [domain-name:value = 'b.example']",
        );
        let mut stream = StreamState::default();
        // b arrives first but happened later: still a match when a arrives.
        assert!(
            stream
                .process(&snapshot, observation(20, "b.example"))
                .is_empty()
        );
        let found = stream.process(&snapshot, observation(10, "a.example"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].observations.len(), 2);
        assert_eq!(
            found[0].observations[0].first_observed,
            Timestamp::from_parts(10, 0)
        );
    }

    #[test]
    fn windows_are_bounded_in_length_and_age() {
        let snapshot =
            snapshot("[domain-name:value = 'a.example'] REPEATS 3 TIMES WITHIN 100 SECONDS");
        let config = StreamConfig {
            max_window_len: 2,
            ..StreamConfig::default()
        };
        let mut stream = StreamState::new(config);
        for t in [0, 1, 2] {
            assert!(
                stream
                    .process(&snapshot, observation(t, "a.example"))
                    .is_empty()
            );
        }
        assert_eq!(stream.stats().evicted_full, 1);
        assert_eq!(stream.window_entries(), 2);

        let mut stream = StreamState::default();
        stream.process(&snapshot, observation(0, "a.example"));
        stream.process(&snapshot, observation(1, "a.example"));
        assert!(
            stream
                .process(&snapshot, observation(500, "a.example"))
                .is_empty()
        );
        assert_eq!(stream.stats().evicted_age, 2);
    }

    #[test]
    fn validity_window_is_applied() {
        let mut catalog = Catalog::new();
        let record = IndicatorRecord {
            valid_from: Some(Timestamp::from_parts(100, 0)),
            valid_until: Some(Timestamp::from_parts(200, 0)),
            ..IndicatorRecord::new("indicator--a", "[domain-name:value = 'a.example']")
        };
        catalog.upsert(record).unwrap();
        let snapshot = catalog.snapshot();
        let mut stream = StreamState::default();
        assert!(
            stream
                .process(&snapshot, observation(99, "a.example"))
                .is_empty()
        );
        assert_eq!(
            stream
                .process(&snapshot, observation(100, "a.example"))
                .len(),
            1
        );
        assert!(
            stream
                .process(&snapshot, observation(200, "a.example"))
                .is_empty()
        );
        assert_eq!(stream.stats().outside_validity, 2);
    }
}
