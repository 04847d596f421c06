//! STIX 2.1 output for matches: a `sighting` of the indicator, the
//! `observed-data` it was seen in, the cyber-observables of that data, and
//! the `identity` of the sensor that saw it.
//!
//! Every id is deterministic, so a replay of the same input produces the
//! same objects and consumers can deduplicate:
//! - cyber-observables get the specification's UUIDv5 ids (`stix::sco`);
//! - observed-data and sightings get UUIDv5 ids in Sightline's namespace
//!   over what identifies them (the input observation; the indicator id and
//!   the observed-data ids);
//! - the sensor identity's id is derived from its name.
//!
//! `created` and `modified` are taken from event time (the latest
//! `last_observed` involved), not from the clock, for the same reason.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::observation::Observation;
use super::sco::sco_id;
use super::timestamp::Timestamp;
use crate::matcher::Match;

/// The UUIDv5 namespace of the ids Sightline derives.
pub const SIGHTLINE_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_93a0_4d57_8e1c_2f6a_9d3b_5e71);

/// Fixed `created`/`modified` of the sensor identity, so that it is the
/// same object in every run.
const IDENTITY_TIME: &str = "2026-01-01T00:00:00.000Z";

fn derived_id(object_type: &str, name: &str) -> String {
    format!(
        "{object_type}--{}",
        Uuid::new_v5(&SIGHTLINE_NAMESPACE, name.as_bytes())
    )
}

/// The `identity` that sightings name as where they were sighted and who
/// created them.
#[derive(Clone, Debug)]
pub struct SensorIdentity {
    /// The identity's id.
    pub id: String,
    /// The identity object.
    pub object: Value,
}

impl SensorIdentity {
    /// An identity of class `system` named `name`.
    pub fn new(name: &str) -> SensorIdentity {
        let id = derived_id("identity", &format!("sensor\n{name}"));
        let object = json!({
            "type": "identity",
            "spec_version": "2.1",
            "id": id,
            "created": IDENTITY_TIME,
            "modified": IDENTITY_TIME,
            "name": name,
            "identity_class": "system",
        });
        SensorIdentity { id, object }
    }
}

/// A stable text naming an observation: its id when it has one, else its
/// content.
fn observation_identity(obs: &Observation) -> String {
    match &obs.id {
        Some(id) => id.clone(),
        None => format!(
            "{}|{}|{}|{}",
            obs.first_observed,
            obs.last_observed,
            obs.number_observed,
            serde_json::to_string(&obs.objects).unwrap_or_default()
        ),
    }
}

/// The id of the observed-data Sightline emits for `obs`.
pub fn observed_data_id(obs: &Observation) -> String {
    obs.output_id
        .get_or_derive(|| {
            derived_id(
                "observed-data",
                &format!("observed-data\n{}", observation_identity(obs)),
            )
        })
        .to_string()
}

/// The sighting id for `m`: the indicator and the observations.
pub fn sighting_id(m: &Match) -> String {
    let mut name = format!("sighting\n{}", m.indicator);
    for obs in &m.observations {
        name.push('\n');
        name.push_str(&observed_data_id(obs));
    }
    derived_id("sighting", &name)
}

