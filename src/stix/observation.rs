//! Observations: what patterns are evaluated against.
//!
//! One observation is one STIX `observed-data`: a time interval
//! (`first_observed` to `last_observed`), a count (`number_observed`), and
//! the cyber-observables seen. STIX 2.0 carries the objects inline in an
//! `objects` dictionary keyed by local references ("0", "1", …); STIX 2.1
//! lists their ids in `object_refs`, and the objects travel beside it in the
//! same bundle. Both become the same [`Observation`], whose objects are keyed
//! by the reference that `_ref` properties use, so that references resolve
//! the same way in both styles.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::timestamp::Timestamp;

/// Largest `number_observed` STIX allows.
pub const MAX_NUMBER_OBSERVED: u64 = 999_999_999;

/// One observed-data: a time interval, a count and the objects seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The observed-data id, when it has one.
    pub id: Option<String>,
    /// Start of the interval in which the objects were seen.
    pub first_observed: Timestamp,
    /// End of the interval (equal to the start for a single event).
    pub last_observed: Timestamp,
    /// How many times the objects were seen in the interval.
    pub number_observed: u32,
    /// The objects, sorted by the reference used to reach them: the local
    /// key in STIX 2.0, the object id in STIX 2.1.
    pub objects: Vec<ObservedObject>,
    /// The id of the observed-data written for this observation, once
    /// asked for (see [`crate::stix::sighting::observed_data_id`]). The
    /// pipeline never changes an observation after it is built; one
    /// changed in place after its id was asked for keeps that first id.
    pub(crate) output_id: OutputId,
}

/// A lazily derived id. Deriving it hashes the whole observation, and one
/// match asks for it several times (the observed-data, the sighting's
/// references, the sighting's own id). A clone starts empty, since a
/// clone may be changed; the cache never takes part in comparisons.
#[derive(Default)]
pub(crate) struct OutputId(std::sync::OnceLock<String>);

impl OutputId {
    /// The id, derived by `derive` on first use.
    pub(crate) fn get_or_derive(&self, derive: impl FnOnce() -> String) -> &str {
        self.0.get_or_init(derive)
    }
}

impl Clone for OutputId {
    fn clone(&self) -> Self {
        OutputId::default()
    }
}

impl PartialEq for OutputId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for OutputId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputId")
    }
}

/// One object of an observation, with its type read once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObservedObject {
    /// The reference `_ref` properties use to reach it.
    pub key: String,
    /// Its `type` property ("" when it has none).
    #[serde(skip)]
    pub object_type: String,
    /// The object itself.
    pub value: Value,
}

