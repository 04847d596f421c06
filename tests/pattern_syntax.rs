//! Table-driven tests of the pattern language front end: which patterns
//! parse, where and why the others fail, the limits that protect the parser,
//! and the canonical printed form.
//!
//! Patterns are written as raw strings, exactly as they appear in an
//! indicator: a backslash inside a STIX string literal is written `\\`.

use sightline::pattern::{ErrorKind, Limits, Pattern, PatternError, parse, parse_with_limits};

/// Every example pattern of STIX 2.1 §9.8, in the spec's spelling.
const SPEC_EXAMPLES: &[&str] = &[
    r"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
    concat!(
        r"[email-message:from_ref.value MATCHES '.+\\@example\\.com$' AND ",
        r"email-message:body_multipart[*].body_raw_ref.name MATCHES '^Final Report.+\\.exe$']",
    ),
    concat!(
        r"[file:hashes.'SHA-256' = ",
        r"'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f' AND file:mime_type = ",
        r"'application/x-pdf']",
    ),
    concat!(
        r"[file:hashes.'SHA-256' = ",
        r"'bf07a7fbb825fc0aae7bf4a1177b2b31fcf8a3feeaf7092761e18c859ee52a9c' OR file:hashes.MD5 = ",
        r"'cead3f77f6cda6ec00f57d76c9a6879f'] AND [file:hashes.'SHA-256' = ",
        r"'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
    ),
    concat!(
        r"([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4'] FOLLOWEDBY ",
        r"[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\foo\\bar']) WITHIN 300 SECONDS",
    ),
    concat!(
        r"[user-account:account_type = 'unix' AND user-account:user_id = '1007' AND ",
        r"user-account:account_login = 'Peter'] AND [user-account:account_type = 'unix' AND ",
        r"user-account:user_id = '1008' AND user-account:account_login = 'Paul'] AND ",
        r"[user-account:account_type = 'unix' AND user-account:user_id = '1009' AND ",
        r"user-account:account_login = 'Mary']",
    ),
    concat!(
        r"[artifact:mime_type = 'application/vnd.tcpdump.pcap' AND artifact:payload_bin MATCHES ",
        r"'\\xd4\\xc3\\xb2\\xa1\\x02\\x00\\x04\\x00']",
    ),
    r"[file:name = 'foo.dll' AND file:parent_directory_ref.path = 'C:\\Windows\\System32']",
    r"[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]",
    r"[file:mime_type = 'image/bmp' AND file:magic_number_hex = h'ffd8']",
    concat!(
        r"[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = ",
        r"'203.0.113.33/32']",
    ),
    concat!(
        r"[network-traffic:dst_ref.type = 'domain-name' AND network-traffic:dst_ref.value = ",
        r"'example.com'] REPEATS 5 TIMES WITHIN 1800 SECONDS",
    ),
    concat!(
        r"[domain-name:value = 'www.5z8.info' AND domain-name:resolves_to_refs[*].value = ",
        r"'198.51.100.1/32']",
    ),
    r"[url:value = 'http://example.com/foo' OR url:value = 'http://example.com/bar']",
    concat!(
        r"[x509-certificate:issuer = 'CN=WEBMAIL' AND x509-certificate:serial_number = ",
        r"'4c:0b:1d:19:74:86:a7:66:b4:1a:bf:40:27:21:76:28']",
    ),
    concat!(
        r"[windows-registry-key:key = 'HKEY_CURRENT_USER\\Software\\CryptoLocker\\Files' OR ",
        r"windows-registry-key:key = ",
        r"'HKEY_CURRENT_USER\\Software\\Microsoft\\CurrentVersion\\Run\\CryptoLocker_0388']",
    ),
    r"[(file:name = 'pdf.exe' OR file:size = 371712) AND file:created = t'2014-01-13T07:03:17Z']",
    concat!(
        r"[email-message:sender_ref.value = 'jdoe@example.com' AND email-message:subject = ",
        r"'Conference Info']",
    ),
    r"[x-usb-device:usbdrive.serial_number = '575833314133343231313937']",
    concat!(
        r"[process:command_line MATCHES '^.+>-add GlobalSign.cer -c -s -r localMachine Root$'] ",
        r"FOLLOWEDBY [process:command_line MATCHES'^.+>-add GlobalSign.cer -c -s -r ",
        r"localMachineTrustedPublisher$'] WITHIN 300 SECONDS",
    ),
    r"[network-traffic:dst_ref.value ISSUBSET '2001:0db8:dead:beef:0000:0000:0000:0000/64']",
    concat!(
        r"([file:name = 'foo.dll'] AND [windows-registry-key:key = ",
        r"'HKEY_LOCAL_MACHINE\\foo\\bar']) OR [process:name = 'fooproc' OR process:name = ",
        r"'procfoo']",
    ),
];

