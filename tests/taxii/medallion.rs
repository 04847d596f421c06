//! The OASIS reference TAXII server `medallion` (memory backend, on
//! loopback) as a test peer, with one readable collection and one that
//! nobody may read.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::common::{self, Running, require_python_modules};

/// The readable collection.
pub const COLLECTION: &str = "9d2e1f0a-5b7c-4d3e-8f19-2a4b6c8d0e1f";
/// A collection with `can_read: false`.
pub const LOCKED: &str = "3c5e7a9b-1d2f-4a6b-9c8d-7e6f5a4b3c2d";
/// The user medallion knows.
pub const USER: &str = "reader";
/// Its password.
pub const PASSWORD: &str = "correct-horse";

/// `date_added` of the n-th object: four objects share each second, so
/// pages end inside groups of equal `date_added`.
pub fn date_added(n: usize) -> String {
    let seconds = n / 4;
    format!(
        "2026-02-01T{:02}:{:02}:{:02}.000000Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The medallion data file: one API root with a readable collection of
/// `objects` and a collection nobody may read.
pub fn medallion_data(port: u16, objects: &[Value]) -> Value {
    let root = format!("http://127.0.0.1:{port}/api1/");
    let manifest: Vec<Value> = objects
        .iter()
        .enumerate()
        .map(|(n, o)| {
            json!({"id": o["id"], "date_added": date_added(n), "version": o["modified"],
                "media_type": "application/stix+json;version=2.1"})
        })
        .collect();
    let collection = |id: &str, readable: bool, objects: Value, manifest: Value| {
        json!({"id": id, "title": "feed", "can_read": readable, "can_write": false,
            "media_types": ["application/stix+json;version=2.1"],
            "objects": objects, "manifest": manifest})
    };
    json!({
        "/discovery": {"title": "test", "default": root, "api_roots": [root]},
        "api1": {
            "information": {"title": "api1", "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 1_000_000},
            "status": [],
            "collections": [
                collection(COLLECTION, true, Value::from(objects.to_vec()), Value::from(manifest)),
                collection(LOCKED, false, json!([]), json!([])),
            ]
        }
    })
}

/// Starts medallion on `port` serving `objects`; returns it and the API
/// root URL.
pub fn start_medallion(dir: &Path, port: u16, objects: &[Value]) -> (Running, String) {
    require_python_modules(&["medallion"]);
    let data = dir.join("data.json");
    std::fs::write(&data, medallion_data(port, objects).to_string()).expect("data file");
    let config = dir.join("config.json");
    let settings = json!({
        "backend": {"module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend", "filename": data},
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": 100}
    });
    std::fs::write(&config, settings.to_string()).expect("config file");
    let child = Command::new("medallion")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("medallion cannot run ({e}); pip install medallion"));
    let mut running = Running { child };
    common::wait_for_port(port, &mut running.child, "medallion");
    (running, format!("http://127.0.0.1:{port}/api1/"))
}
