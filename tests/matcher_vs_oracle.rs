//! Property tests: the compiled matcher agrees with the reference
//! interpreter.
//!
//! `sightline::eval` is the oracle. Three properties compare the matcher
//! with it on random input drawn from a small vocabulary, so that values
//! collide often: one address as text, as a CIDR block and inside a block;
//! `é` composed and decomposed; `1`, `1.0` and `1.5`; digests in both
//! cases; bytes as hex, base64 and Latin-1 text; timestamps as literals and
//! as strings with offsets.
//!
//! 1. Single observations: `[...]` patterns loaded into a catalog match one
//!    observation exactly when the interpreter says so and the indicator is
//!    valid during the observation.
//! 2. Streams: patterns with observation operators and qualifiers, fed a
//!    short stream, match on a step exactly when the interpreter finds a
//!    binding over the observations so far that uses the newest one
//!    (`eval::bindings_including`), and match at all exactly when the
//!    interpreter matches the whole stream (`eval::matches`). Most streams
//!    arrive in time order; shuffled ones check that late observations
//!    still combine (for patterns without `WITHIN`, whose windows age out
//!    by event time).
//! 3. Catalog updates: upserts, revocations and removals applied one at a
//!    time (or in batches) leave the same live set, counts and matches as
//!    the final state loaded at once.
//!
//! Pattern texts the parser refuses are skipped, and each property checks
//! that enough were accepted to mean something. The `regression_` tests at
//! the end pin each disagreement found, in its smallest form; they fail
//! until the matcher is fixed.
//!
//! Every property runs from a fixed seed, so a failure reproduces with the
//! same command. To explore beyond it, set another seed:
//! `PROPTEST_RNG_SEED=7 cargo test --test matcher_vs_oracle`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{RngSeed, TestCaseResult, TestError, TestRunner};
use serde_json::{Map, Value};
use sightline::eval;
use sightline::matcher::{Catalog, CatalogConfig, Change, IndicatorRecord, Snapshot, StreamState};
use sightline::pattern::{Pattern, parse};
use sightline::stix::observation::Observation;
use sightline::stix::timestamp::Timestamp;

/// Seed of every property here ("ORACLE" in ASCII).
const SEED: u64 = 0x4f52_4143_4c45;

/// 2024-05-01T10:00:00Z: the time every generated timestamp is near.
const BASE_SECS: i64 = 1_714_557_600;

fn config(cases: u32) -> ProptestConfig {
    // Proptest reads `PROPTEST_RNG_SEED` into its default configuration.
    let rng_seed = match ProptestConfig::default().rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        from_env => from_env,
    };
    ProptestConfig {
        cases,
        rng_seed,
        failure_persistence: None,
        // Inputs are large; let shrinking run long enough to reach a
        // small reproducer.
        max_shrink_iters: 16_384,
        ..ProptestConfig::default()
    }
}

/// Runs one property and panics with the smallest failing input.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) {
    let mut runner = TestRunner::new(config(cases));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("{reason}\nsmallest failing input: {value:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

/// `BASE_SECS` plus `offset_ms` milliseconds.
fn at_ms(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_nanos((i128::from(BASE_SECS) * 1000 + i128::from(offset_ms)) * 1_000_000)
}

fn indicator_id(n: usize) -> String {
    format!("indicator--{n:04}")
}

/// Patterns accepted and refused by the parser, patterns the oracle found
/// matching, and patterns left out of a comparison, so that a property
/// cannot pass by testing nothing.
#[derive(Default)]
struct Tally {
    accepted: Cell<usize>,
    refused: Cell<usize>,
    positive: Cell<usize>,
    skipped: Cell<usize>,
}

impl Tally {
    fn bump(cell: &Cell<usize>) {
        cell.set(cell.get() + 1);
    }

    /// Checks that most generated patterns parsed, and that at least
    /// `min_positive_share` of the accepted ones matched.
    fn assert_meaningful(&self, name: &str, min_accepted_share: f64, min_positive_share: f64) {
        let (accepted, refused) = (self.accepted.get(), self.refused.get());
        let share = accepted as f64 / (accepted + refused).max(1) as f64;
        eprintln!(
            "{name}: {accepted} patterns accepted, {refused} refused, {} positive, {} skipped",
            self.positive.get(),
            self.skipped.get()
        );
        assert!(
            share >= min_accepted_share,
            "{name}: only {accepted} of {} generated patterns parsed",
            accepted + refused
        );
        assert!(
            self.positive.get() as f64 >= accepted as f64 * min_positive_share,
            "{name}: only {} of {accepted} patterns matched; the generators miss",
            self.positive.get()
        );
    }
}

/// The ids the matcher reports for `observation` on a fresh stream state.
fn matched_ids(snapshot: &Snapshot, observation: &Observation) -> BTreeSet<String> {
    StreamState::default()
        .process(snapshot, Arc::new(observation.clone()))
        .iter()
        .map(|m| m.indicator.to_string())
        .collect()
}

/// The overlap rule of `IndicatorRecord::is_valid_during`, written out:
/// `[first, last]` meets `[valid_from, valid_until)`.
fn valid_during(record: &IndicatorRecord, obs: &Observation) -> bool {
    let started = record
        .valid_from
        .is_none_or(|from| obs.last_observed >= from);
    let not_ended = record
        .valid_until
        .is_none_or(|until| obs.first_observed < until);
    started && not_ended
}

/// An observation in a compact form for failure messages, with times in
/// milliseconds from `BASE_SECS`.
fn describe(obs: &Observation) -> String {
    let ms = |t: Timestamp| (t.unix_nanos() - i128::from(BASE_SECS) * 1_000_000_000) / 1_000_000;
    let objects = serde_json::to_string(&obs.objects).unwrap_or_default();
    format!(
        "first={}ms last={}ms count={} objects={objects}",
        ms(obs.first_observed),
        ms(obs.last_observed),
        obs.number_observed
    )
}

// ---- vocabulary -------------------------------------------------------

const TYPES: &[&str] = &[
    "ipv4-addr",
    "ipv6-addr",
    "domain-name",
    "url",
    "file",
    "network-traffic",
    "x-custom",
];

const PATHS: &[&str] = &[
    "value",
    "name",
    "size",
    "hashes.'SHA-256'",
    "hashes.MD5",
    "src_ref.value",
    "dst_ref.value",
    "protocols[*]",
    "protocols[0]",
    "x_list[*].k",
    "payload_bin",
    "magic_number_hex",
    "x_refs[*].value",
];

const OPERATORS: &[&str] = &[
    "=",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "IN",
    "IN",
    "LIKE",
    "MATCHES",
    "ISSUBSET",
    "ISSUPERSET",
    "EXISTS",
];

/// String literals as written in a pattern.
const STRING_LITERALS: &[&str] = &[
    "'198.51.100.7'",
    "'198.51.100.0/24'",
    "'198.51.100.0/25'",
    "'203.0.113.1'",
    "'2001:db8::1'",
    "'2001:0db8:0:0::1'",
    "'2001:db8::/32'",
    "'evil.example'",
    "'EVIL.example'",
    "'http://evil.example/a.php'",
    "'\u{e9}'",
    "'e\u{301}'",
    "'tcp'",
    "'a'",
    "''",
    "'ABC'",
    "'\u{ff}'",
    "'1'",
    "'QUJD'",
    "'ff00'",
    "'2024-05-01T10:00:00Z'",
    "'d41d8cd98f00b204e9800998ecf8427e'",
];

const IPV4_LITERALS: &[&str] = &[
    "'198.51.100.7'",
    "'198.51.100.7/32'",
    "'198.51.100.0/24'",
    "'198.51.100.0/25'",
    "'198.51.100.128/25'",
    "'203.0.113.1'",
    "'0.0.0.0/0'",
];

const IPV6_LITERALS: &[&str] = &[
    "'2001:db8::1'",
    "'2001:0db8:0:0::1'",
    "'2001:db8::2'",
    "'2001:db8::/32'",
    "'::/0'",
];

const MD5_LITERALS: &[&str] = &[
    "'d41d8cd98f00b204e9800998ecf8427e'",
    "'D41D8CD98F00B204E9800998ECF8427E'",
    "'0123456789abcdef0123456789abcdef'",
];

const SHA256_LITERALS: &[&str] = &[
    "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'",
    "'E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855'",
];

const NUMBER_LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "100",
    "1.0",
    "1.5",
    "-1.5",
    "0.5",
    "9007199254740993",
];

