//! The etcd v3 gRPC API over a t4 node.

pub mod cluster;
pub mod convert;
pub mod errors;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod unimplemented;
pub mod watch;

use std::sync::Arc;

use t4_io_real::Node;

use crate::metrics::Metrics;
use convert::HeaderIds;

/// What every service needs besides the node.
#[derive(Clone)]
pub struct Ctx {
    /// etcd cluster id reported in headers.
    pub cluster_id: u64,
    /// The URL clients reach this member at.
    pub client_url: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Ctx {
    /// Header identity fields now.
    #[must_use]
    pub fn ids(&self, node: &Node) -> HeaderIds {
        HeaderIds {
            cluster_id: self.cluster_id,
            member_id: node.member_id().0,
            raft_term: node.term().0,
        }
    }
}
