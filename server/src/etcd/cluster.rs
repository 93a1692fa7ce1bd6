//! etcd's Cluster service: `MemberList` reports this one member; membership
//! changes answer `Unimplemented` until the cluster issue lands.

use tonic::{Request, Response, Status};

use t4_io_real::Node;
use t4_proto::etcd::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};

use super::Ctx;

/// The Cluster service.
#[derive(Clone)]
pub struct ClusterService {
    node: Node,
    ctx: Ctx,
}

impl ClusterService {
    /// The service over `node`.
    #[must_use]
    pub fn new(node: Node, ctx: Ctx) -> Self {
        ClusterService { node, ctx }
    }
}

/// Membership changes on a single node get a clear refusal, not a hang
/// (etcd answers membership errors with FailedPrecondition too).
fn single_node(method: &str) -> Status {
    Status::failed_precondition(format!(
        "t4: {method} needs cluster mode; this node runs single-node \
         (cluster mode arrives with the cluster issue)"
    ))
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _r: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(single_node("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _r: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(single_node("MemberRemove"))
    }

    async fn member_update(
        &self,
        _r: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(single_node("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _r: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let ids = self.ctx.ids(&self.node);
        let me = PbMember {
            id: ids.member_id,
            name: self.node.config().node_id.clone(),
            peer_ur_ls: Vec::new(),
            client_ur_ls: vec![self.ctx.client_url.clone()],
            is_learner: false,
        };
        Ok(Response::new(PbMemberListResponse {
            header: ids.header(self.node.current_revision()),
            members: vec![me],
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(single_node("MemberPromote"))
    }
}
