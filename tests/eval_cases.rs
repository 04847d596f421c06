//! Table-driven tests of the reference interpreter: (pattern, observations,
//! expected) in named groups, with observations built from STIX JSON the
//! way the pipeline reads them.
//!
//! Expectations follow STIX 2.1 §9 and the decisions recorded in the module
//! docs of `sightline::eval` and its comparison module.

use serde_json::{Value, json};
use sightline::eval::matches;
use sightline::pattern::parse;
use sightline::stix::observation::{Observation, observations_from_document};

// ---- building observations ---------------------------------------------

/// The time every single-observation fixture is seen at.
const BASE: &str = "2024-03-01T12:00:00Z";

/// A time `ms` milliseconds after [`BASE`] (less than an hour).
fn at_ms(ms: u64) -> String {
    assert!(ms < 3_600_000, "fixture times stay within the base hour");
    let (secs, millis) = (ms / 1000, ms % 1000);
    format!(
        "2024-03-01T12:{:02}:{:02}.{millis:03}Z",
        secs / 60,
        secs % 60
    )
}

/// A time `secs` seconds after [`BASE`].
fn at(secs: u64) -> String {
    at_ms(secs * 1000)
}

/// One STIX 2.0 observed-data with inline `objects`.
fn observed(first: &str, last: &str, count: u32, objects: Value) -> Value {
    json!({
        "type": "observed-data",
        "first_observed": first,
        "last_observed": last,
        "number_observed": count,
        "objects": objects,
    })
}

/// A document with one observation, at [`BASE`], of the single `object`.
fn single(object: Value) -> Value {
    observed(BASE, BASE, 1, json!({ "0": object }))
}

/// One observed-data holding an `x-event` object for each of `names`.
fn events(first: &str, last: &str, count: u32, names: &[&str]) -> Value {
    let objects: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (i.to_string(), json!({ "type": "x-event", "name": name })))
        .collect();
    observed(first, last, count, Value::Object(objects))
}

/// An `x-event` named `name`, seen once at `time`.
fn once(time: &str, name: &str) -> Value {
    events(time, time, 1, &[name])
}

/// A document holding the given observed-data objects.
fn doc(items: Vec<Value>) -> Value {
    Value::Array(items)
}

// ---- running cases -----------------------------------------------------

fn evaluate(pattern: &str, document: &Value) -> Result<bool, String> {
    let pattern = parse(pattern).map_err(|e| format!("pattern refused: {e}"))?;
    let observations: Vec<Observation> = observations_from_document(document)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("fixture refused: {e}"))?;
    matches(&pattern, &observations).map_err(|e| format!("evaluation failed: {e}"))
}

/// A failure line for one case, or `None` when it behaves as expected.
fn run_case(label: &str, pattern: &str, document: &Value, expected: bool) -> Option<String> {
    match evaluate(pattern, document) {
        Ok(got) if got == expected => None,
        Ok(got) => Some(format!(
            "  {label}{pattern}\n    expected {expected}, got {got}"
        )),
        Err(why) => Some(format!("  {label}{pattern}\n    {why}")),
    }
}

