//! Deterministic identifiers for STIX 2.1 cyber-observables (SCOs).
//!
//! An SCO id is `<type>--<uuid>` where the UUID is a version 5 UUID: a SHA-1
//! name hash under a namespace fixed by STIX 2.1, over the RFC 8785 (JCS)
//! serialization of the object's "ID contributing properties". Two producers
//! that see the same observable therefore agree on its id, which lets
//! Sightline deduplicate observables and give STIX 2.0 objects (keyed by local
//! references) the same ids a STIX 2.1 producer would have written.
//!
//! The module has three pieces: the per-type table of contributing properties
//! ([`id_contributing_properties`]), a JCS serializer ([`canonical_json`]),
//! and the id derivation itself ([`sco_id`]).
//!
//! # When no contributing property is present
//!
//! STIX asks for a random UUIDv4 when an SCO carries none of its contributing
//! properties (and always for `process`, which has none). Sightline needs the
//! same input to give the same id on every run and every node, so it instead
//! hashes the JCS of the whole object without its `id` as a UUIDv5 would,
//! under its own namespace, [`SIGHTLINE_FALLBACK_NAMESPACE`], and writes the
//! 122 hashed bits in the UUIDv4 layout ([`fallback_uuid`]). The result has
//! the version STIX requires for these objects (validators check it), looks
//! random to everyone else, and is stable among Sightline instances.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use uuid::Uuid;

/// Namespace that STIX 2.1 reserves for deterministic SCO identifiers
/// (`00abedb4-aa42-466c-9c01-fed23315a9b7`).
pub const SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00ab_edb4_aa42_466c_9c01_fed2_3315_a9b7);

/// Sightline's own namespace (`6b1f4c2e-93a0-4d57-8e1c-2f6a9d3b5e71`), used
/// when an SCO has none of its contributing properties; see the module docs.
pub const SIGHTLINE_FALLBACK_NAMESPACE: Uuid =
    Uuid::from_u128(0x6b1f_4c2e_93a0_4d57_8e1c_2f6a_9d3b_5e71);

/// Hash algorithms in the order STIX prefers them when one hash stands for
/// the whole `hashes` dictionary.
const HASH_PREFERENCE: [&str; 4] = ["MD5", "SHA-1", "SHA-256", "SHA-512"];

/// Returns the ID contributing properties of a STIX 2.1 SCO type, in the
/// order the specification lists them.
///
/// `process` is an SCO but has no contributing property, so it yields an
/// empty slice. Types that are not SCOs defined by STIX 2.1 (domain objects,
/// custom `x-` observables, typos) yield `None`.
///
/// ```
/// use sightline::stix::sco::id_contributing_properties;
///
/// assert_eq!(id_contributing_properties("ipv4-addr"), Some(&["value"][..]));
/// assert_eq!(id_contributing_properties("process"), Some(&[][..]));
/// assert_eq!(id_contributing_properties("indicator"), None);
/// ```
pub fn id_contributing_properties(object_type: &str) -> Option<&'static [&'static str]> {
    let properties: &'static [&'static str] = match object_type {
        "artifact" => &["hashes", "payload_bin"],
        "autonomous-system" => &["number"],
        "directory" => &["path"],
        "domain-name" => &["value"],
        "email-addr" => &["value"],
        "email-message" => &["from_ref", "subject", "body"],
        "file" => &["hashes", "name", "extensions", "parent_directory_ref"],
        "ipv4-addr" => &["value"],
        "ipv6-addr" => &["value"],
        "mac-addr" => &["value"],
        "mutex" => &["name"],
        "network-traffic" => &[
            "start",
            "end",
            "src_ref",
            "dst_ref",
            "src_port",
            "dst_port",
            "protocols",
            "extensions",
        ],
        "process" => &[],
        "software" => &["name", "cpe", "swid", "vendor", "version"],
        "url" => &["value"],
        "user-account" => &["account_type", "user_id", "account_login"],
        "windows-registry-key" => &["key", "values"],
        "x509-certificate" => &["hashes", "serial_number"],
        _ => return None,
    };
    Some(properties)
}

