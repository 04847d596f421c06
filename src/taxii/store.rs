//! The TAXII server's object store: STIX objects in SQLite, every version
//! kept, in the order they were added.
//!
//! One table holds the objects of every collection. A row is one version
//! of one object: (collection, id, version) is unique, so loading the same
//! file twice adds nothing. Objects without `modified` or `created`
//! (cyber-observables) have one version, keyed by id alone. Each batch of
//! inserts gets one `date_added`, strictly later than every earlier one,
//! in microseconds (the precision TAXII timestamps carry); ties inside a
//! batch are ordered by row number, which paging tokens include.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _, params, params_from_iter};
use serde_json::Value;

use super::format_micros;
use super::query::{Cursor, Filter};

/// Largest STIX object the store accepts, in bytes of JSON.
pub const MAX_OBJECT_BYTES: usize = 4 << 20;

/// Most bytes of object JSON one page carries; a page stops early (with
/// `more`) rather than pass it.
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file cannot be opened or set up.
    #[error("cannot open the database {path}: {cause}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        cause: rusqlite::Error,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
}

// By hand rather than `#[from]`: the message already carries SQLite's
// text, so the error is not also offered as a source (which would print
// it twice in a cause chain).
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError::Sql(error)
    }
}

/// A served collection, by the alias used in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// Sightings with their observed-data, cyber-observables and identities.
    Sightings,
    /// The indicators the sightings refer to.
    Indicators,
}

impl Collection {
    /// Both collections, in the order they are listed.
    pub const ALL: [Collection; 2] = [Collection::Sightings, Collection::Indicators];

    /// The collection's alias, also its name in the store.
    pub fn alias(self) -> &'static str {
        match self {
            Collection::Sightings => "sightings",
            Collection::Indicators => "indicators",
        }
    }

    /// The collection's fixed TAXII identifier (a version 4 UUID).
    pub fn id(self) -> &'static str {
        match self {
            Collection::Sightings => "5b6e2c1a-8f3d-4e7a-9c21-3d4f5a6b7c8d",
            Collection::Indicators => "a1c3e5f7-2b4d-4f68-8a9b-0c1d2e3f4a5b",
        }
    }

    /// The collection named by `key`, its identifier or its alias.
    pub fn find(key: &str) -> Option<Collection> {
        Collection::ALL
            .into_iter()
            .find(|c| c.id() == key || c.alias() == key)
    }

    /// Where an object of type `kind` is kept.
    pub fn for_type(kind: &str) -> Collection {
        if kind == "indicator" {
            Collection::Indicators
        } else {
            Collection::Sightings
        }
    }
}

/// What one batch of inserts did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertReport {
    /// New object versions stored.
    pub added: usize,
    /// Versions already stored, left as they were.
    pub duplicates: usize,
    /// Objects refused (no id or type, not JSON objects, too large).
    pub refused: usize,
}

/// One stored object version, as a page returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Row number (ties on `date_added` are ordered by it).
    pub seq: i64,
    /// STIX id.
    pub id: String,
    /// The version: `modified`, else `created`, else the `date_added`.
    pub version: String,
    /// When it was added, microseconds since the epoch.
    pub date_added_us: i64,
    /// STIX `spec_version` (2.0 for objects that carry none but `created`).
    pub spec_version: String,
    /// The object's JSON text.
    pub json: String,
}

