//! Property tests for the pattern parser and the canonical printer.
//!
//! The generators build syntax trees of the shapes the parser itself
//! produces: chains of two or more operands, `AND` operands inside `[...]`
//! on one object type, and operands the validator accepts. Printing any
//! such tree and parsing the text must give the tree back. A second group
//! feeds the parser arbitrary and pattern-like text, where the only
//! requirement is an answer (`Ok` or `Err`) rather than a panic, and where
//! whatever parses must print back to the same tree.
//!
//! Every property runs from a fixed seed, so a failure in CI reproduces
//! locally with the same command. To explore beyond it, set another seed:
//! `PROPTEST_RNG_SEED=7 cargo test --test pattern_roundtrip`.

use std::cmp::Ordering;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use sightline::pattern::{
    Comparison, ComparisonExpr, Literal, ObjectPath, ObservationExpr, PathStep, Pattern, PropTest,
    Qualifier, Seconds, parse,
};
use sightline::stix::timestamp::Timestamp;

/// 0000-01-01T00:00:00Z, the first instant a `t'…'` literal can write.
const FIRST_SECOND: i64 = -62_167_219_200;

/// 9999-12-31T23:59:59Z, the last whole second a `t'…'` literal can write.
const LAST_SECOND: i64 = 253_402_300_799;

/// Seed of every property here ("SIGHTLN" in ASCII).
const SEED: u64 = 0x0053_4947_4854_4c4e;

fn config(cases: u32) -> ProptestConfig {
    // Proptest reads `PROPTEST_RNG_SEED` into its default configuration.
    let rng_seed = match ProptestConfig::default().rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        from_env => from_env,
    };
    ProptestConfig {
        cases,
        rng_seed,
        // The seed already makes failures reproducible; no regression
        // files are written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators: leaves ----------------------------------------------

/// Property names chosen to stress quoting: keywords, booleans, the literal
/// prefixes, hyphens, quotes, backslashes and non-ASCII text.
const TRICKY_KEYS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "EXISTS",
    "LAST",
    "IN",
    "true",
    "false",
    "h",
    "b",
    "t",
    "x-mitre-id",
    "it's",
    "back\\slash",
    "'",
    "\\",
    "",
    " ",
    "two words",
    "0day",
    "_",
    "a.b",
    "[*]",
    "ünïcødé",
    "名前",
    "\u{3000}",
    "/* x */",
    "//",
];

/// Object types as written in feeds, beside the random ones.
const KNOWN_TYPES: &[&str] = &[
    "file",
    "domain-name",
    "url",
    "network-traffic",
    "process",
    "email-addr",
    "x-acme-widget",
];

/// `MATCHES` operands that compile both as text and as byte expressions.
const REGEXES: &[&str] = &[
    "",
    "^evil",
    "\\.exe$",
    "^[a-f0-9]{32}$",
    "(?i)powershell",
    "cmd|pwsh",
    "it's",
    "\\\\\\\\server\\\\share",
    "^\\d{1,3}(\\.\\d{1,3}){3}$",
    "[[:alpha:]]+",
    "x{2,5}?",
    ".*",
];

/// Separators that the grammar reads as white space.
const SPACES: &[&str] = &[
    " ", "  ", "\t", "\n", "\r\n", "\u{A0}", "\u{2003}", "\u{3000}",
];

/// Any Unicode text, control characters included.
fn any_text(max_chars: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max_chars).prop_map(String::from_iter)
}

fn object_type() -> impl Strategy<Value = String> {
    let random = "[a-z][a-z0-9-]{0,12}".prop_filter("not a boolean or an IP type", |t| {
        // `true`/`false` lex as booleans; the IP types have validated
        // values, which random literals would fail.
        !matches!(t.as_str(), "true" | "false" | "ipv4-addr" | "ipv6-addr")
    });
    prop_oneof![select(KNOWN_TYPES).prop_map(str::to_string), random]
}

fn property_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,10}",
        select(TRICKY_KEYS).prop_map(str::to_string),
        any_text(8),
    ]
    // `hashes.<algorithm>` values are checked against the digest length.
    .prop_filter("hash dictionaries are validated", |k| k != "hashes")
}

fn path_step() -> impl Strategy<Value = PathStep> {
    prop_oneof![
        3 => property_key().prop_map(PathStep::Key),
        1 => any::<i64>().prop_map(PathStep::Index),
        1 => Just(PathStep::AnyIndex),
    ]
}

