//! Comparison expressions against one cyber-observable (STIX 2.1 §9.6–9.7).
//!
//! A comparison expression holds for an observation when some object of
//! the observation satisfies it as a whole: every path of it starts from
//! that one object (§9.5). Paths follow `_ref`/`_refs` values into the
//! referenced objects of the same observation. A path that reaches no
//! value makes its comparison false, with or without `NOT`.

use std::cmp::Ordering;

use base64::Engine as _;
use serde_json::Value;

use super::regex::{cached_like, cached_matches};
use crate::pattern::validate::{hash_algorithm, is_binary_path};
use crate::pattern::{Comparison, ComparisonExpr, Literal, ObjectPath, PathStep, PropTest};
use crate::stix::net::{net_contains, parse_ip_net};
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;

/// True when some object of `obs` satisfies `expr`.
pub fn observation_matches(expr: &ComparisonExpr, obs: &Observation) -> bool {
    obs.objects
        .iter()
        .any(|object| object_matches(expr, &object.value, obs))
}

/// True when `expr` holds with every path starting from `object`.
pub fn object_matches(expr: &ComparisonExpr, object: &Value, obs: &Observation) -> bool {
    match expr {
        ComparisonExpr::And(items) => items.iter().all(|e| object_matches(e, object, obs)),
        ComparisonExpr::Or(items) => items.iter().any(|e| object_matches(e, object, obs)),
        ComparisonExpr::Test(test) => test_matches(test, object, obs),
    }
}

/// A value reached by a path, with what is needed to compare it.
pub(crate) struct Reached<'a> {
    /// The value.
    pub value: &'a Value,
    /// The `value` property of an `ipv4-addr` or `ipv6-addr` object.
    pub is_ip_value: bool,
}

fn test_matches(test: &PropTest, object: &Value, obs: &Observation) -> bool {
    if object.get("type").and_then(Value::as_str) != Some(test.path.object_type.as_str()) {
        return false;
    }
    let reached = resolve(&test.path, object, obs);
    if let Comparison::Exists = test.op {
        return reached.is_empty() == test.negated;
    }
    let kind = ValueKind::of(&test.path);
    // A binary value that does not decode cannot be obtained: as if absent.
    let binary = matches!(kind, ValueKind::Hex | ValueKind::Base64);
    let usable: Vec<&Reached<'_>> = reached
        .iter()
        .filter(|r| !binary || decode_binary(r.value, kind).is_some())
        .collect();
    if usable.is_empty() {
        return false;
    }
    let any = usable.iter().any(|r| compare(&test.op, r, kind));
    any != test.negated
}

/// One value on the way along a path.
#[derive(Clone, Copy)]
struct Step<'a> {
    value: &'a Value,
    /// The type of the object that holds `value`.
    owner: &'a str,
    /// `value` is an object itself (the start, or a dereferenced object).
    is_object: bool,
    /// `value` is the `value` property read directly off an object.
    is_value_property: bool,
}

/// Walks `path` from `object`, returning every value it reaches (more than
/// one when it crosses `[*]`).
pub(crate) fn resolve<'a>(
    path: &ObjectPath,
    object: &'a Value,
    obs: &'a Observation,
) -> Vec<Reached<'a>> {
    let mut out = Vec::new();
    let object_type = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for_each_reached(path, object_type, object, obs, &mut |r| out.push(r));
    out
}

/// Calls `f` with every value `path` reaches from `object`, without
/// allocating: the matcher runs this for every indexed path of every
/// object it sees.
pub(crate) fn for_each_reached<'a>(
    path: &ObjectPath,
    object_type: &'a str,
    object: &'a Value,
    obs: &'a Observation,
    f: &mut impl FnMut(Reached<'a>),
) {
    let start = Step {
        value: object,
        owner: object_type,
        is_object: true,
        is_value_property: false,
    };
    walk(&path.steps, start, false, Some(obs), f);
}

