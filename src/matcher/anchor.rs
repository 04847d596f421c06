//! Anchors: values that can be looked up to find candidate patterns.
//!
//! Every `[...]` observation expression (a *leaf*) is reduced to a set of
//! anchors with one guarantee: whenever the leaf holds on an object, at
//! least one of its anchors hits on that object. Lookups therefore find
//! every candidate, and the verifier decides. A leaf whose anchors decide
//! the comparison exactly (`=`/`IN` on a plain path) is *exact*: a hit is a
//! match and the verifier is skipped.

use ipnet::IpNet;

use crate::eval::is_ref_key;
use crate::pattern::validate::{hash_algorithm, is_binary_path};
use crate::pattern::{Comparison, ComparisonExpr, Literal, ObjectPath, PathStep, PropTest};
use crate::stix::net::parse_ip_net;

/// A value as the exact indexes key it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExactKey {
    /// A string (lower-cased for hex digests).
    Str(Box<str>),
    /// A whole number (also integral floats, which compare equal to it).
    Int(i128),
    /// A float with a fraction, by its bits.
    Float(u64),
    /// A boolean.
    Bool(bool),
    /// A timestamp in nanoseconds since the epoch.
    Time(i128),
    /// Bytes: binary properties, and hex/binary literals.
    Bytes(Box<[u8]>),
}

impl ExactKey {
    /// The key of a number, so that equal numbers get equal keys.
    pub(crate) fn from_f64(f: f64) -> ExactKey {
        if f.fract() == 0.0 && f.abs() < 1.0e38 {
            ExactKey::Int(f as i128)
        } else {
            ExactKey::Float(f.to_bits())
        }
    }
}

/// Ordering operators for range anchors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RangeOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A constant of an ordering comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RangeKey {
    Num(f64),
    Str(Box<str>),
    Time(i128),
}

/// How an anchor is looked up.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AnchorKind {
    /// The value equals this key.
    Exact(ExactKey),
    /// The value, read as an IP network, lies inside this one.
    IpWithin(IpNet),
    /// The value, read as an IP network, contains this one.
    IpContains(IpNet),
    /// The value (NFC text, or decoded bytes) contains these bytes.
    Substring(Box<[u8]>),
    /// The value is matched by this expression (no literal to look up).
    Regex { pattern: String, binary: bool },
    /// The value stands in this order to the constant.
    Range(RangeOp, RangeKey),
    /// The path reaches some value.
    Exists,
}

impl AnchorKind {
    /// Rough cost of the lookup and of the candidates it yields, used to
    /// choose between the operands of `AND`.
    fn cost(&self) -> u32 {
        match self {
            AnchorKind::Exact(_) => 1,
            AnchorKind::IpWithin(_) => 2,
            AnchorKind::IpContains(_) => 3,
            AnchorKind::Substring(_) => 4,
            AnchorKind::Range(..) => 8,
            AnchorKind::Regex { .. } => 20,
            AnchorKind::Exists => 50,
        }
    }
}

/// One anchor: a path from the leaf's start object and how to look it up.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Anchor {
    pub path: ObjectPath,
    pub kind: AnchorKind,
}

/// What analysis found for one leaf.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LeafAnchors {
    /// Lookups that find every object the leaf can hold on. Empty when the
    /// leaf can never hold (`IN ()`).
    Anchored {
        anchors: Vec<Anchor>,
        /// A hit is a match: no verification needed.
        exact: bool,
    },
    /// No lookup can find the objects (only `!=`, `NOT`, …): the leaf is
    /// evaluated on every object of its start types.
    Unanchored,
}

/// Analyses one leaf.
pub(crate) fn leaf_anchors(expr: &ComparisonExpr) -> LeafAnchors {
    match anchors_of(expr) {
        Some(anchors) => {
            let exact = is_exact(expr);
            LeafAnchors::Anchored { anchors, exact }
        }
        None => LeafAnchors::Unanchored,
    }
}

/// True when index hits decide the leaf exactly: one non-negated `=` or
/// `IN` test on a path that crosses no reference (so that IP semantics on
/// `value` are known statically).
fn is_exact(expr: &ComparisonExpr) -> bool {
    let ComparisonExpr::Test(test) = expr else {
        return false;
    };
    let crosses_ref = test
        .path
        .steps
        .iter()
        .any(|s| matches!(s, PathStep::Key(k) if is_ref_key(k)));
    !test.negated && matches!(test.op, Comparison::Eq(_) | Comparison::In(_)) && !crosses_ref
}

fn anchors_of(expr: &ComparisonExpr) -> Option<Vec<Anchor>> {
    match expr {
        ComparisonExpr::Test(test) => test_anchors(test),
        ComparisonExpr::Or(items) => {
            let mut all = Vec::new();
            for item in items {
                all.extend(anchors_of(item)?);
            }
            Some(all)
        }
        ComparisonExpr::And(items) => {
            let mut best: Option<(u32, Vec<Anchor>)> = None;
            for item in items {
                let Some(anchors) = anchors_of(item) else {
                    continue;
                };
                let cost: u32 = anchors.iter().map(|a| a.kind.cost()).sum();
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, anchors));
                }
            }
            best.map(|(_, anchors)| anchors)
        }
    }
}

