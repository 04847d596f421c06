//! One segment of a compiled indicator set: its indicators, their leaves,
//! and the field indexes that find candidate leaves for an observation.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::anchor::{LeafAnchors, leaf_anchors};
use super::catalog::IndicatorError;
use super::index::{FastMap, FieldIndex, MAX_TARGETS, Target};
use super::{IndicatorId, SlotId, is_valid_during};
use crate::eval::{Reached, for_each_reached, object_matches};
use crate::pattern::{ComparisonExpr, ObjectPath, ObservationExpr, Pattern, parse};
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;

/// How a matched indicator is confirmed.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    /// `[c]` whose anchors decide `c`: a hit is a match. Nothing of the
    /// pattern is kept but its index entries (a merge copies them): a
    /// syntax tree, or even the text, per indicator would cost more than
    /// the rest of it.
    Exact,
    /// `[c]` needing verification of `c` on the hit object.
    Verify(Arc<Pattern>),
    /// Observation operators or qualifiers: leaf hits feed a window.
    Stateful(Arc<Pattern>),
}

/// One indicator in a segment: all that matching keeps of it, inline, so
/// that a million of them are one vector.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub id: SlotId,
    pub indicator: IndicatorId,
    /// Start of validity; `None` means always.
    pub valid_from: Option<Timestamp>,
    /// End of validity, exclusive; `None` means never.
    pub valid_until: Option<Timestamp>,
    pub plan: Plan,
}

impl Slot {
    /// True when an observation over `[first, last]` overlaps the validity.
    pub fn is_valid_during(&self, first: Timestamp, last: Timestamp) -> bool {
        is_valid_during(self.valid_from, self.valid_until, first, last)
    }
}

/// An indicator to compile into a segment.
#[derive(Debug)]
pub(crate) struct Staged {
    pub id: SlotId,
    pub indicator: IndicatorId,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    /// The pattern, checked by the catalog.
    pub pattern: Box<str>,
}

/// What a target points at.
#[derive(Clone, Copy, Debug)]
struct LeafRef {
    slot: u32,
    leaf: u32,
    kind: LeafKind,
}

/// How a leaf is found and confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeafKind {
    /// Its anchors decide it.
    Exact,
    /// Its anchors find candidates, evaluated after a hit.
    Verified,
    /// No anchor: every object of its types is a candidate.
    Unanchored,
}

/// Why a segment could not be built.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// A pattern does not parse. The catalog checks every pattern first,
    /// so only a broken invariant gets here.
    Invalid(IndicatorError),
    /// The segment would exceed a size limit: its leaf count, or an
    /// automaton or regex set of one path.
    TooLarge(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Invalid(error) => error.fmt(f),
            BuildError::TooLarge(reason) => f.write_str(reason),
        }
    }
}

/// Counts of how leaves were compiled, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Leaves decided by exact lookups alone.
    pub exact: usize,
    /// Leaves found by lookups and then verified.
    pub verified: usize,
    /// Leaves with no usable anchor, evaluated on every object of their
    /// types.
    pub unanchored: usize,
    /// Indicators whose patterns need stream state.
    pub stateful: usize,
}

impl std::ops::AddAssign for CompileStats {
    fn add_assign(&mut self, o: CompileStats) {
        self.exact += o.exact;
        self.verified += o.verified;
        self.unanchored += o.unanchored;
        self.stateful += o.stateful;
    }
}

/// Buffers of candidate lookups, kept by the caller from one observation
/// to the next so that matching allocates nothing when nothing hits.
#[derive(Default)]
pub(crate) struct Scratch {
    /// (target, object number) pairs found on the observation.
    pairs: Vec<(Target, u32)>,
    /// Targets found for one value.
    targets: Vec<Target>,
}

/// What a segment looks up on objects of one type.
#[derive(Default)]
struct TypeEntry {
    /// Positions in [`Segment::fields`] of the type's indexes.
    fields: Vec<u32>,
    /// Leaves with no anchor: candidates on every object of the type.
    unanchored: Vec<Target>,
}

/// A leaf that held on an observation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafHit<'s> {
    pub slot: &'s Slot,
    pub leaf: u32,
    /// Index in the observation's objects of the object the leaf held on.
    pub object: u32,
}

/// Indicators compiled together, with their indexes.
pub(crate) struct Segment {
    pub slots: Vec<Slot>,
    leaves: Vec<LeafRef>,
    /// Every field index of the segment.
    fields: Vec<FieldIndex>,
    /// What is looked up on an object of each type.
    by_type: FastMap<Box<str>, TypeEntry>,
    /// Slots of older segments that this segment removes.
    pub removed: HashSet<SlotId>,
    pub stats: CompileStats,
}