fn object_path() -> impl Strategy<Value = ObjectPath> {
    (object_type(), property_key(), vec(path_step(), 0..3)).prop_map(
        |(object_type, first, rest)| {
            let mut steps = vec![PathStep::Key(first)];
            steps.extend(rest);
            ObjectPath { object_type, steps }
        },
    )
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    let nanos = prop_oneof![
        Just(0u32),
        (0u32..1000).prop_map(|ms| ms * 1_000_000),
        0u32..1_000_000_000,
    ];
    (FIRST_SECOND..=LAST_SECOND, nanos).prop_map(|(secs, nanos)| Timestamp::from_parts(secs, nanos))
}

/// Finite floats of every class and sign, plus short decimals as written
/// by people.
fn finite_float() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        (-100_000i32..100_000).prop_map(|cents| f64::from(cents) / 100.0),
    ]
}

/// Literals allowed after `<`, `<=`, `>` and `>=`: everything but booleans.
fn orderable_literal() -> BoxedStrategy<Literal> {
    prop_oneof![
        any_text(12).prop_map(Literal::Str),
        any::<i64>().prop_map(Literal::Int),
        finite_float().prop_map(Literal::Float),
        vec(any::<u8>(), 0..12).prop_map(Literal::Hex),
        vec(any::<u8>(), 1..12).prop_map(Literal::Binary),
        timestamp().prop_map(Literal::Timestamp),
    ]
    .boxed()
}

/// Literals allowed after `=`, `!=` and inside `IN (...)`.
fn primitive_literal() -> BoxedStrategy<Literal> {
    prop_oneof![
        6 => orderable_literal(),
        1 => any::<bool>().prop_map(Literal::Bool),
    ]
    .boxed()
}

/// An IPv4 or IPv6 address, with or without a prefix length.
fn ip_network() -> impl Strategy<Value = String> {
    let v4 = (any::<[u8; 4]>(), proptest::option::of(0u8..=32))
        .prop_map(|(octets, prefix)| with_prefix(Ipv4Addr::from(octets).to_string(), prefix));
    let v6 = (any::<u128>(), proptest::option::of(0u8..=128))
        .prop_map(|(bits, prefix)| with_prefix(Ipv6Addr::from(bits).to_string(), prefix));
    prop_oneof![v4, v6]
}

fn with_prefix(address: String, prefix: Option<u8>) -> String {
    match prefix {
        Some(len) => format!("{address}/{len}"),
        None => address,
    }
}

fn comparison() -> impl Strategy<Value = Comparison> {
    prop_oneof![
        primitive_literal().prop_map(Comparison::Eq),
        primitive_literal().prop_map(Comparison::Ne),
        orderable_literal().prop_map(Comparison::Lt),
        orderable_literal().prop_map(Comparison::Le),
        orderable_literal().prop_map(Comparison::Gt),
        orderable_literal().prop_map(Comparison::Ge),
        vec(primitive_literal(), 0..4).prop_map(Comparison::In),
        any_text(12).prop_map(Comparison::Like),
        select(REGEXES).prop_map(|re| Comparison::Matches(re.to_string())),
        ip_network().prop_map(Comparison::IsSubset),
        ip_network().prop_map(Comparison::IsSuperset),
        Just(Comparison::Exists),
    ]
}

// ---- generators: expressions -----------------------------------------

/// The inside of one `[...]`, at most three levels of parentheses deep.
fn comparison_expr() -> impl Strategy<Value = ComparisonExpr> {
    let test = (object_path(), any::<bool>(), comparison())
        .prop_map(|(path, negated, op)| ComparisonExpr::Test(PropTest { path, negated, op }));
    test.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 2..4).prop_map(ComparisonExpr::And),
            vec(inner, 2..4).prop_map(ComparisonExpr::Or),
        ]
    })
    .prop_map(|mut expr| {
        share_and_types(&mut expr);
        expr
    })
}

/// Gives every test under an `AND` the object type of its first test, so
/// one object can satisfy it; `OR` operands keep their own types.
fn share_and_types(expr: &mut ComparisonExpr) {
    match expr {
        ComparisonExpr::Test(_) => {}
        ComparisonExpr::Or(items) => items.iter_mut().for_each(share_and_types),
        ComparisonExpr::And(_) => {
            let mut first = None;
            expr.for_each_test(&mut |t| {
                first.get_or_insert_with(|| t.path.object_type.clone());
            });
            let object_type = first.expect("an AND has at least two tests");
            set_object_type(expr, &object_type);
        }
    }
}

fn set_object_type(expr: &mut ComparisonExpr, object_type: &str) {
    match expr {
        ComparisonExpr::Test(t) => t.path.object_type = object_type.to_string(),
        ComparisonExpr::And(items) | ComparisonExpr::Or(items) => items
            .iter_mut()
            .for_each(|item| set_object_type(item, object_type)),
    }
}

