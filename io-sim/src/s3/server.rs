//! The S3 node's process: receive requests, one task per request that holds
//! it, decides it against the bucket and answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use madsim::net::Endpoint;
use madsim::time::{sleep, Instant};

use super::faults::Verdict;
use super::{S3Reply, S3Request, Shared, S3_PORT, S3_REPLY_TAG, S3_REQUEST_TAG};

/// Runs the store's front end until the node dies. Spawn it as the S3
/// node's init future.
pub(super) async fn serve(shared: Shared) {
    let ep = Arc::new(
        Endpoint::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, S3_PORT)))
            .await
            .expect("bind the fake S3's port: the S3 node has nothing else bound"),
    );
    while let Ok((payload, from)) = ep.recv_from_raw(S3_REQUEST_TAG).await {
        let Ok(req) = payload.downcast::<S3Request>() else {
            continue;
        };
        madsim::task::spawn(handle(shared.clone(), Arc::clone(&ep), from, *req));
    }
}

/// One request, start to end. Runs on the S3 node, so the death of the
/// client's node does not stop it.
async fn handle(shared: Shared, ep: Arc<Endpoint>, from: SocketAddr, req: S3Request) {
    let arrived_at = Instant::now();
    let Some((plan, in_flight)) = shared.admit(&req.op) else {
        return; // swallowed by an outage
    };
    sleep(plan.hold).await;
    // Leaving the in-flight set and deciding happen with no await between
    // them: nothing else runs in the simulator meanwhile.
    drop(in_flight);
    let result = match plan.verdict {
        Verdict::Drop => unreachable!("admit answers None for a dropped request"),
        Verdict::Refuse(error) => Some(Err(error)),
        Verdict::Apply { late, then } => shared.decide(&req, from, arrived_at, late, then),
    };
    if let Some(result) = result {
        let reply = S3Reply { id: req.id, result };
        // A lost datagram is the network's business; the client times out.
        let _ = ep.send_to_raw(from, S3_REPLY_TAG, Box::new(reply)).await;
    }
}
