//! STIX 2.1 indicator objects, read into what the matcher needs.

use std::sync::Arc;

use serde_json::Value;

use super::timestamp::Timestamp;
use crate::matcher::IndicatorRecord;

/// What one STIX object means for the indicator set.
#[derive(Debug, Clone, PartialEq)]
pub enum IndicatorUpdate {
    /// Add or replace this indicator version.
    Upsert(IndicatorRecord),
    /// Revoke the indicator (`revoked: true`).
    Revoke {
        /// The indicator id.
        id: Arc<str>,
        /// The revoking version.
        modified: Timestamp,
    },
    /// Not a STIX-pattern indicator: counted and skipped.
    Skipped {
        /// The indicator id.
        id: Arc<str>,
        /// Why, e.g. `pattern_type "sigma" is not supported`.
        reason: String,
    },
}

/// Why an indicator object is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("indicator {id}: {reason}")]
pub struct IndicatorObjectError {
    /// The id, or "(no id)".
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads one STIX object. Returns `None` for objects that are not
/// indicators (they are ignored).
///
/// # Errors
///
/// Returns [`IndicatorObjectError`] when a required property is missing or
/// invalid.
pub fn read_indicator(object: &Value) -> Option<Result<IndicatorUpdate, IndicatorObjectError>> {
    if object.get("type").and_then(Value::as_str) != Some("indicator") {
        return None;
    }
    Some(read(object))
}

fn read(object: &Value) -> Result<IndicatorUpdate, IndicatorObjectError> {
    let label = object
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("(no id)")
        .to_string();
    let fail = |reason: String| IndicatorObjectError {
        id: label.clone(),
        reason,
    };
    let id: Arc<str> = match object.get("id").and_then(Value::as_str) {
        Some(id) if id.starts_with("indicator--") => id.into(),
        Some(id) => {
            return Err(fail(format!(
                "id {id:?} does not start with \"indicator--\""
            )));
        }
        None => return Err(fail("missing required property id".into())),
    };
    let time = |property: &str| -> Result<Option<Timestamp>, IndicatorObjectError> {
        match object.get(property) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Timestamp::parse_rfc3339(s)
                .map(Some)
                .map_err(|e| fail(format!("{property} {s:?}: {e}"))),
            Some(_) => Err(fail(format!("{property} must be a timestamp string"))),
        }
    };
    let modified = time("modified")?
        .or(time("created")?)
        .unwrap_or(Timestamp::EPOCH);

    if object.get("revoked").and_then(Value::as_bool) == Some(true) {
        return Ok(IndicatorUpdate::Revoke { id, modified });
    }
    let pattern_type = object
        .get("pattern_type")
        .and_then(Value::as_str)
        .unwrap_or("stix");
    if pattern_type != "stix" {
        let reason = format!("pattern_type {pattern_type:?} is not supported");
        return Ok(IndicatorUpdate::Skipped { id, reason });
    }
    let pattern = match object.get("pattern") {
        Some(Value::String(p)) => p.as_str(),
        Some(_) => return Err(fail("pattern must be a string".into())),
        None => return Err(fail("missing required property pattern".into())),
    };
    let valid_from = time("valid_from")?;
    let valid_until = time("valid_until")?;
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        if until <= from {
            return Err(fail(format!(
                "valid_until {until} is not after valid_from {from}"
            )));
        }
    }
    Ok(IndicatorUpdate::Upsert(IndicatorRecord {
        id,
        pattern: pattern.into(),
        valid_from,
        valid_until,
        modified,
    }))
}

/// The STIX objects of one JSON document: a bundle's objects, an array's
/// elements, or the document itself.
pub fn document_objects(doc: &Value) -> Vec<&Value> {
    match doc {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("bundle") => map
            .get("objects")
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> Value {
        json!({"type": "indicator", "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "created": "2024-01-01T00:00:00.000Z", "modified": "2024-02-01T00:00:00.000Z",
            "pattern": "[domain-name:value = 'evil.example']", "pattern_type": "stix",
            "valid_from": "2024-01-01T00:00:00Z"})
    }

    #[test]
    fn reads_a_stix_indicator() {
        let Some(Ok(IndicatorUpdate::Upsert(record))) = read_indicator(&base()) else {
            panic!("expected an upsert")
        };
        assert_eq!(&*record.pattern, "[domain-name:value = 'evil.example']");
        assert_eq!(record.modified.to_string(), "2024-02-01T00:00:00Z");
        assert!(record.valid_until.is_none());
    }

    #[test]
    fn other_objects_are_ignored_and_other_pattern_types_skipped() {
        assert!(read_indicator(&json!({"type": "malware"})).is_none());
        let mut sigma = base();
        sigma["pattern_type"] = json!("sigma");
        assert!(matches!(
            read_indicator(&sigma),
            Some(Ok(IndicatorUpdate::Skipped { .. }))
        ));
    }

    #[test]
    fn revoked_and_invalid() {
        let mut revoked = base();
        revoked["revoked"] = json!(true);
        assert!(matches!(
            read_indicator(&revoked),
            Some(Ok(IndicatorUpdate::Revoke { .. }))
        ));
        let mut no_pattern = base();
        no_pattern.as_object_mut().unwrap().remove("pattern");
        let err = read_indicator(&no_pattern).unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("missing required property pattern")
        );
        let mut backwards = base();
        backwards["valid_until"] = json!("2023-01-01T00:00:00Z");
        assert!(read_indicator(&backwards).unwrap().is_err());
    }
}
