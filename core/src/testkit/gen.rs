//! A seeded generator of requests for the conformance suite: a tiny
//! xorshift64* generator (no dependency) and request builders biased toward
//! the interesting cases (few keys, keys with `0x00`/`0xFF` bytes, revisions
//! near the compaction watermark and the current revision, nested txns).

use crate::kv::{
    CompactionRequest, Compare, DeleteRangeRequest, Op, PutRequest, RangeRequest, RequestOp,
    TargetUnion, TxnRequest, WriteRequest,
};

/// xorshift64*: deterministic, good enough for test choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is remapped).
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "Rng::between({lo}, {hi})");
        lo + i64::try_from(self.below(u64::try_from(hi - lo).expect("hi >= lo") + 1)).expect("fits")
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).expect("index fits");
        &items[i]
    }
}

/// The key alphabet: prefixes of each other, `0x00` and `0xFF` bytes, so the
/// engine key escaping and the range bounds are exercised.
pub const KEYS: [&[u8]; 9] = [
    b"\x00",
    b"a",
    b"a\x00",
    b"a\x00\x00",
    b"a\x01",
    b"ab",
    b"b",
    b"b\xff",
    b"\xff",
];

/// Builds random requests against a store whose revisions it is told.
#[derive(Clone, Debug)]
pub struct Gen {
    /// The generator's randomness.
    pub rng: Rng,
}

