//! etcd's KV service over a [`t4_io_real::Node`].

use std::pin::Pin;
use std::time::Instant;

use futures::Stream;
use tonic::{Request, Response, Status};

use t4_io_real::Node;
use t4_proto::etcd::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};

use super::convert;
use super::errors::status;
use super::Ctx;
use crate::metrics::Op;

/// The KV service.
#[derive(Clone)]
pub struct KvService {
    node: Node,
    ctx: Ctx,
}

impl KvService {
    /// The service over `node`.
    #[must_use]
    pub fn new(node: Node, ctx: Ctx) -> Self {
        KvService { node, ctx }
    }

    /// Awaits a write, recording its outcome and latency in the metrics.
    async fn timed<T>(
        &self,
        op: Op,
        write: impl std::future::Future<Output = Result<T, t4_core::Error>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = write.await;
        self.ctx
            .metrics
            .observe_write(op, started.elapsed(), result.is_ok());
        result.map_err(|e| status(&e))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let req = convert::range_request(request.into_inner());
        let resp = self.node.range(req).await.map_err(|e| status(&e))?;
        let header = self.ctx.ids(&self.node).header(resp.revision);
        Ok(Response::new(convert::range_response(resp, header)))
    }

    type RangeStreamStream = BoxStream<PbRangeStreamResponse>;

    async fn range_stream(
        &self,
        _request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "t4: etcdserverpb.KV/RangeStream is not implemented yet",
        ))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let req = convert::put_request(request.into_inner());
        let resp = self.timed(Op::Put, self.node.put_request(req)).await?;
        let header = self.ctx.ids(&self.node).header(resp.revision);
        Ok(Response::new(convert::put_response(resp, header)))
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let req = convert::delete_request(request.into_inner());
        let resp = self.timed(Op::Delete, self.node.delete_range(req)).await?;
        let header = self.ctx.ids(&self.node).header(resp.revision);
        Ok(Response::new(convert::delete_response(resp, header)))
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let req = convert::txn_request(request.into_inner());
        let resp = self.timed(Op::Txn, self.node.txn(req)).await?;
        let header = self.ctx.ids(&self.node).header(resp.revision);
        Ok(Response::new(convert::txn_response(resp, header)))
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        let resp = self.timed(Op::Compact, self.node.compact(revision)).await?;
        let header = self.ctx.ids(&self.node).header(resp.revision);
        Ok(Response::new(convert::compaction_response(header)))
    }
}
