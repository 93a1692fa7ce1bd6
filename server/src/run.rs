//! `t4 run`: open the node, serve the etcd v3 API until SIGINT/SIGTERM,
//! then shut down gracefully (stop accepting, finish in-flight requests and
//! batches, fsync, close).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use t4_io_real::{Config, Node};
use t4_proto::etcd::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};

use crate::etcd::cluster::ClusterService;
use crate::etcd::kv::KvService;
use crate::etcd::lease::LeaseService;
use crate::etcd::maintenance::MaintenanceService;
use crate::etcd::unimplemented::{self, Unimplemented};
use crate::etcd::watch::WatchService;
use crate::etcd::Ctx;
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// gRPC framing and header overhead allowed on top of `--max-request-bytes`
/// before the transport itself refuses a message (etcd uses the same 512 KiB).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long a shutdown waits for in-flight requests and open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Everything `t4 run` needs, already parsed.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// etcd client address.
    pub listen: SocketAddr,
    /// Metrics/health address, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Largest write request accepted.
    pub max_request_bytes: usize,
    /// Node name (default: hostname).
    pub node_id: Option<String>,
    /// WAL segment rotation size.
    pub segment_max_size: u64,
    /// Database size that raises the NOSPACE alarm.
    pub quota_backend_bytes: u64,
    /// Progress notification interval of watches that ask for them.
    pub watch_progress_notify_interval: Duration,
    /// Lease checkpoint interval; `None`: no checkpoints.
    pub lease_checkpoint_interval: Option<Duration>,
    /// The bucket the log is also durable in; `None`: local mode.
    pub object_store: Option<t4_io_real::object::StoreConfig>,
    /// Bucket mode: checkpoint interval; `None`: not by time.
    pub checkpoint_interval: Option<Duration>,
    /// Bucket mode: checkpoint every this many entries; 0: not by count.
    pub checkpoint_entries: u64,
    /// Bucket mode: checkpoints the background GC keeps; 0: no GC.
    pub gc_keep: usize,
    /// Bucket mode: acknowledge after the upload (`true`) or after the
    /// fsync, uploading in the background (`false`).
    pub wal_sync_upload: bool,
    /// Bucket mode, background upload: the longest a segment stays open.
    pub segment_max_age: Duration,
    /// Cluster mode; `None`: single node.
    pub cluster: Option<t4_io_real::ClusterOptions>,
}

