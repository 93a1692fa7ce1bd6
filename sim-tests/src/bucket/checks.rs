//! The checks of a bucket run (see [`super`]): the bucket's log, GC and the
//! restore ([`super::checkpoints`]), no acknowledged write lost, the fresh
//! node's state, the zombie and outage rules, linearizability.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use t4_core::bucket::{layout, wal_object};
use t4_core::kv::Op as TxnOp;
use t4_core::log::{Entry, Payload};
use t4_core::object::{MemBucket, ObjectOp, PutCondition};
use t4_core::Error;
use t4_io_sim::s3::{AppliedWrite, S3Fault, CONTROL_CLIENT};

use super::scenarios::{Collected, OutageWindow, ZombieFacts};
use super::world::UNAVAILABLE_AFTER;
use super::{Kind, ScenarioConfig, ScenarioReport, Violation, ANSWER_SLACK, RECOVERY_MAX};
use crate::history::{Answer, Call, Op, Return};
use crate::lincheck::{self, Verdict};
use crate::truth::Truth;

/// Once the node has had `2U` to notice an outage, a write is refused
/// within this of its call.
const FAIL_FAST_NS: u64 = 500_000_000;

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("durations of a run fit in u64 nanoseconds")
}

/// Runs every check on what the run produced.
pub(super) fn check(config: &ScenarioConfig, c: Collected) -> ScenarioReport {
    let mut report = ScenarioReport {
        seed: config.seed,
        sim_secs: c.end as f64 / 1e9,
        trace: trace(c.recorded.trace, &c.writes),
        ..ScenarioReport::default()
    };
    report.faults.clone_from(&c.events);
    for fault in S3Fault::ALL {
        let n = c.stats.fault(fault);
        if n > 0 {
            report.faults.insert(fault.name(), n);
        }
    }
    let mut v = c.violations;
    let mut ops = c.recorded.ops;
    let tally = crate::history::Tally::of(&ops);
    report.ops = tally.ops;
    report.ok = tally.ok;
    report.failed = tally.failed;
    report.unknown = tally.unknown;
    report.acked_writes = tally.acked_writes;

    let (entries, problems) = bucket_log(&c.writes);
    report.log_entries = entries.len();
    let mut add = |kind: Kind, detail: String| v.push(Violation { kind, detail });
    for p in problems.into_iter().chain(discipline(&c.writes)) {
        add(Kind::Bucket, p);
    }
    super::checkpoints::check_gc(&c.writes, &mut report.faults, &mut add);
    if c.final_read.status.incarnation > 0 {
        super::checkpoints::check_restore(
            &c.final_read.status,
            &c.final_read.bucket_before,
            c.damage.as_ref(),
            &mut report.faults,
            &mut add,
        );
    }
    for p in duplicates(&entries) {
        add(Kind::Bucket, p);
    }
    if c.zombie.is_none() {
        for a in &c.recorded.answers {
            if let Some(Err(Error::Fenced(why))) = &a.result {
                add(
                    Kind::SelfFenced,
                    format!(
                        "client {} was answered Fenced with no other writer: {why}",
                        a.client
                    ),
                );
                break;
            }
        }
    }
    let (slowest_answer, slowest_recovery) =
        check_outages(&c.recorded.answers, &c.outages, &mut add);
    report.slowest_answer_ms = slowest_answer / 1_000_000;
    report.slowest_recovery_ms = slowest_recovery / 1_000_000;
    let truth = match crate::truth::replay(&entries) {
        Ok(truth) => truth,
        Err(e) => {
            add(
                Kind::Bucket,
                format!("the bucket's log does not replay: {e}"),
            );
            report.violations = v;
            return report;
        }
    };
    let mut lost = Vec::new();
    crate::run::check_acknowledged(&truth, &ops, &mut lost);
    for l in lost {
        add(Kind::Lost, l);
    }
    match &c.final_read.state {
        Err(why) => add(Kind::FinalState, why.clone()),
        Ok(state) => {
            let expected = truth.state_at(truth.final_revision());
            if state.revision != truth.final_revision() {
                add(
                    Kind::FinalState,
                    format!(
                        "the fresh node is at revision {}, the bucket's log at {}",
                        state.revision,
                        truth.final_revision()
                    ),
                );
            }
            if let Some(diff) = first_difference(&state.kvs, &expected) {
                add(
                    Kind::FinalState,
                    format!("the fresh node's state differs from the bucket's log: {diff}"),
                );
            }
        }
    }
    if let Some(z) = &c.zombie {
        check_zombie(z, &ops, &c.writes, &truth, &mut add);
    }

    let resolved = crate::resolve::resolve(&mut ops, &entries, &truth);
    report.resolved = resolved.applied + resolved.dropped;
    if std::env::var_os("SIM_DEBUG").is_some() {
        dump(&c.bucket, &c.writes, &entries, &ops);
        println!("final node: {:?}", c.final_read.status);
    }
    let result = lincheck::check(&ops, &config.check);
    report.checked = result.ops_checked;
    match result.verdict {
        Verdict::Linearizable => {}
        Verdict::Unknown => report.checker_unknown = true,
        Verdict::NotLinearizable(why) => add(Kind::NotLinearizable, format!("{why}")),
    }
    report.violations = v;
    report
}