/// Sorts objects by key and reads their types.
fn collect_objects(objects: impl IntoIterator<Item = (String, Value)>) -> Vec<ObservedObject> {
    let mut out: Vec<ObservedObject> = objects
        .into_iter()
        .map(|(key, value)| {
            let object_type = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ObservedObject {
                key,
                object_type: object_type.to_string(),
                value,
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// Why a JSON value is not a usable observation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObservationError {
    /// The value is not a JSON object.
    #[error("observed-data must be a JSON object")]
    NotAnObject,
    /// A required property is absent.
    #[error("observed-data {id}: missing required property {property}")]
    Missing {
        /// The observed-data id, or "(no id)".
        id: String,
        /// The missing property.
        property: &'static str,
    },
    /// A property has the wrong type or an invalid value.
    #[error("observed-data {id}: {property} {reason}")]
    Invalid {
        /// The observed-data id, or "(no id)".
        id: String,
        /// The offending property.
        property: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Observation {
    /// An observation of one event at `time` holding `objects`.
    pub fn single(
        time: Timestamp,
        objects: impl IntoIterator<Item = (String, Value)>,
    ) -> Observation {
        Observation {
            id: None,
            first_observed: time,
            last_observed: time,
            number_observed: 1,
            objects: collect_objects(objects),
            output_id: OutputId::default(),
        }
    }

    /// The object reached by reference `key`.
    pub fn object(&self, key: &str) -> Option<&Value> {
        self.entry(key).map(|o| &o.value)
    }

    /// The object reached by reference `key`, with its key and type.
    pub fn entry(&self, key: &str) -> Option<&ObservedObject> {
        let i = self
            .objects
            .binary_search_by(|o| o.key.as_str().cmp(key))
            .ok()?;
        self.objects.get(i)
    }

    /// Reads an observed-data object. `bundle` resolves STIX 2.1
    /// `object_refs`; ids it does not hold are left out (a pattern cannot
    /// reach them, as §9.7.4 requires).
    ///
    /// # Errors
    ///
    /// Returns [`ObservationError`] when a required property is missing or
    /// invalid.
    pub fn from_observed_data(
        value: &Value,
        bundle: &HashMap<&str, &Value>,
    ) -> Result<Observation, ObservationError> {
        let obj = value.as_object().ok_or(ObservationError::NotAnObject)?;
        let id = obj.get("id").and_then(Value::as_str).map(str::to_string);
        let label = id.clone().unwrap_or_else(|| "(no id)".to_string());

        let first_observed = time_property(obj, "first_observed", &label)?;
        let last_observed = time_property(obj, "last_observed", &label)?;
        if last_observed < first_observed {
            return Err(ObservationError::Invalid {
                id: label,
                property: "last_observed",
                reason: "is earlier than first_observed".into(),
            });
        }
        let number_observed = match obj.get("number_observed") {
            None => {
                let property = "number_observed";
                return Err(ObservationError::Missing {
                    id: label,
                    property,
                });
            }
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_NUMBER_OBSERVED).contains(&n) => n as u32,
                _ => {
                    return Err(ObservationError::Invalid {
                        id: label,
                        property: "number_observed",
                        reason: format!("must be an integer from 1 to {MAX_NUMBER_OBSERVED}"),
                    });
                }
            },
        };

        let objects = if let Some(inline) = obj.get("objects") {
            let map = inline
                .as_object()
                .ok_or_else(|| ObservationError::Invalid {
                    id: label.clone(),
                    property: "objects",
                    reason: "must be a dictionary of objects".into(),
                })?;
            collect_objects(map.iter().map(|(k, v)| (k.clone(), v.clone())))
        } else if let Some(refs) = obj.get("object_refs") {
            let list = refs.as_array().ok_or_else(|| ObservationError::Invalid {
                id: label.clone(),
                property: "object_refs",
                reason: "must be a list of identifiers".into(),
            })?;
            collect_objects(
                list.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|r| bundle.get(r).map(|o| (r.to_string(), (*o).clone()))),
            )
        } else {
            let property = "objects or object_refs";
            return Err(ObservationError::Missing {
                id: label,
                property,
            });
        };

        Ok(Observation {
            id,
            first_observed,
            last_observed,
            number_observed,
            objects,
            output_id: OutputId::default(),
        })
    }
}

fn time_property(
    obj: &Map<String, Value>,
    property: &'static str,
    label: &str,
) -> Result<Timestamp, ObservationError> {
    let text = obj.get(property).ok_or_else(|| ObservationError::Missing {
        id: label.to_string(),
        property,
    })?;
    let text = text.as_str().ok_or_else(|| ObservationError::Invalid {
        id: label.to_string(),
        property,
        reason: "must be a timestamp string".into(),
    })?;
    Timestamp::parse_rfc3339(text).map_err(|e| ObservationError::Invalid {
        id: label.to_string(),
        property,
        reason: format!("{text:?}: {e}"),
    })
}

/// Reads every observed-data in one JSON document: a bundle, a list of
/// objects, or a single observed-data. Other objects in the document are
/// used only to resolve `object_refs`.
pub fn observations_from_document(doc: &Value) -> Vec<Result<Observation, ObservationError>> {
    let objects: Vec<&Value> = match doc {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("bundle") => {
            match map.get("objects").and_then(Value::as_array) {
                Some(items) => items.iter().collect(),
                None => Vec::new(),
            }
        }
        other => vec![other],
    };
    let index: HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(|id| (id, *o)))
        .collect();
    objects
        .iter()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("observed-data"))
        .map(|o| Observation::from_observed_data(o, &index))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stix20_inline_objects() {
        let doc = json!({
            "type": "observed-data", "id": "observed-data--1",
            "first_observed": "2020-01-01T00:00:00Z", "last_observed": "2020-01-01T00:01:00Z",
            "number_observed": 3,
            "objects": {"0": {"type": "ipv4-addr", "value": "198.51.100.7"}}
        });
        let obs = observations_from_document(&doc).remove(0).unwrap();
        assert_eq!(obs.number_observed, 3);
        assert_eq!(
            obs.object("0").and_then(|o| o.get("value")),
            Some(&json!("198.51.100.7"))
        );
    }

    #[test]
    fn stix21_object_refs_resolve_within_the_bundle_only() {
        let doc = json!({"type": "bundle", "id": "bundle--1", "objects": [
            {"type": "observed-data", "id": "observed-data--1",
             "first_observed": "2020-01-01T00:00:00Z", "last_observed": "2020-01-01T00:00:00Z",
             "number_observed": 1, "object_refs": ["ipv4-addr--a", "ipv4-addr--missing"]},
            {"type": "ipv4-addr", "id": "ipv4-addr--a", "value": "198.51.100.7"},
            {"type": "ipv4-addr", "id": "ipv4-addr--b", "value": "203.0.113.1"}
        ]});
        let obs = observations_from_document(&doc).remove(0).unwrap();
        let keys: Vec<&str> = obs.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["ipv4-addr--a"]);
    }

    #[test]
    fn invalid_observed_data_is_explained() {
        let base = json!({"type": "observed-data", "id": "observed-data--x",
            "first_observed": "2020-01-01T00:00:00Z", "last_observed": "2020-01-01T00:00:00Z",
            "number_observed": 1, "objects": {}});
        let mut no_count = base.clone();
        no_count.as_object_mut().unwrap().remove("number_observed");
        let mut zero = base.clone();
        zero["number_observed"] = json!(0);
        let mut reversed = base.clone();
        reversed["first_observed"] = json!("2021-01-01T00:00:00Z");
        let mut bad_time = base.clone();
        bad_time["last_observed"] = json!("yesterday");
        for (doc, needle) in [
            (no_count, "missing required property number_observed"),
            (zero, "number_observed must be"),
            (reversed, "earlier than first_observed"),
            (bad_time, "last_observed \"yesterday\""),
        ] {
            let err = observations_from_document(&doc).remove(0).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
