//! Where `sightline taxii pull` puts the indicators it fetched.
//!
//! [`IndicatorSink`] is the seam: the JSON lines file here, the Kafka
//! indicators topic (key = id, so compaction keeps the newest version)
//! beside it. A sink must have made everything written durable when
//! `flush` returns: the checkpoint moves on right after.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output file cannot be opened or written.
    #[error("cannot write {path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The destination is not available in this build.
    #[error("{0}")]
    Unavailable(String),
}

/// A destination for pulled STIX objects.
pub trait IndicatorSink {
    /// Takes `objects` (one page, already de-duplicated).
    ///
    /// # Errors
    ///
    /// Fails when the destination refuses them.
    fn write(&mut self, objects: &[Value]) -> Result<(), SinkError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    ///
    /// Fails when the destination cannot confirm it.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Appends objects to a file, one JSON object per line, the form
/// `sightline match --indicators` reads.
pub struct JsonLinesFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLinesFile {
    /// Opens `path` for appending, creating it when missing.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be opened.
    pub fn append(path: &Path) -> Result<JsonLinesFile, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|cause| SinkError::File {
                path: path.to_path_buf(),
                cause,
            })?;
        Ok(JsonLinesFile {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    fn fail(&self, cause: io::Error) -> SinkError {
        SinkError::File {
            path: self.path.clone(),
            cause,
        }
    }
}

impl IndicatorSink for JsonLinesFile {
    fn write(&mut self, objects: &[Value]) -> Result<(), SinkError> {
        for object in objects {
            serde_json::to_writer(&mut self.out, object).map_err(|e| self.fail(e.into()))?;
            self.out.write_all(b"\n").map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.fail(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.fail(e))
    }
}