/// Calls `f` with every value `path` reaches on an object of `object_type`
/// whose property named by the path's first step is `property`: the
/// values the matcher would look up, known before the object is built.
/// Without the rest of the observation, a path that goes on through a
/// reference reaches nothing.
pub(crate) fn for_each_reached_in_property<'a>(
    path: &ObjectPath,
    object_type: &'a str,
    property: &'a Value,
    f: &mut impl FnMut(Reached<'a>),
) {
    let Some((PathStep::Key(key), rest)) = path.steps.split_first() else {
        return;
    };
    let start = Step {
        value: property,
        owner: object_type,
        is_object: false,
        is_value_property: key == "value",
    };
    walk(rest, start, is_ref_key(key), None, f);
}

/// True for a property that holds the id of another object.
pub(crate) fn is_ref_key(key: &str) -> bool {
    key.ends_with("_ref") || key.ends_with("_refs")
}

fn walk<'a>(
    steps: &[PathStep],
    here: Step<'a>,
    follows_ref: bool,
    obs: Option<&'a Observation>,
    f: &mut impl FnMut(Reached<'a>),
) {
    let Some((step, rest)) = steps.split_first() else {
        let is_ip_value = here.is_value_property && matches!(here.owner, "ipv4-addr" | "ipv6-addr");
        f(Reached {
            value: here.value,
            is_ip_value,
        });
        return;
    };
    match step {
        PathStep::Key(key) => {
            // A key after a `_ref`/`_refs` value reads the referenced object
            // of the same observation (§9.7.4).
            let here = if follows_ref {
                let target = here.value.as_str().zip(obs).and_then(|(id, o)| o.entry(id));
                let Some(target) = target else {
                    return;
                };
                Step {
                    value: &target.value,
                    owner: &target.object_type,
                    is_object: true,
                    is_value_property: false,
                }
            } else {
                here
            };
            if let Some(child) = property(here.value, key) {
                let next = Step {
                    value: child,
                    owner: here.owner,
                    is_object: false,
                    is_value_property: here.is_object && key == "value",
                };
                walk(rest, next, is_ref_key(key), obs, f);
            }
        }
        PathStep::Index(i) => {
            let element = usize::try_from(*i)
                .ok()
                .and_then(|i| here.value.as_array()?.get(i));
            if let Some(element) = element {
                let next = Step {
                    value: element,
                    is_object: false,
                    is_value_property: false,
                    ..here
                };
                walk(rest, next, follows_ref, obs, f);
            }
        }
        PathStep::AnyIndex => {
            for element in here.value.as_array().into_iter().flatten() {
                let next = Step {
                    value: element,
                    is_object: false,
                    is_value_property: false,
                    ..here
                };
                walk(rest, next, follows_ref, obs, f);
            }
        }
    }
}

/// Objects with at most this many properties are searched key by key.
/// Cyber-observables built from events have a handful; one tree node of
/// the map holds up to eleven.
const LINEAR_SEARCH_MAX: usize = 8;

/// The property `key` of `object`, when it is a JSON object that has it.
///
/// Objects of observations have a handful of properties; comparing each
/// key for equality (lengths first) costs less than the ordered search of
/// the map, which compares bytes with every key before the one sought.
fn property<'v>(object: &'v Value, key: &str) -> Option<&'v Value> {
    let map = object.as_object()?;
    if map.len() > LINEAR_SEARCH_MAX {
        return map.get(key);
    }
    map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

/// How values at a path are to be read.
#[derive(Clone, Copy, PartialEq)]
enum ValueKind {
    /// Plain JSON values.
    Plain,
    /// A `_hex` property: hex text decoded to bytes.
    Hex,
    /// A `_bin` property: base64 text decoded to bytes.
    Base64,
    /// A fixed-length hex digest under `hashes`: compared ignoring case.
    HexDigest,
}

impl ValueKind {
    fn of(path: &ObjectPath) -> ValueKind {
        if is_binary_path(path) {
            let last_key = path.steps.iter().rev().find_map(|s| match s {
                PathStep::Key(k) => Some(k.as_str()),
                _ => None,
            });
            if last_key.is_some_and(|k| k.ends_with("_hex")) {
                ValueKind::Hex
            } else {
                ValueKind::Base64
            }
        } else if hash_algorithm(path).is_some() {
            ValueKind::HexDigest
        } else {
            ValueKind::Plain
        }
    }
}

