//! Reading keys: key forms, reads at the current revision (optionally through
//! a txn's own pending writes) and at past revisions, and etcd's range
//! post-processing (filters, sort, limit, `keys_only`, `count_only`).
//!
//! etcd serves a range in two steps (applierV3backend.Range over
//! mvcc rangeKeys), and so do we:
//! 1. fetch: every key of the range that exists at the read revision is
//!    *counted*; the first `limit + 1` of them in key order are
//!    *materialised*, unless the request sorts (`sort_order != NONE`) or
//!    filters by min/max revision, in which case all are;
//! 2. finish: filter, sort, truncate to `limit` (setting `more`), clear values
//!    for `keys_only`.
//!
//! Step 1's cut-off is observable: `sort_target = VERSION` with
//! `sort_order = NONE` and `limit = 2` sorts only the first 3 keys by key
//! order, not the whole range (checked against etcd 3.4.23).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use prost::Message;

use super::keys::{self, VersionRecord};
use crate::engine::{EngineError, KvRead};
use crate::kv::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};

/// The key set named by `(key, range_end)` in etcd requests.
///
/// `range_end` empty → the single `key`; `range_end == [0]` → every key
/// `>= key`; otherwise `[key, range_end)`, empty (not an error) when
/// `range_end <= key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// Exactly this key.
    Single(&'a [u8]),
    /// Every key at or after this one.
    From(&'a [u8]),
    /// `[start, end)`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Interprets etcd's `(key, range_end)` pair.
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// Whether `k` is in the set.
    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(start) => k >= start,
            KeyRange::Between(start, end) => start <= k && k < end,
        }
    }

    /// Whether the set is empty by construction (`range_end <= key`).
    fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Between(start, end) if end <= start)
    }

    /// The part of `map` inside the set.
    fn of_map<'m, V>(
        &self,
        map: &'m BTreeMap<Vec<u8>, V>,
    ) -> impl Iterator<Item = (&'m Vec<u8>, &'m V)> {
        let (lo, hi): (Bound<&[u8]>, Bound<&[u8]>) = match *self {
            _ if self.is_empty() => (Bound::Included(&[]), Bound::Excluded(&[])),
            KeyRange::Single(k) => (Bound::Included(k), Bound::Included(k)),
            KeyRange::From(k) => (Bound::Included(k), Bound::Unbounded),
            KeyRange::Between(s, e) => (Bound::Included(s), Bound::Excluded(e)),
        };
        map.range::<[u8], _>((lo, hi))
    }
}

/// A txn's writes so far, by key: `Some(kv)` written, `None` deleted. Reads
/// inside the txn at its own revision see these instead of the engine.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<KeyValue>>;

/// How many kvs step 1 must materialise for `req` (`None` = all); it always
/// counts all. Mirrors etcd: `limit + 1` so `more` can be told, unless
/// sorting or filtering needs every key first.
pub(crate) fn fetch_limit(req: &RangeRequest) -> Option<usize> {
    if req.count_only {
        return Some(0);
    }
    let filters = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if req.sort_order != SortOrder::None as i32 || filters || req.limit <= 0 {
        return None;
    }
    Some(
        usize::try_from(req.limit)
            .expect("limit > 0 fits usize")
            .saturating_add(1),
    )
}

/// What step 1 produced: the first `fetch` kvs in key order and the count of
/// all keys in the range.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) kvs: Vec<KeyValue>,
    pub(crate) count: usize,
}

impl Fetched {
    fn offer(
        &mut self,
        fetch: Option<usize>,
        kv: impl FnOnce() -> Result<KeyValue, EngineError>,
    ) -> Result<(), EngineError> {
        if fetch.is_none_or(|n| self.kvs.len() < n) {
            self.kvs.push(kv()?);
        }
        self.count += 1;
        Ok(())
    }
}

fn decode_version(bytes: &[u8], what: &dyn Fn() -> String) -> Result<VersionRecord, EngineError> {
    VersionRecord::decode(bytes)
        .map_err(|e| EngineError(format!("mvcc: undecodable record {}: {e}", what())))
}

/// Decodes a `c` record of `key` into a [`KeyValue`], checking the invariants
/// its writer asserted.
pub(crate) fn decode_current(key: &[u8], bytes: &[u8]) -> Result<KeyValue, EngineError> {
    let r = decode_version(bytes, &|| format!("c {key:?}"))?;
    if r.tombstone || r.version < 1 || r.create_revision > r.mod_revision || r.create_revision < 1 {
        return Err(EngineError(format!(
            "mvcc: corrupt live record of {key:?}: {r:?}"
        )));
    }
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: r.create_revision,
        mod_revision: r.mod_revision,
        version: r.version,
        value: r.value,
        lease: r.lease,
    })
}

