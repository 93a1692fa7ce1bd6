//! Property test: random sequences of puts, deletes, ranges (every option),
//! txns (compares of every target, nested txns), compactions, barriers and
//! restarts give the same answers from the store on `MemEngine` as from the
//! reference model, and the same retained history and revision log.
//!
//! Revisions in generated requests are small positive numbers folded into
//! `[1, current + 1]` when the step runs, so reads hit past, current and
//! future revisions whatever the sequence did before, and shrinking keeps
//! working on plain integers.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::engine::MemEngine;
use crate::kv::{
    CompactionRequest, Compare, DeleteRangeRequest, Op, PutRequest, RangeRequest, RequestOp,
    TargetUnion, TxnRequest, WriteRequest,
};
use crate::testkit::gen::KEYS;
use crate::testkit::Harness;

#[derive(Clone, Debug)]
enum Step {
    Write(WriteRequest),
    Read(RangeRequest),
    Barrier,
    Reopen,
    Check,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(KEYS.to_vec()).prop_map(<[u8]>::to_vec)
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => Just(Vec::new()), 1 => Just(vec![0]), 3 => key()]
}

/// 0, negative, or a positive revision to be folded (see the module doc).
fn rev() -> impl Strategy<Value = i64> {
    prop_oneof![2 => Just(0i64), 1 => -2i64..0, 4 => 1i64..64]
}

fn filter() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0i64), 1 => 1i64..64]
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    let shape = (
        key(),
        range_end(),
        -1i64..4,
        rev(),
        0i32..3,
        0i32..5,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.15),
    );
    let filters = (filter(), filter(), filter(), filter());
    (shape, filters).prop_map(
        |(
            (
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
            ),
            f,
        )| {
            RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
                min_mod_revision: f.0,
                max_mod_revision: f.1,
                min_create_revision: f.2,
                max_create_revision: f.3,
            }
        },
    )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    let value = proptest::sample::select(vec![&b""[..], b"v1", b"v2", b"a longer value"])
        .prop_map(<[u8]>::to_vec);
    let lease = prop_oneof![15 => Just(0i64), 1 => Just(5i64)];
    (
        key(),
        value,
        lease,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(key, value, lease, prev_kv, ignore_value, ignore_lease)| {
            // Keep most flagged puts statically valid so they reach apply.
            let value = if ignore_value && value.len() > 2 {
                Vec::new()
            } else {
                value
            };
            let lease = if ignore_lease { 0 } else { lease };
            PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            }
        })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let union = prop_oneof![
        (0i64..4).prop_map(TargetUnion::Version),
        rev().prop_map(TargetUnion::CreateRevision),
        rev().prop_map(TargetUnion::ModRevision),
        proptest::sample::select(vec![&b""[..], b"v1", b"v2"])
            .prop_map(|v| TargetUnion::Value(v.to_vec())),
        prop_oneof![Just(0i64), Just(5i64)].prop_map(TargetUnion::Lease),
    ];
    (
        key(),
        range_end(),
        0i32..5,
        0i32..4,
        prop::option::weighted(0.95, union),
    )
        .prop_map(|(key, range_end, target, result, target_union)| Compare {
            result,
            target,
            key,
            target_union,
            range_end,
        })
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_req().prop_map(Op::Range),
        put_req().prop_map(Op::Put),
        delete_req().prop_map(Op::DeleteRange),
    ];
    let op = leaf.prop_recursive(2, 24, 4, |inner| {
        let ops = || vec(inner.clone().prop_map(|op| RequestOp { op: Some(op) }), 0..4);
        prop_oneof![
            3 => inner.clone(),
            1 => (vec(compare(), 0..3), ops(), ops()).prop_map(|(compare, success, failure)| Op::Txn(TxnRequest { compare, success, failure })),
        ]
    });
    let ops = move || vec(op.clone().prop_map(|op| RequestOp { op: Some(op) }), 0..4);
    (vec(compare(), 0..3), ops(), ops()).prop_map(|(compare, success, failure)| TxnRequest {
        compare,
        success,
        failure,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => put_req().prop_map(|r| Step::Write(WriteRequest::Put(r))),
        2 => delete_req().prop_map(|r| Step::Write(WriteRequest::DeleteRange(r))),
        4 => txn_req().prop_map(|r| Step::Write(WriteRequest::Txn(r))),
        1 => rev().prop_map(|revision| Step::Write(WriteRequest::Compaction(CompactionRequest { revision, physical: false }))),
        5 => range_req().prop_map(Step::Read),
        1 => prop_oneof![Just(Step::Barrier), Just(Step::Reopen), Just(Step::Check)],
    ]
}

/// Folds a generated positive revision into `[1, current + 1]`.
fn fold(r: &mut i64, current: i64) {
    if *r > 0 {
        *r = 1 + (*r - 1) % (current + 1);
    }
}

fn fold_range(r: &mut RangeRequest, current: i64) {
    for x in [
        &mut r.revision,
        &mut r.min_mod_revision,
        &mut r.max_mod_revision,
        &mut r.min_create_revision,
        &mut r.max_create_revision,
    ] {
        fold(x, current);
    }
}

fn fold_txn(t: &mut TxnRequest, current: i64) {
    for c in &mut t.compare {
        if let Some(TargetUnion::CreateRevision(x) | TargetUnion::ModRevision(x)) =
            &mut c.target_union
        {
            fold(x, current);
        }
    }
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match &mut op.op {
            Some(Op::Range(r)) => fold_range(r, current),
            Some(Op::Txn(n)) => fold_txn(n, current),
            _ => {}
        }
    }
}

fn run(steps: Vec<Step>) {
    let mut h = Harness::new(MemEngine::new(), "proptest");
    for mut step in steps {
        let current = h.model().current_revision();
        match &mut step {
            Step::Write(WriteRequest::Txn(t)) => fold_txn(t, current),
            Step::Write(WriteRequest::Compaction(c)) => fold(&mut c.revision, current),
            Step::Read(r) => fold_range(r, current),
            _ => {}
        }
        match step {
            Step::Write(w) => {
                let _ = h.write(w);
            }
            Step::Read(r) => {
                let _ = h.read(r);
            }
            Step::Barrier => h.barrier(),
            Step::Reopen => h.reopen(),
            Step::Check => h.check_state(),
        }
    }
    h.check_state();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The store answers every request exactly as the model does.
    #[test]
    fn store_matches_model(steps in vec(step(), 1..48)) {
        run(steps);
    }
}