fn positive_seconds() -> impl Strategy<Value = Seconds> {
    use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL};
    prop_oneof![
        (1u64..=86_400).prop_map(Seconds::Int),
        (1u64..=i64::MAX as u64).prop_map(Seconds::Int),
        (POSITIVE | NORMAL | SUBNORMAL).prop_map(Seconds::Float),
        (1u32..100_000).prop_map(|tenths| Seconds::Float(f64::from(tenths) / 10.0)),
    ]
}

fn qualifier() -> impl Strategy<Value = Qualifier> {
    let interval =
        (timestamp(), timestamp()).prop_filter_map("empty interval", |(a, b)| match a.cmp(&b) {
            Ordering::Less => Some(Qualifier::StartStop { start: a, stop: b }),
            Ordering::Greater => Some(Qualifier::StartStop { start: b, stop: a }),
            Ordering::Equal => None,
        });
    prop_oneof![
        positive_seconds().prop_map(Qualifier::Within),
        (1u32..=10_000).prop_map(Qualifier::Repeats),
        interval,
    ]
}

/// A whole pattern tree: at most four levels of observation operators
/// over the `[...]` expressions, so nine levels of nesting at most.
fn observation_expr() -> impl Strategy<Value = ObservationExpr> {
    let leaf = comparison_expr().prop_map(ObservationExpr::Observation);
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 2..4).prop_map(ObservationExpr::And),
            vec(inner.clone(), 2..4).prop_map(ObservationExpr::Or),
            vec(inner.clone(), 2..4).prop_map(ObservationExpr::FollowedBy),
            (inner, qualifier())
                .prop_map(|(expr, q)| ObservationExpr::Qualified(Box::new(expr), q)),
        ]
    })
}

// ---- generators: text --------------------------------------------------

/// Fragments of pattern text, valid and not, for the robustness property.
const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    "(",
    ")",
    "[file:name = 'a.exe']",
    "[domain-name:value = 'example.com']",
    "[ipv4-addr:value = '198.51.100.7']",
    "[ipv4-addr:value = 'not an ip']",
    "[file:hashes.MD5 = 'abc']",
    "[x:a.'b c'[*].d[-1] IN (1, 2.5, true, h'00', b'AA==')]",
    "[u:v MATCHES '^a+$']",
    "[u:v MATCHES '(?=look)']",
    "[u:v ISSUBSET '10.0.0.0/8']",
    "[u:v ISSUPERSET '::1/129']",
    "[a:b = 1 AND c:d = 2]",
    "[NOT EXISTS a:b]",
    "file:name",
    "file:",
    ":",
    ".",
    ",",
    "*",
    "AND",
    "OR",
    "NOT",
    "FOLLOWEDBY",
    "EXISTS",
    "IN",
    "LIKE",
    "MATCHES",
    "ISSUBSET",
    "ISSUPERSET",
    "LAST",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "WITHIN 5 SECONDS",
    "WITHIN 0.5 SECONDS",
    "WITHIN -1 SECONDS",
    "WITHIN",
    "SECONDS",
    "REPEATS 3 TIMES",
    "REPEATS 10001 TIMES",
    "REPEATS",
    "TIMES",
    "START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00Z'",
    "START",
    "STOP",
    "t'2020-02-29T12:00:00.123456789Z'",
    "t'2020-02-30T00:00:00Z'",
    "t'0000-01-01T00:00:00Z'",
    "t'",
    "h'0g'",
    "h'",
    "b'=='",
    "b'",
    "'",
    "'\\",
    "'\\x'",
    "'ü'",
    "\\",
    "0",
    "-0",
    "+7",
    "007",
    ".5",
    "1.",
    "-",
    "9223372036854775808",
    "-9223372036854775808",
    "1e5",
    "true",
    "false",
    "/*",
    "*/",
    "//",
    "\n",
    "\u{3000}",
    "\u{FEFF}",
    "é",
    "\0",
];

/// Sequences of fragments, joined with or without spaces.
fn pattern_like_text() -> impl Strategy<Value = String> {
    (vec(select(FRAGMENTS), 0..24), any::<bool>()).prop_map(|(parts, spaced)| {
        let separator = if spaced { " " } else { "" };
        parts.join(separator)
    })
}

