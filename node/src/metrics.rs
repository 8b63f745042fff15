//! Prometheus metrics and HTTP health checks on the metrics port.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::health::Health;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
    #[error("cannot bind metrics address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub fn install() -> Result<PrometheusHandle, MetricsError> {
    // Latency buckets from 100 µs to 10 s: purges apply in microseconds and
    // complete across a WAN in tens to hundreds of milliseconds.
    let buckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    describe();
    Ok(handle)
}

/// Registers, at zero, the series only rare events move (a flush, a
/// rejected peer message, a failed store write), so that the dashboard and
/// alerts of deploy/monitoring find them on a node where none happened yet.
/// `increment(0)` leaves a count already made alone.
fn describe() {
    for name in [
        "purgecast_flushes_total",
        "purgecast_apply_errors_total",
        "purgecast_purges_accepted_total",
        "purgecast_purges_applied_total",
        "purgecast_entries_removed_total",
        "purgecast_entries_marked_stale_total",
        "purgecast_purges_deferred_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for kind in ["ranges", "full"] {
        metrics::counter!("purgecast_store_compactions_total", "kind" => kind).increment(0);
    }
    // Every `purgecast_core::Message::kind`.
    for kind in [
        "push",
        "applied",
        "applied_by",
        "digest",
        "catchup",
        "join",
        "members",
        "ping",
        "ping_ack",
        "ping_req",
        "leave",
    ] {
        metrics::counter!("purgecast_peer_messages_rejected_total", "kind" => kind).increment(0);
    }
    metrics::gauge!("purgecast_apply_held").increment(0.0);
    metrics::gauge!("purgecast_store_deferred_purges").increment(0.0);
}

pub async fn serve(addr: SocketAddr, handle: PrometheusHandle, health: Health) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// 200 "ready", or 503 naming each failing condition and why.
async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    let failing = h.report();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", failing.join("; ")))
    }
}
