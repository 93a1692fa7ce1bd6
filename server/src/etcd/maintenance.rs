//! etcd's Maintenance service. `MoveLeader` and `Downgrade` answer
//! `Unimplemented` (the leader is whoever holds `leader-lock`; t4 has one
//! storage version).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use t4_core::kv::{self, AlarmAction, AlarmType};
use t4_io_real::Node;
use t4_proto::etcd::{
    PbAlarmMember, PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse,
    PbDowngradeRequest, PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest,
    PbHashResponse, PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse,
    PbSnapshotRequest, PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
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

fn unimplemented(method: &str, why: &str) -> Status {
    Status::unimplemented(format!(
        "t4: etcdserverpb.Maintenance/{method} is not implemented: {why}"
    ))
}

/// Snapshot chunks buffered between the producer and the transport.
const SNAPSHOT_BUFFER: usize = 4;

/// etcd's name of an alarm type (`etcdserverpb.AlarmType`).
fn alarm_name(alarm: i32) -> &'static str {
    match AlarmType::try_from(alarm) {
        Ok(AlarmType::None) => "NONE",
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        Err(_) => "UNKNOWN",
    }
}

/// One active alarm as etcd's `Status` lists it in `errors`: the Go
/// protobuf text form of the `AlarmMember`, e.g.
/// `memberID:10276657743932975437 alarm:NOSPACE `.
fn alarm_error(a: &kv::AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm))
}

fn alarm_member(a: kv::AlarmMember) -> PbAlarmMember {
    PbAlarmMember {
        member_id: a.member_id,
        alarm: a.alarm,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        let r = request.into_inner();
        let resp = self
            .node
            .alarm(kv::AlarmRequest {
                action: r.action,
                member_id: r.member_id,
                alarm: r.alarm,
            })
            .await
            .map_err(|e| status(&e))?;
        let ids = self.ctx.ids(&self.node);
        Ok(Response::new(PbAlarmResponse {
            header: ids.header(resp.revision),
            alarms: resp.alarms.into_iter().map(alarm_member).collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let s = self.node.status();
        // etcd lists every active alarm in `errors` (and "no leader", which
        // a single node never lacks).
        let alarms = self
            .node
            .alarm(kv::AlarmRequest {
                action: AlarmAction::Get as i32,
                member_id: 0,
                alarm: AlarmType::None as i32,
            })
            .await
            .map_err(|e| status(&e))?;
        let ids = self.ctx.ids(&self.node);
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        let mut errors: Vec<String> = alarms.alarms.iter().map(alarm_error).collect();
        // A single node is its own leader. In cluster mode: the leader this
        // member knows of (0 and etcd's "no leader" error while there is
        // none), and etcd's raftIndex is the commit index.
        let (leader, raft_index) = match self.node.cluster_status() {
            None => (ids.member_id, s.applied_index.0),
            Some(c) => {
                let leader = c
                    .leader
                    .as_ref()
                    .map_or(0, |m| t4_io_real::member_id_of(&m.id));
                if leader == 0 {
                    errors.push("etcdserver: no leader".to_owned());
                }
                (leader, c.commit_index.0.max(s.applied_index.0))
            }
        };
        Ok(Response::new(PbStatusResponse {
            header: ids.header(s.current_revision),
            version: ETCD_COMPAT_VERSION.to_owned(),
            db_size: bytes(s.db_size_bytes),
            leader,
            raft_index,
            raft_term: s.term.0,
            raft_applied_index: s.applied_index.0,
            errors,
            db_size_in_use: bytes(s.db_size_in_use_bytes),
            is_learner: false,
            db_size_quota: bytes(self.node.config().quota_backend_bytes),
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

    /// Streams a consistent snapshot of the whole store, in t4's snapshot
    /// format (its last bytes are a SHA-256 of the rest, as etcd's). Each
    /// response carries one chunk; `remaining_bytes` is an estimate from
    /// the database size (etcd's is exact), never 0 before the last
    /// response, and 0 on it.
    async fn snapshot(
        &self,
        _r: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let mut chunks = self.node.snapshot().map_err(|e| status(&e))?;
        let estimate = self.node.status().db_size_bytes;
        let header = self
            .ctx
            .ids(&self.node)
            .header(self.node.current_revision());
        let (tx, rx) = mpsc::channel(SNAPSHOT_BUFFER);
        tokio::spawn(async move {
            let respond = |blob: Vec<u8>, remaining_bytes: u64| PbSnapshotResponse {
                header,
                remaining_bytes,
                blob,
                version: String::new(),
            };
            let mut sent: u64 = 0;
            // One chunk is held back until the next arrives, so the last
            // one is known and can say 0 bytes remain.
            let mut held: Option<Vec<u8>> = None;
            while let Some(item) = chunks.next().await {
                let chunk = match item {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot failed while streaming");
                        let _ = tx.send(Err(status(&e))).await;
                        return;
                    }
                };
                if let Some(prev) = held.replace(chunk) {
                    sent += prev.len() as u64;
                    let remaining = estimate.saturating_sub(sent).max(1);
                    if tx.send(Ok(respond(prev, remaining))).await.is_err() {
                        return; // The client went away.
                    }
                }
            }
            if let Some(last) = held {
                let _ = tx.send(Ok(respond(last, 0))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        _r: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented(
            "MoveLeader",
            "the leader is whoever holds the bucket's leader-lock",
        ))
    }

    async fn downgrade(
        &self,
        _r: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented(
            "Downgrade",
            "t4 has a single storage version and nothing to downgrade to",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Status.errors` lists alarms in the text etcd's Go server produces.
    #[test]
    fn alarm_errors_read_like_etcds() {
        let a = kv::AlarmMember {
            member_id: 42,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(alarm_error(&a), "memberID:42 alarm:NOSPACE ");
        assert_eq!(alarm_name(AlarmType::Corrupt as i32), "CORRUPT");
        assert_eq!(alarm_name(99), "UNKNOWN");
    }
}
