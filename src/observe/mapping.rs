//! Mapping files: how a JSON log event becomes a STIX observation.
//!
//! The format is documented in `MAPPINGS.md` beside this file. A
//! [`MappingConfig`] is what the TOML says; [`Mapping`] is the validated,
//! compiled form, with every field path registered in one [`FieldSet`] so
//! that an event is decoded once, for only the fields that some rule uses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{FieldId, FieldSet, Fields};
use crate::stix::net::parse_ip_net;
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;

/// A mapping file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Format name for summaries.
    pub format: String,
    /// The kinds of events, tried in order.
    #[serde(rename = "kind")]
    pub kinds: Vec<KindConfig>,
}

/// One kind of event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    /// Kind name for summaries (`conn`, `dns`, …).
    pub name: String,
    /// When the kind applies.
    #[serde(default)]
    pub detect: DetectConfig,
    /// Where the event time is.
    pub time: TimeConfig,
    /// The cyber-observables to build.
    #[serde(rename = "object", default)]
    pub objects: Vec<ObjectConfig>,
    /// Cyber-observables built one per element of a list.
    #[serde(default)]
    pub each: Vec<EachConfig>,
}

/// One object per element of a list: addresses in DNS answers, e-mail
/// recipients, OCSF observables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EachConfig {
    /// Path of the list.
    pub list: String,
    /// Key prefix of the objects (`answer` gives `answer0`, `answer1`, …).
    pub key: String,
    /// The element's member holding the value; absent for lists of plain
    /// values.
    pub member: Option<String>,
    /// The STIX type of every object, or `ip`, or `address` (an IP
    /// address when the value reads as one, else a domain name).
    #[serde(rename = "type")]
    pub object_type: Option<String>,
    /// The type chosen by a member of the element, through a table.
    pub type_from: Option<TypeFrom>,
}

/// A type chosen by an element's member: `{ member = "type_id", map =
/// { "2" = "ip", "1" = "domain-name" } }`. Elements whose member is not in
/// the map are skipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeFrom {
    /// The member holding the type code.
    pub member: String,
    /// Type code (as text) to STIX type.
    pub map: BTreeMap<String, String>,
}

/// Fields that must be present, and fields that must have a value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Paths that must be present.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Paths that must equal the given values.
    #[serde(default)]
    pub equals: BTreeMap<String, toml::Value>,
}

/// The event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// Path of the time field.
    pub field: String,
    /// How to read it.
    pub format: TimeFormat,
}

/// How a time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 text with `Z` or an offset.
    Rfc3339,
    /// Seconds since 1970, number or numeric text.
    Epoch,
    /// Milliseconds since 1970.
    EpochMillis,
}

/// One cyber-observable rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectConfig {
    /// Name of the object inside the observation.
    pub key: String,
    /// STIX type, or `ip` for an address of either family.
    #[serde(rename = "type")]
    pub object_type: String,
    /// Fields that must all be present for the object to be built.
    #[serde(default)]
    pub requires: Option<Vec<String>>,
    /// The properties.
    pub properties: BTreeMap<String, PropertyConfig>,
}

/// How one property gets its value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyConfig {
    /// A field path, value as it is.
    Path(String),
    /// A table.
    Rule(PropertyRule),
}

/// The table form of a property.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyRule {
    /// A field path.
    pub field: Option<String>,
    /// Text built from fields: `{path}` is replaced by the field's value.
    pub template: Option<String>,
    /// A reference to another object of the kind, by key.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// A dictionary of sub-properties.
    pub dict: Option<BTreeMap<String, PropertyConfig>>,
    /// A constant, the same for every event of the kind (a protocol the
    /// log implies, a fixed label).
    #[serde(rename = "const")]
    pub constant: Option<toml::Value>,
    /// How to normalise the value.
    #[serde(rename = "as", default)]
    pub normalize: Normalize,
    /// Put the value in a list.
    #[serde(default)]
    pub list: bool,
}

/// Value normalisers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// The value as it is.
    #[default]
    Raw,
    /// Any scalar as text.
    String,
    /// A whole number (numeric text accepted).
    Integer,
    /// Lower-cased text.
    Lowercase,
    /// Lower-cased, without a trailing dot.
    Domain,
    /// An IP address in canonical text; from `address:port` (or
    /// `[v6-address]:port`) the address.
    Ip,
    /// A port number: a number, numeric text, or the port of
    /// `address:port`.
    Port,
    /// A hex digest, lower-cased.
    Hash,
    /// A URL; `http://` put in front when it has no scheme.
    Url,
    /// A time in the kind's format, written as STIX RFC 3339.
    Timestamp,
}

