//! etcd's Lease service over a [`t4_io_real::Node`], answering as etcd's
//! `v3rpc/lease.go` does:
//! - `LeaseKeepAlive` answers every request with one response; a lease that
//!   is unknown or already expired gets TTL 0 — never a stream error, so one
//!   bad id cannot end the stream the client's other leases share;
//! - `LeaseTimeToLive` of an unknown lease answers TTL -1, not an error.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use t4_core::Error;
use t4_io_real::Node;
use t4_proto::etcd::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};

use super::errors::status;
use super::Ctx;

/// Keep-alive responses buffered between a stream's task and the transport.
const KEEPALIVE_BUFFER: usize = 16;

/// The Lease service.
#[derive(Clone)]
pub struct LeaseService {
    node: Node,
    ctx: Ctx,
}

impl LeaseService {
    /// The service over `node`.
    #[must_use]
    pub fn new(node: Node, ctx: Ctx) -> Self {
        LeaseService { node, ctx }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let r = request.into_inner();
        let resp = self
            .node
            .lease_grant(r.ttl, r.id)
            .await
            .map_err(|e| status(&e))?;
        self.ctx.metrics.lease_grants.inc();
        Ok(Response::new(PbLeaseGrantResponse {
            header: self.ctx.ids(&self.node).header(resp.revision),
            id: resp.id,
            ttl: resp.ttl,
            // etcd fills `error` nowhere; failures are gRPC statuses.
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        let resp = self.node.lease_revoke(id).await.map_err(|e| status(&e))?;
        self.ctx.metrics.lease_revokes.inc();
        Ok(Response::new(PbLeaseRevokeResponse {
            header: self.ctx.ids(&self.node).header(resp.revision),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<PbLeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let node = self.node.clone();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    req = inbound.message() => req,
                    () = tx.closed() => break,
                };
                let id = match req {
                    Ok(Some(req)) => req.id,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "lease keep-alive stream failed; closing it");
                        break;
                    }
                };
                let Some(resp) = keep_alive(&node, &ctx, id).await else {
                    continue;
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let resp = match self.node.lease_time_to_live(r.id, r.keys).await {
            Ok(resp) => PbLeaseTimeToLiveResponse {
                header: self.ctx.ids(&self.node).header(resp.revision),
                id: resp.id,
                ttl: resp.ttl,
                granted_ttl: resp.granted_ttl,
                keys: resp.keys,
            },
            Err(Error::LeaseNotFound) => PbLeaseTimeToLiveResponse {
                header: self
                    .ctx
                    .ids(&self.node)
                    .header(self.node.current_revision()),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(status(&e)),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let resp = self.node.lease_leases().await.map_err(|e| status(&e))?;
        Ok(Response::new(PbLeaseLeasesResponse {
            header: self.ctx.ids(&self.node).header(resp.revision),
            leases: resp
                .ids
                .into_iter()
                .map(|id| PbLeaseStatus { id })
                .collect(),
        }))
    }
}

/// Renews one lease for a keep-alive stream. Unknown or expired leases
/// answer TTL 0 (etcd). Any other failure (the node shutting down, say)
/// answers nothing: the client renews again within a third of the TTL, and
/// a TTL of 0 would wrongly tell it the lease is gone.
async fn keep_alive(node: &Node, ctx: &Ctx, id: i64) -> Option<PbLeaseKeepAliveResponse> {
    // The header is taken before the renewal, as etcd does, so its revision
    // never runs ahead of the renewal it reports.
    let header = ctx.ids(node).header(node.current_revision());
    let ttl = match node.lease_keep_alive(id).await {
        Ok(resp) => resp.ttl,
        Err(Error::LeaseNotFound) => 0,
        Err(e) => {
            tracing::warn!(lease = id, error = %e, "lease keep-alive failed; not answered");
            return None;
        }
    };
    Some(PbLeaseKeepAliveResponse { header, id, ttl })
}