/// The trace hash: the clients' history, then every write the store
/// applied.
fn trace(history: u64, writes: &[AppliedWrite]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    history.hash(&mut h);
    for w in writes {
        (w.key(), &*w.client, w.at, w.late, format!("{:?}", w.fate)).hash(&mut h);
    }
    h.finish()
}

/// WAL objects by first index: (key, header term, entries).
pub(crate) type WalObjects = BTreeMap<u64, (String, u64, Vec<Entry>)>;

/// Every WAL object ever written, from the store's write log (GC deletes
/// the ones checkpoints cover), by first index: (key, header term,
/// entries). Also returns what is wrong: a key written twice with
/// different bytes (a conditional create that was not, or one that GC made
/// possible by deleting the object first), or an object that does not
/// decode or is empty.
pub(crate) fn wal_objects_ever(writes: &[AppliedWrite]) -> (WalObjects, Vec<String>) {
    let mut problems = Vec::new();
    let mut objects = WalObjects::new();
    let mut first_bodies: BTreeMap<&str, &[u8]> = BTreeMap::new();
    // When GC deleted each WAL key (the last time).
    let mut deleted_at = BTreeMap::new();
    for w in writes {
        if let ObjectOp::Delete { key } = &w.op {
            deleted_at.insert(key.as_str(), w.at);
            continue;
        }
        let (key, Some(body)) = (w.key(), w.body()) else {
            continue;
        };
        let Some(first) = layout::parse_wal_key(key) else {
            continue;
        };
        match first_bodies.get(key) {
            // The same bytes again: a retry landing after its object was
            // collected.
            Some(before) if *before == body => continue,
            // A conditional create that was already on its way when GC
            // deleted the object it lost to, and landed after (the fake
            // S3's late landing: the writer gave up on it long before, got
            // a 412 from its retry, and moved on). It lies below the
            // checkpoint that covered the deleted object, so no restore
            // reads it, and the next GC pass removes it; the restorability
            // check covers what matters.
            Some(_)
                if w.late
                    && deleted_at
                        .get(key)
                        .is_some_and(|&gone| w.arrived_at < gone && gone < w.at) =>
            {
                continue;
            }
            Some(_) => {
                problems.push(format!(
                    "{key} was written again with different bytes by {} at {:?}",
                    w.client, w.at
                ));
                continue;
            }
            None => {
                first_bodies.insert(key, body);
            }
        }
        match wal_object::decode(key, first, body) {
            Ok((_, entries)) if entries.is_empty() => problems.push(format!("{key} is empty")),
            Ok((term, entries)) => {
                objects.insert(first.0, (key.to_owned(), term.0, entries));
            }
            Err(e) => problems.push(format!("{key} does not decode: {e}")),
        }
    }
    (objects, problems)
}

/// The log the bucket held: [`wal_objects_ever`] chained from index 1,
/// each starting right after the previous one ends. Also returns what is
/// wrong: [`wal_objects_ever`]'s problems, an object off the chain (a
/// duplicate or contradictory object: some other object already holds its
/// first index's entry, or nothing leads to it), or a term that goes back.
fn bucket_log(writes: &[AppliedWrite]) -> (Vec<Entry>, Vec<String>) {
    let (objects, mut problems) = wal_objects_ever(writes);
    let mut log: Vec<Entry> = Vec::new();
    let mut on_chain = BTreeSet::new();
    let mut term = 0;
    while let Some((key, object_term, entries)) = objects.get(&(log.len() as u64 + 1)) {
        if *object_term < term {
            problems.push(format!(
                "{key} has term {object_term}, below the term {term} of the object before it"
            ));
        }
        term = term.max(*object_term);
        on_chain.insert(log.len() as u64 + 1);
        for (i, e) in entries.iter().enumerate() {
            let expected = log.len() as u64 + 1;
            if e.index != expected {
                problems.push(format!(
                    "{key}: entry #{i} has index {}, expected {expected}",
                    e.index
                ));
                return (log, problems);
            }
            log.push(e.clone());
        }
    }
    for (first, (key, term, entries)) in &objects {
        if !on_chain.contains(first) {
            let last = entries.last().map_or(*first, |e| e.index);
            problems.push(format!(
                "{key} (entries {first}..={last}, term {term}) is off the log's chain, which ends at index {}: a duplicate or contradictory object",
                log.len()
            ));
        }
    }
    (log, problems)
}

