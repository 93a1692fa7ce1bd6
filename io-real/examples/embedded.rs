//! Embedding t4: open a node on local disk, watch a prefix, write, read,
//! run a txn, compact, close. Run with
//! `cargo run -p t4-io-real --example embedded`.

use t4_io_real::kv::{
    Compare, CompareResult, CompareTarget, Op, PutRequest, RequestOp, TargetUnion, TxnRequest,
    WatchCreateRequest,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("t4-embedded-example-{}", std::process::id()));
    let node = t4_io_real::Node::open(t4_io_real::Config::new(&dir)).await?;

    // Watch every key under /config/ (range_end is the prefix with its last
    // byte incremented). The first output confirms the watch.
    let mut watch = node
        .watch(WatchCreateRequest {
            key: b"/config/".to_vec(),
            range_end: b"/config0".to_vec(),
            ..WatchCreateRequest::default()
        })
        .await?;
    let created = watch.next().await.ok_or("node closed")?;
    println!("watch {} created", created.watch_id);

    let first = node.put("/config/timeout", "30s").await?;
    println!("put at revision {}", first.revision);

    // Compare-and-swap on the mod revision, as Kubernetes does.
    let cas = TxnRequest {
        compare: vec![Compare {
            key: b"/config/timeout".to_vec(),
            target: CompareTarget::Mod as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::ModRevision(first.revision)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            op: Some(Op::Put(PutRequest {
                key: b"/config/timeout".to_vec(),
                value: b"60s".to_vec(),
                ..PutRequest::default()
            })),
        }],
        failure: Vec::new(),
    };
    let txn = node.txn(cas).await?;
    println!(
        "cas succeeded: {} at revision {}",
        txn.succeeded, txn.revision
    );

    // Both writes arrive on the watch, in revision order.
    let mut seen = 0;
    while seen < 2 {
        let out = watch.next().await.ok_or("node closed")?;
        for event in out.events {
            let kv = event.kv.unwrap_or_default();
            println!(
                "watch: {} = {} at revision {}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.mod_revision
            );
            seen += 1;
        }
    }
    drop(watch);

    let kv = node.get("/config/timeout").await?.expect("written above");
    println!(
        "{} = {} (version {})",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.version
    );

    node.compact(txn.revision).await?;
    println!(
        "compacted at {}; current revision {}",
        node.compact_revision(),
        node.current_revision()
    );

    node.close().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
