//! `sightline taxii pull` against the OASIS reference server `medallion`
//! (memory backend, on loopback), installed from PyPI by `.ci/test`. A
//! missing medallion is a failure, not a skip.

#[path = "taxii/common.rs"]
mod common;
mod kafka_support;
#[path = "taxii/medallion.rs"]
mod medallion;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::{free_port, output, scratch, sightline, stderr};
use medallion::{COLLECTION, LOCKED, PASSWORD, USER, start_medallion};

fn indicator(n: usize, modified: &str) -> Value {
    json!({
        "type": "indicator", "spec_version": "2.1",
        "id": format!("indicator--{n:08x}-0000-4000-8000-000000000000"),
        "created": "2026-01-01T00:00:00.000Z", "modified": modified,
        "name": format!("address {n}"),
        "pattern": format!("[ipv4-addr:value = '198.51.100.{}']", n % 250),
        "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z"
    })
}

fn malware(n: usize) -> Value {
    json!({
        "type": "malware", "spec_version": "2.1",
        "id": format!("malware--{n:08x}-0000-4000-8000-000000000000"),
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
        "name": format!("family {n}"), "is_family": true
    })
}

fn pull(url: &str, collection: &str, out: &Path, checkpoint: &Path, password: &str) -> Command {
    let mut command = sightline();
    command
        .args([
            "taxii",
            "pull",
            "--once",
            "--limit",
            "25",
            "--attempts",
            "2",
        ])
        .args(["--url", url, "--collection", collection])
        .args(["--user", USER, "--password", password, "--output"])
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint);
    command
}

/// (id, modified) of every line of a JSON lines file, in order.
fn keys_in(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let object: Value = serde_json::from_str(line).expect("each line is JSON");
            assert_eq!(object["type"], "indicator", "only indicators are written");
            let key = |k: &str| object[k].as_str().unwrap_or_default().to_string();
            (key("id"), key("modified"))
        })
        .collect()
}

fn expected(objects: &[Value]) -> BTreeSet<(String, String)> {
    // The latest version of each indicator (medallion's default).
    let mut latest = std::collections::BTreeMap::new();
    for o in objects.iter().filter(|o| o["type"] == "indicator") {
        let id = o["id"].as_str().unwrap_or_default().to_string();
        let modified = o["modified"].as_str().unwrap_or_default().to_string();
        let entry = latest.entry(id).or_insert_with(String::new);
        if modified > *entry {
            *entry = modified;
        }
    }
    latest.into_iter().collect()
}

#[test]
fn pulls_every_page_once_and_resumes_from_the_checkpoint() {
    let dir = scratch("pull");
    let mut objects: Vec<Value> = Vec::new();
    for n in 0..120 {
        objects.push(indicator(n, "2026-01-01T00:00:00.000Z"));
        if n % 12 == 0 {
            objects.push(malware(n));
        }
    }
    // A newer version of one indicator, added later.
    objects.push(indicator(7, "2026-01-05T00:00:00.000Z"));
    let out = dir.join("indicators.jsonl");
    let checkpoint = dir.join("checkpoint.json");

    let port = free_port();
    let (medallion, url) = start_medallion(&dir, port, &objects);
    let run = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(run.status.success(), "pull failed:\n{}", stderr(&run));
    let taken = keys_in(&out);
    let unique: BTreeSet<_> = taken.iter().cloned().collect();
    assert_eq!(unique.len(), taken.len(), "no object is written twice");
    assert_eq!(unique, expected(&objects));
    assert!(stderr(&run).contains("page(s)"), "{}", stderr(&run));

    // Nothing new: the second run writes nothing.
    let again = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(
        again.status.success(),
        "second pull failed:\n{}",
        stderr(&again)
    );
    assert_eq!(keys_in(&out).len(), taken.len(), "{}", stderr(&again));
    drop(medallion);

    // The server restarts (same address, as the checkpoint is per API
    // root) with 30 more indicators, added later: only those are taken.
    for n in 120..150 {
        objects.push(indicator(n, "2026-01-09T00:00:00.000Z"));
    }
    let (_medallion, url) = start_medallion(&dir, port, &objects);
    let third = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(
        third.status.success(),
        "third pull failed:\n{}",
        stderr(&third)
    );
    let all = keys_in(&out);
    assert_eq!(all.len(), taken.len() + 30, "{}", stderr(&third));
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique, expected(&objects));
}