/// Computes the deterministic id (`"<type>--<uuid>"`) of a STIX 2.1 SCO.
///
/// The UUID is a version 5 UUID under [`SCO_NAMESPACE`] whose name is the
/// [`canonical_json`] of an object holding only the contributing properties
/// present on `object`:
///
/// - a `hashes` dictionary is cut down to one entry: the first of `MD5`,
///   `SHA-1`, `SHA-256`, `SHA-512` present (names matched exactly), or, when
///   none of those is present, the entry whose name sorts first by UTF-16
///   code units, so the choice never depends on input order;
/// - reference properties (`*_ref`) are taken as they are, so they must
///   already hold the referenced objects' ids;
/// - `extensions` and `values` are taken whole;
/// - a property set to JSON `null` counts as absent.
///
/// When none of the contributing properties is present, the id is
/// [`fallback_uuid`] over the whole object minus `id` (see the module docs
/// for why this replaces the random UUID STIX asks for).
///
/// Returns `None` when `object` is not a JSON object, has no string `type`,
/// or its type is not an SCO known to [`id_contributing_properties`]. An `id`
/// already on the object is ignored, never trusted.
///
/// ```
/// use serde_json::json;
/// use sightline::stix::sco::sco_id;
///
/// let ip = json!({"type": "ipv4-addr", "value": "198.51.100.3"});
/// assert_eq!(
///     sco_id(&ip).as_deref(),
///     Some("ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"),
/// );
/// ```
pub fn sco_id(object: &Value) -> Option<String> {
    let fields = object.as_object()?;
    let object_type = fields.get("type")?.as_str()?;
    let properties = id_contributing_properties(object_type)?;

    let contributing = contributing_subset(fields, properties);
    let uuid = if contributing.is_empty() {
        let mut name = String::new();
        write_object(&mut name, fields, Some("id"));
        fallback_uuid(&name)
    } else {
        let name = canonical_json(&Value::Object(contributing));
        Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes())
    };
    Some(format!("{object_type}--{uuid}"))
}

/// A deterministic UUID in version-4 layout: the UUIDv5 hash of `name`
/// under [`SIGHTLINE_FALLBACK_NAMESPACE`], with the version and variant
/// bits of a v4.
pub fn fallback_uuid(name: &str) -> Uuid {
    let hashed = Uuid::new_v5(&SIGHTLINE_FALLBACK_NAMESPACE, name.as_bytes());
    uuid::Builder::from_random_bytes(*hashed.as_bytes()).into_uuid()
}

/// Copies the contributing properties present on an SCO, with `hashes`
/// reduced to the single entry that stands for it.
fn contributing_subset(fields: &Map<String, Value>, properties: &[&str]) -> Map<String, Value> {
    let mut subset = Map::new();
    for &property in properties {
        let value = match fields.get(property) {
            None | Some(Value::Null) => continue,
            Some(value) => value,
        };
        if property == "hashes" {
            // A malformed (non-object) `hashes` is kept as it is: it still
            // tells objects apart, and rejecting data is not this module's job.
            if let Value::Object(hashes) = value {
                if let Some((algorithm, digest)) = choose_hash(hashes) {
                    let mut one = Map::new();
                    one.insert(algorithm.clone(), digest.clone());
                    subset.insert(property.to_owned(), Value::Object(one));
                }
                continue;
            }
        }
        subset.insert(property.to_owned(), value.clone());
    }
    subset
}

/// Picks the one hash that represents a `hashes` dictionary in an id.
fn choose_hash(hashes: &Map<String, Value>) -> Option<(&String, &Value)> {
    HASH_PREFERENCE
        .iter()
        .find_map(|algorithm| hashes.get_key_value(*algorithm))
        .or_else(|| hashes.iter().min_by(|a, b| utf16_cmp(a.0, b.0)))
}

