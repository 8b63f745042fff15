//! Outgoing side: one task per peer address drains its queue over a
//! persistent connection, redialing with backoff when it breaks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, SendStream, VarInt, WriteError};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::stats::Counter;
use super::{batch, recv, PeerQueue, Shared};

pub(super) fn spawn(shared: Arc<Shared>, addr: String) -> PeerQueue {
    let (tx, rx) = mpsc::channel(shared.opts.queue_frames);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let (reset, reset_rx) = watch::channel(0u64);
    let id = shared.next_peer_id.fetch_add(1, Ordering::Relaxed);
    let runtime = shared.runtime.clone();
    let peer = Peer {
        shared,
        addr,
        id,
        rx,
        queued: queued_bytes.clone(),
        reset: reset_rx,
        conn_gen: 0,
        conn: None,
        last: None,
        failures: 0,
        retry_at: None,
        spare: None,
    };
    PeerQueue { id, tx, queued_bytes, reset, task: runtime.spawn(peer.run()) }
}

struct Peer {
    shared: Arc<Shared>,
    addr: String,
    id: u64,
    rx: mpsc::Receiver<(u64, Bytes)>,
    queued: Arc<AtomicUsize>,
    reset: watch::Receiver<u64>,
    /// The `reset` generation `conn` was dialed in.
    conn_gen: u64,
    conn: Option<Connection>,
    /// The most recent stream, awaited at shutdown so queued frames are not
    /// cut off by the connection close.
    last: Option<SendStream>,
    failures: u32,
    retry_at: Option<Instant>,
    /// A frame taken from the queue that did not fit in the last batch; it
    /// leads the next one (still counted in `queued`).
    spare: Option<(u64, Bytes)>,
}

#[derive(Debug, thiserror::Error)]
enum ConnectFail {
    #[error("address must be host:port")]
    BadAddress,
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("resolves to no address of the endpoint's family")]
    NoAddress,
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("timed out")]
    Timeout,
}

enum WriteFail {
    /// The peer stopped the stream: it refused this frame, the connection is fine.
    Refused(VarInt),
    Timeout,
    Lost(String),
    /// The peer restarted or was declared dead during the write: the frame
    /// was meant for its old process.
    Reset,
}

impl Peer {
    async fn run(mut self) {
        loop {
            let first = match self.spare.take() {
                Some(item) => item,
                None => match timeout(self.shared.opts.peer_idle, self.rx.recv()).await {
                    Ok(Some(item)) => item,
                    // The transport is closing and the queue is drained.
                    Ok(None) => break,
                    Err(_) if self.retire() => break,
                    Err(_) => continue,
                },
            };
            self.queued.fetch_sub(first.1.len(), Ordering::Relaxed);
            let mut frames = vec![first];
            if self.shared.opts.batch {
                self.fill(&mut frames);
            }
            self.deliver(frames).await;
        }
        if let Some(stream) = self.last.take() {
            let _ = timeout(self.shared.opts.close_timeout, stream.stopped()).await;
        }
        if let Some(conn) = self.conn.take() {
            conn.close(VarInt::from_u32(0), b"bye");
        }
    }

    /// Leaves the peer map if nothing is queued. `send` pushes under the same
    /// lock, so no frame can slip into a queue nobody will drain.
    fn retire(&self) -> bool {
        let mut peers = self.shared.lock_peers();
        if !self.rx.is_empty() {
            return false;
        }
        if peers.get(&self.addr).is_some_and(|q| q.id == self.id) {
            peers.remove(&self.addr);
        }
        true
    }

    /// Adds to `frames` what else is queued now, up to a batch's bounds;
    /// waits for nothing.
    fn fill(&mut self, frames: &mut Vec<(u64, Bytes)>) {
        let mut len = 1 + frames.iter().map(|(_, f)| batch::overhead(f.len()) + f.len()).sum::<usize>();
        while frames.len() < batch::MAX_FRAMES {
            let Ok((gen, frame)) = self.rx.try_recv() else { break };
            let add = batch::overhead(frame.len()) + frame.len();
            if len + add > self.shared.opts.max_frame {
                self.spare = Some((gen, frame));
                break;
            }
            self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
            len += add;
            frames.push((gen, frame));
        }
    }

    /// Sends `frames` (each tagged with the reset generation it was queued
    /// in) in one stream, all or none.
    async fn deliver(&mut self, mut frames: Vec<(u64, Bytes)>) {
        let shared = self.shared.clone();
        let counters = &shared.counters;
        let queued = frames.len();
        let reset = *self.reset.borrow();
        frames.retain(|(gen, _)| *gen >= reset);
        if frames.len() < queued {
            counters.add(Counter::SendFailed, (queued - frames.len()) as u64);
        }
        let Some(gen) = frames.iter().map(|(gen, _)| *gen).min() else { return };
        let n = frames.len() as u64;
        let bytes: u64 = frames.iter().map(|(_, f)| f.len() as u64).sum();
        let parts: Vec<Bytes> = frames.into_iter().map(|(_, f)| f).collect();
        let payload = batch::encode(&parts);
        // A broken connection is usually only noticed on write: retry once
        // on a fresh one before giving up on the frames.
        for _ in 0..2 {
            if gen < *self.reset.borrow() {
                break;
            }
            let Some(conn) = self.connection().await else {
                counters.add(Counter::SendFailed, n);
                self.discard_queued();
                return;
            };
            match self.write(&conn, &payload).await {
                Ok(()) => {
                    counters.add(Counter::StreamsSent, 1);
                    counters.add(Counter::FramesSent, n);
                    counters.add(Counter::BytesSent, bytes);
                    return;
                }
                Err(WriteFail::Refused(code)) => {
                    tracing::warn!(peer = %self.addr, len = payload.len(), frames = n, %code, "peer refused frame");
                    break;
                }
                Err(WriteFail::Timeout) => {
                    tracing::warn!(peer = %self.addr, len = payload.len(), frames = n, "write timed out; frames dropped");
                    break;
                }
                Err(WriteFail::Reset) => break,
                Err(WriteFail::Lost(e)) => {
                    tracing::debug!(peer = %self.addr, error = %e, "connection lost; redialing");
                    self.conn = None;
                    self.last = None;
                }
            }
        }
        counters.add(Counter::SendFailed, n);
    }

