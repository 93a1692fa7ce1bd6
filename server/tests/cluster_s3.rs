//! Cluster mode against the real binary on a real S3 server: three
//! `t4 run` processes on loopback whose `leader-lock` lives in a moto
//! bucket (`--s3-bucket`, `--s3-endpoint`), so every election is a
//! conditional PUT over HTTP that moto serves one at a time.
//!
//! Two tests, three scenarios (ARCHITECTURE §3.5–3.7, issue 7 "Real
//! processes"):
//! 1. kill -9 of the leader under load from writers on every member (two
//!    of them forwarding): the survivors elect a new leader within a few
//!    seconds in a higher term, and a linearizable read on each survivor
//!    finds every acknowledged write with its value and revision;
//! 2. (the same test, as it needs a killed member) the killed member
//!    restarts with its data directory deleted: it rejoins as an
//!    empty-disk member, converges on every acknowledged write, is still
//!    one of three members, and counts toward a majority again;
//! 3. SIGSTOP of the leader under load for longer than the election
//!    timeout plus the lock TTL: the others elect a new leader; after
//!    SIGCONT the old leader steps down to a follower of the new term
//!    without a restart, and every write any member acknowledged, before,
//!    during or after the pause, is on all three members with the revision
//!    its answer gave (no two of them share one).
//!
//! Needs moto: `scripts/setup` installs it; each test starts its own moto
//! (single-threaded, so conditional PUTs have one winner) and stops it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{
    all_written, assert_holds, form, member_ids, put_retrying, ready, start_member, wait_converged,
    wait_failover, wait_status, writer, Acked, Formed, Kvs, WriterReport, ELECTION_TIMEOUT_MS,
    LOCK_TTL_MS,
};
use common::{free_addr, Moto, Server};
use tokio::task::JoinHandle;

/// Writers per member, each on its own connection.
const WRITERS_PER_MEMBER: usize = 2;

/// How long a writer waits for an answer before it counts the put as
/// unknown: longer than the pause in scenario 3, so puts the paused leader
/// holds are answered by it after it resumes.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// A new leader must lead within this of the old one's loss (failure
/// detection is about election timeout + lock TTL = 2 s).
const FAILOVER_MAX: Duration = Duration::from_secs(6);

/// The resumed old leader answers its clients again within this (the
/// server's request timeout is 5 s: a request whose answer was lost waits
/// that long).
const SERVE_AGAIN_MAX: Duration = Duration::from_secs(4);

/// The members' names.
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// A moto bucket for one test and the `t4 run` flags naming it.
fn moto_bucket(bucket: &str) -> (Moto, Vec<String>) {
    let moto = Moto::start();
    moto.create_bucket(bucket);
    let flags = moto.flags(bucket, "cluster/");
    (moto, flags)
}

/// The three members' peer addresses.
fn peers() -> [(&'static str, SocketAddr); 3] {
    NAMES.map(|name| (name, free_addr()))
}

/// Writers under load on every member: writer `id` talks to member
/// `id / WRITERS_PER_MEMBER`.
struct Load {
    acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<WriterReport>>,
}

impl Load {
    fn start(servers: &[&Server]) -> Load {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = servers
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.endpoint(), WRITERS_PER_MEMBER))
            .enumerate()
            .map(|(id, endpoint)| {
                tokio::spawn(writer(
                    endpoint,
                    id,
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                    PUT_TIMEOUT,
                ))
            })
            .collect();
        Load { acked, stop, tasks }
    }

    /// Acknowledged so far.
    fn acked(&self) -> Kvs {
        self.acked.lock().expect("lock").clone()
    }

    /// Acknowledged so far by member `member`'s writers.
    fn acked_by(&self, member: usize) -> usize {
        self.acked()
            .keys()
            .filter(|k| writer_of(k) / WRITERS_PER_MEMBER == member)
            .count()
    }

    /// Stops the writers; returns what they acknowledged, after printing
    /// each one's report.
    async fn stop(self) -> Kvs {
        self.stop.store(true, Ordering::Relaxed);
        for (id, task) in self.tasks.into_iter().enumerate() {
            let report = task.await.expect("writer task");
            eprintln!(
                "writer {id} (n{}): {} acknowledged, failed {:?}",
                id / WRITERS_PER_MEMBER + 1,
                report.acked,
                report.failed
            );
        }
        let acked = self.acked.lock().expect("lock");
        acked.clone()
    }
}

