//! Helpers shared by the TAXII interop tests: scratch directories, free
//! ports, child processes that are stopped when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sightline-taxii-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not open port {port} within 30 s");
}

/// A child process killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sightline` binary under test.
pub fn sightline() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// Runs a command to completion, capturing its output.
pub fn output(command: &mut Command) -> Output {
    command.output().expect("command runs")
}

/// Text of a process's standard error.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `sightline taxii serve` on a free port with `args`; returns it
/// and its base URL once it listens.
pub fn start_server(db: &Path, args: &[&str]) -> (Running, String) {
    let mut child = sightline()
        .args(["taxii", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sightline taxii serve starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("listening on ") {
                    break rest.trim_end_matches("/taxii2/").to_string();
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            _ => panic!("the server stopped before listening:\n{seen}"),
        }
    };
    // Keep draining standard error so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (Running { child }, base)
}

/// Python with the given modules importable, or a loud failure.
pub fn require_python_modules(modules: &[&str]) {
    for module in modules {
        let status = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .status()
            .unwrap_or_else(|e| panic!("python3 cannot run ({e})"));
        assert!(
            status.success(),
            "python module {module} is missing; install it (.ci/test does: pip install medallion \
             taxii2-client stix2-validator)"
        );
    }
}

/// The (id, version) pairs `read_all.py` reports for one collection.
pub fn read_pairs(collection: &serde_json::Value) -> Vec<(String, String)> {
    collection["objects"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|pair| {
                    let text = |i: usize| pair[i].as_str().unwrap_or_default().to_string();
                    (text(0), text(1))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The newest version of each object, by id (`modified`; objects without
/// it keep the empty string, as `read_all.py` reports them).
pub fn newest_versions(
    objects: &[serde_json::Value],
) -> std::collections::BTreeMap<String, String> {
    let mut latest = std::collections::BTreeMap::new();
    for object in objects {
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let version = object["modified"].as_str().unwrap_or_default().to_string();
        let entry: &mut String = latest.entry(id).or_default();
        if version > *entry {
            *entry = version;
        }
    }
    latest
}
