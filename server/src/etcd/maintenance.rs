//! etcd's Maintenance service: `Status` is real; the rest answers
//! `Unimplemented` until its issue lands.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use t4_io_real::Node;
use t4_proto::etcd::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};

use super::errors::status;
use super::Ctx;

/// The etcd server version t4 reports. etcd clients gate features on it;
/// t4 implements the 3.5 KV API.
pub const ETCD_COMPAT_VERSION: &str = "3.5.0";

/// The Maintenance service.
#[derive(Clone)]
pub struct MaintenanceService {
    node: Node,
    ctx: Ctx,
}

impl MaintenanceService {
    /// The service over `node`.
    #[must_use]
    pub fn new(node: Node, ctx: Ctx) -> Self {
        MaintenanceService { node, ctx }
    }
}

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "t4: etcdserverpb.Maintenance/{method} is not implemented yet (the maintenance issue)"
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _r: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        Err(unimplemented("Alarm"))
    }

    async fn status(
        &self,
        _request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let s = self.node.status();
        let ids = self.ctx.ids(&self.node);
        let db_size = i64::try_from(s.db_size_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(PbStatusResponse {
            header: ids.header(s.current_revision),
            version: ETCD_COMPAT_VERSION.to_owned(),
            db_size,
            leader: ids.member_id,
            raft_index: s.applied_index.0,
            raft_term: s.term.0,
            raft_applied_index: s.applied_index.0,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
            ..PbStatusResponse::default()
        }))
    }

    async fn defragment(
        &self,
        _r: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.node.defragment().await.map_err(|e| status(&e))?;
        let ids = self.ctx.ids(&self.node);
        Ok(Response::new(PbDefragmentResponse {
            header: ids.header(self.node.current_revision()),
        }))
    }

    async fn hash(&self, _r: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        let (hash, revision) = self.node.hash().await.map_err(|e| status(&e))?;
        let ids = self.ctx.ids(&self.node);
        Ok(Response::new(PbHashResponse {
            header: ids.header(revision),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let h = self.node.hash_kv(revision).await.map_err(|e| status(&e))?;
        let ids = self.ctx.ids(&self.node);
        Ok(Response::new(PbHashKvResponse {
            header: ids.header(self.node.current_revision()),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = BoxStream<PbSnapshotResponse>;

    async fn snapshot(
        &self,
        _r: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        _r: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _r: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