/// What comparing one value with one constant gave.
enum Relation {
    /// The two are of one ordered type.
    Ordered(Ordering),
    /// The two are of one type that has only equality (booleans).
    Equality(bool),
    /// The types cannot be compared.
    Incompatible,
}

fn compare(op: &Comparison, reached: &Reached<'_>, kind: ValueKind) -> bool {
    let equal = |lit: &Literal| -> Option<bool> {
        if reached.is_ip_value {
            if let Some(eq) = ip_equal(reached.value, lit) {
                return Some(eq);
            }
        }
        match relate(reached.value, lit, kind) {
            Relation::Ordered(o) => Some(o == Ordering::Equal),
            Relation::Equality(e) => Some(e),
            Relation::Incompatible => None,
        }
    };
    let order = |lit: &Literal, accept: fn(Ordering) -> bool| -> bool {
        match relate(reached.value, lit, kind) {
            Relation::Ordered(o) => accept(o),
            _ => false,
        }
    };
    match op {
        Comparison::Eq(lit) => equal(lit) == Some(true),
        // Incompatible types make `!=` true (§9.6.1).
        Comparison::Ne(lit) => equal(lit) != Some(true),
        Comparison::Lt(lit) => order(lit, |o| o == Ordering::Less),
        Comparison::Le(lit) => order(lit, |o| o != Ordering::Greater),
        Comparison::Gt(lit) => order(lit, |o| o == Ordering::Greater),
        Comparison::Ge(lit) => order(lit, |o| o != Ordering::Less),
        Comparison::In(items) => items.iter().any(|lit| equal(lit) == Some(true)),
        Comparison::Like(pattern) => match reached.value.as_str() {
            Some(text) if kind == ValueKind::Plain || kind == ValueKind::HexDigest => {
                cached_like(pattern).is_some_and(|re| re.is_match(&super::nfc(text)))
            }
            _ => false,
        },
        Comparison::Matches(pattern) => match kind {
            ValueKind::Hex | ValueKind::Base64 => match decode_binary(reached.value, kind) {
                Some(bytes) => {
                    cached_matches(pattern, true).is_some_and(|re| re.is_match_bytes(&bytes))
                }
                None => false,
            },
            _ => match reached.value.as_str() {
                Some(text) => cached_matches(pattern, false)
                    .is_some_and(|re| re.is_match_text(&super::nfc(text))),
                None => false,
            },
        },
        // Binary properties hold bytes, not addresses.
        Comparison::IsSubset(_) | Comparison::IsSuperset(_)
            if matches!(kind, ValueKind::Hex | ValueKind::Base64) =>
        {
            false
        }
        Comparison::IsSubset(net) => {
            ip_relation(reached.value, net, |value, lit| net_contains(lit, value))
        }
        Comparison::IsSuperset(net) => ip_relation(reached.value, net, net_contains),
        Comparison::Exists => true,
    }
}

/// Equality on `ipv4-addr`/`ipv6-addr` values: an address equals a CIDR
/// block that contains it, and textual variants of one address are equal.
/// `None` when either side is not an IP network.
fn ip_equal(value: &Value, lit: &Literal) -> Option<bool> {
    let Literal::Str(text) = lit else { return None };
    let lit_net = parse_ip_net(text)?;
    let value_net = parse_ip_net(value.as_str()?)?;
    Some(net_contains(&lit_net, &value_net))
}

fn ip_relation(value: &Value, lit: &str, test: fn(&ipnet::IpNet, &ipnet::IpNet) -> bool) -> bool {
    match (value.as_str().and_then(parse_ip_net), parse_ip_net(lit)) {
        (Some(value), Some(lit)) => test(&value, &lit),
        _ => false,
    }
}