/// The store's write log obeys the bucket discipline: WAL objects are only
/// created with `If-None-Match`, the lock only written conditionally.
fn discipline(writes: &[AppliedWrite]) -> Vec<String> {
    let mut problems = Vec::new();
    for w in writes {
        if &*w.client == CONTROL_CLIENT {
            continue;
        }
        if let ObjectOp::Put { key, condition, .. } = &w.op {
            let ok = if key.starts_with(layout::WAL_PREFIX) {
                *condition == PutCondition::IfAbsent
            } else if key == layout::LEADER_LOCK {
                *condition != PutCondition::None
            } else {
                true
            };
            if !ok {
                problems.push(format!(
                    "{} wrote {key} with condition {condition:?} at {:?}",
                    w.client, w.at
                ));
            }
        }
    }
    problems
}

/// The puts (key, value) of a payload; values are unique in our
/// workloads, so one showing up twice in the log is a write applied twice.
fn puts(payload: &Payload) -> Vec<(&[u8], &[u8])> {
    match payload {
        Payload::Put(p) => vec![(&p.key, &p.value)],
        Payload::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .filter_map(|o| match &o.op {
                Some(TxnOp::Put(p)) => Some((p.key.as_slice(), p.value.as_slice())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn duplicates(entries: &[Entry]) -> Vec<String> {
    let mut seen: BTreeMap<(&[u8], &[u8]), u64> = BTreeMap::new();
    let mut problems = Vec::new();
    for e in entries {
        let Some(payload) = &e.payload else { continue };
        for put in puts(payload) {
            if let Some(before) = seen.insert(put, e.index) {
                problems.push(format!(
                    "the put {}={} is in the log twice: entries {before} and {}",
                    String::from_utf8_lossy(put.0),
                    String::from_utf8_lossy(put.1),
                    e.index
                ));
            }
        }
    }
    problems
}

fn first_difference(
    got: &[t4_core::kv::KeyValue],
    want: &[t4_core::kv::KeyValue],
) -> Option<String> {
    let show = |kv: Option<&t4_core::kv::KeyValue>| {
        kv.map_or("nothing".to_owned(), |kv| {
            format!(
                "{}={} (create {}, mod {}, version {})",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version
            )
        })
    };
    (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .map(|i| {
            format!(
                "key #{i}: the node has {}, the log {}",
                show(got.get(i)),
                show(want.get(i))
            )
        })
}

/// The zombie never acknowledged a write after the fence: every write its
/// clients saw acknowledged answered a revision no later than the last one
/// before the taker's fence barrier (so, with the acknowledged-writes
/// check, it is in the log before the fence).
fn check_zombie(
    z: &ZombieFacts,
    ops: &[Op],
    writes: &[AppliedWrite],
    truth: &Truth,
    add: &mut impl FnMut(Kind, String),
) {
    let fence = writes
        .iter()
        .filter(|w| &*w.client == z.taker && w.key().starts_with(layout::WAL_PREFIX))
        .min_by_key(|w| w.at)
        .and_then(|w| {
            let first = layout::parse_wal_key(w.key())?;
            let (_, entries) = wal_object::decode(w.key(), first, w.body()?).ok()?;
            entries
                .iter()
                .find(|e| matches!(e.payload, Some(Payload::Barrier(_))))
                .map(|e| (e.index, w.at))
        });
    let Some((fence_index, fenced_at)) = fence else {
        if ops.iter().any(|op| !z.zombie_clients.contains(&op.client)) {
            add(Kind::Zombie, format!("{} wrote no fence barrier", z.taker));
        }
        return;
    };
    let revision_before_fence = (1..fence_index)
        .rev()
        .find_map(|i| truth.outcome(i))
        .map_or(1, |o| o.after);
    for op in ops {
        if !z.zombie_clients.contains(&op.client) {
            continue;
        }
        if let (Call::Write(req), Return::Write(Ok(resp))) = (&op.call, &op.ret) {
            if resp.revision() > revision_before_fence {
                add(
                    Kind::Zombie,
                    format!(
                        "the zombie acknowledged {req:?} at revision {}, after the fence barrier at index {fence_index} (revision {revision_before_fence}, landed at {fenced_at:?})",
                        resp.revision()
                    ),
                );
                return;
            }
        }
    }
}

/// The outage rules (see [`super`]'s "Bounds"): no call hangs; a write
/// called during an outage and answered before its end failed with
/// `Timeout` or `Unavailable`, at once once the node had time to notice;
/// a probe write got through soon after each outage. Returns the slowest
/// answer and the slowest recovery, in nanoseconds.
fn check_outages(
    answers: &[Answer],
    outages: &[OutageWindow],
    add: &mut impl FnMut(Kind, String),
) -> (u64, u64) {
    if outages.is_empty() {
        return (0, 0);
    }
    let answer_max = 2 * nanos(UNAVAILABLE_AFTER) + nanos(ANSWER_SLACK);
    let mut slowest = 0;
    let mut hung = false;
    for a in answers {
        let latency = a.answered_at.map(|at| at - a.call_at);
        slowest = slowest.max(latency.unwrap_or(u64::MAX));
        if !hung && latency.is_none_or(|l| l > answer_max) {
            hung = true;
            add(
                Kind::Outage,
                format!(
                    "a call hung: client {} called at {:.3} s, answered {:?} after {}",
                    a.client,
                    a.call_at as f64 / 1e9,
                    a.result,
                    latency.map_or("never".to_owned(), |l| format!("{:.3} s", l as f64 / 1e9))
                ),
            );
        }
    }
    let mut slowest_recovery = 0;
    for (k, w) in outages.iter().enumerate() {
        let noticed_by = w.start + 2 * nanos(UNAVAILABLE_AFTER) + nanos(ANSWER_SLACK);
        let mut failed = 0;
        for a in answers
            .iter()
            .filter(|a| a.write && (w.start..w.end).contains(&a.call_at))
        {
            let Some(at) = a.answered_at.filter(|&at| at < w.end) else {
                continue;
            };
            match &a.result {
                Some(Err(Error::Timeout(_) | Error::Unavailable(_))) => failed += 1,
                other => {
                    add(
                        Kind::Outage,
                        format!(
                            "outage {k} ({}, {:.3}..{:.3} s): a write called at {:.3} s was answered {other:?} at {:.3} s",
                            w.mode,
                            w.start as f64 / 1e9,
                            w.end as f64 / 1e9,
                            a.call_at as f64 / 1e9,
                            at as f64 / 1e9
                        ),
                    );
                    return (slowest, slowest_recovery);
                }
            }
            if a.call_at >= noticed_by && at - a.call_at > FAIL_FAST_NS {
                add(
                    Kind::Outage,
                    format!(
                        "outage {k}: a write called at {:.3} s, {:.3} s into the outage, took {:.3} s to be refused",
                        a.call_at as f64 / 1e9,
                        (a.call_at - w.start) as f64 / 1e9,
                        (at - a.call_at) as f64 / 1e9
                    ),
                );
            }
        }
        // Reads need the bucket too (the read lease): an outage may as
        // well show in them, when the clients were busy reading.
        let failed_reads = answers
            .iter()
            .filter(|a| !a.write && (w.start..w.end).contains(&a.call_at))
            .filter(|a| a.answered_at.is_some_and(|at| at < w.end))
            .filter(|a| {
                matches!(
                    a.result,
                    Some(Err(Error::Unavailable(_) | Error::Timeout(_)))
                )
            })
            .count();
        if failed == 0 && failed_reads == 0 && w.end > noticed_by {
            add(
                Kind::Outage,
                format!("outage {k} ({}) made no call fail", w.mode),
            );
        }
        match w.recovered_at {
            Some(at) => {
                let took = at.saturating_sub(w.end);
                slowest_recovery = slowest_recovery.max(took);
                if took > nanos(RECOVERY_MAX) {
                    add(
                        Kind::Outage,
                        format!(
                            "outage {k}: the first write after it succeeded {:.3} s after it ended (bound {RECOVERY_MAX:?})",
                            took as f64 / 1e9
                        ),
                    );
                }
            }
            None => add(
                Kind::Outage,
                format!("outage {k}: no write succeeded after it ended"),
            ),
        }
    }
    (slowest, slowest_recovery)
}

/// SIM_DEBUG: the bucket, the store's write log, the log and the history.
fn dump(bucket: &MemBucket, writes: &[AppliedWrite], log: &[Entry], ops: &[Op]) {
    for (key, body) in bucket.iter() {
        println!("object {key} ({} bytes)", body.len());
    }
    for w in writes {
        println!(
            "write {} {} by {} arrived {:?} landed {:?} fate {:?} late {}",
            w.op.kind(),
            w.key(),
            w.client,
            w.arrived_at,
            w.at,
            w.fate,
            w.late
        );
    }
    for e in log {
        let line = format!("{:?}", e.payload);
        println!(
            "log {} term {}: {}",
            e.index,
            e.term,
            &line[..line.len().min(200)]
        );
    }
    for (i, op) in ops.iter().enumerate() {
        println!("op {i}: {op:?}");
    }
}