/// Runs the server until a shutdown signal.
///
/// # Errors
/// A human-readable reason the server could not start or stop cleanly.
pub async fn run(opts: RunOptions) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health {
        ready: false.into(),
        node: OnceLock::new(),
        metrics: Arc::clone(&metrics),
    });
    if let Some(addr) = opts.metrics_addr {
        let bound = http::serve(addr, Arc::clone(&health))
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!(addr = %bound, "metrics and health endpoints up");
    }
    // Bind before recovery so a taken port fails fast; clients that connect
    // meanwhile wait in the backlog.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;

    let mut config = Config::new(&opts.data_dir);
    if let Some(id) = &opts.node_id {
        config.node_id.clone_from(id);
    }
    config.max_request_bytes = opts.max_request_bytes;
    config.segment_max_size = opts.segment_max_size;
    config.quota_backend_bytes = opts.quota_backend_bytes;
    config.watch_progress_notify_interval = opts.watch_progress_notify_interval;
    config.lease_checkpoint_interval = opts.lease_checkpoint_interval;
    config.object_store.clone_from(&opts.object_store);
    config.checkpoint_interval = opts.checkpoint_interval;
    config.checkpoint_entries = opts.checkpoint_entries;
    config.gc_keep = opts.gc_keep;
    config.wal_sync_upload = opts.wal_sync_upload;
    config.segment_max_age = opts.segment_max_age;
    config.cluster.clone_from(&opts.cluster);
    let node = Node::open(config).await.map_err(|e| match e {
        t4_io_real::OpenError::DataDir { path, source } => format!(
            "cannot use data directory {}: {source} (choose another with --data-dir or T4_DATA_DIR)",
            path.display()
        ),
        other => format!("cannot open the node in {}: {other}", opts.data_dir.display()),
    })?;
    let _ = health.node.set(node.clone());
    health.ready.store(true, Ordering::Release);

    let ctx = Ctx {
        cluster_id: cluster_id_of(&node, &opts),
        client_url: format!("http://{listen}"),
        metrics,
    };
    let decode_max = opts.max_request_bytes + GRPC_OVERHEAD_BYTES;
    tracing::info!(%listen, data_dir = %opts.data_dir.display(), "serving the etcd v3 API");
    // The signal starts tonic's graceful shutdown (stop accepting, let
    // in-flight requests finish). Clients that keep idle connections open
    // would hold that forever, so after SHUTDOWN_GRACE the server future is
    // dropped, which closes the remaining connections.
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    let removed_node = node.clone();
    let signal = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = removed(&removed_node) => {}
        }
        let _ = signalled_tx.send(true);
    };
    // TCP_NODELAY on every accepted connection. (The builder's
    // `tcp_nodelay` only applies to listeners tonic binds itself; with our
    // own listener it was silently ignored, and responses over a few hundred
    // bytes waited ~40 ms for Nagle and the client's delayed ACK.)
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(
            PbKvServer::new(KvService::new(node.clone(), ctx.clone()))
                .max_decoding_message_size(decode_max),
        )
        .add_service(PbMaintenanceServer::new(MaintenanceService::new(
            node.clone(),
            ctx.clone(),
        )))
        .add_service(PbClusterServer::new(ClusterService::new(
            node.clone(),
            ctx.clone(),
        )))
        .add_service(PbWatchServer::new(WatchService::new(
            node.clone(),
            ctx.clone(),
            opts.max_request_bytes,
        )))
        .add_service(
            PbLeaseServer::new(LeaseService::new(node.clone(), ctx.clone()))
                .max_decoding_message_size(decode_max),
        )
        .add_service(Unimplemented::<unimplemented::Auth>::new())
        .add_service(Unimplemented::<unimplemented::Election>::new())
        .add_service(Unimplemented::<unimplemented::Lock>::new())
        .serve_with_incoming_shutdown(incoming, signal);
    let grace_over = async {
        let _ = signalled_rx.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = server => served,
        () = grace_over => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
            Ok(())
        }
    };
    health.ready.store(false, Ordering::Release);
    tracing::info!("stopped accepting requests; closing the node");
    let closed = node.close().await;
    served.map_err(|e| format!("gRPC server failed: {e}"))?;
    closed.map_err(|e| format!("closing the node failed: {e}"))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The etcd cluster id: stable for a data directory's node (derived from the
/// member id, as a one-member cluster's id is in etcd); in cluster mode the
/// same on every member (derived from the shared bucket).
fn cluster_id_of(node: &Node, opts: &RunOptions) -> u64 {
    use t4_io_real::object::StoreConfig;
    let shared = match (&opts.cluster, &opts.object_store) {
        (Some(_), Some(StoreConfig::S3(s3))) => Some(format!(
            "s3://{}/{}",
            s3.bucket,
            s3.prefix.trim_matches('/')
        )),
        (Some(_), Some(StoreConfig::Directory(dir))) => Some(format!(
            "dir://{}",
            dir.canonicalize().unwrap_or_else(|_| dir.clone()).display()
        )),
        _ => None,
    };
    let base = shared.map_or(node.member_id().0, |s| t4_io_real::member_id_of(&s));
    base.rotate_left(17) ^ 0x7434_7434_7434_7434
}

/// Cluster mode: resolves once this member learns it was removed from the
/// members (`t4 member remove`, etcd `MemberRemove`); it then shuts down,
/// as a removed etcd member does. Started again, it would join again.
async fn removed(node: &Node) {
    if node.config().cluster.is_none() {
        return std::future::pending().await;
    }
    loop {
        let role = node.cluster_status().map(|c| c.role);
        if role == Some(t4_io_real::ClusterRole::Removed) {
            tracing::warn!("this member was removed from the cluster; shutting down");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
