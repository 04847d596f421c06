//! The indicator catalog: lifecycle rules and snapshot publication.
//!
//! - the highest `modified` wins per id; an equal or older version is
//!   ignored (replays are no-ops);
//! - a revoked indicator is removed for good: later versions are ignored;
//! - a removal (a Kafka tombstone) deletes the id; a later version may
//!   bring it back;
//! - a version whose pattern is invalid is reported and removes the older
//!   version it replaces, since the producer meant to replace it;
//! - a batch that cannot be compiled as a whole (a regex set past its size
//!   limit) is compiled in parts; an indicator that cannot be compiled even
//!   alone is refused like an invalid one, and the rest is published. A
//!   merge of segments that fails leaves them apart. Publishing never fails.

use std::collections::HashSet;
use std::sync::Arc;

use super::ids::{IdTable, IndicatorId};
use super::segment::{BuildError, Segment, Staged};
use super::{IndicatorRecord, SlotId, Snapshot};
use crate::pattern::{PatternError, parse};
use crate::stix::timestamp::Timestamp;

/// Tuning of snapshot publication.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CatalogConfig {
    /// Rebuild everything into one segment when the indicators in later
    /// segments exceed this fraction of the first. Default 0.25.
    pub rebuild_ratio: f64,
    /// Changes below this count never trigger a full rebuild. Default 4096.
    pub rebuild_min_changes: usize,
    /// Most bytes one compiled regex set of a property path in a segment
    /// may take (each path has one set for text and one for binary
    /// values). Default 64 MiB.
    pub regex_size_limit: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            rebuild_ratio: 0.25,
            rebuild_min_changes: 4096,
            regex_size_limit: 64 << 20,
        }
    }
}

/// What one change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new id was added.
    Added,
    /// A newer version replaced the live one.
    Replaced,
    /// The version was not newer, or the id is revoked: nothing changed.
    Ignored,
    /// The id was revoked and removed for good.
    Revoked,
    /// The id was removed.
    Removed,
}

/// One change to the indicator set, as a feed delivers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Add this version, or replace an older one.
    Upsert(IndicatorRecord),
    /// Revoke the id for good (`revoked: true`).
    Revoke {
        /// The indicator id.
        id: Arc<str>,
        /// The revoking version.
        modified: Timestamp,
    },
    /// Forget the id (a Kafka tombstone); a later version may return.
    Remove(Arc<str>),
}

/// Why an indicator could not be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndicatorError {
    /// The pattern does not parse or cannot be used.
    #[error("indicator {id}: invalid pattern: {error}")]
    InvalidPattern {
        /// The indicator id.
        id: Arc<str>,
        /// What is wrong, with its position.
        error: PatternError,
    },
    /// The indicator cannot be taken without exceeding a size limit (of
    /// the indexes of a segment holding it alone, or of the catalog).
    #[error("indicator {id}: refused: {reason}")]
    TooLarge {
        /// The indicator id.
        id: Arc<str>,
        /// Which limit, and what it is.
        reason: String,
    },
}

/// What the catalog knows of one id. Kept to 24 bytes: with a million
/// ids this table is one of the larger structures.
struct Entry {
    /// The newest version seen.
    modified: Timestamp,
    /// The live slot, or [`NOT_LIVE`], or [`REVOKED`].
    state: SlotId,
}

/// [`Entry::state`] of an id with no live version.
const NOT_LIVE: SlotId = SlotId::MAX;
/// [`Entry::state`] of a revoked id (slot numbers never get this high).
const REVOKED: SlotId = SlotId::MAX - 1;

impl Entry {
    fn new(modified: Timestamp) -> Entry {
        Entry {
            modified,
            state: NOT_LIVE,
        }
    }

    fn live(&self) -> Option<SlotId> {
        (self.state < REVOKED).then_some(self.state)
    }

    fn is_revoked(&self) -> bool {
        self.state == REVOKED
    }

