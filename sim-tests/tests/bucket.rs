//! Bucket mode (single node, sync uploads) in the simulator, against the
//! fake S3 with its faults on (throttling, 500s before and after applying,
//! lost answers, late landings, 409s on overlapping conditional puts):
//!
//! - **disk loss**: the node's disk is lost at a random moment under load; a
//!   fresh node on the same bucket has every acknowledged write;
//! - **zombie**: the node is paused, a second node takes the bucket over and
//!   serves, the first resumes: it is fenced, never acknowledges again, and
//!   every write either node acknowledged is in the new node's state;
//! - **checker must bite**: a node that uploads with a plain PUT instead of
//!   `If-None-Match` loses acknowledged writes in the zombie scenario, and
//!   the same check reports it.
//!
//! Every write puts a unique key, so "acknowledged ⇒ present with its value
//! and revision" is the whole check; the node's own linearizability and
//! watch guarantees are the chaos suite's business.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::sleep;
use t4_core::kv::{PutRequest, RangeRequest, WriteRequest, WriteResponse};
use t4_core::node::BucketConfig;
use t4_core::{ClientRequest, NodeConfig, Response};
use t4_io_sim::client::Client;
use t4_io_sim::disk::Disk;
use t4_io_sim::proto::{Reply, Request, NODE_PORT};
use t4_io_sim::s3::{FakeS3, S3Fault, S3Faults, S3_IP};
use t4_io_sim::server::{serve, Bugs, ServerConfig, ServerContext, StatusCell};
use t4_io_sim::wal::Ledger;

const NODE_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const WRITERS: u8 = 4;
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Acknowledged writes: key → (value, revision).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

fn node_config(bugs: Bugs) -> ServerConfig {
    ServerConfig {
        core: NodeConfig {
            bucket: Some(BucketConfig {
                unavailable_after_ns: 3_000_000_000,
                ..BucketConfig::default()
            }),
            trim_every_entries: 200,
            ..ServerConfig::default().core
        },
        bugs,
        ..ServerConfig::default()
    }
}

/// Starts a t4 node process on `ip` with `disk` on the fake S3's bucket.
fn start_node(
    ip: Ipv4Addr,
    name: &str,
    disk: &Disk,
    s3: &FakeS3,
    bugs: Bugs,
) -> (NodeHandle, StatusCell) {
    let status = StatusCell::default();
    let ctx = ServerContext {
        disk: disk.clone(),
        ledger: Ledger::new(),
        config: node_config(bugs),
        status: status.clone(),
        bucket: Some((s3.client(name), name.to_owned())),
    };
    let node = Handle::current()
        .create_node()
        .name(name)
        .ip(IpAddr::V4(ip))
        .init(move || serve(ctx.clone()))
        .build();
    (node, status)
}

/// A client machine that puts unique keys `w<id>-<n>` into the node at
/// `ip` until `stop`, recording every acknowledged one.
fn start_writer(
    id: u8,
    target: Arc<Mutex<Ipv4Addr>>,
    acked: &Acked,
    stop: &Arc<Mutex<bool>>,
) -> NodeHandle {
    let (acked, stop) = (Arc::clone(acked), Arc::clone(stop));
    let node = Handle::current()
        .create_node()
        .name(format!("writer-{id}"))
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, id + 1)))
        .build();
    node.spawn(async move {
        let mut n = 0u64;
        // One endpoint per target: its request ids keep growing, so a late
        // answer to an abandoned call is never taken for a newer one's.
        let mut bound: Option<(Ipv4Addr, Client)> = None;
        while !*stop.lock().expect("lock") {
            let ip = *target.lock().expect("lock");
            if bound.as_ref().is_none_or(|(at, _)| *at != ip) {
                let client = Client::bind(SocketAddr::new(IpAddr::V4(ip), NODE_PORT))
                    .await
                    .expect("bind");
                bound = Some((ip, client));
            }
            let client = &mut bound.as_mut().expect("bound above").1;
            let key = format!("w{id}-{n}");
            n += 1;
            let put = WriteRequest::Put(PutRequest {
                key: key.clone().into_bytes(),
                value: key.clone().into_bytes(),
                ..PutRequest::default()
            });
            let answer = client
                .call(Request::Core(ClientRequest::Write(put)), CALL_TIMEOUT)
                .await;
            if let Some(Ok(Reply::Core(Response::Write(WriteResponse::Put(p))))) = answer {
                acked
                    .lock()
                    .expect("lock")
                    .insert(key.clone(), (key, p.revision));
            }
            sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
        }
    });
    node
}

