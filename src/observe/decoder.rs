//! Event decoding: one input document in, observations out, in any of the
//! supported formats or detected per document.

use std::sync::Arc;

use serde_json::Value;

use super::fields::{FieldSet, Fields};
use super::mapping::{EventError, Mapping, MappingError};
use super::prefilter::{Prefilter, Screen};
use crate::matcher::Snapshot;
use crate::stix::observation::{Observation, ObservationError, observations_from_document};
use crate::stix::timestamp::Timestamp;

/// The formats shipped with Sightline, by name, with their mapping files.
const BUILTIN: [(&str, &str); 4] = [
    ("suricata", include_str!("mappings/suricata.toml")),
    ("zeek", include_str!("mappings/zeek.toml")),
    ("ocsf", include_str!("mappings/ocsf.toml")),
    ("ecs", include_str!("mappings/ecs.toml")),
];

/// Names of the shipped log formats, in the order `auto` tries them.
pub fn builtin_formats() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// The shipped mapping of `name`.
///
/// # Errors
///
/// Returns [`MappingError`] when `name` is unknown or (a bug) the shipped
/// file does not compile.
pub fn builtin_mapping(name: &str) -> Result<Mapping, MappingError> {
    let text = BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| MappingError::Syntax {
            name: name.to_string(),
            reason: "no such built-in format".into(),
        })?;
    Mapping::from_toml(name, text)
}

/// Why one document gave no observation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A STIX observed-data that is not valid.
    #[error(transparent)]
    Stix(#[from] ObservationError),
    /// A log event its mapping cannot use.
    #[error(transparent)]
    Event(#[from] EventError),
    /// `auto` found no format for the document.
    #[error("no known format (tried STIX and {0})")]
    Unknown(String),
    /// A STIX document without observed-data.
    #[error("STIX document holds no observed-data")]
    NoObservedData,
}

/// One decoded observation and the format (and kind) it was read as.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The observation.
    pub observation: Observation,
    /// `stix`, or `format/kind` for log events (`zeek/conn`).
    pub label: Arc<str>,
}

/// How documents are read.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// STIX observed-data.
    Stix,
    /// Log events through one mapping.
    Mapped(Box<Mapping>),
    /// Detect per document: STIX, then each mapping in order.
    Auto {
        /// The candidate mappings.
        mappings: Vec<Mapping>,
        /// The fields detection needs, from every mapping, and `type`.
        detection: FieldSet,
    },
}

impl Decoder {
    /// The decoder of a format name (`auto`, `stix`, or a built-in log
    /// format), or of `user`'s mapping. With `auto`, `user` is tried
    /// before the built-in formats; with any other name, `user` replaces
    /// it.
    ///
    /// # Errors
    ///
    /// Returns [`MappingError`] when `format` is not a known name.
    pub fn for_format(format: &str, user: Option<Mapping>) -> Result<Decoder, MappingError> {
        Ok(match (format, user) {
            ("auto", user) => {
                let mut mappings: Vec<Mapping> = user.into_iter().collect();
                for name in builtin_formats() {
                    mappings.push(builtin_mapping(name)?);
                }
                Decoder::auto(mappings)
            }
            (_, Some(user)) => Decoder::Mapped(Box::new(user)),
            ("stix", None) => Decoder::Stix,
            (name, None) => Decoder::Mapped(Box::new(builtin_mapping(name)?)),
        })
    }

    /// A decoder trying STIX and then each of `mappings`.
    pub fn auto(mappings: Vec<Mapping>) -> Decoder {
        let mut detection = FieldSet::new();
        detection.add("type");
        for mapping in &mappings {
            for path in mapping.detection_paths() {
                detection.add(path);
            }
        }
        Decoder::Auto {
            mappings,
            detection,
        }
    }

    /// Decodes one document's text.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] when nothing usable comes out; a STIX
    /// document may still yield some observations and errors for others
    /// (each observed-data is reported on its own).
    pub fn decode(&self, text: &str) -> Vec<Result<Decoded, DecodeError>> {
        self.decode_items(text, None)
            .into_iter()
            .map(|r| {
                r.map(|item| match item {
                    Item::Observed(decoded) => decoded,
                    Item::Cleared { .. } => unreachable!("nothing is cleared without a screen"),
                })
            })
            .collect()
    }