impl Row {
    /// `date_added` as a TAXII timestamp.
    pub fn date_added(&self) -> String {
        format_micros(self.date_added_us)
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The rows, oldest `date_added` first.
    pub rows: Vec<Row>,
    /// Whether more rows match after these.
    pub more: bool,
}

impl Page {
    /// The `next` token that continues after this page, when there is more.
    pub fn next_token(&self) -> Option<String> {
        let last = self.rows.last().filter(|_| self.more)?;
        Some(
            Cursor {
                date_added_us: last.date_added_us,
                seq: last.seq,
            }
            .token(),
        )
    }
}

/// The SQLite store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating when needed) the database at `path`.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be opened or is not a database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = |cause| StoreError::Open {
            path: path.to_path_buf(),
            cause,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        Ok(Store { conn })
    }

    /// Stores `objects` as one batch with one `date_added`.
    ///
    /// # Errors
    ///
    /// Fails when the database cannot be written.
    pub fn insert(&mut self, objects: &[Value]) -> Result<InsertReport, StoreError> {
        let mut report = InsertReport::default();
        let tx = self.conn.transaction()?;
        let latest: Option<i64> =
            tx.query_row("SELECT MAX(date_added) FROM objects", [], |r| r.get(0))?;
        let date_added = now_micros().max(latest.map_or(i64::MIN, |t| t.saturating_add(1)));
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for object in objects {
                let Some(record) = Record::read(object, date_added) else {
                    report.refused += 1;
                    continue;
                };
                let changed = insert.execute(params![
                    record.collection.alias(),
                    record.id,
                    record.kind,
                    record.version,
                    record.version_us,
                    record.version_key,
                    record.spec_version,
                    date_added,
                    record.json,
                ])?;
                if changed == 0 {
                    report.duplicates += 1;
                } else {
                    report.added += 1;
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// How many object versions `collection` holds.
    ///
    /// # Errors
    ///
    /// Fails when the database cannot be read.
    pub fn count(&self, collection: Collection) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM objects WHERE collection = ?1";
        Ok(self
            .conn
            .query_row(sql, [collection.alias()], |r| r.get(0))?)
    }

    /// Whether `collection` holds any version of object `id`.
    ///
    /// # Errors
    ///
    /// Fails when the database cannot be read.
    pub fn contains(&self, collection: Collection, id: &str) -> Result<bool, StoreError> {
        let sql = "SELECT 1 FROM objects WHERE collection = ?1 AND id = ?2 LIMIT 1";
        let found: Option<i64> = self
            .conn
            .query_row(sql, params![collection.alias(), id], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// The page of `collection` that `filter` asks for, oldest first.
    ///
    /// # Errors
    ///
    /// Fails when the database cannot be read.
    pub fn query(&self, collection: Collection, filter: &Filter) -> Result<Page, StoreError> {
        let mut sql = String::from(
            "SELECT o.seq, o.id, o.version, o.date_added, o.spec_version, o.json \
             FROM objects o WHERE o.collection = ?",
        );
        let mut args: Vec<SqlValue> = vec![collection.alias().to_string().into()];
        let spec =
            |alias: &str, sql: &mut String, args: &mut Vec<SqlValue>| match &filter.spec_versions {
                Some(list) => {
                    sql.push_str(&format!(
                        " AND {alias}.spec_version IN ({})",
                        marks(list.len())
                    ));
                    args.extend(list.iter().map(|v| SqlValue::from(v.clone())));
                }
                None => sql.push_str(&format!(
                    " AND {alias}.spec_version = (SELECT MAX(s.spec_version) FROM objects s \
                 WHERE s.collection = {alias}.collection AND s.id = {alias}.id)"
                )),
            };
        spec("o", &mut sql, &mut args);
        if let Some(ids) = &filter.ids {
            sql.push_str(&format!(" AND o.id IN ({})", marks(ids.len())));
            args.extend(ids.iter().map(|v| SqlValue::from(v.clone())));
        }
        if let Some(types) = &filter.types {
            sql.push_str(&format!(" AND o.type IN ({})", marks(types.len())));
            args.extend(types.iter().map(|v| SqlValue::from(v.clone())));
        }
        if let Some(after) = filter.added_after_us {
            sql.push_str(" AND o.date_added > ?");
            args.push(after.into());
        }
        if let Some(cursor) = filter.next {
            sql.push_str(" AND (o.date_added, o.seq) > (?, ?)");
            args.push(cursor.date_added_us.into());
            args.push(cursor.seq.into());
        }

        // Which versions: the newest and oldest are found among the
        // versions of the allowed spec versions.
        let versions = &filter.versions;
        if !versions.all {
            let mut alternatives = Vec::new();
            for (wanted, aggregate) in [(versions.last, "MAX"), (versions.first, "MIN")] {
                if wanted {
                    let mut clause = format!(
                        "o.version_us = (SELECT {aggregate}(v.version_us) FROM objects v \
                         WHERE v.collection = o.collection AND v.id = o.id"
                    );
                    spec("v", &mut clause, &mut args);
                    clause.push(')');
                    alternatives.push(clause);
                }
            }
            if !versions.exact_us.is_empty() {
                alternatives.push(format!(
                    "o.version_us IN ({})",
                    marks(versions.exact_us.len())
                ));
                args.extend(versions.exact_us.iter().map(|v| SqlValue::from(*v)));
            }
            if alternatives.is_empty() {
                alternatives.push("0".into());
            }
            sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }

        sql.push_str(" ORDER BY o.date_added, o.seq LIMIT ?");
        let limit = filter.limit.max(1);
        args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());

        let mut statement = self.conn.prepare(&sql)?;
        let mut rows = statement.query(params_from_iter(args))?;
        let mut page = Page::default();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            let json: String = row.get(5)?;
            let full = page.rows.len() == limit
                || (!page.rows.is_empty() && bytes + json.len() > MAX_PAGE_BYTES);
            if full {
                page.more = true;
                break;
            }
            bytes += json.len();
            page.rows.push(Row {
                seq: row.get(0)?,
                id: row.get(1)?,
                version: row.get(2)?,
                date_added_us: row.get(3)?,
                spec_version: row.get(4)?,
                json,
            });
        }
        Ok(page)
    }
}

/// `?, ?, ?` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n.max(1)].join(", ")
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The columns of one object version.
struct Record<'a> {
    collection: Collection,
    id: &'a str,
    kind: &'a str,
    version: String,
    version_us: i64,
    /// `version_us`, or 0 for unversioned objects: the uniqueness key.
    version_key: i64,
    spec_version: &'a str,
    json: String,
}