fn report(group: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{group}: {} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs (pattern, expected) cases against one document.
fn check(group: &str, document: &Value, cases: &[(&str, bool)]) {
    let failures = cases
        .iter()
        .filter_map(|&(pattern, expected)| run_case("", pattern, document, expected))
        .collect();
    report(group, cases.len(), failures);
}

/// Runs (name, pattern, document, expected) cases.
fn check_named(group: &str, cases: &[(&str, &str, &Value, bool)]) {
    let failures = cases
        .iter()
        .filter_map(|&(name, pattern, document, expected)| {
            run_case(&format!("[{name}] "), pattern, document, expected)
        })
        .collect();
    report(group, cases.len(), failures);
}

// ---- comparisons on one object -----------------------------------------

#[test]
fn string_comparisons() {
    let document = single(json!({ "type": "file", "name": "beta" }));
    check(
        "string comparisons",
        &document,
        &[
            ("[file:name = 'beta']", true),
            ("[file:name == 'beta']", true),
            ("[file:name = 'Beta']", false),
            ("[file:name = 'bet']", false),
            ("[file:name = '']", false),
            ("[file:name != 'alpha']", true),
            ("[file:name != 'beta']", false),
            ("[file:name <> 'beta']", false),
            ("[file:name < 'gamma']", true),
            ("[file:name < 'beta0']", true),
            ("[file:name < 'beta']", false),
            ("[file:name < 'alpha']", false),
            ("[file:name <= 'beta']", true),
            ("[file:name > 'alpha']", true),
            ("[file:name > 'betA']", true),
            ("[file:name > 'beta']", false),
            ("[file:name >= 'beta']", true),
            ("[file:name >= 'c']", false),
            ("[file:name < 'é']", true),
            ("[file:name IN ('alpha', 'beta')]", true),
            ("[file:name IN ('alpha', 'gamma')]", false),
            ("[file:name IN ()]", false),
        ],
    );
}

#[test]
fn numeric_comparisons() {
    let document = single(json!({
        "type": "x-num",
        "i": 1,
        "f": 1.5,
        "whole": 2.0,
        "neg": -3,
        "big": 9_007_199_254_740_993_u64,
        "huge": u64::MAX,
    }));
    check(
        "numeric comparisons",
        &document,
        &[
            ("[x-num:i = 1]", true),
            ("[x-num:i = 1.0]", true),
            ("[x-num:i = 1.5]", false),
            ("[x-num:i != 1.5]", true),
            ("[x-num:i != 1.0]", false),
            ("[x-num:i < 1.5]", true),
            ("[x-num:i <= 1]", true),
            ("[x-num:i > 0.999]", true),
            ("[x-num:i >= 2]", false),
            ("[x-num:i IN (2, 1.0)]", true),
            ("[x-num:f = 1.5]", true),
            ("[x-num:f = 1]", false),
            ("[x-num:f != 1]", true),
            ("[x-num:f > 1]", true),
            ("[x-num:f < 2]", true),
            ("[x-num:f >= 1.5]", true),
            ("[x-num:whole = 2]", true),
            ("[x-num:neg = -3.0]", true),
            ("[x-num:neg < -2]", true),
            ("[x-num:neg > -3.5]", true),
            ("[x-num:big = 9007199254740993]", true),
            ("[x-num:big = 9007199254740992]", false),
            ("[x-num:big > 9007199254740992.0]", true),
            ("[x-num:huge > 9223372036854775807]", true),
        ],
    );
}

#[test]
fn boolean_comparisons() {
    let document = single(json!({ "type": "x-flag", "on": true, "off": false }));
    check(
        "boolean comparisons",
        &document,
        &[
            ("[x-flag:on = true]", true),
            ("[x-flag:on = false]", false),
            ("[x-flag:on != false]", true),
            ("[x-flag:on != true]", false),
            ("[x-flag:off = false]", true),
            ("[x-flag:on IN (false, true)]", true),
            ("[x-flag:off IN (true)]", false),
            ("[x-flag:on NOT = true]", false),
            ("[x-flag:on NOT = false]", true),
        ],
    );
}

#[test]
fn timestamp_comparisons() {
    let document = single(json!({
        "type": "file",
        "name": "report.pdf",
        "created": "2014-01-13T07:03:17Z",
        // Offsets in data are read as the instant they denote.
        "modified": "2014-01-13T08:03:17.5+01:00",
    }));
    check(
        "timestamp comparisons",
        &document,
        &[
            ("[file:created = t'2014-01-13T07:03:17Z']", true),
            ("[file:created = t'2014-01-13T07:03:17.000Z']", true),
            ("[file:created != t'2014-01-13T07:03:17.001Z']", true),
            ("[file:created > t'2014-01-13T07:03:16.999Z']", true),
            ("[file:created < t'2014-01-13T07:03:17.001Z']", true),
            ("[file:created <= t'2014-01-13T07:03:17Z']", true),
            ("[file:created < t'2014-01-13T07:03:17Z']", false),
            ("[file:created >= t'2014-01-13T07:03:17.000000001Z']", false),
            ("[file:modified = t'2014-01-13T07:03:17.5Z']", true),
            // Against a string constant the value is a string.
            ("[file:created = '2014-01-13T07:03:17Z']", true),
            ("[file:created = '2014-01-13T07:03:17.000Z']", false),
            // A string that is no timestamp cannot be compared with one.
            ("[file:name = t'2014-01-13T07:03:17Z']", false),
            ("[file:name != t'2014-01-13T07:03:17Z']", true),
            ("[file:name > t'2014-01-13T07:03:17Z']", false),
        ],
    );
}

#[test]
fn incompatible_types() {
    let document = single(json!({
        "type": "x-mix",
        "s": "1",
        "n": 1,
        "b": true,
        "list": ["a"],
        "obj": { "k": "a" },
    }));
    check(
        "incompatible types",
        &document,
        &[
            ("[x-mix:s = 1]", false),
            ("[x-mix:s != 1]", true),
            ("[x-mix:n = '1']", false),
            ("[x-mix:n != '1']", true),
            ("[x-mix:b = 'true']", false),
            ("[x-mix:b != 'true']", true),
            ("[x-mix:b = 1]", false),
            ("[x-mix:b != 1]", true),
            ("[x-mix:list = 'a']", false),
            ("[x-mix:list != 'a']", true),
            ("[x-mix:obj = 'a']", false),
            ("[x-mix:obj != 'a']", true),
            ("[x-mix:s < 2]", false),
            ("[x-mix:s >= 0]", false),
            ("[x-mix:n < 'a']", false),
            ("[x-mix:n IN ('1', true)]", false),
            ("[x-mix:n LIKE '1']", false),
            ("[x-mix:n MATCHES '1']", false),
            ("[x-mix:n ISSUBSET '0.0.0.0/0']", false),
        ],
    );
}

#[test]
fn missing_properties() {
    let document = single(json!({ "type": "file", "name": "beta" }));
    check(
        "missing properties",
        &document,
        &[
            ("[file:size = 1]", false),
            ("[file:size != 1]", false),
            ("[file:size NOT = 1]", false),
            ("[file:size NOT != 1]", false),
            ("[file:size < 1]", false),
            ("[file:size NOT < 1]", false),
            ("[file:size IN (1)]", false),
            ("[file:size NOT IN (1)]", false),
            ("[file:size NOT IN ()]", false),
            ("[file:size NOT LIKE '1']", false),
            ("[file:size NOT MATCHES '1']", false),
            ("[file:size NOT ISSUBSET '10.0.0.0/8']", false),
            ("[file:name.first != 'b']", false),
            (
                "[file:hashes.MD5 != '79054025255fb1a26e4bc422aef54eb4']",
                false,
            ),
            ("[EXISTS file:name]", true),
            ("[EXISTS file:size]", false),
            ("[NOT EXISTS file:size]", true),
            ("[NOT EXISTS file:name]", false),
            // No process object at all: nothing to test, whatever the test.
            ("[process:name != 'beta']", false),
            ("[NOT EXISTS process:name]", false),
            ("[file:size != 1 OR file:name = 'beta']", true),
            ("[file:size != 1 AND file:name = 'beta']", false),
        ],
    );
}

#[test]
fn not_negates_the_whole_comparison() {
    let document = single(json!({ "type": "file", "name": "beta", "tags": ["a", "b"] }));
    check(
        "NOT semantics",
        &document,
        &[
            ("[file:name NOT = 'alpha']", true),
            ("[file:name NOT = 'beta']", false),
            ("[file:name NOT != 'beta']", true),
            ("[file:name NOT < 'c']", false),
            ("[file:name NOT > 'c']", true),
            ("[file:name NOT IN ('alpha', 'beta')]", false),
            ("[file:name NOT IN ('alpha')]", true),
            ("[file:name NOT IN ()]", true),
            ("[file:name NOT LIKE 'b%']", false),
            ("[file:name NOT LIKE 'a%']", true),
            ("[file:name NOT MATCHES '^b']", false),
            ("[file:name NOT MATCHES '^a']", true),
            // An ordering of incompatible types is false, so NOT makes it true.
            ("[file:name NOT < 5]", true),
            // Over a list, NOT negates "some element satisfies the test".
            ("[file:tags[*] = 'a']", true),
            ("[file:tags[*] != 'a']", true),
            ("[file:tags[*] NOT = 'a']", false),
            ("[file:tags[*] NOT = 'z']", true),
            ("[file:tags[*] NOT IN ('a', 'b')]", false),
        ],
    );
}

#[test]
fn list_indexes() {
    let document = single(json!({
        "type": "x-list",
        "items": ["a", "b", "c"],
        "rows": [{ "n": 1 }, { "n": 2 }],
        "empty": [],
        "text": "abc",
    }));
    check(
        "list indexes",
        &document,
        &[
            ("[x-list:items[0] = 'a']", true),
            ("[x-list:items[1] = 'a']", false),
            ("[x-list:items[2] = 'c']", true),
            ("[x-list:items[3] = 'c']", false),
            ("[x-list:items[3] != 'c']", false),
            ("[x-list:items[-1] = 'c']", false),
            ("[x-list:items[-1] != 'c']", false),
            ("[x-list:items[*] = 'b']", true),
            ("[x-list:items[*] = 'z']", false),
            ("[x-list:items[*] IN ('z', 'c')]", true),
            ("[x-list:items[*] > 'b']", true),
            ("[x-list:rows[*].n = 2]", true),
            ("[x-list:rows[1].n = 1]", false),
            // Each comparison chooses its own element.
            ("[x-list:rows[*].n > 1 AND x-list:rows[*].n < 2]", true),
            ("[x-list:empty[*] = 'a']", false),
            ("[x-list:empty[*] != 'a']", false),
            ("[NOT EXISTS x-list:empty[*]]", true),
            ("[EXISTS x-list:empty]", true),
            ("[x-list:text[0] = 'a']", false),
            ("[x-list:items.a = 'a']", false),
            ("[x-list:rows.n = 1]", false),
        ],
    );
}

#[test]
fn dictionary_keys_and_hashes() {
    let document = single(json!({
        "type": "file",
        "hashes": {
            "MD5": "79054025255FB1A26E4BC422AEF54EB4",
            "SHA-256": "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f",
            "SSDEEP": "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C",
        },
        "extensions": {
            "x-acme": { "a b": 1, "AND": 2, "x-y": 3, "a.b": 4, "a": { "b": 5 } },
        },
    }));
    check(
        "dictionary keys and hashes",
        &document,
        &[
            (
                "[file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4']",
                true,
            ),
            (
                "[file:hashes.'MD5' = '79054025255FB1A26E4BC422AEF54EB4']",
                true,
            ),
            (
                "[file:hashes.MD5 != '79054025255fb1a26e4bc422aef54eb4']",
                false,
            ),
            (
                "[file:hashes.MD5 IN ('79054025255fb1a26e4bc422aef54eb4')]",
                true,
            ),
            ("[file:hashes.MD5 LIKE '79054025255FB1A2%']", true),
            // Hex digests ignore case only for =, != and IN; LIKE and
            // MATCHES compare text as written.
            ("[file:hashes.MD5 LIKE '79054025255fb1a2%']", false),
            (
                "[file:hashes.'SHA-256' = \
                 'AEC070645FE53EE3B3763059376134F058CC337247C978ADD178B6CCDFB0019F']",
                true,
            ),
            (
                "[file:hashes.'SHA-256' = \
                 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
                true,
            ),
            (
                "[file:hashes.'SHA-256' = \
                 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb00190']",
                false,
            ),
            // Only fixed-length hex digests ignore case.
            (
                "[file:hashes.SSDEEP = '3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C']",
                true,
            ),
            (
                "[file:hashes.SSDEEP = '3:axgbicflgvnhbgcl6wcrfqev:axghsnhxlsr2c']",
                false,
            ),
            // Dictionary keys are case-sensitive.
            (
                "[file:hashes.md5 = '79054025255fb1a26e4bc422aef54eb4']",
                false,
            ),
            ("[file:extensions.'x-acme'.'a b' = 1]", true),
            ("[file:extensions.'x-acme'.'AND' = 2]", true),
            ("[file:extensions.'x-acme'.'x-y' = 3]", true),
            ("[file:extensions.'x-acme'.'a.b' = 4]", true),
            ("[file:extensions.'x-acme'.a.b = 5]", true),
            ("[file:extensions.'x-acme'.a.b = 4]", false),
        ],
    );
}

#[test]
fn custom_objects_and_properties() {
    let document = observed(
        BASE,
        BASE,
        1,
        json!({
            "0": {
                "type": "x-usb-device",
                "usbdrive": { "serial_number": "575833314133343231313937" },
            },
            "1": { "type": "x-acme-widget", "serial_number": "W-1", "x_acme_score": 7 },
            "2": { "type": "file", "name": "a.txt", "x_acme_tag": "red" },
        }),
    );
    check(
        "custom objects",
        &document,
        &[
            (
                "[x-usb-device:usbdrive.serial_number = '575833314133343231313937']",
                true,
            ),
            (
                "[x-usb-device:usbdrive.serial_number = '575833314133343231313938']",
                false,
            ),
            ("[x-acme-widget:serial_number = 'W-1']", true),
            ("[x-acme-widget:x_acme_score > 5]", true),
            ("[file:x_acme_tag = 'red']", true),
            ("[x-acme-gadget:serial_number = 'W-1']", false),
            (
                "[x-acme-widget:serial_number = 'W-2' OR x-acme-widget:x_acme_score = 7]",
                true,
            ),
        ],
    );
}

// ---- references and the same-object rule --------------------------------

#[test]
fn references_stix20() {
    let document = observed(
        BASE,
        BASE,
        1,
        json!({
            "0": { "type": "email-addr", "value": "jdoe@example.com" },
            "1": { "type": "email-addr", "value": "mary@example.com" },
            "2": { "type": "file", "name": "Final Report Q3.exe" },
            "3": {
                "type": "email-message",
                "is_multipart": true,
                "from_ref": "0",
                "to_refs": ["1", "0"],
                "sender_ref": "9",
                "bcc_refs": ["9"],
                "body_multipart": [
                    { "content_type": "text/plain", "body": "see attached" },
                    { "content_type": "application/octet-stream", "body_raw_ref": "2" },
                ],
            },
        }),
    );
    check(
        "references (STIX 2.0 local keys)",
        &document,
        &[
            ("[email-message:from_ref.value = 'jdoe@example.com']", true),
            ("[email-message:from_ref.value = 'mary@example.com']", false),
            ("[email-message:from_ref = '0']", true),
            (
                "[email-message:to_refs[*].value = 'mary@example.com']",
                true,
            ),
            (
                "[email-message:to_refs[0].value = 'mary@example.com']",
                true,
            ),
            (
                "[email-message:to_refs[1].value = 'mary@example.com']",
                false,
            ),
            (
                "[email-message:to_refs[2].value = 'mary@example.com']",
                false,
            ),
            (
                "[email-message:body_multipart[*].body_raw_ref.name = 'Final Report Q3.exe']",
                true,
            ),
            (
                "[email-message:body_multipart[0].body_raw_ref.name = 'Final Report Q3.exe']",
                false,
            ),
            (SPEC_EMAIL_EXAMPLE, true),
            // Referenced objects are objects of the observation as well.
            ("[email-addr:value = 'mary@example.com']", true),
            // Dangling references reach nothing.
            (
                "[email-message:sender_ref.value = 'jdoe@example.com']",
                false,
            ),
            (
                "[email-message:sender_ref.value != 'jdoe@example.com']",
                false,
            ),
            ("[email-message:sender_ref.value NOT = 'x']", false),
            ("[EXISTS email-message:sender_ref.value]", false),
            ("[EXISTS email-message:sender_ref]", true),
            ("[email-message:bcc_refs[*].value != 'x']", false),
            (
                "[email-message:cc_refs[*].value = 'jdoe@example.com']",
                false,
            ),
        ],
    );
}

/// STIX 2.1 §9.8: an email from a domain with an attachment file name.
const SPEC_EMAIL_EXAMPLE: &str = concat!(
    r"[email-message:from_ref.value MATCHES '.+\\@example\\.com$' AND ",
    r"email-message:body_multipart[*].body_raw_ref.name MATCHES '^Final Report.+\\.exe$']",
);

#[test]
fn references_stix21() {
    let document = json!({
        "type": "bundle",
        "id": "bundle--6b6f2a5e-0d8e-4c0c-9a7c-6c1c8c3b1b10",
        "objects": [
            {
                "type": "observed-data",
                "id": "observed-data--1",
                "first_observed": BASE,
                "last_observed": BASE,
                "number_observed": 1,
                "object_refs": ["email-message--1", "email-addr--1", "email-addr--2", "file--1"],
            },
            {
                "type": "email-message",
                "id": "email-message--1",
                "is_multipart": true,
                "from_ref": "email-addr--1",
                "to_refs": ["email-addr--2"],
                "sender_ref": "email-addr--gone",
                "cc_refs": ["email-addr--3"],
                "body_multipart": [{ "body_raw_ref": "file--1" }],
            },
            { "type": "email-addr", "id": "email-addr--1", "value": "jdoe@example.com" },
            { "type": "email-addr", "id": "email-addr--2", "value": "mary@example.com" },
            // In the bundle but not in object_refs: not part of the observation.
            { "type": "email-addr", "id": "email-addr--3", "value": "paul@example.com" },
            { "type": "file", "id": "file--1", "name": "Final Report Q3.exe" },
        ],
    });
    check(
        "references (STIX 2.1 ids)",
        &document,
        &[
            ("[email-message:from_ref.value = 'jdoe@example.com']", true),
            ("[email-message:from_ref = 'email-addr--1']", true),
            (
                "[email-message:to_refs[*].value = 'mary@example.com']",
                true,
            ),
            (
                "[email-message:to_refs[0].value = 'jdoe@example.com']",
                false,
            ),
            (
                "[email-message:body_multipart[*].body_raw_ref.name = 'Final Report Q3.exe']",
                true,
            ),
            (SPEC_EMAIL_EXAMPLE, true),
            (
                "[email-message:sender_ref.value = 'jdoe@example.com']",
                false,
            ),
            (
                "[email-message:sender_ref.value NOT = 'jdoe@example.com']",
                false,
            ),
            (
                "[email-message:cc_refs[*].value = 'paul@example.com']",
                false,
            ),
            ("[email-addr:value = 'paul@example.com']", false),
        ],
    );
}

#[test]
fn one_object_satisfies_a_whole_comparison_expression() {
    // Two connections in one observation: the source of one and the
    // destination of the other must not combine into a match.
    let connections = json!({
        "0": { "type": "ipv4-addr", "value": "203.0.113.10" },
        "1": { "type": "ipv4-addr", "value": "198.51.100.58" },
        "2": { "type": "ipv4-addr", "value": "192.0.2.1" },
        "3": { "type": "ipv4-addr", "value": "192.0.2.2" },
        "4": { "type": "network-traffic", "src_ref": "0", "dst_ref": "2", "dst_port": 80 },
        "5": { "type": "network-traffic", "src_ref": "3", "dst_ref": "1", "dst_port": 443 },
    });
    let seen_once = doc(vec![observed(BASE, BASE, 1, connections.clone())]);
    let seen_twice = doc(vec![observed(BASE, BASE, 2, connections)]);

    let split = concat!(
        "[network-traffic:src_ref.value = '203.0.113.10' AND ",
        "network-traffic:dst_ref.value = '198.51.100.58']",
    );
    let same = concat!(
        "[network-traffic:src_ref.value = '203.0.113.10' AND ",
        "network-traffic:dst_ref.value = '192.0.2.1']",
    );
    let either = concat!(
        "[network-traffic:src_ref.value = '203.0.113.10' OR ",
        "network-traffic:dst_ref.value = '198.51.100.58']",
    );
    let two_observations = concat!(
        "[network-traffic:src_ref.value = '203.0.113.10'] AND ",
        "[network-traffic:dst_ref.value = '198.51.100.58']",
    );
    check_named(
        "same-object rule",
        &[
            ("src and dst of different objects", split, &seen_once, false),
            ("src and dst of one object", same, &seen_once, true),
            ("OR may use different objects", either, &seen_once, true),
            (
                "port of one, source of the other",
                concat!(
                    "[network-traffic:dst_port = 443 AND ",
                    "network-traffic:src_ref.value = '203.0.113.10']"
                ),
                &seen_once,
                false,
            ),
            (
                "two values of one ipv4-addr",
                "[ipv4-addr:value = '203.0.113.10' AND ipv4-addr:value = '198.51.100.58']",
                &seen_once,
                false,
            ),
            (
                "one of two ipv4-addr values",
                "[ipv4-addr:value = '203.0.113.10' OR ipv4-addr:value = '198.51.100.58']",
                &seen_once,
                true,
            ),
            (
                "separate brackets, one instance",
                two_observations,
                &seen_once,
                false,
            ),
            (
                "separate brackets, two instances",
                two_observations,
                &seen_twice,
                true,
            ),
        ],
    );
}

// ---- operators on values ---------------------------------------------------

#[test]
fn ip_networks() {
    let v4 = single(json!({ "type": "ipv4-addr", "value": "198.51.100.7" }));
    let v4_block = single(json!({ "type": "ipv4-addr", "value": "198.51.100.0/25" }));
    let v6 = single(json!({ "type": "ipv6-addr", "value": "2001:db8:dead:beef::1" }));
    let domain = single(json!({ "type": "domain-name", "value": "10.1.2.3" }));
    let traffic = observed(
        BASE,
        BASE,
        1,
        json!({
            "0": { "type": "ipv4-addr", "value": "203.0.113.33" },
            "1": { "type": "ipv6-addr", "value": "2001:db8:dead:beef::7" },
            "2": { "type": "network-traffic", "dst_ref": "0" },
            "3": { "type": "network-traffic", "dst_ref": "1" },
        }),
    );
    let resolved = observed(
        BASE,
        BASE,
        1,
        json!({
            "0": { "type": "ipv4-addr", "value": "198.51.100.1" },
            "1": { "type": "domain-name", "value": "www.5z8.info", "resolves_to_refs": ["0"] },
        }),
    );
    check_named(
        "IP networks",
        &[
            (
                "v4",
                "[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
                &v4,
                true,
            ),
            (
                "v4",
                "[ipv4-addr:value ISSUBSET '198.51.100.7/32']",
                &v4,
                true,
            ),
            ("v4", "[ipv4-addr:value ISSUBSET '198.51.100.7']", &v4, true),
            (
                "v4",
                "[ipv4-addr:value ISSUBSET '198.51.100.77/24']",
                &v4,
                true,
            ),
            ("v4", "[ipv4-addr:value ISSUBSET '0.0.0.0/0']", &v4, true),
            (
                "v4",
                "[ipv4-addr:value ISSUBSET '198.51.100.8/29']",
                &v4,
                false,
            ),
            (
                "v4",
                "[ipv4-addr:value ISSUBSET '198.51.101.0/24']",
                &v4,
                false,
            ),
            ("v4", "[ipv4-addr:value ISSUBSET '::/0']", &v4, false),
            (
                "v4",
                "[ipv4-addr:value ISSUPERSET '198.51.100.7']",
                &v4,
                true,
            ),
            (
                "v4",
                "[ipv4-addr:value ISSUPERSET '198.51.100.7/32']",
                &v4,
                true,
            ),
            (
                "v4",
                "[ipv4-addr:value ISSUPERSET '198.51.100.0/24']",
                &v4,
                false,
            ),
            (
                "v4",
                "[ipv4-addr:value NOT ISSUBSET '10.0.0.0/8']",
                &v4,
                true,
            ),
            ("v4", "[ipv4-addr:value = '198.51.100.7']", &v4, true),
            ("v4", "[ipv4-addr:value = '198.51.100.7/32']", &v4, true),
            // An address equals a CIDR block that contains it.
            ("v4", "[ipv4-addr:value = '198.51.100.0/24']", &v4, true),
            ("v4", "[ipv4-addr:value = '198.51.100.128/25']", &v4, false),
            ("v4", "[ipv4-addr:value != '198.51.100.0/24']", &v4, false),
            (
                "v4",
                "[ipv4-addr:value IN ('10.0.0.0/8', '198.51.100.0/24')]",
                &v4,
                true,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
                &v4_block,
                true,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUBSET '198.51.100.0/25']",
                &v4_block,
                true,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUBSET '198.51.100.0/26']",
                &v4_block,
                false,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUPERSET '198.51.100.7']",
                &v4_block,
                true,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUPERSET '198.51.100.0/25']",
                &v4_block,
                true,
            ),
            (
                "v4 block",
                "[ipv4-addr:value ISSUPERSET '198.51.100.0/24']",
                &v4_block,
                false,
            ),
            (
                "v4 block",
                "[ipv4-addr:value = '198.51.100.7']",
                &v4_block,
                false,
            ),
            (
                "v6",
                "[ipv6-addr:value ISSUBSET '2001:0db8:dead:beef:0000:0000:0000:0000/64']",
                &v6,
                true,
            ),
            (
                "v6",
                "[ipv6-addr:value ISSUBSET '2001:db8::/32']",
                &v6,
                true,
            ),
            (
                "v6",
                "[ipv6-addr:value ISSUBSET '2001:db8:dead:bee0::/64']",
                &v6,
                false,
            ),
            ("v6", "[ipv6-addr:value ISSUBSET '0.0.0.0/0']", &v6, false),
            (
                "v6",
                "[ipv6-addr:value ISSUPERSET '2001:db8:dead:beef:0:0:0:1']",
                &v6,
                true,
            ),
            (
                "v6",
                "[ipv6-addr:value = '2001:0db8:dead:beef:0000:0000:0000:0001']",
                &v6,
                true,
            ),
            (
                "v6",
                "[ipv6-addr:value = '2001:db8:dead:beef::2']",
                &v6,
                false,
            ),
            (
                "dst v4 (§9.8)",
                concat!(
                    "[network-traffic:dst_ref.type = 'ipv4-addr' AND ",
                    "network-traffic:dst_ref.value = '203.0.113.33/32']"
                ),
                &traffic,
                true,
            ),
            (
                "dst v6 (§9.8)",
                concat!(
                    "[network-traffic:dst_ref.value ISSUBSET ",
                    "'2001:0db8:dead:beef:0000:0000:0000:0000/64']"
                ),
                &traffic,
                true,
            ),
            (
                "dst",
                "[network-traffic:dst_ref.value ISSUBSET '198.51.100.0/24']",
                &traffic,
                false,
            ),
            (
                "resolves_to (§9.8)",
                concat!(
                    "[domain-name:value = 'www.5z8.info' AND ",
                    "domain-name:resolves_to_refs[*].value = '198.51.100.1/32']"
                ),
                &resolved,
                true,
            ),
            // Network equality is for ipv4-addr and ipv6-addr values only.
            (
                "domain",
                "[domain-name:value = '10.0.0.0/8']",
                &domain,
                false,
            ),
            (
                "domain",
                "[domain-name:value ISSUBSET '10.0.0.0/8']",
                &domain,
                true,
            ),
        ],
    );
}

