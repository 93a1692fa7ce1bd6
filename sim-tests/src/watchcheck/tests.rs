//! Tests of the watch checker: hand-built streams over one small log, each
//! guarantee accepted when kept and rejected when broken; then streams made
//! by core's real watch hub, which must all pass.

use std::collections::{BTreeMap, VecDeque};

use t4_core::engine::MemEngine;
use t4_core::kv::{Event, WatchCreateRequest, WatchFilter};
use t4_core::log::Entry;
use t4_core::mvcc::Store;
use t4_core::testkit::gen::Gen;
use t4_core::testkit::req;
use t4_core::watch::{StreamId, WatchConfig, WatchHub, WatchInput, WatchOutput};
use t4_core::{Index, Term, Time};

use super::{check_all, check_watch, WatchStats, WatchViolation};
use crate::history::{WatchEnd, WatchRecord};
use crate::truth::tests::{compact, del, del_ev, kv, log, op_put, put, put_ev, txn};
use crate::truth::{replay, Truth};

/// The log every hand-built test watches:
///
/// ```text
/// @2 put a=1
/// @3 put b=1
/// @4 txn [put a=2, put c=1]
/// @5 delete a
/// @6 put a=3
///    compact 4 (applies at current revision 6)
/// @7 put z=1
/// ```
fn truth() -> Truth {
    replay(&log(vec![
        put("a", "1"),
        put("b", "1"),
        txn(vec![op_put("a", "2"), op_put("c", "1")]),
        del("a", ""),
        put("a", "3"),
        compact(4),
        put("z", "1"),
    ]))
    .expect("replays")
}

// The events of key "a", with prev_kv.
fn a2() -> Event {
    put_ev(kv("a", "1", 2, 2, 1), None)
}
fn a4() -> Event {
    put_ev(kv("a", "2", 2, 4, 2), Some(kv("a", "1", 2, 2, 1)))
}
fn a5() -> Event {
    del_ev("a", 5, Some(kv("a", "2", 2, 4, 2)))
}
fn a6() -> Event {
    put_ev(kv("a", "3", 6, 6, 1), None)
}
fn b3() -> Event {
    put_ev(kv("b", "1", 3, 3, 1), None)
}
fn c4() -> Event {
    put_ev(kv("c", "1", 4, 4, 1), None)
}
fn z7() -> Event {
    put_ev(kv("z", "1", 7, 7, 1), None)
}

/// The event as a watcher without `prev_kv` gets it.
fn bare(e: Event) -> Event {
    Event { prev_kv: None, ..e }
}

fn watch(key: &str, range_end: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        ..WatchCreateRequest::default()
    }
}

fn with_prev(mut w: WatchCreateRequest) -> WatchCreateRequest {
    w.prev_kv = true;
    w
}

fn created(header: i64) -> WatchOutput {
    WatchOutput {
        revision: header,
        created: true,
        ..WatchOutput::default()
    }
}

fn events(header: i64, events: Vec<Event>) -> WatchOutput {
    WatchOutput {
        revision: header,
        events,
        ..WatchOutput::default()
    }
}

/// A stream-wide progress response.
fn progress(header: i64) -> WatchOutput {
    WatchOutput {
        watch_id: -1,
        revision: header,
        ..WatchOutput::default()
    }
}

fn compacted(header: i64, compact_revision: i64) -> WatchOutput {
    WatchOutput {
        revision: header,
        canceled: true,
        compact_revision,
        ..WatchOutput::default()
    }
}

fn record(create: WatchCreateRequest, responses: Vec<WatchOutput>, end: WatchEnd) -> WatchRecord {
    WatchRecord {
        client: 7,
        create,
        responses,
        end,
    }
}

#[track_caller]
fn accepted(w: &WatchRecord) -> WatchStats {
    match check_watch(&truth(), w) {
        Ok(stats) => stats,
        Err(v) => panic!("expected a correct record, got:\n{v}"),
    }
}

/// Asserts a violation at `response` whose message contains `needle`.
#[track_caller]
fn rejected(w: &WatchRecord, response: Option<usize>, needle: &str) -> WatchViolation {
    let v = check_watch(&truth(), w).expect_err("expected a violation");
    assert_eq!(v.response, response, "at the wrong place:\n{v}");
    assert!(v.what.contains(needle), "expected {needle:?} in:\n{v}");
    v
}

