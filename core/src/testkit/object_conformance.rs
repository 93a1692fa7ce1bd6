//! The object-store conformance suite: the semantics of
//! [`crate::object`], checked through nothing but "execute this operation".
//!
//! Every store (io-real's S3, directory and memory stores, the simulator's
//! fake S3 with its faults off) runs it:
//!
//! ```ignore
//! let store = Arc::new(DirStore::open(tmp)?);
//! t4_core::testkit::object_conformance(|op| {
//!     let store = Arc::clone(&store);
//!     async move { store.execute(op).await }
//! })
//! .await;
//! ```
//!
//! The store must be empty when the suite starts (a fresh bucket or a fresh
//! prefix). The suite is plain async code: it needs no runtime of its own,
//! so tokio and madsim tests can both await it. It panics with the name of
//! the failed check.

use std::future::Future;

use bytes::Bytes;

use crate::object::{
    ETag, ObjectError, ObjectInfo, ObjectOp, ObjectReply, ObjectResult, PutCondition, LIST_KEYS_MAX,
};

/// Concurrent writers in the race checks.
pub const RACERS: usize = 8;

/// Runs every check against the store behind `exec`. `exec` must allow
/// concurrent calls (the race checks start [`RACERS`] at once).
pub async fn object_conformance<F, Fut>(exec: F)
where
    F: Fn(ObjectOp) -> Fut,
    Fut: Future<Output = ObjectResult>,
{
    let s = Suite { exec: &exec };
    let all = s.list_all("").await;
    assert!(all.is_empty(), "the store must start empty, has {all:?}");
    s.get_put_delete().await;
    s.if_absent().await;
    s.if_match().await;
    s.invalid_keys().await;
    s.nested_keys().await;
    s.listing().await;
    s.bodies().await;
    s.races().await;
}

struct Suite<'a, F> {
    exec: &'a F,
}