fn test_anchors(test: &PropTest) -> Option<Vec<Anchor>> {
    let anchor = |kind| Anchor {
        path: test.path.clone(),
        kind,
    };
    if test.negated {
        return None;
    }
    let kinds: Vec<AnchorKind> = match &test.op {
        Comparison::Eq(lit) => equality_kinds(&test.path, lit),
        Comparison::In(items) => items
            .iter()
            .flat_map(|l| equality_kinds(&test.path, l))
            .collect(),
        Comparison::Ne(_) => return None,
        Comparison::Lt(l) => range_kind(&test.path, RangeOp::Lt, l)?,
        Comparison::Le(l) => range_kind(&test.path, RangeOp::Le, l)?,
        Comparison::Gt(l) => range_kind(&test.path, RangeOp::Gt, l)?,
        Comparison::Ge(l) => range_kind(&test.path, RangeOp::Ge, l)?,
        Comparison::Like(pattern) => vec![like_kind(pattern)],
        Comparison::Matches(pattern) => vec![matches_kind(pattern, is_binary_path(&test.path))],
        Comparison::IsSubset(net) => parse_ip_net(net)
            .map(AnchorKind::IpWithin)
            .into_iter()
            .collect(),
        Comparison::IsSuperset(net) => parse_ip_net(net)
            .map(AnchorKind::IpContains)
            .into_iter()
            .collect(),
        Comparison::Exists => vec![AnchorKind::Exists],
    };
    Some(kinds.into_iter().map(anchor).collect())
}

/// True when values at `path` can be the `value` of an IP address object.
fn may_be_ip_value(path: &ObjectPath) -> bool {
    match path.steps.as_slice() {
        [PathStep::Key(k)] => {
            k == "value" && matches!(path.object_type.as_str(), "ipv4-addr" | "ipv6-addr")
        }
        [.., PathStep::Key(r), PathStep::Key(k)] | [.., PathStep::Key(r), _, PathStep::Key(k)] => {
            k == "value" && is_ref_key(r)
        }
        _ => false,
    }
}

/// Anchors for `path = lit`; empty when no value can ever be equal.
fn equality_kinds(path: &ObjectPath, lit: &Literal) -> Vec<AnchorKind> {
    if is_binary_path(path) {
        return literal_bytes(lit)
            .map(|b| AnchorKind::Exact(ExactKey::Bytes(b.into())))
            .into_iter()
            .collect();
    }
    let mut kinds = Vec::new();
    match lit {
        Literal::Str(s) => {
            let direct_ip =
                matches!(path.steps.as_slice(), [PathStep::Key(_)]) && may_be_ip_value(path);
            if may_be_ip_value(path) {
                if let Some(net) = parse_ip_net(s) {
                    kinds.push(AnchorKind::IpWithin(net));
                }
            }
            if !direct_ip {
                let key = if hash_algorithm(path).is_some() {
                    s.to_ascii_lowercase()
                } else {
                    s.clone()
                };
                kinds.push(AnchorKind::Exact(ExactKey::Str(key.into())));
            }
        }
        Literal::Int(i) => kinds.push(AnchorKind::Exact(ExactKey::Int(i128::from(*i)))),
        Literal::Float(f) => kinds.push(AnchorKind::Exact(ExactKey::from_f64(*f))),
        Literal::Bool(b) => kinds.push(AnchorKind::Exact(ExactKey::Bool(*b))),
        Literal::Timestamp(t) => kinds.push(AnchorKind::Exact(ExactKey::Time(t.unix_nanos()))),
        Literal::Hex(b) | Literal::Binary(b) => {
            kinds.push(AnchorKind::Exact(ExactKey::Bytes(b.clone().into())))
        }
    }
    kinds
}

fn literal_bytes(lit: &Literal) -> Option<Vec<u8>> {
    match lit {
        Literal::Hex(b) | Literal::Binary(b) => Some(b.clone()),
        Literal::Str(s) => s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect(),
        _ => None,
    }
}

/// A range anchor, or `None` (unanchored) where ordering is not indexed
/// (binary properties, hex digests compared without case).
fn range_kind(path: &ObjectPath, op: RangeOp, lit: &Literal) -> Option<Vec<AnchorKind>> {
    if is_binary_path(path) || hash_algorithm(path).is_some() {
        return None;
    }
    let key = match lit {
        Literal::Int(i) => RangeKey::Num(*i as f64),
        Literal::Float(f) => RangeKey::Num(*f),
        Literal::Str(s) => RangeKey::Str(s.as_str().into()),
        Literal::Timestamp(t) => RangeKey::Time(t.unix_nanos()),
        // Booleans have no order: never true.
        Literal::Bool(_) => return Some(Vec::new()),
        // Bytes order against text through its Latin-1 bytes, which the
        // range index does not keep: evaluate on every object instead.
        Literal::Hex(_) | Literal::Binary(_) => return None,
    };
    Some(vec![AnchorKind::Range(op, key)])
}

