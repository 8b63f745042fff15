//! Serving the router: plain HTTP through `axum::serve`, or TLS through
//! an accept loop of our own, since axum has no TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A client that connects and never finishes its handshake would hold a
/// task and a socket for good.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop: no one is left to say so.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets
/// requests in flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().ok();
    match tls {
        None => {
            let stop = async move { stopped(&mut shutdown).await };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, ?addr, "HTTP purge API stopped");
            }
        }
        Some(config) => serve_tls(listener, router, TlsAcceptor::from(config), shutdown).await,
    }
    tracing::debug!(?addr, "HTTP purge API closed");
}

async fn serve_tls(listener: TcpListener, router: Router, acceptor: TlsAcceptor, mut shutdown: watch::Receiver<bool>) {
    // Every connection task holds a clone of `open`: when the sender sees
    // none left, all connections are done.
    let (all_closed, open) = watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin, and try again.
                    tracing::warn!(error = %e, "HTTP purge API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let conn = connection(tcp, peer, acceptor.clone(), router.clone(), shutdown.clone(), open.clone());
        tokio::spawn(conn);
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.closed()).await.is_err() {
        tracing::warn!("HTTP purge API: connections still open after {DRAIN_TIMEOUT:?}, dropped");
    }
}

/// One TLS connection; a failed handshake is the client's problem (a port
/// scan, a wrong CA, plain HTTP on the TLS port), so it is logged at debug
/// and dropped.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP purge API: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP purge API: TLS handshake timed out");
            return;
        }
    };
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut shutdown) => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP purge API: connection ended with an error");
    }
}
