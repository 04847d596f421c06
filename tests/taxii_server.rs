//! `sightline taxii serve` read by the OASIS reference client
//! (`taxii2-client` from PyPI, installed by `.ci/test`), checked with
//! `stix2-validator`, and probed with bad and hostile requests. A missing
//! Python tool is a failure, not a skip.

#[path = "taxii/common.rs"]
mod common;
mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::{
    newest_versions, output, read_pairs, require_python_modules, scratch, sightline, start_server,
    stderr,
};

const USER: &str = "partner";
const PASSWORD: &str = "open-sesame";
const TOKEN: &str = "token-for-everything";
const SIGHTINGS_TOKEN: &str = "token-for-sightings";
const ROOT: &str = "/taxii2/sightline";

/// Writes `sightline match` output for the example files to `dir`.
fn match_output(dir: &Path) -> PathBuf {
    let path = dir.join("sightings.jsonl");
    let run = output(
        sightline()
            .args(["match", "--indicators", "examples/indicators.json"])
            .args([
                "--events",
                "examples/events/observed-data.jsonl",
                "--output",
            ])
            .arg(&path),
    );
    assert!(
        run.status.success(),
        "sightline match failed:\n{}",
        stderr(&run)
    );
    path
}

/// The latest version of each object of a JSON lines file, by id.
fn latest_versions(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("match output");
    let objects: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    newest_versions(&objects)
}

/// A raw HTTP/1.1 exchange: status, lower-cased headers and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with `headers` over a fresh connection.
fn request(base: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut text =
        format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    // The server may close early on a request it refuses.
    let _ = stream.write_all(text.as_bytes());
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(base: &str, target: &str, token: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    request(
        base,
        "GET",
        target,
        &[
            ("Accept", "application/taxii+json;version=2.1"),
            ("Authorization", &bearer),
        ],
    )
}

fn assert_taxii_error(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/taxii+json;version=2.1"),
        "{what}"
    );
    assert!(
        reply.json()["title"].is_string(),
        "{what}: TAXII error body"
    );
}