/// The leaves of a pattern, left to right (the numbering the binding
/// enumeration uses).
pub(crate) fn leaves(pattern: &Pattern) -> Vec<&ComparisonExpr> {
    let mut out = Vec::new();
    pattern.root.for_each_observation(&mut |c| out.push(c));
    out
}

impl Segment {
    /// Compiles `entries` into one segment. Each pattern is parsed here
    /// and its syntax tree dropped as soon as it is indexed, unless its
    /// plan needs it. `regex_size_limit` bounds each regex set.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] when a pattern does not parse;
    /// [`BuildError::TooLarge`] when the segment would hold more than
    /// [`MAX_TARGETS`] leaves, or when an automaton or regex set exceeds
    /// its size limit.
    pub(crate) fn build(
        entries: &[Staged],
        regex_size_limit: usize,
    ) -> Result<Segment, BuildError> {
        let mut segment = Segment {
            slots: Vec::with_capacity(entries.len()),
            leaves: Vec::with_capacity(entries.len()),
            ..Segment::removing(HashSet::new())
        };
        let mut field_pos: FastMap<ObjectPath, usize> = FastMap::default();

        for staged in entries {
            let pattern = parse(&staged.pattern).map_err(|error| {
                BuildError::Invalid(IndicatorError::InvalidPattern {
                    id: staged.indicator.to_arc(),
                    error,
                })
            })?;
            let slot = segment.slots.len() as u32;
            let single = matches!(pattern.root, ObservationExpr::Observation(_));
            let mut all_exact = single;
            for (leaf, comparison) in leaves(&pattern).into_iter().enumerate() {
                let analysis = leaf_anchors(comparison);
                let (anchors, kind) = match analysis {
                    LeafAnchors::Anchored {
                        anchors,
                        exact: true,
                    } => (Some(anchors), LeafKind::Exact),
                    LeafAnchors::Anchored { anchors, .. } => (Some(anchors), LeafKind::Verified),
                    LeafAnchors::Unanchored => (None, LeafKind::Unanchored),
                };
                all_exact &= kind == LeafKind::Exact;
                let target = segment.push_leaf(LeafRef {
                    slot,
                    leaf: leaf as u32,
                    kind,
                })?;
                match anchors {
                    Some(anchors) => {
                        for anchor in anchors {
                            let pos = segment.field_at(&mut field_pos, &anchor.path);
                            segment.fields[pos].add(&anchor.kind, target);
                        }
                    }
                    None => {
                        let mut types = Vec::new();
                        comparison.for_each_test(&mut |t| types.push(t.path.object_type.clone()));
                        types.sort();
                        types.dedup();
                        for ty in types {
                            segment
                                .by_type
                                .entry(ty.into())
                                .or_default()
                                .unanchored
                                .push(target);
                        }
                    }
                }
            }
            let plan = if !single {
                Plan::Stateful(Arc::new(pattern))
            } else if all_exact {
                Plan::Exact
            } else {
                Plan::Verify(Arc::new(pattern))
            };
            segment.slots.push(Slot {
                id: staged.id,
                indicator: staged.indicator.clone(),
                valid_from: staged.valid_from,
                valid_until: staged.valid_until,
                plan,
            });
        }
        segment.finish(regex_size_limit)?;
        Ok(segment)
    }

