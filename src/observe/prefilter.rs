//! Screening log events before their observations are built.
//!
//! Most events match no indicator, and building an observation (every
//! object as a JSON map, references, normalised values) costs more than
//! reading the event. The prefilter asks the snapshot's indexes about the
//! few property values they look at: for each object rule of the event's
//! kind, only the properties that start an indexed path of the rule's type
//! are evaluated, and each is looked up as the matcher would look it up on
//! the built object. A leaf is only ever verified after a lookup found it,
//! so when no lookup finds one, no indicator can hold on the observation
//! and it is not built. What the stream state needs of it (its time) is
//! kept.
//!
//! Doubt always means "build it": a false positive costs one observation
//! built for nothing, a false negative would lose a sighting. The plan of
//! a kind builds everything when a leaf without anchors applies to a type
//! the kind builds, or when an indexed path reads `type`, goes on through
//! a reference the plan cannot follow, or starts with a list position.
//! References written by the mapping (`dst_ref = { ref = "dst" }`) are
//! followed to the rules of their target, so `network-traffic:dst_ref.value`
//! is looked up on the destination address.

use serde_json::{Map, Value};

use super::fields::Fields;
use super::mapping::{EventError, Kind, Mapping, Property, each_objects, evaluate};
use crate::eval::{for_each_reached_in_property, is_ref_key};
use crate::matcher::{IndexRef, Scratch, Snapshot};
use crate::pattern::{ObjectPath, PathStep};
use crate::stix::timestamp::Timestamp;

/// References followed from one rule to another before a plan gives up.
const MAX_REF_DEPTH: usize = 4;

/// The plans of some mappings for one snapshot, remade when the snapshot
/// changes.
#[derive(Default)]
pub struct Prefilter {
    /// The snapshot the plans were made for.
    instance: Option<u64>,
    /// By mapping, then by kind.
    plans: Vec<Vec<KindPlan>>,
    scratch: Scratch,
}

/// What to look up for the events of one kind.
#[derive(Debug, Default)]
struct KindPlan {
    /// The indexes cannot decide from single properties: build every
    /// observation of the kind.
    build_all: bool,
    /// Sorted by rule and property, so that each is evaluated once.
    probes: Vec<Probe>,
}

/// One lookup: a property of a rule's object, as an indexed path reads it.
#[derive(Debug)]
struct Probe {
    rule: usize,
    property: usize,
    /// The indexed path from the property on (its first step names the
    /// property), with the type of the object that holds the property.
    path: ObjectPath,
    at: IndexRef,
}

/// What screening says of one event.
pub(crate) enum Screen<'m> {
    /// Some lookup found a leaf: build the observation.
    Build,
    /// No leaf can hold on it: the observation's time and label.
    Clear(Timestamp, &'m std::sync::Arc<str>),
}

impl Prefilter {
    /// Makes the plans of `mappings` for `snapshot`, unless they are made.
    pub(crate) fn prepare<'m>(
        &mut self,
        snapshot: &Snapshot,
        mappings: impl Iterator<Item = &'m Mapping>,
    ) {
        if self.instance == Some(snapshot.instance()) {
            return;
        }
        self.plans = mappings
            .map(|m| m.kinds.iter().map(|k| plan_kind(k, snapshot)).collect())
            .collect();
        self.instance = Some(snapshot.instance());
    }

    /// Screens one event of mapping number `mapping_no` (as given to
    /// [`Prefilter::prepare`]), decoded into `fields`.
    ///
    /// # Errors
    ///
    /// The error [`Mapping::observe`] would give, when it is known without
    /// building the observation.
    pub(crate) fn screen<'m>(
        &mut self,
        snapshot: &Snapshot,
        mapping_no: usize,
        mapping: &'m Mapping,
        fields: &Fields,
    ) -> Result<Screen<'m>, EventError> {
        let (kind_no, time) = mapping.kind_and_time(fields)?;
        let kind = &mapping.kinds[kind_no];
        let Prefilter { plans, scratch, .. } = self;
        let plan = match plans.get(mapping_no).and_then(|p| p.get(kind_no)) {
            Some(plan) if !plan.build_all => plan,
            _ => return Ok(Screen::Build),
        };
        if plan.finds(snapshot, kind, fields, scratch)
            || each_objects_may_hit(snapshot, kind, fields, scratch)
        {
            return Ok(Screen::Build);
        }
        if !Mapping::builds_an_object(kind, fields) {
            // Let `observe` say why, in its words.
            return Ok(Screen::Build);
        }
        Ok(Screen::Clear(time, &kind.label))
    }
}