#[test]
fn like_operator() {
    let document = single(json!({
        "type": "x-text",
        "name": "report_2020.pdf",
        "path": "C:\\Windows\\System32\\foo1.exe",
        "multi": "a\nb",
        "decomposed": "cafe\u{301}",
        "composed": "caf\u{e9}",
    }));
    check(
        "LIKE",
        &document,
        &[
            ("[x-text:name LIKE 'report%']", true),
            ("[x-text:name LIKE '%.pdf']", true),
            ("[x-text:name LIKE '%2020%']", true),
            ("[x-text:name LIKE '%']", true),
            ("[x-text:name LIKE 'report_2020.pdf']", true),
            ("[x-text:name LIKE 'report_____.pdf']", true),
            ("[x-text:name LIKE 'report____.pdf']", false),
            ("[x-text:name LIKE 'Report%']", false),
            ("[x-text:name LIKE 'report']", false),
            ("[x-text:name LIKE 'report_2020.pd.']", false),
            ("[x-text:name LIKE '[r]eport%']", false),
            (r"[x-text:path LIKE 'C:\\Windows\\%\\foo_.exe']", true),
            (r"[x-text:path LIKE 'C:\\Windows\\%\\foo.exe']", false),
            ("[x-text:multi LIKE 'a%b']", true),
            ("[x-text:multi LIKE 'a_b']", true),
            // Both sides are compared in Unicode normalisation form C.
            ("[x-text:decomposed LIKE 'caf\u{e9}']", true),
            ("[x-text:decomposed LIKE 'caf_']", true),
            ("[x-text:composed LIKE 'cafe\u{301}']", true),
            // Equality compares code points as they are.
            ("[x-text:composed = 'caf\u{e9}']", true),
            ("[x-text:decomposed = 'caf\u{e9}']", false),
        ],
    );
}

