//! The HTTP endpoint for operators: `/metrics` (Prometheus), `/healthz`
//! (200 once the process is up) and `/readyz` (200 once recovery finished
//! and the node serves).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use t4_io_real::Node;

use crate::metrics::Metrics;

/// Shared between the HTTP handlers and `t4 run`.
pub struct Health {
    /// Set once the node is open and serving.
    pub ready: AtomicBool,
    /// The node, once open.
    pub node: OnceLock<Node>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

async fn metrics(State(h): State<Arc<Health>>) -> String {
    if let Some(node) = h.node.get() {
        h.metrics.current_revision.set(node.current_revision());
        h.metrics.compact_revision.set(node.compact_revision());
        // One pass over the live lease ids, on the node thread; cheap next
        // to the scrape interval even with many leases.
        if let Ok(leases) = node.lease_leases().await {
            h.metrics
                .leases
                .set(i64::try_from(leases.ids.len()).unwrap_or(i64::MAX));
        }
    }
    h.metrics.render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "recovering\n")
    }
}

/// Binds `addr` and serves the endpoints in the background.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}