/// The writer id in a key `w{id}/k{i}`.
/// The last index of the bucket's WAL, as `t4 status --json` reads it.
fn bucket_wal_last_index(flags: &[String]) -> u64 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["status", "--json"])
        .args(flags)
        .output()
        .expect("run t4 status");
    assert!(
        out.status.success(),
        "t4 status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("t4 status JSON");
    json["wal"]["last_index"].as_u64().unwrap_or(0)
}

fn writer_of(key: &str) -> usize {
    key.strip_prefix('w')
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a writer's key"))
}

/// Asserts no two acknowledged writes share a revision (every key is
/// written once, so each acknowledgement is a distinct write).
fn assert_revisions_distinct(acked: &Kvs) {
    let mut by_revision: BTreeMap<i64, &str> = BTreeMap::new();
    for (key, (_, revision)) in acked {
        if let Some(other) = by_revision.insert(*revision, key) {
            panic!("{other} and {key} were both acknowledged at revision {revision}");
        }
    }
}

/// Scenarios 1 and 2: kill -9 of the leader under load, then a restart of
/// it with a wiped data directory; meanwhile the new leader uploads the
/// committed log to moto (`t4 status` sees the bucket's WAL reach the
/// commit index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_rejoins_with_a_wiped_disk() {
    let (_moto, flags) = moto_bucket("t4-cluster-kill");
    let root = tempfile::tempdir().expect("tempdir");
    let peers = peers();
    let Formed {
        servers: [mut n1, n2, n3],
        clients: [_, mut c2, mut c3],
        ids,
        term: term1,
    } = form(root.path(), peers, &flags).await;

    // 1. Writers everywhere; kill -9 the leader.
    let load = Load::start(&[&n1, &n2, &n3]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = load.acked().len();
    n1.kill9();
    let killed_at = Instant::now();
    let (leader, term2, failover) = wait_failover(
        &mut [&mut c2, &mut c3],
        (ids[0], term1),
        killed_at,
        FAILOVER_MAX,
        &[&n2, &n3],
    )
    .await;
    eprintln!("new leader {leader} in term {term2} (was {term1}) {failover:?} after kill -9");
    // The survivors take writes again, forwarded ones included.
    let at_failover = load.acked().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acked = load.stop().await;
    eprintln!(
        "acknowledged writes: {before_kill} before the kill, {at_failover} at the failover, {} in all",
        acked.len()
    );
    assert!(
        before_kill > 10,
        "writes were acknowledged before the kill ({before_kill})"
    );
    assert!(
        acked.len() > at_failover,
        "writes were acknowledged after the failover"
    );
    assert_revisions_distinct(&acked);
    for (name, c) in [("n2", &mut c2), ("n3", &mut c3)] {
        let present = all_written(c, false).await;
        assert_holds(
            &format!("a linearizable read on {name} after the failover"),
            &present,
            &acked,
        );
    }

    // 2. n1 restarts on an empty data directory (same name and peer
    // address): it rejoins and converges.
    std::fs::remove_dir_all(&n1.data_dir).expect("wipe n1's data directory");
    let restarted_at = Instant::now();
    let mut n1 = start_member(root.path(), "n1", peers[0].1, &flags);
    let mut c1 = ready(&mut n1).await;
    let want = all_written(&mut c2, false).await;
    wait_converged(
        &mut c1,
        &want,
        (leader, term2),
        Duration::from_secs(30),
        &n1,
    )
    .await;
    eprintln!(
        "n1 restarted on an empty disk, converged on {} keys in {:?}",
        want.len(),
        restarted_at.elapsed()
    );
    assert_holds("n1 after its wiped restart", &want, &acked);
    for c in [&mut c1, &mut c2, &mut c3] {
        let members = member_ids(c).await;
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            NAMES,
            "MemberList still shows the three members"
        );
        assert_eq!(members["n1"].0, ids[0], "n1 keeps its member id");
    }
    // A write through n1 is forwarded and lands everywhere.
    let rev = put_retrying(&mut c1, "w-after/rejoin", "via-n1").await;
    for c in [&mut c2, &mut c3] {
        let kv = c.get("w-after/rejoin", None).await.expect("get");
        assert_eq!(kv.kvs()[0].mod_revision(), rev);
    }

    // The leader uploads the committed log to the bucket in the
    // background (segments sealed after the default 10 s): `t4 status`,
    // reading the bucket directly, sees the WAL reach the commit index.
    let commit = c2.status().await.expect("status").raft_index();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = bucket_wal_last_index(&flags);
        if last >= commit {
            eprintln!("the bucket's WAL reached {last} (commit index {commit} before)");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bucket's WAL ends at {last}, the commit index is {commit}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // n1 counts toward a majority again: with the other follower gone,
    // the leader commits with n1 alone.
    let (mut other, leader_server, mut leader_client) = if leader == ids[1] {
        (n3, n2, c2)
    } else {
        (n2, n3, c3)
    };
    other.kill9();
    let killed_at = Instant::now();
    let put = tokio::time::timeout(
        PUT_TIMEOUT,
        leader_client.put("w-after/majority", "leader+n1", None),
    )
    .await;
    let rev = match put {
        Ok(Ok(r)) => r.header().expect("header").revision(),
        outcome => panic!(
            "the leader and the rejoined n1 are a majority; put: {outcome:?}\nn1 log:\n{}",
            n1.log()
        ),
    };
    eprintln!(
        "with its other follower killed, the leader committed with n1 in {:?}",
        killed_at.elapsed()
    );
    let kv = c1.get("w-after/majority", None).await.expect("get on n1");
    assert_eq!(kv.kvs()[0].mod_revision(), rev);
    // The leader tells the operator it lost a member.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leader_server.log().contains("member unreachable") {
        assert!(
            Instant::now() < deadline,
            "the leader did not log the lost member:\n{}",
            leader_server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scenario 3: the leader, paused past every timeout under load, steps
/// down when it resumes, and no write any member acknowledged is missing
/// from the final history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_acknowledges_nothing_outside_the_final_history() {
    let (_moto, flags) = moto_bucket("t4-cluster-pause");
    let root = tempfile::tempdir().expect("tempdir");
    let Formed {
        servers: [mut n1, n2, n3],
        clients: [mut c1, mut c2, mut c3],
        ids,
        term: term1,
    } = form(root.path(), peers(), &flags).await;

    // Writers everywhere; SIGSTOP the leader. (A panic below leaves it
    // stopped: dropping it kills it all the same.)
    let load = Load::start(&[&n1, &n2, &n3]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    n1.signal("STOP");
    let stopped_at = Instant::now();
    // Answers n1 sent just before it stopped may still be on their way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_stop = load.acked();
    let by_n1_at_stop = load.acked_by(0);
    let (leader, term2, failover) = wait_failover(
        &mut [&mut c2, &mut c3],
        (ids[0], term1),
        stopped_at,
        FAILOVER_MAX,
        &[&n2, &n3],
    )
    .await;
    let mut leader_client = if leader == ids[1] {
        c2.clone()
    } else {
        c3.clone()
    };
    // The new term takes writes (from n2's and n3's writers) and a marker
    // for the read below, while n1 stays stopped past both timeouts.
    let others_at_failover = load.acked().len() - by_n1_at_stop;
    let marker_rev = put_retrying(&mut leader_client, "w-marker/new-term", "before-resume").await;
    let pause = Duration::from_millis(ELECTION_TIMEOUT_MS + LOCK_TTL_MS + 1000);
    let deadline = stopped_at + Duration::from_secs(15);
    while stopped_at.elapsed() < pause
        || load.acked().len() - load.acked_by(0) < others_at_failover + 20
    {
        assert!(
            Instant::now() < deadline,
            "the new leader acknowledged too few writes\nlogs:\n{}\n----\n{}",
            n2.log(),
            n3.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        load.acked_by(0),
        by_n1_at_stop,
        "a stopped process acknowledges nothing (answers it sent before were counted after 200 ms)"
    );

    // SIGCONT. The old leader answers at once: a linearizable read on it
    // is refused (retryably) or sees the new term's marker, never misses
    // it (its lease ran out while it was stopped, by its own clock).
    n1.signal("CONT");
    let resumed_at = Instant::now();
    let read = tokio::time::timeout(SERVE_AGAIN_MAX, c1.get("w-marker/new-term", None)).await;
    match read {
        Ok(Ok(r)) => assert_eq!(
            r.kvs().first().map(|kv| kv.mod_revision()),
            Some(marker_rev),
            "a linearizable read on the resumed old leader saw {:?}: a stale read\nn1 log:\n{}",
            r.kvs(),
            n1.log()
        ),
        Ok(Err(e)) => eprintln!("the resumed old leader refused a read: {e}"),
        Err(_) => panic!(
            "a read on the resumed old leader was not answered within {SERVE_AGAIN_MAX:?}\nn1 log:\n{}",
            n1.log()
        ),
    }
    // It serves its own clients again, as a follower of the new term
    // forwarding their writes, well within the request timeout: the
    // answers the new leader sends it must not be lost to the connections
    // its pause broke.
    while load.acked_by(0) < by_n1_at_stop + 10 {
        assert!(
            resumed_at.elapsed() < SERVE_AGAIN_MAX,
            "n1's writers acknowledged {} writes in the {SERVE_AGAIN_MAX:?} after SIGCONT\nn1 log:\n{}",
            load.acked_by(0) - by_n1_at_stop,
            n1.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served_again = resumed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acked = load.stop().await;
    let by_n1_since: Vec<i64> = acked
        .iter()
        .filter(|(k, _)| writer_of(k) / WRITERS_PER_MEMBER == 0 && !at_stop.contains_key(*k))
        .map(|(_, (_, revision))| *revision)
        .collect();
    // Acknowledged after SIGCONT below the new term's marker: writes the
    // old leader held through its pause and acknowledged itself, after
    // the new term existed (it had their majority acks queued unread).
    // They must be in the final history like any other.
    let late = by_n1_since.iter().filter(|r| **r < marker_rev).count();
    eprintln!(
        "new leader {leader} in term {term2} (was {term1}) {failover:?} after SIGSTOP; \
         SIGCONT after {:?}; n1 serves again {served_again:?} after it; {} writes acknowledged \
         in all, {by_n1_at_stop} by n1 before the pause and {} by n1 since, {late} of them \
         by the deposed leader for writes it held through the pause",
        resumed_at - stopped_at,
        acked.len(),
        by_n1_since.len(),
    );

    // The old leader follows the new term without a restart.
    wait_status(&mut [&mut c1], (leader, term2), Duration::from_secs(10)).await;
    assert!(n1.exited().is_none(), "n1 keeps running");
    // Every member converges on one history holding every acknowledged
    // write at the revision its answer gave.
    let want = all_written(&mut leader_client, false).await;
    assert_holds("the leader's history", &want, &acked);
    assert_revisions_distinct(&acked);
    for (c, server) in [(&mut c1, &n1), (&mut c2, &n2), (&mut c3, &n3)] {
        wait_converged(c, &want, (leader, term2), Duration::from_secs(15), server).await;
        assert_holds("a linearizable read", &all_written(c, false).await, &acked);
    }
}
