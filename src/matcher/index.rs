//! Lookup structures of one segment of the compiled indicator set.
//!
//! A [`FieldIndex`] holds every anchor on one object path (`file:name`,
//! `ipv4-addr:value`, `network-traffic:dst_ref.value`, …): exact values in a
//! hash map, IP networks in per-prefix-length hash maps, literal substrings
//! in one Aho-Corasick automaton, expressions without literals in a regex
//! set, and ordering constants in sorted vectors. Looking up one value
//! costs a few hash probes whatever the number of indicators.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use serde_json::Value;

use super::anchor::{AnchorKind, ExactKey, RangeKey, RangeOp};
use crate::eval::Reached;
use crate::pattern::ObjectPath;
use crate::pattern::validate::{hash_algorithm, is_binary_path};
use crate::stix::net::parse_ip_net;
use crate::stix::timestamp::Timestamp;

/// Hash maps keyed by values that events control use a randomly seeded
/// hasher, so crafted values cannot force collisions.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What an anchor points at: an index into the segment's leaf table.
pub(crate) type Target = u32;

/// The targets under one key, in four bytes: one target is stored as it
/// is; several are stored in the map's overflow lists, and the value is
/// [`MANY`] plus the list's index.
type Posting = u32;

/// Marks a [`Posting`] that names an overflow list. Targets stay below it
/// (a segment refuses to grow past [`MAX_TARGETS`] leaves).
const MANY: Posting = 1 << 31;

/// Most leaves one segment may hold, so that targets fit a [`Posting`].
pub(crate) const MAX_TARGETS: usize = MANY as usize;

/// A hash map with an optional membership filter in front of it.
///
/// Most lookups on the matching path miss: the value is in no indicator.
/// In a large map each miss is a cache miss on the table, so large maps get
/// a blocked Bloom filter (8 bits per key, two bits in one 64-bit word:
/// about 2% false positives) small enough to stay in cache, and a lookup
/// whose value fails the filter never touches the table.
pub(crate) struct FilteredMap<K> {
    map: FastMap<K, Posting>,
    /// Targets of the keys that have more than one.
    many: Vec<Vec<Target>>,
    filter: Option<Prefilter>,
}

/// Maps smaller than this get no filter: their tables stay in cache anyway.
const FILTER_MIN_KEYS: usize = 4096;

impl<K: std::hash::Hash + Eq> FilteredMap<K> {
    fn new() -> FilteredMap<K> {
        FilteredMap {
            map: FastMap::default(),
            many: Vec::new(),
            filter: None,
        }
    }