    /// Ends the live version, if any, and returns its slot.
    fn take_live(&mut self) -> Option<SlotId> {
        let live = self.live();
        if live.is_some() {
            self.state = NOT_LIVE;
        }
        live
    }

    /// Marks the id revoked and returns the slot that was live.
    fn revoke(&mut self) -> Option<SlotId> {
        let live = self.live();
        self.state = REVOKED;
        live
    }
}

/// The indicator set and its current snapshot.
pub struct Catalog {
    config: CatalogConfig,
    entries: IdTable<Entry>,
    snapshot: Arc<Snapshot>,
    next_slot: SlotId,
    /// Merges that failed (a size limit), whose segments stay apart.
    merges_refused: u64,
    /// Why the last of them failed.
    last_merge_error: Option<String>,
    /// After a full rebuild fails, the changes the next attempt waits for,
    /// so that a set that cannot be merged is not rebuilt on every change.
    rebuild_after: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl Catalog {
    /// An empty catalog with the default configuration.
    pub fn new() -> Catalog {
        Catalog::with_config(CatalogConfig::default())
    }

    /// An empty catalog.
    pub fn with_config(config: CatalogConfig) -> Catalog {
        Catalog {
            config,
            entries: IdTable::default(),
            snapshot: Arc::new(Snapshot::empty()),
            next_slot: 0,
            merges_refused: 0,
            last_merge_error: None,
            rebuild_after: 0,
        }
    }

    /// The current snapshot (cheap: a reference count).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot)
    }