    /// Joins the indicators of consecutive `parts` into one segment,
    /// except those whose slots one of the parts removes. Their index entries
    /// are copied, not compiled from their patterns again. The removals
    /// that point at older segments are kept.
    ///
    /// # Errors
    ///
    /// [`BuildError::TooLarge`] when the joined segment would exceed a
    /// size limit (see [`Segment::build`]).
    pub(crate) fn merge(
        parts: &[Arc<Segment>],
        regex_size_limit: usize,
    ) -> Result<Segment, BuildError> {
        let own: HashSet<SlotId> = parts
            .iter()
            .flat_map(|s| s.slots.iter().map(|slot| slot.id))
            .collect();
        let (removed_here, removed_older): (HashSet<SlotId>, HashSet<SlotId>) = parts
            .iter()
            .flat_map(|s| s.removed.iter().copied())
            .partition(|id| own.contains(id));
        let live = parts
            .iter()
            .flat_map(|s| &s.slots)
            .filter(|slot| !removed_here.contains(&slot.id))
            .count();
        let mut merged = Segment {
            slots: Vec::with_capacity(live),
            leaves: Vec::with_capacity(parts.iter().map(|s| s.leaves.len()).sum()),
            ..Segment::removing(removed_older)
        };
        let mut field_pos: FastMap<ObjectPath, usize> = FastMap::default();
        for part in parts {
            // The numbers of this part's live slots and leaves in `merged`.
            let mut slots: Vec<Option<u32>> = Vec::with_capacity(part.slots.len());
            for slot in &part.slots {
                if removed_here.contains(&slot.id) {
                    slots.push(None);
                } else {
                    slots.push(Some(merged.slots.len() as u32));
                    merged.slots.push(slot.clone());
                }
            }
            let mut targets: Vec<Option<Target>> = Vec::with_capacity(part.leaves.len());
            for leaf in &part.leaves {
                let target = match slots[leaf.slot as usize] {
                    Some(slot) => Some(merged.push_leaf(LeafRef { slot, ..*leaf })?),
                    None => None,
                };
                targets.push(target);
            }
            let renumber = |t: Target| targets.get(t as usize).copied().flatten();
            for field in &part.fields {
                let pos = merged.field_at(&mut field_pos, &field.path);
                merged.fields[pos].absorb(field, renumber);
            }
            for (ty, entry) in &part.by_type {
                let live: Vec<Target> = entry
                    .unanchored
                    .iter()
                    .filter_map(|&t| renumber(t))
                    .collect();
                if !live.is_empty() {
                    let into = merged.by_type.entry(ty.clone()).or_default();
                    into.unanchored.extend(live);
                }
            }
        }
        merged.drop_empty_fields();
        merged.finish(regex_size_limit)?;
        Ok(merged)
    }

    /// Drops the field indexes left with no anchor (every indicator that
    /// had one on their path is gone), and object types left with nothing.
    fn drop_empty_fields(&mut self) {
        if self.fields.iter().all(|f| !f.is_empty()) {
            return;
        }
        // The new position of each index that is kept.
        let mut positions: Vec<Option<u32>> = Vec::with_capacity(self.fields.len());
        let mut kept = 0;
        for field in &self.fields {
            if field.is_empty() {
                positions.push(None);
            } else {
                positions.push(Some(kept));
                kept += 1;
            }
        }
        self.fields.retain(|f| !f.is_empty());
        for entry in self.by_type.values_mut() {
            entry.fields = entry
                .fields
                .iter()
                .filter_map(|&pos| positions[pos as usize])
                .collect();
        }
        self.by_type
            .retain(|_, e| !e.fields.is_empty() || !e.unanchored.is_empty());
    }

    /// Adds a leaf and returns its target.
    fn push_leaf(&mut self, leaf: LeafRef) -> Result<Target, BuildError> {
        if self.leaves.len() >= MAX_TARGETS {
            return Err(BuildError::TooLarge(format!(
                "the segment's leaf count would exceed the limit of {MAX_TARGETS}"
            )));
        }
        self.leaves.push(leaf);
        Ok(self.leaves.len() as Target - 1)
    }

    /// The position of the index of `path`, created (and listed under its
    /// object type) when it is the first anchor on the path. `positions`
    /// remembers the positions while the segment is built.
    fn field_at(&mut self, positions: &mut FastMap<ObjectPath, usize>, path: &ObjectPath) -> usize {
        if let Some(&pos) = positions.get(path) {
            return pos;
        }
        let pos = self.fields.len();
        self.fields.push(FieldIndex::new(path.clone()));
        self.by_type
            .entry(path.object_type.as_str().into())
            .or_default()
            .fields
            .push(pos as u32);
        positions.insert(path.clone(), pos);
        pos
    }

    /// Builds the field indexes once every anchor is in, releases spare
    /// capacity, and counts the leaves by kind.
    fn finish(&mut self, regex_size_limit: usize) -> Result<(), BuildError> {
        self.leaves.shrink_to_fit();
        self.fields.shrink_to_fit();
        self.by_type.shrink_to_fit();
        for entry in self.by_type.values_mut() {
            entry.fields.shrink_to_fit();
            entry.unanchored.shrink_to_fit();
        }
        for field in &mut self.fields {
            field
                .finish(regex_size_limit)
                .map_err(|e| BuildError::TooLarge(format!("the indexes of {}: {e}", field.path)))?;
        }
        let mut stats = CompileStats::default();
        for leaf in &self.leaves {
            match leaf.kind {
                LeafKind::Exact => stats.exact += 1,
                LeafKind::Verified => stats.verified += 1,
                LeafKind::Unanchored => stats.unanchored += 1,
            }
        }
        stats.stateful = self
            .slots
            .iter()
            .filter(|slot| matches!(slot.plan, Plan::Stateful(_)))
            .count();
        self.stats = stats;
        Ok(())
    }

