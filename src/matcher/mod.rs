//! The compiled matcher: which indicators does this observation match?
//!
//! Indicators are compiled into a [`Snapshot`]: an immutable, shareable set
//! of segments. Each segment indexes the *anchors* of its patterns (values
//! that can be looked up: exact values, IP networks, literal substrings,
//! ordering constants) so that the cost of matching an observation depends
//! on the observation, not on the number of indicators. Only candidates
//! found by lookups are verified, with the reference semantics.
//!
//! [`Catalog`] keeps the indicator set (versions, revocation) and publishes
//! a new snapshot on every change. A change adds one small segment on top of
//! the previous snapshot instead of rebuilding it; small segments are merged
//! as they accumulate (like the levels of a log-structured merge tree), and
//! the whole set is rebuilt only when the changes reach a fraction of it.
//!
//! Patterns with observation operators or qualifiers keep state across
//! observations in a [`StreamState`], bounded in entries and age.
//!
//! ```
//! use std::sync::Arc;
//! use sightline::matcher::{Catalog, IndicatorRecord, StreamState};
//! use sightline::stix::observation::observations_from_document;
//!
//! let mut catalog = Catalog::new();
//! catalog.upsert(IndicatorRecord::new(
//!     "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
//!     "[ipv4-addr:value = '198.51.100.0/24']",
//! ))?;
//! let snapshot = catalog.snapshot();
//!
//! let doc = serde_json::json!({
//!     "type": "observed-data", "id": "observed-data--1", "number_observed": 1,
//!     "first_observed": "2024-05-01T10:00:00Z", "last_observed": "2024-05-01T10:00:00Z",
//!     "objects": {"0": {"type": "ipv4-addr", "value": "198.51.100.7"}}
//! });
//! let observation = observations_from_document(&doc).remove(0).unwrap();
//! let mut stream = StreamState::default();
//! let matches = stream.process(&snapshot, Arc::new(observation));
//! assert_eq!(matches[0].indicator.to_string(), "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f");
//! # Ok::<(), sightline::matcher::IndicatorError>(())
//! ```

mod anchor;
mod catalog;
mod ids;
mod index;
mod segment;
mod stream;

use std::sync::Arc;

pub use catalog::{Catalog, CatalogConfig, Change, IndicatorError, Update};
pub use ids::IndicatorId;
pub(crate) use index::FastMap;
pub use segment::CompileStats;
pub use stream::{Match, StreamConfig, StreamState, StreamStats};

use crate::eval::Reached;
use crate::pattern::ObjectPath;
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;
pub(crate) use segment::Scratch;

use segment::{LeafHit, Segment};

/// Identifies one compiled version of an indicator inside snapshots.
pub type SlotId = u64;

/// An indicator as the matcher needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorRecord {
    /// The STIX id (`indicator--…`).
    pub id: Arc<str>,
    /// The STIX pattern text.
    pub pattern: Box<str>,
    /// Start of validity (`valid_from`); `None` means always.
    pub valid_from: Option<Timestamp>,
    /// End of validity, exclusive (`valid_until`); `None` means never.
    pub valid_until: Option<Timestamp>,
    /// The version (`modified`, or `created`); the highest wins.
    pub modified: Timestamp,
}

impl IndicatorRecord {
    /// A record valid forever, at version epoch.
    pub fn new(id: &str, pattern: &str) -> IndicatorRecord {
        IndicatorRecord {
            id: id.into(),
            pattern: pattern.into(),
            valid_from: None,
            valid_until: None,
            modified: Timestamp::EPOCH,
        }
    }

    /// True when an observation over `[first, last]` overlaps the validity
    /// interval `[valid_from, valid_until)`.
    pub fn is_valid_during(&self, first: Timestamp, last: Timestamp) -> bool {
        is_valid_during(self.valid_from, self.valid_until, first, last)
    }
}

/// True when `[first, last]` overlaps `[valid_from, valid_until)`; a missing
/// bound is open.
fn is_valid_during(
    valid_from: Option<Timestamp>,
    valid_until: Option<Timestamp>,
    first: Timestamp,
    last: Timestamp,
) -> bool {
    valid_from.is_none_or(|from| last >= from) && valid_until.is_none_or(|until| first < until)
}

/// An immutable compiled indicator set, shared by every matching task.
pub struct Snapshot {
    segments: Vec<Arc<Segment>>,
    generation: u64,
    /// Unique in the process, so that what is derived from one snapshot
    /// is never used with another.
    instance: u64,
}

/// Where one field index sits in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IndexRef {
    segment: u32,
    field: u32,
}

fn next_instance() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Snapshot {
    /// An empty set.
    pub fn empty() -> Snapshot {
        Snapshot::new(Vec::new(), 0)
    }

    fn new(segments: Vec<Arc<Segment>>, generation: u64) -> Snapshot {
        Snapshot {
            segments,
            generation,
            instance: next_instance(),
        }
    }

    /// Increases by one with every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of live indicators.
    pub fn len(&self) -> usize {
        let removed: usize = self.segments.iter().map(|s| s.removed.len()).sum();
        let total: usize = self.segments.iter().map(|s| s.slots.len()).sum();
        total.saturating_sub(removed)
    }

    /// True when no indicator is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of segments (1 after a full build; more while changes
    /// accumulate).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// How the leaves of all segments were compiled (removed indicators
    /// included until the next merge).
    pub fn stats(&self) -> CompileStats {
        let mut total = CompileStats::default();
        for s in &self.segments {
            total += s.stats;
        }
        total
    }

    /// Identifies this snapshot among all of the process.
    pub(crate) fn instance(&self) -> u64 {
        self.instance
    }

    /// Every indexed path of `object_type`, in every segment.
    pub(crate) fn indexed_paths(&self, object_type: &str) -> Vec<(IndexRef, &ObjectPath)> {
        let mut out = Vec::new();
        for (segment, s) in self.segments.iter().enumerate() {
            for (field, path) in s.indexed_paths(object_type) {
                let segment = segment as u32;
                out.push((IndexRef { segment, field }, path));
            }
        }
        out
    }

    /// True when a leaf on `object_type` has no anchor: every object of
    /// the type is a candidate.
    pub(crate) fn has_unanchored(&self, object_type: &str) -> bool {
        self.segments.iter().any(|s| s.has_unanchored(object_type))
    }

    /// True when the index at `at` finds some leaf for `reached` (one of
    /// an indicator removed since may be among them).
    pub(crate) fn index_finds(
        &self,
        at: IndexRef,
        reached: &Reached<'_>,
        scratch: &mut Scratch,
    ) -> bool {
        self.segments
            .get(at.segment as usize)
            .is_some_and(|s| s.index_finds(at.field, reached, scratch))
    }

    /// Every leaf of a live indicator that holds on `obs`. `scratch` is
    /// reused between calls.
    pub(crate) fn leaf_hits<'s>(
        &'s self,
        obs: &Observation,
        scratch: &mut Scratch,
        out: &mut Vec<LeafHit<'s>>,
    ) {
        for (i, segment) in self.segments.iter().enumerate() {
            let start = out.len();
            segment.leaf_hits(obs, scratch, out);
            // Drop hits on slots that a newer segment removed.
            let newer = &self.segments[i + 1..];
            if out.len() > start && newer.iter().any(|s| !s.removed.is_empty()) {
                let mut kept = start;
                for j in start..out.len() {
                    let id = out[j].slot.id;
                    if !newer.iter().any(|s| s.removed.contains(&id)) {
                        out[kept] = out[j];
                        kept += 1;
                    }
                }
                out.truncate(kept);
            }
        }
    }
}
