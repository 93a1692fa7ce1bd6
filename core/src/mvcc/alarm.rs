//! Alarms (etcd's alarm store): replicated through the log, kept under the
//! `A` key space, cached in the [`super::Store`] as a sorted list.
//!
//! While a NOSPACE alarm is raised (by any member), the store refuses every
//! entry that would consume space with [`crate::Error::NoSpace`] and changes
//! nothing (etcd's capped applier): puts, txns containing a put anywhere
//! (either branch, nested txns included; etcd's capped applier refuses any
//! txn with a put cost too) and lease grants. Deletes, compactions, lease
//! revokes and checkpoints pass, so space can be freed.
//!
//! ```text
//! entry                              alarms afterwards         answer
//! activate (1, NOSPACE)              [(1, NOSPACE)]            [(1, NOSPACE)]
//! activate (1, NOSPACE)              [(1, NOSPACE)]            [(1, NOSPACE)]   (idempotent)
//! activate (2, NONE)                 [(1, NOSPACE)]            []               (ignored)
//! put a                              [(1, NOSPACE)]            error: no space
//! delete a                           [(1, NOSPACE)]            ok
//! deactivate (2, NOSPACE)            [(1, NOSPACE)]            []               (no such pair)
//! deactivate (1, NOSPACE)            []                        [(1, NOSPACE)]
//! ```

use super::keys;
use crate::engine::{EngineError, KvRead, WriteBatch};
use crate::kv::{AlarmAction, AlarmMember, AlarmRequest, AlarmType, Op, TxnRequest};
use crate::log::Payload;

/// Every alarm in `view`, ordered (member, alarm).
///
/// # Errors
/// Storage failure or a malformed key.
pub(super) fn load<R: KvRead>(view: &R) -> Result<Vec<AlarmMember>, EngineError> {
    let end = keys::alarm_space_end();
    let mut out = view
        .scan(&[keys::ALARM_PREFIX], Some(&end))
        .map(|item| {
            let (key, _) = item?;
            let (member_id, alarm) = keys::parse_alarm_key(&key)?;
            Ok(AlarmMember { member_id, alarm })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    out.sort();
    Ok(out)
}

/// What an alarm entry does: the new alarm list (if it changed) and the
/// alarms to answer with. Adds the engine writes to `batch`.
pub(super) fn apply(
    alarms: &[AlarmMember],
    req: &AlarmRequest,
    batch: &mut WriteBatch,
) -> (Option<Vec<AlarmMember>>, Vec<AlarmMember>) {
    let member = AlarmMember {
        member_id: req.member_id,
        alarm: req.alarm,
    };
    match AlarmAction::try_from(req.action) {
        // etcd answers a logged Get like the unlogged one: the alarms of
        // the given type, every alarm for NONE.
        Ok(AlarmAction::Get) => {
            let matching = alarms
                .iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .cloned()
                .collect();
            (None, matching)
        }
        Ok(AlarmAction::Activate) => {
            if req.alarm == AlarmType::None as i32 {
                return (None, Vec::new());
            }
            match alarms.binary_search(&member) {
                Ok(_) => (None, vec![member]),
                Err(at) => {
                    batch.put(keys::alarm_key(member.member_id, member.alarm), Vec::new());
                    let mut next = alarms.to_vec();
                    next.insert(at, member.clone());
                    (Some(next), vec![member])
                }
            }
        }
        Ok(AlarmAction::Deactivate) => match alarms.binary_search(&member) {
            Ok(at) => {
                batch.delete(keys::alarm_key(member.member_id, member.alarm));
                let mut next = alarms.to_vec();
                next.remove(at);
                (Some(next), vec![member])
            }
            Err(_) => (None, Vec::new()),
        },
        // etcd ignores an unknown action.
        Err(_) => (None, Vec::new()),
    }
}

/// Whether `alarms` holds a NOSPACE alarm (of any member).
#[must_use]
pub fn nospace(alarms: &[AlarmMember]) -> bool {
    alarms.iter().any(|a| a.alarm == AlarmType::Nospace as i32)
}

/// Whether applying `payload` may consume space, so a NOSPACE alarm refuses
/// it: a put, a txn with a put anywhere in it, a lease grant.
#[must_use]
pub fn consumes_space(payload: &Payload) -> bool {
    match payload {
        Payload::Put(_) | Payload::LeaseGrant(_) => true,
        Payload::Txn(t) => txn_has_put(t),
        Payload::DeleteRange(_)
        | Payload::Compaction(_)
        | Payload::Barrier(_)
        | Payload::LeaseRevoke(_)
        | Payload::LeaseCheckpoint(_)
        | Payload::Alarm(_) => false,
    }
}

fn txn_has_put(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match &op.op {
        Some(Op::Put(_)) => true,
        Some(Op::Txn(nested)) => txn_has_put(nested),
        _ => false,
    })
}