    /// A segment of no indicator that removes `removed` from older ones.
    pub(crate) fn removing(removed: HashSet<SlotId>) -> Segment {
        Segment {
            slots: Vec::new(),
            leaves: Vec::new(),
            fields: Vec::new(),
            by_type: FastMap::default(),
            removed,
            stats: CompileStats::default(),
        }
    }

    /// Appends every leaf of this segment that holds on `obs` to `out`.
    /// `scratch` is reused between calls.
    pub(crate) fn leaf_hits<'s>(
        &'s self,
        obs: &Observation,
        scratch: &mut Scratch,
        out: &mut Vec<LeafHit<'s>>,
    ) {
        let Scratch { pairs, targets } = scratch;
        pairs.clear();
        for (object_no, object) in obs.objects.iter().enumerate() {
            let object_no = object_no as u32;
            let ty = object.object_type.as_str();
            let Some(entry) = self.by_type.get(ty) else {
                continue;
            };
            for &pos in &entry.fields {
                let field = &self.fields[pos as usize];
                for_each_reached(&field.path, ty, &object.value, obs, &mut |reached| {
                    targets.clear();
                    field.lookup(&reached, targets);
                    pairs.extend(targets.iter().map(|t| (*t, object_no)));
                });
            }
            pairs.extend(entry.unanchored.iter().map(|t| (*t, object_no)));
        }
        if pairs.is_empty() {
            return;
        }
        pairs.sort_unstable();
        pairs.dedup();

        let mut last_target = None;
        for &(target, object_no) in pairs.iter() {
            if last_target == Some(target) {
                continue; // already confirmed on another object
            }
            let leaf = self.leaves[target as usize];
            let slot = &self.slots[leaf.slot as usize];
            let object = &obs.objects[object_no as usize].value;
            if leaf.kind != LeafKind::Exact && !self.verify(slot, leaf.leaf, object, obs) {
                continue;
            }
            last_target = Some(target);
            out.push(LeafHit {
                slot,
                leaf: leaf.leaf,
                object: object_no,
            });
        }
    }

    fn verify(&self, slot: &Slot, leaf: u32, object: &Value, obs: &Observation) -> bool {
        let pattern = match &slot.plan {
            Plan::Exact => return true,
            Plan::Verify(p) | Plan::Stateful(p) => p,
        };
        leaves(pattern)
            .get(leaf as usize)
            .is_some_and(|c| object_matches(c, object, obs))
    }
}