#[test]
fn the_oasis_client_reads_every_collection_and_page() {
    require_python_modules(&["taxii2client", "stix2validator"]);
    let dir = scratch("serve-interop");
    let sightings = match_output(&dir);
    let db = dir.join("taxii.db");
    let from = sightings.display().to_string();
    let (_server, base) = start_server(
        &db,
        &[
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--from",
            &from,
            "--indicators",
            "examples/indicators.json",
        ],
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/taxii/read_all.py");
    let run = Command::new("python3")
        .arg(&script)
        .args([base.as_str(), USER, PASSWORD, "4"])
        .arg(&dir)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "taxii2-client failed:\n{}",
        stderr(&run)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).expect("summary JSON");
    let collections = summary["api_roots"][0]["collections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by_alias: BTreeMap<String, Value> = collections
        .into_iter()
        .map(|c| (c["alias"].as_str().unwrap_or_default().to_string(), c))
        .collect();
    assert_eq!(
        by_alias.keys().cloned().collect::<Vec<_>>(),
        ["indicators", "sightings"]
    );

    // Every object of the match output, in its latest version, exactly
    // once, over several pages.
    let expected = latest_versions(&sightings);
    let sightings_read = &by_alias["sightings"];
    let read = read_pairs(sightings_read);
    let unique: BTreeSet<_> = read.iter().cloned().collect();
    assert_eq!(unique.len(), read.len(), "no object is served twice");
    let read_map: BTreeMap<String, String> = read.into_iter().collect();
    assert_eq!(read_map, expected);
    assert!(
        sightings_read["pages"].as_u64().unwrap_or(0) > 2,
        "{sightings_read}"
    );
    assert_eq!(
        sightings_read["manifest"].as_u64(),
        Some(expected.len() as u64)
    );
    let indicators = by_alias["indicators"]["objects"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(indicators, 8, "the example indicators");

    for alias in ["sightings", "indicators"] {
        let file = by_alias[alias]["file"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let check = Command::new("stix2_validator")
            .args(["--version", "2.1"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("stix2_validator cannot run ({e})"));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            check.status.success(),
            "validator rejected {alias}:\n{report}"
        );
        assert!(
            !report.contains("[X]"),
            "validator errors in {alias}:\n{report}"
        );
    }
}

#[test]
fn bad_and_hostile_requests_get_the_right_status() {
    let dir = scratch("serve-hostile");
    let sightings = match_output(&dir);
    let db = dir.join("taxii.db");
    let from = sightings.display().to_string();
    let scoped = format!("sightings={SIGHTINGS_TOKEN}");
    let (_server, base) = start_server(
        &db,
        &[
            "--token",
            TOKEN,
            "--token-for",
            &scoped,
            "--from",
            &from,
            "--indicators",
            "examples/indicators.json",
        ],
    );
    let objects = format!("{ROOT}/collections/sightings/objects/");

    // Authentication.
    let anonymous = request(
        &base,
        "GET",
        "/taxii2/",
        &[("Accept", "application/taxii+json")],
    );
    assert_taxii_error(&anonymous, 401, "no credentials");
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    assert_taxii_error(&get(&base, "/taxii2/", "wrong-token"), 401, "wrong token");
    let basic = request(
        &base,
        "GET",
        "/taxii2/",
        &[("Authorization", "Basic Zm9vOmJhcg==")],
    );
    assert_taxii_error(&basic, 401, "basic when none is configured");
    let discovery = get(&base, "/taxii2/", TOKEN);
    assert_eq!(discovery.status, 200);
    assert_eq!(discovery.json()["api_roots"][0], format!("{ROOT}/"));

    // Per-collection permission.
    let indicators = format!("{ROOT}/collections/indicators/objects/");
    assert_taxii_error(
        &get(&base, &indicators, SIGHTINGS_TOKEN),
        403,
        "scoped token",
    );
    assert_eq!(get(&base, &objects, SIGHTINGS_TOKEN).status, 200);
    let listed = get(&base, &format!("{ROOT}/collections/"), SIGHTINGS_TOKEN).json();
    let readable: Vec<bool> = listed["collections"]
        .as_array()
        .map(|c| c.iter().map(|c| c["can_read"] == true).collect())
        .unwrap_or_default();
    assert_eq!(readable, [true, false]);

    // Content negotiation and methods.
    let html = request(
        &base,
        "GET",
        "/taxii2/",
        &[
            ("Accept", "text/html"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
    );
    assert_taxii_error(&html, 406, "text/html");
    let post = request(
        &base,
        "POST",
        &objects,
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Length", "0"),
        ],
    );
    assert_taxii_error(&post, 405, "POST objects");

    // Filters.
    let huge = "9".repeat(5000);
    for (query, status) in [
        ("limit=0", 400),
        ("limit=-1", 400),
        ("limit=ten", 400),
        ("limit=5&limit=6", 400),
        ("added_after=yesterday", 400),
        ("match[version]=sometime", 400),
        ("match[version]=all,last", 400),
        ("next=not-a-token", 400),
        ("match[type]=", 400),
        (&format!("limit={huge}") as &str, 200),
        (
            "limit=3&match[type]=sighting&match[version]=all&match[spec_version]=2.1",
            200,
        ),
        ("added_after=2100-01-01T00:00:00Z", 200),
        ("whatever=1&match[color]=blue", 200),
    ] {
        let reply = get(&base, &format!("{objects}?{query}"), TOKEN);
        if status == 200 {
            assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        } else {
            assert_taxii_error(&reply, status, query);
        }
    }
    let clamped = get(&base, &format!("{objects}?limit={huge}"), TOKEN).json();
    assert!(clamped["objects"].as_array().is_some_and(|o| !o.is_empty()));
    let future = get(
        &base,
        &format!("{objects}?added_after=2100-01-01T00:00:00Z"),
        TOKEN,
    );
    assert_eq!(
        future.body, r#"{"more":false}"#,
        "an empty envelope has no objects list"
    );

    // Path tricks and unknown resources.
    for path in [
        "/taxii2/../taxii2/",
        "/taxii2/sightline/../../etc/passwd",
        "/taxii2/sightline/collections/..%2F..%2Fetc/objects/",
        "/taxii2/sightline/collections/nope/objects/",
        "/taxii2/other-root/collections/",
        "/taxii2/sightline/collections/sightings/objects/%00/",
        "/taxii2/sightline/collections/sightings/objects/sighting--00000000-0000-4000-8000-000000000000/",
        "/taxii2/sightline/status/1/",
        "/taxii2/sightline/collections/sightings/objects",
        "/",
    ] {
        assert_taxii_error(&get(&base, path, TOKEN), 404, path);
    }

    // A request line far larger than any server should read.
    let enormous = format!("{objects}?limit={}", "1".repeat(2 << 20));
    let reply = get(&base, &enormous, TOKEN);
    assert!(reply.status == 0 || reply.status >= 400, "{}", reply.status);

    // Object, versions and manifest of an aggregated sighting.
    let all = get(
        &base,
        &format!("{objects}?match[type]=sighting&match[version]=all"),
        TOKEN,
    );
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for object in all.json()["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        *versions
            .entry(object["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let (id, count) = versions
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, n)| (id.clone(), *n))
        .unwrap_or_default();
    assert!(
        count > 1,
        "the example output aggregates a sighting: {versions:?}"
    );
    let listed = get(&base, &format!("{objects}{id}/versions/"), TOKEN);
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json()["versions"].as_array().map(Vec::len),
        Some(count)
    );
    assert!(listed.header("x-taxii-date-added-first").is_some());
    let one = get(&base, &format!("{objects}{id}/"), TOKEN);
    assert_eq!(one.json()["objects"].as_array().map(Vec::len), Some(1));
    assert!(one.header("x-taxii-date-added-last").is_some());
    let first = get(
        &base,
        &format!("{objects}{id}/?match[version]=first"),
        TOKEN,
    )
    .json();
    let last = one.json();
    assert!(first["objects"][0]["modified"].as_str() < last["objects"][0]["modified"].as_str());
    let manifest = get(
        &base,
        &format!("{ROOT}/collections/sightings/manifest/?limit=2"),
        TOKEN,
    );
    let manifest = manifest.json();
    assert_eq!(manifest["more"], true);
    assert!(manifest["objects"][0]["date_added"].is_string());

    // Still answering after all of that.
    assert_eq!(get(&base, "/taxii2/", TOKEN).status, 200);
}

/// `n` distinct cyber-observables and a sighting-free batch of them.
fn many_objects(path: &Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        let object = json!({"type": "ipv4-addr", "spec_version": "2.1",
            "id": format!("ipv4-addr--{i:08x}-0000-5000-8000-000000000000"),
            "value": format!("10.0.{}.{}", i / 256, i % 256)});
        text.push_str(&object.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("objects file");
}

/// Follows `next` through a collection; returns ids in order and pages.
fn page_through(base: &str, limit: usize) -> (Vec<String>, usize) {
    let objects = format!("{ROOT}/collections/sightings/objects/");
    let mut ids = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut target = format!("{objects}?limit={limit}");
        if let Some(token) = &next {
            target.push_str(&format!("&next={token}"));
        }
        let reply = get(base, &target, TOKEN);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let envelope = reply.json();
        let page = envelope["objects"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= limit);
        ids.extend(
            page.iter()
                .map(|o| o["id"].as_str().unwrap_or_default().to_string()),
        );
        pages += 1;
        match envelope["next"].as_str() {
            Some(token) if envelope["more"] == true => next = Some(token.to_string()),
            _ => return (ids, pages),
        }
        assert!(pages < 1000, "paging does not end");
    }
}

#[test]
fn pages_through_one_date_added_and_keeps_history_across_restarts() {
    let dir = scratch("serve-paging");
    let input = dir.join("many.jsonl");
    many_objects(&input, 250);
    let db = dir.join("taxii.db");
    let from = input.display().to_string();

    let (server, base) = start_server(&db, &["--token", TOKEN, "--from", &from]);
    let manifest = get(
        &base,
        &format!("{ROOT}/collections/sightings/manifest/?limit=1000"),
        TOKEN,
    );
    let dates: BTreeSet<String> = manifest.json()["objects"]
        .as_array()
        .map(|m| m.iter().map(|e| e["date_added"].to_string()).collect())
        .unwrap_or_default();
    assert_eq!(dates.len(), 1, "one batch, one date_added");
    let (ids, pages) = page_through(&base, 7);
    assert_eq!(pages, 36);
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (250, 250));
    drop(server);

    // Restarted on the same database and file: nothing is added twice and
    // nothing is lost; without --from the history is still there.
    let (server, base) = start_server(&db, &["--token", TOKEN, "--from", &from]);
    let (again, _) = page_through(&base, 100);
    assert_eq!(again, ids);
    drop(server);
    let (_server, base) = start_server(&db, &["--token", TOKEN]);
    let (kept, _) = page_through(&base, 1000);
    assert_eq!(kept, ids);
}

#[test]
fn pull_reads_serve_over_tls_with_a_custom_ca() {
    let dir = scratch("serve-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("openssl cannot run ({e})"));
        assert!(made.status.success(), "openssl failed:\n{}", stderr(&made));
    };
    let key_options = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    // A private CA, and a server certificate it signs.
    let ca_request = format!("req -x509 {key_options} -days 2 -keyout ca-key.pem -out ca.pem");
    let mut args: Vec<&str> = ca_request.split(' ').collect();
    args.extend(["-subj", "/CN=test ca"]);
    openssl(&args);
    let server_request = format!("req {key_options} -keyout key.pem -out server.csr");
    let mut args: Vec<&str> = server_request.split(' ').collect();
    args.extend(["-subj", "/CN=127.0.0.1"]);
    openssl(&args);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext file");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    assert!(ca_key.exists() && cert.exists() && key.exists());

    let db = dir.join("taxii.db");
    let tls = [cert.display().to_string(), key.display().to_string()];
    let (_server, base) = start_server(
        &db,
        &[
            "--token",
            TOKEN,
            "--indicators",
            "examples/indicators.json",
            "--tls-cert",
            &tls[0],
            "--tls-key",
            &tls[1],
        ],
    );
    assert!(base.starts_with("https://"), "{base}");
    let url = format!("{base}{ROOT}/");
    let out = dir.join("pulled.jsonl");
    let pull = |ca: Option<&Path>| {
        let mut command = sightline();
        command
            .args(["taxii", "pull", "--once", "--limit", "3", "--attempts", "1"])
            .args([
                "--url",
                &url,
                "--collection",
                "indicators",
                "--token",
                TOKEN,
            ])
            .arg("--output")
            .arg(&out);
        if let Some(ca) = ca {
            command.arg("--ca-cert").arg(ca);
        }
        output(&mut command)
    };

    let untrusted = pull(None);
    assert!(!untrusted.status.success(), "an unknown CA is refused");
    assert!(
        stderr(&untrusted).to_lowercase().contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    let trusted = pull(Some(&ca));
    assert!(
        trusted.status.success(),
        "pull over TLS failed:\n{}",
        stderr(&trusted)
    );
    let lines = std::fs::read_to_string(&out).unwrap_or_default();
    let expected_indicators = 8;
    assert_eq!(lines.lines().count(), expected_indicators);
}

#[test]
fn a_followed_file_is_served_as_it_grows() {
    let dir = scratch("serve-follow");
    let input = dir.join("growing.jsonl");
    many_objects(&input, 5);
    let db = dir.join("taxii.db");
    let from = input.display().to_string();
    let (_server, base) = start_server(&db, &["--token", TOKEN, "--from", &from, "--follow"]);

    let count = || page_through(&base, 1000).0.len();
    let wait_for = |n: usize| {
        for _ in 0..100 {
            if count() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server never held {n} objects (it holds {})", count());
    };
    wait_for(5);

    // Ten more objects, the last line written in two steps.
    many_objects(&dir.join("more.jsonl"), 15);
    let more = std::fs::read_to_string(dir.join("more.jsonl")).expect("more objects");
    let lines: Vec<&str> = more.lines().skip(5).collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("append");
    for line in &lines[..9] {
        writeln!(file, "{line}").expect("write");
    }
    let (head, tail) = lines[9].split_at(20);
    write!(file, "{head}").expect("write");
    file.flush().expect("flush");
    wait_for(14);
    writeln!(file, "{tail}").expect("write");
    wait_for(15);
}

/// The store fills from the sightings topic of a real broker, and a
/// restart in the same consumer group stores nothing twice.
#[test]
fn serves_what_the_sightings_topic_holds() {
    let dir = scratch("serve-kafka");
    let topics = kafka_support::Topics::new("taxii-serve", 1);
    topics.create();
    let sightings = match_output(&dir);
    let text = std::fs::read_to_string(&sightings).expect("match output");
    let lines: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let object: Value = serde_json::from_str(l).expect("JSON line");
            (
                object["id"].as_str().unwrap_or_default().to_string(),
                l.to_string(),
            )
        })
        .collect();
    kafka_support::produce_lines_keyed(&topics.sightings, &lines);
    let expected: BTreeSet<String> = latest_versions(&sightings).into_keys().collect();

    let db = dir.join("taxii.db");
    let brokers = kafka_support::brokers();
    let args = [
        "--token",
        TOKEN,
        "--brokers",
        &brokers,
        "--sightings-topic",
        &topics.sightings,
        "--group",
        &topics.group,
    ];
    let served =
        |base: &str| -> BTreeSet<String> { page_through(base, 1000).0.into_iter().collect() };
    let (server, base) = start_server(&db, &args);
    let mut held = BTreeSet::new();
    for _ in 0..150 {
        held = served(&base);
        if held.len() >= expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(held, expected);
    drop(server);

    // Restarted on the same database and group: the same objects, once.
    let (_server, base) = start_server(&db, &args);
    std::thread::sleep(Duration::from_secs(2));
    let (ids, _) = page_through(&base, 1000);
    assert_eq!(ids.len(), expected.len(), "no object stored twice");
}