    fn post(&mut self, key: K, target: Target) {
        debug_assert!(target < MANY, "targets stay below the overflow mark");
        match self.map.get_mut(&key) {
            None => {
                self.map.insert(key, target);
            }
            Some(posting) if *posting & MANY != 0 => {
                self.many[(*posting & !MANY) as usize].push(target);
            }
            Some(posting) => {
                let list = self.many.len() as Posting | MANY;
                self.many.push(vec![*posting, target]);
                *posting = list;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Releases spare capacity and builds the filter once every key is in.
    fn finish(&mut self) {
        self.map.shrink_to_fit();
        self.many.shrink_to_fit();
        self.many.iter_mut().for_each(Vec::shrink_to_fit);
        if self.map.len() >= FILTER_MIN_KEYS {
            let mut filter = Prefilter::with_keys(self.map.len());
            for key in self.map.keys() {
                filter.insert(key);
            }
            self.filter = Some(filter);
        }
    }

    /// Posts every key of `other` under the targets `renumber` maps its
    /// targets to, calling `posted` with each key posted at least once.
    fn absorb(
        &mut self,
        other: &FilteredMap<K>,
        renumber: &impl Fn(Target) -> Option<Target>,
        mut posted: impl FnMut(&K),
    ) where
        K: Clone,
    {
        for (key, targets) in other.entries() {
            let mut live = targets.iter().filter_map(|&t| renumber(t)).peekable();
            if live.peek().is_some() {
                posted(key);
            }
            for t in live {
                self.post(key.clone(), t);
            }
        }
    }

    /// Every key with its targets.
    fn entries(&self) -> impl Iterator<Item = (&K, &[Target])> {
        self.map.iter().map(|(key, posting)| {
            let targets = if posting & MANY == 0 {
                std::slice::from_ref(posting)
            } else {
                self.many
                    .get((posting & !MANY) as usize)
                    .map_or(&[][..], Vec::as_slice)
            };
            (key, targets)
        })
    }

    /// The targets posted under `key`.
    fn get<Q>(&self, key: &Q) -> Option<&[Target]>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(filter) = &self.filter {
            if !filter.may_contain(key) {
                return None;
            }
        }
        let posting = self.map.get(key)?;
        if posting & MANY == 0 {
            Some(std::slice::from_ref(posting))
        } else {
            self.many.get((posting & !MANY) as usize).map(Vec::as_slice)
        }
    }
}

/// A blocked Bloom filter: each key sets two bits of one 64-bit word.
struct Prefilter {
    words: Box<[u64]>,
    mask: u64,
    hasher: foldhash::fast::FixedState,
}

impl Prefilter {
    fn with_keys(keys: usize) -> Prefilter {
        let words = (keys * 8 / 64).next_power_of_two().max(1);
        use std::hash::BuildHasher as _;
        let seed = foldhash::fast::RandomState::default().hash_one(0u8);
        Prefilter {
            words: vec![0; words].into_boxed_slice(),
            mask: words as u64 - 1,
            hasher: foldhash::fast::FixedState::with_seed(seed),
        }
    }

    fn bits<Q: std::hash::Hash + ?Sized>(&self, key: &Q) -> (usize, u64) {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(key);
        let word = (h & self.mask) as usize;
        let bits = (1u64 << ((h >> 40) & 63)) | (1u64 << ((h >> 50) & 63));
        (word, bits)
    }

    fn insert<Q: std::hash::Hash + ?Sized>(&mut self, key: &Q) {
        let (word, bits) = self.bits(key);
        self.words[word] |= bits;
    }

    fn may_contain<Q: std::hash::Hash + ?Sized>(&self, key: &Q) -> bool {
        let (word, bits) = self.bits(key);
        self.words[word] & bits == bits
    }
}

/// How values of a path are read for lookups.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reading {
    Plain,
    HexDigest,
    HexBytes,
    Base64Bytes,
}

/// Every anchor on one object path.
pub(crate) struct FieldIndex {
    pub path: ObjectPath,
    reading: Reading,
    /// Exact string keys, apart so that lookups can borrow the value.
    exact_str: FilteredMap<Box<str>>,
    exact: FilteredMap<ExactKey>,
    wants_time: bool,
    wants_bytes: bool,
    /// IPv4 networks by prefix length, longest first.
    ip4: Vec<(u8, FilteredMap<u32>)>,
    /// IPv6 networks by prefix length, longest first, keyed by the
    /// address's two halves (eight-byte alignment keeps the entries small).
    ip6: Vec<(u8, FilteredMap<[u64; 2]>)>,
    ip_contains: Vec<(IpNet, Target)>,
    /// Literal runs of `LIKE` and `MATCHES`, kept beside the automaton
    /// built from them for merges (they are few).
    substrings: Vec<(Box<[u8]>, Target)>,
    automaton: Option<(AhoCorasick, Vec<Vec<Target>>)>,
    /// Expressions without a literal run (and whether they read binary
    /// values), kept beside the sets built from them for merges.
    regexes: Vec<(String, bool, Target)>,
    regex_text: Option<(regex::RegexSet, Vec<Target>)>,
    regex_bytes: Option<(regex::bytes::RegexSet, Vec<Target>)>,
    ranges: RangeIndex,
    exists: Vec<Target>,
}

#[derive(Default)]
struct RangeIndex {
    num: [Vec<(f64, Target)>; 4],
    text: [Vec<(Box<str>, Target)>; 4],
    time: [Vec<(i128, Target)>; 4],
}

fn op_slot(op: RangeOp) -> usize {
    match op {
        RangeOp::Lt => 0,
        RangeOp::Le => 1,
        RangeOp::Gt => 2,
        RangeOp::Ge => 3,
    }
}

impl FieldIndex {
    pub(crate) fn new(path: ObjectPath) -> FieldIndex {
        let reading = if is_binary_path(&path) {
            let hex = path.steps.iter().rev().find_map(|s| match s {
                crate::pattern::PathStep::Key(k) => Some(k.ends_with("_hex")),
                _ => None,
            });
            if hex == Some(true) {
                Reading::HexBytes
            } else {
                Reading::Base64Bytes
            }
        } else if hash_algorithm(&path).is_some() {
            Reading::HexDigest
        } else {
            Reading::Plain
        };
        FieldIndex {
            path,
            reading,
            exact_str: FilteredMap::new(),
            exact: FilteredMap::new(),
            wants_time: false,
            wants_bytes: false,
            ip4: Vec::new(),
            ip6: Vec::new(),
            ip_contains: Vec::new(),
            substrings: Vec::new(),
            automaton: None,
            regexes: Vec::new(),
            regex_text: None,
            regex_bytes: None,
            ranges: RangeIndex::default(),
            exists: Vec::new(),
        }
    }