/// Serializes a JSON value in the RFC 8785 canonical form (JCS).
///
/// - No whitespace between tokens.
/// - Object members sorted by their names compared as UTF-16 code units
///   (which differs from byte order for characters outside the BMP).
/// - Strings escape only `"`, `\` and control characters below U+0020; the
///   latter use `\b`, `\t`, `\n`, `\f`, `\r` where JSON has a short form and
///   `\u00xx` with lower-case hex otherwise. Everything else, including
///   non-ASCII text, is written as UTF-8.
/// - Integers held as `i64`/`u64` are written as they are. Floating-point
///   numbers follow ECMAScript's Number-to-String: shortest round-trip
///   digits, plain notation for magnitudes in `[1e-6, 1e21)`, exponent
///   notation (`1e+21`, `1e-7`) outside it, and `-0` written as `0`.
///
/// ```
/// use serde_json::json;
/// use sightline::stix::sco::canonical_json;
///
/// let value = json!({"b": [1, 2.5, 1e21], "a": "tab\there"});
/// assert_eq!(canonical_json(&value), r#"{"a":"tab\there","b":[1,2.5,1e+21]}"#);
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => write_object(out, members, None),
    }
}

/// Writes an object with its members in JCS order, leaving out the member
/// named `skip` (the fallback id hashes an object without its `id`).
fn write_object(out: &mut String, members: &Map<String, Value>, skip: Option<&str>) {
    let mut sorted: Vec<(&String, &Value)> = members
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != skip)
        .collect();
    sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));

    out.push('{');
    for (index, (name, value)) in sorted.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

/// Orders strings by their UTF-16 code units, as JCS requires.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            // Writing into a String cannot fail.
            c if c < '\u{20}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, number: &Number) {
    // Writing into a String cannot fail, hence the ignored results.
    if let Some(integer) = number.as_i64() {
        let _ = write!(out, "{integer}");
    } else if let Some(integer) = number.as_u64() {
        let _ = write!(out, "{integer}");
    } else if let Some(float) = number.as_f64() {
        write_f64(out, float);
    } else {
        // Only reachable with serde_json's arbitrary-precision numbers that
        // fit no machine type; their own text is the best we have.
        out.push_str(&number.to_string());
    }
}

/// Writes a double the way ECMAScript's Number-to-String does.
fn write_f64(out: &mut String, value: f64) {
    if value == 0.0 {
        // Covers -0, which ECMAScript prints without its sign.
        out.push('0');
        return;
    }
    if !value.is_finite() {
        // serde_json never holds NaN or infinities; JSON.stringify would
        // write them as null, so do the same rather than emit invalid JSON.
        out.push_str("null");
        return;
    }
    if value < 0.0 {
        out.push('-');
    }
    let Some((digits, exponent)) = shortest_digits(value.abs()) else {
        // Rust's `{:e}` output always parses; this keeps the function total.
        let _ = write!(out, "{}", value.abs());
        return;
    };

    // With the value written as 0.DIGITS × 10^point, ECMAScript picks the
    // notation from where the decimal point falls.
    let count = digits.len() as i64;
    let point = exponent + 1;
    if count <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - count) as usize));
    } else if 0 < point && point <= 21 {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{}", exponent.unsigned_abs());
    }
}

/// Splits a positive finite double into the decimal digits ECMAScript prints
/// for it and the power of ten of the first digit (`1234.5` gives
/// `("12345", 3)`).
fn shortest_digits(value: f64) -> Option<(String, i64)> {
    let (digits, exponent) = split_scientific(&format!("{value:e}"))?;

    // Rust's `{:e}` finds the fewest digits that read back as `value`, but
    // settles a tie between two such digit strings upwards. ECMAScript wants
    // the one nearest the exact binary value, and the even one on a tie.
    // Rounding the exact value to the same number of digits (which Rust does
    // half-to-even) yields that string, provided it still reads back.
    let precision = digits.len() - 1;
    let nearest = format!("{value:.precision$e}");
    if nearest.parse::<f64>() == Ok(value) {
        return split_scientific(&nearest);
    }
    Some((digits, exponent))
}