#[test]
fn matches_operator() {
    let document = single(json!({
        "type": "x-text",
        "name": "Final Report Q3.exe",
        "multi": "line1\nline2",
        "decomposed": "cafe\u{301}",
    }));
    check(
        "MATCHES",
        &document,
        &[
            ("[x-text:name MATCHES 'Report']", true),
            ("[x-text:name MATCHES '']", true),
            ("[x-text:name MATCHES '^Report']", false),
            ("[x-text:name MATCHES 'exe$']", true),
            (r"[x-text:name MATCHES '^Final Report.+\\.exe$']", true),
            ("[x-text:name MATCHES '^final']", false),
            ("[x-text:name MATCHES '(?i)^final']", true),
            ("[x-text:name NOT MATCHES 'Q4']", true),
            ("[x-text:multi MATCHES 'line1.line2']", true),
            ("[x-text:multi MATCHES '^line1.*line2$']", true),
            ("[x-text:multi MATCHES '^line2']", false),
            ("[x-text:multi MATCHES 'line1$']", false),
            ("[x-text:decomposed MATCHES '^caf.$']", true),
            ("[x-text:decomposed MATCHES 'caf\u{e9}']", true),
        ],
    );
}

#[test]
fn binary_values() {
    // A little-endian pcap global header, base64.
    let pcap = "1MOyoQIABAAAAAAAAAAAAP//AAABAAAA";
    let document = observed(
        BASE,
        BASE,
        1,
        json!({
            "0": {
                "type": "artifact",
                "mime_type": "application/vnd.tcpdump.pcap",
                "payload_bin": pcap,
            },
            "1": {
                "type": "file",
                "name": "a.bmp",
                "mime_type": "image/bmp",
                "magic_number_hex": "FFD8",
            },
            "2": {
                "type": "x-bin",
                "name": "alice",
                "name_bin": "YWxpY2U=",
                "name_hex": "616c696365",
                "high_hex": "ff00e9",
                "bad_bin": "@@@",
                "bad_hex": "abc",
            },
        }),
    );
    check(
        "binary values",
        &document,
        &[
            (
                concat!(
                    r"[artifact:mime_type = 'application/vnd.tcpdump.pcap' AND ",
                    r"artifact:payload_bin MATCHES '\\xd4\\xc3\\xb2\\xa1\\x02\\x00\\x04\\x00']"
                ),
                true,
            ),
            (
                r"[artifact:payload_bin MATCHES '^\\xd4\\xc3\\xb2\\xa1']",
                true,
            ),
            (
                r"[artifact:payload_bin MATCHES '\\xa1\\xb2\\xc3\\xd4']",
                false,
            ),
            (
                "[artifact:payload_bin = b'1MOyoQIABAAAAAAAAAAAAP//AAABAAAA']",
                true,
            ),
            (
                "[artifact:payload_bin = h'd4c3b2a1020004000000000000000000ffff000001000000']",
                true,
            ),
            ("[artifact:payload_bin = h'd4c3b2a1']", false),
            ("[artifact:payload_bin > h'd4c3b2a1']", true),
            ("[artifact:payload_bin < h'd4c3b2a2']", true),
            (
                "[file:mime_type = 'image/bmp' AND file:magic_number_hex = h'ffd8']",
                true,
            ),
            ("[file:magic_number_hex = h'FFD8']", true),
            ("[file:magic_number_hex = b'/9g=']", true),
            ("[file:magic_number_hex = '\u{ff}\u{d8}']", true),
            ("[file:magic_number_hex = 'FFD8']", false),
            ("[file:magic_number_hex = h'ffd9']", false),
            (r"[file:magic_number_hex MATCHES '^\\xff\\xd8$']", true),
            ("[x-bin:name_bin = 'alice']", true),
            ("[x-bin:name_hex = 'alice']", true),
            ("[x-bin:name_bin = h'616c696365']", true),
            ("[x-bin:name_hex = b'YWxpY2U=']", true),
            ("[x-bin:name_bin > 'aardvark']", true),
            // A string property against a binary constant: its code points
            // are the bytes.
            ("[x-bin:name = h'616c696365']", true),
            ("[x-bin:name = b'YWxpY2U=']", true),
            // A code point above U+00FF has no byte form: never equal.
            ("[x-bin:name_bin = '\u{103}lice']", false),
            ("[x-bin:name_bin != '\u{103}lice']", true),
            ("[x-bin:name_bin < '\u{103}lice']", false),
            ("[x-bin:high_hex = '\u{ff}\u{0}\u{e9}']", true),
            (r"[x-bin:high_hex MATCHES '\\xe9$']", true),
            // Undecodable values cannot be obtained: every comparison is
            // false, `!=` included (§9.6).
            ("[x-bin:bad_bin = 'x']", false),
            ("[x-bin:bad_bin != 'x']", false),
            ("[x-bin:bad_hex = h'ab']", false),
        ],
    );
}