/// The cyber-observables of `obs` as STIX 2.1 objects with deterministic
/// ids, references rewritten from local keys (STIX 2.0) to those ids.
pub fn cyber_observables(obs: &Observation) -> Vec<Value> {
    let keys: HashMap<&str, usize> = obs
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.key.as_str(), i))
        .collect();
    let mut ids: Vec<Option<String>> = vec![None; obs.objects.len()];
    let mut out: Vec<Option<Value>> = vec![None; obs.objects.len()];

    // Objects are named after what they reference, so an object gets its
    // id once every object it references has one. Objects in a reference
    // cycle are finished in a last pass with the references they can use.
    for last_pass in [false, true] {
        let mut progress = true;
        while progress {
            progress = false;
            for (i, object) in obs.objects.iter().enumerate() {
                if ids[i].is_some() {
                    continue;
                }
                let Some(converted) = rewrite_refs(&object.value, &keys, &ids, last_pass) else {
                    continue;
                };
                let id = match existing_id(&object.key, &object.value) {
                    Some(id) => id,
                    None => sco_id(&converted).unwrap_or_else(|| {
                        derived_id(&object.object_type, &observation_identity(obs))
                    }),
                };
                let mut converted = converted;
                if let Value::Object(map) = &mut converted {
                    map.insert("id".into(), Value::String(id.clone()));
                    map.entry("spec_version").or_insert_with(|| json!("2.1"));
                }
                ids[i] = Some(id);
                out[i] = Some(converted);
                progress = true;
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// The id an object already has (STIX 2.1 input): its key is its id.
fn existing_id(key: &str, object: &Value) -> Option<String> {
    let id = object.get("id").and_then(Value::as_str)?;
    (id == key && id.contains("--")).then(|| id.to_string())
}

/// `object` with `_ref`/`_refs` values that name local keys replaced by the
/// referenced objects' ids. `None` while a referenced object has no id yet,
/// unless `force`: then unresolvable local references are dropped.
fn rewrite_refs(
    object: &Value,
    keys: &HashMap<&str, usize>,
    ids: &[Option<String>],
    force: bool,
) -> Option<Value> {
    let Value::Object(map) = object else {
        return Some(object.clone());
    };
    let mut out = Map::new();
    for (name, value) in map {
        let resolve = |r: &str| -> Result<Option<String>, ()> {
            match keys.get(r) {
                // A reference to another object of this observation.
                Some(&i) => match &ids[i] {
                    Some(id) => Ok(Some(id.clone())),
                    None if force => Ok(None),
                    None => Err(()),
                },
                // Already an id (STIX 2.1), or dangling: kept when it looks
                // like an id, dropped otherwise.
                None => Ok(r.contains("--").then(|| r.to_string())),
            }
        };
        if name.ends_with("_ref") {
            if let Some(r) = value.as_str() {
                if let Some(id) = resolve(r).ok()? {
                    out.insert(name.clone(), Value::String(id));
                }
                continue;
            }
        }
        if name.ends_with("_refs") {
            if let Some(list) = value.as_array() {
                let mut refs = Vec::new();
                for r in list.iter().filter_map(Value::as_str) {
                    if let Some(id) = resolve(r).ok()? {
                        refs.push(Value::String(id));
                    }
                }
                if !refs.is_empty() {
                    out.insert(name.clone(), Value::Array(refs));
                }
                continue;
            }
        }
        out.insert(name.clone(), value.clone());
    }
    Some(Value::Object(out))
}

/// The observed-data object for `obs`, referencing `sco_ids`.
pub fn observed_data(obs: &Observation, sco_ids: &[String], sensor: &SensorIdentity) -> Value {
    let time = obs.last_observed.to_stix_millis();
    json!({
        "type": "observed-data",
        "spec_version": "2.1",
        "id": observed_data_id(obs),
        "created": time,
        "modified": time,
        "created_by_ref": sensor.id,
        "first_observed": obs.first_observed.to_stix_millis(),
        "last_observed": obs.last_observed.to_stix_millis(),
        "number_observed": obs.number_observed,
        "object_refs": sco_ids,
    })
}

/// What one match says about time and volume: the span of its
/// observations, their total count, and the observed-data ids citing them.
struct Seen {
    first: Timestamp,
    last: Timestamp,
    count: u64,
    refs: Vec<String>,
}

impl Seen {
    fn of(m: &Match) -> Seen {
        let first = m.observations.iter().map(|o| o.first_observed).min();
        let last = m.observations.iter().map(|o| o.last_observed).max();
        let first = first.unwrap_or(Timestamp::EPOCH);
        Seen {
            first,
            last: last.unwrap_or(first),
            count: m
                .observations
                .iter()
                .map(|o| u64::from(o.number_observed))
                .sum(),
            refs: m.observations.iter().map(|o| observed_data_id(o)).collect(),
        }
    }
}

/// A sighting object; `created`/`modified` are its version times.
fn sighting_object(
    id: &str,
    (created, modified): (Timestamp, Timestamp),
    indicator: &str,
    seen: &Seen,
    sensor: &SensorIdentity,
) -> Value {
    json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": id,
        "created": created.to_stix_millis(),
        "modified": modified.to_stix_millis(),
        "created_by_ref": sensor.id,
        "sighting_of_ref": indicator,
        "observed_data_refs": seen.refs,
        "where_sighted_refs": [sensor.id],
        "first_seen": seen.first.to_stix_millis(),
        "last_seen": seen.last.to_stix_millis(),
        "count": seen.count.clamp(1, 999_999_999),
    })
}

/// The sighting of `m`'s indicator.
pub fn sighting(m: &Match, sensor: &SensorIdentity) -> Value {
    let seen = Seen::of(m);
    sighting_object(
        &sighting_id(m),
        (seen.last, seen.last),
        &m.indicator.to_string(),
        &seen,
        sensor,
    )
}

/// Every object a match produces, in an order where referenced objects
/// come first: cyber-observables, observed-data, then the sighting. The
/// sensor identity is not included (emit it once per output).
pub fn match_objects(m: &Match, sensor: &SensorIdentity) -> Vec<Value> {
    let (mut objects, _) = evidence(m, sensor);
    objects.push(sighting(m, sensor));
    objects
}

/// The cyber-observables and observed-data of a match, and the id of the
/// sighted observable (the object `m.object_key` names) when known.
pub fn evidence(m: &Match, sensor: &SensorIdentity) -> (Vec<Value>, Option<String>) {
    let mut objects = Vec::new();
    let mut sighted = None;
    for obs in &m.observations {
        let scos = cyber_observables(obs);
        let ids: Vec<String> = scos
            .iter()
            .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        if let Some(key) = &m.object_key {
            // `cyber_observables` keeps the observation's object order.
            let at = obs.objects.iter().position(|o| &o.key == key);
            sighted = at.and_then(|i| scos.get(i)?.get("id")?.as_str().map(str::to_string));
        }
        objects.extend(scos);
        objects.push(observed_data(obs, &ids, sensor));
    }
    (objects, sighted)
}

/// Folds repeated sightings of one indicator on one observable into one
/// sighting object: the first hit opens an aggregate, and every hit within
/// `window` of it updates the same sighting id with a higher `count`, a
/// later `last_seen` and a newer `modified`. Bounded in open aggregates.
#[derive(Debug)]
pub struct Aggregator {
    window_nanos: i128,
    max_open: usize,
    open: HashMap<(String, String), Aggregate>,
    /// Aggregates closed early because too many were open.
    pub evicted: u64,
}

#[derive(Debug, Clone)]
struct Aggregate {
    id: String,
    created: Timestamp,
    modified: Timestamp,
    first_seen: Timestamp,
    last_seen: Timestamp,
    count: u64,
    refs: Vec<String>,
}

/// Most observed-data ids one aggregated sighting cites; later hits still
/// count.
const MAX_AGGREGATE_REFS: usize = 100;

impl Aggregator {
    /// Aggregates over `window_nanos` of event time, at most `max_open` at
    /// once.
    pub fn new(window_nanos: i128, max_open: usize) -> Aggregator {
        Aggregator {
            window_nanos,
            max_open: max_open.max(1),
            open: HashMap::new(),
            evicted: 0,
        }
    }

    /// Number of open aggregates.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The sighting for `m` on the observable `observable`: a new one, or
    /// the next version of the open aggregate.
    pub fn sighting(&mut self, m: &Match, observable: &str, sensor: &SensorIdentity) -> Value {
        let seen = Seen::of(m);
        let indicator = m.indicator.to_string();
        let key = (indicator.clone(), observable.to_string());

        let expired = self
            .open
            .get(&key)
            .is_some_and(|a| seen.last.nanos_since(a.first_seen) >= self.window_nanos);
        if expired {
            self.open.remove(&key);
        }
        if !self.open.contains_key(&key) {
            self.make_room(seen.last);
            let name = format!("sighting\n{indicator}\n{observable}\n{}", seen.first);
            self.open.insert(
                key.clone(),
                Aggregate {
                    id: derived_id("sighting", &name),
                    created: seen.last,
                    modified: seen.last,
                    first_seen: seen.first,
                    last_seen: seen.last,
                    count: 0,
                    refs: Vec::new(),
                },
            );
        }
        let Some(aggregate) = self.open.get_mut(&key) else {
            return sighting(m, sensor);
        };
        if aggregate.count > 0 {
            // Each update is a newer version, even for events at one time.
            let bumped = Timestamp::from_unix_nanos(aggregate.modified.unix_nanos() + 1_000_000);
            aggregate.modified = seen.last.max(bumped);
        }
        aggregate.count += seen.count;
        aggregate.first_seen = aggregate.first_seen.min(seen.first);
        aggregate.last_seen = aggregate.last_seen.max(seen.last);
        for r in &seen.refs {
            if aggregate.refs.len() < MAX_AGGREGATE_REFS && !aggregate.refs.contains(r) {
                aggregate.refs.push(r.clone());
            }
        }
        let total = Seen {
            first: aggregate.first_seen,
            last: aggregate.last_seen,
            count: aggregate.count,
            refs: aggregate.refs.clone(),
        };
        let versions = (aggregate.created, aggregate.modified);
        sighting_object(&aggregate.id, versions, &indicator, &total, sensor)
    }

    /// Closes aggregates whose window has passed at `now`, then the oldest
    /// ones while too many are open.
    fn make_room(&mut self, now: Timestamp) {
        if self.open.len() < self.max_open {
            return;
        }
        let window = self.window_nanos;
        self.open
            .retain(|_, a| now.nanos_since(a.first_seen) < window);
        while self.open.len() >= self.max_open {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, a)| a.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.open.remove(&key);
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }
}

/// Remembers which object ids were already written, so that an observation
/// matched by several indicators is written once. Bounded: forgets
/// everything past `limit` ids (a repeat is then written again, harmless
/// since ids are deterministic).
#[derive(Debug)]
pub struct EmittedIds {
    /// Seeded at random, as every set keyed by what events carry.
    seen: std::collections::HashSet<String, foldhash::fast::RandomState>,
    limit: usize,
}

impl EmittedIds {
    /// A set that holds at most `limit` ids.
    pub fn new(limit: usize) -> EmittedIds {
        EmittedIds {
            seen: Default::default(),
            limit,
        }
    }

    /// True the first time `id` is offered (until the set is reset).
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.seen.len() >= self.limit {
            self.seen.clear();
        }
        self.seen.insert(id.to_string());
        true
    }
}

/// Groups output objects by id, keeping the last of each, for `--bundle`.
pub fn bundle(objects: Vec<Value>) -> Value {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let mut order = Vec::new();
    for object in objects {
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !by_id.contains_key(&id) {
            order.push(id.clone());
        }
        by_id.insert(id, object);
    }
    let objects: Vec<Value> = order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect();
    let name = objects
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    json!({"type": "bundle", "id": derived_id("bundle", &name), "objects": objects})
}
