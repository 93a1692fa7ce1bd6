//! Cluster-mode helpers shared by `cluster.rs` (directory-store bucket) and
//! `cluster_s3.rs` (moto): starting members, waiting for a leader, writers
//! that record what was acknowledged, and the checks on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use super::Server;

/// Election timeout of the test clusters (short, so a failover fits in a
/// test; the default is 1 s).
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Lock TTL of the test clusters (the default is 5 s).
pub const LOCK_TTL_MS: u64 = 1500;

/// What a read or the writers saw: key → (value, mod revision).
pub type Kvs = BTreeMap<String, (String, i64)>;
/// What the writers saw acknowledged, shared between them.
pub type Acked = Arc<Mutex<Kvs>>;

/// Starts member `id` with its data directory `root/<id>`, peers on
/// `peer`, the test timeouts, and `flags` (the bucket and anything else).
pub fn start_member(root: &Path, id: &str, peer: SocketAddr, flags: &[String]) -> Server {
    let mut args: Vec<String> = [
        "--node-id",
        id,
        "--peer-listen",
        &peer.to_string(),
        "--election-timeout-ms",
        &ELECTION_TIMEOUT_MS.to_string(),
        "--lock-ttl-ms",
        &LOCK_TTL_MS.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&root.join(id), &args)
}

/// A cluster [`form`] started.
pub struct Formed<const N: usize> {
    /// The members, in the order they were named.
    pub servers: [Server; N],
    /// A client of each member.
    pub clients: [Client; N],
    /// The etcd member id of each member (`MemberList`, `Status`).
    pub ids: [u64; N],
    /// The first leader's term.
    pub term: u64,
}

/// Starts `members` (name, peer address) on `flags` (the shared bucket):
/// the first bootstraps and leads, the others join. Returns once
/// `MemberList` lists every member with its peer URL and every member's
/// `Status` names the first as leader in the same term.
pub async fn form<const N: usize>(
    root: &Path,
    members: [(&str, SocketAddr); N],
    flags: &[String],
) -> Formed<N> {
    let (first, peer) = members[0];
    let mut leader = start_member(root, first, peer, flags);
    let mut leader_client = ready(&mut leader).await;
    let mut servers = vec![leader];
    servers.extend(
        members[1..]
            .iter()
            .map(|(name, peer)| start_member(root, name, *peer, flags)),
    );
    let mut clients = vec![leader_client.clone()];
    for server in &mut servers[1..] {
        clients.push(ready(server).await);
    }
    let listed = wait_members(&mut leader_client, N, Duration::from_secs(30), &servers[0]).await;
    for (name, peer) in members {
        let (id, urls) = &listed[name];
        assert_ne!(*id, 0, "{name}'s member id");
        assert_eq!(urls, &vec![format!("http://{peer}")], "{name}'s peer URLs");
    }
    let ids = members.map(|(name, _)| listed[name].0);
    let (_, term) = leader_and_term(&mut leader_client)
        .await
        .expect("the leader answers Status");
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    wait_status(&mut refs, (ids[0], term), Duration::from_secs(10)).await;
    Formed {
        servers: servers.try_into().ok().expect("N servers"),
        clients: clients.try_into().ok().expect("N clients"),
        ids,
        term,
    }
}

/// Waits until `server` answers a linearizable read (which on a follower
/// needs a leader), at most 60 s.
pub async fn ready(server: &mut Server) -> Client {
    match tokio::time::timeout(Duration::from_secs(60), server.client()).await {
        Ok(client) => client,
        Err(_) => panic!("t4 did not serve within 60 s; log:\n{}", server.log()),
    }
}

/// Name → (member id, peer URLs) as `c`'s node reports them in
/// `MemberList`.
pub async fn member_ids(c: &mut Client) -> BTreeMap<String, (u64, Vec<String>)> {
    c.member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .map(|m| (m.name().to_owned(), (m.id(), m.peer_urls().to_vec())))
        .collect()
}