impl<'a> Record<'a> {
    /// Reads the columns of `object`; `None` when it is not a usable STIX
    /// object.
    fn read(object: &'a Value, date_added: i64) -> Option<Record<'a>> {
        let map = object.as_object()?;
        let id = map.get("id")?.as_str().filter(|s| valid_id(s))?;
        let kind = map
            .get("type")?
            .as_str()
            .filter(|k| id.starts_with(&format!("{k}--")))?;
        let json = serde_json::to_string(object).ok()?;
        if json.len() > MAX_OBJECT_BYTES {
            return None;
        }
        let stamped = ["modified", "created"].into_iter().find_map(|key| {
            let text = map.get(key)?.as_str()?;
            Some((text.to_string(), super::parse_micros(text)?))
        });
        let (version, version_us, version_key) = match stamped {
            Some((text, micros)) => (text, micros, micros),
            None => (format_micros(date_added), date_added, 0),
        };
        let spec_version = match map.get("spec_version").and_then(Value::as_str) {
            Some(v) => v,
            None if map.contains_key("created") => "2.0",
            None => "2.1",
        };
        Some(Record {
            collection: Collection::for_type(kind),
            id,
            kind,
            version,
            version_us,
            version_key,
            spec_version,
            json,
        })
    }
}

/// A STIX identifier: `type--uuid`, of reasonable length.
fn valid_id(id: &str) -> bool {
    id.len() <= 300
        && id.split_once("--").is_some_and(|(kind, uuid)| {
            !kind.is_empty()
                && uuid.len() == 36
                && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        })
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    version TEXT NOT NULL,
    version_us INTEGER NOT NULL,
    version_key INTEGER NOT NULL,
    spec_version TEXT NOT NULL,
    date_added INTEGER NOT NULL,
    json TEXT NOT NULL,
    UNIQUE (collection, id, version_key)
);
CREATE INDEX IF NOT EXISTS objects_by_date ON objects (collection, date_added, seq);
CREATE INDEX IF NOT EXISTS objects_by_id ON objects (collection, id, version_us);
";

const INSERT: &str = "INSERT OR IGNORE INTO objects \
    (collection, id, type, version, version_us, version_key, spec_version, date_added, json) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::taxii::query::VersionFilter;

    fn store() -> Result<(Store, PathBuf), StoreError> {
        let dir = std::env::temp_dir().join(format!(
            "sightline-store-{}-{}",
            std::process::id(),
            now_micros()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("store.db");
        Ok((Store::open(&path)?, path))
    }

    fn sighting(n: u32, modified: &str) -> Value {
        json!({"type": "sighting", "spec_version": "2.1",
            "id": format!("sighting--00000000-0000-4000-8000-{n:012}"),
            "created": "2026-01-01T00:00:00.000Z", "modified": modified,
            "sighting_of_ref": "indicator--00000000-0000-4000-8000-000000000001"})
    }

    #[test]
    fn versions_and_duplicates() -> Result<(), StoreError> {
        let (mut store, _) = store()?;
        let first = [
            sighting(1, "2026-01-01T00:00:00.000Z"),
            sighting(2, "2026-01-01T00:00:00.000Z"),
        ];
        assert_eq!(store.insert(&first)?.added, 2);
        let again = store.insert(&first)?;
        assert_eq!((again.added, again.duplicates), (0, 2));
        store.insert(&[
            sighting(1, "2026-01-01T00:05:00.000Z"),
            json!({"type": "x"}),
        ])?;

        let latest = store.query(Collection::Sightings, &Filter::default())?;
        assert_eq!(latest.rows.len(), 2);
        assert!(
            latest
                .rows
                .iter()
                .any(|r| r.version == "2026-01-01T00:05:00.000Z")
        );
        let every = Filter {
            versions: VersionFilter::every(),
            ..Filter::default()
        };
        assert_eq!(store.query(Collection::Sightings, &every)?.rows.len(), 3);
        let first_only = Filter {
            versions: VersionFilter {
                last: false,
                first: true,
                ..VersionFilter::default()
            },
            ..Filter::default()
        };
        let rows = store.query(Collection::Sightings, &first_only)?.rows;
        assert!(rows.iter().all(|r| r.version == "2026-01-01T00:00:00.000Z"));
        assert_eq!(store.count(Collection::Indicators)?, 0);
        Ok(())
    }

    #[test]
    fn pages_through_one_date_added() -> Result<(), StoreError> {
        let (mut store, _) = store()?;
        let batch: Vec<Value> = (0..50)
            .map(|n| sighting(n, "2026-01-01T00:00:00.000Z"))
            .collect();
        store.insert(&batch)?;
        let mut filter = Filter {
            limit: 7,
            ..Filter::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.query(Collection::Sightings, &filter)?;
            seen.extend(page.rows.iter().map(|r| r.id.clone()));
            match page.next_token() {
                Some(token) => filter.next = Cursor::from_token(&token),
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (50, 50));
        Ok(())
    }
}