/// One change to a printed pattern, at character positions picked by the
/// two indices.
#[derive(Clone, Debug)]
enum Edit {
    /// Removes the characters between the positions (one when they meet).
    Delete(Index, Index),
    /// Inserts a fragment at the first position.
    Insert(Index, &'static str),
    /// Repeats the characters between the positions right after them.
    Duplicate(Index, Index),
    /// Replaces the characters between the positions with a fragment.
    Replace(Index, Index, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<Index>;
    let fragment = || select(FRAGMENTS);
    prop_oneof![
        (at(), at()).prop_map(|(a, b)| Edit::Delete(a, b)),
        (at(), fragment()).prop_map(|(a, f)| Edit::Insert(a, f)),
        (at(), at()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        (at(), at(), fragment()).prop_map(|(a, b, f)| Edit::Replace(a, b, f)),
    ]
}

impl Edit {
    fn apply(&self, text: &mut String) {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let pick = |index: &Index| bounds[index.index(bounds.len())];
        let range = |a: &Index, b: &Index| {
            let (lo, hi) = (pick(a).min(pick(b)), pick(a).max(pick(b)));
            lo..hi
        };
        match self {
            Edit::Delete(a, b) => {
                let mut gone = range(a, b);
                if gone.is_empty() {
                    let width = text[gone.start..].chars().next().map_or(0, char::len_utf8);
                    gone.end += width;
                }
                text.replace_range(gone, "");
            }
            Edit::Insert(a, fragment) => text.insert_str(pick(a), fragment),
            Edit::Duplicate(a, b) => {
                let copied = text[range(a, b)].to_string();
                text.insert_str(range(a, b).end, &copied);
            }
            Edit::Replace(a, b, fragment) => text.replace_range(range(a, b), fragment),
        }
    }
}

// ---- properties --------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn printed_pattern_parses_back_to_the_same_tree(root in observation_expr()) {
        let pattern = Pattern { root };
        let text = pattern.to_string();
        prop_assert_eq!(parse(&text), Ok(pattern), "printed as {}", text);
    }

    #[test]
    fn printing_is_idempotent(root in observation_expr()) {
        let once = Pattern { root }.to_string();
        let reparsed = parse(&once)
            .map_err(|e| TestCaseError::fail(format!("{once}\nfails to parse: {e}")))?;
        prop_assert_eq!(reparsed.to_string(), once);
    }

    #[test]
    fn space_comments_and_outer_parentheses_do_not_change_the_tree(
        root in observation_expr(),
        space in select(SPACES),
    ) {
        let pattern = Pattern { root };
        let text = format!("/* indicator */{space}({space}{pattern}{space}){space}// end");
        prop_assert_eq!(parse(&text), Ok(pattern), "decorated as {:?}", text);
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn parse_answers_any_text(text in any_text(64)) {
        let _ = parse(&text);
    }

    #[test]
    fn parse_answers_pattern_like_text(text in pattern_like_text()) {
        // Whatever parses must also survive printing.
        if let Ok(pattern) = parse(&text) {
            let printed = pattern.to_string();
            prop_assert_eq!(parse(&printed), Ok(pattern), "{:?} printed as {:?}", text, printed);
        }
    }

    #[test]
    fn edited_patterns_parse_back_or_fail_cleanly(
        root in observation_expr(),
        edits in vec(edit(), 1..4),
    ) {
        let mut text = Pattern { root }.to_string();
        for edit in &edits {
            edit.apply(&mut text);
        }
        if let Ok(pattern) = parse(&text) {
            let printed = pattern.to_string();
            prop_assert_eq!(parse(&printed), Ok(pattern), "{:?} printed as {:?}", text, printed);
        }
    }
}

// ---- regressions ---------------------------------------------------------

/// Asserts that `text`, if it parses, prints to a text that parses back to
/// the same tree.
fn assert_accepted_text_round_trips(text: &str) {
    if let Ok(pattern) = parse(text) {
        let printed = pattern.to_string();
        assert_eq!(
            parse(&printed),
            Ok(pattern),
            "{text:?} printed as {printed:?}"
        );
    }
}

/// The printer once dropped the parentheses that separate two qualifiers
/// of one kind, giving a text the parser refuses.
#[test]
fn same_qualifier_inside_and_outside_parentheses() {
    assert_accepted_text_round_trips("([a:b = 1] WITHIN 5 SECONDS) WITHIN 6 SECONDS");
    assert_accepted_text_round_trips(
        "([a:b = 1] REPEATS 2 TIMES WITHIN 5 SECONDS) REPEATS 3 TIMES",
    );
}

/// A leap second at the very end of 9999 would be the first instant of year
/// 10000, which no `t'…'` literal can write: it is refused, so every
/// accepted text still round-trips.
#[test]
fn leap_second_at_the_end_of_year_9999() {
    assert!(parse("[a:b = t'9999-12-31T23:59:60Z']").is_err());
    assert!(parse("[a:b = 1] START t'9999-12-31T23:59:59Z' STOP t'9999-12-31T23:59:60Z'").is_err());
    assert_accepted_text_round_trips("[a:b = t'9998-12-31T23:59:60Z']");
}