#[test]
fn refusals_are_clear_errors() {
    let dir = scratch("refusals");
    let objects = vec![indicator(1, "2026-01-01T00:00:00.000Z")];
    let (_medallion, url) = start_medallion(&dir, free_port(), &objects);
    let out = dir.join("out.jsonl");
    let checkpoint = dir.join("checkpoint.json");

    let cases = [
        (COLLECTION, "wrong", "HTTP 401"),
        ("00000000-0000-4000-8000-000000000000", PASSWORD, "HTTP 404"),
        (LOCKED, PASSWORD, "can_read"),
    ];
    for (collection, password, expected) in cases {
        let run = output(&mut pull(&url, collection, &out, &checkpoint, password));
        let message = stderr(&run);
        assert!(!run.status.success(), "{collection} should fail");
        assert!(message.contains(expected), "{expected} not in: {message}");
        assert!(message.contains(&url), "the URL is named: {message}");
    }
    let unauthorized = output(&mut pull(&url, COLLECTION, &out, &checkpoint, "wrong"));
    assert!(
        stderr(&unauthorized).contains("--password"),
        "{}",
        stderr(&unauthorized)
    );

    // Nobody listens: the request is retried, then fails.
    let closed = format!("http://127.0.0.1:{}/api1/", free_port());
    let run = output(&mut pull(&closed, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("after 2 attempt(s)"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists() || keys_in(&out).is_empty());
}

/// Discovery lists the API root and both collections with their
/// permissions, as `pull --collection` needs them.
#[test]
fn discover_lists_roots_and_collections() {
    let dir = scratch("discover");
    let port = free_port();
    let (_medallion, _) = start_medallion(&dir, port, &[indicator(1, "2026-01-01T00:00:00.000Z")]);
    let run = output(
        sightline()
            .args([
                "taxii",
                "discover",
                "--url",
                &format!("http://127.0.0.1:{port}/taxii2/"),
            ])
            .args(["--user", USER, "--password", PASSWORD]),
    );
    assert!(run.status.success(), "discover failed:\n{}", stderr(&run));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("server: test"), "{text}");
    assert!(
        text.contains(&format!("api root: http://127.0.0.1:{port}/api1/ (api1)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "collection {COLLECTION}  read: yes  write: no  feed"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("collection {LOCKED}  read: no")),
        "{text}"
    );

    let refused = output(
        sightline()
            .args([
                "taxii",
                "discover",
                "--url",
                &format!("http://127.0.0.1:{port}/taxii2/"),
            ])
            .args(["--user", USER, "--password", "wrong", "--attempts", "1"]),
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
}

/// Pulled indicators go to the indicators topic of a real broker, one
/// message per object, keyed by id.
#[test]
fn pull_writes_to_the_indicators_topic() {
    let dir = scratch("pull-kafka");
    let objects: Vec<Value> = (0..60)
        .map(|n| indicator(n, "2026-01-01T00:00:00.000Z"))
        .collect();
    let (_medallion, url) = start_medallion(&dir, free_port(), &objects);
    let topics = kafka_support::Topics::new("taxii-pull", 1);
    topics.create();
    let run = output(
        sightline()
            .args(["taxii", "pull", "--once", "--limit", "25"])
            .args(["--url", &url, "--collection", COLLECTION])
            .args(["--user", USER, "--password", PASSWORD])
            .args(["--brokers", &kafka_support::brokers()])
            .args(["--indicators-topic", &topics.indicators])
            .arg("--checkpoint")
            .arg(dir.join("checkpoint.json")),
    );
    assert!(run.status.success(), "pull failed:\n{}", stderr(&run));
    let messages = kafka_support::consume(&topics.indicators, 61, Duration::from_secs(20));
    assert_eq!(messages.len(), 60, "one message per indicator");
    let mut keys = BTreeSet::new();
    for message in &messages {
        let object = message.json();
        assert_eq!(message.key_str(), object["id"].as_str());
        keys.insert((
            object["id"].as_str().unwrap_or_default().to_string(),
            object["modified"].as_str().unwrap_or_default().to_string(),
        ));
    }
    assert_eq!(keys, expected(&objects));
}

/// A loopback server that answers the n-th request with `replies[n]`
/// (status line, extra headers, body); returns its API root URL and the
/// request lines it saw.
fn scripted_server(
    replies: Vec<(&'static str, &'static str, String)>,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (seen, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (status, headers, body) in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = seen.send(line.trim().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/taxii+json;version=2.1\r\n\
                 {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        }
    });
    (format!("http://127.0.0.1:{port}/api1/"), requests)
}

/// 403, 406, 413 and 415 fail at once (no retry) with the URL, the
/// status, the server's error title and what to check.
#[test]
fn client_errors_fail_at_once_with_the_reason() {
    let dir = scratch("statuses");
    let cases = [
        ("403 Forbidden", "may not read"),
        (
            "406 Not Acceptable",
            "does not serve application/taxii+json",
        ),
        ("413 Payload Too Large", "smaller --limit"),
        ("415 Unsupported Media Type", "media type"),
    ];
    for (status, hint) in cases {
        let body = json!({"title": format!("refused with {status}")}).to_string();
        let (url, requests) = scripted_server(vec![(status, "", body.clone()), (status, "", body)]);
        let out = dir.join("out.jsonl");
        let checkpoint = dir.join("checkpoint.json");
        let run = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
        let message = stderr(&run);
        assert!(!run.status.success(), "{status} should fail");
        let code = &status[..3];
        assert!(message.contains(&format!("HTTP {code}")), "{message}");
        assert!(
            message.contains(&format!("refused with {status}")),
            "{message}"
        );
        assert!(message.contains(hint), "{hint} not in: {message}");
        assert!(message.contains(&url), "the URL is named: {message}");
        assert_eq!(requests.try_iter().count(), 1, "{status} is not retried");
    }
}

#[test]
fn retries_overload_and_reports_malformed_responses() {
    let dir = scratch("retries");
    let collection = json!({"id": COLLECTION, "title": "feed", "can_read": true,
        "can_write": false})
    .to_string();
    let envelope = json!({"more": false,
        "objects": [indicator(1, "2026-01-01T00:00:00.000Z")]})
    .to_string();
    let added = "X-TAXII-Date-Added-Last: 2026-02-01T00:00:00.000000Z\r\n";
    let (url, requests) = scripted_server(vec![
        (
            "503 Service Unavailable",
            "Retry-After: 1\r\n",
            String::new(),
        ),
        ("200 OK", "", collection.clone()),
        (
            "429 Too Many Requests",
            "",
            "{\"title\": \"slow down\"}".into(),
        ),
        ("200 OK", added, envelope),
    ]);
    let out = dir.join("out.jsonl");
    let checkpoint = dir.join("checkpoint.json");
    let run = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(run.status.success(), "pull failed:\n{}", stderr(&run));
    assert_eq!(keys_in(&out).len(), 1);
    let seen: Vec<String> = requests.try_iter().collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[3].contains("limit=25") && seen[3].contains("match%5Btype%5D=indicator"));
    let saved = std::fs::read_to_string(&checkpoint).unwrap_or_default();
    assert!(saved.contains("2026-02-01T00:00:00.000000Z"), "{saved}");

    let (url, _) = scripted_server(vec![
        ("200 OK", "", collection),
        ("200 OK", "", "<html>not TAXII</html>".into()),
    ]);
    let run = output(&mut pull(&url, COLLECTION, &out, &checkpoint, PASSWORD));
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("malformed response: not JSON"),
        "{}",
        stderr(&run)
    );
}