/// Why a mapping file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The TOML does not parse or does not have the expected shape.
    #[error("mapping {name}: {reason}")]
    Syntax {
        /// File or built-in name.
        name: String,
        /// The parser's explanation.
        reason: String,
    },
    /// A rule is inconsistent.
    #[error("mapping {name}, kind {kind}, object {object}: {reason}")]
    Rule {
        /// File or built-in name.
        name: String,
        /// The kind.
        kind: String,
        /// The object key.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why one event could not become an observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// No kind of the mapping applies.
    #[error("no {format} event kind matches this event")]
    NoKind {
        /// The format name.
        format: String,
    },
    /// The time field is missing or unreadable.
    #[error("event of kind {kind}: time field {field}: {reason}")]
    Time {
        /// The kind.
        kind: String,
        /// The time field path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No object could be built from the event.
    #[error("event of kind {kind} carries none of the fields its mapping uses")]
    Empty {
        /// The kind.
        kind: String,
    },
}

/// A compiled property rule.
#[derive(Debug, Clone)]
pub(super) enum Property {
    Field {
        field: FieldRef,
        normalize: Normalize,
        list: bool,
    },
    Template {
        parts: Vec<TemplatePart>,
        normalize: Normalize,
        list: bool,
    },
    Ref(String),
    Dict(Vec<(String, Property)>),
    Const(Value),
}

#[derive(Debug, Clone)]
pub(super) enum TemplatePart {
    Text(String),
    Field(FieldRef),
}

/// Where a value comes from: a field path, or an element chosen from a
/// list by one of its members (`file.hashes[algorithm_id=3].value`).
#[derive(Debug, Clone)]
pub(super) enum FieldRef {
    Plain(FieldId),
    Select {
        list: FieldId,
        key: String,
        value: String,
        rest: Vec<String>,
    },
}

impl FieldRef {
    /// Registers the fields of `path` in `fields`.
    fn compile(path: &str, fields: &mut FieldSet) -> Result<FieldRef, String> {
        let Some(open) = path.find('[') else {
            return Ok(FieldRef::Plain(fields.add(path)));
        };
        let close = path[open..]
            .find(']')
            .map(|i| open + i)
            .ok_or_else(|| format!("field {path:?}: '[' without ']'"))?;
        let (key, value) = path[open + 1..close]
            .split_once('=')
            .ok_or_else(|| format!("field {path:?}: expected [member=value]"))?;
        let rest = path[close + 1..].trim_start_matches('.');
        if path[close + 1..].contains('[') {
            return Err(format!("field {path:?}: only one [member=value] per path"));
        }
        Ok(FieldRef::Select {
            list: fields.add(&path[..open]),
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            rest: rest
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The value in one event's decoded fields.
    pub(super) fn get<'a>(&self, fields: &'a Fields) -> Option<&'a Value> {
        match self {
            FieldRef::Plain(id) => fields.get(*id),
            FieldRef::Select {
                list,
                key,
                value,
                rest,
            } => {
                let element = fields.get(*list)?.as_array()?.iter().find(|element| {
                    element.get(key.as_str()).and_then(scalar_text).as_deref() == Some(value)
                })?;
                rest.iter()
                    .try_fold(element, |at, segment| at.get(segment.as_str()))
                    .filter(|v| !v.is_null())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ObjectRule {
    pub(super) key: String,
    /// A STIX type, or `ip` (IPv4 or IPv6, as the value says).
    pub(super) object_type: String,
    pub(super) requires: Vec<FieldRef>,
    pub(super) properties: Vec<(String, Property)>,
}

impl ObjectRule {
    /// The types of the objects the rule can build.
    pub(super) fn object_types(&self) -> impl Iterator<Item = &str> {
        let types = match self.object_type.as_str() {
            "ip" => ["ipv4-addr", "ipv6-addr"],
            other => [other, ""],
        };
        types.into_iter().filter(|t| !t.is_empty())
    }

    /// True when every field the rule requires is there.
    pub(super) fn applies(&self, fields: &Fields) -> bool {
        self.requires.iter().all(|f| f.get(fields).is_some())
    }

    /// The rule's `value` property (the last one given), which decides
    /// the type of an `ip` rule's object.
    pub(super) fn value_property(&self) -> Option<&Property> {
        let value = self
            .properties
            .iter()
            .rev()
            .find(|(name, _)| name == "value");
        value.map(|(_, property)| property)
    }
}

/// The STIX object type of an address.
pub(super) fn ip_object_type(net: &ipnet::IpNet) -> &'static str {
    match net {
        ipnet::IpNet::V4(_) => "ipv4-addr",
        ipnet::IpNet::V6(_) => "ipv6-addr",
    }
}

#[derive(Debug, Clone)]
pub(super) struct Kind {
    name: String,
    /// `format/name`, the label of its observations in summaries.
    pub(super) label: Arc<str>,
    /// Detection paths as written, for detection with another field set.
    detect_paths: Vec<String>,
    detect_equal_paths: Vec<(String, Value)>,
    detect_fields: Vec<FieldId>,
    detect_equals: Vec<(FieldId, Value)>,
    time_field: FieldId,
    time_path: String,
    pub(super) time_format: TimeFormat,
    pub(super) objects: Vec<ObjectRule>,
    pub(super) each: Vec<EachRule>,
}

#[derive(Debug, Clone)]
pub(super) struct EachRule {
    list: FieldId,
    /// Objects are keyed by this and the element's position.
    pub(super) key: String,
    member: Option<String>,
    object_type: Option<String>,
    type_from: Option<TypeFrom>,
}

/// A compiled mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    format: String,
    pub(super) kinds: Vec<Kind>,
    fields: FieldSet,
}

impl Mapping {
    /// Parses and compiles a mapping file's text; `name` is used in errors.
    ///
    /// # Errors
    ///
    /// Returns [`MappingError`] when the TOML is malformed or a rule is
    /// inconsistent (unknown reference, template without fields, …).
    pub fn from_toml(name: &str, text: &str) -> Result<Mapping, MappingError> {
        let config: MappingConfig = toml::from_str(text).map_err(|e| MappingError::Syntax {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        Mapping::compile(name, &config)
    }

    /// Compiles a parsed configuration.
    ///
    /// # Errors
    ///
    /// As [`Mapping::from_toml`].
    pub fn compile(name: &str, config: &MappingConfig) -> Result<Mapping, MappingError> {
        let mut fields = FieldSet::new();
        let mut kinds = Vec::new();
        if config.kinds.is_empty() {
            let reason = "it defines no [[kind]]".to_string();
            return Err(MappingError::Syntax {
                name: name.to_string(),
                reason,
            });
        }
        for kind in &config.kinds {
            let keys: Vec<&str> = kind.objects.iter().map(|o| o.key.as_str()).collect();
            let mut objects = Vec::new();
            for object in &kind.objects {
                let fail = |reason: String| MappingError::Rule {
                    name: name.to_string(),
                    kind: kind.name.clone(),
                    object: object.key.clone(),
                    reason,
                };
                let mut properties = Vec::new();
                for (property, rule) in &object.properties {
                    if property == "type" {
                        let reason = "`type` is written from the object's own type; it cannot \
                                      be a property";
                        return Err(fail(reason.into()));
                    }
                    let compiled = compile_property(rule, &mut fields, &keys).map_err(&fail)?;
                    properties.push((property.clone(), compiled));
                }
                let requires = match &object.requires {
                    Some(paths) => paths
                        .iter()
                        .map(|p| FieldRef::compile(p, &mut fields))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(&fail)?,
                    None => properties
                        .iter()
                        .find_map(|(_, p)| first_fields(p))
                        .unwrap_or_default(),
                };
                if properties.is_empty() {
                    return Err(fail("it has no properties".into()));
                }
                objects.push(ObjectRule {
                    key: object.key.clone(),
                    object_type: object.object_type.clone(),
                    requires,
                    properties,
                });
            }
            let detect_fields = kind.detect.fields.iter().map(|p| fields.add(p)).collect();
            let detect_equals = kind
                .detect
                .equals
                .iter()
                .map(|(p, v)| (fields.add(p), toml_to_json(v)))
                .collect();
            kinds.push(Kind {
                label: Arc::from(format!("{}/{}", config.format, kind.name)),
                name: kind.name.clone(),
                detect_paths: kind.detect.fields.clone(),
                detect_equal_paths: kind
                    .detect
                    .equals
                    .iter()
                    .map(|(p, v)| (p.clone(), toml_to_json(v)))
                    .collect(),
                detect_fields,
                detect_equals,
                time_field: fields.add(&kind.time.field),
                time_path: kind.time.field.clone(),
                time_format: kind.time.format,
                objects,
                each: compile_each(name, &kind.name, &kind.each, &mut fields)?,
            });
        }
        Ok(Mapping {
            format: config.format.clone(),
            kinds,
            fields,
        })
    }

    /// The format name.
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The fields this mapping reads.
    pub fn fields(&self) -> &FieldSet {
        &self.fields
    }

    /// Every path the detection rules read.
    pub fn detection_paths(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().flat_map(|k| {
            k.detect_paths
                .iter()
                .map(String::as_str)
                .chain(k.detect_equal_paths.iter().map(|(p, _)| p.as_str()))
        })
    }

    /// True when some kind's detection rule holds on `fields`, decoded with
    /// the field set `set` (which must hold [`Mapping::detection_paths`]).
    pub fn detects_in(&self, set: &FieldSet, fields: &Fields) -> bool {
        let value = |path: &str| set.find(path).and_then(|id| fields.get(id));
        self.kinds.iter().any(|kind| {
            !(kind.detect_paths.is_empty() && kind.detect_equal_paths.is_empty())
                && kind.detect_paths.iter().all(|p| value(p).is_some())
                && kind
                    .detect_equal_paths
                    .iter()
                    .all(|(p, v)| value(p) == Some(v))
        })
    }

    /// The name of the first kind whose detection rule holds on `fields`.
    pub fn detect(&self, fields: &Fields) -> Option<&str> {
        self.kind_for(fields).map(|k| k.name.as_str())
    }

    fn kind_for(&self, fields: &Fields) -> Option<&Kind> {
        self.kind_position(fields).map(|at| &self.kinds[at])
    }

    /// The position of the first kind whose detection rule holds.
    fn kind_position(&self, fields: &Fields) -> Option<usize> {
        self.kinds.iter().position(|kind| {
            kind.detect_fields.iter().all(|f| fields.get(*f).is_some())
                && kind
                    .detect_equals
                    .iter()
                    .all(|(f, v)| fields.get(*f) == Some(v))
        })
    }

    /// What [`Mapping::observe`] checks of an event without building its
    /// objects: the position of its kind and its time, or the same error.
    pub(super) fn kind_and_time(&self, fields: &Fields) -> Result<(usize, Timestamp), EventError> {
        let no_kind = || EventError::NoKind {
            format: self.format.clone(),
        };
        let at = self.kind_position(fields).ok_or_else(no_kind)?;
        Ok((at, read_time(fields, &self.kinds[at])?))
    }

    /// True when [`Mapping::observe`] would build at least one object of
    /// kind `kind` from `fields` (it fails with [`EventError::Empty`]
    /// otherwise), found without building any.
    pub(super) fn builds_an_object(kind: &Kind, fields: &Fields) -> bool {
        // The object of a key is the one of the last rule that builds it,
        // so the rules are read from the last: the first one found for a
        // key decides whether that key's object holds a property.
        let mut decided: Vec<&str> = Vec::new();
        for rule in kind.objects.iter().rev() {
            if decided.contains(&rule.key.as_str()) || !rule.applies(fields) {
                continue;
            }
            let value_of =
                |property: &Property| evaluate_borrowed(property, fields, kind.time_format);
            if rule.object_type == "ip" {
                let value = rule.value_property().and_then(value_of);
                if value
                    .as_deref()
                    .and_then(Value::as_str)
                    .and_then(parse_ip_net)
                    .is_some()
                {
                    return true;
                }
                continue; // not built at all, replaces nothing
            }
            let mut values = rule
                .properties
                .iter()
                .filter(|(_, p)| !matches!(p, Property::Ref(_)));
            if values.any(|(_, p)| value_of(p).is_some()) {
                return true;
            }
            decided.push(&rule.key);
        }
        kind.each.iter().any(|rule| {
            let mut any = false;
            each_values(rule, fields, |_, _| any = true);
            any
        })
    }

    /// Builds the observation of one event from its decoded fields; also
    /// returns the kind's name.
    ///
    /// # Errors
    ///
    /// Returns [`EventError`] when no kind applies, the time is unreadable,
    /// or no object can be built.
    pub fn observe(&self, fields: &Fields) -> Result<(Observation, &Arc<str>), EventError> {
        let (at, time) = self.kind_and_time(fields)?;
        self.observe_kind(at, time, fields)
    }

    /// [`Mapping::observe`] of an event whose kind (by position) and time
    /// [`Mapping::kind_and_time`] gave.
    pub(super) fn observe_kind(
        &self,
        at: usize,
        time: Timestamp,
        fields: &Fields,
    ) -> Result<(Observation, &Arc<str>), EventError> {
        let kind = &self.kinds[at];

        // A kind builds a few dozen objects at most: vectors searched in
        // order beat maps here. Each object remembers the rule that built
        // it (none for list objects): only that rule's references are
        // written into it.
        type Built<'k> = (Cow<'k, str>, Map<String, Value>, Option<usize>);
        let mut built: Vec<Built<'_>> = Vec::new();
        let mut pending_refs: Vec<(usize, &str, &str, &str)> = Vec::new();
        for (rule_no, rule) in kind.objects.iter().enumerate() {
            if !rule.applies(fields) {
                continue;
            }
            let mut object = Map::new();
            for (name, property) in &rule.properties {
                match property {
                    Property::Ref(target) => pending_refs.push((rule_no, &rule.key, name, target)),
                    _ => {
                        if let Some(value) = evaluate(property, fields, kind.time_format) {
                            object.insert(name.clone(), value);
                        }
                    }
                }
            }
            let object_type = match rule.object_type.as_str() {
                "ip" => match object
                    .get("value")
                    .and_then(Value::as_str)
                    .and_then(parse_ip_net)
                {
                    Some(net) => ip_object_type(&net),
                    None => continue,
                },
                other => other,
            };
            object.insert("type".into(), Value::String(object_type.to_string()));
            let entry = (Cow::Borrowed(rule.key.as_str()), object, Some(rule_no));
            match built
                .iter_mut()
                .find(|(key, _, _)| *key == rule.key.as_str())
            {
                Some(slot) => *slot = entry,
                None => built.push(entry),
            }
        }
        // One object per list element, unless an object of the same type and
        // value is already there.
        for rule in &kind.each {
            for (key, object) in each_objects(rule, fields) {
                let same = |(_, o, _): &Built<'_>| {
                    o.get("type") == object.get("type") && o.get("value") == object.get("value")
                };
                if !built.iter().any(same) {
                    built.retain(|(k, _, _)| *k != key.as_str());
                    built.push((Cow::Owned(key), object, None));
                }
            }
        }
        // References only from objects their rule built, and only to
        // objects that hold something; then objects left with nothing but
        // their type are dropped.
        let holds = |o: &Map<String, Value>| o.len() > 1;
        for (rule_no, from, property, target) in pending_refs {
            let target_holds = built.iter().any(|(key, o, _)| *key == target && holds(o));
            if target_holds {
                let from = built
                    .iter_mut()
                    .find(|(key, _, by)| *key == from && *by == Some(rule_no));
                if let Some((_, object, _)) = from {
                    object.insert(property.to_string(), Value::String(target.to_string()));
                }
            }
        }
        built.retain(|(_, o, _)| holds(o));
        if built.is_empty() {
            return Err(EventError::Empty {
                kind: kind.name.clone(),
            });
        }
        let objects = built
            .into_iter()
            .map(|(k, v, _)| (k.into_owned(), Value::Object(v)));
        Ok((Observation::single(time, objects), &kind.label))
    }
}

fn compile_each(
    name: &str,
    kind: &str,
    rules: &[EachConfig],
    fields: &mut FieldSet,
) -> Result<Vec<EachRule>, MappingError> {
    rules
        .iter()
        .map(|rule| {
            if rule.object_type.is_some() == rule.type_from.is_some() {
                return Err(MappingError::Rule {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    object: rule.key.clone(),
                    reason: "an each rule needs exactly one of type and type_from".into(),
                });
            }
            Ok(EachRule {
                list: fields.add(&rule.list),
                key: rule.key.clone(),
                member: rule.member.clone(),
                object_type: rule.object_type.clone(),
                type_from: rule.type_from.clone(),
            })
        })
        .collect()
}

/// The objects an each rule builds from one event: (key, object).
pub(super) fn each_objects(rule: &EachRule, fields: &Fields) -> Vec<(String, Map<String, Value>)> {
    let mut out = Vec::new();
    each_values(rule, fields, |i, (object_type, value)| {
        let mut object = Map::new();
        object.insert("type".into(), Value::String(object_type.to_string()));
        object.insert("value".into(), Value::String(value));
        out.push((format!("{}{i}", rule.key), object));
    });
    out
}

/// Calls `f` with the position in the list and the type and value of each
/// object an each rule builds from one event.
pub(super) fn each_values(
    rule: &EachRule,
    fields: &Fields,
    mut f: impl FnMut(usize, (&str, String)),
) {
    let Some(items) = fields.get(rule.list) else {
        return;
    };
    let items: &[Value] = match items {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    for (i, item) in items.iter().enumerate() {
        let value = match &rule.member {
            Some(member) => item.get(member.as_str()),
            None => Some(item),
        };
        let Some(text) = value.and_then(scalar_text).filter(|t| !t.is_empty()) else {
            continue;
        };
        let declared = match (&rule.object_type, &rule.type_from) {
            (Some(t), _) => t.as_str(),
            (None, Some(from)) => {
                let code = item.get(from.member.as_str()).and_then(scalar_text);
                match code.and_then(|c| from.map.get(c.as_ref())) {
                    Some(t) => t.as_str(),
                    None => continue,
                }
            }
            (None, None) => continue,
        };
        if let Some(typed) = typed_value(declared, &text) {
            f(i, typed);
        }
    }
}

/// The STIX type and normalised value of `text` declared as `declared`.
fn typed_value<'a>(declared: &'a str, text: &str) -> Option<(&'a str, String)> {
    let ip = || parse_ip_net(text.trim()).map(|net| (ip_object_type(&net), net.addr().to_string()));
    let domain = || {
        let lowered = text.trim().to_lowercase();
        lowered.strip_suffix('.').unwrap_or(&lowered).to_string()
    };
    Some(match declared {
        "ip" => ip()?,
        "address" => ip().unwrap_or(("domain-name", domain())),
        "domain-name" => ("domain-name", domain()),
        "email-addr" => ("email-addr", text.trim().to_lowercase()),
        "url" if !text.contains("://") => ("url", format!("http://{text}")),
        other => (other, text.to_string()),
    })
}

fn compile_property(
    config: &PropertyConfig,
    fields: &mut FieldSet,
    keys: &[&str],
) -> Result<Property, String> {
    let rule = match config {
        PropertyConfig::Path(path) => {
            return Ok(Property::Field {
                field: FieldRef::compile(path, fields)?,
                normalize: Normalize::Raw,
                list: false,
            });
        }
        PropertyConfig::Rule(rule) => rule,
    };
    let sources = [
        rule.field.is_some(),
        rule.template.is_some(),
        rule.reference.is_some(),
        rule.dict.is_some(),
        rule.constant.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err("a property needs exactly one of field, template, ref, dict or const".into());
    }
    if let Some(constant) = &rule.constant {
        if rule.normalize != Normalize::Raw {
            return Err("a const is written as it should appear: it takes no `as`".into());
        }
        if !is_usable_constant(constant) {
            return Err("a const must hold a value: no empty list or table, no nan or inf".into());
        }
        let value = toml_to_json(constant);
        return Ok(Property::Const(if rule.list && !value.is_array() {
            Value::Array(vec![value])
        } else {
            value
        }));
    }
    if let Some(path) = &rule.field {
        return Ok(Property::Field {
            field: FieldRef::compile(path, fields)?,
            normalize: rule.normalize,
            list: rule.list,
        });
    }
    if let Some(template) = &rule.template {
        let parts = parse_template(template, fields)?;
        return Ok(Property::Template {
            parts,
            normalize: rule.normalize,
            list: rule.list,
        });
    }
    if let Some(target) = &rule.reference {
        if !keys.contains(&target.as_str()) {
            return Err(format!("ref {target:?} names no object of this kind"));
        }
        return Ok(Property::Ref(target.clone()));
    }
    let mut entries = Vec::new();
    for (key, sub) in rule.dict.iter().flatten() {
        entries.push((key.clone(), compile_property(sub, fields, keys)?));
    }
    Ok(Property::Dict(entries))
}

fn parse_template(template: &str, fields: &mut FieldSet) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("template {template:?}: '{{' without '}}'"))?;
        parts.push(TemplatePart::Field(FieldRef::compile(
            &after[..close],
            fields,
        )?));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
        return Err(format!("template {template:?} names no field"));
    }
    Ok(parts)
}

/// The fields whose presence a property needs, for the default `requires`.
fn first_fields(property: &Property) -> Option<Vec<FieldRef>> {
    match property {
        Property::Field { field, .. } => Some(vec![field.clone()]),
        Property::Template { parts, .. } => Some(
            parts
                .iter()
                .filter_map(|p| match p {
                    TemplatePart::Field(f) => Some(f.clone()),
                    TemplatePart::Text(_) => None,
                })
                .collect(),
        ),
        Property::Ref(_) | Property::Dict(_) | Property::Const(_) => None,
    }
}

pub(super) fn evaluate(
    property: &Property,
    fields: &Fields,
    time_format: TimeFormat,
) -> Option<Value> {
    match property {
        Property::Field {
            field,
            normalize,
            list,
        } => {
            let raw = field.get(fields)?;
            finish(raw, *normalize, *list, time_format)
        }
        Property::Template {
            parts,
            normalize,
            list,
        } => {
            let mut text = String::new();
            for part in parts {
                match part {
                    TemplatePart::Text(t) => text.push_str(t),
                    TemplatePart::Field(f) => text.push_str(&scalar_text(f.get(fields)?)?),
                }
            }
            finish(&Value::String(text), *normalize, *list, time_format)
        }
        Property::Ref(_) => None,
        Property::Const(value) => Some(value.clone()),
        Property::Dict(entries) => {
            let map: Map<String, Value> = entries
                .iter()
                .filter_map(|(k, p)| Some((k.clone(), evaluate(p, fields, time_format)?)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
    }
}

/// [`evaluate`], borrowing the event's own value where normalising would
/// copy it unchanged, as it does for most values.
pub(super) fn evaluate_borrowed<'f>(
    property: &Property,
    fields: &'f Fields,
    time_format: TimeFormat,
) -> Option<Cow<'f, Value>> {
    if let Property::Field {
        field,
        normalize,
        list: false,
    } = property
    {
        let raw = field.get(fields)?;
        if is_normal(raw, *normalize) {
            return Some(Cow::Borrowed(raw));
        }
    }
    evaluate(property, fields, time_format).map(Cow::Owned)
}

/// True when [`normalize_one`] gives `raw` back unchanged (and `raw` is no
/// list, which [`finish`] takes apart).
fn is_normal(raw: &Value, normalize: Normalize) -> bool {
    let text = || raw.as_str().filter(|s| !s.is_empty());
    let lower = |s: &str| s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase());
    match normalize {
        Normalize::Raw => !raw.is_array(),
        Normalize::String => text().is_some(),
        Normalize::Integer => raw.is_i64() || raw.is_u64(),
        Normalize::Lowercase | Normalize::Hash => text().is_some_and(lower),
        Normalize::Domain => text().is_some_and(|s| lower(s) && !s.ends_with('.')),
        Normalize::Ip => text()
            .is_some_and(|s| !s.contains(['/', ':']) && s.trim() == s && parse_ip_net(s).is_some()),
        Normalize::Port => raw.as_u64().is_some_and(|p| p <= u64::from(u16::MAX)),
        Normalize::Url => text().is_some_and(|s| s.contains("://")),
        Normalize::Timestamp => false,
    }
}

/// Normalises `raw` (each element of a list), then wraps it in a list if
/// asked.
fn finish(raw: &Value, normalize: Normalize, list: bool, time_format: TimeFormat) -> Option<Value> {
    let value = match raw {
        Value::Array(items) => {
            let items: Vec<Value> = items
                .iter()
                .filter_map(|v| normalize_one(v, normalize, time_format))
                .collect();
            if items.is_empty() {
                return None;
            }
            return Some(if list || items.len() > 1 {
                Value::Array(items)
            } else {
                items.into_iter().next()?
            });
        }
        other => normalize_one(other, normalize, time_format)?,
    };
    Some(if list {
        Value::Array(vec![value])
    } else {
        value
    })
}

fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn normalize_one(value: &Value, normalize: Normalize, time_format: TimeFormat) -> Option<Value> {
    let text = || scalar_text(value).filter(|t| !t.is_empty());
    Some(match normalize {
        Normalize::Raw => value.clone(),
        Normalize::String => Value::String(text()?.into_owned()),
        Normalize::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            _ => Value::from(text()?.trim().parse::<i64>().ok()?),
        },
        Normalize::Lowercase | Normalize::Hash => Value::String(text()?.to_lowercase()),
        Normalize::Domain => {
            let lowered = text()?.to_lowercase();
            Value::String(lowered.strip_suffix('.').unwrap_or(&lowered).to_string())
        }
        Normalize::Ip => {
            let text = text()?;
            let trimmed = text.trim();
            let Some(net) = parse_ip_net(trimmed) else {
                let (host, _) = split_endpoint(trimmed)?;
                let net = parse_ip_net(host).filter(|n| n.prefix_len() == n.max_prefix_len())?;
                return Some(Value::String(net.addr().to_string()));
            };
            Value::String(if trimmed.contains('/') {
                net.to_string()
            } else if !trimmed.contains(':') {
                // Without '/' or ':' only a plain dotted quad parses, and
                // it is already in canonical form.
                trimmed.to_string()
            } else {
                net.addr().to_string()
            })
        }
        Normalize::Port => {
            let port = match value {
                Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok())?,
                _ => {
                    let text = text()?;
                    let trimmed = text.trim();
                    match parse_port(trimmed) {
                        Some(port) => port,
                        None => split_endpoint(trimmed)?.1,
                    }
                }
            };
            Value::from(port)
        }
        Normalize::Url => {
            let text = text()?;
            if text.contains("://") {
                Value::String(text.into_owned())
            } else {
                Value::String(format!("http://{text}"))
            }
        }
        Normalize::Timestamp => {
            Value::String(parse_time(value, time_format).ok()?.to_stix_millis())
        }
    })
}

