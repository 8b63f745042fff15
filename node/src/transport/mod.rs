//! Peer transport: one quinn endpoint per node (server and client at once),
//! mutual TLS, persistent per-peer connections.
//!
//! Framing: one unidirectional stream per frame, or per batch of the frames
//! queued for a peer at once ([`batch`]). The transport moves raw bytes;
//! the driver decodes them with `purgecast_core::wire::decode` and checks
//! the claimed sender against [`Inbound::peer_name`].
//!
//! Overload: every peer has a bounded queue (frames and bytes); a frame that
//! does not fit is dropped and counted at [`Transport::send`], which never
//! blocks. Inbound delivery to the driver applies backpressure instead: a
//! slow driver stalls stream reads, QUIC flow control stalls the senders, and
//! their queues overflow, counted, on their side.

mod batch;
mod peer;
mod recv;
mod stats;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(feature = "wan-emulation")]
pub mod wan;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Endpoint, EndpointConfig, Runtime, TokioRuntime, VarInt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::tls::{self, Identity, TlsError};
#[cfg(feature = "wan-emulation")]
pub use wan::WanHandle;

/// Without the test-only `wan-emulation` feature there is no WAN layer, so
/// this type has no values and `bind` can only be given `None`.
#[cfg(not(feature = "wan-emulation"))]
#[derive(Debug, Clone)]
pub enum WanHandle {}
#[cfg(test)]
pub use stats::TransportStats;
use stats::{Counter, Counters};

#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Frames queued per peer before `send` drops.
    pub queue_frames: usize,
    /// Bytes queued per peer before `send` drops.
    pub queue_bytes: usize,
    /// Received frames buffered for the driver.
    pub inbound_capacity: usize,
    /// Largest frame sent or accepted.
    pub max_frame: usize,
    /// Keeps a connection in use warm, so a purge never waits for a
    /// handshake. Every live connection pays one ack-eliciting packet per
    /// interval each way, the bulk of an idle node's traffic.
    pub keep_alive: Duration,
    /// A connection silent for this long is dead.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for stream credit and buffer space for one frame.
    pub write_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A peer with nothing to send for this long gives up its task and
    /// connection; the next frame dials again.
    pub peer_idle: Duration,
    /// Bound on the graceful part of [`Transport::close`].
    pub close_timeout: Duration,
    /// Send the frames queued for a peer at once in one stream (see
    /// [`batch`]); every build that has batches reads them either way.
    pub batch: bool,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_frames: 4096,
            queue_bytes: 64 << 20,
            inbound_capacity: 8192,
            max_frame: purgecast_core::wire::MAX_FRAME,
            keep_alive: Duration::from_secs(4),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            peer_idle: Duration::from_secs(120),
            close_timeout: Duration::from_secs(2),
            batch: true,
        }
    }
}

/// One frame received from a peer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The remote address of the connection the frame arrived on.
    pub from_addr: SocketAddr,
    /// Common name of the peer's verified certificate (its node name).
    pub peer_name: Option<String>,
    pub bytes: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid transport option: {0}")]
    Config(String),
}

/// Cheap to clone; all clones share one endpoint. Dropping the last clone
/// closes the endpoint abruptly; [`Transport::close`] does it gracefully.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    _guard: Arc<CloseOnDrop>,
}

struct Shared {
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    opts: TransportOptions,
    counters: Counters,
    inbound: mpsc::Sender<Inbound>,
    peers: Mutex<BTreeMap<String, PeerQueue>>,
    closing: AtomicBool,
    next_peer_id: AtomicU64,
    /// `send` is synchronous and may be called outside the runtime's context.
    runtime: tokio::runtime::Handle,
}