/// Waits up to `limit` until `c`'s `MemberList` names `want` members;
/// returns them. Panics with `leader`'s log otherwise.
pub async fn wait_members(
    c: &mut Client,
    want: usize,
    limit: Duration,
    leader: &Server,
) -> BTreeMap<String, (u64, Vec<String>)> {
    let deadline = Instant::now() + limit;
    loop {
        let ids = member_ids(c).await;
        if ids.len() == want {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{want} members not listed after {limit:?}: {ids:?}\nleader log:\n{}",
            leader.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (leader id, term) as `c`'s node reports them in `Status`; `None` if it
/// does not answer.
pub async fn leader_and_term(c: &mut Client) -> Option<(u64, u64)> {
    let s = c.status().await.ok()?;
    Some((s.leader(), s.raft_term()))
}

/// Waits up to `limit` until every client's node reports `want` as
/// (leader, term) in `Status` (followers learn the membership and term as
/// they read the lock or hear from the leader).
pub async fn wait_status(clients: &mut [&mut Client], want: (u64, u64), limit: Duration) {
    let deadline = Instant::now() + limit;
    for c in clients.iter_mut() {
        loop {
            let status = leader_and_term(c).await;
            if status == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "status {status:?}, want (leader, term) {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits up to `limit` until every client's node names the same leader,
/// not `old`, in a term above `term`; returns (leader, term). Panics with
/// the logs of `servers` otherwise.
pub async fn wait_new_leader(
    clients: &mut [&mut Client],
    old: u64,
    term: u64,
    limit: Duration,
    servers: &[&Server],
) -> (u64, u64) {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen = Vec::new();
        for c in clients.iter_mut() {
            seen.push(leader_and_term(c).await);
        }
        if let Some(Some((leader, t))) = seen.first() {
            if *leader != 0
                && *leader != old
                && *t > term
                && seen.iter().all(|s| *s == Some((*leader, *t)))
            {
                return (*leader, *t);
            }
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = servers.iter().map(|s| s.log()).collect();
            panic!(
                "no new leader (not {old}, term above {term}) after {limit:?}: (leader, term) {seen:?}\nlogs:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After the leader `old` of `term` went away at `since`: waits (up to
/// 15 s) for a new leader as [`wait_new_leader`] does and asserts that it
/// came within `bound` of `since`; returns (leader, term, how long).
pub async fn wait_failover(
    clients: &mut [&mut Client],
    (old, term): (u64, u64),
    since: Instant,
    bound: Duration,
    servers: &[&Server],
) -> (u64, u64, Duration) {
    let (leader, new_term) =
        wait_new_leader(clients, old, term, Duration::from_secs(15), servers).await;
    let failover = since.elapsed();
    assert!(
        failover < bound,
        "failover took {failover:?} (election timeout {ELECTION_TIMEOUT_MS} ms, lock TTL {LOCK_TTL_MS} ms)"
    );
    (leader, new_term, failover)
}

/// Waits up to `limit` until `c`'s node holds exactly `want` under `w`
/// locally (a serializable read) and names `status` as (leader, term).
pub async fn wait_converged(
    c: &mut Client,
    want: &Kvs,
    status: (u64, u64),
    limit: Duration,
    server: &Server,
) {
    let deadline = Instant::now() + limit;
    loop {
        let now = leader_and_term(c).await;
        let local = all_written(c, true).await;
        if &local == want && now == Some(status) {
            return;
        }
        let differ = want
            .iter()
            .filter(|(k, v)| local.get(*k) != Some(*v))
            .count()
            + local.keys().filter(|k| !want.contains_key(*k)).count();
        assert!(
            Instant::now() < deadline,
            "did not converge in {limit:?}: status {now:?} (want {status:?}), {differ} of {} keys differ\nlog:\n{}",
            want.len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `key`, retrying for up to 20 s while the cluster has no leader to
/// take it ("no leader … retry", "leader changed" before the write reached
/// the log: nothing was applied). Returns the revision. Panics on an
/// outcome it cannot know (a timeout: the write may still land).
pub async fn put_retrying(c: &mut Client, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let put = tokio::time::timeout(Duration::from_secs(10), c.put(key, value, None));
        match put.await {
            Ok(Ok(r)) => return r.header().expect("header").revision(),
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if nothing_applied(&s) => {
                assert!(
                    Instant::now() < deadline,
                    "put {key}: still {s:?} after 20 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => panic!("put {key}: unknown outcome {outcome:?}"),
        }
    }
}

/// Whether a failed write certainly did not happen: the server's
/// `Unavailable` ("etcdserver: no leader … retry"), except etcd's "request
/// timed out" (also `Unavailable`), which says the write may still be
/// committed. A transport error (also `Unavailable`, without the server's
/// prefix) may have lost the answer, not the request.
pub fn nothing_applied(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable
        && s.message().starts_with("etcdserver: ")
        && !s.message().starts_with("etcdserver: request timed out")
}

/// What one writer did: acknowledged puts and failed ones by error.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Puts answered with success.
    pub acked: usize,
    /// Failed puts by what failed them: a gRPC code and message (the
    /// message cut at its first parenthesis, so the kinds group), or
    /// "client timeout".
    pub failed: BTreeMap<String, usize>,
}

/// Puts keys `w{id}/k{i}` with value `value-{id}-{i}` one after another on
/// `endpoint`, recording each acknowledged one in `acked`, until `stop`.
/// A put that fails or is not answered within `put_timeout` has an
/// unknown outcome: it is not recorded and its key is never written again
/// (the next put takes the next key, which is what a retry would do).
pub async fn writer(
    endpoint: String,
    id: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
    put_timeout: Duration,
) -> WriterReport {
    let mut report = WriterReport::default();
    let Ok(mut c) = Client::connect([endpoint], None).await else {
        report.failed.insert("connect".to_owned(), 1);
        return report;
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = (format!("w{id}/k{i}"), format!("value-{id}-{i}"));
        i += 1;
        let put = tokio::time::timeout(put_timeout, c.put(key.clone(), value.clone(), None));
        let failure = match put.await {
            Ok(Ok(r)) => {
                let rev = r.header().expect("put answers a header").revision();
                let earlier = acked
                    .lock()
                    .expect("lock")
                    .insert(key.clone(), (value, rev));
                assert!(earlier.is_none(), "{key} acknowledged twice");
                report.acked += 1;
                continue;
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s))) => {
                let message = s.message().split('(').next().unwrap_or_default();
                format!("{:?}: {}", s.code(), message.trim())
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => "client timeout".to_owned(),
        };
        *report.failed.entry(failure).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report
}

/// Every key under `w`: key → (value, mod revision), by a linearizable
/// read on `c`'s node, or a local (serializable) one.
pub async fn all_written(c: &mut Client, serializable: bool) -> Kvs {
    let mut options = GetOptions::new().with_prefix();
    if serializable {
        options = options.with_serializable();
    }
    c.get("w", Some(options))
        .await
        .expect("get prefix")
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8").to_owned(),
                (kv.value_str().expect("utf-8").to_owned(), kv.mod_revision()),
            )
        })
        .collect()
}

/// Asserts every acknowledged write is in `present` with its value and
/// revision.
pub fn assert_holds(what: &str, present: &Kvs, acked: &Kvs) {
    let missing: Vec<_> = acked
        .iter()
        .filter(|(k, v)| present.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v:?} (found {:?})", present.get(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged writes missing or different: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