fn body(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

impl<F, Fut> Suite<'_, F>
where
    F: Fn(ObjectOp) -> Fut,
    Fut: Future<Output = ObjectResult>,
{
    async fn run(&self, op: ObjectOp) -> ObjectResult {
        (self.exec)(op).await
    }

    async fn put(&self, key: &str, contents: Bytes, condition: PutCondition) -> ObjectResult {
        self.run(ObjectOp::Put {
            key: key.to_owned(),
            body: contents,
            condition,
        })
        .await
    }

    async fn put_ok(&self, key: &str, contents: &str, condition: PutCondition) -> ETag {
        match self.put(key, body(contents), condition.clone()).await {
            Ok(ObjectReply::Put { etag }) => etag,
            other => panic!("put {key} {condition:?}: expected success, got {other:?}"),
        }
    }

    async fn get(&self, key: &str) -> ObjectResult {
        self.run(ObjectOp::Get {
            key: key.to_owned(),
        })
        .await
    }

    /// The object's body and ETag, or `None` if it is missing.
    async fn read(&self, key: &str) -> Option<(Bytes, ETag)> {
        match self.get(key).await {
            Ok(ObjectReply::Got { body, etag }) => Some((body, etag)),
            Err(ObjectError::NotFound) => None,
            other => panic!("get {key}: unexpected {other:?}"),
        }
    }

    async fn delete(&self, key: &str) -> ObjectResult {
        self.run(ObjectOp::Delete {
            key: key.to_owned(),
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> (Vec<ObjectInfo>, bool) {
        match self
            .run(ObjectOp::List {
                prefix: prefix.to_owned(),
                start_after: start_after.map(str::to_owned),
                max_keys,
            })
            .await
        {
            Ok(ObjectReply::Listed { objects, truncated }) => (objects, truncated),
            other => panic!("list {prefix:?} after {start_after:?}: unexpected {other:?}"),
        }
    }

    /// Every key under `prefix`, paging with `start_after`.
    async fn list_all(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let after = keys.last().cloned();
            let (page, truncated) = self
                .list_page(prefix, after.as_deref(), LIST_KEYS_MAX)
                .await;
            keys.extend(page.into_iter().map(|o| o.key));
            if !truncated {
                return keys;
            }
        }
    }

    /// A put is read back with its ETag; deletes are idempotent.
    async fn get_put_delete(&self) {
        let key = "basic/a";
        assert_eq!(
            self.get(key).await,
            Err(ObjectError::NotFound),
            "get of a missing key"
        );
        let etag = self.put_ok(key, "one", PutCondition::None).await;
        assert_eq!(
            self.read(key).await,
            Some((body("one"), etag.clone())),
            "get returns the body and the ETag the put returned"
        );
        let etag2 = self.put_ok(key, "two", PutCondition::None).await;
        assert_ne!(etag, etag2, "new contents, new ETag");
        assert_eq!(
            self.read(key).await,
            Some((body("two"), etag2)),
            "plain put replaces"
        );
        assert_eq!(self.delete(key).await, Ok(ObjectReply::Deleted), "delete");
        assert_eq!(self.read(key).await, None, "deleted object is gone");
        assert_eq!(
            self.delete(key).await,
            Ok(ObjectReply::Deleted),
            "deleting a missing key succeeds"
        );
        assert!(
            self.list_all("basic/").await.is_empty(),
            "deleted keys are not listed"
        );
    }

    /// `If-None-Match: *` creates once and never overwrites.
    async fn if_absent(&self) {
        let key = "absent/a";
        let etag = self.put_ok(key, "first", PutCondition::IfAbsent).await;
        assert_eq!(
            self.put(key, body("second"), PutCondition::IfAbsent).await,
            Err(ObjectError::PreconditionFailed),
            "IfAbsent on an existing key"
        );
        assert_eq!(
            self.read(key).await,
            Some((body("first"), etag)),
            "a failed IfAbsent changes nothing"
        );
        self.delete(key).await.expect("delete");
        self.put_ok(key, "again", PutCondition::IfAbsent).await;
    }

    /// `If-Match` replaces only the version it names.
    async fn if_match(&self) {
        let key = "match/a";
        let etag1 = self.put_ok(key, "v1", PutCondition::IfAbsent).await;
        let etag2 = self
            .put_ok(key, "v2", PutCondition::IfMatch(etag1.clone()))
            .await;
        assert_ne!(etag1, etag2, "a replaced object has a new ETag");
        assert_eq!(
            self.put(key, body("v3"), PutCondition::IfMatch(etag1))
                .await,
            Err(ObjectError::PreconditionFailed),
            "IfMatch with a stale ETag"
        );
        assert_eq!(
            self.put(
                key,
                body("v3"),
                PutCondition::IfMatch(ETag("\"no-such-etag\"".into()))
            )
            .await,
            Err(ObjectError::PreconditionFailed),
            "IfMatch with a made-up ETag"
        );
        assert_eq!(
            self.read(key).await,
            Some((body("v2"), etag2.clone())),
            "failed IfMatch puts change nothing"
        );
        assert_eq!(
            self.put("match/missing", body("x"), PutCondition::IfMatch(etag2))
                .await,
            Err(ObjectError::NotFound),
            "IfMatch on a missing key"
        );
        assert_eq!(
            self.read("match/missing").await,
            None,
            "and creates nothing"
        );
    }

    /// Keys that could escape a directory or are not in our alphabet are
    /// refused by every operation and change nothing.
    async fn invalid_keys(&self) {
        for key in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "../up",
            "a/../b",
            "sp ace",
            "back\\slash",
        ] {
            let ops = [
                ObjectOp::Get { key: key.into() },
                ObjectOp::Put {
                    key: key.into(),
                    body: body("x"),
                    condition: PutCondition::None,
                },
                ObjectOp::Delete { key: key.into() },
            ];
            for op in ops {
                let kind = op.kind();
                let result = self.run(op).await;
                assert!(
                    matches!(result, Err(ObjectError::InvalidKey(_))),
                    "{kind} {key:?}: expected InvalidKey, got {result:?}"
                );
            }
        }
        for (prefix, max_keys) in [("../", 10), ("a", 0), ("a", LIST_KEYS_MAX + 1)] {
            let result = self
                .run(ObjectOp::List {
                    prefix: prefix.into(),
                    start_after: None,
                    max_keys,
                })
                .await;
            assert!(
                matches!(result, Err(ObjectError::InvalidKey(_))),
                "list {prefix:?} max {max_keys}: expected InvalidKey, got {result:?}"
            );
        }
        let all = self.list_all("").await;
        assert!(
            all.iter().all(|k| !k.contains("..") && !k.contains(' ')),
            "refused keys left nothing behind: {all:?}"
        );
    }

    /// `a/b` and `a/b/c` coexist, as in S3 (a file system store must not
    /// mistake one for the other's directory).
    async fn nested_keys(&self) {
        self.put_ok("nest/a/b", "file", PutCondition::IfAbsent)
            .await;
        self.put_ok("nest/a/b/c", "deeper", PutCondition::IfAbsent)
            .await;
        self.put_ok("nest/a/b.txt", "sibling", PutCondition::IfAbsent)
            .await;
        assert_eq!(
            self.read("nest/a/b").await.map(|(b, _)| b),
            Some(body("file"))
        );
        assert_eq!(
            self.read("nest/a/b/c").await.map(|(b, _)| b),
            Some(body("deeper"))
        );
        assert_eq!(
            self.read("nest/a").await,
            None,
            "a key's parent is not an object"
        );
        assert_eq!(
            self.list_all("nest/").await,
            ["nest/a/b", "nest/a/b.txt", "nest/a/b/c"],
            "byte order ('.' < '/')"
        );
        self.delete("nest/a/b").await.expect("delete");
        assert_eq!(
            self.read("nest/a/b/c").await.map(|(b, _)| b),
            Some(body("deeper"))
        );
        assert_eq!(self.list_all("nest/").await, ["nest/a/b.txt", "nest/a/b/c"]);
    }

    /// Prefix filtering, byte order, sizes and ETags, pagination.
    async fn listing(&self) {
        let mut expected = Vec::new();
        for i in (0..25).rev() {
            let key = format!("list/wal/{i:020}");
            let etag = self
                .put_ok(&key, &"x".repeat(i), PutCondition::IfAbsent)
                .await;
            expected.push((key, i as u64, etag));
        }
        self.put_ok("list/walrus", "not in wal/", PutCondition::IfAbsent)
            .await;
        self.put_ok("lisz", "outside", PutCondition::IfAbsent).await;
        expected.sort();

        let (page, truncated) = self.list_page("list/wal/", None, LIST_KEYS_MAX).await;
        assert!(!truncated, "one page holds 25 keys");
        let got: Vec<(String, u64, ETag)> = page
            .into_iter()
            .map(|o| (o.key, o.size_bytes, o.etag))
            .collect();
        assert_eq!(got, expected, "keys in order, with sizes and ETags");

        // Pages of 4 visit every key once.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let (page, truncated) = self.list_page("list/wal/", after.as_deref(), 4).await;
            assert!(page.len() <= 4, "a page holds at most max_keys");
            after = page.last().map(|o| o.key.clone());
            paged.extend(page.into_iter().map(|o| o.key));
            if !truncated {
                break;
            }
        }
        let keys: Vec<String> = expected.iter().map(|(k, _, _)| k.clone()).collect();
        assert_eq!(paged, keys, "paging with start_after");

        // start_after in the middle, and before the prefix.
        let (page, _) = self
            .list_page("list/wal/", Some(&keys[9]), LIST_KEYS_MAX)
            .await;
        assert_eq!(page.len(), 15, "keys strictly after the tenth");
        assert_eq!(page[0].key, keys[10]);
        let (page, _) = self.list_page("list/wal/", Some("a"), 3).await;
        assert_eq!(page[0].key, keys[0], "start_after before the prefix");
        let (page, truncated) = self
            .list_page("list/wal/", Some(&keys[24]), LIST_KEYS_MAX)
            .await;
        assert!(page.is_empty() && !truncated, "nothing after the last key");

        let (page, truncated) = self.list_page("list/nothing/", None, 10).await;
        assert!(page.is_empty() && !truncated, "an empty prefix range");
        assert_eq!(self.list_all("list/walr").await, ["list/walrus"]);
        assert!(
            self.list_all("").await.contains(&"lisz".to_owned()),
            "empty prefix lists all"
        );
    }

    /// Empty and multi-megabyte bodies round-trip byte for byte.
    async fn bodies(&self) {
        self.put_ok("body/empty", "", PutCondition::IfAbsent).await;
        assert_eq!(
            self.read("body/empty").await.map(|(b, _)| b),
            Some(Bytes::new())
        );
        let big: Vec<u8> = (0..6 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let big = Bytes::from(big);
        self.put("body/big", big.clone(), PutCondition::IfAbsent)
            .await
            .expect("a 6 MiB put");
        let (got, _) = self.read("body/big").await.expect("the big object");
        assert!(
            got == big,
            "6 MiB body round-trips ({} bytes back)",
            got.len()
        );
        let (page, _) = self.list_page("body/big", None, 1).await;
        assert_eq!(page[0].size_bytes, big.len() as u64, "listed size");
    }

    /// Concurrent conditional writers: exactly one `IfAbsent` creator and
    /// at most one `IfMatch` replacer win; the survivor's body is the
    /// winner's.
    async fn races(&self) {
        let key = "race/lock";
        let attempts =
            (0..RACERS).map(|i| self.put(key, body(&format!("racer {i}")), PutCondition::IfAbsent));
        let results = futures::future::join_all(attempts).await;
        let winners = check_race("IfAbsent", &results);
        assert_eq!(
            winners.len(),
            1,
            "exactly one IfAbsent creator wins: {results:?}"
        );
        let creator = body(&format!("racer {}", winners[0]));
        let (stored, etag) = self.read(key).await.expect("the winner's object");
        assert_eq!(stored, creator, "the winner's body is stored");

        let attempts = (0..RACERS).map(|i| {
            self.put(
                key,
                body(&format!("replacer {i}")),
                PutCondition::IfMatch(etag.clone()),
            )
        });
        let results = futures::future::join_all(attempts).await;
        let winners = check_race("IfMatch", &results);
        assert!(
            winners.len() <= 1,
            "at most one IfMatch replacer wins: {results:?}"
        );
        let (stored, _) = self.read(key).await.expect("the object");
        let expected = match winners.first() {
            Some(w) => body(&format!("replacer {w}")),
            None => creator,
        };
        assert_eq!(
            stored, expected,
            "the IfMatch winner's body (or the old one) is stored"
        );
    }
}

/// The indexes of the racers that won; every loser must have failed its
/// precondition (or, on real S3, been told to retry).
fn check_race(what: &str, results: &[ObjectResult]) -> Vec<usize> {
    let mut winners = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(ObjectReply::Put { .. }) => winners.push(i),
            Err(ObjectError::PreconditionFailed | ObjectError::Retryable(_)) => {}
            other => panic!("{what} racer {i}: unexpected {other:?}"),
        }
    }
    winners
}