const BYTE_LITERALS: &[&str] = &[
    "h'ff00'",
    "h'414243'",
    "h'ff'",
    "h'e9'",
    "b'QUJD'",
    "b'/wA='",
];

const TIME_LITERALS: &[&str] = &[
    "t'2024-05-01T10:00:00Z'",
    "t'2024-05-01T10:00:00.5Z'",
    "t'2024-05-01T09:59:59Z'",
];

const LIKE_OPERANDS: &[&str] = &[
    "'%'",
    "'evil%'",
    "'%.example'",
    "'e_il%'",
    "'_'",
    "'%\u{e9}%'",
    "'e\u{301}'",
    "'\u{e9}'",
    "'%/a.php'",
    "'tcp'",
    "'%BC'",
    "'1%'",
    "'%d41d8%'",
    "'%D41D8%'",
    "'198.51.100.%'",
    "'%0'",
];

/// `MATCHES` operands as written in a pattern (backslashes escaped).
const MATCHES_OPERANDS: &[&str] = &[
    r"'^evil'",
    r"'example$'",
    "'e|\u{e9}'",
    r"'.'",
    r"'\\d'",
    r"'^198\\.51\\.'",
    "'\u{e9}'",
    "'e\u{301}'",
    r"'(?i)EVIL'",
    r"'[a-z]+\\.example'",
    r"'\\xff'",
    r"'AB'",
    r"'^$'",
    r"'^(ff|41)'",
    r"'d41d8'",
    r"'D41D8'",
    r"'(?i)d41D8'",
    r"'^A'",
    r"'\\x00$'",
    r"'ab?c'",
    r"'^\\xe9'",
];

const CIDR_OPERANDS: &[&str] = &[
    "'198.51.100.0/24'",
    "'198.51.100.7'",
    "'198.51.100.7/24'",
    "'198.51.100.0/25'",
    "'0.0.0.0/0'",
    "'2001:db8::/32'",
    "'2001:db8::1'",
    "'::/0'",
];

/// Strings found in observations.
const TEXT_VALUES: &[&str] = &[
    "198.51.100.7",
    "198.51.100.200",
    "198.51.100.0/24",
    "198.51.100.7/24",
    "198.51.100.07",
    "203.0.113.1",
    "2001:db8::1",
    "2001:DB8:0:0::1",
    "2001:db8::/48",
    "::ffff:198.51.100.7",
    "evil.example",
    "EVIL.example",
    "http://evil.example/a.php",
    "\u{e9}",
    "e\u{301}",
    "\u{e9}e\u{301}",
    "tcp",
    "a",
    "",
    "ABC",
    "\u{ff}",
    "1",
    "QUJD",
    "/wA=",
    "ff00",
    "FF00",
    "2024-05-01T10:00:00Z",
    "2024-05-01T12:00:00+02:00",
    "2024-05-01T10:00:00.5Z",
    "d41d8cd98f00b204e9800998ecf8427e",
    "D41D8CD98F00B204E9800998ECF8427E",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "line\nbreak",
];

/// Numbers found in observations, as JSON text (so `1` and `1.0` differ).
const NUMBER_VALUES: &[&str] = &[
    "0",
    "1",
    "1.0",
    "1.5",
    "-1",
    "-1.5",
    "2",
    "100",
    "1e2",
    "0.5",
    "9007199254740992",
    "9007199254740993",
];

const DIGEST_VALUES: &[&str] = &[
    "d41d8cd98f00b204e9800998ecf8427e",
    "D41D8CD98F00B204E9800998ECF8427E",
    "D41d8cd98f00b204e9800998ecf8427E",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    "not a digest",
];