    /// Adds one anchor.
    pub(crate) fn add(&mut self, kind: &AnchorKind, target: Target) {
        match kind {
            AnchorKind::Exact(ExactKey::Str(s)) => self.exact_str.post(s.clone(), target),
            AnchorKind::Exact(key) => {
                self.wants_time |= matches!(key, ExactKey::Time(_));
                self.wants_bytes |= matches!(key, ExactKey::Bytes(_));
                self.exact.post(key.clone(), target);
            }
            AnchorKind::IpWithin(IpNet::V4(net)) => {
                let map = by_prefix(&mut self.ip4, net.prefix_len());
                map.post(u32::from(net.network()), target);
            }
            AnchorKind::IpWithin(IpNet::V6(net)) => {
                let map = by_prefix(&mut self.ip6, net.prefix_len());
                map.post(halves(u128::from(net.network())), target);
            }
            AnchorKind::IpContains(net) => self.ip_contains.push((*net, target)),
            AnchorKind::Substring(bytes) => self.substrings.push((bytes.clone(), target)),
            AnchorKind::Regex { pattern, binary } => {
                self.regexes.push((pattern.clone(), *binary, target))
            }
            AnchorKind::Range(op, key) => {
                let slot = op_slot(*op);
                match key {
                    RangeKey::Num(n) => self.ranges.num[slot].push((*n, target)),
                    RangeKey::Str(s) => self.ranges.text[slot].push((s.clone(), target)),
                    RangeKey::Time(t) => self.ranges.time[slot].push((*t, target)),
                }
            }
            AnchorKind::Exists => self.exists.push(target),
        }
    }

