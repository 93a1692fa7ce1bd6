//! Watched key ranges and the in-memory index that matches an event's key to
//! the watchers interested in it.
//!
//! The index is what makes live fan-out cheap: matching one event never
//! touches the engine and costs `O(log n)` for single-key watchers plus one
//! step per *distinct* range whose start is `<= key` (watchers sharing a range
//! share one entry), plus one step per matching watcher.
//!
//! ```text
//! watchers                     index
//! w1: "a"          (one key)    exact  {"a" → {w1}}
//! w2: ["a", "b")   (prefix a)   ranges {"a" → {"b" → {w2, w3}}, "" → {∞ → {w4}}}
//! w3: ["a", "b")
//! w4: ["", ∞)      (from "")
//! event on "ab" → exact: none; ranges with start <= "ab": "" (∞ > "ab": w4),
//!                 "a" (ends > "ab": "b": w2, w3)             → {w2, w3, w4}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::WatcherId;

/// etcd's answer to a range whose end is not above its start.
pub const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// What a watcher watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum KeyRange {
    /// Exactly one key (etcd: empty `range_end`).
    Key(Vec<u8>),
    /// `[start, end)`; `end == None` is unbounded (etcd: `range_end == [0]`).
    Range {
        /// First key.
        start: Vec<u8>,
        /// Exclusive end, `None` for every key from `start` on.
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// The range of a `WatchCreateRequest`, or etcd's error for an empty one
    /// (`range_end` non-empty, not `[0]`, and `<= key`).
    pub(super) fn new(key: &[u8], range_end: &[u8]) -> Result<KeyRange, &'static str> {
        match range_end {
            [] => Ok(KeyRange::Key(key.to_vec())),
            [0] => Ok(KeyRange::Range {
                start: key.to_vec(),
                end: None,
            }),
            end if end <= key => Err(ERR_EMPTY_RANGE),
            end => Ok(KeyRange::Range {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            }),
        }
    }

    /// Whether `key` is watched.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Range { start, end } => {
                start.as_slice() <= key && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }
}

/// Watchers by key range. An unbounded end is stored as the empty vector,
/// which no bounded end can be (a bounded end is above its start, so it is
/// never empty).
#[derive(Debug, Default)]
pub(super) struct RangeIndex {
    exact: BTreeMap<Vec<u8>, BTreeSet<WatcherId>>,
    ranges: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, BTreeSet<WatcherId>>>,
    len: usize,
}

impl RangeIndex {
    /// Number of watchers indexed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds `id` watching `range`.
    ///
    /// # Panics
    /// `id` is already indexed under `range`.
    pub(super) fn insert(&mut self, range: &KeyRange, id: WatcherId) {
        let fresh = match range {
            KeyRange::Key(k) => self.exact.entry(k.clone()).or_default().insert(id),
            KeyRange::Range { start, end } => {
                let end = end.clone().unwrap_or_default();
                assert!(
                    !end.is_empty() || range_is_unbounded(range),
                    "a bounded end is never empty"
                );
                self.ranges
                    .entry(start.clone())
                    .or_default()
                    .entry(end)
                    .or_default()
                    .insert(id)
            }
        };
        assert!(fresh, "watcher {id:?} indexed twice under {range:?}");
        self.len += 1;
    }

    /// Removes `id` watching `range`.
    ///
    /// # Panics
    /// `id` is not indexed under `range`.
    pub(super) fn remove(&mut self, range: &KeyRange, id: WatcherId) {
        let found = match range {
            KeyRange::Key(k) => {
                let set = self.exact.get_mut(k.as_slice());
                let found = set.is_some_and(|s| s.remove(&id));
                if self.exact.get(k.as_slice()).is_some_and(BTreeSet::is_empty) {
                    self.exact.remove(k.as_slice());
                }
                found
            }
            KeyRange::Range { start, end } => {
                let end = end.clone().unwrap_or_default();
                let Some(ends) = self.ranges.get_mut(start.as_slice()) else {
                    panic!("watcher {id:?} not indexed under {range:?}");
                };
                let found = ends.get_mut(&end).is_some_and(|s| s.remove(&id));
                if ends.get(&end).is_some_and(BTreeSet::is_empty) {
                    ends.remove(&end);
                }
                if ends.is_empty() {
                    self.ranges.remove(start.as_slice());
                }
                found
            }
        };
        assert!(found, "watcher {id:?} not indexed under {range:?}");
        self.len -= 1;
    }

    /// Calls `f` once for every watcher whose range contains `key`.
    pub(super) fn for_each_match(&self, key: &[u8], mut f: impl FnMut(WatcherId)) {
        if let Some(set) = self.exact.get(key) {
            set.iter().copied().for_each(&mut f);
        }
        for (_start, ends) in self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
        {
            // Unbounded (stored as the empty end) contains every key >= start.
            if let Some(set) = ends.get([].as_slice()) {
                set.iter().copied().for_each(&mut f);
            }
            for (end, set) in ends.range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded)) {
                debug_assert!(!end.is_empty(), "the unbounded entry sorts first");
                set.iter().copied().for_each(&mut f);
            }
        }
    }
}

fn range_is_unbounded(range: &KeyRange) -> bool {
    matches!(range, KeyRange::Range { end: None, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(index: &RangeIndex, key: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        index.for_each_match(key, |id| out.push(id.0));
        out.sort_unstable();
        out
    }

    /// The module doc's worked example, plus removal.
    #[test]
    fn index_matches_exact_prefix_and_from_key() {
        let mut index = RangeIndex::default();
        let r = |k: &[u8], e: &[u8]| KeyRange::new(k, e).expect("non-empty");
        let ranges = [r(b"a", b""), r(b"a", b"b"), r(b"a", b"b"), r(b"", b"\x00")];
        for (i, range) in ranges.iter().enumerate() {
            index.insert(range, WatcherId(i as u64 + 1));
        }
        assert_eq!(matches(&index, b"ab"), vec![2, 3, 4]);
        assert_eq!(matches(&index, b"a"), vec![1, 2, 3, 4]);
        assert_eq!(matches(&index, b"b"), vec![4]);
        assert_eq!(matches(&index, b"\x00"), vec![4]);
        index.remove(&ranges[1], WatcherId(2));
        index.remove(&ranges[3], WatcherId(4));
        assert_eq!(matches(&index, b"a"), vec![1, 3]);
        assert_eq!(index.len(), 2);
    }

    /// etcd's empty-range rule: an end at or below the key is refused; `[0]`
    /// is "from key on".
    #[test]
    fn empty_ranges_are_refused() {
        assert_eq!(KeyRange::new(b"b", b"a"), Err(ERR_EMPTY_RANGE));
        assert_eq!(KeyRange::new(b"b", b"b"), Err(ERR_EMPTY_RANGE));
        assert!(KeyRange::new(b"b", b"\x00").is_ok());
        assert!(KeyRange::new(b"b", b"").is_ok());
        let from = KeyRange::new(b"b", b"\x00").expect("from key");
        assert!(from.contains(b"b") && from.contains(b"\xff\xff") && !from.contains(b"a"));
    }
}
