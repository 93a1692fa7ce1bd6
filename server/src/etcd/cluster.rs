//! etcd's Cluster service. `MemberList` reports this one member on a single
//! node, and the members of `leader-lock` in cluster mode (ids derived from
//! member names with [`t4_io_real::member_id_of`], the same ids every
//! member's headers and `Status.leader` use). `MemberRemove` removes a
//! member (by that id) through the leader, as `t4 member remove` does; the
//! other membership changes answer `FailedPrecondition`: members join by
//! starting with `--peer-listen` against the shared bucket.

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

/// Membership changes get a clear refusal, not a hang (etcd answers
/// membership errors with FailedPrecondition too).
fn refuse_membership_change(node: &Node, method: &str) -> Status {
    if node.config().cluster.is_some() {
        Status::failed_precondition(format!(
            "t4: {method} is not supported through the etcd API: a node joins the \
             cluster by starting with --peer-listen against the cluster's bucket"
        ))
    } else {
        Status::failed_precondition(format!(
            "t4: {method} needs cluster mode; this node runs single-node \
             (start members with --peer-listen and a shared bucket)"
        ))
    }
}

/// A member's peer URL as etcd shows it (plaintext peers: `http://`).
fn peer_url(addr: &str) -> String {
    format!("http://{addr}")
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _r: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(refuse_membership_change(&self.node, "MemberAdd"))
    }

    async fn member_remove(
        &self,
        r: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        if self.node.config().cluster.is_none() {
            return Err(refuse_membership_change(&self.node, "MemberRemove"));
        }
        let id = r.into_inner().id;
        // The id etcd clients know is the hash of the member's name.
        let name = self
            .node
            .cluster_status()
            .map(|c| c.members)
            .unwrap_or_default()
            .into_iter()
            .find(|m| t4_io_real::member_id_of(&m.id) == id)
            .map(|m| m.id)
            .ok_or_else(|| super::errors::status(&t4_io_real::Error::MemberNotFound))?;
        let left = self
            .node
            .member_remove(&name)
            .await
            .map_err(|e| super::errors::status(&e))?;
        let ids = self.ctx.ids(&self.node);
        Ok(Response::new(PbMemberRemoveResponse {
            header: ids.header(self.node.current_revision()),
            members: left
                .into_iter()
                .map(|m| PbMember {
                    id: t4_io_real::member_id_of(&m.id),
                    peer_ur_ls: vec![peer_url(&m.peer_addr)],
                    name: m.id,
                    client_ur_ls: Vec::new(),
                    is_learner: false,
                })
                .collect(),
        }))
    }

    async fn member_update(
        &self,
        _r: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(refuse_membership_change(&self.node, "MemberUpdate"))
    }

    async fn member_list(
        &self,
        _r: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let ids = self.ctx.ids(&self.node);
        let me = &self.node.config().node_id;
        let lock_members = self
            .node
            .cluster_status()
            .map(|c| c.members)
            .unwrap_or_default();
        let members = if lock_members.is_empty() {
            // A single node, or a cluster member that has not read the
            // lock yet: just this one.
            vec![PbMember {
                id: ids.member_id,
                name: me.clone(),
                peer_ur_ls: self
                    .node
                    .config()
                    .cluster
                    .as_ref()
                    .map(|c| vec![peer_url(&c.advertise_peer)])
                    .unwrap_or_default(),
                client_ur_ls: vec![self.ctx.client_url.clone()],
                is_learner: false,
            }]
        } else {
            // Client URLs are known for this member only: the lock holds
            // peer addresses.
            lock_members
                .into_iter()
                .map(|m| PbMember {
                    id: t4_io_real::member_id_of(&m.id),
                    client_ur_ls: if m.id == *me {
                        vec![self.ctx.client_url.clone()]
                    } else {
                        Vec::new()
                    },
                    peer_ur_ls: vec![peer_url(&m.peer_addr)],
                    name: m.id,
                    is_learner: false,
                })
                .collect()
        };
        Ok(Response::new(PbMemberListResponse {
            header: ids.header(self.node.current_revision()),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(refuse_membership_change(&self.node, "MemberPromote"))
    }
}
