//! Checks beyond the grammar: what makes a well-formed pattern unusable.
//!
//! - `MATCHES` operands must compile under the linear-time regex engine the
//!   matcher runs (no look-around, no back-references);
//! - `ISSUBSET`/`ISSUPERSET` operands must be IP addresses or CIDR blocks;
//! - literals compared with well-known properties must be able to occur
//!   there (hash digests of the right length, IP addresses on `ipv4-addr`
//!   and `ipv6-addr` values);
//! - operands of `AND` inside `[...]` must be satisfiable by one object
//!   (STIX 2.1 §9.5), so they cannot all start from different object types.

use std::collections::BTreeSet;

use super::ast::*;
use super::error::ErrorKind;
use crate::eval::regex::compile_matches;
use crate::stix::net::parse_ip_net;

/// Checks one property test as it is parsed.
pub(crate) fn property_test(test: &PropTest) -> Result<(), ErrorKind> {
    match &test.op {
        Comparison::Matches(re) => compile_matches(re, is_binary_path(&test.path))
            .map(drop)
            .map_err(ErrorKind::BadRegex),
        Comparison::IsSubset(net) | Comparison::IsSuperset(net) => match parse_ip_net(net) {
            Some(_) => Ok(()),
            None => Err(ErrorKind::BadCidr(net.clone())),
        },
        Comparison::Eq(v) | Comparison::Ne(v) => well_known_value(&test.path, v),
        Comparison::In(items) => items
            .iter()
            .try_for_each(|v| well_known_value(&test.path, v)),
        _ => Ok(()),
    }
}

/// True when the last key of `path` names a binary property (`_bin` or
/// `_hex`), whose values are compared as bytes.
pub(crate) fn is_binary_path(path: &ObjectPath) -> bool {
    match path.steps.iter().rev().find_map(|s| match s {
        PathStep::Key(k) => Some(k),
        _ => None,
    }) {
        Some(key) => key.ends_with("_bin") || key.ends_with("_hex"),
        None => false,
    }
}

/// The number of hex digits of the fixed-length digests named in the STIX
/// hash-algorithm vocabulary.
pub(crate) fn hex_digest_len(algorithm: &str) -> Option<usize> {
    Some(match algorithm {
        "MD5" => 32,
        "SHA-1" => 40,
        "SHA-256" | "SHA3-256" => 64,
        "SHA-512" | "SHA3-512" => 128,
        _ => return None,
    })
}

/// When `path` ends in `hashes.<algorithm>` with a known fixed-length
/// algorithm, the algorithm name.
pub(crate) fn hash_algorithm(path: &ObjectPath) -> Option<&str> {
    match path.steps.as_slice() {
        [.., PathStep::Key(dict), PathStep::Key(algo)] if dict == "hashes" => {
            hex_digest_len(algo).map(|_| algo.as_str())
        }
        _ => None,
    }
}

fn well_known_value(path: &ObjectPath, value: &Literal) -> Result<(), ErrorKind> {
    let Literal::Str(text) = value else {
        return Ok(());
    };
    let invalid = |reason: String| ErrorKind::InvalidValue {
        path: path.to_string(),
        reason,
    };

    if let Some(algo) = hash_algorithm(path) {
        let want = hex_digest_len(algo).unwrap_or_default();
        if text.len() != want || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{text:?} is not a {algo} digest: expected {want} hex digits"
            )));
        }
    }
    let is_value = matches!(path.steps.as_slice(), [PathStep::Key(k)] if k == "value");
    if is_value {
        let family = match path.object_type.as_str() {
            "ipv4-addr" => Some((true, "IPv4")),
            "ipv6-addr" => Some((false, "IPv6")),
            _ => None,
        };
        if let Some((v4, name)) = family {
            let ok = parse_ip_net(text).is_some_and(|net| matches!(net, ipnet::IpNet::V4(_)) == v4);
            if !ok {
                return Err(invalid(format!(
                    "{text:?} is not an {name} address or CIDR block"
                )));
            }
        }
    }
    Ok(())
}

/// Checks that every `AND` inside one `[...]` can be satisfied by one
/// object.
pub(crate) fn same_object(comparison: &ComparisonExpr) -> Result<(), ErrorKind> {
    start_types(comparison).map(drop)
}

/// The object types a comparison expression can start from.
fn start_types(expr: &ComparisonExpr) -> Result<BTreeSet<&str>, ErrorKind> {
    match expr {
        ComparisonExpr::Test(t) => Ok(BTreeSet::from([t.path.object_type.as_str()])),
        ComparisonExpr::Or(items) => {
            let mut all = BTreeSet::new();
            for item in items {
                all.extend(start_types(item)?);
            }
            Ok(all)
        }
        ComparisonExpr::And(items) => {
            let mut common: Option<BTreeSet<&str>> = None;
            let mut seen = BTreeSet::new();
            for item in items {
                let types = start_types(item)?;
                seen.extend(types.iter().copied());
                common = Some(match common {
                    None => types,
                    Some(c) => c.intersection(&types).copied().collect(),
                });
            }
            match common {
                Some(c) if c.is_empty() => Err(ErrorKind::MixedObjectTypes(
                    seen.into_iter().collect::<Vec<_>>().join(", "),
                )),
                Some(c) => Ok(c),
                None => Ok(BTreeSet::new()),
            }
        }
    }
}