/// Lookups of single property values, for deciding whether an event could
/// match before its observation is built.
impl Segment {
    /// The indexed paths of `object_type`, with their positions.
    pub(crate) fn indexed_paths<'s>(
        &'s self,
        object_type: &str,
    ) -> impl Iterator<Item = (u32, &'s ObjectPath)> + 's {
        let entry = self.by_type.get(object_type);
        entry
            .into_iter()
            .flat_map(|e| &e.fields)
            .map(|&pos| (pos, &self.fields[pos as usize].path))
    }

    /// True when a leaf on `object_type` has no anchor, so that every
    /// object of the type is a candidate.
    pub(crate) fn has_unanchored(&self, object_type: &str) -> bool {
        self.by_type
            .get(object_type)
            .is_some_and(|e| !e.unanchored.is_empty())
    }

    /// True when the index at `pos` finds a leaf for `reached`.
    pub(crate) fn index_finds(
        &self,
        pos: u32,
        reached: &Reached<'_>,
        scratch: &mut Scratch,
    ) -> bool {
        scratch.targets.clear();
        self.fields[pos as usize].lookup(reached, &mut scratch.targets);
        !scratch.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    const LIMIT: usize = 64 << 20;

    /// A pattern for each kind of anchor (and a stateful one), with an
    /// object that satisfies it.
    fn cases() -> Vec<(&'static str, Value)> {
        let digest = "ab".repeat(32);
        vec![
            (
                "[domain-name:value = 'a.example']",
                json!({"type": "domain-name", "value": "a.example"}),
            ),
            ("[x-n:count = 100]", json!({"type": "x-n", "count": 100})),
            ("[x-n:on = true]", json!({"type": "x-n", "on": true})),
            (
                "[file:hashes.'SHA-256' = 'abababababababababababababababababababababababababababababababab']",
                json!({"type": "file", "hashes": {"SHA-256": digest.to_uppercase()}}),
            ),
            (
                "[artifact:payload_bin = h'01ff']",
                json!({"type": "artifact", "payload_bin": "Af8="}),
            ),
            (
                "[x-t:at = t'2024-05-01T10:00:00Z']",
                json!({"type": "x-t", "at": "2024-05-01T10:00:00Z"}),
            ),
            (
                "[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
                json!({"type": "ipv4-addr", "value": "198.51.100.7"}),
            ),
            (
                "[ipv6-addr:value = '2001:db8::1']",
                json!({"type": "ipv6-addr", "value": "2001:db8::1"}),
            ),
            (
                "[ipv4-addr:value ISSUPERSET '203.0.113.9']",
                json!({"type": "ipv4-addr", "value": "203.0.113.0/24"}),
            ),
            (
                "[url:value LIKE '%evil%']",
                json!({"type": "url", "value": "http://evil.example/"}),
            ),
            (
                "[url:value MATCHES '^[a-z]+[0-9]+$']",
                json!({"type": "url", "value": "abc123"}),
            ),
            ("[x-n:count > 1000]", json!({"type": "x-n", "count": 5000})),
            ("[x-s:name > 'm']", json!({"type": "x-s", "name": "zebra"})),
            (
                "[x-t:at > t'2030-01-01T00:00:00Z']",
                json!({"type": "x-t", "at": "2031-01-01T00:00:00Z"}),
            ),
            (
                "[x-e:name LIKE '%']",
                json!({"type": "x-e", "name": "anything"}),
            ),
            ("[x-u:name != 'a']", json!({"type": "x-u", "name": "b"})),
            (
                "[x-v:a = 'x'] FOLLOWEDBY [x-v:b = 'y']",
                json!({"type": "x-v", "a": "x"}),
            ),
        ]
    }

    fn staged(patterns: &[&str]) -> Vec<Staged> {
        patterns
            .iter()
            .enumerate()
            .map(|(i, pattern)| Staged {
                id: i as SlotId,
                indicator: IndicatorId::new(&format!("indicator--{i}")),
                valid_from: None,
                valid_until: None,
                pattern: (*pattern).into(),
            })
            .collect()
    }

    /// The (indicator, leaf) pairs of `segment` that hold on `object`.
    fn hits(segment: &Segment, object: &Value) -> BTreeSet<(String, u32)> {
        let obs = Observation::single(Timestamp::EPOCH, [("0".to_string(), object.clone())]);
        let mut out = Vec::new();
        segment.leaf_hits(&obs, &mut Scratch::default(), &mut out);
        out.iter()
            .map(|h| (h.slot.indicator.to_string(), h.leaf))
            .collect()
    }

    fn paths(segment: &Segment, object_type: &str) -> BTreeSet<String> {
        segment
            .indexed_paths(object_type)
            .map(|(_, path)| path.to_string())
            .collect()
    }

    #[test]
    fn a_merge_finds_what_a_build_of_the_live_indicators_finds() {
        let cases = cases();
        let patterns: Vec<&str> = cases.iter().map(|(p, _)| *p).collect();
        // A later segment removes every third indicator; each case is
        // removed under one offset and kept under the two others.
        for offset in 0..3 {
            let all = staged(&patterns);
            let base = Arc::new(Segment::build(&all, LIMIT).expect("the cases compile"));
            let removed: HashSet<SlotId> = (offset..all.len() as SlotId).step_by(3).collect();
            let removal = Arc::new(Segment::removing(removed.clone()));
            let merged = Segment::merge(&[base, removal], LIMIT).expect("the merge compiles");
            let live: Vec<Staged> = all
                .into_iter()
                .filter(|s| !removed.contains(&s.id))
                .collect();
            let fresh = Segment::build(&live, LIMIT).expect("the cases compile");

            assert!(merged.removed.is_empty());
            assert_eq!(merged.slots.len(), live.len());
            assert_eq!(merged.stats, fresh.stats);
            for (i, (pattern, object)) in cases.iter().enumerate() {
                let found = hits(&merged, object);
                assert_eq!(found, hits(&fresh, object), "{pattern}");
                let own = (format!("indicator--{i}"), 0);
                let is_live = !removed.contains(&(i as SlotId));
                assert_eq!(found.contains(&own), is_live, "{pattern}");
                let object_type = object["type"].as_str().unwrap_or_default();
                assert_eq!(paths(&merged, object_type), paths(&fresh, object_type));
                assert_eq!(
                    merged.has_unanchored(object_type),
                    fresh.has_unanchored(object_type),
                    "{pattern}"
                );
            }
        }
    }
}