/// The longest literal run of a `LIKE` pattern must occur in any value it
/// matches; a pattern of wildcards only needs the value to exist.
fn like_kind(pattern: &str) -> AnchorKind {
    let normalized = crate::eval::nfc(pattern);
    let longest = normalized
        .split(['%', '_'])
        .max_by_key(|part| part.len())
        .unwrap_or_default();
    if longest.is_empty() {
        AnchorKind::Exists
    } else {
        AnchorKind::Substring(longest.as_bytes().into())
    }
}

fn matches_kind(pattern: &str, binary: bool) -> AnchorKind {
    match required_literal(pattern, binary) {
        Some(bytes) if !bytes.is_empty() => AnchorKind::Substring(bytes.into()),
        _ => AnchorKind::Regex {
            pattern: pattern.to_string(),
            binary,
        },
    }
}

/// The longest run of literal text that every match of `pattern` must
/// contain, found in the top-level concatenation of the expression.
fn required_literal(pattern: &str, binary: bool) -> Option<Vec<u8>> {
    use regex_syntax::hir::{HirKind, Look};

    let text = if binary {
        pattern.to_string()
    } else {
        crate::eval::nfc(pattern)
    };
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(!binary)
        .utf8(!binary)
        .dot_matches_new_line(true)
        .build()
        .parse(&text)
        .ok()?;
    let parts: Vec<&regex_syntax::hir::Hir> = match hir.kind() {
        HirKind::Concat(parts) => parts.iter().collect(),
        _ => vec![&hir],
    };
    let mut best: Vec<u8> = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    for part in parts {
        match part.kind() {
            HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
            // Anchors and empty matches do not break a literal run.
            HirKind::Look(Look::Start | Look::End) | HirKind::Empty => {}
            _ => {
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
            }
        }
    }
    if run.len() > best.len() {
        best = run;
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{ObservationExpr, parse};

    fn leaf(text: &str) -> LeafAnchors {
        match parse(text).unwrap().root {
            ObservationExpr::Observation(c) => leaf_anchors(&c),
            other => panic!("not a single observation: {other:?}"),
        }
    }

    fn kinds(text: &str) -> Vec<AnchorKind> {
        match leaf(text) {
            LeafAnchors::Anchored { anchors, .. } => anchors.into_iter().map(|a| a.kind).collect(),
            LeafAnchors::Unanchored => panic!("{text} is unanchored"),
        }
    }

    #[test]
    fn equality_is_exact() {
        assert_eq!(
            leaf("[domain-name:value = 'evil.example']"),
            LeafAnchors::Anchored {
                anchors: vec![Anchor {
                    path: parse("[domain-name:value = 'x']")
                        .map(|p| match p.root {
                            ObservationExpr::Observation(ComparisonExpr::Test(t)) => t.path,
                            _ => unreachable!(),
                        })
                        .unwrap(),
                    kind: AnchorKind::Exact(ExactKey::Str("evil.example".into())),
                }],
                exact: true,
            }
        );
    }

    #[test]
    fn ip_values_use_networks() {
        let net = parse_ip_net("198.51.100.0/24").unwrap();
        assert_eq!(
            kinds("[ipv4-addr:value = '198.51.100.0/24']"),
            vec![AnchorKind::IpWithin(net)]
        );
        // Through a reference the object may not be an IP: both lookups.
        assert_eq!(
            kinds("[network-traffic:dst_ref.value = '198.51.100.0/24']").len(),
            2
        );
    }

    #[test]
    fn and_takes_the_cheapest_operand() {
        assert_eq!(
            kinds("[file:size > 10 AND file:name = 'a.exe']"),
            vec![AnchorKind::Exact(ExactKey::Str("a.exe".into()))]
        );
    }

    #[test]
    fn negations_are_unanchored() {
        assert_eq!(leaf("[file:name != 'a']"), LeafAnchors::Unanchored);
        assert_eq!(leaf("[file:name NOT = 'a']"), LeafAnchors::Unanchored);
        assert_eq!(
            leaf("[file:name = 'a' OR file:size != 1]"),
            LeafAnchors::Unanchored
        );
    }

    #[test]
    fn literal_parts_of_like_and_matches() {
        assert_eq!(
            kinds("[url:value LIKE '%/evil/%.php']"),
            vec![AnchorKind::Substring(b"/evil/".as_slice().into())]
        );
        assert_eq!(
            kinds("[url:value MATCHES '^https?://bad\\\\.example/']"),
            vec![AnchorKind::Substring(b"://bad.example/".as_slice().into())]
        );
        assert!(matches!(
            kinds("[url:value MATCHES 'a|b']")[0],
            AnchorKind::Regex { .. }
        ));
    }
}
