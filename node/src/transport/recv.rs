//! Incoming side: accept connections (the TLS handshake refuses peers
//! without a CA-signed cert), then read one frame, or one batch of frames,
//! per unidirectional stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, ConnectionError, ReadError, ReadToEndError, RecvStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::Counter;
use super::{batch, Inbound, Shared};
use crate::tls;

/// Streams read at once per connection. With the driver stalled, at most
/// this many frames per connection sit in memory beyond the inbound queue;
/// the rest wait in the sender's queue under QUIC flow control.
const READS_PER_CONNECTION: usize = 32;
/// Stop code telling the sender its frame was over the limit.
const FRAME_TOO_LARGE: u32 = 1;

pub(super) async fn accept_loop(shared: Arc<Shared>) {
    // Ends when the endpoint is closed.
    while let Some(incoming) = shared.endpoint.accept().await {
        let remote = incoming.remote_address();
        let shared = shared.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => read_connection(shared, conn).await,
                Err(e) => {
                    shared.counters.add(Counter::HandshakeFailures, 1);
                    tracing::warn!(%remote, error = %e, "refused peer connection");
                }
            }
        });
    }
}

/// Reads frames until the connection closes.
pub(super) async fn read_connection(shared: Arc<Shared>, conn: Connection) {
    let from = conn.remote_address();
    let peer_name = peer_name(&conn);
    tracing::debug!(%from, peer = ?peer_name, "peer connection up");
    let reads = Arc::new(Semaphore::new(READS_PER_CONNECTION));
    let mut wire = WireStats::default();
    let mut sample = tokio::time::interval(WIRE_SAMPLE);
    loop {
        tokio::select! {
            accepted = conn.accept_uni() => {
                let Ok(stream) = accepted else { break };
                // Waiting here leaves further streams unaccepted: backpressure.
                let Ok(permit) = reads.clone().acquire_owned().await else { break };
                tokio::spawn(read_frame(shared.clone(), stream, from, peer_name.clone(), permit));
            }
            _ = sample.tick() => wire.report(&shared, &conn),
        }
    }
    wire.report(&shared, &conn);
}

/// How often a connection's wire counters are copied into the metrics.
const WIRE_SAMPLE: Duration = Duration::from_secs(1);

/// The UDP totals of one connection already added to the counters. Every
/// connection, dialled or accepted, has one reader task, so sampling here
/// covers them all.
#[derive(Default)]
struct WireStats {
    tx_datagrams: u64,
    tx_bytes: u64,
    rx_datagrams: u64,
    rx_bytes: u64,
}

impl WireStats {
    fn report(&mut self, shared: &Shared, conn: &Connection) {
        let s = conn.stats();
        let c = &shared.counters;
        let add = |counter, last: &mut u64, now: u64| {
            c.add(counter, now.saturating_sub(*last));
            *last = now.max(*last);
        };
        add(Counter::UdpDatagramsSent, &mut self.tx_datagrams, s.udp_tx.datagrams);
        add(Counter::UdpBytesSent, &mut self.tx_bytes, s.udp_tx.bytes);
        add(Counter::UdpDatagramsReceived, &mut self.rx_datagrams, s.udp_rx.datagrams);
        add(Counter::UdpBytesReceived, &mut self.rx_bytes, s.udp_rx.bytes);
    }
}

async fn read_frame(
    shared: Arc<Shared>,
    mut stream: RecvStream,
    from: SocketAddr,
    peer_name: Option<String>,
    _permit: OwnedSemaphorePermit,
) {
    let counters = &shared.counters;
    match stream.read_to_end(shared.opts.max_frame).await {
        Ok(buf) => {
            for frame in batch::decode(Bytes::from(buf)) {
                let bytes = match frame {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        counters.add(Counter::ReadFailures, 1);
                        tracing::warn!(%from, peer = ?peer_name, error = %e, "malformed batch; the rest of it dropped");
                        break;
                    }
                };
                counters.add(Counter::FramesReceived, 1);
                counters.add(Counter::BytesReceived, bytes.len() as u64);
                let inbound = Inbound { from_addr: from, peer_name: peer_name.clone(), bytes };
                // Err only if the driver dropped its receiver: nobody to deliver to.
                if shared.inbound.send(inbound).await.is_err() {
                    break;
                }
            }
        }
        Err(ReadToEndError::TooLong) => {
            counters.add(Counter::FramesOversize, 1);
            tracing::warn!(%from, peer = ?peer_name, max = shared.opts.max_frame, "oversize frame dropped");
            let _ = stream.stop(VarInt::from_u32(FRAME_TOO_LARGE));
        }
        Err(ReadToEndError::Read(e)) => {
            counters.add(Counter::ReadFailures, 1);
            // A connection closing under an unfinished stream is shutdown,
            // not misbehaviour.
            if matches!(
                e,
                ReadError::ConnectionLost(ConnectionError::ApplicationClosed(_) | ConnectionError::LocallyClosed)
            ) {
                tracing::debug!(%from, peer = ?peer_name, error = %e, "frame cut off by connection close");
            } else {
                tracing::warn!(%from, peer = ?peer_name, error = %e, "frame read failed; dropped");
            }
        }
    }
}

/// The common name of the peer's verified certificate.
fn peer_name(conn: &Connection) -> Option<String> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::cert_names(certs.first()?)?.common_name
}