/// Waits until incarnation `incarnation` (or a later one) of the node
/// reports serving (bounded).
async fn wait_serving(status: &StatusCell, incarnation: u64, what: &str) -> Result<(), String> {
    for _ in 0..600 {
        let s = status.get();
        if let Some(why) = s.refused {
            return Err(format!("{what} refused to start: {why}"));
        }
        if s.serving && s.incarnation >= incarnation {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{what} did not start within 60 s: {:?}",
        status.get()
    ))
}

/// Reads every acknowledged key from the node at `ip`, from a client
/// machine of its own: each must be there with its value and revision.
async fn check_acked(ip: Ipv4Addr, acked: &Acked) -> Result<usize, String> {
    let acked = Arc::clone(acked);
    Handle::current()
        .create_node()
        .name("checker")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)))
        .build()
        .spawn(async move { read_acked(ip, &acked).await })
        .await
        .map_err(|e| format!("checker task: {e}"))?
}

async fn read_acked(ip: Ipv4Addr, acked: &Acked) -> Result<usize, String> {
    let mut client = Client::bind(SocketAddr::new(IpAddr::V4(ip), NODE_PORT))
        .await
        .expect("bind");
    let acked = acked.lock().expect("lock").clone();
    for (key, (value, revision)) in &acked {
        let req = RangeRequest {
            key: key.clone().into_bytes(),
            ..RangeRequest::default()
        };
        let mut answer = None;
        for _ in 0..20 {
            answer = client.call(Request::Range(req.clone()), CALL_TIMEOUT).await;
            if answer.is_some() {
                break;
            }
        }
        let kvs = match answer {
            Some(Ok(Reply::Range(r))) => r.kvs,
            other => return Err(format!("reading {key}: {other:?}")),
        };
        match kvs.first() {
            Some(kv) if kv.value == value.as_bytes() && kv.mod_revision == *revision => {}
            Some(kv) => {
                return Err(format!(
                    "acknowledged {key}={value}@{revision} but found {:?}@{}",
                    String::from_utf8_lossy(&kv.value),
                    kv.mod_revision
                ))
            }
            None => return Err(format!("acknowledged write {key}@{revision} is lost")),
        }
    }
    Ok(acked.len())
}

/// Disk loss at a random moment under load: a fresh start on the same
/// bucket has every acknowledged write.
fn disk_loss(seed: u64) -> Result<String, String> {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async move {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::flaky());
        let disk = Disk::new();
        let (node, status) = start_node(NODE_A, "t4", &disk, &s3, Bugs::default());
        wait_serving(&status, 1, "the node").await?;
        let acked: Acked = Arc::default();
        let stop = Arc::new(Mutex::new(false));
        let target = Arc::new(Mutex::new(NODE_A));
        let _writers: Vec<_> = (0..WRITERS)
            .map(|id| start_writer(id, Arc::clone(&target), &acked, &stop))
            .collect();
        let loss_at = Duration::from_millis(thread_rng().gen_range(500..6_000));
        sleep(loss_at).await;
        let handle = Handle::current();
        handle.kill(node.id());
        disk.lose();
        let before = acked.lock().expect("lock").len();
        sleep(Duration::from_millis(thread_rng().gen_range(0..2_000))).await;
        handle.restart(node.id());
        wait_serving(&status, 2, "the restarted node").await?;
        sleep(Duration::from_secs(2)).await;
        *stop.lock().expect("lock") = true;
        s3.set_faults(S3Faults::none());
        sleep(CALL_TIMEOUT + Duration::from_secs(1)).await;
        let checked = check_acked(NODE_A, &acked).await?;
        let stats = s3.stats();
        let faults: u64 = S3Fault::ALL.iter().map(|f| stats.fault(*f)).sum();
        Ok(format!(
            "disk lost at {loss_at:?} after {before} acks; {checked} acked writes all present; {faults} S3 faults injected"
        ))
    })
}

