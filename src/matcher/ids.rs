//! A compact map from indicator ids to what the catalog knows of them.
//!
//! The catalog holds one entry for every id it has seen, a million and
//! more. A general hash map stores key and value in its buckets, and at a
//! load factor just past a power of two most buckets are empty: with a
//! 40-byte entry that costs some 85 bytes per id. Here the entries live in
//! a dense vector and the hash table holds only their four-byte positions,
//! about 50 bytes per id in all.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// Ids to values, with entries stored densely.
pub(crate) struct IdTable<V> {
    entries: Vec<(Arc<str>, V)>,
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

    fn position(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        let entries = &self.entries;
        self.positions
            .find(hash, |&at| &*entries[at as usize].0 == id)
            .map(|&at| at as usize)
    }

    /// The value of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&V> {
        self.position(id).map(|at| &self.entries[at].1)
    }

    /// The value of `id`, to change.
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.position(id).map(|at| &mut self.entries[at].1)
    }

    /// The value of `id`, made by `make` when the id is new. `None` when
    /// the id is new and the table already holds [`IdTable::MAX_LEN`] ids.
    pub(crate) fn get_or_insert_with(
        &mut self,
        id: &Arc<str>,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if let Some(at) = self.position(id) {
            return Some(&mut self.entries[at].1);
        }
        if self.entries.len() >= Self::MAX_LEN {
            return None;
        }
        let at = self.entries.len();
        self.entries.push((Arc::clone(id), make()));
        let (entries, hasher) = (&self.entries, &self.hasher);
        let hash = hasher.hash_one(&**id);
        self.positions.insert_unique(hash, at as u32, |&p| {
            hasher.hash_one(&*entries[p as usize].0)
        });
        Some(&mut self.entries[at].1)
    }

    /// Removes `id` and returns its value.
    pub(crate) fn remove(&mut self, id: &str) -> Option<V> {
        let hash = self.hasher.hash_one(id);
        let entries = &self.entries;
        let found = self
            .positions
            .find_entry(hash, |&at| &*entries[at as usize].0 == id)
            .ok()?;
        let (at, _) = found.remove();
        let at = at as usize;

        // The last entry moves into the freed place: repoint its position.
        let last = self.entries.len() - 1;
        if at != last {
            let moved = self.hasher.hash_one(&*self.entries[last].0);
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
        let ids: Vec<Arc<str>> = (0..100).map(|i| format!("id-{i}").into()).collect();
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
        if let Some(v) = table.get_mut("id-70") {
            *v = 7;
        }
        assert_eq!(table.get("id-70"), Some(&7));
        assert_eq!(table.values().count(), 50);
    }
}
