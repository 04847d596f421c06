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
//! is looked up on the destination address. An `ip` rule's value is looked
//! up only in the indexes of its own family, the type its object would
//! get; a path into a dictionary (`file:hashes.'SHA-256'`) evaluates only
//! the entry it names. Objects of list rules (`[[kind.each]]`) hold only
//! `type` and `value`, and are looked up by type.
//!
//! Whether screening is worth it is measured by `benches/pipeline.rs`:
//! with about one event in a hundred matching, it takes the whole path
//! from 1.5× to about 0.9–1.0× the time of a plain JSON parse. Plans are
//! bounded by the mappings' rules and the snapshot's indexed paths.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::fields::Fields;
use super::mapping::{
    EventError, Kind, Mapping, ObjectRule, Property, each_values, evaluate_borrowed, ip_object_type,
};
use crate::eval::{for_each_reached_in_property, is_ref_key};
use crate::matcher::{FastMap, IndexRef, Scratch, Snapshot};
use crate::pattern::{ObjectPath, PathStep};
use crate::stix::net::parse_ip_net;
use crate::stix::timestamp::Timestamp;

/// References followed from one rule to another before a plan gives up.
const MAX_REF_DEPTH: usize = 4;

/// The plans of some mappings for one snapshot, remade when the snapshot
/// changes.
#[derive(Default)]
pub(crate) struct Prefilter {
    /// The snapshot the plans were made for.
    instance: Option<u64>,
    /// By mapping, then by kind.
    plans: Vec<Vec<KindPlan>>,
    /// What to look up on an object of each type that a list rule builds
    /// (they hold only `type` and `value`).
    list_objects: FastMap<Box<str>, TypePlan>,
    scratch: Scratch,
}

/// The lookups of the `type` and `value` properties of one object type.
#[derive(Debug, Default)]
struct TypePlan {
    /// A leaf on the type has no anchor: every such object is a candidate.
    unanchored: bool,
    /// Indexed paths that start with `type` or `value`.
    paths: Vec<(IndexRef, ObjectPath)>,
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
    /// For a dictionary property (`hashes`), the entry the path reads:
    /// only that entry is evaluated.
    entry: Option<usize>,
    /// The indexed path from the property (or its entry) on: its first
    /// step names it. The type is that of the object holding the property.
    path: ObjectPath,
    at: IndexRef,
}

/// What screening says of one event.
pub(crate) enum Screen<'m> {
    /// Some lookup found a leaf: build the observation, of the kind at
    /// this position and at this time.
    Build(usize, Timestamp),
    /// No leaf can hold on it: the observation's time and label.
    Clear(Timestamp, &'m Arc<str>),
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
        self.list_objects.clear();
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
        let Prefilter {
            plans,
            list_objects,
            scratch,
            ..
        } = self;
        let plan = match plans.get(mapping_no).and_then(|p| p.get(kind_no)) {
            Some(plan) if !plan.build_all => plan,
            _ => return Ok(Screen::Build(kind_no, time)),
        };
        if plan.finds(snapshot, kind, fields, scratch)
            || list_objects_may_hit(snapshot, list_objects, kind, fields, scratch)
        {
            return Ok(Screen::Build(kind_no, time));
        }
        if !Mapping::builds_an_object(kind, fields) {
            // Let `observe` say why, in its words.
            return Ok(Screen::Build(kind_no, time));
        }
        Ok(Screen::Clear(time, &kind.label))
    }
}

/// What a probe evaluates: rule, property and dictionary entry.
type ProbeKey = (usize, usize, Option<usize>);

/// A property value, with the type of its object where the value of the
/// object decides it (`ip` rules).
type Typed<'f> = (Cow<'f, Value>, Option<&'static str>);

