//! Serializable reads: a node answers them from its own applied state,
//! which may lag, so they are not linearizable; what they must show is
//! *some committed prefix* — exactly the state the committed log had at the
//! revision they report. A node that applied an entry before it was
//! committed (and later lost) shows a state no committed prefix had.
//!
//! Checked against [`Truth`] (the final committed log's replay): the read's
//! revision (its `revision` argument, else the header's) is within the log,
//! and its kvs, count and `more` are what that revision held for the
//! range. Range options the workloads do not draw (sorting, keys or count
//! only, revision filters) are not checked.

use t4_core::kv::{KeyValue, RangeRequest, RangeResponse};

use crate::history::{Call, Op, Return};
use crate::truth::Truth;

/// Whether `op` is a serializable read.
#[must_use]
pub fn is_serializable(op: &Op) -> bool {
    matches!(&op.call, Call::Range(r) if r.serializable)
}

/// Checks every answered serializable read of `ops`; violations go to `v`.
/// Returns how many were checked.
pub fn check(truth: &Truth, ops: &[Op], v: &mut Vec<String>) -> usize {
    let mut checked = 0;
    for op in ops.iter().filter(|op| is_serializable(op)) {
        let (Call::Range(req), Return::Range(Ok(resp))) = (&op.call, &op.ret) else {
            continue;
        };
        if !checkable(req) {
            continue;
        }
        checked += 1;
        if let Err(why) = check_one(truth, req, resp) {
            v.push(format!(
                "serializable read by client {} at {}: {why}",
                op.client, op.call_at
            ));
        }
    }
    checked
}

fn checkable(req: &RangeRequest) -> bool {
    req.sort_order == 0
        && req.sort_target == 0
        && !req.keys_only
        && !req.count_only
        && req.min_mod_revision == 0
        && req.max_mod_revision == 0
        && req.min_create_revision == 0
        && req.max_create_revision == 0
}

fn check_one(truth: &Truth, req: &RangeRequest, resp: &RangeResponse) -> Result<(), String> {
    let last = truth.final_revision();
    if resp.revision > last {
        return Err(format!(
            "header revision {} is past the committed log's last revision {last}",
            resp.revision
        ));
    }
    let at = if req.revision > 0 {
        req.revision
    } else {
        resp.revision
    };
    let all: Vec<KeyValue> = truth
        .state_at(at)
        .into_iter()
        .filter(|kv| in_range(req, &kv.key))
        .collect();
    let count = i64::try_from(all.len()).expect("fits");
    let limit = usize::try_from(req.limit.max(0)).expect("fits");
    let shown: &[KeyValue] = if limit > 0 && all.len() > limit {
        &all[..limit]
    } else {
        &all
    };
    let more = limit > 0 && all.len() > limit;
    if resp.count != count || resp.kvs != shown || resp.more != more {
        return Err(format!(
            "at revision {at} the committed log holds count={count} more={more} kvs={:?}, the read showed count={} more={} kvs={:?}",
            names(shown),
            resp.count,
            resp.more,
            names(&resp.kvs)
        ));
    }
    Ok(())
}

fn in_range(req: &RangeRequest, key: &[u8]) -> bool {
    match req.range_end.as_slice() {
        [] => key == req.key.as_slice(),
        [0] => key >= req.key.as_slice(),
        end => key >= req.key.as_slice() && key < end,
    }
}

fn names(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| {
            format!(
                "{}={} (m{})",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.mod_revision
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::truth::tests::{log, put};

    use super::*;

    fn read(req: RangeRequest, resp: RangeResponse) -> Op {
        Op {
            client: 0,
            call_at: 0,
            return_at: Some(1),
            call: Call::Range(RangeRequest {
                serializable: true,
                ..req
            }),
            ret: Return::Range(Ok(resp)),
        }
    }

    /// A read showing the committed state at its revision passes; one
    /// showing a value the log never had there, or a revision past the
    /// log, does not.
    #[test]
    fn prefixes_pass_and_other_states_do_not() {
        let truth = crate::truth::replay(&log(vec![put("a", "1"), put("b", "2"), put("a", "3")]))
            .expect("replay");
        let a_at_2 = truth.value_at(b"a", 2).expect("a at 2");
        let prefix = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            limit: 1,
            ..RangeRequest::default()
        };
        let good = read(
            prefix.clone(),
            RangeResponse {
                revision: 3,
                kvs: vec![a_at_2.clone()],
                more: true,
                count: 2,
            },
        );
        let mut v = Vec::new();
        assert_eq!(check(&truth, &[good], &mut v), 1);
        assert!(v.is_empty(), "{v:?}");

        let mut wrong = a_at_2.clone();
        wrong.value = b"never".to_vec();
        let bad = [
            read(
                prefix.clone(),
                RangeResponse {
                    revision: 3,
                    kvs: vec![wrong],
                    more: true,
                    count: 2,
                },
            ),
            read(
                RangeRequest {
                    key: b"a".to_vec(),
                    ..RangeRequest::default()
                },
                RangeResponse {
                    revision: 9,
                    kvs: vec![a_at_2],
                    more: false,
                    count: 1,
                },
            ),
        ];
        let mut v = Vec::new();
        assert_eq!(check(&truth, &bad, &mut v), 2);
        assert_eq!(v.len(), 2, "{v:?}");
    }
}
