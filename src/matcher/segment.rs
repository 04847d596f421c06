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
#[derive(Debug)]
pub(crate) enum Plan {
    /// `[c]` whose anchors decide `c`: a hit is a match. The pattern is
    /// kept as text in the segment's [`Segment::texts`], parsed again when
    /// a merge rebuilds the segment: a syntax tree per indicator would cost
    /// more than the rest of it.
    Exact(TextRef),
    /// `[c]` needing verification of `c` on the hit object.
    Verify(Arc<Pattern>),
    /// Observation operators or qualifiers: leaf hits feed a window.
    Stateful(Arc<Pattern>),
}

/// One indicator in a segment: all that matching keeps of it, inline, so
/// that a million of them are one vector.
#[derive(Debug)]
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

/// Where a pattern's text is in [`Segment::texts`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct TextRef {
    start: u32,
    len: u32,
}

/// An indicator to compile into a segment.
#[derive(Debug)]
pub(crate) struct Staged {
    pub id: SlotId,
    pub indicator: IndicatorId,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    pub pattern: Source,
}

/// A pattern as text, or as a syntax tree a slot already held.
#[derive(Debug)]
pub(crate) enum Source {
    Text(Box<str>),
    Parsed(Arc<Pattern>),
}

/// What a target points at.
#[derive(Clone, Copy, Debug)]
struct LeafRef {
    slot: u32,
    leaf: u32,
    /// The leaf is evaluated after a hit (not decided by the anchor).
    verify: bool,
}

/// Why a segment could not be built.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// A pattern does not parse. The catalog checks every pattern first,
    /// so only a broken invariant gets here.
    Invalid(IndicatorError),
    /// The segment would exceed a size limit: its leaf count, its pattern
    /// texts, or an automaton or regex set of one path.
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
    /// The pattern texts of exact slots, one after the other: one
    /// allocation instead of one per indicator.
    texts: String,
}

/// The leaves of a pattern, left to right (the numbering the binding
/// enumeration uses).
pub(crate) fn leaves(pattern: &Pattern) -> Vec<&ComparisonExpr> {
    let mut out = Vec::new();
    pattern.root.for_each_observation(&mut |c| out.push(c));
    out
}

/// Bytes of the pattern texts among `entries`.
fn text_bytes(entries: &[Staged]) -> usize {
    entries
        .iter()
        .map(|e| match &e.pattern {
            Source::Text(text) => text.len(),
            Source::Parsed(_) => 0,
        })
        .sum()
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
    /// [`MAX_TARGETS`] leaves or more pattern text than a `u32` counts, or
    /// when an automaton or regex set exceeds its size limit.
    pub(crate) fn build(
        entries: &[Staged],
        regex_size_limit: usize,
    ) -> Result<Segment, BuildError> {
        let mut segment = Segment {
            slots: Vec::with_capacity(entries.len()),
            leaves: Vec::with_capacity(entries.len()),
            texts: String::with_capacity(text_bytes(entries)),
            ..Segment::removing(HashSet::new())
        };
        let mut field_pos: FastMap<crate::pattern::ObjectPath, usize> = FastMap::default();

        for staged in entries {
            let (pattern, text) = match &staged.pattern {
                Source::Text(text) => {
                    let parsed = parse(text).map_err(|error| {
                        BuildError::Invalid(IndicatorError::InvalidPattern {
                            id: staged.indicator.to_arc(),
                            error,
                        })
                    })?;
                    (Arc::new(parsed), Some(text))
                }
                Source::Parsed(pattern) => (Arc::clone(pattern), None),
            };
            let slot = segment.slots.len() as u32;
            let single = matches!(pattern.root, ObservationExpr::Observation(_));
            let mut all_exact = single;
            for (leaf, comparison) in leaves(&pattern).into_iter().enumerate() {
                let analysis = leaf_anchors(comparison);
                let (anchors, exact) = match analysis {
                    LeafAnchors::Anchored { anchors, exact } => (Some(anchors), exact),
                    LeafAnchors::Unanchored => (None, false),
                };
                all_exact &= exact;
                if segment.leaves.len() >= MAX_TARGETS {
                    return Err(BuildError::TooLarge(format!(
                        "the segment's leaf count would exceed the limit of {MAX_TARGETS}"
                    )));
                }
                let target = segment.leaves.len() as Target;
                segment.leaves.push(LeafRef {
                    slot,
                    leaf: leaf as u32,
                    verify: !exact,
                });
                match anchors {
                    Some(anchors) => {
                        if exact {
                            segment.stats.exact += 1;
                        } else {
                            segment.stats.verified += 1;
                        }
                        for anchor in anchors {
                            let pos = *field_pos.entry(anchor.path.clone()).or_insert_with(|| {
                                let pos = segment.fields.len();
                                segment.fields.push(FieldIndex::new(anchor.path.clone()));
                                segment
                                    .by_type
                                    .entry(anchor.path.object_type.as_str().into())
                                    .or_default()
                                    .fields
                                    .push(pos as u32);
                                pos
                            });
                            segment.fields[pos].add(&anchor.kind, target);
                        }
                    }
                    None => {
                        segment.stats.unanchored += 1;
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
                segment.stats.stateful += 1;
                Plan::Stateful(pattern)
            } else if all_exact {
                let text = match text {
                    Some(text) => segment.keep_text(text)?,
                    None => segment.keep_text(&pattern.to_string())?,
                };
                Plan::Exact(text)
            } else {
                Plan::Verify(pattern)
            };
            segment.slots.push(Slot {
                id: staged.id,
                indicator: staged.indicator.clone(),
                valid_from: staged.valid_from,
                valid_until: staged.valid_until,
                plan,
            });
        }
        for field in &mut segment.fields {
            field
                .finish(regex_size_limit)
                .map_err(|e| BuildError::TooLarge(format!("the indexes of {}: {e}", field.path)))?;
        }
        Ok(segment)
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
            texts: String::new(),
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
            if leaf.verify && !self.verify(slot, leaf.leaf, object, obs) {
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

    /// Appends `text` to the segment's texts.
    fn keep_text(&mut self, text: &str) -> Result<TextRef, BuildError> {
        let start = self.texts.len();
        if u32::try_from(start + text.len()).is_err() {
            return Err(BuildError::TooLarge(format!(
                "the segment's pattern text would exceed the limit of {} bytes",
                u32::MAX
            )));
        }
        self.texts.push_str(text);
        Ok(TextRef {
            start: start as u32,
            len: text.len() as u32,
        })
    }

    /// What a rebuild of `slot`, one of this segment's, compiles it from.
    pub(crate) fn staged(&self, slot: &Slot) -> Staged {
        let pattern = match &slot.plan {
            Plan::Exact(at) => {
                let range = at.start as usize..(at.start + at.len) as usize;
                let text = self.texts.get(range);
                Source::Text(
                    text.expect("a slot's text lies in its segment's texts")
                        .into(),
                )
            }
            Plan::Verify(p) | Plan::Stateful(p) => Source::Parsed(Arc::clone(p)),
        };
        Staged {
            id: slot.id,
            indicator: slot.indicator.clone(),
            valid_from: slot.valid_from,
            valid_until: slot.valid_until,
            pattern,
        }
    }

    fn verify(&self, slot: &Slot, leaf: u32, object: &Value, obs: &Observation) -> bool {
        let pattern = match &slot.plan {
            Plan::Exact(_) => return true,
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
