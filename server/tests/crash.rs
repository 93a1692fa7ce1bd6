//! Crash safety of local mode: writers running, `kill -9`, restart on the same
//! data directory. Every acknowledged write must be present with its value;
//! nothing unacknowledged may appear half-applied (txns are all or nothing);
//! revisions continue without reuse.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use etcd_client::{GetOptions, Txn, TxnOp};

/// What each writer saw acknowledged: key → (value, revision).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

async fn writer(endpoint: String, id: usize, acked: Acked) {
    let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else {
        return;
    };
    for i in 0.. {
        let (a, b) = (format!("w{id}/k{i}"), format!("w{id}/k{i}-twin"));
        let value = format!("value-{id}-{i}");
        // Odd steps write a pair of keys in one txn: both or neither survive.
        let result = if i % 2 == 0 {
            c.put(a.clone(), value.clone(), None)
                .await
                .map(|r| r.header().map(|h| h.revision()))
        } else {
            let txn = Txn::new().and_then([
                TxnOp::put(a.clone(), value.clone(), None),
                TxnOp::put(b.clone(), value.clone(), None),
            ]);
            c.txn(txn).await.map(|r| r.header().map(|h| h.revision()))
        };
        match result {
            Ok(Some(rev)) => {
                let mut acked = acked.lock().expect("lock");
                acked.insert(a, (value.clone(), rev));
                if i % 2 == 1 {
                    acked.insert(b, (value, rev));
                }
            }
            _ => return, // the server died: the outcome of this write is unknown
        }
    }
}

/// kill -9 under load loses no acknowledged write, three times in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let acked: Acked = Arc::default();
    let mut max_acked_revision = 1;
    for round in 0..3 {
        let mut server = Server::start(&data, &[]);
        let mut c = server.client().await;

        // Everything acknowledged before earlier crashes is still there.
        let all = c
            .get("w", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        let present: BTreeMap<String, (String, i64)> = all
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().expect("utf8").to_owned();
                (
                    key,
                    (kv.value_str().expect("utf8").to_owned(), kv.mod_revision()),
                )
            })
            .collect();
        for (key, (value, rev)) in acked.lock().expect("lock").iter() {
            let got = present
                .get(key)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(
                got,
                &(value.clone(), *rev),
                "round {round}: {key} has the acknowledged value and revision"
            );
        }
        // Unacknowledged writes may exist, but never half a txn.
        for (key, (value, rev)) in &present {
            if let Some(base) = key.strip_suffix("-twin") {
                assert_eq!(
                    present.get(base),
                    Some(&(value.clone(), *rev)),
                    "round {round}: txn half-applied at {key}"
                );
            } else if key
                .rsplit_once("/k")
                .is_some_and(|(_, i)| i.parse::<u64>().is_ok_and(|i| i % 2 == 1))
            {
                let twin = format!("{key}-twin");
                assert!(
                    present.contains_key(&twin),
                    "round {round}: txn half-applied, {twin} missing"
                );
            }
        }
        // Revisions continue without reuse.
        let head = all.header().expect("header").revision();
        assert!(
            head >= max_acked_revision,
            "round {round}: revision went back: {head} < {max_acked_revision}"
        );
        let r = c
            .put(format!("probe/{round}"), "x", None)
            .await
            .expect("put");
        assert_eq!(
            r.header().expect("header").revision(),
            head + 1,
            "round {round}: next revision"
        );

        let writers: Vec<_> = (0..8)
            .map(|id| {
                tokio::spawn(writer(
                    server.endpoint(),
                    round * 100 + id,
                    Arc::clone(&acked),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        for w in writers {
            w.await.expect("writer task");
        }
        let acked = acked.lock().expect("lock");
        assert!(
            acked.len() > 50,
            "round {round}: the writers made progress ({} acks)",
            acked.len()
        );
        max_acked_revision = acked.values().map(|(_, r)| *r).max().unwrap_or(1);
    }
}