// ---- observation operators and qualifiers --------------------------------

#[test]
fn observation_and() {
    let a_then_b = doc(vec![once(&at(0), "a"), once(&at(1), "b")]);
    let b_then_a = doc(vec![once(&at(0), "b"), once(&at(5), "a")]);
    let only_a = doc(vec![once(&at(0), "a")]);
    let a_in_two = doc(vec![once(&at(0), "a"), once(&at(1), "a")]);
    let a_seen_twice = doc(vec![events(&at(0), &at(0), 2, &["a"])]);
    let both_once = doc(vec![events(&at(0), &at(0), 1, &["a", "b"])]);
    let both_twice = doc(vec![events(&at(0), &at(0), 2, &["a", "b"])]);
    let a_twice_and_b = doc(vec![events(&at(0), &at(0), 2, &["a"]), once(&at(1), "b")]);
    let ab = "[x-event:name = 'a'] AND [x-event:name = 'b']";
    let aa = "[x-event:name = 'a'] AND [x-event:name = 'a']";
    let aba = "[x-event:name = 'a'] AND [x-event:name = 'b'] AND [x-event:name = 'a']";
    check_named(
        "observation AND",
        &[
            ("a then b", ab, &a_then_b, true),
            ("b then a: order is free", ab, &b_then_a, true),
            ("only a", ab, &only_a, false),
            ("a in two observations", aa, &a_in_two, true),
            ("a seen once cannot serve both sides", aa, &only_a, false),
            ("a seen twice (number_observed 2)", aa, &a_seen_twice, true),
            (
                "a and b in one observation seen once",
                ab,
                &both_once,
                false,
            ),
            (
                "a and b in one observation seen twice",
                ab,
                &both_twice,
                true,
            ),
            (
                "three operands, two instances of a",
                aba,
                &a_twice_and_b,
                true,
            ),
            ("three operands, one instance of a", aba, &a_then_b, false),
        ],
    );
}