impl KindPlan {
    /// True when a probe finds a leaf on the event decoded into `fields`.
    fn finds(
        &self,
        snapshot: &Snapshot,
        kind: &Kind,
        fields: &Fields,
        scratch: &mut Scratch,
    ) -> bool {
        // Probes come sorted by rule and property: each value is
        // evaluated once, with the type its object would get.
        let mut current: Option<(ProbeKey, Option<Typed>)> = None;
        for probe in &self.probes {
            let key = (probe.rule, probe.property, probe.entry);
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                let rule = &kind.objects[probe.rule];
                let value = if !rule.applies(fields) {
                    None
                } else if let (Some(entry), Property::Dict(entries)) =
                    (probe.entry, &rule.properties[probe.property].1)
                {
                    evaluate_borrowed(&entries[entry].1, fields, kind.time_format)
                        .map(|v| (v, None))
                } else {
                    typed_value(rule, probe.property, kind, fields)
                };
                current = Some((key, value));
            }
            let Some((_, Some((value, object_type)))) = &current else {
                continue;
            };
            let owner = probe.path.object_type.as_str();
            if object_type.is_some_and(|t| t != owner) {
                continue; // an address of the other family
            }
            let mut found = false;
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

/// The value of property number `property` of `rule`'s object, with the
/// type of that object for rules whose type the value of `value` decides
/// (`ip`); `None` when the property or the object would not be there.
fn typed_value<'f>(
    rule: &ObjectRule,
    property: usize,
    kind: &Kind,
    fields: &'f Fields,
) -> Option<Typed<'f>> {
    let evaluated = |p: &Property| evaluate_borrowed(p, fields, kind.time_format);
    let (name, own) = &rule.properties[property];
    let value = evaluated(own)?;
    if rule.object_type != "ip" {
        return Some((value, None));
    }
    let address = if name == "value" {
        parse_ip_net(value.as_str()?)
    } else {
        parse_ip_net(evaluated(rule.value_property()?)?.as_str()?)
    };
    Some((value, Some(ip_object_type(&address?))))
}

/// True when an object of a list rule (`kind.each`) could be a candidate.
fn list_objects_may_hit(
    snapshot: &Snapshot,
    plans: &mut FastMap<Box<str>, TypePlan>,
    kind: &Kind,
    fields: &Fields,
    scratch: &mut Scratch,
) -> bool {
    let mut found = false;
    for rule in &kind.each {
        each_values(rule, fields, |_, (object_type, value)| {
            if found {
                return;
            }
            let plan = match plans.get(object_type) {
                Some(plan) => plan,
                None => plans
                    .entry(object_type.into())
                    .or_insert_with(|| plan_type(snapshot, object_type)),
            };
            if plan.unanchored {
                found = true;
                return;
            }
            let properties = [
                ("type", Value::String(object_type.to_string())),
                ("value", Value::String(value)),
            ];
            for (at, path) in &plan.paths {
                let Some(PathStep::Key(first)) = path.steps.first() else {
                    continue;
                };
                let Some((_, property)) = properties.iter().find(|(name, _)| name == first) else {
                    continue;
                };
                for_each_reached_in_property(path, object_type, property, &mut |reached| {
                    found = found || snapshot.index_finds(*at, &reached, scratch);
                });
            }
        });
        if found {
            return true;
        }
    }
    false
}

/// The lookups of an object of `object_type` holding only `type` and
/// `value`.
fn plan_type(snapshot: &Snapshot, object_type: &str) -> TypePlan {
    let starts_with_own_property = |path: &ObjectPath| matches!(path.steps.first(), Some(PathStep::Key(k)) if k == "type" || k == "value");
    TypePlan {
        unanchored: snapshot.has_unanchored(object_type),
        paths: snapshot
            .indexed_paths(object_type)
            .into_iter()
            .filter(|(_, path)| starts_with_own_property(path))
            .map(|(at, path)| (at, path.clone()))
            .collect(),
    }
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
    plan.probes
        .sort_by_key(|p| (p.rule, p.property, p.entry, p.at));
    plan.probes.dedup_by(|a, b| {
        let key = |p: &Probe| (p.rule, p.property, p.entry, p.at);
        key(a) == key(b) && a.path == b.path
    });
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
    plan.probes
        .push(probe_of(rule_no, rule, property, path, at));
    true
}

/// The probe of `path` on property number `property` of `rule`: on one
/// entry when the property is a dictionary and the path names an entry.
fn probe_of(
    rule_no: usize,
    rule: &ObjectRule,
    property: usize,
    path: ObjectPath,
    at: IndexRef,
) -> Probe {
    let whole = |path| Probe {
        rule: rule_no,
        property,
        entry: None,
        path,
        at,
    };
    let (Property::Dict(entries), Some(PathStep::Key(name))) =
        (&rule.properties[property].1, path.steps.get(1))
    else {
        return whole(path);
    };
    // A key `value` is special only on the object itself, so the entry
    // cannot stand first in a path of its own.
    let Some(entry) = entries
        .iter()
        .position(|(key, _)| key == name && key != "value")
    else {
        return whole(path);
    };
    if rule.object_type == "ip" {
        return whole(path);
    }
    Probe {
        rule: rule_no,
        property,
        entry: Some(entry),
        path: ObjectPath {
            object_type: path.object_type,
            steps: path.steps[1..].to_vec(),
        },
        at,
    }
}