struct PeerQueue {
    id: u64,
    /// Frames tagged with the `reset` generation they were queued in.
    tx: mpsc::Sender<(u64, Bytes)>,
    queued_bytes: Arc<AtomicUsize>,
    /// Bumped by [`Transport::reconnect`]: frames queued before are stale
    /// and the connection dialed before is dead. A watch, not a bare
    /// counter, so that a write already blocked on that dead connection
    /// (waiting for stream credit that will never come) is cut short.
    reset: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl PeerQueue {
    fn try_push(&self, bytes: Bytes, max_bytes: usize) -> bool {
        let len = bytes.len();
        if self.queued_bytes.load(Ordering::Relaxed).saturating_add(len) > max_bytes {
            return false;
        }
        // Counted before the push so the task's decrement cannot underflow.
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send((*self.reset.borrow(), bytes)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl Transport {
    /// Binds the endpoint and starts accepting. `wan` wraps the socket in
    /// the WAN emulation layer (tests only).
    pub async fn bind(
        listen: SocketAddr,
        identity: &Identity,
        opts: TransportOptions,
        wan: Option<WanHandle>,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        // The WAN socket and the accept loop spawn tasks, and `send` spawns
        // peer tasks from any thread: all on this runtime.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TransportError::Config("bind must run inside a tokio runtime".into()))?;
        if opts.queue_frames == 0 || opts.inbound_capacity == 0 {
            return Err(TransportError::Config("queue capacities must be positive".into()));
        }
        let mut tc = quinn::TransportConfig::default();
        tc.keep_alive_interval(Some(opts.keep_alive));
        tc.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(opts.idle_timeout)
                .map_err(|_| TransportError::Config(format!("idle timeout {:?} too large", opts.idle_timeout)))?,
        ));
        // Receiving tasks per connection are bounded by this stream credit.
        tc.max_concurrent_uni_streams(VarInt::from_u32(256));
        tc.max_concurrent_bidi_streams(VarInt::from_u32(0));
        let tc = Arc::new(tc);
        let mut server = tls::server_config(identity)?;
        server.transport_config(tc.clone());
        let mut client = tls::client_config(identity)?;
        client.transport_config(tc);

        let bind_err = |source| TransportError::Bind { addr: listen, source };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        let quinn_rt: Arc<dyn Runtime> = Arc::new(TokioRuntime);
        let socket = match wan {
            #[cfg(feature = "wan-emulation")]
            Some(handle) => wan::emulated_socket(socket, handle),
            #[cfg(not(feature = "wan-emulation"))]
            Some(never) => match never {},
            None => quinn_rt.wrap_udp_socket(socket),
        }
        .map_err(bind_err)?;
        let endpoint = Endpoint::new_with_abstract_socket(EndpointConfig::default(), Some(server), socket, quinn_rt)
            .map_err(bind_err)?;

        let (tx, rx) = mpsc::channel(opts.inbound_capacity);
        let shared = Arc::new(Shared {
            endpoint,
            client,
            opts,
            counters: Counters::default(),
            inbound: tx,
            peers: Mutex::new(BTreeMap::new()),
            closing: AtomicBool::new(false),
            next_peer_id: AtomicU64::new(0),
            runtime: runtime.clone(),
        });
        runtime.spawn(recv::accept_loop(shared.clone()));
        let guard = Arc::new(CloseOnDrop(shared.clone()));
        Ok((Transport { shared, _guard: guard }, rx))
    }

    /// Queues `bytes` for `peer_addr` ("host:port"; names are resolved when
    /// dialing). Never blocks: if the peer's queue is full the frame is
    /// dropped and counted.
    pub fn send(&self, peer_addr: &str, bytes: Bytes) {
        let s = &self.shared;
        let len = bytes.len();
        if len > s.opts.max_frame {
            s.counters.add(Counter::SendOversize, 1);
            tracing::warn!(peer = peer_addr, len, max = s.opts.max_frame, "frame too large to send; dropped");
            return;
        }
        let mut peers = s.lock_peers();
        // Checked under the lock `close` takes the queues with, so no queue
        // is created after they are gone.
        if s.closing.load(Ordering::SeqCst) {
            drop(peers);
            s.counters.add(Counter::SendDropped, 1);
            return;
        }
        // A queue whose task ended (it retires only under this lock, so this
        // means it crashed) is replaced.
        if peers.get(peer_addr).is_none_or(|q| q.tx.is_closed()) {
            peers.insert(peer_addr.to_string(), peer::spawn(s.clone(), peer_addr.to_string()));
        }
        if peers.get(peer_addr).is_some_and(|q| q.try_push(bytes, s.opts.queue_bytes)) {
            return;
        }
        drop(peers);
        s.counters.add(Counter::SendDropped, 1);
        tracing::debug!(peer = peer_addr, len, "peer queue full; frame dropped");
    }

    /// The peer at `peer_addr` restarted or was declared dead. The
    /// connection to its old process would look alive until the idle
    /// timeout, swallowing every frame; and what is still queued for it is
    /// stale (anti-entropy repairs it in bulk, faster than thousands of
    /// one-stream pushes racing it). So frames queued until now are dropped,
    /// counted, and the next frame dials afresh without backoff. Frames
    /// queued after this call (e.g. the reply to its join) are kept.
    pub fn reconnect(&self, peer_addr: &str) {
        // Under the lock `send` tags frames with, so the cut is exact.
        if let Some(q) = self.shared.lock_peers().get(peer_addr) {
            q.reset.send_modify(|gen| *gen += 1);
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// This transport's own counters (tests run several in one process,
    /// where the global metrics would mix them).
    #[cfg(test)]
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting frames, lets peer queues drain and their last streams
    /// be acknowledged, then closes the endpoint. Bounded by
    /// `close_timeout` (twice: drain, then connection close).
    pub async fn close(&self) {
        let s = &self.shared;
        if s.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        // Dropping the senders lets each peer task drain what is queued and exit.
        let peers = std::mem::take(&mut *s.lock_peers());
        let deadline = tokio::time::Instant::now() + s.opts.close_timeout;
        for (_, q) in peers {
            let abort = q.task.abort_handle();
            if tokio::time::timeout_at(deadline, q.task).await.is_err() {
                abort.abort();
            }
        }
        s.endpoint.close(VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(s.opts.close_timeout, s.endpoint.wait_idle()).await;
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("local_addr", &self.local_addr().ok()).finish_non_exhaustive()
    }
}

impl Shared {
    fn lock_peers(&self) -> MutexGuard<'_, BTreeMap<String, PeerQueue>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::SeqCst);
        // Tasks hold `Shared`; closing the endpoint and the queues ends them.
        for (_, q) in std::mem::take(&mut *self.0.lock_peers()) {
            q.task.abort();
        }
        self.0.endpoint.close(VarInt::from_u32(0), b"dropped");
    }
}