/// The host and port of `host:port` or `[host]:port` (the brackets are
/// how an IPv6 address carries a port).
fn split_endpoint(text: &str) -> Option<(&str, u16)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => {
            let (host, port) = text.rsplit_once(':')?;
            // A second colon means an IPv6 address without brackets.
            if host.contains(':') {
                return None;
            }
            (host, port)
        }
    };
    let port = parse_port(port)?;
    (!host.is_empty()).then_some((host, port))
}

/// A port number written in decimal digits only (`u16::from_str` would
/// also take a leading `+`).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn read_time(fields: &Fields, kind: &Kind) -> Result<Timestamp, EventError> {
    let fail = |reason: String| EventError::Time {
        kind: kind.name.clone(),
        field: kind.time_path.clone(),
        reason,
    };
    let value = fields
        .get(kind.time_field)
        .ok_or_else(|| fail("missing".into()))?;
    parse_time(value, kind.time_format).map_err(fail)
}

fn parse_time(value: &Value, format: TimeFormat) -> Result<Timestamp, String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("not a timestamp".into()),
    };
    // Digits of the unit's fraction that make whole nanoseconds.
    let places = match format {
        TimeFormat::Rfc3339 => {
            return Timestamp::parse_rfc3339(&text).map_err(|e| format!("{text:?}: {e}"));
        }
        TimeFormat::Epoch => 9,
        TimeFormat::EpochMillis => 6,
    };
    let nanos = decimal_nanos(&text, places).ok_or_else(|| format!("{text:?} is not a number"))?;
    // Years 0000-9999 only, as everywhere else.
    let secs = nanos.div_euclid(1_000_000_000);
    if !(-62_167_219_200..=253_402_300_799).contains(&secs) {
        return Err(format!("{text} is out of range"));
    }
    Ok(Timestamp::from_unix_nanos(nanos))
}