// ----- accepted -----

/// A watch from the past with prev_kv, served in two catch-up chunks.
#[test]
fn accepts_history_with_prev_kv() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2(), a4()]),
            events(7, vec![a5(), a6()]),
        ],
        WatchEnd::OpenCaughtUp,
    );
    let stats = accepted(&w);
    assert_eq!(
        stats,
        WatchStats {
            watches: 1,
            responses: 3,
            events_validated: 4,
            progress_responses: 0,
            compaction_cancels: 0,
        }
    );
}

/// A watch from "now" starts after the created header revision; live
/// headers are the events' revisions.
#[test]
fn accepts_live_watch_from_now() {
    let w = record(
        watch("a", b"", 0),
        vec![
            created(3),
            events(4, vec![bare(a4())]),
            events(5, vec![bare(a5())]),
            events(6, vec![a6()]),
        ],
        WatchEnd::OpenCaughtUp,
    );
    assert_eq!(accepted(&w).events_validated, 3);
}

/// Filters drop puts or deletes.
#[test]
fn accepts_filters() {
    let mut no_put = watch("a", b"", 2);
    no_put.filters = vec![WatchFilter::Noput as i32];
    accepted(&record(
        no_put,
        vec![created(7), events(7, vec![bare(a5())])],
        WatchEnd::OpenCaughtUp,
    ));
    let mut no_delete = with_prev(watch("a", b"", 2));
    no_delete.filters = vec![WatchFilter::Nodelete as i32];
    accepted(&record(
        no_delete,
        vec![created(7), events(7, vec![a2(), a4(), a6()])],
        WatchEnd::OpenCaughtUp,
    ));
}

/// Ranges: `[a, c)` leaves c and z out; `b` to `[0]` is every key from b.
#[test]
fn accepts_ranges() {
    accepted(&record(
        watch("a", b"c", 1),
        vec![
            created(7),
            events(7, vec![a2(), b3(), bare(a4())]),
            events(7, vec![bare(a5()), a6()]),
        ],
        WatchEnd::OpenCaughtUp,
    ));
    accepted(&record(
        watch("b", &[0], 3),
        vec![created(7), events(7, vec![b3(), c4(), z7()])],
        WatchEnd::OpenCaughtUp,
    ));
    accepted(&record(
        watch("\0", &[0], 4),
        vec![
            created(7),
            events(7, vec![bare(a4()), c4(), bare(a5())]),
            events(7, vec![a6(), z7()]),
        ],
        WatchEnd::OpenCaughtUp,
    ));
}

/// Progress responses (stream-wide and the watch's own) promise what came before.
#[test]
fn accepts_progress() {
    let mut own = progress(7);
    own.watch_id = 0;
    let stats = accepted(&record(
        watch("b", b"", 0),
        vec![created(3), progress(5), own],
        WatchEnd::OpenCaughtUp,
    ));
    assert_eq!(stats.progress_responses, 2);
    // Progress beneath a future start revision promises nothing.
    accepted(&record(
        watch("a", b"", 6),
        vec![created(3), progress(4), events(6, vec![a6()])],
        WatchEnd::OpenCaughtUp,
    ));
}

/// A watcher behind compaction 4 is cancelled with compact_revision 4.
#[test]
fn accepts_compaction_cancel() {
    let stats = accepted(&record(
        watch("a", b"", 2),
        vec![created(7), compacted(7, 4)],
        WatchEnd::Canceled,
    ));
    assert_eq!(stats.compaction_cancels, 1);
    // Behind after some events.
    accepted(&record(
        watch("a", b"", 2),
        vec![created(7), events(7, vec![bare(a2())]), compacted(7, 4)],
        WatchEnd::Canceled,
    ));
}