    async fn write(&mut self, conn: &Connection, frame: &Bytes) -> Result<(), WriteFail> {
        let send = async {
            let mut stream = conn.open_uni().await.map_err(|e| WriteFail::Lost(e.to_string()))?;
            stream.write_chunk(frame.clone()).await.map_err(|e| match e {
                WriteError::Stopped(code) => WriteFail::Refused(code),
                other => WriteFail::Lost(other.to_string()),
            })?;
            stream.finish().map_err(|e| WriteFail::Lost(e.to_string()))?;
            Ok(stream)
        };
        let outcome = tokio::select! {
            r = timeout(self.shared.opts.write_timeout, send) => r,
            Ok(()) = self.reset.changed() => return Err(WriteFail::Reset),
        };
        match outcome {
            Ok(Ok(stream)) => {
                self.last = Some(stream);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WriteFail::Timeout),
        }
    }

    /// The live connection, dialing (after any backoff) if there is none.
    async fn connection(&mut self) -> Option<Connection> {
        if let Some(at) = self.retry_at {
            // A reset while backing off means the peer is back: dial now.
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                Ok(()) = self.reset.changed() => {}
            }
        }
        let gen = *self.reset.borrow_and_update();
        if self.conn_gen < gen {
            self.conn_gen = gen;
            if let Some(conn) = self.conn.take() {
                tracing::info!(peer = %self.addr, "peer restarted or declared dead; dropping its connection");
                conn.close(VarInt::from_u32(0), b"peer restarted");
            }
            self.last = None;
            self.failures = 0;
            self.retry_at = None;
        }
        if let Some(conn) = &self.conn {
            if conn.close_reason().is_none() {
                return Some(conn.clone());
            }
            self.conn = None;
            self.last = None;
        }
        match connect(&self.shared, &self.addr).await {
            Ok(conn) => {
                if self.failures > 0 {
                    tracing::info!(peer = %self.addr, failures = self.failures, "peer reachable again");
                }
                self.failures = 0;
                self.retry_at = None;
                self.conn = Some(conn.clone());
                Some(conn)
            }
            Err(e) => {
                self.shared.counters.add(Counter::ConnectFailures, 1);
                self.failures = self.failures.saturating_add(1);
                let wait = backoff(self.shared.opts.backoff_min, self.shared.opts.backoff_max, self.failures);
                self.retry_at = Some(Instant::now() + wait);
                // The first failure is news; repeats every few seconds are not.
                if self.failures == 1 {
                    tracing::warn!(peer = %self.addr, error = %e, "cannot connect to peer");
                } else {
                    tracing::debug!(peer = %self.addr, error = %e, failures = self.failures, "cannot connect to peer");
                }
                None
            }
        }
    }

    /// Frames queued for an unreachable peer are stale by the time it is
    /// back; anti-entropy repairs what they carried. Dropping them keeps a
    /// dead peer from pinning a full queue.
    fn discard_queued(&mut self) {
        let mut n = 0;
        if let Some((_, frame)) = self.spare.take() {
            self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
            n += 1;
        }
        for _ in 0..self.rx.len() {
            match self.rx.try_recv() {
                Ok((_, frame)) => {
                    self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        self.shared.counters.add(Counter::SendFailed, n);
    }
}

fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    min.saturating_mul(1 << exp).min(max)
}

async fn connect(shared: &Arc<Shared>, addr: &str) -> Result<Connection, ConnectFail> {
    let opts = &shared.opts;
    let host = host_part(addr).ok_or(ConnectFail::BadAddress)?;
    let want_v6 = shared.endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut addrs = timeout(opts.connect_timeout, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| ConnectFail::Timeout)?
        .map_err(ConnectFail::Resolve)?;
    let target = addrs.find(|a| a.is_ipv6() == want_v6).ok_or(ConnectFail::NoAddress)?;
    let connecting = shared.endpoint.connect_with(shared.client.clone(), target, host)?;
    let conn = timeout(opts.connect_timeout, connecting).await.map_err(|_| ConnectFail::Timeout)??;
    // The peer may open streams on our connection too.
    tokio::spawn(recv::read_connection(shared.clone(), conn.clone()));
    Ok(conn)
}

/// The host part of "host:port" or "[v6]:port": the TLS server name.
pub(super) fn host_part(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains(['[', ']'])).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_handles_names_v4_and_v6() {
        assert_eq!(host_part("node-a:7000"), Some("node-a"));
        assert_eq!(host_part("127.0.0.1:7000"), Some("127.0.0.1"));
        assert_eq!(host_part("[::1]:7000"), Some("::1"));
        assert_eq!(host_part("node-a"), None);
        assert_eq!(host_part(":7000"), None);
        assert_eq!(host_part("a:99999"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(min, max, 1), min);
        assert_eq!(backoff(min, max, 3), Duration::from_millis(400));
        assert_eq!(backoff(min, max, 40), max);
    }
}