/// Reads decimal `text` (`1795165200.25`, `-3`, `1.5e3`) scaled by
/// 10^`places`, exactly when there is no exponent.
fn decimal_nanos(text: &str, places: u32) -> Option<i128> {
    if text.contains(['e', 'E']) {
        let value = text.parse::<f64>().ok()?;
        let scaled = value * 10f64.powi(places as i32);
        return (scaled.is_finite() && scaled.abs() < 1e30).then(|| scaled.round() as i128);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits || whole.len() > 20 {
        return None;
    }
    let mut value: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut fraction = fraction.bytes();
    for _ in 0..places {
        let digit = fraction.next().map_or(0, |b| i128::from(b - b'0'));
        value = value * 10 + digit;
    }
    Some(if negative { -value } else { value })
}

/// True when `value` gives a JSON value worth writing: no empty list or
/// table anywhere in it, and no float JSON cannot hold.
fn is_usable_constant(value: &toml::Value) -> bool {
    match value {
        toml::Value::Float(f) => f.is_finite(),
        toml::Value::Array(items) => !items.is_empty() && items.iter().all(is_usable_constant),
        toml::Value::Table(t) => !t.is_empty() && t.values().all(is_usable_constant),
        _ => true,
    }
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SAMPLE: &str = r#"
format = "sample"

[[kind]]
name = "flow"
detect = { fields = ["src_ip"], equals = { event_type = "flow" } }
time = { field = "timestamp", format = "rfc3339" }

[[kind.object]]
key = "src"
type = "ip"
properties = { value = { field = "src_ip", as = "ip" } }

[[kind.object]]
key = "dst"
type = "ip"
properties = { value = { field = "dest_ip", as = "ip" } }

[[kind.object]]
key = "traffic"
type = "network-traffic"
requires = ["src_ip"]
[kind.object.properties]
src_ref = { ref = "src" }
dst_ref = { ref = "dst" }
dst_port = { field = "dest_port", as = "integer" }
protocols = { field = "proto", as = "lowercase", list = true }

[[kind.object]]
key = "site"
type = "url"
properties = { value = { template = "{http.hostname}{http.url}", as = "url" } }

[[kind.object]]
key = "file"
type = "file"
[kind.object.properties]
name = "fileinfo.filename"
hashes = { dict = { MD5 = { field = "fileinfo.md5", as = "hash" }, "SHA-256" = { field = "fileinfo.sha256", as = "hash" } } }
"#;

    fn observe(mapping: &Mapping, line: &str) -> Result<Observation, EventError> {
        let fields = mapping.fields().extract(line).expect("valid JSON");
        mapping.observe(&fields).map(|(obs, _)| obs)
    }

    fn object<'a>(obs: &'a Observation, key: &str) -> Option<&'a Value> {
        obs.object(key)
    }

    #[test]
    fn builds_linked_objects_with_normalised_values() {
        let mapping = Mapping::from_toml("sample", SAMPLE).unwrap();
        let line = r#"{"timestamp": "2026-11-20T09:00:00.5+0100", "event_type": "flow",
            "src_ip": "10.0.0.5", "dest_ip": "2001:0db8::0001", "dest_port": "443", "proto": "TCP",
            "http": {"hostname": "evil.example", "url": "/x.php"},
            "fileinfo": {"filename": "a.exe", "md5": "ABCDEF0123456789ABCDEF0123456789"}}"#;
        let obs = observe(&mapping, line).unwrap();
        assert_eq!(obs.first_observed.to_string(), "2026-11-20T08:00:00.5Z");
        assert_eq!(
            object(&obs, "src"),
            Some(&json!({"type": "ipv4-addr", "value": "10.0.0.5"}))
        );
        assert_eq!(
            object(&obs, "dst"),
            Some(&json!({"type": "ipv6-addr", "value": "2001:db8::1"}))
        );
        assert_eq!(
            object(&obs, "traffic"),
            Some(
                &json!({"type": "network-traffic", "src_ref": "src", "dst_ref": "dst",
                         "dst_port": 443, "protocols": ["tcp"]})
            )
        );
        assert_eq!(
            object(&obs, "site"),
            Some(&json!({"type": "url", "value": "http://evil.example/x.php"}))
        );
        assert_eq!(
            object(&obs, "file"),
            Some(&json!({"type": "file", "name": "a.exe",
                         "hashes": {"MD5": "abcdef0123456789abcdef0123456789"}}))
        );
    }

    #[test]
    fn addresses_and_ports_are_read_from_endpoints() {
        let ip = |v: Value| normalize_one(&v, Normalize::Ip, TimeFormat::Rfc3339);
        let port = |v: Value| normalize_one(&v, Normalize::Port, TimeFormat::Rfc3339);
        use serde_json::json;
        assert_eq!(ip(json!("198.51.100.7:443")), Some(json!("198.51.100.7")));
        assert_eq!(ip(json!("[2001:0db8::1]:8443")), Some(json!("2001:db8::1")));
        assert_eq!(ip(json!("2001:db8::1")), Some(json!("2001:db8::1")));
        assert_eq!(ip(json!("example.net:443")), None);
        assert_eq!(ip(json!("198.51.100.0/24:443")), None);
        assert_eq!(port(json!("198.51.100.7:443")), Some(json!(443)));
        assert_eq!(port(json!("[2001:db8::1]:8443")), Some(json!(8443)));
        assert_eq!(port(json!("example.net:25")), Some(json!(25)));
        assert_eq!(port(json!(" 53 ")), Some(json!(53)));
        assert_eq!(port(json!(53)), Some(json!(53)));
        assert_eq!(port(json!(70000)), None);
        assert_eq!(port(json!("198.51.100.7:99999")), None);
        assert_eq!(port(json!("2001:db8::1")), None);
        assert_eq!(port(json!("[2001:db8::1]")), None);
        assert_eq!(port(json!("+443")), None);
        assert_eq!(port(json!("198.51.100.7:+443")), None);
        assert_eq!(port(json!(":443")), None);
    }

    #[test]
    fn values_borrowed_as_normal_are_what_normalising_gives() {
        use serde_json::json;
        let values = [
            json!("Evil.Example."),
            json!("evil.example"),
            json!("evil.example."),
            json!("ÉVIL.example"),
            json!("évil.example"),
            json!(" 198.51.100.7"),
            json!("198.51.100.7"),
            json!("198.51.100.07"),
            json!("198.51.100.0/24"),
            json!("2001:db8::1"),
            json!("198.51.100.7:443"),
            json!("http://a.example/x"),
            json!("a.example/x"),
            json!("ABCDEF0123"),
            json!("abcdef0123"),
            json!(""),
            json!(443),
            json!(70000),
            json!(-1),
            json!(1.5),
            json!("443"),
            json!(true),
            json!(null),
            json!(["a"]),
            json!({"k": "v"}),
        ];
        let normalizers = [
            Normalize::Raw,
            Normalize::String,
            Normalize::Integer,
            Normalize::Lowercase,
            Normalize::Domain,
            Normalize::Ip,
            Normalize::Port,
            Normalize::Hash,
            Normalize::Url,
            Normalize::Timestamp,
        ];
        for value in &values {
            for normalize in normalizers {
                if is_normal(value, normalize) {
                    let normalized = finish(value, normalize, false, TimeFormat::Rfc3339);
                    assert_eq!(normalized.as_ref(), Some(value), "{value} as {normalize:?}");
                }
            }
        }
        assert!(is_normal(&json!("198.51.100.7"), Normalize::Ip));
        assert!(is_normal(&json!("evil.example"), Normalize::Domain));
    }

    #[test]
    fn an_object_carries_only_the_references_of_the_rule_that_built_it() {
        let text = r#"
format = "app"
[[kind]]
name = "event"
detect = { fields = ["n"] }
time = { field = "when", format = "epoch" }
[[kind.object]]
key = "dst"
type = "ip"
properties = { value = { field = "dst", as = "ip" } }
[[kind.object]]
key = "a"
type = "x-thing"
properties = { name = "n", peer_ref = { ref = "dst" } }
[[kind.object]]
key = "a"
type = "domain-name"
requires = ["host"]
properties = { value = { field = "host", as = "domain" } }
"#;
        let mapping = Mapping::from_toml("app", text).unwrap();
        let event = r#"{"when": 1, "n": "x", "dst": "192.0.2.1", "host": "a.example"}"#;
        let obs = observe(&mapping, event).unwrap();
        let replaced = object(&obs, "a").unwrap();
        assert_eq!(replaced["type"], "domain-name");
        assert!(replaced.get("peer_ref").is_none(), "{replaced:?}");

        let obs = observe(&mapping, r#"{"when": 1, "n": "x", "dst": "192.0.2.1"}"#).unwrap();
        assert_eq!(object(&obs, "a").unwrap()["peer_ref"], "dst");
    }

    #[test]
    fn constants_are_written_as_given_and_refused_with_a_normaliser() {
        let text = r#"
format = "proxy"
[[kind]]
name = "request"
detect = { fields = ["client"] }
time = { field = "when", format = "epoch" }
[[kind.object]]
key = "client"
type = "ip"
properties = { value = { field = "client", as = "ip" } }
[[kind.object]]
key = "traffic"
type = "network-traffic"
requires = ["client"]
properties = { src_ref = { ref = "client" }, protocols = { const = ["tcp", "http"] }, note = { const = "proxy", list = true } }
"#;
        let mapping = Mapping::from_toml("proxy", text).unwrap();
        let obs = observe(&mapping, r#"{"when": 1, "client": "10.0.0.9"}"#).unwrap();
        let traffic = object(&obs, "traffic").unwrap();
        assert_eq!(traffic["protocols"], serde_json::json!(["tcp", "http"]));
        assert_eq!(traffic["note"], serde_json::json!(["proxy"]));
        assert_eq!(traffic["src_ref"], "client");

        let bad = text.replace(r#"const = "proxy""#, r#"const = "proxy", as = "lowercase""#);
        let error = Mapping::from_toml("proxy", &bad).unwrap_err().to_string();
        assert!(error.contains("takes no `as`"), "{error}");
        for empty in ["[]", "{}", "nan", "[1, []]"] {
            let bad = text.replace(r#"const = "proxy""#, &format!("const = {empty}"));
            let error = Mapping::from_toml("proxy", &bad).unwrap_err().to_string();
            assert!(
                error.contains("a const must hold a value"),
                "{empty}: {error}"
            );
        }
        let both = text.replace(r#"const = "proxy""#, r#"const = "proxy", field = "client""#);
        let error = Mapping::from_toml("proxy", &both).unwrap_err().to_string();
        assert!(error.contains("exactly one of"), "{error}");
    }

    #[test]
    fn missing_fields_leave_objects_and_references_out() {
        let mapping = Mapping::from_toml("sample", SAMPLE).unwrap();
        let line =
            r#"{"timestamp": "2026-11-20T09:00:00Z", "event_type": "flow", "src_ip": "10.0.0.5"}"#;
        let obs = observe(&mapping, line).unwrap();
        let keys: Vec<&str> = obs.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["src", "traffic"]);
        assert_eq!(
            object(&obs, "traffic"),
            Some(&json!({"type": "network-traffic", "src_ref": "src"}))
        );
    }

    #[test]
    fn events_that_do_not_fit_are_explained() {
        let mapping = Mapping::from_toml("sample", SAMPLE).unwrap();
        let other =
            r#"{"timestamp": "2026-11-20T09:00:00Z", "event_type": "dns", "src_ip": "1.2.3.4"}"#;
        assert_eq!(
            observe(&mapping, other),
            Err(EventError::NoKind {
                format: "sample".into()
            })
        );
        let bad_time = r#"{"timestamp": "yesterday", "event_type": "flow", "src_ip": "1.2.3.4"}"#;
        assert!(matches!(
            observe(&mapping, bad_time),
            Err(EventError::Time { .. })
        ));
    }

    #[test]
    fn list_elements_are_selected_by_a_member() {
        let text = SAMPLE.replace(
            r#"hashes = { dict = { MD5 = { field = "fileinfo.md5", as = "hash" }, "SHA-256" = { field = "fileinfo.sha256", as = "hash" } } }"#,
            r#"hashes = { dict = { "SHA-256" = { field = "fileinfo.hashes[algorithm_id=3].value", as = "hash" } } }"#,
        );
        let mapping = Mapping::from_toml("sample", &text).unwrap();
        let line = r#"{"timestamp": "2026-11-20T09:00:00Z", "event_type": "flow", "src_ip": "10.0.0.5",
            "fileinfo": {"filename": "a.exe", "hashes": [{"algorithm_id": 1, "value": "AA"},
                                                       {"algorithm_id": 3, "value": "BB"}]}}"#;
        let obs = observe(&mapping, line).unwrap();
        assert_eq!(
            object(&obs, "file"),
            Some(&json!({"type": "file", "name": "a.exe", "hashes": {"SHA-256": "bb"}}))
        );
        let bad = SAMPLE.replace(
            r#"name = "fileinfo.filename""#,
            r#"name = "fileinfo.x[oops""#,
        );
        assert!(
            Mapping::from_toml("sample", &bad)
                .unwrap_err()
                .to_string()
                .contains("without ']'")
        );
    }

    #[test]
    fn list_elements_become_objects() {
        let text = format!(
            "{SAMPLE}\n{}",
            r#"
[[kind.each]]
list = "answers"
key = "answer"
member = "rdata"
type = "address"

[[kind.each]]
list = "observables"
key = "seen"
member = "value"
type_from = { member = "type_id", map = { "1" = "domain-name", "2" = "ip" } }
"#
        );
        let mapping = Mapping::from_toml("sample", &text).unwrap();
        let line = r#"{"timestamp": "2026-11-20T09:00:00Z", "event_type": "flow", "src_ip": "10.0.0.5",
            "answers": [{"rdata": "Evil.Example."}, {"rdata": "203.0.113.66"}],
            "observables": [{"type_id": 2, "value": "10.0.0.5"}, {"type_id": 9, "value": "x"},
                            {"type_id": 1, "value": "other.example"}]}"#;
        let obs = observe(&mapping, line).unwrap();
        assert_eq!(
            object(&obs, "answer0"),
            Some(&json!({"type": "domain-name", "value": "evil.example"}))
        );
        assert_eq!(
            object(&obs, "answer1"),
            Some(&json!({"type": "ipv4-addr", "value": "203.0.113.66"}))
        );
        // 10.0.0.5 is already the `src` object; type 9 is not in the map.
        assert_eq!(object(&obs, "seen0"), None);
        assert_eq!(object(&obs, "seen1"), None);
        assert_eq!(
            object(&obs, "seen2"),
            Some(&json!({"type": "domain-name", "value": "other.example"}))
        );
    }

    #[test]
    fn epoch_times() {
        let text = SAMPLE.replace(r#"format = "rfc3339""#, r#"format = "epoch""#);
        let mapping = Mapping::from_toml("sample", &text).unwrap();
        let line = r#"{"timestamp": 1795165200.25, "event_type": "flow", "src_ip": "10.0.0.5"}"#;
        assert_eq!(
            observe(&mapping, line).unwrap().first_observed.to_string(),
            "2026-11-20T09:00:00.25Z"
        );
    }

    #[test]
    fn inconsistent_rules_are_refused() {
        let bad_ref = SAMPLE.replace(
            r#"dst_ref = { ref = "dst" }"#,
            r#"dst_ref = { ref = "nowhere" }"#,
        );
        let err = Mapping::from_toml("sample", &bad_ref).unwrap_err();
        assert!(
            err.to_string().contains(r#"ref "nowhere" names no object"#),
            "{err}"
        );
        let unknown = SAMPLE.replace("requires = [\"src_ip\"]", "require = [\"src_ip\"]");
        assert!(matches!(
            Mapping::from_toml("sample", &unknown),
            Err(MappingError::Syntax { .. })
        ));
        let two = SAMPLE.replace(r#"{ ref = "src" }"#, r#"{ ref = "src", field = "x" }"#);
        assert!(
            Mapping::from_toml("sample", &two)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        // The object's type is the rule's, never a field's.
        let typed = SAMPLE.replace(r#"dst_ref = { ref = "dst" }"#, r#"type = "kind""#);
        let err = Mapping::from_toml("sample", &typed).unwrap_err();
        assert!(err.to_string().contains("`type` is written"), "{err}");
    }
}
