//! The edge: an HTTP caching reverse proxy inside the node, whose cache is
//! the node's store, so a purge applied to the index is a purge of what
//! this node serves. See docs/edge.md.
//!
//! - `proxy`: the request path (pingora's `ProxyHttp` phases);
//! - `storage`: pingora-cache's `Storage` over the store;
//! - `eviction`: the size bound;
//! - `tags`: tag headers;
//! - `purge`: the `PURGE` method, through the API's front door;
//! - `conn`: client connections with pingora's small write buffer;
//! - `metrics`: the edge's Prometheus series.
//!
//! pingora's `Server` owns its process and runtimes, so the edge is
//! pingora's proxy *application*, fed connections by an accept loop on the
//! node's own runtime.

mod config;
mod conn;
mod eviction;
mod meta;
mod metrics;
mod proxy;
mod purge;
mod storage;
mod tags;

use std::net::SocketAddr;
use std::sync::Arc;

use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::EdgeConfig;

use crate::store::Store;
use eviction::Lru;
use storage::RocksStorage;
use tags::Tags;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot bind edge address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot load the cache's eviction order: {0}")]
    Load(#[from] crate::store::StoreError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Starts the edge when `cfg.listen` is set; returns the bound address.
/// `caught_up` turns true once the node lacks no purge the cluster sent
/// while it was down; until then stored objects are not served.
pub(crate) async fn start(
    cfg: &EdgeConfig,
    store: Arc<Store>,
    caught_up: watch::Receiver<bool>,
    front: crate::api::Front,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<SocketAddr>, EdgeError> {
    let Some(addr) = cfg.listen else { return Ok(None) };
    let listener = TcpListener::bind(addr).await.map_err(|source| EdgeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| EdgeError::Bind { addr, source })?;
    metrics::describe();

    let lru = Lru::new(cfg.cache_bytes);
    let tracked = {
        let (lru, store) = (lru.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            let n = lru.load(&store)?;
            lru.evict_over(&store);
            Ok::<_, crate::store::StoreError>(n)
        })
        .await??
    };
    let (objects, bytes) = store.object_stats();
    metrics::cached(objects, bytes);
    // The storage and the lock live as long as the process: pingora's cache
    // API takes them as `&'static`.
    let storage: &'static RocksStorage =
        Box::leak(Box::new(RocksStorage { store, lru, tags: Tags::new(&cfg.tag_headers) }));
    let lock: &'static pingora_cache::lock::CacheKeyLockImpl =
        Box::leak(pingora_cache::lock::CacheLock::new_boxed(cfg.lock_timeout));
    spawn_caught_up_gauge(caught_up.clone());
    spawn_size_gauges(storage.store.clone(), shutdown.clone());
    let edge = proxy::Edge { cfg: cfg.clone(), storage, lock, defaults: proxy::defaults(cfg), caught_up, front };
    let app = proxy::app(edge);
    tokio::spawn(accept_loop(listener, app, shutdown));
    tracing::info!(edge = %bound, objects, bytes, tracked, "edge listening");
    Ok(Some(bound))
}

async fn accept_loop(listener: TcpListener, app: Arc<proxy::App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!(error = %e, "edge accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut stream: Stream = Box::new(conn::Conn::new(tcp));
            // Keep-alive: pingora hands a reusable connection back.
            while let Some(next) = app.process_new(stream, &shutdown).await {
                stream = next;
            }
        });
    }
}

/// Fills, evictions and purges all change what is stored; the gauges follow
/// once a second rather than on each of them.
fn spawn_size_gauges(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let (objects, bytes) = store.object_stats();
                    metrics::cached(objects, bytes);
                    let (objects, bytes) = store.memory_stats();
                    metrics::in_memory(objects as u64, bytes);
                }
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

fn spawn_caught_up_gauge(mut rx: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            metrics::caught_up(*rx.borrow_and_update());
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}