/// Every comparison operator, with and without `NOT`.
const OPERATORS: &[&str] = &[
    r"[file:name = 'a']",
    r"[file:name == 'a']",
    r"[file:name != 'a']",
    r"[file:name <> 'a']",
    r"[file:size < 10]",
    r"[file:size <= 10]",
    r"[file:size > 10]",
    r"[file:size >= 10]",
    r"[file:name < 'm']",
    r"[file:created >= t'2020-01-01T00:00:00Z']",
    r"[file:magic_number_hex < h'ff']",
    r"[file:name IN ('a', 'b', 'c')]",
    r"[x-mixed:v IN (1, 2.5, 'three', true, h'04', b'BQ==', t'2020-01-01T00:00:00Z')]",
    r"[file:name IN ()]",
    r"[file:name LIKE 'setup%.exe']",
    r"[file:name MATCHES '^setup[0-9]+\\.exe$']",
    r"[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
    r"[ipv4-addr:value ISSUPERSET '198.51.100.7']",
    r"[ipv6-addr:value ISSUBSET '2001:db8::/32']",
    r"[EXISTS file:name]",
    r"[NOT EXISTS file:name]",
    r"[x-flag:on = true]",
    r"[x-flag:on != false]",
    r"[file:name NOT = 'a']",
    r"[file:name NOT == 'a']",
    r"[file:name NOT != 'a']",
    r"[file:name NOT <> 'a']",
    r"[file:size NOT < 10]",
    r"[file:size NOT <= 10]",
    r"[file:size NOT > 10]",
    r"[file:size NOT >= 10]",
    r"[file:name NOT IN ('a', 'b')]",
    r"[file:name NOT IN ()]",
    r"[file:name NOT LIKE 'a%']",
    r"[file:name NOT MATCHES 'a+']",
    r"[ipv4-addr:value NOT ISSUBSET '10.0.0.0/8']",
    r"[ipv4-addr:value NOT ISSUPERSET '10.0.0.1']",
    r"[file:name = 'a' AND file:size = 1 OR file:name = 'b']",
    r"[file:name = 'a' AND (file:size = 1 OR NOT EXISTS file:size)]",
    r"[file:name = 'a' OR process:name = 'b']",
    r"[file:name = 'a'] AND [process:pid = 1] OR [file:name = 'b'] FOLLOWEDBY [file:name = 'c']",
];

/// Qualifiers alone, stacked, and on compound expressions.
const QUALIFIERS: &[&str] = &[
    r"[a:b = 1] WITHIN 5 SECONDS",
    r"[a:b = 1] WITHIN 0.5 SECONDS",
    r"[a:b = 1] WITHIN 1.25 SECONDS",
    r"[a:b = 1] WITHIN +5 SECONDS",
    r"[a:b = 1] REPEATS 2 TIMES",
    r"[a:b = 1] START t'2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z'",
    concat!(
        r"[a:b = 1] REPEATS 2 TIMES WITHIN 5 SECONDS START t'2020-01-01T00:00:00Z' STOP ",
        r"t'2020-01-01T00:00:00.001Z'",
    ),
    r"[a:b = 1] START t'2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z' WITHIN 5 SECONDS",
    r"([a:b = 1] FOLLOWEDBY [c:d = 2]) REPEATS 2 TIMES",
    r"([a:b = 1] AND [c:d = 2]) WITHIN 10.5 SECONDS",
    r"[a:b = 1] FOLLOWEDBY [c:d = 2] WITHIN 5 SECONDS",
    r"([a:b = 1] REPEATS 2 TIMES) REPEATS 3 TIMES",
    r"([a:b = 1] WITHIN 5 SECONDS) WITHIN 6 SECONDS",
];

/// Object paths: quoted steps, list indexes, custom types.
const PATHS: &[&str] = &[
    r"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
    r"[file:hashes.'MD5' = '79054025255fb1a26e4bc422aef54eb4']",
    r"[file:extensions.'windows-pebinary-ext'.sections[0].entropy > 7.0]",
    r"[x-list:items[0] = 'a']",
    r"[x-list:items[*] = 'a']",
    r"[x-list:items[-1] = 'a']",
    r"[x-list:items[+2] = 'a']",
    r"[x-list:rows[*].cells[3].text = 'a']",
    r"[x-dict:'AND' = 1]",
    r"[x-dict:d.'true' = 1]",
    r"[x-dict:d.'a b'.'c.d' = 1]",
    r"[x-dict:d.'it\'s' = 1]",
    r"[x-dict:d.'' = 1]",
    r"[x-dict:d.and = 1]",
    r"[x-dict:h = 1 AND x-dict:b = 2 AND x-dict:t = 3]",
    r"[x-acme-widget:serial_number = 'W-1']",
    r"[email-message:to_refs[*].value = 'a@example.com']",
];

