//! Where `sightline taxii pull` stopped, per API root and collection.
//!
//! The file is JSON, replaced atomically (written beside, then renamed).
//! For each collection it keeps the `date_added` of the last object taken
//! (the `X-TAXII-Date-Added-Last` of the last page) and the (id, version)
//! keys of that page. A restart asks for objects added from one microsecond
//! before that instant, so objects sharing the last `date_added` are not
//! lost, and drops the ones it already took.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most (id, version) keys remembered per collection.
pub const MAX_RECENT_KEYS: usize = 10_000;

/// Why the checkpoint cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error on the file or its temporary twin.
    #[error("checkpoint {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The file is not a checkpoint.
    #[error("checkpoint {path} is not valid: {cause}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        cause: serde_json::Error,
    },
}

/// The position in one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// `X-TAXII-Date-Added-Last` of the last page taken, as the server
    /// wrote it.
    pub added_last: Option<String>,
    /// (id, version) of the objects of the last page taken.
    #[serde(default)]
    pub recent: Vec<(String, String)>,
}

/// Every position the file holds, keyed by `"{api root} {collection}"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(default)]
    collections: BTreeMap<String, Position>,
}

impl Checkpoint {
    /// Reads `path`; a missing file is an empty checkpoint.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or is not a checkpoint.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(cause) => {
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    cause,
                });
            }
        };
        serde_json::from_slice(&text).map_err(|cause| CheckpointError::Invalid {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// The position in `collection` of `api_root`.
    pub fn position(&self, api_root: &str, collection: &str) -> Position {
        self.collections
            .get(&key(api_root, collection))
            .cloned()
            .unwrap_or_default()
    }

    /// Records the position in `collection` of `api_root`.
    pub fn set(&mut self, api_root: &str, collection: &str, mut position: Position) {
        let excess = position.recent.len().saturating_sub(MAX_RECENT_KEYS);
        position.recent.drain(..excess);
        self.collections.insert(key(api_root, collection), position);
    }

    /// Writes the checkpoint to `path` atomically.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be written or renamed.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let fail = |cause| CheckpointError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail(e.into()))?;
        let mut file = std::fs::File::create(&temporary).map_err(fail)?;
        file.write_all(&text).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&temporary, path).map_err(fail)
    }
}

fn key(api_root: &str, collection: &str) -> String {
    format!("{} {collection}", api_root.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() -> Result<(), CheckpointError> {
        let dir = std::env::temp_dir().join(format!("sightline-checkpoint-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("checkpoint.json");
        let _ = std::fs::remove_file(&path);
        let mut checkpoint = Checkpoint::load(&path)?;
        assert_eq!(checkpoint.position("https://x/api/", "c").added_last, None);
        let position = Position {
            added_last: Some("2026-01-01T00:00:00.000000Z".into()),
            recent: vec![("indicator--1".into(), "2026-01-01T00:00:00.000Z".into())],
        };
        checkpoint.set("https://x/api/", "c", position.clone());
        checkpoint.save(&path)?;
        let again = Checkpoint::load(&path)?;
        assert_eq!(again.position("https://x/api", "c"), position);
        std::fs::write(&path, "not json").map_err(|cause| CheckpointError::Io {
            path: path.clone(),
            cause,
        })?;
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Invalid { .. })
        ));
        Ok(())
    }
}