/// Relates one JSON value with one constant by the type rules of §9.2 and
/// §9.6.
fn relate(value: &Value, lit: &Literal, kind: ValueKind) -> Relation {
    if matches!(kind, ValueKind::Hex | ValueKind::Base64) {
        let Some(bytes) = decode_binary(value, kind) else {
            return Relation::Incompatible;
        };
        return match literal_bytes(lit) {
            Some(lit_bytes) => Relation::Ordered(bytes.as_slice().cmp(lit_bytes.as_slice())),
            None => Relation::Incompatible,
        };
    }
    match (value, lit) {
        (Value::String(s), Literal::Str(l)) if kind == ValueKind::HexDigest => {
            Relation::Ordered(s.to_ascii_lowercase().cmp(&l.to_ascii_lowercase()))
        }
        (Value::String(s), Literal::Str(l)) => Relation::Ordered(s.as_str().cmp(l.as_str())),
        (Value::String(s), Literal::Timestamp(t)) => match Timestamp::parse_rfc3339(s) {
            Ok(ts) => Relation::Ordered(ts.cmp(t)),
            Err(_) => Relation::Incompatible,
        },
        (Value::String(s), Literal::Hex(b) | Literal::Binary(b)) => match latin1_bytes(s) {
            Some(bytes) => Relation::Ordered(bytes.as_slice().cmp(b.as_slice())),
            None => Relation::Incompatible,
        },
        (Value::Number(n), Literal::Int(i)) => number_cmp(n, Number::Int(i128::from(*i))),
        (Value::Number(n), Literal::Float(f)) => number_cmp(n, Number::Float(*f)),
        (Value::Bool(b), Literal::Bool(l)) => Relation::Equality(b == l),
        _ => Relation::Incompatible,
    }
}

/// Decodes a `_hex` or `_bin` property; `None` when it is not valid.
fn decode_binary(value: &Value, kind: ValueKind) -> Option<Vec<u8>> {
    let text = value.as_str()?;
    match kind {
        ValueKind::Hex => {
            if text.len() % 2 != 0 {
                return None;
            }
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect()
        }
        _ => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

/// The bytes of a constant compared with a binary property: hex and
/// binary constants as they are, strings when every code point is below
/// U+0100 (§9.6.4).
fn literal_bytes(lit: &Literal) -> Option<Vec<u8>> {
    match lit {
        Literal::Hex(b) | Literal::Binary(b) => Some(b.clone()),
        Literal::Str(s) => latin1_bytes(s),
        _ => None,
    }
}

fn latin1_bytes(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

enum Number {
    Int(i128),
    Float(f64),
}

fn number_cmp(value: &serde_json::Number, lit: Number) -> Relation {
    let value = if let Some(i) = value.as_i64() {
        Number::Int(i128::from(i))
    } else if let Some(u) = value.as_u64() {
        Number::Int(i128::from(u))
    } else if let Some(f) = value.as_f64() {
        Number::Float(f)
    } else {
        return Relation::Incompatible;
    };
    let ordering = match (value, lit) {
        (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
        (Number::Int(a), Number::Float(b)) => Some(int_float_cmp(a, b)),
        (Number::Float(a), Number::Int(b)) => Some(int_float_cmp(b, a).reverse()),
        (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
    };
    ordering.map_or(Relation::Incompatible, Relation::Ordered)
}

/// Exact comparison of an integer with a float, without rounding either.
fn int_float_cmp(int: i128, float: f64) -> Ordering {
    const LIMIT: f64 = 1.7e38; // just under 2^127, the i128 range
    if float.is_nan() {
        return Ordering::Less;
    }
    if float >= LIMIT {
        return Ordering::Less;
    }
    if float <= -LIMIT {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    match int.cmp(&(whole as i128)) {
        Ordering::Equal if float > whole => Ordering::Less,
        Ordering::Equal if float < whole => Ordering::Greater,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_compare_exactly() {
        assert_eq!(int_float_cmp(1, 1.5), Ordering::Less);
        assert_eq!(int_float_cmp(2, 1.5), Ordering::Greater);
        assert_eq!(int_float_cmp(-1, -1.5), Ordering::Greater);
        assert_eq!(int_float_cmp(3, 3.0), Ordering::Equal);
        // 2^53 + 1 is not representable as f64; it must not equal 2^53.
        assert_eq!(
            int_float_cmp(9_007_199_254_740_993, 9_007_199_254_740_992.0),
            Ordering::Greater
        );
    }

    #[test]
    fn latin1_conversion() {
        assert_eq!(latin1_bytes("a\u{ff}"), Some(vec![b'a', 0xff]));
        assert_eq!(latin1_bytes("\u{100}"), None);
    }
}