const BASE64_VALUES: &[&str] = &["QUJD", "/wA=", "6Q==", "QUJDRA==", "", "zz", "QUJ"];

const HEX_VALUES: &[&str] = &["ff00", "FF00", "414243", "e9", "", "zz", "f"];

const PROTOCOLS: &[&str] = &["tcp", "TCP", "http", "udp", "\u{e9}", "1"];

/// Keys of objects inside an observation; the last ones often dangle.
const REF_KEYS: &[&str] = &["0", "1", "2", "3", "4", "9"];

// ---- generators: a focus per case ---------------------------------------

/// Pairs of a pattern constant and a JSON value that it may equal, contain
/// or order against in a way worth testing: CIDR and address, two spellings
/// of one IPv6 address, composed and decomposed `é`, `1` and `1.0`, digests
/// in two cases, bytes as hex, base64 and Latin-1, a timestamp with an
/// offset.
const RELATED: &[(&str, &str)] = &[
    ("'198.51.100.0/24'", r#""198.51.100.7""#),
    ("'198.51.100.7'", r#""198.51.100.7/32""#),
    ("'2001:db8::1'", r#""2001:DB8:0:0::1""#),
    ("'2001:db8::/32'", r#""2001:db8::/48""#),
    ("'\u{e9}'", "\"e\u{301}\""),
    ("'e\u{301}'", "\"e\u{301}\""),
    ("1", "1.0"),
    ("1.0", "1"),
    ("1.5", "1.5"),
    ("'1'", "1"),
    (
        "'D41D8CD98F00B204E9800998ECF8427E'",
        r#""d41d8cd98f00b204e9800998ecf8427e""#,
    ),
    ("h'414243'", r#""QUJD""#),
    ("h'ff00'", r#""FF00""#),
    ("b'/wA='", r#""ff00""#),
    ("'ABC'", r#""QUJD""#),
    ("h'e9'", "\"\u{e9}\""),
    ("t'2024-05-01T10:00:00Z'", r#""2024-05-01T12:00:00+02:00""#),
    ("'tcp'", r#""tcp""#),
    ("'evil.example'", r#""EVIL.example""#),
    ("true", "true"),
];

/// What one case concentrates on, so that patterns and objects meet often:
/// an object type, three paths and two `RELATED` pairs. The generators
/// still draw from the whole vocabulary a third to a half of the time.
#[derive(Clone, Debug)]
struct Focus {
    object_type: &'static str,
    paths: Vec<&'static str>,
    related: Vec<(&'static str, &'static str)>,
}

fn focus() -> impl Strategy<Value = Focus> {
    (
        select(TYPES),
        subsequence(PATHS, 3),
        subsequence(RELATED, 2),
    )
        .prop_map(|(object_type, paths, related)| Focus {
            object_type,
            paths,
            related,
        })
}

/// The focus type two times in three, else any.
fn object_type_of(focus: &Focus) -> BoxedStrategy<&'static str> {
    prop_oneof![2 => Just(focus.object_type), 1 => select(TYPES)].boxed()
}

// ---- generators: comparison expressions --------------------------------

fn literal(focus: &Focus, object_type: &str, path: &str) -> BoxedStrategy<String> {
    let general = prop_oneof![
        5 => select(STRING_LITERALS).prop_map(String::from),
        3 => select(NUMBER_LITERALS).prop_map(String::from),
        1 => select(&["true", "false"][..]).prop_map(String::from),
        2 => select(BYTE_LITERALS).prop_map(String::from),
        1 => select(TIME_LITERALS).prop_map(String::from),
    ];
    let related: Vec<&str> = focus.related.iter().map(|(lit, _)| *lit).collect();
    let any = prop_oneof![1 => general, 1 => select(related).prop_map(String::from)];
    // Digests and addresses of the right kind, or the validator refuses
    // most equality tests on these paths.
    let fitting = match (object_type, path) {
        (_, "hashes.MD5") => Some(MD5_LITERALS),
        (_, "hashes.'SHA-256'") => Some(SHA256_LITERALS),
        ("ipv4-addr", "value") => Some(IPV4_LITERALS),
        ("ipv6-addr", "value") => Some(IPV6_LITERALS),
        _ => None,
    };
    match fitting {
        Some(pool) => prop_oneof![
            3 => select(pool).prop_map(String::from),
            1 => any,
        ]
        .boxed(),
        None => any.boxed(),
    }
}

/// One property test on an object of `object_type`, as pattern text.
fn property_test(focus: &Focus, object_type: &'static str) -> BoxedStrategy<String> {
    let path = prop_oneof![2 => select(focus.paths.clone()), 1 => select(PATHS)];
    let focus = focus.clone();
    (path, select(OPERATORS), weighted(0.2, Just("NOT ")))
        .prop_flat_map(move |(path, op, not)| {
            let not = not.unwrap_or("");
            let lhs = format!("{object_type}:{path}");
            match op {
                "EXISTS" => Just(format!("{not}EXISTS {lhs}")).boxed(),
                "IN" => vec(literal(&focus, object_type, path), 1..=3)
                    .prop_map(move |items| format!("{lhs} {not}IN ({})", items.join(", ")))
                    .boxed(),
                "LIKE" | "MATCHES" | "ISSUBSET" | "ISSUPERSET" => {
                    let pool = match op {
                        "LIKE" => LIKE_OPERANDS,
                        "MATCHES" => MATCHES_OPERANDS,
                        _ => CIDR_OPERANDS,
                    };
                    select(pool)
                        .prop_map(move |operand| format!("{lhs} {not}{op} {operand}"))
                        .boxed()
                }
                _ => literal(&focus, object_type, path)
                    .prop_map(move |l| format!("{lhs} {not}{op} {l}"))
                    .boxed(),
            }
        })
        .boxed()
}

/// A comparison expression starting from `object_type`. Operands of `AND`
/// keep the type (one object must satisfy them all); operands of an `OR`
/// outside any `AND` may choose their own.
fn comparison_expr(
    focus: &Focus,
    object_type: &'static str,
    depth: u32,
    fixed: bool,
) -> BoxedStrategy<String> {
    let test = property_test(focus, object_type);
    if depth == 0 {
        return test;
    }
    let and = vec(comparison_expr(focus, object_type, depth - 1, true), 2..=3)
        .prop_map(|items| format!("({})", items.join(" AND ")));
    let or_operand = if fixed {
        comparison_expr(focus, object_type, depth - 1, true)
    } else {
        let focus = focus.clone();
        object_type_of(&focus)
            .prop_flat_map(move |t| comparison_expr(&focus, t, depth - 1, false))
            .boxed()
    };
    let or = vec(or_operand, 2..=3).prop_map(|items| format!("({})", items.join(" OR ")));
    prop_oneof![4 => test, 1 => and, 1 => or].boxed()
}

fn single_pattern(focus: &Focus) -> BoxedStrategy<String> {
    let focus = focus.clone();
    object_type_of(&focus)
        .prop_flat_map(move |t| comparison_expr(&focus, t, 2, false).prop_map(|c| format!("[{c}]")))
        .boxed()
}

// ---- generators: observations -------------------------------------------

fn json_number() -> impl Strategy<Value = Value> {
    select(NUMBER_VALUES).prop_map(|n| serde_json::from_str(n).expect("a JSON number"))
}

fn json_value(focus: &Focus) -> BoxedStrategy<Value> {
    let related: Vec<&str> = focus.related.iter().map(|(_, json)| *json).collect();
    prop_oneof![
        12 => select(TEXT_VALUES).prop_map(Value::from),
        6 => json_number(),
        2 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        20 => select(related).prop_map(|j| serde_json::from_str(j).expect("a JSON value")),
    ]
    .boxed()
}

fn hashes() -> impl Strategy<Value = Value> {
    let algorithm = select(&["MD5", "SHA-256", "SHA-1"][..]);
    vec((algorithm, select(DIGEST_VALUES)), 0..=2).prop_map(|pairs| {
        let map: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        Value::Object(map)
    })
}

fn ref_keys() -> impl Strategy<Value = Value> {
    vec(select(REF_KEYS).prop_map(Value::from), 0..=2).prop_map(Value::Array)
}

/// Binary properties: mostly valid encodings, some that do not decode.
fn encoded(focus: &Focus, pool: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![2 => select(pool).prop_map(Value::from), 1 => json_value(focus)].boxed()
}

/// One cyber-observable with a random subset of the vocabulary's
/// properties.
fn cyber_object(focus: &Focus) -> BoxedStrategy<Value> {
    let size = prop_oneof![1 => json_number(), 1 => json_value(focus)];
    let core = (
        object_type_of(focus),
        weighted(0.85, json_value(focus)),
        weighted(0.6, json_value(focus)),
        weighted(0.6, size),
        weighted(0.5, hashes()),
    );
    let refs = (
        weighted(0.6, select(REF_KEYS)),
        weighted(0.6, select(REF_KEYS)),
        weighted(0.4, ref_keys()),
    );
    let protocols = prop_oneof![
        2 => select(PROTOCOLS).prop_map(Value::from),
        1 => json_value(focus),
    ];
    let lists = (
        weighted(0.5, vec(protocols, 0..=2)),
        weighted(0.5, vec(json_value(focus), 0..=2)),
    );
    let bytes = (
        weighted(0.4, encoded(focus, BASE64_VALUES)),
        weighted(0.4, encoded(focus, HEX_VALUES)),
    );
    (core, refs, lists, bytes)
        .prop_map(|(core, refs, lists, bytes)| {
            let (object_type, value, name, size, hashes) = core;
            let (src, dst, x_refs) = refs;
            let (protocols, x_list) = lists;
            let (payload, magic) = bytes;
            let mut object = Map::new();
            object.insert("type".into(), object_type.into());
            let mut put = |key: &str, v: Option<Value>| {
                if let Some(v) = v {
                    object.insert(key.into(), v);
                }
            };
            put("value", value);
            put("name", name);
            put("size", size);
            put("hashes", hashes);
            put("src_ref", src.map(Value::from));
            put("dst_ref", dst.map(Value::from));
            put("x_refs", x_refs);
            put("protocols", protocols.map(Value::Array));
            let x_list = x_list.map(|items| {
                let wrapped = items.into_iter().map(|k| {
                    let mut element = Map::new();
                    element.insert("k".into(), k);
                    Value::Object(element)
                });
                Value::Array(wrapped.collect())
            });
            put("x_list", x_list);
            put("payload_bin", payload);
            put("magic_number_hex", magic);
            Value::Object(object)
        })
        .boxed()
}

/// An observation over `[first_ms, last_ms]` seen `count` times.
fn observed(first_ms: i64, last_ms: i64, count: u32, objects: Vec<Value>) -> Observation {
    let mut obs = Observation::single(at_ms(first_ms), numbered(objects));
    obs.last_observed = at_ms(last_ms);
    obs.number_observed = count;
    obs
}

/// Objects keyed "0", "1", … as in STIX 2.0 observed-data.
fn numbered(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .enumerate()
        .map(|(n, o)| (n.to_string(), o))
        .collect()
}

fn observation(focus: &Focus) -> BoxedStrategy<Observation> {
    let first_ms = select(&[0_i64, 500, 1000, 2000][..]);
    let length_ms = select(&[0_i64, 0, 1500][..]);
    let count = select(&[1_u32, 1, 2, 3][..]);
    (first_ms, length_ms, count, vec(cyber_object(focus), 1..=5))
        .prop_map(|(first_ms, length_ms, count, objects)| {
            observed(first_ms, first_ms + length_ms, count, objects)
        })
        .boxed()
}

/// `valid_from` and `valid_until` as offsets from `BASE_SECS`, in ms.
fn validity() -> impl Strategy<Value = (Option<i64>, Option<i64>)> {
    let bound = || weighted(0.3, select(&[-1000_i64, 0, 500, 1000, 2500][..]));
    (bound(), bound())
}

fn record(n: usize, text: &str, validity: (Option<i64>, Option<i64>)) -> IndicatorRecord {
    IndicatorRecord {
        valid_from: validity.0.map(at_ms),
        valid_until: validity.1.map(at_ms),
        ..IndicatorRecord::new(&indicator_id(n), text)
    }
}

// ---- 1. single observations ---------------------------------------------

type Validity = (Option<i64>, Option<i64>);

fn check_single_observation(
    patterns: &[(String, Validity)],
    obs: &Observation,
    one_by_one: bool,
    tally: &Tally,
) -> TestCaseResult {
    let mut records = Vec::new();
    let mut parsed: Vec<Pattern> = Vec::new();
    for (n, (text, validity)) in patterns.iter().enumerate() {
        match parse(text) {
            Ok(pattern) => {
                Tally::bump(&tally.accepted);
                records.push(record(n, text, *validity));
                parsed.push(pattern);
            }
            Err(_) => Tally::bump(&tally.refused),
        }
    }

    // Loaded at once, or one upsert per indicator (one segment each, then
    // merged by the catalog's policy).
    let mut catalog = Catalog::new();
    if one_by_one {
        for r in &records {
            prop_assert_eq!(catalog.upsert(r.clone()), Ok(Change::Added));
        }
    } else {
        let errors = catalog.load(records.clone());
        prop_assert!(errors.is_empty(), "load refused {:?}", errors);
    }
    let snapshot = catalog.snapshot();
    prop_assert_eq!(snapshot.len(), records.len());

    let found = matched_ids(&snapshot, obs);
    let mut expected = BTreeSet::new();
    for (r, pattern) in records.iter().zip(&parsed) {
        let holds = eval::matches(pattern, std::slice::from_ref(obs)).expect("one observation");
        if holds && valid_during(r, obs) {
            expected.insert(r.id.to_string());
        }
    }
    tally.positive.set(tally.positive.get() + expected.len());
    if found != expected {
        let differing: Vec<String> = found
            .symmetric_difference(&expected)
            .map(|id| {
                let r = records.iter().find(|r| &*r.id == id).expect("a loaded id");
                let side = if found.contains(id) {
                    "matcher only"
                } else {
                    "oracle only"
                };
                format!(
                    "{side}: {} (valid {:?}..{:?})",
                    r.pattern, r.valid_from, r.valid_until
                )
            })
            .collect();
        prop_assert!(
            false,
            "matcher and oracle disagree on {}\n  {}",
            describe(obs),
            differing.join("\n  ")
        );
    }
    Ok(())
}

#[test]
fn single_observation_matches_agree_with_the_oracle() {
    let tally = Tally::default();
    let case = focus().prop_flat_map(|focus| {
        (
            vec((single_pattern(&focus), validity()), 1..=20),
            observation(&focus),
            any::<bool>(),
        )
    });
    check(512, case, |(patterns, obs, one_by_one)| {
        check_single_observation(&patterns, &obs, one_by_one, &tally)
    });
    tally.assert_meaningful("single observations", 0.8, 0.08);
}

// ---- 2. streams -----------------------------------------------------------

const STREAM_LEAVES: &[&str] = &[
    "[x-custom:name = 'a']",
    "[x-custom:name = 'b']",
    "[x-custom:name LIKE 'a%']",
    "[x-custom:size > 1]",
    "[x-custom:name != 'a']",
    "[ipv4-addr:value = '198.51.100.0/24']",
    "[x-custom:name = 'b' AND x-custom:size = 1]",
    "[x-custom:name = 'a' OR ipv4-addr:value ISSUBSET '203.0.113.0/24']",
];

const QUALIFIERS: &[&str] = &[
    "WITHIN 1 SECONDS",
    "WITHIN 2 SECONDS",
    "WITHIN 0.5 SECONDS",
    "WITHIN 1.5 SECONDS",
    "WITHIN 3 SECONDS",
    "REPEATS 2 TIMES",
    "REPEATS 3 TIMES",
    "START t'2024-05-01T10:00:00Z' STOP t'2024-05-01T10:00:02Z'",
    "START t'2024-05-01T10:00:01Z' STOP t'2024-05-01T10:00:05Z'",
];

/// The kind of a qualifier in `QUALIFIERS`, by its first word.
fn qualifier_kind(qualifier: &str) -> &str {
    qualifier.split(' ').next().unwrap_or_default()
}

/// An observation expression over `STREAM_LEAVES`, with up to three
/// qualifiers of distinct kinds (the parser refuses two of one kind).
fn observation_expr(depth: u32) -> BoxedStrategy<String> {
    let leaf = select(STREAM_LEAVES).prop_map(String::from).boxed();
    let base = if depth == 0 {
        leaf
    } else {
        let operators = select(&["AND", "OR", "FOLLOWEDBY"][..]);
        let chain = (operators, vec(observation_expr(depth - 1), 2..=3))
            .prop_map(|(op, items)| format!("({})", items.join(&format!(" {op} "))));
        prop_oneof![2 => leaf, 3 => chain].boxed()
    };
    (base, vec(select(QUALIFIERS), 0..=3))
        .prop_map(|(mut text, qualifiers)| {
            let mut kinds = Vec::new();
            for q in qualifiers {
                if !kinds.contains(&qualifier_kind(q)) {
                    kinds.push(qualifier_kind(q));
                    text = format!("{text} {q}");
                }
            }
            text
        })
        .boxed()
}

fn stream_object() -> impl Strategy<Value = Value> {
    let custom = (
        weighted(0.9, select(&["a", "b", "ab", "c"][..])),
        weighted(0.7, select(&[0, 1, 2][..])),
    )
        .prop_map(|(name, size)| {
            let mut object = Map::new();
            object.insert("type".into(), "x-custom".into());
            if let Some(name) = name {
                object.insert("name".into(), name.into());
            }
            if let Some(size) = size {
                object.insert("size".into(), size.into());
            }
            Value::Object(object)
        });
    let ip = select(&["198.51.100.7", "203.0.113.1"][..]).prop_map(|v| {
        let mut object = Map::new();
        object.insert("type".into(), "ipv4-addr".into());
        object.insert("value".into(), v.into());
        Value::Object(object)
    });
    prop_oneof![3 => custom, 1 => ip]
}

/// A stream in time order: `first_observed` and `last_observed` never
/// decrease, often stay equal, and advance by at most 1.5 s a step.
fn stream() -> impl Strategy<Value = Vec<Observation>> {
    let step = (
        select(&[0_i64, 0, 250, 500, 1000, 1500][..]),
        select(&[0_i64, 0, 0, 700][..]),
        select(&[1_u32, 1, 1, 2][..]),
        vec(stream_object(), 1..=2),
    );
    (select(&[-500_i64, 0, 1000][..]), vec(step, 2..=6)).prop_map(|(start_ms, steps)| {
        let mut first_ms = start_ms;
        let mut last_ms = start_ms;
        let mut out = Vec::new();
        for (advance_ms, length_ms, count, objects) in steps {
            first_ms += advance_ms;
            last_ms = last_ms.max(first_ms + length_ms);
            out.push(observed(first_ms, last_ms, count, objects));
        }
        out
    })
}

/// For each step, whether some binding of `pattern` over the observations
/// up to it uses the observation of that step. `None` when the oracle gives
/// up on the size of the enumeration.
fn oracle_steps(pattern: &Pattern, stream: &[Observation]) -> Option<Vec<bool>> {
    let mut steps = Vec::new();
    for k in 0..stream.len() {
        let found = eval::bindings_including(&pattern.root, &stream[..=k], Some(k)).ok()?;
        steps.push(!found.is_empty());
    }
    Some(steps)
}

fn check_stream(texts: &[String], stream: &[Observation], tally: &Tally) -> TestCaseResult {
    let mut records = Vec::new();
    let mut parsed = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        match parse(text) {
            Ok(pattern) => {
                Tally::bump(&tally.accepted);
                records.push(IndicatorRecord::new(&indicator_id(n), text));
                parsed.push(pattern);
            }
            Err(_) => Tally::bump(&tally.refused),
        }
    }
    let mut catalog = Catalog::new();
    prop_assert!(catalog.load(records.clone()).is_empty());
    let snapshot = catalog.snapshot();

    let mut state = StreamState::default();
    let mut reported: Vec<BTreeSet<String>> = Vec::new();
    for obs in stream {
        let ids = state
            .process(&snapshot, Arc::new(obs.clone()))
            .iter()
            .map(|m| m.indicator.to_string())
            .collect();
        reported.push(ids);
    }
    // Age eviction behind an outer `WITHIN` is the matcher's documented
    // bound (the comparison below tells whether it lost a match); the
    // small streams never fill a window or the window table.
    let stats = state.stats();
    prop_assert_eq!(
        (stats.evicted_full, stats.evicted_windows, stats.too_large),
        (0, 0, 0),
        "unexpected eviction: {:?}",
        stats
    );

    let stream_text: Vec<String> = stream.iter().map(describe).collect();
    let in_order = stream
        .windows(2)
        .all(|w| w[0].last_observed <= w[1].last_observed);
    for (r, pattern) in records.iter().zip(&parsed) {
        // Out of order, a `WITHIN` window legitimately drops observations
        // older than its span behind the newest event time, even when a
        // later arrival could still have combined with them.
        if !in_order && r.pattern.contains("WITHIN") {
            Tally::bump(&tally.skipped);
            continue;
        }
        let Some(expected) = oracle_steps(pattern, stream) else {
            Tally::bump(&tally.skipped);
            continue;
        };
        let found: Vec<bool> = reported.iter().map(|ids| ids.contains(&*r.id)).collect();
        let Ok(matches_all) = eval::matches(pattern, stream) else {
            Tally::bump(&tally.skipped);
            continue;
        };
        if matches_all {
            Tally::bump(&tally.positive);
        }
        prop_assert_eq!(
            found.iter().any(|&f| f),
            matches_all,
            "pattern {} over\n  {}",
            r.pattern,
            stream_text.join("\n  ")
        );
        prop_assert_eq!(
            &found,
            &expected,
            "steps matched differ for {} over\n  {}",
            r.pattern,
            stream_text.join("\n  ")
        );
    }
    Ok(())
}

#[test]
fn stream_matches_agree_with_the_oracle() {
    let tally = Tally::default();
    // One stream in four arrives shuffled (late observations).
    let observations = prop_oneof![3 => stream(), 1 => stream().prop_shuffle()];
    let case = (vec(observation_expr(2), 1..=4), observations);
    check(256, case, |(texts, stream)| {
        check_stream(&texts, &stream, &tally)
    });
    tally.assert_meaningful("streams", 0.8, 0.2);
}

// ---- 3. catalog updates ---------------------------------------------------

/// Patterns of the update property, by index; the last two are refused.
const UPDATE_PATTERNS: &[&str] = &[
    "[file:name = 'a.exe']",
    "[file:name LIKE '%.exe']",
    "[file:size > 10]",
    "[file:name != 'a.exe']",
    "[ipv4-addr:value = '198.51.100.0/24']",
    "[ipv4-addr:value ISSUBSET '198.51.100.0/25']",
    "[domain-name:value MATCHES '^evil']",
    "[file:hashes.MD5 = 'D41D8CD98F00B204E9800998ECF8427E']",
    "[file:name = 'a.exe'] OR [domain-name:value = 'evil.example']",
    "[file:name = ",
    "[ipv4-addr:value = 'evil.example']",
];

#[derive(Clone, Debug)]
enum Op {
    Upsert {
        id: usize,
        version: i64,
        pattern: usize,
        valid_from: Option<i64>,
    },
    Revoke {
        id: usize,
        version: i64,
    },
    Remove {
        id: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = || 0..5_usize;
    let version = || 1..6_i64;
    let from = weighted(0.2, select(&[0_i64, 1000][..]));
    prop_oneof![
        6 => (id(), version(), 0..UPDATE_PATTERNS.len(), from).prop_map(
            |(id, version, pattern, valid_from)| Op::Upsert { id, version, pattern, valid_from }
        ),
        1 => (id(), version()).prop_map(|(id, version)| Op::Revoke { id, version }),
        2 => id().prop_map(|id| Op::Remove { id }),
    ]
}

fn upsert_record(
    id: usize,
    version: i64,
    pattern: usize,
    valid_from: Option<i64>,
) -> IndicatorRecord {
    IndicatorRecord {
        modified: at_ms(version * 1000),
        ..record(id, UPDATE_PATTERNS[pattern], (valid_from, None))
    }
}

/// The lifecycle rules of `Catalog`, written out plainly.
#[derive(Clone, Debug)]
struct ModelEntry {
    modified: i64,
    revoked: bool,
    live: Option<IndicatorRecord>,
}

#[derive(Default)]
struct Model {
    entries: BTreeMap<usize, ModelEntry>,
}

/// What the model expects a change to return: a `Change`, or an error.
type Expected = Result<Change, ()>;

impl Model {
    fn apply(&mut self, op: &Op) -> Expected {
        match *op {
            Op::Upsert {
                id,
                version,
                pattern,
                valid_from,
            } => {
                if let Some(e) = self.entries.get(&id) {
                    if e.revoked || version <= e.modified {
                        return Ok(Change::Ignored);
                    }
                }
                let entry = self.entries.entry(id).or_insert(ModelEntry {
                    modified: version,
                    revoked: false,
                    live: None,
                });
                entry.modified = version;
                let existed = entry.live.take().is_some();
                if parse(UPDATE_PATTERNS[pattern]).is_err() {
                    return Err(());
                }
                entry.live = Some(upsert_record(id, version, pattern, valid_from));
                Ok(if existed {
                    Change::Replaced
                } else {
                    Change::Added
                })
            }
            Op::Revoke { id, version } => {
                let entry = self.entries.entry(id).or_insert(ModelEntry {
                    modified: version,
                    revoked: false,
                    live: None,
                });
                if entry.revoked {
                    return Ok(Change::Ignored);
                }
                entry.revoked = true;
                entry.modified = entry.modified.max(version);
                entry.live = None;
                Ok(Change::Revoked)
            }
            Op::Remove { id } => match self.entries.get(&id) {
                None => Ok(Change::Ignored),
                Some(e) if e.revoked => Ok(Change::Ignored),
                Some(e) => {
                    let was_live = e.live.is_some();
                    self.entries.remove(&id);
                    Ok(if was_live {
                        Change::Removed
                    } else {
                        Change::Ignored
                    })
                }
            },
        }
    }

    fn live(&self) -> Vec<IndicatorRecord> {
        self.entries
            .values()
            .filter_map(|e| e.live.clone())
            .collect()
    }
}

/// Observations that tell the update patterns apart.
fn update_observations() -> Vec<Observation> {
    let object = |json: &str| -> Value { serde_json::from_str(json).expect("an object") };
    let single = |ms: i64, objects: Vec<Value>| Observation::single(at_ms(ms), numbered(objects));
    vec![
        single(
            0,
            vec![object(r#"{"type": "file", "name": "a.exe", "size": 5}"#)],
        ),
        single(
            500,
            vec![object(
                r#"{"type": "file", "name": "b.exe", "size": 50,
                    "hashes": {"MD5": "d41d8cd98f00b204e9800998ecf8427e"}}"#,
            )],
        ),
        single(
            1500,
            vec![
                object(r#"{"type": "ipv4-addr", "value": "198.51.100.7"}"#),
                object(r#"{"type": "domain-name", "value": "evil.example"}"#),
            ],
        ),
        single(
            2000,
            vec![object(
                r#"{"type": "ipv4-addr", "value": "198.51.100.200"}"#,
            )],
        ),
        single(0, vec![object(r#"{"type": "file", "name": "c.txt"}"#)]),
    ]
}

/// Applies `ops` one at a time, or with runs of upserts loaded together.
fn check_updates(
    ops: &[Op],
    batched: bool,
    config: CatalogConfig,
    tally: &Tally,
) -> TestCaseResult {
    let mut catalog = Catalog::with_config(config);
    let mut model = Model::default();
    // Upserts waiting to be loaded together, with what the model expects
    // of each; `load` must refuse exactly those the model expects to fail.
    let mut pending: Vec<(IndicatorRecord, Expected)> = Vec::new();
    let flush = |catalog: &mut Catalog, pending: &mut Vec<(IndicatorRecord, Expected)>| {
        let (records, expected): (Vec<_>, Vec<_>) = std::mem::take(pending).into_iter().unzip();
        let refused = catalog.load(records).len();
        let invalid = expected.iter().filter(|e| e.is_err()).count();
        prop_assert_eq!(refused, invalid, "errors from one load");
        Ok(())
    };
    for (step, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got: Expected = match *op {
            Op::Upsert {
                id,
                version,
                pattern,
                valid_from,
            } => {
                let r = upsert_record(id, version, pattern, valid_from);
                if batched {
                    pending.push((r, expected));
                    continue;
                }
                catalog.upsert(r).map_err(drop)
            }
            Op::Revoke { id, version } => {
                flush(&mut catalog, &mut pending)?;
                Ok(catalog.revoke(&indicator_id(id), at_ms(version * 1000)))
            }
            Op::Remove { id } => {
                flush(&mut catalog, &mut pending)?;
                Ok(catalog.remove(&indicator_id(id)))
            }
        };
        prop_assert_eq!(got, expected, "step {} ({:?})", step, op);
        let live = model.live().len();
        prop_assert_eq!(catalog.len(), live, "catalog.len() after step {}", step);
        prop_assert_eq!(
            catalog.snapshot().len(),
            live,
            "snapshot.len() after step {} ({:?})",
            step,
            op
        );
    }
    flush(&mut catalog, &mut pending)?;
    let live = model.live();
    prop_assert_eq!(catalog.len(), live.len(), "catalog.len() at the end");
    prop_assert_eq!(
        catalog.snapshot().len(),
        live.len(),
        "snapshot.len() at the end"
    );

    let mut scratch = Catalog::new();
    prop_assert!(scratch.load(live.clone()).is_empty());
    prop_assert_eq!(scratch.snapshot().len(), live.len());
    for obs in update_observations() {
        let incremental = matched_ids(&catalog.snapshot(), &obs);
        let from_scratch = matched_ids(&scratch.snapshot(), &obs);
        let mut expected = BTreeSet::new();
        for r in &live {
            let pattern = parse(&r.pattern).expect("live records parse");
            let holds = eval::matches(&pattern, std::slice::from_ref(&obs)).expect("small");
            if holds && valid_during(r, &obs) {
                expected.insert(r.id.to_string());
            }
        }
        tally.accepted.set(tally.accepted.get() + live.len());
        tally.positive.set(tally.positive.get() + expected.len());
        prop_assert_eq!(
            &from_scratch,
            &expected,
            "scratch catalog on {}",
            describe(&obs)
        );
        prop_assert_eq!(
            &incremental,
            &expected,
            "updated catalog on {}",
            describe(&obs)
        );
    }
    Ok(())
}

fn catalog_config() -> impl Strategy<Value = CatalogConfig> {
    prop_oneof![
        Just(CatalogConfig::default()),
        // Rebuild everything as soon as changes are half the base.
        Just(CatalogConfig {
            rebuild_ratio: 0.5,
            rebuild_min_changes: 1,
            ..CatalogConfig::default()
        }),
        Just(CatalogConfig {
            rebuild_ratio: 2.0,
            rebuild_min_changes: 3,
            ..CatalogConfig::default()
        }),
    ]
}

#[test]
fn one_at_a_time_updates_agree_with_loading_the_final_state() {
    let tally = Tally::default();
    check(
        256,
        (vec(op(), 1..=30), catalog_config()),
        |(ops, config)| check_updates(&ops, false, config, &tally),
    );
    tally.assert_meaningful("updates one at a time", 1.0, 0.1);
}

#[test]
fn batched_updates_agree_with_loading_the_final_state() {
    let tally = Tally::default();
    check(
        256,
        (vec(op(), 1..=30), catalog_config()),
        |(ops, config)| check_updates(&ops, true, config, &tally),
    );
    tally.assert_meaningful("updates in batches", 1.0, 0.1);
}

// ---- regressions ------------------------------------------------------------

/// Feeds `observations` in order to one stream state holding `pattern`;
/// returns whether the matcher reported a match on some step, and whether
/// the oracle matches the whole set.
fn matcher_and_oracle(pattern: &str, observations: &[Observation]) -> (bool, bool) {
    let mut catalog = Catalog::new();
    let record = IndicatorRecord::new(&indicator_id(0), pattern);
    catalog.upsert(record).expect("the pattern is valid");
    let snapshot = catalog.snapshot();
    let mut state = StreamState::default();
    let matcher = observations
        .iter()
        .any(|o| !state.process(&snapshot, Arc::new(o.clone())).is_empty());
    let parsed = parse(pattern).expect("the pattern is valid");
    let oracle = eval::matches(&parsed, observations).expect("a small enumeration");
    (matcher, oracle)
}

/// An event at `offset_ms` holding one object.
fn event(offset_ms: i64, object: &str) -> Observation {
    let object = serde_json::from_str(object).expect("an object");
    Observation::single(at_ms(offset_ms), numbered(vec![object]))
}

/// Found by `single_observation_matches_agree_with_the_oracle`. Ordering a
/// text value against an `h''` or `b''` constant compares the text's
/// Latin-1 bytes in the interpreter (`eval::compare::relate`), but
/// `matcher::anchor::range_kind` takes those constants as incompatible with
/// every value and gives the leaf no anchor: the matcher never reports it.
/// (`=` and `IN` with the same constants do work: `lookup_str` probes the
/// Latin-1 bytes.)
#[test]
fn regression_text_ordered_against_a_bytes_constant() {
    let obs = event(0, r#"{"type": "file", "name": "a"}"#);
    for pattern in ["[file:name < h'ff']", "[file:name >= b'YQ==']"] {
        assert_eq!(
            matcher_and_oracle(pattern, std::slice::from_ref(&obs)),
            (true, true),
            "{pattern} on file:name 'a' (matcher, oracle)"
        );
    }
}

/// Found by `single_observation_matches_agree_with_the_oracle`: the
/// interpreter once applied `ISSUBSET`/`ISSUPERSET` to the raw text of
/// `_bin`/`_hex` properties while the matcher probed their bytes. Binary
/// properties hold bytes, not addresses: both now say false.
#[test]
fn regression_ip_containment_on_a_binary_property() {
    let cases = [
        (
            "[file:payload_bin ISSUBSET '198.51.100.0/24']",
            r#"{"type": "file", "payload_bin": "198.51.100.7"}"#,
        ),
        (
            "[file:magic_number_hex ISSUPERSET '198.51.100.7']",
            r#"{"type": "file", "magic_number_hex": "198.51.100.0/24"}"#,
        ),
    ];
    for (pattern, object) in cases {
        assert_eq!(
            matcher_and_oracle(pattern, &[event(0, object)]),
            (false, false),
            "{pattern} on {object} (matcher, oracle)"
        );
    }
}

/// Found by `stream_matches_agree_with_the_oracle`. In
/// `[c] WITHIN 1 SECONDS REPEATS 2 TIMES` the `WITHIN` bounds each
/// repetition, not the whole match (the tree is `Repeats(Within([c]))`),
/// so two events 1 s apart match. `matcher::stream::outer_within` looks
/// through the `REPEATS` and ages the window by 1 s: the first event is
/// evicted (`evicted_age`) just before the second is evaluated.
#[test]
fn regression_within_under_repeats_does_not_bound_the_window() {
    let a = r#"{"type": "x-custom", "name": "a"}"#;
    let events = [event(0, a), event(1000, a)];
    assert_eq!(
        matcher_and_oracle(
            "[x-custom:name = 'a'] WITHIN 1 SECONDS REPEATS 2 TIMES",
            &events
        ),
        (true, true),
        "(matcher, oracle)"
    );
}