impl Gen {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
        }
    }

    /// A key of [`KEYS`].
    pub fn key(&mut self) -> Vec<u8> {
        self.rng.pick(&KEYS).to_vec()
    }

    /// A `(key, range_end)` pair: a single key with probability
    /// `1 / single_one_in`, else from-key, prefix, or an arbitrary (possibly
    /// reversed) interval.
    pub fn key_range(&mut self, single_one_in: u64) -> (Vec<u8>, Vec<u8>) {
        let mut key = self.key();
        if self.rng.chance(1, single_one_in) {
            return (key, Vec::new());
        }
        let end = match self.rng.below(5) {
            0 => vec![0],
            1 | 2 => {
                // Prefix end: last byte + 1 (keys ending in 0xFF fall back to from-key).
                let mut e = key.clone();
                match e.last_mut() {
                    Some(b) if *b < 0xFF => *b += 1,
                    _ => e = vec![0],
                }
                e
            }
            _ => {
                let mut end = self.key();
                // Mostly a proper interval; sometimes reversed or empty.
                if end < key && !self.rng.chance(1, 4) {
                    std::mem::swap(&mut key, &mut end);
                }
                end
            }
        };
        (key, end)
    }

    /// A revision around the interesting points `[compact - 1, current + 1]`,
    /// sometimes 0 or negative.
    pub fn revision(&mut self, current: i64, compact: i64) -> i64 {
        match self.rng.below(8) {
            0 => 0,
            1 => -self.rng.between(1, 2),
            2 => current + 1,
            3 => compact,
            _ => self.rng.between((compact - 1).max(1), current),
        }
    }

    /// A put, occasionally with a lease or `ignore_*` flags (valid or not).
    pub fn put(&mut self) -> PutRequest {
        let ignore_value = self.rng.chance(1, 12);
        let value = if ignore_value && !self.rng.chance(1, 6) {
            Vec::new()
        } else {
            format!("v{}", self.rng.below(1000)).into_bytes()
        };
        PutRequest {
            key: self.key(),
            value,
            lease: if self.rng.chance(1, 16) { 5 } else { 0 },
            prev_kv: self.rng.chance(1, 2),
            ignore_value,
            ignore_lease: self.rng.chance(1, 12),
        }
    }

    /// A delete.
    pub fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.key_range(2);
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.chance(1, 2),
        }
    }

    /// A range with every option in play.
    pub fn range(&mut self, current: i64, compact: i64) -> RangeRequest {
        let (key, range_end) = self.key_range(4);
        let filter = |g: &mut Gen| {
            if g.rng.chance(1, 14) {
                g.rng.between(1, current + 1)
            } else {
                0
            }
        };
        RangeRequest {
            key,
            range_end,
            limit: if self.rng.chance(1, 2) {
                self.rng.between(-1, 4)
            } else {
                0
            },
            revision: if self.rng.chance(1, 2) {
                self.revision(current, compact)
            } else {
                0
            },
            sort_order: if self.rng.chance(1, 40) {
                3
            } else {
                i32::try_from(self.rng.below(3)).expect("small")
            },
            sort_target: if self.rng.chance(1, 2) {
                0
            } else {
                i32::try_from(self.rng.below(5)).expect("small")
            },
            serializable: self.rng.chance(1, 2),
            keys_only: self.rng.chance(1, 5),
            count_only: self.rng.chance(1, 8),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    /// A compare of any target and result; the operand usually matches the target.
    pub fn compare(&mut self, current: i64) -> Compare {
        let (key, range_end) = self.key_range(2);
        let target = if self.rng.chance(1, 50) {
            9
        } else {
            i32::try_from(self.rng.below(5)).expect("small")
        };
        let kind = if self.rng.chance(1, 10) {
            self.rng.below(6)
        } else {
            u64::try_from(target).expect(">= 0")
        };
        let n = self.rng.between(0, current + 1);
        let target_union = match kind {
            0 => Some(TargetUnion::Version(self.rng.between(0, 3))),
            1 => Some(TargetUnion::CreateRevision(n)),
            2 => Some(TargetUnion::ModRevision(n)),
            3 => Some(TargetUnion::Value(if self.rng.chance(1, 4) {
                Vec::new()
            } else {
                format!("v{}", self.rng.below(1000)).into_bytes()
            })),
            4 => Some(TargetUnion::Lease(if self.rng.chance(1, 2) {
                0
            } else {
                5
            })),
            _ => None,
        };
        let result = if self.rng.chance(1, 50) {
            7
        } else {
            i32::try_from(self.rng.below(4)).expect("small")
        };
        Compare {
            result,
            target,
            key,
            target_union,
            range_end,
        }
    }

    /// A txn nested at most `depth` more levels.
    pub fn txn(&mut self, current: i64, compact: i64, depth: u32) -> TxnRequest {
        let compare = (0..self.rng.below(3))
            .map(|_| self.compare(current))
            .collect();
        let ops = |g: &mut Gen| -> Vec<RequestOp> {
            (0..g.rng.below(4))
                .map(|_| {
                    let op = match g.rng.below(if depth > 0 { 7 } else { 6 }) {
                        0 | 1 => Op::Range(g.range(current, compact)),
                        2 | 3 => Op::Put(g.put()),
                        4 | 5 => Op::DeleteRange(g.delete()),
                        _ => Op::Txn(g.txn(current, compact, depth - 1)),
                    };
                    RequestOp { op: Some(op) }
                })
                .collect()
        };
        let success = ops(self);
        let failure = ops(self);
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// A compaction around the valid window, sometimes out of it.
    pub fn compaction(&mut self, current: i64, compact: i64) -> CompactionRequest {
        let revision = match self.rng.below(6) {
            0 => compact,
            1 => current + 1,
            _ => self.rng.between(compact + 1, current.max(compact + 1)),
        };
        CompactionRequest {
            revision,
            physical: self.rng.chance(1, 2),
        }
    }

    /// Any write, weighted toward puts.
    pub fn write(&mut self, current: i64, compact: i64) -> WriteRequest {
        match self.rng.below(20) {
            0..=9 => WriteRequest::Put(self.put()),
            10..=12 => WriteRequest::DeleteRange(self.delete()),
            13..=18 => WriteRequest::Txn(self.txn(current, compact, 2)),
            _ => WriteRequest::Compaction(self.compaction(current, compact)),
        }
    }
}