#[test]
fn observation_or() {
    let only_a = doc(vec![once(&at(0), "a")]);
    let only_b = doc(vec![once(&at(0), "b")]);
    let only_c = doc(vec![once(&at(0), "c")]);
    let b_and_c = doc(vec![once(&at(0), "b"), once(&at(1), "c")]);
    let a_and_b = doc(vec![once(&at(0), "a"), once(&at(1), "b")]);
    let a_or_b = "[x-event:name = 'a'] OR [x-event:name = 'b']";
    let a_or_b_and_c = "[x-event:name = 'a'] OR [x-event:name = 'b'] AND [x-event:name = 'c']";
    let grouped = "([x-event:name = 'a'] OR [x-event:name = 'b']) AND [x-event:name = 'c']";
    check_named(
        "observation OR",
        &[
            ("either: only b", a_or_b, &only_b, true),
            ("neither", a_or_b, &only_c, false),
            ("AND binds tighter: a alone", a_or_b_and_c, &only_a, true),
            ("AND binds tighter: b alone", a_or_b_and_c, &only_b, false),
            ("AND binds tighter: b and c", a_or_b_and_c, &b_and_c, true),
            ("grouped OR: b and c", grouped, &b_and_c, true),
            ("grouped OR: no c", grouped, &a_and_b, false),
        ],
    );
}

#[test]
fn followedby() {
    let seq = |items: &[(u64, &str)]| -> Value {
        doc(items.iter().map(|(s, n)| once(&at(*s), n)).collect())
    };
    let a_then_b = seq(&[(0, "a"), (10, "b")]);
    let b_then_a = seq(&[(0, "b"), (10, "a")]);
    let same_instant = seq(&[(5, "a"), (5, "b")]);
    let b_starts_as_a_ends = doc(vec![
        events(&at(0), &at(10), 1, &["a"]),
        events(&at(10), &at(20), 1, &["b"]),
    ]);
    let b_starts_before_a_ends = doc(vec![
        events(&at(0), &at_ms(10_000), 1, &["a"]),
        events(&at_ms(9_999), &at(20), 1, &["b"]),
    ]);
    let b_inside_a = doc(vec![
        events(&at(0), &at(20), 1, &["a"]),
        events(&at(5), &at(6), 1, &["b"]),
    ]);
    let both_at_an_instant = doc(vec![events(&at(5), &at(5), 2, &["a", "b"])]);
    let both_over_an_interval = doc(vec![events(&at(0), &at(10), 2, &["a", "b"])]);
    let a_b_c = seq(&[(0, "a"), (1, "b"), (2, "c")]);
    let a_c_b = seq(&[(0, "a"), (1, "c"), (2, "b")]);
    let b_a_b = seq(&[(0, "b"), (5, "a"), (10, "b")]);
    let a_then_c = seq(&[(0, "a"), (5, "c")]);

    let ab = "[x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b']";
    let abc = concat!(
        "[x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b'] ",
        "FOLLOWEDBY [x-event:name = 'c']"
    );
    let a_then_b_or_c =
        "[x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b'] OR [x-event:name = 'c']";
    check_named(
        "FOLLOWEDBY",
        &[
            ("a then b", ab, &a_then_b, true),
            ("b then a", ab, &b_then_a, false),
            ("same instant, two observations", ab, &same_instant, true),
            ("b starts as a ends", ab, &b_starts_as_a_ends, true),
            (
                "b starts 1 ms before a ends",
                ab,
                &b_starts_before_a_ends,
                false,
            ),
            ("b inside a's interval", ab, &b_inside_a, false),
            (
                "one observation seen twice at an instant",
                ab,
                &both_at_an_instant,
                true,
            ),
            (
                "one observation seen twice over an interval",
                ab,
                &both_over_an_interval,
                false,
            ),
            ("a later b after an earlier one", ab, &b_a_b, true),
            ("chain in order", abc, &a_b_c, true),
            ("chain out of order", abc, &a_c_b, false),
            (
                "FOLLOWEDBY is looser than OR",
                a_then_b_or_c,
                &a_then_c,
                true,
            ),
        ],
    );
}