/// Decodes an `h` record of `key` at `rev`: `None` for a tombstone.
pub(crate) fn decode_history(
    key: &[u8],
    rev: keys::Rev,
    bytes: &[u8],
) -> Result<Option<KeyValue>, EngineError> {
    let r = decode_version(bytes, &|| format!("h {key:?}@{rev:?}"))?;
    if r.mod_revision != rev.main {
        return Err(EngineError(format!(
            "mvcc: history record of {key:?} at {rev:?} says mod_revision {}",
            r.mod_revision
        )));
    }
    if r.tombstone {
        return Ok(None);
    }
    if r.version < 1 || r.create_revision > r.mod_revision || r.create_revision < 1 {
        return Err(EngineError(format!(
            "mvcc: corrupt history record of {key:?} at {rev:?}: {r:?}"
        )));
    }
    Ok(Some(KeyValue {
        key: key.to_vec(),
        create_revision: r.create_revision,
        mod_revision: r.mod_revision,
        version: r.version,
        value: r.value,
        lease: r.lease,
    }))
}

/// The live kv of `key` at the current revision, `overlay` first.
pub(crate) fn get_current<R: KvRead>(
    view: &R,
    overlay: &Overlay,
    key: &[u8],
) -> Result<Option<KeyValue>, EngineError> {
    if let Some(state) = overlay.get(key) {
        return Ok(state.clone());
    }
    match view.get(&keys::current_key(key))? {
        Some(bytes) => decode_current(key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Step 1 at the current revision: the `c` space merged with `overlay`
/// (the overlay wins on equal keys; its `None` entries hide engine keys).
pub(crate) fn read_current<R: KvRead>(
    view: &R,
    overlay: &Overlay,
    kr: KeyRange<'_>,
    fetch: Option<usize>,
) -> Result<Fetched, EngineError> {
    let mut out = Fetched::default();
    if kr.is_empty() {
        return Ok(out);
    }
    if let KeyRange::Single(key) = kr {
        if let Some(kv) = get_current(view, overlay, key)? {
            out.offer(fetch, || Ok(kv))?;
        }
        return Ok(out);
    }
    let start = keys::current_key(match kr {
        KeyRange::From(s) | KeyRange::Between(s, _) | KeyRange::Single(s) => s,
    });
    let end = match kr {
        KeyRange::Between(_, e) => keys::current_key(e),
        _ => keys::current_space_end(),
    };
    let mut engine = view.scan(&start, Some(&end)).peekable();
    let mut pending = kr.of_map(overlay).peekable();
    loop {
        // Pick the smaller key of the two streams; equal keys: overlay wins.
        let take_engine = match (engine.peek(), pending.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => true,
            (Some(Ok((ek, _))), Some((pk, _))) => keys::parse_current_key(ek)? < pk.as_slice(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_engine {
            let (ek, ev) = engine.next().expect("peeked")?;
            let key = keys::parse_current_key(&ek)?;
            out.offer(fetch, || decode_current(key, &ev))?;
        } else {
            let (pk, state) = pending.next().expect("peeked");
            if let Some(Ok((ek, _))) = engine.peek() {
                if keys::parse_current_key(ek)? == pk.as_slice() {
                    engine.next();
                }
            }
            if let Some(kv) = state {
                out.offer(fetch, || Ok(kv.clone()))?;
            }
        }
    }
    Ok(out)
}

/// Step 1 at a past revision `rev` (`1 <= rev`), from the `h` space: per key,
/// the newest record with main revision `<= rev`, if it is not a tombstone.
pub(crate) fn read_at<R: KvRead>(
    view: &R,
    kr: KeyRange<'_>,
    rev: i64,
    fetch: Option<usize>,
) -> Result<Fetched, EngineError> {
    assert!(rev >= 1, "historical read at revision {rev}");
    let mut out = Fetched::default();
    if kr.is_empty() {
        return Ok(out);
    }
    if let KeyRange::Single(key) = kr {
        // One seek: the first record at or after the seek key, if still this key's.
        let seek = keys::history_seek(key, rev);
        let end = keys::history_key_end(key);
        if let Some(item) = view.scan(&seek, Some(&end)).next() {
            let (hk, hv) = item?;
            let (_, at) = keys::split_history_key(&hk)?;
            assert!(at.main <= rev, "seek for {key:?}@{rev} landed on {at:?}");
            if let Some(kv) = decode_history(key, at, &hv)? {
                out.offer(fetch, || Ok(kv))?;
            }
        }
        return Ok(out);
    }
    let (start, end) = match kr {
        KeyRange::From(s) => (keys::history_prefix(s), keys::history_space_end()),
        KeyRange::Between(s, e) => (keys::history_prefix(s), keys::history_prefix(e)),
        KeyRange::Single(_) => unreachable!("handled above"),
    };
    // One pass over the history of the range: cost is the number of retained
    // versions in it. The newest record <= rev of each key is the first such
    // record met (records are newest first per key).
    let mut done_with: Option<Vec<u8>> = None;
    for item in view.scan(&start, Some(&end)) {
        let (hk, hv) = item?;
        let (head, at) = keys::split_history_key(&hk)?;
        if done_with.as_deref() == Some(head) || at.main > rev {
            continue;
        }
        done_with = Some(head.to_vec());
        let (key, _) = keys::unescape(&head[1..])?;
        if let Some(kv) = decode_history(&key, at, &hv)? {
            out.offer(fetch, || Ok(kv))?;
        }
    }
    Ok(out)
}

fn sort_key_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// Step 2: filters, sort, limit, `keys_only`, `count_only`; `header_revision`
/// goes into the response as is.
///
/// Sorting: a target other than KEY with order NONE sorts ascending; KEY with
/// NONE or ASCEND keeps the fetched key order. The sort is stable, so ties
/// stay in key order (descending keeps ties in ascending key order too, as
/// etcd's small-slice insertion sort does).
///
/// # Panics
/// Sort enums out of range (callers validate first, [`super::validate_range`]).
pub(crate) fn finish(req: &RangeRequest, fetched: Fetched, header_revision: i64) -> RangeResponse {
    let Fetched { mut kvs, count } = fetched;
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    let target = SortTarget::try_from(req.sort_target).expect("sort target validated");
    let mut order = SortOrder::try_from(req.sort_order).expect("sort order validated");
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => {
            if target != SortTarget::Key {
                kvs.sort_by(|a, b| sort_key_cmp(target, a, b));
            }
        }
        SortOrder::Descend => kvs.sort_by(|a, b| sort_key_cmp(target, b, a)),
    }
    let mut more = false;
    if req.limit > 0 {
        let limit = usize::try_from(req.limit).expect("limit > 0 fits usize");
        if kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        revision: header_revision,
        kvs,
        more,
        count: i64::try_from(count).expect("key count fits i64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, version: i64, create: i64, modr: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modr,
            version,
            value: value.into(),
            lease: 0,
        }
    }

    /// The three key forms, including `range_end < key` (empty, no error).
    #[test]
    fn key_forms() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::From(b"a"));
        assert_eq!(KeyRange::new(b"a", b"c"), KeyRange::Between(b"a", b"c"));
        assert!(KeyRange::new(b"b", b"a").is_empty());
        assert!(KeyRange::new(b"b", b"b").is_empty());
        assert!(!KeyRange::new(b"b", b"").is_empty());
        assert!(KeyRange::new(b"\0", b"\0").contains(b"\0"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"\xff\xff"));
        assert!(!KeyRange::new(b"b", b"\0").contains(b"a"));
        assert!(KeyRange::new(b"a", b"c").contains(b"b\0"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(!KeyRange::new(b"a", b"").contains(b"a\0"));
        let mut m = Overlay::new();
        for k in ["a", "b", "c"] {
            m.insert(k.into(), None);
        }
        assert_eq!(KeyRange::new(b"c", b"a").of_map(&m).count(), 0);
        assert_eq!(KeyRange::new(b"b", b"\0").of_map(&m).count(), 2);
        assert_eq!(KeyRange::new(b"b", b"").of_map(&m).count(), 1);
    }

    /// Fetch cut-off: limit+1 unless sorting or filtering; count_only fetches nothing.
    #[test]
    fn fetch_limits() {
        let base = RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        };
        assert_eq!(fetch_limit(&base), None);
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: 2,
                ..base.clone()
            }),
            Some(3)
        );
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: -2,
                ..base.clone()
            }),
            None
        );
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: 2,
                sort_target: SortTarget::Version as i32,
                ..base.clone()
            }),
            Some(3),
            "target without order does not lift the cut-off (etcd quirk)"
        );
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: 2,
                sort_order: 1,
                ..base.clone()
            }),
            None
        );
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: 2,
                min_mod_revision: 1,
                ..base.clone()
            }),
            None
        );
        assert_eq!(
            fetch_limit(&RangeRequest {
                limit: 2,
                count_only: true,
                ..base
            }),
            Some(0)
        );
    }

    /// Filters, stable sorts in both directions, limit/more and keys_only, as etcd 3.4.23 answered.
    #[test]
    fn finish_matches_etcd() {
        // The five keys of the empirical check: (key, version, create, mod).
        let all = [
            kv("k1", 3, 10, 12, "k1v2"),
            kv("k2", 1, 13, 13, "k2v0"),
            kv("k3", 2, 14, 15, "k3v1"),
            kv("k4", 1, 16, 16, "k4v0"),
            kv("k5", 3, 17, 19, "k5v2"),
        ];
        let names = |r: &RangeResponse| {
            r.kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).expect("utf8"))
                .collect::<Vec<_>>()
        };
        let run = |req: RangeRequest| {
            let n = fetch_limit(&req).unwrap_or(usize::MAX);
            let kvs = all.iter().take(n).cloned().collect();
            finish(
                &req,
                Fetched {
                    kvs,
                    count: all.len(),
                },
                19,
            )
        };
        let base = RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        };

        let r = run(RangeRequest {
            limit: 2,
            ..base.clone()
        });
        assert_eq!(
            (names(&r), r.more, r.count, r.revision),
            (vec!["k1".into(), "k2".into()], true, 5, 19)
        );
        let r = run(RangeRequest {
            limit: 2,
            sort_target: 1,
            ..base.clone()
        });
        assert_eq!(
            names(&r),
            vec!["k2", "k3"],
            "only the first limit+1 keys are sorted"
        );
        let r = run(RangeRequest {
            limit: 2,
            sort_target: 1,
            sort_order: 2,
            ..base.clone()
        });
        assert_eq!((names(&r), r.more), (vec!["k1".into(), "k5".into()], true));
        let r = run(RangeRequest {
            sort_target: 1,
            sort_order: 2,
            ..base.clone()
        });
        assert_eq!(names(&r), vec!["k1", "k5", "k3", "k2", "k4"]);
        let r = run(RangeRequest {
            sort_target: 1,
            sort_order: 1,
            ..base.clone()
        });
        assert_eq!(names(&r), vec!["k2", "k4", "k3", "k1", "k5"]);
        let r = run(RangeRequest {
            sort_order: 2,
            ..base.clone()
        });
        assert_eq!(names(&r), vec!["k5", "k4", "k3", "k2", "k1"]);
        let r = run(RangeRequest {
            min_mod_revision: 14,
            limit: 1,
            ..base.clone()
        });
        assert_eq!((names(&r), r.more, r.count), (vec!["k3".into()], true, 5));
        let r = run(RangeRequest {
            min_mod_revision: 14,
            limit: 1,
            count_only: true,
            ..base.clone()
        });
        assert_eq!((names(&r), r.more, r.count), (vec![], false, 5));
        let r = run(RangeRequest {
            max_create_revision: 12,
            keys_only: true,
            ..base.clone()
        });
        assert_eq!(
            r.kvs,
            vec![KeyValue {
                value: vec![],
                ..all[0].clone()
            }]
        );
        let r = run(RangeRequest {
            limit: 5,
            ..base.clone()
        });
        assert_eq!((r.kvs.len(), r.more), (5, false));
        let r = run(RangeRequest {
            sort_target: 4,
            sort_order: 2,
            limit: 3,
            ..base.clone()
        });
        assert_eq!(
            (names(&r), r.more),
            (vec!["k5".into(), "k4".into(), "k3".into()], true)
        );
        let r = run(RangeRequest {
            min_create_revision: 14,
            max_mod_revision: 16,
            sort_target: 3,
            ..base.clone()
        });
        assert_eq!(names(&r), vec!["k3", "k4"]);
        let r = run(RangeRequest {
            sort_target: 2,
            sort_order: 2,
            ..base
        });
        assert_eq!(names(&r), vec!["k5", "k4", "k3", "k2", "k1"]);
    }
}
