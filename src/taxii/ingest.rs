//! Filling the TAXII store from what `sightline match` wrote: JSON lines of
//! STIX objects (or bundles, arrays, one document), from a file or a pipe.
//!
//! Objects are stored in batches; each batch is one `date_added`. Loading
//! the same input again stores nothing new (the store keys on id and
//! version). A followed file is read again from where it stopped whenever
//! it grows, and from the start when it was truncated or replaced.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::store::{InsertReport, Store, StoreError};
use crate::observe::documents::{Documents, MAX_DOCUMENT_BYTES};
use crate::stix::indicator::document_objects;

/// Objects per store batch.
const BATCH_OBJECTS: usize = 1000;

/// Why ingestion stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input cannot be opened or read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The input ("-" for standard input).
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an ingestion run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    /// The store's account of the objects offered.
    pub stored: InsertReport,
    /// Input documents that were not JSON (reported on standard error).
    pub unreadable: usize,
    /// Objects left out by the caller's type filter.
    pub skipped: usize,
}

impl IngestReport {
    fn add(&mut self, batch: InsertReport) {
        self.stored.added += batch.added;
        self.stored.duplicates += batch.duplicates;
        self.stored.refused += batch.refused;
    }
}

/// Which objects to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every object.
    All,
    /// Indicators only.
    Indicators,
}

impl Keep {
    fn admits(self, object: &Value) -> bool {
        match self {
            Keep::All => true,
            Keep::Indicators => object.get("type").and_then(Value::as_str) == Some("indicator"),
        }
    }
}

/// Buffers objects and stores them a batch at a time.
struct Batcher<'a> {
    store: &'a mut Store,
    keep: Keep,
    pending: Vec<Value>,
    report: IngestReport,
}

impl Batcher<'_> {
    fn offer(&mut self, doc: &Value) -> Result<(), StoreError> {
        for object in document_objects(doc) {
            if self.keep.admits(object) {
                self.pending.push(object.clone());
            } else {
                self.report.skipped += 1;
            }
            if self.pending.len() >= BATCH_OBJECTS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            let batch = self.store.insert(&self.pending)?;
            self.report.add(batch);
            self.pending.clear();
        }
        Ok(())
    }
}

/// Reads every document of `path` ("-" for standard input) into the store.
///
/// # Errors
///
/// Fails when the input cannot be opened or the store cannot be written;
/// a document that is not JSON is reported and skipped.
pub fn load(store: &mut Store, path: &Path, keep: Keep) -> Result<IngestReport, IngestError> {
    let name = path.display().to_string();
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let file = File::open(path).map_err(|cause| IngestError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut batcher = Batcher {
        store,
        keep,
        pending: Vec::new(),
        report: IngestReport::default(),
    };
    for document in Documents::new(reader) {
        match document {
            Ok((_, doc)) => batcher.offer(&doc)?,
            Err(e) => {
                batcher.report.unreadable += 1;
                eprintln!("warning: {name}: {e}");
            }
        }
    }
    batcher.flush()?;
    Ok(batcher.report)
}

/// Follows a JSON lines file: reads every complete line from the start,
/// then waits for more every `poll` until `stop` is set. Returns what was
/// stored.
///
/// # Errors
///
/// Fails when the store cannot be written. A file that vanishes is waited
/// for; a file that shrinks is read again from the start.
pub fn follow(
    store: &mut Store,
    path: &Path,
    poll: Duration,
    stop: &Arc<AtomicBool>,
) -> Result<IngestReport, IngestError> {
    let name = path.display().to_string();
    let mut offset = 0u64;
    let mut batcher = Batcher {
        store,
        keep: Keep::All,
        pending: Vec::new(),
        report: IngestReport::default(),
    };
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let length = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if length < offset {
            eprintln!("note: {name} shrank; reading it again from the start");
            offset = 0;
        }
        if length > offset {
            let read = |e| IngestError::Read {
                path: path.to_path_buf(),
                cause: e,
            };
            let mut file = File::open(path).map_err(read)?;
            file.seek(SeekFrom::Start(offset)).map_err(read)?;
            let mut reader = BufReader::new(file.take(length - offset));
            loop {
                line.clear();
                let n = reader
                    .by_ref()
                    .take(MAX_DOCUMENT_BYTES as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(read)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    // A line still being written: read it next time, unless
                    // it is already too long to ever be taken.
                    if n > MAX_DOCUMENT_BYTES {
                        eprintln!(
                            "warning: {name}: a line longer than {MAX_DOCUMENT_BYTES} bytes is skipped"
                        );
                        offset += n as u64;
                        continue;
                    }
                    break;
                }
                offset += n as u64;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(doc) => batcher.offer(&doc)?,
                    Err(e) => {
                        batcher.report.unreadable += 1;
                        eprintln!("warning: {name}: invalid JSON at byte {offset}: {e}");
                    }
                }
            }
            batcher.flush()?;
        }
        std::thread::sleep(poll);
    }
    batcher.flush()?;
    Ok(batcher.report)
}