    /// Decodes one document's text; with a screen, log events are first
    /// screened against its snapshot: an event on which no index of the
    /// snapshot finds anything comes out as [`Item::Cleared`], without its
    /// observation (see `observe::prefilter`). STIX documents are always
    /// decoded. The prefilter's plans are made for this decoder's
    /// mappings: give each decoder its own.
    ///
    /// # Errors
    ///
    /// As [`Decoder::decode`]; a cleared event would have decoded.
    pub(crate) fn decode_items(
        &self,
        text: &str,
        screen: Option<(&Snapshot, &mut Prefilter)>,
    ) -> Vec<Result<Item, DecodeError>> {
        let screen = screen.map(|(snapshot, prefilter)| {
            prefilter.prepare(snapshot, self.mappings());
            (snapshot, prefilter)
        });
        self.decode_with(text, screen)
    }

    /// The log mappings, in the order their numbers refer to.
    fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        let slice: &[Mapping] = match self {
            Decoder::Stix => &[],
            Decoder::Mapped(mapping) => std::slice::from_ref(&**mapping),
            Decoder::Auto { mappings, .. } => mappings,
        };
        slice.iter()
    }

    fn decode_with(
        &self,
        text: &str,
        screen: Option<(&Snapshot, &mut Prefilter)>,
    ) -> Vec<Result<Item, DecodeError>> {
        match self {
            Decoder::Stix => decode_stix(text),
            Decoder::Mapped(mapping) => vec![decode_mapped(mapping, 0, text, screen)],
            Decoder::Auto {
                mappings,
                detection,
            } => {
                let fields = match detection.extract(text) {
                    Ok(fields) => fields,
                    Err(e) => return vec![Err(DecodeError::Json(e.to_string()))],
                };
                let stix_type = fields.get(0).and_then(Value::as_str);
                if matches!(stix_type, Some("observed-data" | "bundle")) {
                    return decode_stix(text);
                }
                for (mapping_no, mapping) in mappings.iter().enumerate() {
                    if mapping.detects_in(detection, &fields) {
                        return vec![decode_mapped(mapping, mapping_no, text, screen)];
                    }
                }
                if text.trim_start().starts_with('[') {
                    // A JSON array: STIX objects as a list.
                    return decode_stix(text);
                }
                let names: Vec<&str> = mappings.iter().map(|m| m.format()).collect();
                vec![Err(DecodeError::Unknown(names.join(", ")))]
            }
        }
    }
}

/// What one decoded document, or one observed-data of it, gave.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// An observation.
    Observed(Decoded),
    /// A log event that no indicator of the screening snapshot can match:
    /// what matching needs of it, without its observation.
    Cleared {
        /// The event's time (its observation's `last_observed`).
        last_observed: Timestamp,
        /// `format/kind`, as [`Decoded::label`].
        label: Arc<str>,
    },
}

fn decode_stix(text: &str) -> Vec<Result<Item, DecodeError>> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(e) => return vec![Err(DecodeError::Json(e.to_string()))],
    };
    let found = observations_from_document(&doc);
    if found.is_empty() {
        return vec![Err(DecodeError::NoObservedData)];
    }
    found
        .into_iter()
        .map(|r| {
            r.map(|observation| {
                Item::Observed(Decoded {
                    observation,
                    label: Arc::from("stix"),
                })
            })
            .map_err(DecodeError::from)
        })
        .collect()
}

thread_local! {
    /// Decoded fields, reused from one event to the next on this thread.
    static SCRATCH: std::cell::RefCell<Fields> = std::cell::RefCell::new(Fields::default());
}

fn decode_mapped(
    mapping: &Mapping,
    mapping_no: usize,
    text: &str,
    screen: Option<(&Snapshot, &mut Prefilter)>,
) -> Result<Item, DecodeError> {
    SCRATCH.with(|scratch| {
        let mut fields = scratch.borrow_mut();
        mapping
            .fields()
            .extract_into(text, &mut fields)
            .map_err(|e| DecodeError::Json(e.to_string()))?;
        let (kind_no, time) = match screen {
            Some((snapshot, prefilter)) => {
                match prefilter.screen(snapshot, mapping_no, mapping, &fields)? {
                    Screen::Build(kind_no, time) => (kind_no, time),
                    Screen::Clear(last_observed, label) => {
                        let label = Arc::clone(label);
                        return Ok(Item::Cleared {
                            last_observed,
                            label,
                        });
                    }
                }
            }
            None => mapping.kind_and_time(&fields)?,
        };
        let (observation, kind) = mapping.observe_kind(kind_no, time, &fields)?;
        Ok(Item::Observed(Decoded {
            label: Arc::clone(kind),
            observation,
        }))
    })
}