impl KindPlan {
    /// True when a probe finds a leaf on the event decoded into `fields`.
    fn finds(
        &self,
        snapshot: &Snapshot,
        kind: &Kind,
        fields: &Fields,
        scratch: &mut Scratch,
    ) -> bool {
        let mut current: Option<((usize, usize), Option<Value>)> = None;
        for probe in &self.probes {
            let key = (probe.rule, probe.property);
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                let rule = &kind.objects[probe.rule];
                let value = rule
                    .applies(fields)
                    .then(|| evaluate(&rule.properties[probe.property].1, fields, kind.time_format))
                    .flatten();
                current = Some((key, value));
            }
            let Some((_, Some(value))) = &current else {
                continue;
            };
            let mut found = false;
            let owner = probe.path.object_type.as_str();
            for_each_reached_in_property(&probe.path, owner, value, &mut |reached| {
                found = found || snapshot.index_finds(probe.at, &reached, scratch);
            });
            if found {
                return true;
            }
        }
        false
    }
}

/// True when an object of a list rule (`kind.each`) could be a candidate.
/// Those objects hold only their type and value.
fn each_objects_may_hit(
    snapshot: &Snapshot,
    kind: &Kind,
    fields: &Fields,
    scratch: &mut Scratch,
) -> bool {
    kind.each.iter().any(|rule| {
        each_objects(rule, fields)
            .iter()
            .any(|(_, object)| object_may_hit(snapshot, object, scratch))
    })
}

fn object_may_hit(snapshot: &Snapshot, object: &Map<String, Value>, scratch: &mut Scratch) -> bool {
    let Some(object_type) = object.get("type").and_then(Value::as_str) else {
        return true;
    };
    object
        .iter()
        .any(|(name, value)| snapshot.property_may_hit(object_type, name, value, scratch))
}

fn plan_kind(kind: &Kind, snapshot: &Snapshot) -> KindPlan {
    let mut plan = KindPlan::default();
    for (rule_no, rule) in kind.objects.iter().enumerate() {
        for object_type in rule.object_types() {
            if snapshot.has_unanchored(object_type) {
                plan.build_all = true;
                return plan;
            }
            for (at, path) in snapshot.indexed_paths(object_type) {
                if !plan_path(&mut plan, kind, rule_no, path.clone(), at, 0) {
                    plan.build_all = true;
                    return plan;
                }
            }
        }
    }
    plan.probes.sort_by_key(|p| (p.rule, p.property));
    plan
}

/// True when a list rule of `kind` may build an object keyed `key`, which
/// would then stand in for the object of the rules with that key.
fn each_may_replace(kind: &Kind, key: &str) -> bool {
    kind.each.iter().any(|rule| {
        key.strip_prefix(rule.key.as_str())
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Adds the probes that answer for `path` on the objects of rule
/// `rule_no`; false when the path cannot be decided by probes.
fn plan_path(
    plan: &mut KindPlan,
    kind: &Kind,
    rule_no: usize,
    path: ObjectPath,
    at: IndexRef,
    depth: usize,
) -> bool {
    let rule = &kind.objects[rule_no];
    let Some(PathStep::Key(first)) = path.steps.first() else {
        return false;
    };
    let Some(property) = rule.properties.iter().position(|(name, _)| name == first) else {
        // The object never holds it (the type is written by the mapping,
        // and a path on it is not worth a plan).
        return first != "type";
    };
    if let Property::Ref(target) = &rule.properties[property].1 {
        // Follow the reference to the object its target rules build.
        let rest = &path.steps[1..];
        if depth >= MAX_REF_DEPTH || !matches!(rest.first(), Some(PathStep::Key(_))) {
            return false;
        }
        let targets: Vec<usize> = (0..kind.objects.len())
            .filter(|&r| kind.objects[r].key == *target)
            .collect();
        if targets.is_empty() || each_may_replace(kind, target) {
            return false;
        }
        return targets.into_iter().all(|target_no| {
            kind.objects[target_no].object_types().all(|object_type| {
                let followed = ObjectPath {
                    object_type: object_type.to_string(),
                    steps: rest.to_vec(),
                };
                plan_path(plan, kind, target_no, followed, at, depth + 1)
            })
        });
    }
    // The walk from the value cannot follow references of its own.
    let keys: Vec<&str> = path
        .steps
        .iter()
        .filter_map(|s| match s {
            PathStep::Key(k) => Some(k.as_str()),
            _ => None,
        })
        .collect();
    if keys[..keys.len() - 1].iter().any(|k| is_ref_key(k)) {
        return false;
    }
    plan.probes.push(Probe {
        rule: rule_no,
        property,
        path,
        at,
    });
    true
}
