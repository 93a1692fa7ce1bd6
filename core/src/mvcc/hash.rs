//! Consistency hashes: etcd's `HashKV` (the MVCC keyspace up to a revision)
//! and `Hash` (everything the engine holds).
//!
//! Both are CRC32C over engine keys and values in engine order, so two
//! stores that applied the same log entries give the same answer, whatever
//! engine (MemEngine, RocksDB) holds them. `hash_kv` only covers history
//! records (tombstones included) with a revision at or below the one asked
//! for, so writes made after that revision do not change it.

use super::keys::{self, HISTORY_PREFIX};
use super::read_meta;
use crate::engine::{EngineError, KvRead};
use crate::error::Error;

/// Answer of [`hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// CRC32C of the retained versions up to `hash_revision`.
    pub hash: u32,
    /// The compaction watermark (-1 if never compacted, as etcd).
    pub compact_revision: i64,
    /// The revision hashed.
    pub hash_revision: i64,
}

fn internal(e: EngineError) -> Error {
    Error::Internal(e.to_string())
}

/// etcd `HashKV` at `revision` (`<= 0`: the current revision).
///
/// # Errors
/// Future revision, compacted revision, storage failure.
pub fn hash_kv<R: KvRead>(view: &R, revision: i64) -> Result<KvHash, Error> {
    let meta = read_meta(view).map_err(internal)?;
    let rev = if revision <= 0 {
        meta.current_revision
    } else {
        revision
    };
    if rev > meta.current_revision {
        return Err(Error::FutureRevision);
    }
    if rev < meta.compact_revision {
        return Err(Error::Compacted {
            compact_revision: meta.compact_revision,
        });
    }
    let mut hash = 0u32;
    let end = keys::history_space_end();
    for item in view.scan(&[HISTORY_PREFIX], Some(&end)) {
        let (key, value) = item.map_err(internal)?;
        let (_, at) = keys::split_history_key(&key).map_err(internal)?;
        if at.main <= rev {
            hash = crc32c::crc32c_append(hash, &key);
            hash = crc32c::crc32c_append(hash, &value);
        }
    }
    Ok(KvHash {
        hash,
        compact_revision: meta.compact_revision,
        hash_revision: rev,
    })
}

/// etcd `Hash`: CRC32C over every key and value the engine holds, metadata
/// included (so it also tells whether two stores applied the same entries).
///
/// # Errors
/// Storage failure.
pub fn hash_all<R: KvRead>(view: &R) -> Result<u32, Error> {
    let mut hash = 0u32;
    for item in view.scan(&[], None) {
        let (key, value) = item.map_err(internal)?;
        hash = crc32c::crc32c_append(hash, &key);
        hash = crc32c::crc32c_append(hash, &value);
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;
    use crate::kv::{PutRequest, WriteRequest};
    use crate::log::Entry;
    use crate::mvcc::Store;
    use crate::types::{Index, Term};

    fn apply_puts(puts: &[(&str, &str)]) -> MemEngine {
        let engine = MemEngine::new();
        let mut store = Store::open(&engine).expect("open");
        for (i, (k, v)) in puts.iter().enumerate() {
            let req = WriteRequest::Put(PutRequest {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
                ..PutRequest::default()
            });
            let entry = Entry::write(Term(1), Index(i as u64 + 1), req);
            store
                .apply(&engine, &entry)
                .expect("engine")
                .result
                .expect("put");
        }
        engine
    }

    /// Identical histories hash equal; a different value changes the hash.
    #[test]
    fn equal_stores_hash_equal() {
        let a = apply_puts(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let b = apply_puts(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let c = apply_puts(&[("a", "1"), ("b", "2"), ("a", "4")]);
        assert_eq!(hash_kv(&a, 0), hash_kv(&b, 0));
        assert_ne!(
            hash_kv(&a, 0).expect("a").hash,
            hash_kv(&c, 0).expect("c").hash
        );
        assert_eq!(hash_all(&a), hash_all(&b));
        assert_ne!(hash_all(&a), hash_all(&c));
    }

    /// A hash at revision R ignores later writes; bounds as etcd.
    #[test]
    fn hash_at_a_revision_ignores_later_writes() {
        let short = apply_puts(&[("a", "1"), ("b", "2")]);
        let long = apply_puts(&[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")]);
        let at3 = hash_kv(&long, 3).expect("hash at 3");
        assert_eq!(at3.hash_revision, 3);
        assert_eq!(at3.compact_revision, -1);
        assert_eq!(at3.hash, hash_kv(&short, 0).expect("current").hash);
        assert_ne!(at3.hash, hash_kv(&long, 0).expect("current").hash);
        assert_eq!(hash_kv(&long, 6), Err(Error::FutureRevision));
    }
}