    /// Number of live indicators.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.live().is_some()).count()
    }

    /// True when no indicator is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges of segments refused so far because the merged segment
    /// would exceed a size limit (the segments then stay apart, which
    /// costs a little matching speed, not answers).
    pub fn merges_refused(&self) -> u64 {
        self.merges_refused
    }

    /// Why the last refused merge failed.
    pub fn last_merge_error(&self) -> Option<&str> {
        self.last_merge_error.as_deref()
    }

    /// Applies many records at once and publishes one snapshot: the way to
    /// load a feed. Returns the records that were refused.
    pub fn load(
        &mut self,
        records: impl IntoIterator<Item = IndicatorRecord>,
    ) -> Vec<IndicatorError> {
        let mut errors = Vec::new();
        let refused = self.apply_each(records.into_iter().map(Update::Upsert), |result| {
            if let Err(error) = result {
                errors.push(error);
            }
        });
        errors.extend(refused.into_iter().map(|(_, error)| error));
        errors
    }

    /// Applies `updates` in order and publishes one snapshot for all of
    /// them. Returns what each update did.
    pub fn apply(
        &mut self,
        updates: impl IntoIterator<Item = Update>,
    ) -> Vec<Result<Change, IndicatorError>> {
        let mut results = Vec::new();
        let refused = self.apply_each(updates, |result| results.push(result));
        for (at, error) in refused {
            if let Some(result) = results.get_mut(at) {
                *result = Err(error);
            }
        }
        results
    }

    /// Applies `updates` in order, hands what each did to `on_result`, and
    /// publishes one snapshot for all of them. Returns, by update position,
    /// the upserts reported as added that compilation then refused.
    fn apply_each(
        &mut self,
        updates: impl IntoIterator<Item = Update>,
        mut on_result: impl FnMut(Result<Change, IndicatorError>),
    ) -> Vec<(usize, IndicatorError)> {
        // Each staged version with the position of its update.
        let mut added: Vec<(usize, Staged)> = Vec::new();
        let mut removed = HashSet::new();
        for (at, update) in updates.into_iter().enumerate() {
            let result = match update {
                Update::Upsert(record) => {
                    let id = IndicatorId::new(&record.id);
                    match self.stage(id, record) {
                        Ok(Some((staged, old))) => {
                            let change = match old {
                                Some(_) => Change::Replaced,
                                None => Change::Added,
                            };
                            removed.extend(old);
                            added.push((at, staged));
                            Ok(change)
                        }
                        Ok(None) => Ok(Change::Ignored),
                        Err((error, old)) => {
                            removed.extend(old);
                            Err(error)
                        }
                    }
                }
                Update::Revoke { id, modified } => {
                    let (change, old) = self.stage_revoke(&id, modified);
                    removed.extend(old);
                    Ok(change)
                }
                Update::Remove(id) => {
                    let (change, old) = self.stage_remove(&id);
                    removed.extend(old);
                    Ok(change)
                }
            };
            on_result(result);
        }
        // Versions replaced within this batch never reach a segment, and
        // their removal concerns no older segment.
        let staged: HashSet<SlotId> = added.iter().map(|(_, s)| s.id).collect();
        added.retain(|(_, s)| !removed.contains(&s.id));
        removed.retain(|slot| !staged.contains(slot));
        let (positions, added): (Vec<usize>, Vec<Staged>) = added.into_iter().unzip();
        self.publish(added, removed)
            .into_iter()
            .filter_map(|(index, error)| Some((*positions.get(index)?, error)))
            .collect()
    }

    /// Applies one update and publishes a new snapshot.
    fn apply_one(&mut self, update: Update) -> Result<Change, IndicatorError> {
        self.apply([update]).pop().unwrap_or(Ok(Change::Ignored))
    }

    /// Adds or replaces one indicator and publishes a new snapshot.
    ///
    /// # Errors
    ///
    /// Returns [`IndicatorError::InvalidPattern`] when the pattern is
    /// invalid, and [`IndicatorError::TooLarge`] when it cannot be taken
    /// within a size limit; the older version, if any, is removed all the
    /// same.
    pub fn upsert(&mut self, record: IndicatorRecord) -> Result<Change, IndicatorError> {
        self.apply_one(Update::Upsert(record))
    }

    /// Revokes `id` at version `modified`: removed now and ignored forever.
    pub fn revoke(&mut self, id: &str, modified: Timestamp) -> Change {
        let (change, old) = self.stage_revoke(id, modified);
        self.publish(Vec::new(), old.into_iter().collect());
        change
    }

    /// Removes `id` (a tombstone). A later version may add it again.
    pub fn remove(&mut self, id: &str) -> Change {
        let (change, old) = self.stage_remove(id);
        self.publish(Vec::new(), old.into_iter().collect());
        change
    }

    /// Marks `id` revoked; returns the change and the slot to remove.
    /// Only a catalog already holding [`IdTable::MAX_LEN`] ids cannot
    /// remember a revocation of a new id; it ignores it.
    fn stage_revoke(&mut self, id: &str, modified: Timestamp) -> (Change, Option<SlotId>) {
        let id = IndicatorId::new(id);
        let Some(entry) = self
            .entries
            .get_or_insert_with(&id, || Entry::new(modified))
        else {
            return (Change::Ignored, None);
        };
        if entry.is_revoked() {
            return (Change::Ignored, None);
        }
        entry.modified = entry.modified.max(modified);
        (Change::Revoked, entry.revoke())
    }

    /// Forgets `id`; returns the change and the slot to remove.
    fn stage_remove(&mut self, id: &str) -> (Change, Option<SlotId>) {
        let id = IndicatorId::new(id);
        let Some(entry) = self.entries.get(&id) else {
            return (Change::Ignored, None);
        };
        if entry.is_revoked() {
            return (Change::Ignored, None);
        }
        let old = entry.live();
        self.entries.remove(&id);
        match old {
            Some(slot) => (Change::Removed, Some(slot)),
            None => (Change::Ignored, None),
        }
    }

    /// Removes every indicator whose `valid_until` is at or before `now`,
    /// in one published change, and returns how many. Matching already
    /// ignores expired indicators; this frees their memory. A later version
    /// with a new validity may bring an id back.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let removed_anywhere: HashSet<SlotId> = self
            .snapshot
            .segments
            .iter()
            .flat_map(|s| s.removed.iter().copied())
            .collect();
        let mut expired = HashSet::new();
        for segment in &self.snapshot.segments {
            for slot in &segment.slots {
                let ended = slot.valid_until.is_some_and(|until| until <= now);
                if ended && !removed_anywhere.contains(&slot.id) {
                    expired.insert(slot.id);
                    if let Some(entry) = self.entries.get_mut(&slot.indicator) {
                        if entry.live() == Some(slot.id) {
                            entry.take_live();
                        }
                    }
                }
            }
        }
        let count = expired.len();
        self.publish(Vec::new(), expired);
        count
    }

    /// Decides what a record (its id read as `id`) does to the entries,
    /// without publishing: the slot of the new version (if it is one) and
    /// the slot it ends.
    ///
    /// The pattern is parsed here to refuse invalid ones, and again when
    /// its segment is built: keeping a million syntax trees until then
    /// would cost more memory at load than the indicator set itself, and
    /// leave the heap fragmented after they are freed.
    #[allow(clippy::type_complexity)]
    fn stage(
        &mut self,
        id: IndicatorId,
        record: IndicatorRecord,
    ) -> Result<Option<(Staged, Option<SlotId>)>, (IndicatorError, Option<SlotId>)> {
        if let Some(entry) = self.entries.get(&id) {
            if entry.is_revoked() || record.modified <= entry.modified {
                return Ok(None);
            }
        }
        let parsed = parse(&record.pattern).map(drop);
        let Some(entry) = self
            .entries
            .get_or_insert_with(&id, || Entry::new(record.modified))
        else {
            let limit = IdTable::<Entry>::MAX_LEN;
            let error = IndicatorError::TooLarge {
                id: record.id,
                reason: format!("the catalog's id count would exceed the limit of {limit}"),
            };
            return Err((error, None));
        };
        entry.modified = record.modified;
        let old = entry.take_live();
        match parsed {
            Ok(()) => {
                let slot = self.next_slot;
                self.next_slot += 1;
                entry.state = slot;
                let staged = Staged {
                    id: slot,
                    indicator: id,
                    valid_from: record.valid_from,
                    valid_until: record.valid_until,
                    pattern: record.pattern,
                };
                Ok(Some((staged, old)))
            }
            Err(error) => Err((
                IndicatorError::InvalidPattern {
                    id: record.id,
                    error,
                },
                old,
            )),
        }
    }

    /// Publishes a snapshot with the new segment (or segments, when `added`
    /// has to be compiled in parts), then merges segments as the merge
    /// policy asks. Returns the indicators (by position in `added`) that
    /// could not be compiled even alone: their entries are left with no
    /// live version.
    fn publish(
        &mut self,
        added: Vec<Staged>,
        removed: HashSet<SlotId>,
    ) -> Vec<(usize, IndicatorError)> {
        if added.is_empty() && removed.is_empty() {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        let mut refused = Vec::new();
        self.build_parts(&added, 0, &mut fresh, &mut refused);
        for (index, _) in &refused {
            let staged = &added[*index];
            if let Some(entry) = self.entries.get_mut(&staged.indicator) {
                if entry.live() == Some(staged.id) {
                    entry.take_live();
                }
            }
        }
        drop(added);
        // The removals go with the first new segment, or one of their own.
        match fresh.first_mut() {
            Some(first) => first.removed = removed,
            None if removed.is_empty() => return refused,
            None => fresh.push(Segment::removing(removed)),
        }

        let split = fresh.len() > 1;
        let mut segments = self.snapshot.segments.clone();
        segments.extend(fresh.into_iter().map(Arc::new));
        if split {
            // The parts failed together: merging them back now would fail
            // again. A rebuild waits until the changes have doubled.
            self.rebuild_after = changes(&segments).saturating_mul(2);
        } else {
            self.merge_segments(&mut segments);
        }
        let generation = self.snapshot.generation + 1;
        self.snapshot = Arc::new(Snapshot::new(segments, generation));
        refused
    }

    /// Merges the newest segments while the newest is at least as large as
    /// the one before it (never into the first, the base), then rebuilds
    /// everything once the changes are a fair part of the base. A merge
    /// that fails leaves its segments apart.
    fn merge_segments(&mut self, segments: &mut Vec<Arc<Segment>>) {
        while segments.len() > 2 {
            let n = segments.len();
            if weight(&segments[n - 1]) < weight(&segments[n - 2]) {
                break;
            }
            match Segment::merge(&segments[n - 2..], self.config.regex_size_limit) {
                Ok(merged) => {
                    segments.truncate(n - 2);
                    segments.push(Arc::new(merged));
                }
                Err(error) => {
                    self.refuse_merge(error);
                    break;
                }
            }
        }

        let base = segments.first().map_or(0, |s| weight(s));
        let changes = changes(segments);
        if segments.len() > 1
            && changes >= self.config.rebuild_min_changes.max(self.rebuild_after)
            && changes as f64 >= base as f64 * self.config.rebuild_ratio
        {
            match Segment::merge(segments, self.config.regex_size_limit) {
                Ok(merged) => {
                    *segments = vec![Arc::new(merged)];
                    self.rebuild_after = 0;
                }
                Err(error) => {
                    self.refuse_merge(error);
                    self.rebuild_after = changes.saturating_mul(2);
                }
            }
        }
    }

    fn refuse_merge(&mut self, error: BuildError) {
        self.merges_refused += 1;
        self.last_merge_error = Some(error.to_string());
    }

    /// Compiles `added` into `out`; when that fails, compiles its halves
    /// apart, down to single indicators, which are refused (by position,
    /// counted from `offset`) when they fail alone.
    fn build_parts(
        &self,
        added: &[Staged],
        offset: usize,
        out: &mut Vec<Segment>,
        refused: &mut Vec<(usize, IndicatorError)>,
    ) {
        if added.is_empty() {
            return;
        }
        match Segment::build(added, self.config.regex_size_limit) {
            Ok(segment) => out.push(segment),
            Err(error) if added.len() == 1 => {
                let error = match error {
                    BuildError::Invalid(error) => error,
                    BuildError::TooLarge(reason) => IndicatorError::TooLarge {
                        id: added[0].indicator.to_arc(),
                        reason,
                    },
                };
                refused.push((offset, error));
            }
            Err(_) => {
                let half = added.len() / 2;
                self.build_parts(&added[..half], offset, out, refused);
                self.build_parts(&added[half..], offset + half, out, refused);
            }
        }
    }
}