#[test]
fn repeats() {
    let seq = |names: &[&str]| -> Value {
        doc(names
            .iter()
            .enumerate()
            .map(|(i, n)| once(&at(i as u64), n))
            .collect())
    };
    let aaa = seq(&["a", "a", "a"]);
    let aa = seq(&["a", "a"]);
    let ab = seq(&["a", "b"]);
    let abab = seq(&["a", "b", "a", "b"]);
    let aabb = seq(&["a", "a", "b", "b"]);
    let aab = seq(&["a", "a", "b"]);
    let baab = seq(&["b", "a", "a", "b"]);
    let a_times_3 = doc(vec![events(&at(0), &at(10), 3, &["a"])]);
    let a_times_2 = doc(vec![events(&at(0), &at(10), 2, &["a"])]);
    let a_times_2_and_one = doc(vec![events(&at(0), &at(10), 2, &["a"]), once(&at(20), "a")]);
    let a2_b1 = doc(vec![events(&at(0), &at(0), 2, &["a"]), once(&at(1), "b")]);
    let a2_b2 = doc(vec![
        events(&at(0), &at(0), 2, &["a"]),
        events(&at(1), &at(1), 2, &["b"]),
    ]);

    let a3 = "[x-event:name = 'a'] REPEATS 3 TIMES";
    let a2 = "[x-event:name = 'a'] REPEATS 2 TIMES";
    let a1 = "[x-event:name = 'a'] REPEATS 1 TIMES";
    let a_or_b_2 = "([x-event:name = 'a'] OR [x-event:name = 'b']) REPEATS 2 TIMES";
    let a_then_b_2 = "([x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b']) REPEATS 2 TIMES";
    let a_and_b_2 = "([x-event:name = 'a'] AND [x-event:name = 'b']) REPEATS 2 TIMES";
    check_named(
        "REPEATS",
        &[
            ("three observations", a3, &aaa, true),
            ("two observations", a3, &aa, false),
            ("number_observed 3", a3, &a_times_3, true),
            ("number_observed 2", a3, &a_times_2, false),
            ("number_observed 2 plus one", a3, &a_times_2_and_one, true),
            ("REPEATS 1", a1, &aa, true),
            ("other objects do not count", a2, &ab, false),
            ("repeated OR mixes its operands", a_or_b_2, &ab, true),
            ("repeated sequence: a b a b", a_then_b_2, &abab, true),
            ("repeated sequence: a a b b", a_then_b_2, &aabb, true),
            ("repeated sequence: one b", a_then_b_2, &aab, false),
            (
                "repeated sequence: first b too early",
                a_then_b_2,
                &baab,
                false,
            ),
            ("repeated AND: one b", a_and_b_2, &a2_b1, false),
            ("repeated AND: two of each", a_and_b_2, &a2_b2, true),
        ],
    );
}

#[test]
fn within() {
    let pair = |a: String, b: String| doc(vec![once(&a, "a"), once(&b, "b")]);
    let ab_10 = "([x-event:name = 'a'] AND [x-event:name = 'b']) WITHIN 10 SECONDS";
    let ab_half = "([x-event:name = 'a'] AND [x-event:name = 'b']) WITHIN 0.5 SECONDS";
    let ab_1_25 = "([x-event:name = 'a'] AND [x-event:name = 'b']) WITHIN 1.25 SECONDS";
    let ab_1_001 = "([x-event:name = 'a'] AND [x-event:name = 'b']) WITHIN 1.001 SECONDS";
    let ab_5 = "([x-event:name = 'a'] AND [x-event:name = 'b']) WITHIN 5 SECONDS";
    let a_10 = "[x-event:name = 'a'] WITHIN 10 SECONDS";
    let last_only = "[x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b'] WITHIN 5 SECONDS";
    let whole = "([x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b']) WITHIN 5 SECONDS";

    let apart_9_999 = pair(at(0), at_ms(9_999));
    let apart_10 = pair(at(0), at(10));
    let apart_10_001 = pair(at(0), at_ms(10_001));
    let reversed = pair(at(9), at(0));
    let apart_0_499 = pair(at(0), at_ms(499));
    let apart_0_5 = pair(at(0), at_ms(500));
    let apart_1_249 = pair(at(0), at_ms(1_249));
    let apart_1_25 = pair(at(0), at_ms(1_250));
    let apart_1_000999999 = pair(BASE.into(), "2024-03-01T12:00:01.000999999Z".into());
    let apart_100 = pair(at(0), at(100));
    let one_near_pair = doc(vec![
        once(&at(0), "a"),
        once(&at(100), "b"),
        once(&at(103), "a"),
    ]);
    let long_a = doc(vec![events(&at(0), &at(10), 1, &["a"])]);
    let shorter_a = doc(vec![events(&at(0), &at_ms(9_999), 1, &["a"])]);

    let hash = concat!(
        "([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4'] FOLLOWEDBY ",
        r"[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\foo\\bar']) WITHIN 300 SECONDS"
    );
    let file_then_key = |key_secs: u64| {
        let file = json!({ "0": { "type": "file", "hashes": {
            "MD5": "79054025255fb1a26e4bc422aef54eb4" } } });
        let key = json!({ "0": { "type": "windows-registry-key",
            "key": "HKEY_LOCAL_MACHINE\\foo\\bar" } });
        doc(vec![
            observed(&at(0), &at(0), 1, file),
            observed(&at(key_secs), &at(key_secs), 1, key),
        ])
    };
    let key_after_299 = file_then_key(299);
    let key_after_300 = file_then_key(300);

    check_named(
        "WITHIN",
        &[
            ("9.999 s apart", ab_10, &apart_9_999, true),
            ("exactly 10 s apart", ab_10, &apart_10, false),
            ("10.001 s apart", ab_10, &apart_10_001, false),
            ("order does not matter", ab_10, &reversed, true),
            ("0.499 s within 0.5", ab_half, &apart_0_499, true),
            ("0.5 s within 0.5", ab_half, &apart_0_5, false),
            ("1.249 s within 1.25", ab_1_25, &apart_1_249, true),
            ("1.25 s within 1.25", ab_1_25, &apart_1_25, false),
            (
                "1.000999999 s within 1.001",
                ab_1_001,
                &apart_1_000999999,
                true,
            ),
            ("some pair is close enough", ab_5, &one_near_pair, true),
            ("an observation's own interval counts", a_10, &long_a, false),
            (
                "an interval just short of the window",
                a_10,
                &shorter_a,
                true,
            ),
            (
                "WITHIN binds to the last operand",
                last_only,
                &apart_100,
                true,
            ),
            ("WITHIN on the whole sequence", whole, &apart_100, false),
            ("spec example, 299 s", hash, &key_after_299, true),
            ("spec example, 300 s", hash, &key_after_300, false),
        ],
    );
}

#[test]
fn start_stop() {
    let window = concat!(
        "[x-event:name = 'a'] ",
        "START t'2024-03-01T12:00:00Z' STOP t'2024-03-01T13:00:00Z'"
    );
    let both_in_window = concat!(
        "([x-event:name = 'a'] AND [x-event:name = 'b']) ",
        "START t'2024-03-01T12:00:00Z' STOP t'2024-03-01T13:00:00Z'"
    );
    let a_during = |first: &str, last: &str| doc(vec![events(first, last, 1, &["a"])]);
    let at_start = a_during("2024-03-01T12:00:00Z", "2024-03-01T12:00:00Z");
    let before_stop = a_during(
        "2024-03-01T12:59:59.999999999Z",
        "2024-03-01T12:59:59.999999999Z",
    );
    let at_stop = a_during("2024-03-01T13:00:00Z", "2024-03-01T13:00:00Z");
    let before_start = a_during("2024-03-01T11:59:59.999Z", "2024-03-01T11:59:59.999Z");
    let ends_at_start = a_during("2024-03-01T11:00:00Z", "2024-03-01T12:00:00Z");
    let ends_before_start = a_during("2024-03-01T11:00:00Z", "2024-03-01T11:59:59.999Z");
    let starts_at_stop = a_during("2024-03-01T13:00:00Z", "2024-03-01T14:00:00Z");
    let covers_window = a_during("2024-03-01T11:00:00Z", "2024-03-01T14:00:00Z");
    let one_outside = doc(vec![
        once("2024-03-01T12:30:00Z", "a"),
        once("2024-03-01T13:30:00Z", "b"),
    ]);
    let both_inside = doc(vec![
        once("2024-03-01T12:30:00Z", "a"),
        once("2024-03-01T12:40:00Z", "b"),
    ]);
    check_named(
        "START/STOP",
        &[
            ("at start", window, &at_start, true),
            ("1 ns before stop", window, &before_stop, true),
            ("at stop (exclusive)", window, &at_stop, false),
            ("before start", window, &before_start, false),
            ("interval ending at start", window, &ends_at_start, true),
            (
                "interval ending before start",
                window,
                &ends_before_start,
                false,
            ),
            ("interval starting at stop", window, &starts_at_stop, false),
            ("interval covering the window", window, &covers_window, true),
            (
                "every observation must overlap",
                both_in_window,
                &one_outside,
                false,
            ),
            ("both inside", both_in_window, &both_inside, true),
        ],
    );
}