/// Client-requested cancels and refusals.
#[test]
fn accepts_cancels_and_refusals() {
    let mut cancel = compacted(6, 0);
    cancel.compact_revision = 0;
    accepted(&record(
        watch("a", b"", 0),
        vec![created(5), events(6, vec![a6()]), cancel],
        WatchEnd::Canceled,
    ));
    let refusal = WatchOutput {
        watch_id: -1,
        revision: 3,
        created: true,
        canceled: true,
        cancel_reason: t4_core::watch::ERR_EMPTY_RANGE.to_owned(),
        ..WatchOutput::default()
    };
    accepted(&record(
        watch("b", b"a", 0),
        vec![refusal],
        WatchEnd::Canceled,
    ));
    // A broken stream is only a prefix; no responses at all is fine too.
    accepted(&record(watch("a", b"", 2), vec![], WatchEnd::Broken));
}

/// Replayed from the watermark (compaction 4, applied at 6), revision 4
/// comes without prev_kv; before the compaction applied it may not.
#[test]
fn accepts_watermark_replay_without_prev_kv_only_after_the_compaction() {
    let w = record(
        with_prev(watch("a", b"", 4)),
        vec![created(6), events(6, vec![bare(a4()), a5(), a6()])],
        WatchEnd::OpenCaughtUp,
    );
    accepted(&w);
    let early = record(
        with_prev(watch("a", b"", 4)),
        vec![created(5), events(5, vec![bare(a4()), a5()])],
        WatchEnd::Open,
    );
    rejected(&early, Some(1), "revision 4 differs");
    // Only at the watermark revision itself.
    let later = record(
        with_prev(watch("a", b"", 4)),
        vec![created(6), events(6, vec![bare(a4()), bare(a5()), a6()])],
        WatchEnd::Open,
    );
    rejected(&later, Some(1), "revision 5 differs");
}

/// A put that its own revision then deleted is skipped by a replay from that
/// revision as the watermark (etcd loses it too), and only then.
#[test]
fn accepts_skipped_superseded_put_at_the_watermark() {
    let t = replay(&log(vec![
        put("a", "0"), // @2
        txn(vec![
            req::op(req::txn(vec![], vec![op_put("a", "1")], vec![])),
            req::op(req::txn(vec![], vec![req::op(req::del(b"a", b""))], vec![])),
        ]), // @3: put a=1, delete a
        put("b", "0"), // @4
        compact(3),    // applies at 4
    ]))
    .expect("replays");
    let replayed = record(
        watch("a", b"", 3),
        vec![created(4), events(4, vec![del_ev("a", 3, None)])],
        WatchEnd::OpenCaughtUp,
    );
    check_watch(&t, &replayed).expect("skipping the overwritten put at the watermark is legal");
    let t_uncompacted = replay(&log(vec![
        put("a", "0"),
        txn(vec![
            req::op(req::txn(vec![], vec![op_put("a", "1")], vec![])),
            req::op(req::txn(vec![], vec![req::op(req::del(b"a", b""))], vec![])),
        ]),
        put("b", "0"),
    ]))
    .expect("replays");
    let v = check_watch(&t_uncompacted, &replayed).expect_err("no compaction: the put is owed");
    assert!(v.what.contains("revision 3 incomplete"), "{v}");
}

/// `check_all` sums the stats of every record.
#[test]
fn check_all_sums_and_stops_at_the_first_violation() {
    let t = truth();
    let good = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2(), a4()]),
            events(7, vec![a5(), a6()]),
        ],
        WatchEnd::OpenCaughtUp,
    );
    let also_good = record(
        watch("b", b"", 0),
        vec![created(3), progress(7)],
        WatchEnd::Open,
    );
    let stats = check_all(&t, &[good.clone(), also_good.clone()]).expect("both correct");
    assert_eq!(
        stats,
        WatchStats {
            watches: 2,
            responses: 5,
            events_validated: 4,
            progress_responses: 1,
            compaction_cancels: 0,
        }
    );
    let mut bad = good.clone();
    bad.client = 3;
    bad.responses.remove(1);
    let v = check_all(&t, &[also_good, bad, good]).expect_err("one is wrong");
    assert_eq!(v.client, 3);
}

// ----- rejected -----

/// A missing revision (gap) is caught where the next event arrives.
#[test]
fn rejects_a_gap() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2()]),
            events(7, vec![a5(), a6()]),
        ],
        WatchEnd::Open,
    );
    rejected(&w, Some(2), "missing revision 4");
}