/// Literal forms, comments, white space and Unicode.
const LITERALS: &[&str] = &[
    r"[a:b = '']",
    r"[a:b = 'it\'s a \\ backslash']",
    r"[a:b = 'ünïcødé ☃ 𝄞']",
    r"[a:b = 'tab	inside']",
    r"[a:b = 0]",
    r"[a:b = -12]",
    r"[a:b = +12]",
    r"[a:b = -9223372036854775808]",
    r"[a:b = 9223372036854775807]",
    r"[a:b = 0.5]",
    r"[a:b = .5]",
    r"[a:b = -0.25]",
    r"[a:b = 00.5]",
    r"[a:b = 1.50]",
    r"[a:b = true]",
    r"[a:b = false]",
    r"[a:b = h'']",
    r"[a:b = h'00fF']",
    r"[a:b = b'QUJD']",
    r"[a:b = b'QQ==']",
    r"[a:b = b'QUI=']",
    r"[a:b = t'2020-01-01T00:00:00Z']",
    r"[a:b = t'2020-01-01T00:00:00.123456789Z']",
    r"[a:b = t'2020-02-29T23:59:59.5Z']",
    r"[a:b = t'2016-12-31T23:59:60Z']",
    r"/* leading */ [a:b = 1] // trailing",
    "[a:b = 1] // line comment\nOR [a:b = 2]",
    r"[a:b /* inside */ = 1]",
    "\u{3000}[a:b\u{a0}=\t1]\r\n",
    r"[  a:b   =   1  ]",
];

/// All valid tables, named for messages.
const VALID_GROUPS: &[(&str, &[&str])] = &[
    ("spec example", SPEC_EXAMPLES),
    ("operator", OPERATORS),
    ("qualifier", QUALIFIERS),
    ("path", PATHS),
    ("literal", LITERALS),
];