#[test]
fn stacked_qualifiers() {
    let stacked = concat!(
        "[x-event:name = 'a'] REPEATS 2 TIMES WITHIN 5 SECONDS ",
        "START t'2024-03-01T12:00:00Z' STOP t'2024-03-01T12:01:00Z'"
    );
    let repeats_then_within = "[x-event:name = 'a'] REPEATS 2 TIMES WITHIN 5 SECONDS";
    let within_then_repeats = "[x-event:name = 'a'] WITHIN 5 SECONDS REPEATS 2 TIMES";
    let beaconing = concat!(
        "[network-traffic:dst_ref.type = 'domain-name' AND ",
        "network-traffic:dst_ref.value = 'example.com'] REPEATS 5 TIMES WITHIN 1800 SECONDS"
    );

    let a_at = |times: &[String]| doc(times.iter().map(|t| once(t, "a")).collect());
    let close_inside = a_at(&[at(10), at(14)]);
    let too_far_apart = a_at(&[at(10), at(16)]);
    let first_before_start = a_at(&["2024-03-01T11:59:58Z".into(), at(1)]);
    let second_at_stop = a_at(&[at(56), at(60)]);
    let far_apart = a_at(&[at(0), at(100)]);

    let beacons = |times: &[u64]| -> Value {
        doc(times
            .iter()
            .map(|&t| {
                let objects = json!({
                    "0": { "type": "domain-name", "value": "example.com" },
                    "1": { "type": "network-traffic", "dst_ref": "0", "protocols": ["tcp"] },
                });
                observed(&at(t), &at(t), 1, objects)
            })
            .collect())
    };
    let five_in_1799 = beacons(&[0, 450, 900, 1350, 1799]);
    let five_in_1800 = beacons(&[0, 450, 900, 1350, 1800]);
    let four = beacons(&[0, 450, 900, 1350]);
    let six_spread = beacons(&[0, 450, 900, 1350, 1800, 2000]);
    // Thirty beacons a minute apart: any five consecutive ones match.
    let thirty = beacons(&(0..30).map(|i| i * 60).collect::<Vec<_>>());

    check_named(
        "stacked qualifiers",
        &[
            (
                "two within 5 s inside the window",
                stacked,
                &close_inside,
                true,
            ),
            ("two 6 s apart", stacked, &too_far_apart, false),
            ("one before the window", stacked, &first_before_start, false),
            ("one at stop", stacked, &second_at_stop, false),
            (
                "REPEATS then WITHIN",
                repeats_then_within,
                &far_apart,
                false,
            ),
            ("WITHIN then REPEATS", within_then_repeats, &far_apart, true),
            ("beaconing: five in 1799 s", beaconing, &five_in_1799, true),
            ("beaconing: five in 1800 s", beaconing, &five_in_1800, false),
            ("beaconing: four", beaconing, &four, false),
            (
                "beaconing: a later window of five",
                beaconing,
                &six_spread,
                true,
            ),
            ("beaconing: thirty beacons", beaconing, &thirty, true),
        ],
    );
}

#[test]
fn empty_observation_set() {
    let nothing = doc(vec![]);
    let objects_without_observation = json!({
        "type": "bundle",
        "id": "bundle--0d1c2b3a-4f5e-4d6c-8b7a-9a8b7c6d5e4f",
        "objects": [{ "type": "x-event", "id": "x-event--1", "name": "a" }],
    });
    let patterns = [
        "[x-event:name = 'a']",
        "[x-event:name != 'a']",
        "[NOT EXISTS x-event:name]",
        "[x-event:name = 'a'] OR [x-event:name = 'b']",
        "[x-event:name = 'a'] REPEATS 1 TIMES",
        "([x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'b']) WITHIN 5 SECONDS",
    ];
    let cases: Vec<(&str, &str, &Value, bool)> = patterns
        .iter()
        .flat_map(|p| {
            [
                ("no observations", *p, &nothing, false),
                (
                    "objects but no observed-data",
                    *p,
                    &objects_without_observation,
                    false,
                ),
            ]
        })
        .collect();
    check_named("empty observation set", &cases);
}

// ---- the binding a stream reports ----------------------------------------

/// A stream asks, for each new hit, for a binding that uses it; the
/// interpreter then builds only the smallest one. Six hits one second
/// apart, the newest required: `REPEATS 3` gives one binding per possible
/// start ({0,1,5}, {1,2,5}, {2,3,5}, {3,4,5}), and the first of them is
/// the one reported. Under `WITHIN 3 SECONDS` only the starts 3 and 4
/// apart from the newest fit, and starting at 4 leaves too few hits. The
/// joins of `FOLLOWEDBY` and `AND` report their smallest pair or triple
/// with the newest hit in it.
#[test]
fn a_new_hit_gets_the_smallest_binding_that_uses_it() {
    use sightline::eval::{Binding, bindings_including};
    let document = doc((0..6).map(|s| once(&at(s), "a")).collect());
    let observations: Vec<Observation> = observations_from_document(&document)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("fixtures are valid observed-data");
    let binding = |indexes: &[usize]| Binding {
        uses: indexes.iter().map(|&i| (i, 1)).collect(),
    };
    let cases = [
        (
            "[x-event:name = 'a'] REPEATS 3 TIMES",
            Some(binding(&[0, 1, 5])),
        ),
        (
            "[x-event:name = 'a'] REPEATS 3 TIMES WITHIN 3 SECONDS",
            Some(binding(&[3, 4, 5])),
        ),
        ("[x-event:name = 'a'] REPEATS 7 TIMES", None),
        (
            "[x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'a']",
            Some(binding(&[0, 5])),
        ),
        (
            "([x-event:name = 'a'] FOLLOWEDBY [x-event:name = 'a']) WITHIN 2 SECONDS",
            Some(binding(&[4, 5])),
        ),
        (
            "[x-event:name = 'a'] AND [x-event:name = 'a'] AND [x-event:name = 'a']",
            Some(binding(&[0, 1, 5])),
        ),
        (
            "[x-event:name = 'b'] OR [x-event:name = 'a'] REPEATS 2 TIMES",
            Some(binding(&[0, 5])),
        ),
    ];
    for (text, expected) in cases {
        let pattern = parse(text).expect("case patterns parse");
        let found = bindings_including(&pattern.root, observations.as_slice(), Some(5))
            .expect("small enumeration");
        let first = found.into_iter().find(|b| b.observations().any(|i| i == 5));
        assert_eq!(first, expected, "{text}");
    }
}