/// Size of the changes on top of the base (the first segment).
fn changes(segments: &[Arc<Segment>]) -> usize {
    segments.iter().skip(1).map(|s| weight(s)).sum()
}

/// Size of a segment for the merge policy.
fn weight(segment: &Segment) -> usize {
    segment.slots.len() + segment.removed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_indicator_slot_stays_small() {
        // The layout README.md and ARCHITECTURE.md describe: a million of
        // these are the bulk of a large indicator set.
        assert_eq!(std::mem::size_of::<crate::matcher::segment::Slot>(), 80);
        assert_eq!(std::mem::size_of::<IndicatorId>(), 24);
    }

    fn record(id: &str, pattern: &str, modified_secs: i64) -> IndicatorRecord {
        IndicatorRecord {
            modified: Timestamp::from_parts(modified_secs, 0),
            ..IndicatorRecord::new(id, pattern)
        }
    }

    #[test]
    fn newest_version_wins_and_replays_are_ignored() {
        let mut catalog = Catalog::new();
        let v1 = record("indicator--a", "[domain-name:value = 'one.example']", 10);
        let v2 = record("indicator--a", "[domain-name:value = 'two.example']", 20);
        assert_eq!(catalog.upsert(v1.clone()), Ok(Change::Added));
        assert_eq!(catalog.upsert(v2.clone()), Ok(Change::Replaced));
        assert_eq!(catalog.upsert(v1), Ok(Change::Ignored));
        assert_eq!(catalog.upsert(v2), Ok(Change::Ignored));
        assert_eq!(catalog.len(), 1);
        assert_eq!(catalog.snapshot().len(), 1);
    }

    #[test]
    fn batch_with_two_versions_of_one_id_counts_once() {
        let mut catalog = Catalog::new();
        let errors = catalog.load([
            record("indicator--a", "[domain-name:value = 'one.example']", 10),
            record("indicator--a", "[domain-name:value = 'two.example']", 20),
            record("indicator--b", "[domain-name:value = 'three.example']", 10),
        ]);
        assert!(errors.is_empty());
        assert_eq!(catalog.snapshot().len(), 2);
    }

    #[test]
    fn revocation_is_final_and_tombstones_allow_return() {
        let mut catalog = Catalog::new();
        let a = record("indicator--a", "[domain-name:value = 'a.example']", 10);
        catalog.upsert(a.clone()).unwrap();
        assert_eq!(
            catalog.revoke("indicator--a", Timestamp::from_parts(11, 0)),
            Change::Revoked
        );
        assert_eq!(
            catalog.upsert(record("indicator--a", "[x:y = 1]", 99)),
            Ok(Change::Ignored)
        );
        assert_eq!(catalog.snapshot().len(), 0);

        let b = record("indicator--b", "[domain-name:value = 'b.example']", 10);
        catalog.upsert(b.clone()).unwrap();
        assert_eq!(catalog.remove("indicator--b"), Change::Removed);
        assert_eq!(catalog.snapshot().len(), 0);
        assert_eq!(catalog.upsert(b), Ok(Change::Added));
        assert_eq!(catalog.snapshot().len(), 1);
    }

    #[test]
    fn invalid_new_version_removes_the_old_one() {
        let mut catalog = Catalog::new();
        catalog
            .upsert(record(
                "indicator--a",
                "[domain-name:value = 'a.example']",
                10,
            ))
            .unwrap();
        let bad = catalog.upsert(record("indicator--a", "[domain-name:value = ]", 20));
        assert!(matches!(bad, Err(IndicatorError::InvalidPattern { .. })));
        assert_eq!(catalog.snapshot().len(), 0);
    }

    #[test]
    fn expired_indicators_are_swept() {
        let mut catalog = Catalog::new();
        let until = |secs| IndicatorRecord {
            valid_until: Some(Timestamp::from_parts(secs, 0)),
            ..record(
                &format!("indicator--{secs}"),
                "[domain-name:value = 'a.example']",
                1,
            )
        };
        catalog.load([
            until(100),
            until(200),
            record("indicator--x", "[x:y = 1]", 1),
        ]);
        assert_eq!(catalog.expire(Timestamp::from_parts(150, 0)), 1);
        assert_eq!(catalog.snapshot().len(), 2);
        assert_eq!(catalog.len(), 2);
        assert_eq!(catalog.expire(Timestamp::from_parts(150, 0)), 0);
        assert_eq!(catalog.expire(Timestamp::from_parts(200, 0)), 1);
        assert_eq!(catalog.snapshot().len(), 1);
    }

    /// Regexes with no literal to look up: they go to the regex set of
    /// `url:value`, and two of them exceed [`limit_for_one_regex`].
    const REGEX_A: &str = "^[a-m]{2,60}[0-4]{2,60}$";
    const REGEX_B: &str = "^[n-z]{2,60}[5-9]{2,60}$";

    fn matches_pattern(regex: &str) -> String {
        format!("[url:value MATCHES '{regex}']")
    }

    /// The smallest regex size limit (in steps of 256 bytes) at which each
    /// test regex compiles alone, checked to be too small for both.
    fn limit_for_one_regex() -> usize {
        let compiles = |patterns: &[&str], limit: usize| {
            regex::RegexSetBuilder::new(patterns)
                .dot_matches_new_line(true)
                .size_limit(limit)
                .build()
                .is_ok()
        };
        let limit = (1..)
            .map(|k| k * 256)
            .find(|&limit| compiles(&[REGEX_A], limit) && compiles(&[REGEX_B], limit))
            .expect("an unbounded search ends");
        let both = compiles(&[REGEX_A, REGEX_B], limit);
        assert!(!both, "the two regexes fit {limit} bytes together");
        limit
    }

    /// Whether the catalog's snapshot matches `url` with indicator `id`.
    fn url_matches(catalog: &Catalog, url: &str, id: &str) -> bool {
        let objects = [(
            "0".to_string(),
            serde_json::json!({"type": "url", "value": url}),
        )];
        let obs =
            crate::stix::observation::Observation::single(Timestamp::from_parts(1, 0), objects);
        let mut stream = crate::matcher::StreamState::default();
        stream
            .process(&catalog.snapshot(), Arc::new(obs))
            .iter()
            .any(|m| m.indicator.to_string() == id)
    }

    fn url_record(id: &str, url: &str, modified_secs: i64) -> IndicatorRecord {
        record(id, &format!("[url:value = '{url}']"), modified_secs)
    }

    #[test]
    fn a_batch_past_a_size_limit_is_compiled_in_parts() {
        // Every change asks for a full rebuild, which cannot succeed.
        let mut catalog = Catalog::with_config(CatalogConfig {
            regex_size_limit: limit_for_one_regex(),
            rebuild_min_changes: 1,
            ..CatalogConfig::default()
        });
        let errors = catalog.load([
            record("indicator--a", &matches_pattern(REGEX_A), 1),
            record("indicator--b", &matches_pattern(REGEX_B), 1),
            url_record("indicator--c", "http://c.example/", 1),
        ]);
        assert_eq!(errors, []);
        assert_eq!(catalog.len(), 3);
        assert_eq!(catalog.snapshot().len(), 3);
        assert!(catalog.snapshot().segment_count() >= 2);
        assert!(url_matches(&catalog, "abc012", "indicator--a"));
        assert!(url_matches(&catalog, "xyz789", "indicator--b"));
        assert!(url_matches(&catalog, "http://c.example/", "indicator--c"));
        assert!(!url_matches(&catalog, "abc789", "indicator--a"));
        // The parts are not merged back at once.
        assert_eq!(catalog.merges_refused(), 0);

        // Once the changes have doubled, a rebuild is tried; it fails and
        // leaves the segments apart, and the changes are published.
        let more = (0..8).map(|i| url_record(&format!("indicator--d{i}"), "http://d.example/", 1));
        assert_eq!(catalog.load(more), []);
        assert_eq!(catalog.merges_refused(), 1);
        let reason = catalog.last_merge_error().unwrap_or_default();
        assert!(reason.contains("url:value"), "{reason}");
        assert_eq!(catalog.snapshot().len(), 11);
        assert!(url_matches(&catalog, "http://d.example/", "indicator--d7"));
        assert!(url_matches(&catalog, "abc012", "indicator--a"));
        assert!(url_matches(&catalog, "xyz789", "indicator--b"));

        // Removals reach every part.
        assert_eq!(catalog.remove("indicator--a"), Change::Removed);
        assert!(!url_matches(&catalog, "abc012", "indicator--a"));
        assert!(url_matches(&catalog, "xyz789", "indicator--b"));
        assert_eq!(catalog.snapshot().len(), 10);
    }

    #[test]
    fn an_indicator_past_a_size_limit_alone_is_refused() {
        let mut catalog = Catalog::with_config(CatalogConfig {
            regex_size_limit: 64,
            ..CatalogConfig::default()
        });
        catalog
            .upsert(url_record("indicator--a", "http://a.example/", 1))
            .unwrap();
        let refused = catalog.upsert(record("indicator--a", &matches_pattern(REGEX_A), 2));
        let Err(IndicatorError::TooLarge { id, reason }) = refused else {
            panic!("refused as too large: {refused:?}");
        };
        assert_eq!(&*id, "indicator--a");
        assert!(reason.contains("url:value"), "{reason}");
        // The new version replaced the old one, which is gone.
        assert_eq!(catalog.len(), 0);
        assert_eq!(catalog.snapshot().len(), 0);
        assert!(!url_matches(&catalog, "http://a.example/", "indicator--a"));

        // In a batch, only that indicator is refused, reported at its own
        // position even when a version replaced within the batch is left out.
        let results = catalog.apply([
            Update::Upsert(url_record("indicator--c", "http://c1.example/", 1)),
            Update::Upsert(url_record("indicator--c", "http://c2.example/", 2)),
            Update::Upsert(record("indicator--b", &matches_pattern(REGEX_B), 1)),
            Update::Upsert(url_record("indicator--d", "http://d.example/", 1)),
        ]);
        assert_eq!(results[0], Ok(Change::Added));
        assert_eq!(results[1], Ok(Change::Replaced));
        assert!(matches!(results[2], Err(IndicatorError::TooLarge { .. })));
        assert_eq!(results[3], Ok(Change::Added));
        assert_eq!(catalog.len(), 2);
        assert!(url_matches(&catalog, "http://c2.example/", "indicator--c"));
        assert!(!url_matches(&catalog, "http://c1.example/", "indicator--c"));
        assert!(url_matches(&catalog, "http://d.example/", "indicator--d"));

        // A version that compiles brings the id back.
        let back = catalog.upsert(url_record("indicator--b", "http://b.example/", 2));
        assert_eq!(back, Ok(Change::Added));
        assert!(url_matches(&catalog, "http://b.example/", "indicator--b"));
    }

    #[test]
    fn a_rebuild_keeps_only_what_is_live() {
        let mut catalog = Catalog::with_config(CatalogConfig {
            rebuild_min_changes: 1,
            ..CatalogConfig::default()
        });
        catalog.load([
            record("indicator--a", "[domain-name:value = 'a.example']", 1),
            record("indicator--b", "[ipv4-addr:value = '198.51.100.0/24']", 1),
            url_record("indicator--c", "http://c.example/", 1),
        ]);
        assert_eq!(catalog.remove("indicator--a"), Change::Removed);
        assert_eq!(catalog.remove("indicator--b"), Change::Removed);
        let snapshot = catalog.snapshot();
        // Rebuilt into one segment from the index entries of the live one.
        assert_eq!(snapshot.segment_count(), 1);
        assert_eq!(snapshot.len(), 1);
        assert_eq!(
            snapshot.stats(),
            crate::matcher::CompileStats {
                exact: 1,
                ..Default::default()
            }
        );
        assert!(snapshot.indexed_paths("domain-name").is_empty());
        assert!(snapshot.indexed_paths("ipv4-addr").is_empty());
        assert_eq!(snapshot.indexed_paths("url").len(), 1);
        assert!(url_matches(&catalog, "http://c.example/", "indicator--c"));
    }

    #[test]
    fn many_single_changes_keep_few_segments() {
        let mut catalog = Catalog::new();
        for i in 0..1000 {
            let id = format!("indicator--{i}");
            catalog
                .upsert(record(&id, "[domain-name:value = 'x.example']", 1))
                .unwrap();
        }
        let snapshot = catalog.snapshot();
        assert_eq!(snapshot.len(), 1000);
        assert!(
            snapshot.segment_count() <= 12,
            "{} segments",
            snapshot.segment_count()
        );
    }
}