    /// Builds the filters, automata and regex sets and sorts the ranges
    /// once every anchor is in; drops prefix maps left empty and spare
    /// capacity. `regex_size_limit` bounds the compiled size of each regex
    /// set.
    ///
    /// # Errors
    ///
    /// Fails when an automaton or regex set exceeds its size limit.
    pub(crate) fn finish(&mut self, regex_size_limit: usize) -> Result<(), String> {
        // A merge may leave prefix lengths with no network.
        self.ip4.retain(|(_, map)| !map.is_empty());
        self.ip6.retain(|(_, map)| !map.is_empty());
        self.exact_str.finish();
        self.exact.finish();
        for (_, map) in self.ip4.iter_mut() {
            map.finish();
        }
        for (_, map) in self.ip6.iter_mut() {
            map.finish();
        }
        if !self.substrings.is_empty() {
            let mut grouped: BTreeMap<&[u8], Vec<Target>> = BTreeMap::new();
            for (bytes, target) in &self.substrings {
                grouped.entry(bytes).or_default().push(*target);
            }
            let (needles, targets): (Vec<_>, Vec<_>) = grouped.into_iter().unzip();
            let automaton = AhoCorasick::new(&needles).map_err(|e| e.to_string())?;
            self.automaton = Some((automaton, targets));
        }
        let (text, bytes): (Vec<_>, Vec<_>) = self.regexes.iter().partition(|r| !r.1);
        if !text.is_empty() {
            let patterns: Vec<String> = text.iter().map(|r| crate::eval::nfc(&r.0)).collect();
            let set = regex::RegexSetBuilder::new(patterns)
                .dot_matches_new_line(true)
                .size_limit(regex_size_limit)
                .build()
                .map_err(|e| e.to_string())?;
            self.regex_text = Some((set, text.iter().map(|r| r.2).collect()));
        }
        if !bytes.is_empty() {
            let set = regex::bytes::RegexSetBuilder::new(bytes.iter().map(|r| r.0.as_str()))
                .unicode(false)
                .dot_matches_new_line(true)
                .size_limit(regex_size_limit)
                .build()
                .map_err(|e| e.to_string())?;
            self.regex_bytes = Some((set, bytes.iter().map(|r| r.2).collect()));
        }
        for v in &mut self.ranges.num {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        for v in &mut self.ranges.text {
            v.sort_by(|a, b| a.0.cmp(&b.0));
        }
        for v in &mut self.ranges.time {
            v.sort_by_key(|e| e.0);
        }
        self.shrink();
        Ok(())
    }

    /// Releases the spare capacity of the lists (a merge grows them by
    /// pushing).
    fn shrink(&mut self) {
        self.ip_contains.shrink_to_fit();
        self.substrings.shrink_to_fit();
        self.regexes.shrink_to_fit();
        self.exists.shrink_to_fit();
        let ranges = &mut self.ranges;
        ranges.num.iter_mut().for_each(Vec::shrink_to_fit);
        ranges.text.iter_mut().for_each(Vec::shrink_to_fit);
        ranges.time.iter_mut().for_each(Vec::shrink_to_fit);
    }

    /// True when the index holds no anchor.
    pub(crate) fn is_empty(&self) -> bool {
        let ranges = &self.ranges;
        self.exact_str.is_empty()
            && self.exact.is_empty()
            && self.ip4.iter().all(|(_, map)| map.is_empty())
            && self.ip6.iter().all(|(_, map)| map.is_empty())
            && self.ip_contains.is_empty()
            && self.substrings.is_empty()
            && self.regexes.is_empty()
            && ranges.num.iter().all(Vec::is_empty)
            && ranges.text.iter().all(Vec::is_empty)
            && ranges.time.iter().all(Vec::is_empty)
            && self.exists.is_empty()
    }

    /// Adds every anchor of `other` (an index of the same path, of
    /// another segment) whose target `renumber` maps, under the target it
    /// maps to; [`FieldIndex::finish`] is still to be called.
    pub(crate) fn absorb(
        &mut self,
        other: &FieldIndex,
        renumber: impl Fn(Target) -> Option<Target>,
    ) {
        debug_assert_eq!(self.path, other.path, "an index absorbs only its own path");
        self.exact_str.absorb(&other.exact_str, &renumber, |_| {});
        let (wants_time, wants_bytes) = (&mut self.wants_time, &mut self.wants_bytes);
        self.exact.absorb(&other.exact, &renumber, |key| {
            *wants_time |= matches!(key, ExactKey::Time(_));
            *wants_bytes |= matches!(key, ExactKey::Bytes(_));
        });
        for (len, map) in &other.ip4 {
            by_prefix(&mut self.ip4, *len).absorb(map, &renumber, |_| {});
        }
        for (len, map) in &other.ip6 {
            by_prefix(&mut self.ip6, *len).absorb(map, &renumber, |_| {});
        }
        absorb_list(&mut self.ip_contains, &other.ip_contains, &renumber);
        absorb_list(&mut self.substrings, &other.substrings, &renumber);
        for (pattern, binary, target) in &other.regexes {
            if let Some(t) = renumber(*target) {
                self.regexes.push((pattern.clone(), *binary, t));
            }
        }
        let ranges = self.ranges.num.iter_mut().zip(&other.ranges.num);
        ranges.for_each(|(into, from)| absorb_list(into, from, &renumber));
        let ranges = self.ranges.text.iter_mut().zip(&other.ranges.text);
        ranges.for_each(|(into, from)| absorb_list(into, from, &renumber));
        let ranges = self.ranges.time.iter_mut().zip(&other.ranges.time);
        ranges.for_each(|(into, from)| absorb_list(into, from, &renumber));
        let exists = other.exists.iter().filter_map(|&t| renumber(t));
        self.exists.extend(exists);
    }

    /// Appends the targets whose anchors hit on `reached` to `out`.
    pub(crate) fn lookup(&self, reached: &Reached<'_>, out: &mut Vec<Target>) {
        out.extend_from_slice(&self.exists);
        match self.reading {
            Reading::HexBytes | Reading::Base64Bytes => {
                if let Some(bytes) = self.decode(reached.value) {
                    if let Some(p) = self.exact.get(&ExactKey::Bytes(bytes.as_slice().into())) {
                        out.extend_from_slice(p);
                    }
                    self.scan_bytes(&bytes, out);
                }
                return;
            }
            Reading::Plain | Reading::HexDigest => {}
        }
        match reached.value {
            Value::String(s) => self.lookup_str(s.as_str(), out),
            Value::Number(n) => {
                let key = if let Some(i) = n.as_i64() {
                    ExactKey::Int(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    ExactKey::Int(i128::from(u))
                } else {
                    ExactKey::from_f64(n.as_f64().unwrap_or(f64::NAN))
                };
                if let Some(p) = self.exact.get(&key) {
                    out.extend_from_slice(p);
                }
                if let Some(f) = n.as_f64() {
                    range_scan(&self.ranges.num, &f, |a, b| a.total_cmp(b), out);
                }
            }
            &Value::Bool(b) => {
                if let Some(p) = self.exact.get(&ExactKey::Bool(b)) {
                    out.extend_from_slice(p);
                }
            }
            _ => {}
        }
    }

    fn lookup_str(&self, s: &str, out: &mut Vec<Target>) {
        let probe = |key: &ExactKey, out: &mut Vec<Target>| {
            if let Some(p) = self.exact.get(key) {
                out.extend_from_slice(p);
            }
        };
        if !self.exact_str.is_empty() {
            // A fold without early exit: it runs over whole vector words.
            let found = if self.reading == Reading::HexDigest
                && s.bytes().fold(false, |up, b| up | b.is_ascii_uppercase())
            {
                self.exact_str.get(s.to_ascii_lowercase().as_str())
            } else {
                self.exact_str.get(s)
            };
            if let Some(p) = found {
                out.extend_from_slice(p);
            }
        }
        if self.wants_bytes {
            let latin1: Option<Vec<u8>> =
                s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
            if let Some(bytes) = latin1 {
                probe(&ExactKey::Bytes(bytes.into()), out);
            }
        }
        let time = if self.wants_time || self.ranges.time.iter().any(|v| !v.is_empty()) {
            Timestamp::parse_rfc3339(s).ok().map(|t| t.unix_nanos())
        } else {
            None
        };
        if let Some(t) = time {
            probe(&ExactKey::Time(t), out);
            range_scan(&self.ranges.time, &t, |a, b| a.cmp(b), out);
        }
        if !self.ip4.is_empty() || !self.ip6.is_empty() || !self.ip_contains.is_empty() {
            if let Some(net) = parse_ip_net(s) {
                self.lookup_ip(&net, out);
            }
        }
        if self.automaton.is_some() || self.regex_text.is_some() || self.regex_bytes.is_some() {
            let text = if s.is_ascii() {
                std::borrow::Cow::Borrowed(s)
            } else {
                crate::eval::nfc(s).into()
            };
            self.scan_bytes(text.as_bytes(), out);
            if let Some((set, targets)) = &self.regex_text {
                out.extend(set.matches(&text).iter().map(|i| targets[i]));
            }
        }
        if self.ranges.text.iter().any(|v| !v.is_empty()) {
            let key: Box<str> = s.into();
            range_scan(&self.ranges.text, &key, |a, b| a.cmp(b), out);
        }
    }

    fn lookup_ip(&self, net: &IpNet, out: &mut Vec<Target>) {
        match net {
            IpNet::V4(v4) => {
                let addr = u32::from(v4.network());
                for (len, map) in self.ip4.iter().filter(|(len, _)| *len <= v4.prefix_len()) {
                    let len = *len;
                    let mask = if len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(len))
                    };
                    if let Some(p) = map.get(&(addr & mask)) {
                        out.extend_from_slice(p);
                    }
                }
            }
            IpNet::V6(v6) => {
                let addr = u128::from(v6.network());
                for (len, map) in self.ip6.iter().filter(|(len, _)| *len <= v6.prefix_len()) {
                    let len = *len;
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(len))
                    };
                    if let Some(p) = map.get(&halves(addr & mask)) {
                        out.extend_from_slice(p);
                    }
                }
            }
        }
        for (lit, target) in &self.ip_contains {
            if net.contains(lit) {
                out.push(*target);
            }
        }
    }

    fn scan_bytes(&self, haystack: &[u8], out: &mut Vec<Target>) {
        if let Some((automaton, targets)) = &self.automaton {
            for m in automaton.find_overlapping_iter(haystack) {
                out.extend_from_slice(&targets[m.pattern().as_usize()]);
            }
        }
        if let Some((set, targets)) = &self.regex_bytes {
            out.extend(set.matches(haystack).iter().map(|i| targets[i]));
        }
    }

    fn decode(&self, value: &Value) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let text = value.as_str()?;
        match self.reading {
            Reading::HexBytes => {
                if text.len() % 2 != 0 {
                    return None;
                }
                (0..text.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                    .collect()
            }
            _ => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        }
    }
}

