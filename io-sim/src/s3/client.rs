//! What a node task uses to reach the fake S3: [`S3Client::execute`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::time::Instant;
use t4_core::object::{ObjectError, ObjectOp, ObjectResult};

use super::{S3Reply, S3Request, Shared, S3_REPLY_TAG, S3_REQUEST_TAG};

/// A handle for executing object operations against the fake S3 from inside
/// any madsim node that has an IP. Cheap to clone; clones share nothing but
/// the run-wide request numbering, so any number of calls may run at once
/// (each waits on its own endpoint for its own request id).
///
/// Keep it in the state that outlives a node's process (its context), or
/// make a new one per incarnation: either way request ids never repeat
/// within a run, so a restarted process never takes an answer meant for its
/// predecessor.
#[derive(Clone)]
pub struct S3Client {
    pub(super) server: SocketAddr,
    pub(super) name: Arc<str>,
    pub(super) shared: Shared,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// The name the store's write log records for this client's writes.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `op` to the store and waits at most `timeout` for the answer.
    ///
    /// Without an answer in time (request or answer lost, the link clogged,
    /// an outage that swallows requests, a late landing, a lost response)
    /// the result is [`ObjectError::Retryable`] starting with `"timeout"`,
    /// and the operation may still take effect afterwards: the store keeps
    /// whatever it has received. Dropping the future (the node dies) has the
    /// same effect on the store's side.
    ///
    /// Must run inside a madsim node with an IP (the caller's address is
    /// where the answer goes).
    pub async fn execute(&self, op: ObjectOp, timeout: Duration) -> ObjectResult {
        let id = self.shared.next_request_id();
        let deadline = Instant::now() + timeout;
        // A fresh endpoint per call: concurrent calls never read each
        // other's answers, and an answer that arrives after its call gave up
        // finds the port closed (or reused by a later call, which discards
        // it by id).
        let ep = Endpoint::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
            .map_err(|e| ObjectError::Retryable(format!("bind: {e}")))?;
        let req = S3Request {
            id,
            client: Arc::clone(&self.name),
            op,
        };
        ep.send_to_raw(self.server, S3_REQUEST_TAG, Box::new(req))
            .await
            .map_err(|e| ObjectError::Retryable(format!("send: {e}")))?;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(received) = madsim::time::timeout(left, ep.recv_from_raw(S3_REPLY_TAG)).await
            else {
                break;
            };
            let (payload, from) =
                received.map_err(|e| ObjectError::Retryable(format!("receive: {e}")))?;
            if from != self.server {
                continue;
            }
            match payload.downcast::<S3Reply>() {
                Ok(reply) if reply.id == id => return reply.result,
                _ => continue,
            }
        }
        self.shared.count_timeout();
        Err(ObjectError::Retryable(format!(
            "timeout after {} ms (the request may still take effect)",
            timeout.as_millis()
        )))
    }
}