/// The same event twice.
#[test]
fn rejects_a_duplicate() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2(), a4()]),
            events(7, vec![a4(), a5(), a6()]),
        ],
        WatchEnd::Open,
    );
    rejected(&w, Some(2), "duplicate or out of order");
    let within = record(
        with_prev(watch("a", b"", 2)),
        vec![created(7), events(7, vec![a2(), a4(), a4()])],
        WatchEnd::Open,
    );
    rejected(&within, Some(1), "revision 4 differs");
}

/// Revisions out of order, and events of one revision out of op order.
#[test]
fn rejects_reordering() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![created(7), events(7, vec![a4(), a2()])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "missing revision 2");
    let revisions = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2()]),
            events(7, vec![a5(), a4()]),
        ],
        WatchEnd::Open,
    );
    rejected(&revisions, Some(2), "missing revision 4");
    let within = record(
        watch("a", &[0], 4),
        vec![created(7), events(7, vec![c4(), bare(a4())])],
        WatchEnd::Open,
    );
    rejected(&within, Some(1), "revision 4 differs");
}

/// prev_kv must be the truth's.
#[test]
fn rejects_a_wrong_prev_kv() {
    let mut wrong = a4();
    wrong.prev_kv = Some(kv("a", "0", 2, 2, 1));
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![created(7), events(7, vec![a2(), wrong])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "revision 4 differs");
    let missing = record(
        with_prev(watch("a", b"", 5)),
        vec![created(7), events(7, vec![bare(a5())])],
        WatchEnd::Open,
    );
    rejected(&missing, Some(1), "revision 5 differs");
}