/// The zombie: A is paused, B takes over and serves, A resumes. A must be
/// fenced and every write either acknowledged must be in B's state.
fn zombie(seed: u64, bugs: Bugs) -> Result<String, String> {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async move {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::flaky());
        let (a, a_status) = start_node(NODE_A, "a", &Disk::new(), &s3, bugs);
        wait_serving(&a_status, 1, "node a").await?;
        let acked: Acked = Arc::default();
        let stop = Arc::new(Mutex::new(false));
        // Half the writers stay on A throughout (the zombie's clients).
        let on_a = Arc::new(Mutex::new(NODE_A));
        let movers = Arc::new(Mutex::new(NODE_A));
        let _writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let target = if id % 2 == 0 { &on_a } else { &movers };
                start_writer(id, Arc::clone(target), &acked, &stop)
            })
            .collect();
        sleep(Duration::from_millis(thread_rng().gen_range(500..3_000))).await;
        let handle = Handle::current();
        handle.pause(a.id());
        let (_b, b_status) = start_node(NODE_B, "b", &Disk::new(), &s3, bugs);
        wait_serving(&b_status, 1, "node b").await?;
        *movers.lock().expect("lock") = NODE_B;
        sleep(Duration::from_millis(thread_rng().gen_range(500..3_000))).await;
        handle.resume(a.id());
        sleep(Duration::from_secs(4)).await;
        *stop.lock().expect("lock") = true;
        s3.set_faults(S3Faults::none());
        sleep(CALL_TIMEOUT + Duration::from_secs(1)).await;
        let checked = match check_acked(NODE_B, &acked).await {
            Ok(n) => n,
            Err(why) => {
                if std::env::var("SIM_DEBUG").is_ok() {
                    dump_bucket(&s3);
                }
                return Err(why);
            }
        };
        // A write sent to the zombie now must not be acknowledged.
        let probe = Handle::current()
            .create_node()
            .name("probe")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 2)))
            .build()
            .spawn(async move {
                let mut client = Client::bind(SocketAddr::new(IpAddr::V4(NODE_A), NODE_PORT))
                    .await
                    .expect("bind");
                let put = WriteRequest::Put(PutRequest {
                    key: b"probe".to_vec(),
                    value: b"zombie".to_vec(),
                    ..PutRequest::default()
                });
                client
                    .call(
                        Request::Core(ClientRequest::Write(put)),
                        Duration::from_secs(10),
                    )
                    .await
            })
            .await
            .map_err(|e| format!("probe task: {e}"))?;
        if let Some(Ok(answer)) = probe {
            if !bugs.upload_without_condition {
                return Err(format!(
                    "the zombie acknowledged a write after b took over: {answer:?} ({:?})",
                    a_status.get()
                ));
            }
        }
        Ok(format!("{checked} acked writes all on b; a fenced"))
    })
}

/// Prints every WAL object of the bucket: its entries' indexes, terms and
/// put keys (SIM_DEBUG).
fn dump_bucket(s3: &FakeS3) {
    for (key, body) in s3.bucket().iter() {
        let Some(first) = t4_core::bucket::layout::parse_wal_key(key) else {
            println!("{key} ({} bytes)", body.len());
            continue;
        };
        let (term, entries) =
            t4_core::bucket::wal_object::decode(key, first, body).expect("decodes");
        let what: Vec<String> = entries
            .iter()
            .map(|e| match &e.payload {
                Some(t4_core::log::Payload::Put(p)) => {
                    format!("{}:{}", e.index, String::from_utf8_lossy(&p.key))
                }
                other => format!("{}:{other:?}", e.index),
            })
            .collect();
        println!("{key} term {term}: {}", what.join(" "));
    }
    for w in s3.writes() {
        println!(
            "write {} by {} at {:?} fate {:?} late {}",
            w.key(),
            w.client,
            w.at,
            w.fate,
            w.late
        );
    }
}

fn seeds() -> std::ops::Range<u64> {
    let n = std::env::var("SIM_BUCKET_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    0..n
}

/// Disk loss in sync mode never loses an acknowledged write.
#[test]
fn disk_loss_keeps_every_acknowledged_write() {
    let mut failures = Vec::new();
    for seed in seeds() {
        match disk_loss(seed) {
            Ok(summary) => println!("disk-loss seed {seed}: {summary}"),
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A paused-then-resumed previous node is fenced; no acknowledged write is
/// lost.
#[test]
fn a_zombie_is_fenced_and_loses_nothing() {
    let mut failures = Vec::new();
    for seed in seeds() {
        match zombie(seed, Bugs::default()) {
            Ok(summary) => println!("zombie seed {seed}: {summary}"),
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check bites: uploading with a plain PUT lets the zombie overwrite
/// the new node's log, and acknowledged writes go missing.
#[test]
fn plain_put_uploads_are_caught() {
    let bugs = Bugs {
        upload_without_condition: true,
        ..Bugs::default()
    };
    let mut caught = 0;
    for seed in seeds() {
        match zombie(seed, bugs) {
            Err(why) if why.contains("acknowledged") => caught += 1,
            Err(why) => panic!("seed {seed} failed for another reason: {why}"),
            Ok(_) => {}
        }
    }
    assert!(caught > 0, "no seed caught uploads without If-None-Match");
}