/// Parses every pattern of `cases`, collecting the failures so that one
/// run reports all of them.
fn assert_all_parse(group: &str, cases: &[&str]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|p| parse(p).err().map(|e| format!("  {p}\n    -> {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {group} patterns were refused:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_spec_examples() {
    assert_all_parse("spec example", SPEC_EXAMPLES);
}

#[test]
fn valid_operators() {
    assert_all_parse("operator", OPERATORS);
}

#[test]
fn valid_qualifiers() {
    assert_all_parse("qualifier", QUALIFIERS);
}

#[test]
fn valid_paths() {
    assert_all_parse("path", PATHS);
}

#[test]
fn valid_literals() {
    assert_all_parse("literal", LITERALS);
}

/// (pattern, expected 1-based character column, part of the message).
const INVALID: &[(&str, usize, &str)] = &[
    // Structure.
    (r"", 1, "found the end of the pattern"),
    (r"   ", 4, "found the end of the pattern"),
    (r"[]", 2, "expected an object path"),
    (r"[file:name = ]", 14, "expected a literal value"),
    (r"[file:name 'a']", 12, "expected a comparison operator"),
    (r"[file: = 'a']", 8, "expected a property name"),
    (r"[:name = 'a']", 2, "expected an object path"),
    (r"[file:name = 'a'", 17, "expected ']'"),
    (r"([file:name = 'a']", 19, "expected ')'"),
    (
        r"[file:name = 'a'])",
        18,
        "expected an observation operator",
    ),
    (r"[file:name = 'abc]", 14, "string literal is not closed"),
    (r"[file:name = 'abc\']", 14, "string literal is not closed"),
    (r"[file:name = 'a' AND]", 21, "expected an object path"),
    (r"[file:name = 'a'] AND", 22, "found the end of the pattern"),
    (
        r"[file:name = 'a'] FOLLOWEDBY",
        29,
        "found the end of the pattern",
    ),
    (
        r"[file:name = 'a'] xyz",
        19,
        "expected an observation operator",
    ),
    (
        r"[file:name = 'a'] [file:name = 'b']",
        19,
        "expected an observation operator",
    ),
    (r"[file:name = 'a'] §", 19, "unexpected character '§'"),
    (
        r"[file:name = 'a' ^ file:size = 1]",
        18,
        "unexpected character '^'",
    ),
    (
        r"[file:name = 'a'] /* open comment",
        19,
        "'*/' closing the comment",
    ),
    (r"[NOT file:name = 'a']", 2, "expected an object path"),
    (
        r"[file:name NOT EXISTS]",
        16,
        "a comparison operator after NOT",
    ),
    (r"[file:name IN ('a',)]", 20, "expected a literal value"),
    (r"[file:name IN ('a' 'b')]", 20, "',' or ')' in the IN set"),
    (r"[file:name IN 'a']", 15, "'(' starting the IN set"),
    (r"[file:name LIKE 5]", 17, "a string literal after LIKE"),
    (
        r"[file:name MATCHES h'00']",
        20,
        "a string literal after MATCHES",
    ),
    (r"[x:items[1.5] = 1]", 10, "a list index"),
    (r"[x:items[] = 1]", 10, "a list index"),
    // Keywords and identifiers.
    (
        r"[file:name = 'a' and file:size = 1]",
        18,
        "keywords are written in upper case",
    ),
    (
        r"[file:name = 'a'] or [file:name = 'b']",
        19,
        "keywords are written in upper case",
    ),
    (r"[x:y = TRUE]", 8, "expected a literal value"),
    (r"[x:y = True]", 8, "expected a literal value"),
    (r"[file:x-y = 1]", 7, "contains '-'"),
    (
        r"[file:extensions.windows-pebinary-ext.x = 1]",
        18,
        "contains '-'",
    ),
    // String escapes.
    (r"[file:name = 'a\nb']", 16, r"invalid escape \n"),
    (r"[file:name = 'C:\Windows']", 17, r"invalid escape \W"),
    // Numbers.
    (r"[file:size = 007]", 14, "leading zeros are not allowed"),
    (r"[file:size = -01]", 14, "leading zeros are not allowed"),
    (
        r"[file:size = 1.]",
        14,
        "a digit must follow the decimal point",
    ),
    (r"[file:size = 1e5]", 14, "cannot be followed by a letter"),
    (
        r"[file:size = 99999999999999999999]",
        14,
        "does not fit in a 64-bit integer",
    ),
    (r"[file:size = - 1]", 14, "unexpected character '-'"),
    // Hex and binary literals.
    (
        r"[file:magic_number_hex = h'abc']",
        26,
        "even number of hex digits",
    ),
    (
        r"[file:magic_number_hex = h'zz']",
        26,
        "only the digits 0-9, a-f and A-F",
    ),
    (r"[artifact:payload_bin = b'']", 25, "must not be empty"),
    (
        r"[artifact:payload_bin = b'QQ']",
        25,
        "invalid binary literal",
    ),
    (
        r"[artifact:payload_bin = b'QQ=']",
        25,
        "invalid binary literal",
    ),
    (
        r"[artifact:payload_bin = b'Q@==']",
        25,
        "invalid binary literal",
    ),
    (
        r"[artifact:payload_bin = b'QUJD=']",
        25,
        "invalid binary literal",
    ),
    // Timestamps.
    (
        r"[file:created = t'2021-02-29T00:00:00Z']",
        17,
        "day 29 is out of range",
    ),
    (
        r"[file:created = t'2020-02-30T00:00:00Z']",
        17,
        "day 30 is out of range",
    ),
    (
        r"[file:created = t'2020-13-01T00:00:00Z']",
        17,
        "month 13 is out of range",
    ),
    (
        r"[file:created = t'2020-01-01T24:00:00Z']",
        17,
        "hour 24 is out of range",
    ),
    (
        r"[file:created = t'2020-01-01T00:00:00+01:00']",
        17,
        "time zone must be 'Z'",
    ),
    (
        r"[file:created = t'2020-01-01T00:00:00+00:00']",
        17,
        "time zone must be 'Z'",
    ),
    (
        r"[file:created = t'2020-01-01T00:00:00']",
        17,
        "invalid timestamp literal",
    ),
    (
        r"[file:created = t'2020-01-01']",
        17,
        "invalid timestamp literal",
    ),
    (
        r"[file:created = t'2020-01-01T00:00:00.Z']",
        17,
        "invalid timestamp literal",
    ),
    // The grammar's TimestampLiteral has an upper-case 'T' and 'Z' only.
    (
        r"[file:created = t'2020-01-01 00:00:00Z']",
        17,
        "invalid timestamp literal",
    ),
    (
        r"[file:created = t'2020-01-01t00:00:00z']",
        17,
        "invalid timestamp literal",
    ),
    // Qualifiers.
    (
        r"[a:b = 1] REPEATS 0 TIMES",
        19,
        "REPEATS needs a count greater than 0",
    ),
    (
        r"[a:b = 1] REPEATS -2 TIMES",
        19,
        "REPEATS needs a count greater than 0",
    ),
    (
        r"[a:b = 1] REPEATS 1.5 TIMES",
        19,
        "a whole number after REPEATS",
    ),
    (r"[a:b = 1] REPEATS 2", 20, "expected TIMES"),
    (r"[a:b = 1] WITHIN 0 SECONDS", 18, "greater than 0"),
    (r"[a:b = 1] WITHIN 0.0 SECONDS", 18, "greater than 0"),
    (r"[a:b = 1] WITHIN -1 SECONDS", 18, "greater than 0"),
    (
        r"[a:b = 1] WITHIN five SECONDS",
        18,
        "a number of seconds after WITHIN",
    ),
    (r"[a:b = 1] WITHIN 5", 19, "expected SECONDS"),
    (
        r"[a:b = 1] WITHIN 5 SECONDS WITHIN 6 SECONDS",
        28,
        "WITHIN is applied twice",
    ),
    (
        r"[a:b = 1] REPEATS 2 TIMES REPEATS 3 TIMES",
        27,
        "REPEATS is applied twice",
    ),
    (
        r"[a:b = 1] WITHIN 5 SECONDS REPEATS 2 TIMES WITHIN 6 SECONDS",
        44,
        "WITHIN is applied twice",
    ),
    (
        concat!(
            r"[a:b = 1] START t'2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z' START ",
            r"t'2020-01-01T00:00:00Z' STOP t'2020-01-03T00:00:00Z'",
        ),
        70,
        "START/STOP is applied twice",
    ),
    (
        r"[a:b = 1] START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:00Z'",
        11,
        "is not before STOP",
    ),
    (
        r"[a:b = 1] START t'2020-01-02T00:00:00Z' STOP t'2020-01-01T00:00:00Z'",
        11,
        "is not before STOP",
    ),
    (
        r"[a:b = 1] START '2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z'",
        17,
        "after START",
    ),
    // Checks beyond the grammar.
    (
        r"[file:name MATCHES '(?=x)']",
        2,
        "regular expression cannot be used",
    ),
    (
        r"[file:name MATCHES '(a)\\1']",
        2,
        "regular expression cannot be used",
    ),
    (
        r"[file:name MATCHES '(']",
        2,
        "regular expression cannot be used",
    ),
    (
        r"[ipv4-addr:value ISSUBSET '10.0.0.0/33']",
        2,
        "is not an IPv4 or IPv6 address",
    ),
    (
        r"[ipv4-addr:value ISSUPERSET 'example.com']",
        2,
        "is not an IPv4 or IPv6 address",
    ),
    (
        r"[network-traffic:dst_ref.value ISSUBSET '']",
        2,
        "is not an IPv4 or IPv6 address",
    ),
    (
        concat!(
            r"[file:hashes.'SHA-256' = ",
            r"'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019']",
        ),
        2,
        "is not a SHA-256 digest: expected 64 hex digits",
    ),
    (
        r"[file:hashes.MD5 = '79054025255fb1a26e4bc422aef54ebz']",
        2,
        "is not a MD5 digest: expected 32 hex digits",
    ),
    (
        r"[file:hashes.MD5 IN ('79054025255fb1a26e4bc422aef54eb4', 'abc')]",
        2,
        "is not a MD5 digest",
    ),
    (
        r"[ipv4-addr:value = 'not-an-ip']",
        2,
        "is not an IPv4 address or CIDR block",
    ),
    (
        r"[ipv4-addr:value = '2001:db8::1']",
        2,
        "is not an IPv4 address or CIDR block",
    ),
    (
        r"[ipv6-addr:value != '198.51.100.7']",
        2,
        "is not an IPv6 address or CIDR block",
    ),
    (
        r"[a:b = 1 AND c:d = 2]",
        1,
        "AND joins comparisons on different object types (a, c)",
    ),
    (
        r"[(a:b = 1 OR c:d = 2) AND e:f = 3]",
        1,
        "AND joins comparisons on different object types",
    ),
    (r"[x:y < true]", 8, "booleans have no order"),
    (r"[x:y >= false]", 9, "booleans have no order"),
    // Columns count characters, not bytes.
    (r"[x:y = 'üñí' AND ]", 18, "expected an object path"),
];

#[test]
fn invalid_patterns() {
    let mut failures = Vec::new();
    for &(pattern, column, needle) in INVALID {
        match parse(pattern) {
            Ok(tree) => failures.push(format!("  {pattern:?}\n    parsed as {tree}")),
            Err(e) => {
                let message = e.to_string();
                if e.column != column || !message.contains(needle) {
                    failures.push(format!(
                        "  {pattern:?}\n    got      {message}\n    expected column {column}: \
                         …{needle}…"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid patterns were handled wrongly:\n{}",
        failures.len(),
        INVALID.len(),
        failures.join("\n")
    );
}

fn small_limits() -> Limits {
    Limits {
        max_pattern_bytes: 64,
        max_depth: 4,
        max_set_len: 3,
        max_repeats: 5,
    }
}

fn nested_observation(parens: usize) -> String {
    format!("{}[a:b = 1]{}", "(".repeat(parens), ")".repeat(parens))
}

fn nested_comparison(parens: usize) -> String {
    format!("[{}a:b = 1{}]", "(".repeat(parens), ")".repeat(parens))
}

#[test]
fn limits() {
    let small = small_limits();
    let default = Limits::default();
    let at_default_length = format!("[a:b = 1]{}", " ".repeat((1 << 20) - 9));
    let over_default_length = format!("{at_default_length} ");

    // (name, pattern, limits, expected `what` of the Limit error or None
    // for a pattern that must parse).
    let cases: Vec<(&str, String, Limits, Option<&str>)> = vec![
        (
            "length at limit",
            format!("[a:b = '{}']", "x".repeat(54)),
            small,
            None,
        ),
        (
            "length over limit",
            format!("[a:b = '{}']", "x".repeat(55)),
            small,
            Some("pattern length in bytes"),
        ),
        (
            "length counts bytes",
            format!("[a:b = '{}']", "é".repeat(28)),
            small,
            Some("pattern length in bytes"),
        ),
        ("default length at limit", at_default_length, default, None),
        (
            "default length over limit",
            over_default_length,
            default,
            Some("pattern length in bytes"),
        ),
        ("depth at limit", nested_observation(3), small, None),
        (
            "depth over limit",
            nested_observation(4),
            small,
            Some("nesting depth"),
        ),
        (
            "comparison depth at limit",
            nested_comparison(3),
            small,
            None,
        ),
        (
            "comparison depth over limit",
            nested_comparison(4),
            small,
            Some("nesting depth"),
        ),
        ("default depth 64", nested_observation(63), default, None),
        (
            "default depth 65",
            nested_observation(64),
            default,
            Some("nesting depth"),
        ),
        (
            "65 nested parens",
            nested_observation(65),
            default,
            Some("nesting depth"),
        ),
        (
            "65 nested comparison parens",
            nested_comparison(65),
            default,
            Some("nesting depth"),
        ),
        (
            "100000 open parens",
            "(".repeat(100_000),
            default,
            Some("nesting depth"),
        ),
        (
            "100000 open comparison parens",
            format!("[{}", "(".repeat(100_000)),
            default,
            Some("nesting depth"),
        ),
        ("IN set at limit", "[a:b IN (1, 2, 3)]".into(), small, None),
        (
            "IN set over limit",
            "[a:b IN (1, 2, 3, 4)]".into(),
            small,
            Some("IN set size"),
        ),
        (
            "REPEATS at limit",
            "[a:b = 1] REPEATS 5 TIMES".into(),
            small,
            None,
        ),
        (
            "REPEATS over limit",
            "[a:b = 1] REPEATS 6 TIMES".into(),
            small,
            Some("REPEATS count"),
        ),
        (
            "default REPEATS at limit",
            "[a:b = 1] REPEATS 10000 TIMES".into(),
            default,
            None,
        ),
        (
            "default REPEATS over limit",
            "[a:b = 1] REPEATS 10001 TIMES".into(),
            default,
            Some("REPEATS count"),
        ),
        (
            "REPEATS far over limit",
            "[a:b = 1] REPEATS 9223372036854775807 TIMES".into(),
            default,
            Some("REPEATS count"),
        ),
    ];

    let mut failures = Vec::new();
    for (name, pattern, limits, expected) in &cases {
        let result = parse_with_limits(pattern, limits);
        match (expected, result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => failures.push(format!("  {name}: refused: {e}")),
            (Some(_), Ok(_)) => failures.push(format!("  {name}: parsed past the limit")),
            (Some(what), Err(e)) => match e.kind {
                ErrorKind::Limit { what: got, .. } if got == *what => {}
                _ => failures.push(format!("  {name}: expected a {what} limit, got {e}")),
            },
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} limit cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn limit_errors_name_value_and_limit() {
    let err = parse(&nested_observation(64)).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Limit {
            what: "nesting depth",
            actual: 65,
            limit: 64
        },
        "{err}"
    );
    assert_eq!(
        err.column, 65,
        "the error points at the bracket opening level 65"
    );
    assert!(
        err.to_string()
            .contains("nesting depth 65 exceeds the limit of 64"),
        "{err}"
    );
}

#[test]
fn truncated_patterns_fail_cleanly() {
    // Every proper prefix of every valid pattern either parses or returns
    // an error whose column lies within the text: never a panic.
    for (group, cases) in VALID_GROUPS {
        for pattern in *cases {
            for (end, _) in pattern.char_indices() {
                let prefix = &pattern[..end];
                if let Err(e) = parse(prefix) {
                    let chars = prefix.chars().count();
                    assert!(
                        (1..=chars + 1).contains(&e.column),
                        "{group} {pattern:?} cut to {prefix:?}: column {} outside the text",
                        e.column
                    );
                }
            }
        }
    }
}

/// (input, canonical form).
const CANONICAL: &[(&str, &str)] = &[
    (r"[file:name == 'a']", r"[file:name = 'a']"),
    (r"[file:name <> 'a']", r"[file:name != 'a']"),
    (r"[file:name NOT <> 'a']", r"[file:name NOT != 'a']"),
    (r"[  file:name   =   'a'  ]", r"[file:name = 'a']"),
    (
        r"[file:name='a'AND file:size>1]",
        r"[file:name = 'a' AND file:size > 1]",
    ),
    (r"(([a:b = 1]))", r"[a:b = 1]"),
    (r"[((a:b = 1))]", r"[a:b = 1]"),
    (
        r"([a:b = 1] OR [a:b = 2]) AND [a:b = 3]",
        r"([a:b = 1] OR [a:b = 2]) AND [a:b = 3]",
    ),
    (
        r"[a:b = 1] OR ([a:b = 2] AND [a:b = 3])",
        r"[a:b = 1] OR [a:b = 2] AND [a:b = 3]",
    ),
    (
        r"([a:b = 1] AND [a:b = 2]) FOLLOWEDBY [a:b = 3]",
        r"[a:b = 1] AND [a:b = 2] FOLLOWEDBY [a:b = 3]",
    ),
    (
        r"[a:b = 1] AND ([a:b = 2] FOLLOWEDBY [a:b = 3])",
        r"[a:b = 1] AND ([a:b = 2] FOLLOWEDBY [a:b = 3])",
    ),
    (
        r"([a:b = 1] OR [a:b = 2]) OR [a:b = 3]",
        r"([a:b = 1] OR [a:b = 2]) OR [a:b = 3]",
    ),
    (
        r"([a:b = 1]) WITHIN 5 SECONDS",
        r"[a:b = 1] WITHIN 5 SECONDS",
    ),
    (
        r"([a:b = 1] AND [a:b = 2]) WITHIN 5 SECONDS",
        r"([a:b = 1] AND [a:b = 2]) WITHIN 5 SECONDS",
    ),
    (
        r"[a:b = 1] FOLLOWEDBY ([a:b = 2] WITHIN 5 SECONDS)",
        r"[a:b = 1] FOLLOWEDBY [a:b = 2] WITHIN 5 SECONDS",
    ),
    (
        r"(([a:b = 1]) REPEATS 2 TIMES) WITHIN 5 SECONDS",
        r"[a:b = 1] REPEATS 2 TIMES WITHIN 5 SECONDS",
    ),
    (
        r"([a:b = 1] WITHIN 5 SECONDS) WITHIN 6 SECONDS",
        r"([a:b = 1] WITHIN 5 SECONDS) WITHIN 6 SECONDS",
    ),
    (
        r"[a:b = 1] WITHIN 1.50 SECONDS",
        r"[a:b = 1] WITHIN 1.5 SECONDS",
    ),
    (
        r"[a:b = 1] WITHIN +7 SECONDS",
        r"[a:b = 1] WITHIN 7 SECONDS",
    ),
    (
        r"[a:b = 1] START t'2020-01-01T00:00:00.000Z' STOP t'2020-01-01T00:00:00.120Z'",
        r"[a:b = 1] START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:00.12Z'",
    ),
    (
        r"[a:b = 1 AND (a:c = 2 OR a:d = 3)]",
        r"[a:b = 1 AND (a:c = 2 OR a:d = 3)]",
    ),
    (
        r"[(a:b = 1 AND a:c = 2) OR a:d = 3]",
        r"[a:b = 1 AND a:c = 2 OR a:d = 3]",
    ),
    (
        r"[(a:b = 1 AND a:c = 2) AND a:d = 3]",
        r"[(a:b = 1 AND a:c = 2) AND a:d = 3]",
    ),
    (
        concat!(
            r"[file:hashes.'SHA-256' = ",
            r"'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
        ),
        concat!(
            r"[file:hashes.'SHA-256' = ",
            r"'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
        ),
    ),
    (
        r"[file:hashes.'MD5' = '79054025255fb1a26e4bc422aef54eb4']",
        r"[file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4']",
    ),
    (
        r"[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]",
        r"[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]",
    ),
    (r"[x:'name' = 1]", r"[x:name = 1]"),
    (r"[x:'AND' = 1]", r"[x:'AND' = 1]"),
    (r"[x:y.'true' = 1]", r"[x:y.'true' = 1]"),
    (
        r"[x:y.'FOLLOWEDBY'.'LAST' = 1]",
        r"[x:y.'FOLLOWEDBY'.'LAST' = 1]",
    ),
    (r"[x:y.'a b'.'1st'.'' = 1]", r"[x:y.'a b'.'1st'.'' = 1]"),
    (r"[x:y.and = 1]", r"[x:y.and = 1]"),
    (r"[x:items[+2] = 1]", r"[x:items[2] = 1]"),
    (r"[x:y = 'it\'s \\ fine']", r"[x:y = 'it\'s \\ fine']"),
    (r"[x:y = h'FFD8']", r"[x:y = h'ffd8']"),
    (r"[x:y = h'']", r"[x:y = h'']"),
    (r"[x:y = b'QUJD']", r"[x:y = b'QUJD']"),
    (r"[x:y = 1.50]", r"[x:y = 1.5]"),
    (r"[x:y = .5]", r"[x:y = 0.5]"),
    (r"[x:y = 00.5]", r"[x:y = 0.5]"),
    (r"[x:y = 3.0]", r"[x:y = 3.0]"),
    (r"[x:y = +5]", r"[x:y = 5]"),
    (
        r"[x:y = t'2016-12-31T23:59:60Z']",
        r"[x:y = t'2017-01-01T00:00:00Z']",
    ),
    (
        r"[x:y = t'2020-01-01T00:00:00.1234567891Z']",
        r"[x:y = t'2020-01-01T00:00:00.123456789Z']",
    ),
    (r"[x:y IN ( 1 ,2,'a' )]", r"[x:y IN (1, 2, 'a')]"),
    (r"[x:y IN ()]", r"[x:y IN ()]"),
    (r"[x:y NOT IN ( )]", r"[x:y NOT IN ()]"),
    (r"[ NOT  EXISTS  x:y ]", r"[NOT EXISTS x:y]"),
    (r"[x:y MATCHES '^a\\.b$']", r"[x:y MATCHES '^a\\.b$']"),
    (
        "/* c */ [a:b = 1] // c\n OR [a:b = 2]",
        r"[a:b = 1] OR [a:b = 2]",
    ),
    (
        r"[process:command_line MATCHES'^x$'] FOLLOWEDBY [a:b = 1]",
        r"[process:command_line MATCHES '^x$'] FOLLOWEDBY [a:b = 1]",
    ),
];

#[test]
fn canonical_printing() {
    let mut failures = Vec::new();
    for &(input, expected) in CANONICAL {
        match parse(input) {
            Ok(tree) => {
                let printed = tree.to_string();
                if printed != expected {
                    failures.push(format!(
                        "  {input:?}\n    printed  {printed:?}\n    expected {expected:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("  {input:?}\n    refused: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} canonical forms were wrong:\n{}",
        failures.len(),
        CANONICAL.len(),
        failures.join("\n")
    );
}

/// Parses `text`, prints it, parses the print, and compares the trees; the
/// canonical form must also be a fixed point of printing.
fn round_trip(text: &str) -> Result<(), String> {
    let first: Pattern = parse(text).map_err(|e| format!("refused: {e}"))?;
    let printed = first.to_string();
    let second = parse(&printed)
        .map_err(|e: PatternError| format!("printed form {printed:?} is refused: {e}"))?;
    if second != first {
        return Err(format!(
            "printed form {printed:?} parses to a different tree"
        ));
    }
    let reprinted = second.to_string();
    if reprinted != printed {
        return Err(format!(
            "printing is not stable: {printed:?} then {reprinted:?}"
        ));
    }
    Ok(())
}

#[test]
fn printed_patterns_parse_back_to_the_same_tree() {
    let inputs = VALID_GROUPS
        .iter()
        .flat_map(|(group, cases)| cases.iter().map(move |p| (*group, *p)))
        .chain(CANONICAL.iter().map(|(p, _)| ("canonical", *p)));
    let mut total = 0;
    let mut failures = Vec::new();
    for (group, pattern) in inputs {
        total += 1;
        if let Err(why) = round_trip(pattern) {
            failures.push(format!("  {group} {pattern:?}\n    {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} patterns do not survive printing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