/// Appends the entries of `from` whose targets `renumber` maps, under
/// the targets they map to.
fn absorb_list<K: Clone>(
    into: &mut Vec<(K, Target)>,
    from: &[(K, Target)],
    renumber: &impl Fn(Target) -> Option<Target>,
) {
    into.extend(
        from.iter()
            .filter_map(|(key, target)| Some((key.clone(), renumber(*target)?))),
    );
}

/// An IPv6 address as its high and low 64 bits.
fn halves(addr: u128) -> [u64; 2] {
    [(addr >> 64) as u64, addr as u64]
}

/// The map for prefix length `len`, kept sorted longest first.
fn by_prefix<K: std::hash::Hash + Eq>(
    maps: &mut Vec<(u8, FilteredMap<K>)>,
    len: u8,
) -> &mut FilteredMap<K> {
    let at = match maps.binary_search_by(|(l, _)| len.cmp(l)) {
        Ok(at) => at,
        Err(at) => {
            maps.insert(at, (len, FilteredMap::new()));
            at
        }
    };
    &mut maps[at].1
}

/// Appends the targets of every ordering constant that `value` may satisfy:
/// for `<` and `<=` the constants at or above it, for `>` and `>=` those at
/// or below it (boundaries included; the verifier decides).
fn range_scan<K>(
    by_op: &[Vec<(K, Target)>; 4],
    value: &K,
    cmp: impl Fn(&K, &K) -> std::cmp::Ordering,
    out: &mut Vec<Target>,
) {
    use std::cmp::Ordering;
    for (slot, entries) in by_op.iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        let below_or_at = entries.partition_point(|(k, _)| cmp(k, value) != Ordering::Greater);
        let above_or_at = entries.partition_point(|(k, _)| cmp(k, value) == Ordering::Less);
        let hits = if slot < 2 {
            &entries[above_or_at..]
        } else {
            &entries[..below_or_at]
        };
        out.extend(hits.iter().map(|(_, t)| *t));
    }
}