/// prev_kv only when asked for.
#[test]
fn rejects_prev_kv_not_asked_for() {
    let w = record(
        watch("a", b"", 4),
        vec![created(7), events(7, vec![a4()])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "did not ask for");
}

/// A filtered event delivered.
#[test]
fn rejects_a_filtered_event() {
    let mut no_put = watch("a", b"", 2);
    no_put.filters = vec![WatchFilter::Noput as i32];
    let w = record(
        no_put,
        vec![created(7), events(7, vec![a2()])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "filtered out");
    let mut no_delete = watch("a", b"", 5);
    no_delete.filters = vec![WatchFilter::Nodelete as i32];
    let w = record(
        no_delete,
        vec![created(7), events(7, vec![bare(a5())])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "filtered out");
}

/// A revision's events split over two responses.
#[test]
fn rejects_a_split_revision() {
    let w = record(
        watch("a", &[0], 4),
        vec![
            created(7),
            events(7, vec![bare(a4())]),
            events(7, vec![c4()]),
        ],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "atomicity");
}

/// Header revisions never go back, and cover the response's events.
#[test]
fn rejects_bad_header_revisions() {
    let w = record(
        watch("a", b"", 0),
        vec![
            created(3),
            events(4, vec![bare(a4())]),
            events(3, vec![bare(a5())]),
        ],
        WatchEnd::Open,
    );
    rejected(&w, Some(2), "went backwards");
    let below = record(
        watch("a", b"", 0),
        vec![created(3), events(4, vec![bare(a4()), bare(a5())])],
        WatchEnd::Open,
    );
    rejected(&below, Some(1), "below its last event's revision");
    let beyond = record(watch("a", b"", 0), vec![created(8)], WatchEnd::Open);
    rejected(&beyond, Some(0), "above the final revision");
}

/// A compaction cancel when the watcher was not behind the compaction.
#[test]
fn rejects_a_compaction_cancel_when_not_behind() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![created(7), events(7, vec![a2(), a4()]), compacted(7, 4)],
        WatchEnd::Canceled,
    );
    rejected(&w, Some(2), "not behind");
    let from_now = record(
        watch("a", b"", 0),
        vec![created(6), compacted(7, 4)],
        WatchEnd::Canceled,
    );
    rejected(&from_now, Some(1), "not behind");
}

/// A compaction cancel must name a compaction that took effect, after it applied.
#[test]
fn rejects_a_compaction_cancel_for_no_compaction() {
    let w = record(
        watch("a", b"", 2),
        vec![created(7), compacted(7, 3)],
        WatchEnd::Canceled,
    );
    rejected(&w, Some(1), "not a compaction that took effect");
    let early = record(
        watch("a", b"", 2),
        vec![created(5), compacted(5, 4)],
        WatchEnd::Canceled,
    );
    rejected(&early, Some(1), "applied only at revision 6");
}

/// A cancel needs a reason, a compaction, or the client's request.
#[test]
fn rejects_an_unexplained_cancel() {
    let mut cancel = compacted(6, 0);
    cancel.compact_revision = 0;
    let w = record(
        watch("a", b"", 0),
        vec![created(5), cancel],
        WatchEnd::Broken,
    );
    rejected(&w, Some(1), "neither a reason nor a compact_revision");
}

/// Nothing after a cancel.
#[test]
fn rejects_a_response_after_cancel() {
    let w = record(
        watch("a", b"", 2),
        vec![created(7), compacted(7, 4), progress(7)],
        WatchEnd::Canceled,
    );
    rejected(&w, Some(2), "after the watch was canceled");
}

/// OpenCaughtUp owes everything to the final revision; Open only a prefix.
#[test]
fn rejects_caught_up_watch_missing_the_last_event() {
    let responses = vec![created(7), events(7, vec![a2(), a4(), a5()])];
    let w = record(
        with_prev(watch("a", b"", 2)),
        responses.clone(),
        WatchEnd::OpenCaughtUp,
    );
    let v = rejected(&w, None, "missed events at the end");
    assert!(v.what.contains("missing revision 6"), "{v}");
    accepted(&record(
        with_prev(watch("a", b"", 2)),
        responses,
        WatchEnd::Open,
    ));
    let never = record(watch("a", b"", 0), vec![], WatchEnd::OpenCaughtUp);
    rejected(&never, None, "never created");
}

/// An event of a key outside the watched range.
#[test]
fn rejects_an_event_outside_the_range() {
    let w = record(
        watch("a", b"", 3),
        vec![created(7), events(7, vec![b3()])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "outside the watched range");
    let range = record(
        watch("a", b"c", 4),
        vec![created(7), events(7, vec![bare(a4()), c4()])],
        WatchEnd::Open,
    );
    rejected(&range, Some(1), "outside the watched range");
}

/// Values and kinds are compared exactly.
#[test]
fn rejects_altered_events() {
    let mut value = a2();
    value.kv.as_mut().expect("kv").value = b"x".to_vec();
    let w = record(
        watch("a", b"", 2),
        vec![created(7), events(7, vec![value])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "revision 2 differs");
    let mut shape = bare(a5());
    shape.kv.as_mut().expect("kv").version = 3;
    let w = record(
        watch("a", b"", 5),
        vec![created(7), events(7, vec![shape])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "revision 5 differs");
}

/// Events before the start revision.
#[test]
fn rejects_events_before_the_start() {
    let w = record(
        watch("a", b"", 4),
        vec![created(7), events(7, vec![bare(a2())])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "before the first revision owed 4");
    let from_now = record(
        watch("a", b"", 0),
        vec![created(4), events(4, vec![bare(a4())])],
        WatchEnd::Open,
    );
    rejected(&from_now, Some(1), "before the first revision owed 5");
}

/// The first response must be `created`, and only the first.
#[test]
fn rejects_a_missing_or_second_created() {
    let w = record(
        watch("a", b"", 2),
        vec![events(7, vec![bare(a2())])],
        WatchEnd::Open,
    );
    rejected(&w, Some(0), "not `created`");
    let twice = record(
        watch("a", b"", 0),
        vec![created(3), created(4)],
        WatchEnd::Open,
    );
    rejected(&twice, Some(1), "second `created`");
}

/// A progress response before owed events breaks its promise.
#[test]
fn rejects_progress_ahead_of_events() {
    let w = record(
        watch("a", b"", 0),
        vec![created(3), progress(4), events(4, vec![bare(a4())])],
        WatchEnd::Open,
    );
    rejected(&w, Some(1), "progress at revision 4");
}

/// The message names the client, the watch, the response and the problem.
#[test]
fn violation_message_is_readable() {
    let w = record(
        with_prev(watch("a", b"", 2)),
        vec![
            created(7),
            events(7, vec![a2()]),
            events(7, vec![a5(), a6()]),
        ],
        WatchEnd::Open,
    );
    let text = check_watch(&truth(), &w).expect_err("gap").to_string();
    for needle in [
        "client 7",
        "key \"a\" from revision 2 (prev_kv)",
        "response #2 of 3 (header revision 7)",
        "missing revision 4",
        "PUT \"a\"=\"2\"@4 c2 v2 [prev \"a\"=\"1\"@2 c2 v1]",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(text.lines().count() <= 4, "a few lines:\n{text}");
}

// ----- streams made by the real watch hub -----

/// Drives core's watch hub with random watchers (past, present and future
/// starts, ranges, filters, prev_kv, progress), tiny stream buffers (stalls,
/// catch-up from history) and compactions; every stream it produces must
/// pass the checker, and some must have been cancelled by compaction.
#[test]
fn streams_of_the_real_hub_pass() {
    let mut total = WatchStats::default();
    for seed in 0..30 {
        let (truth, records) = hub_run(seed);
        total += match check_all(&truth, &records) {
            Ok(stats) => stats,
            Err(v) => panic!("seed {seed}: the real hub's stream was rejected:\n{v}"),
        };
    }
    assert!(total.compaction_cancels > 0, "{total:?}");
    assert!(total.progress_responses > 0, "{total:?}");
    assert!(total.events_validated > 1000, "{total:?}");
}

/// The real hub's caught-up streams, each broken one way: the checker
/// rejects every one (a lost last event, a duplicated event, a lost response).
#[test]
fn broken_streams_of_the_real_hub_are_rejected() {
    let mut mutants = 0;
    for seed in 0..30 {
        let (truth, records) = hub_run(seed);
        for w in &records {
            let with_events: Vec<usize> = (0..w.responses.len())
                .filter(|&i| !w.responses[i].events.is_empty())
                .collect();
            if w.end != WatchEnd::OpenCaughtUp || with_events.is_empty() {
                continue;
            }
            let last = *with_events.last().expect("not empty");
            let mut lost = w.clone();
            lost.responses[last].events.pop();
            let mut doubled = w.clone();
            let first = with_events[0];
            let copy = doubled.responses[first].events[0].clone();
            doubled.responses[first].events.insert(0, copy);
            let mut gap = w.clone();
            gap.responses.remove(with_events[with_events.len() / 2]);
            for (what, mutant) in [
                ("lost event", lost),
                ("duplicate", doubled),
                ("lost response", gap),
            ] {
                assert!(
                    check_watch(&truth, &mutant).is_err(),
                    "seed {seed}: {what} accepted in {mutant:?}"
                );
                mutants += 1;
            }
        }
    }
    assert!(mutants > 100, "only {mutants} mutants");
}

/// One random run of the hub: the truth and the recorded streams.
fn hub_run(seed: u64) -> (Truth, Vec<WatchRecord>) {
    let engine = MemEngine::new();
    let mut store = Store::open(&engine).expect("open");
    let mut hub = WatchHub::new(WatchConfig {
        stream_buffer_max: 3,
        progress_interval_nanos: 50,
        catch_up_events_max: 2,
    });
    let mut gen = Gen::new(seed);
    let stream = StreamId(1);
    let mut now = Time(0);
    hub.handle(
        now,
        WatchInput::OpenStream { stream },
        &engine,
        store.meta(),
    );

    let mut entries: Vec<Entry> = Vec::new();
    let mut records: Vec<WatchRecord> = Vec::new();
    // Creates not yet answered, in order (record index).
    let mut pending: VecDeque<usize> = VecDeque::new();
    // Open watches: watch id -> record index.
    let mut open: BTreeMap<i64, usize> = BTreeMap::new();
    let mut outstanding = 0usize;

    for _ in 0..400 {
        now = now.plus_nanos(gen.rng.below(20));
        let meta = *store.meta();
        match gen.rng.below(100) {
            0..=54 => {
                let index = entries.len() as u64 + 1;
                let entry = Entry::write(
                    Term(1),
                    Index(index),
                    gen.write(meta.current_revision, meta.compact_revision),
                );
                let applied = store.apply(&engine, &entry).expect("apply");
                hub.on_applied(now, store.meta(), &applied.events);
                entries.push(entry);
            }
            55..=64 => {
                let (key, range_end) = gen.key_range(3);
                let mut filters = Vec::new();
                if gen.rng.chance(1, 6) {
                    filters.push(WatchFilter::Noput as i32);
                }
                if gen.rng.chance(1, 6) {
                    filters.push(WatchFilter::Nodelete as i32);
                }
                let create = WatchCreateRequest {
                    key,
                    range_end,
                    start_revision: gen.revision(meta.current_revision, meta.compact_revision),
                    progress_notify: gen.rng.chance(1, 3),
                    filters,
                    prev_kv: gen.rng.chance(1, 2),
                    ..WatchCreateRequest::default()
                };
                pending.push_back(records.len());
                records.push(WatchRecord {
                    client: records.len(),
                    create: create.clone(),
                    responses: Vec::new(),
                    end: WatchEnd::OpenCaughtUp,
                });
                hub.handle(
                    now,
                    WatchInput::Create {
                        stream,
                        req: create,
                    },
                    &engine,
                    &meta,
                );
            }
            65..=67 => {
                let ids: Vec<i64> = open.keys().copied().collect();
                if !ids.is_empty() {
                    let watch_id = *gen.rng.pick(&ids);
                    records[open[&watch_id]].end = WatchEnd::Canceled;
                    hub.handle(now, WatchInput::Cancel { stream, watch_id }, &engine, &meta);
                }
            }
            68..=72 => hub.handle(now, WatchInput::Progress { stream }, &engine, &meta),
            73..=87 => {
                let outputs = gen.rng.below(outstanding as u64 + 1) as usize;
                outstanding -= outputs;
                hub.handle(
                    now,
                    WatchInput::Consumed { stream, outputs },
                    &engine,
                    &meta,
                );
            }
            _ => hub.handle_timeout(now, &engine, &meta),
        }
        drain(
            &mut hub,
            &mut records,
            &mut pending,
            &mut open,
            &mut outstanding,
        );
    }
    // Quiet period: everything consumed, catch-up run to the end.
    for round in 0.. {
        assert!(round < 100_000, "seed {seed}: the hub never caught up");
        let meta = *store.meta();
        hub.handle(
            now,
            WatchInput::Consumed {
                stream,
                outputs: outstanding,
            },
            &engine,
            &meta,
        );
        outstanding = 0;
        hub.handle_timeout(now, &engine, &meta);
        drain(
            &mut hub,
            &mut records,
            &mut pending,
            &mut open,
            &mut outstanding,
        );
        if hub.poll_timeout().is_none_or(|at| at > now) && outstanding == 0 {
            break;
        }
    }
    assert!(pending.is_empty(), "every create was answered");
    for &i in open.values() {
        // Still open after the quiet period; a client cancel that the hub
        // ignored cannot happen (the id was open).
        assert_eq!(records[i].end, WatchEnd::OpenCaughtUp);
    }
    (replay(&entries).expect("replays"), records)
}

/// Hands every hub output to the record it belongs to.
fn drain(
    hub: &mut WatchHub,
    records: &mut [WatchRecord],
    pending: &mut VecDeque<usize>,
    open: &mut BTreeMap<i64, usize>,
    outstanding: &mut usize,
) {
    while let Some(out) = hub.poll_output() {
        *outstanding += 1;
        if out.created {
            let i = pending.pop_front().expect("a create was sent");
            if out.canceled {
                records[i].end = WatchEnd::Canceled;
            } else {
                open.insert(out.watch_id, i);
            }
            records[i].responses.push(out);
        } else if out.watch_id == -1 {
            for &i in open.values() {
                records[i].responses.push(out.clone());
            }
        } else {
            let i = open[&out.watch_id];
            if out.canceled {
                open.remove(&out.watch_id);
                records[i].end = WatchEnd::Canceled;
            }
            records[i].responses.push(out);
        }
    }
}
