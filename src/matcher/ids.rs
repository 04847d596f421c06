//! Indicator ids, and a compact map from them to what the catalog knows
//! of them.
//!
//! The catalog holds one entry for every id it has seen, a million and
//! more, and each segment one id per indicator. An id written as STIX
//! requires (`indicator--` and a UUID) is kept as the UUID's 16 bytes
//! rather than as 47 bytes of text on the heap. A general hash map stores
//! key and value in its buckets, and at a load factor just past a power of
//! two most buckets are empty: with a 48-byte entry that costs some 100
//! bytes per id. Here the entries live in a dense vector and the hash
//! table holds only their four-byte positions, about 58 bytes per id in
//! all.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// The prefix of every indicator id.
const PREFIX: &str = "indicator--";

/// An indicator's STIX id.
///
/// Ids of the form STIX requires, `indicator--` and a UUID in lower-case
/// hex, are held in 16 bytes; any other text is kept as it is, so that
/// every id reads back exactly as it was given.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IndicatorId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Uuid([u8; 16]),
    Text(Arc<str>),
}

impl IndicatorId {
    /// The id written as `text`.
    pub fn new(text: &str) -> IndicatorId {
        match uuid_bytes(text) {
            Some(bytes) => IndicatorId(Repr::Uuid(bytes)),
            None => IndicatorId(Repr::Text(text.into())),
        }
    }

    /// The id as text.
    pub fn to_arc(&self) -> Arc<str> {
        match &self.0 {
            Repr::Text(text) => Arc::clone(text),
            Repr::Uuid(_) => self.to_string().into(),
        }
    }
}

/// The 16 bytes of `indicator--` followed by a canonical lower-case UUID.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.strip_prefix(PREFIX)?;
    let uuid = uuid::Uuid::try_parse(text).ok()?;
    // Only the canonical form reads back as given: hyphens, lower case.
    let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let canonical = uuid.hyphenated().encode_lower(&mut buffer);
    (canonical == text).then(|| uuid.into_bytes())
}

impl fmt::Display for IndicatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Text(text) => f.write_str(text),
            Repr::Uuid(bytes) => {
                let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let uuid = uuid::Uuid::from_bytes(*bytes).hyphenated();
                f.write_str(PREFIX)?;
                f.write_str(uuid.encode_lower(&mut buffer))
            }
        }
    }
}

impl fmt::Debug for IndicatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl From<&str> for IndicatorId {
    fn from(text: &str) -> IndicatorId {
        IndicatorId::new(text)
    }
}

/// Ids to values, with entries stored densely.
pub(crate) struct IdTable<V> {
    entries: Vec<(IndicatorId, V)>,
    /// Positions in `entries`, found by the hash of the id.
    positions: HashTable<u32>,
    /// Seeded at random: ids come from feeds, which could choose
    /// colliding ones.
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for IdTable<V> {
    fn default() -> Self {
        IdTable {
            entries: Vec::new(),
            positions: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<V> IdTable<V> {
    /// Most ids the table can hold (positions are four bytes).
    pub(crate) const MAX_LEN: usize = u32::MAX as usize;

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    fn position(&self, id: &IndicatorId) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        let entries = &self.entries;
        self.positions
            .find(hash, |&at| entries[at as usize].0 == *id)
            .map(|&at| at as usize)
    }

    /// The value of `id`.
    pub(crate) fn get(&self, id: &IndicatorId) -> Option<&V> {
        self.position(id).map(|at| &self.entries[at].1)
    }

    /// The value of `id`, to change.
    pub(crate) fn get_mut(&mut self, id: &IndicatorId) -> Option<&mut V> {
        self.position(id).map(|at| &mut self.entries[at].1)
    }

    /// The value of `id`, made by `make` when the id is new. `None` when
    /// the id is new and the table already holds [`IdTable::MAX_LEN`] ids.
    pub(crate) fn get_or_insert_with(
        &mut self,
        id: &IndicatorId,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if let Some(at) = self.position(id) {
            return Some(&mut self.entries[at].1);
        }
        if self.entries.len() >= Self::MAX_LEN {
            return None;
        }
        let at = self.entries.len();
        self.entries.push((id.clone(), make()));
        let (entries, hasher) = (&self.entries, &self.hasher);
        let hash = hasher.hash_one(id);
        self.positions.insert_unique(hash, at as u32, |&p| {
            hasher.hash_one(&entries[p as usize].0)
        });
        Some(&mut self.entries[at].1)
    }

    /// Removes `id` and returns its value.
    pub(crate) fn remove(&mut self, id: &IndicatorId) -> Option<V> {
        let hash = self.hasher.hash_one(id);
        let entries = &self.entries;
        let found = self
            .positions
            .find_entry(hash, |&at| entries[at as usize].0 == *id)
            .ok()?;
        let (at, _) = found.remove();
        let at = at as usize;

        // The last entry moves into the freed place: repoint its position.
        let last = self.entries.len() - 1;
        if at != last {
            let moved = self.hasher.hash_one(&self.entries[last].0);
            let position = self
                .positions
                .find_mut(moved, |&p| p as usize == last)
                .expect("every entry's position is in the table");
            *position = at as u32;
        }
        Some(self.entries.swap_remove(at).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_finds_and_removes_with_positions_kept_right() {
        let mut table: IdTable<u32> = IdTable::default();
        let ids: Vec<IndicatorId> = (0..100)
            .map(|i| match i % 2 {
                0 => IndicatorId::new(&format!("indicator--id-{i}")),
                _ => IndicatorId::new(&format!("indicator--00000000-0000-4000-8000-{i:012}")),
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                table.get_or_insert_with(id, || i as u32),
                Some(&mut (i as u32))
            );
        }
        assert_eq!(table.values().count(), 100);
        // Removing from the front moves the last entries around.
        for id in ids.iter().take(50) {
            assert!(table.remove(id).is_some());
            assert!(table.remove(id).is_none());
        }
        assert_eq!(table.values().count(), 50);
        for (i, id) in ids.iter().enumerate() {
            let expected = (i >= 50).then_some(i as u32);
            assert_eq!(table.get(id).copied(), expected, "{id}");
        }
        let id = IndicatorId::new("indicator--id-70");
        if let Some(v) = table.get_mut(&id) {
            *v = 7;
        }
        assert_eq!(table.get(&id), Some(&7));
        assert_eq!(table.values().count(), 50);
    }

    #[test]
    fn uuid_ids_are_held_as_bytes_and_read_back_exactly() {
        let text = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
        let id = IndicatorId::new(text);
        assert!(matches!(id.0, Repr::Uuid(_)));
        assert_eq!(id.to_string(), text);
        assert_eq!(&*id.to_arc(), text);
        assert_eq!(id, IndicatorId::from(text));
        for other in [
            "indicator--8E2E2D2B-17D4-4CBF-938F-98EE46B3CD3F",
            "indicator--8e2e2d2b17d44cbf938f98ee46b3cd3f",
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3",
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3g",
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3fa",
            "malware--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "indicator--1",
            "indicator--é2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "",
        ] {
            let id = IndicatorId::new(other);
            assert!(matches!(id.0, Repr::Text(_)), "{other}");
            assert_eq!(id.to_string(), other);
        }
        assert_ne!(
            IndicatorId::new("indicator--8E2E2D2B-17D4-4CBF-938F-98EE46B3CD3F"),
            IndicatorId::new(text)
        );
        assert_eq!(std::mem::size_of::<IndicatorId>(), 24);
    }
}