/// Parses Rust's `d.ddde±x` output into its digits, without trailing
/// zeros, and its exponent.
fn split_scientific(scientific: &str) -> Option<(String, i64)> {
    let (mantissa, exponent) = scientific.split_once('e')?;
    let exponent = exponent.parse::<i64>().ok()?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.to_owned(), exponent))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Checks that the id printed in a specification example is the one
    /// computed from the example's own properties. Some examples below leave
    /// out non-contributing properties of the original for brevity.
    fn assert_spec_id(example: Value) {
        let printed = example["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            sco_id(&example).as_deref(),
            Some(printed.as_str()),
            "{example}"
        );
    }

    fn float(value: f64) -> String {
        let mut out = String::new();
        write_f64(&mut out, value);
        out
    }

    // --- contributing-property table -----------------------------------

    #[test]
    fn table_covers_every_sco_type() {
        let types = [
            "artifact",
            "autonomous-system",
            "directory",
            "domain-name",
            "email-addr",
            "email-message",
            "file",
            "ipv4-addr",
            "ipv6-addr",
            "mac-addr",
            "mutex",
            "network-traffic",
            "process",
            "software",
            "url",
            "user-account",
            "windows-registry-key",
            "x509-certificate",
        ];
        for object_type in types {
            assert!(
                id_contributing_properties(object_type).is_some(),
                "{object_type}"
            );
        }
        assert_eq!(id_contributing_properties("process"), Some(&[][..]));
        assert_eq!(id_contributing_properties("indicator"), None);
        assert_eq!(id_contributing_properties("x-custom-observable"), None);
    }

    // --- ids printed in the STIX 2.1 examples ----------------------------

    #[test]
    fn spec_example_ipv4_addr() {
        assert_spec_id(json!({
            "type": "ipv4-addr",
            "spec_version": "2.1",
            "id": "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4",
            "value": "198.51.100.3"
        }));
        assert_spec_id(json!({
            "type": "ipv4-addr",
            "spec_version": "2.1",
            "id": "ipv4-addr--1ea47840-aa39-5aa8-b4a2-cd203eb6662a",
            "value": "198.51.100.0/24"
        }));
    }

    #[test]
    fn spec_example_ipv6_addr() {
        assert_spec_id(json!({
            "type": "ipv6-addr",
            "spec_version": "2.1",
            "id": "ipv6-addr--85a85a8c-ee99-5722-946d-3c3a3270fc6f",
            "value": "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
        }));
    }

    #[test]
    fn spec_example_domain_name() {
        assert_spec_id(json!({
            "type": "domain-name",
            "spec_version": "2.1",
            "id": "domain-name--bedb4899-d24b-5401-bc86-8f6b4cc18ec7",
            "value": "example.com",
            "resolves_to_refs": ["ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"]
        }));
    }

    #[test]
    fn spec_example_url_email_mac_mutex() {
        assert_spec_id(json!({
            "type": "url",
            "spec_version": "2.1",
            "id": "url--47c3cf9a-5027-5bf0-997a-017c7edc7c55",
            "value": "https://example.com/research/index.html"
        }));
        assert_spec_id(json!({
            "type": "email-addr",
            "spec_version": "2.1",
            "id": "email-addr--7165e2a9-671f-585d-b1e1-ca59c671d934",
            "value": "john@example.com",
            "display_name": "John Doe"
        }));
        assert_spec_id(json!({
            "type": "mac-addr",
            "spec_version": "2.1",
            "id": "mac-addr--757b1725-9903-54f5-a855-1240691d7659",
            "value": "d2:fb:49:24:37:18"
        }));
        assert_spec_id(json!({
            "type": "mutex",
            "spec_version": "2.1",
            "id": "mutex--f93fe911-e545-5239-b9b0-597840d0c871",
            "name": "__CLEANSWEEP__"
        }));
    }

    #[test]
    fn spec_example_autonomous_system_and_directory() {
        assert_spec_id(json!({
            "type": "autonomous-system",
            "spec_version": "2.1",
            "id": "autonomous-system--3aa27478-50b5-5ab8-9da9-cdc12b657fff",
            "number": 15139,
            "name": "Slime Industries",
            "rir": "ARIN"
        }));
        assert_spec_id(json!({
            "type": "directory",
            "spec_version": "2.1",
            "id": "directory--0a58d0c1-59e6-5afd-8252-dcd3f13e5622",
            "path": "C:\\Windows\\System32"
        }));
    }

    #[test]
    fn spec_example_file_with_hashes() {
        assert_spec_id(json!({
            "type": "file",
            "spec_version": "2.1",
            "id": "file--949eb97a-da1e-5292-8959-03c4249dc9f3",
            "hashes": {
                "SHA-256": "fe90a7e910cb3a4739bed9180e807e93fa70c90f25a8915476f5e4bfbac681db"
            },
            "size": 25536,
            "name": "foo.dll"
        }));
        // Non-ASCII name: the name hash is over UTF-8 text.
        assert_spec_id(json!({
            "type": "file",
            "spec_version": "2.1",
            "id": "file--7d1e3a18-89e7-5bc5-be36-9879f5b7f5c8",
            "hashes": {
                "SHA-256": "841a8921140aba50671ebb0770fecc4ee308c4952cfeff8de154ab14eeef4649"
            },
            "name": "quêry.dll",
            "name_enc": "windows-1252"
        }));
    }

    #[test]
    fn spec_example_files_with_extensions() {
        assert_spec_id(json!({
            "type": "file",
            "spec_version": "2.1",
            "id": "file--ba04c974-3cef-5f42-adc7-084d467874e2",
            "hashes": {
                "SHA-256": "35a01331e9ad96f751278b891b6ea09699806faedfa237d40513d92ad1b7100f"
            },
            "extensions": {
                "ntfs-ext": {
                    "alternate_data_streams": [{"name": "second.stream", "size": 25536}]
                }
            }
        }));
        assert_spec_id(json!({
            "type": "file",
            "spec_version": "2.1",
            "id": "file--965aa96f-d90a-506a-8317-d38d44b235f9",
            "name": "example.pdf",
            "extensions": {
                "pdf-ext": {
                    "version": "1.7",
                    "document_info_dict": {
                        "Title": "Sample document",
                        "Author": "Adobe Systems Incorporated",
                        "Creator": "Adobe FrameMaker 5.5.3 for Power Macintosh",
                        "Producer": "Acrobat Distiller 3.01 for Power Macintosh",
                        "CreationDate": "20070412090123-02"
                    },
                    "pdfid0": "DFCE52BD827ECF765649852119D",
                    "pdfid1": "57A1E0F9ED2AE523E313C"
                }
            }
        }));
    }

    #[test]
    fn spec_example_artifact() {
        assert_spec_id(json!({
            "type": "artifact",
            "spec_version": "2.1",
            "id": "artifact--6be1fbcb-fd03-5ec3-b05f-4329746e9d2b",
            "mime_type": "application/zip",
            "payload_bin": "ZX7HIBWPQA99NSUhEUgAAADI== ...",
            "encryption_algorithm": "mime-type-indicated",
            "decryption_key": "My voice is my passport"
        }));
        assert_spec_id(json!({
            "type": "artifact",
            "spec_version": "2.1",
            "id": "artifact--0682152c-646a-513b-bc07-e516494ed178",
            "mime_type": "image/jpeg",
            "payload_bin": "VBORw0KGgoAAAANSUhEUgAAADI== ...",
            "hashes": {
                "SHA-256": "effb46bba03f6c8aea5c653f9cf984f170dcdd3bbbe2ff6843c3e5da0e698766"
            }
        }));
    }

    #[test]
    fn spec_example_software_and_user_account() {
        assert_spec_id(json!({
            "type": "software",
            "spec_version": "2.1",
            "id": "software--710b0b41-d4d0-5d6c-a400-fc9254554ffc",
            "name": "Word",
            "cpe": "cpe:2.3:a:microsoft:word:2000:*:*:*:*:*:*:*",
            "version": "2002",
            "vendor": "Microsoft"
        }));
        assert_spec_id(json!({
            "type": "user-account",
            "spec_version": "2.1",
            "id": "user-account--f223e803-846b-591a-aefa-545e938f8a56",
            "user_id": "thegrugq_ebooks",
            "account_login": "thegrugq_ebooks",
            "account_type": "twitter",
            "display_name": "the grugq"
        }));
        assert_spec_id(json!({
            "type": "user-account",
            "spec_version": "2.1",
            "id": "user-account--f94d689e-707d-58c3-b803-c720bb6ed096",
            "user_id": "1001",
            "account_login": "jdoe",
            "account_type": "unix",
            "display_name": "John Doe",
            "is_service_account": false,
            "is_privileged": false,
            "can_escalate_privs": true,
            "extensions": {
                "unix-account-ext": {
                    "gid": 1001,
                    "groups": ["wheel"],
                    "home_dir": "/home/jdoe",
                    "shell": "/bin/bash"
                }
            }
        }));
    }

    #[test]
    fn spec_example_windows_registry_key() {
        assert_spec_id(json!({
            "type": "windows-registry-key",
            "spec_version": "2.1",
            "id": "windows-registry-key--1884b770-b679-522a-a9c7-45fadaaec7bb",
            "key": "HKEY_LOCAL_MACHINE\\System\\Foo\\Bar"
        }));
        assert_spec_id(json!({
            "type": "windows-registry-key",
            "spec_version": "2.1",
            "id": "windows-registry-key--f6a11ddf-fa2b-54c8-97ab-e7f28413095a",
            "key": "hkey_local_machine\\system\\bar\\foo",
            "values": [
                {"name": "Foo", "data": "qwerty", "data_type": "REG_SZ"},
                {"name": "Bar", "data": "42", "data_type": "REG_DWORD"}
            ]
        }));
    }

    #[test]
    fn spec_example_x509_certificate() {
        assert_spec_id(json!({
            "type": "x509-certificate",
            "spec_version": "2.1",
            "id": "x509-certificate--bf86f034-2390-54d7-8426-d08433db3fbe",
            "validity_not_before": "2016-03-12T12:00:00Z",
            "validity_not_after": "2016-08-21T12:00:00Z",
            "serial_number": "36:f7:d4:32:f4:ab:70:ea:d3:ce:98:6e:ea:99:93:49:32:0a:b7:06"
        }));
        assert_spec_id(json!({
            "type": "x509-certificate",
            "spec_version": "2.1",
            "id": "x509-certificate--5adb038a-160d-5d1c-826e-bde4926a0d2d",
            "serial_number": "02:08:87:83:f2:13:58:1f:79:52:1e:66:90:0a:02:24:c9:6b:c7:dc",
            "x509_v3_extensions": {
                "basic_constraints": "critical,CA:TRUE, pathlen:0",
                "subject_key_identifier": "hash"
            }
        }));
    }

    // --- rules applied to the contributing properties --------------------

    #[test]
    fn hashes_prefer_md5_then_sha1_then_sha256_then_sha512() {
        let with_all = json!({
            "type": "file",
            "hashes": {"SHA-512": "d", "SHA-256": "c", "SHA-1": "b", "MD5": "a"}
        });
        let md5_only = json!({"type": "file", "hashes": {"MD5": "a"}});
        assert_eq!(sco_id(&with_all), sco_id(&md5_only));

        let without_md5 = json!({"type": "file", "hashes": {"SHA-256": "c", "SHA-1": "b"}});
        let sha1_only = json!({"type": "file", "hashes": {"SHA-1": "b"}});
        assert_eq!(sco_id(&without_md5), sco_id(&sha1_only));
    }

    #[test]
    fn hashes_outside_the_preference_list_pick_the_first_name() {
        let two = json!({"type": "file", "hashes": {"TLSH": "t", "SSDEEP": "s"}});
        let first = json!({"type": "file", "hashes": {"SSDEEP": "s"}});
        assert_eq!(sco_id(&two), sco_id(&first));
    }

    #[test]
    fn references_contribute_the_referenced_id_as_written() {
        let file = json!({
            "type": "file",
            "hashes": {
                "SHA-256": "ceafbfd424be2ca4a5f0402cae090dda2fb0526cf521b60b60077c0f622b285a"
            },
            "parent_directory_ref": "directory--0a58d0c1-59e6-5afd-8252-dcd3f13e5622",
            "name": "qwerty.dll"
        });
        let name = concat!(
            r#"{"hashes":{"SHA-256":"#,
            r#""ceafbfd424be2ca4a5f0402cae090dda2fb0526cf521b60b60077c0f622b285a"},"#,
            r#""name":"qwerty.dll","#,
            r#""parent_directory_ref":"directory--0a58d0c1-59e6-5afd-8252-dcd3f13e5622"}"#
        );
        let expected = Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes());
        assert_eq!(sco_id(&file), Some(format!("file--{expected}")));

        let traffic = json!({
            "type": "network-traffic",
            "src_ref": "ipv4-addr--9cf4a8ec-7640-5f40-a006-79942896168b",
            "dst_ref": "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4",
            "src_port": 49152,
            "protocols": ["ipv4", "tcp"],
            "src_byte_count": 147600
        });
        let name = concat!(
            r#"{"dst_ref":"ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4","#,
            r#""protocols":["ipv4","tcp"],"src_port":49152,"#,
            r#""src_ref":"ipv4-addr--9cf4a8ec-7640-5f40-a006-79942896168b"}"#
        );
        let expected = Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes());
        assert_eq!(
            sco_id(&traffic),
            Some(format!("network-traffic--{expected}"))
        );
    }

    #[test]
    fn non_contributing_properties_and_existing_id_are_ignored() {
        let bare = json!({"type": "domain-name", "value": "example.com"});
        let decorated = json!({
            "type": "domain-name",
            "id": "domain-name--00000000-0000-4000-8000-000000000000",
            "spec_version": "2.1",
            "defanged": false,
            "value": "example.com",
            "resolves_to_refs": ["ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"]
        });
        assert_eq!(sco_id(&bare), sco_id(&decorated));
    }

    #[test]
    fn null_counts_as_absent() {
        let with_null = json!({"type": "file", "name": "a.exe", "hashes": null});
        let without = json!({"type": "file", "name": "a.exe"});
        assert_eq!(sco_id(&with_null), sco_id(&without));
    }

    #[test]
    fn non_sco_input_has_no_id() {
        assert_eq!(sco_id(&json!("ipv4-addr")), None);
        assert_eq!(sco_id(&json!({"value": "198.51.100.3"})), None);
        assert_eq!(sco_id(&json!({"type": 4, "value": "198.51.100.3"})), None);
        assert_eq!(sco_id(&json!({"type": "indicator", "name": "x"})), None);
    }

    // --- fallback when no contributing property is present ---------------

    #[test]
    fn fallback_is_deterministic_in_v4_layout() {
        let process = json!({
            "type": "process",
            "spec_version": "2.1",
            "id": "process--8fac80fe-a220-4ba9-8ffe-4f43ce8edff8",
            "pid": 1221,
            "created_time": "2016-01-20T14:11:25.55Z",
            "command_line": "./gedit-bin --new-window",
            "image_ref": "file--e04f22d1-be2c-59de-add8-10f61d15fe20"
        });
        let first = sco_id(&process).unwrap_or_default();
        assert_eq!(Some(first.clone()), sco_id(&process));
        assert!(first.starts_with("process--"), "{first}");

        let uuid = Uuid::parse_str(&first["process--".len()..]).unwrap_or_default();
        assert_eq!(uuid.get_version_num(), 4);
        let mut without_id = process.clone();
        if let Some(fields) = without_id.as_object_mut() {
            fields.remove("id");
        }
        let name = canonical_json(&without_id);
        assert_eq!(uuid, fallback_uuid(&name));

        // The incoming id does not feed the fallback, other properties do.
        let mut other_id = process.clone();
        other_id["id"] = json!("process--11111111-1111-4111-8111-111111111111");
        assert_eq!(sco_id(&other_id).as_deref(), Some(first.as_str()));
        let mut other_pid = process;
        other_pid["pid"] = json!(1222);
        assert_ne!(sco_id(&other_pid).as_deref(), Some(first.as_str()));
    }

    #[test]
    fn fallback_applies_when_optional_contributors_are_all_absent() {
        let account = json!({"type": "user-account", "display_name": "John Doe"});
        let id = sco_id(&account).unwrap_or_default();
        let name = canonical_json(&account);
        assert_eq!(id, format!("user-account--{}", fallback_uuid(&name)));
    }

    // --- RFC 8785 serialization -------------------------------------------

    #[test]
    fn jcs_sorts_member_names_by_utf16_code_units() {
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB33
        // in UTF-16 although it comes after it in code-point (UTF-8) order.
        let value = json!({
            "\u{20ac}": "euro",
            "\r": "cr",
            "\u{fb33}": "dalet",
            "1": "one",
            "\u{1f600}": "smiley",
            "\u{80}": "control",
            "\u{f6}": "o-umlaut"
        });
        assert_eq!(
            canonical_json(&value),
            "{\"\\r\":\"cr\",\"1\":\"one\",\"\u{80}\":\"control\",\"\u{f6}\":\"o-umlaut\",\
             \"\u{20ac}\":\"euro\",\"\u{1f600}\":\"smiley\",\"\u{fb33}\":\"dalet\"}"
        );
    }

    #[test]
    fn jcs_sorts_nested_objects_and_keeps_array_order() {
        let value = json!({"b": [{"z": 1, "y": 2}, 3], "a": {"d": null, "c": true}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":true,"d":null},"b":[{"y":2,"z":1},3]}"#
        );
    }

    #[test]
    fn jcs_escapes_only_quote_backslash_and_controls() {
        let value = json!("\"\\/\u{08}\u{0C}\n\r\t\u{00}\u{1f}\u{7f}é€\u{1f600}\u{2028}");
        assert_eq!(
            canonical_json(&value),
            "\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}é€\u{1f600}\u{2028}\""
        );
    }

    #[test]
    fn jcs_numbers_follow_ecmascript() {
        let parsed: Value = serde_json::from_str("[1e21, 1e-7, 0.1, -0.0, 100, 100.0, 4.50, 2e-3]")
            .unwrap_or_default();
        assert_eq!(
            canonical_json(&parsed),
            "[1e+21,1e-7,0.1,0,100,100,4.5,0.002]"
        );

        assert_eq!(float(-0.0), "0");
        assert_eq!(float(1e20), "100000000000000000000");
        assert_eq!(float(1e-6), "0.000001");
        assert_eq!(float(-1.5e-10), "-1.5e-10");
        assert_eq!(float(123.456), "123.456");
        assert_eq!(float(1e30), "1e+30");
    }

    #[test]
    fn jcs_integers_print_as_they_are() {
        let value = json!([0, -1, i64::MIN, u64::MAX]);
        assert_eq!(
            canonical_json(&value),
            "[0,-1,-9223372036854775808,18446744073709551615]"
        );
    }

    #[test]
    fn jcs_rfc8785_appendix_b_doubles() {
        let cases: [(u64, &str); 24] = [
            (0x0000_0000_0000_0000, "0"),
            (0x8000_0000_0000_0000, "0"),
            (0x0000_0000_0000_0001, "5e-324"),
            (0x8000_0000_0000_0001, "-5e-324"),
            (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
            (0xffef_ffff_ffff_ffff, "-1.7976931348623157e+308"),
            (0x4340_0000_0000_0000, "9007199254740992"),
            (0xc340_0000_0000_0000, "-9007199254740992"),
            (0x4430_0000_0000_0000, "295147905179352830000"),
            (0x44b5_2d02_c7e1_4af5, "9.999999999999997e+22"),
            (0x44b5_2d02_c7e1_4af6, "1e+23"),
            (0x44b5_2d02_c7e1_4af7, "1.0000000000000001e+23"),
            (0x444b_1ae4_d6e2_ef4e, "999999999999999700000"),
            (0x444b_1ae4_d6e2_ef4f, "999999999999999900000"),
            (0x444b_1ae4_d6e2_ef50, "1e+21"),
            (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
            (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
            (0x41b3_de43_5555_5553, "333333333.3333332"),
            (0x41b3_de43_5555_5554, "333333333.33333325"),
            (0x41b3_de43_5555_5555, "333333333.3333333"),
            (0x41b3_de43_5555_5556, "333333333.3333334"),
            (0x41b3_de43_5555_5557, "333333333.33333343"),
            (0xbecb_f647_612f_3696, "-0.0000033333333333333333"),
            (0x4314_3ff3_c1cb_0959, "1424953923781206.2"),
        ];
        for (bits, expected) in cases {
            assert_eq!(float(f64::from_bits(bits)), expected, "{bits:016x}");
        }
    }
}
