//! Transport counters: per-transport atomics (readable by the caller and by
//! tests running several nodes in one process) mirrored into the `metrics`
//! crate as `purgecast_peer_*_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of a transport's counters.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub frames_sent: u64,
    /// Streams those frames went in: fewer than frames when frames queued
    /// together were sent as one batch.
    pub streams_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Frames refused at `send` because the peer's queue was full (or the
    /// transport closing): the explicit overload choice.
    pub send_dropped: u64,
    /// Frames refused at `send` for exceeding the frame limit.
    pub send_oversize: u64,
    /// Frames dequeued but not delivered: peer unreachable or write failed.
    pub send_failed: u64,
    /// Outgoing connection attempts that failed (resolution, handshake, timeout).
    pub connect_failures: u64,
    /// Incoming connections refused at the handshake (e.g. no valid cert).
    pub handshake_failures: u64,
    /// Received frames over the size limit, dropped.
    pub frames_oversize: u64,
    /// Received streams that failed before their end, dropped.
    pub read_failures: u64,
    /// What QUIC put on the wire (headers, acks, keep-alives, handshakes and
    /// retransmissions included), sampled from every connection.
    pub udp_datagrams_sent: u64,
    pub udp_bytes_sent: u64,
    pub udp_datagrams_received: u64,
    pub udp_bytes_received: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    FramesSent,
    StreamsSent,
    BytesSent,
    FramesReceived,
    BytesReceived,
    SendDropped,
    SendOversize,
    SendFailed,
    ConnectFailures,
    HandshakeFailures,
    FramesOversize,
    ReadFailures,
    UdpDatagramsSent,
    UdpBytesSent,
    UdpDatagramsReceived,
    UdpBytesReceived,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [AtomicU64; 16],
}

impl Counters {
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
        // The macro needs a literal name per call site.
        let counter = match c {
            Counter::FramesSent => metrics::counter!("purgecast_peer_frames_sent_total"),
            Counter::StreamsSent => metrics::counter!("purgecast_peer_streams_sent_total"),
            Counter::BytesSent => metrics::counter!("purgecast_peer_bytes_sent_total"),
            Counter::FramesReceived => metrics::counter!("purgecast_peer_frames_received_total"),
            Counter::BytesReceived => metrics::counter!("purgecast_peer_bytes_received_total"),
            Counter::SendDropped => metrics::counter!("purgecast_peer_send_dropped_total"),
            Counter::SendOversize => metrics::counter!("purgecast_peer_send_oversize_total"),
            Counter::SendFailed => metrics::counter!("purgecast_peer_send_failed_total"),
            Counter::ConnectFailures => metrics::counter!("purgecast_peer_connect_failures_total"),
            Counter::HandshakeFailures => metrics::counter!("purgecast_peer_handshake_failures_total"),
            Counter::FramesOversize => metrics::counter!("purgecast_peer_frames_oversize_total"),
            Counter::ReadFailures => metrics::counter!("purgecast_peer_read_failures_total"),
            Counter::UdpDatagramsSent => metrics::counter!("purgecast_peer_udp_datagrams_sent_total"),
            Counter::UdpBytesSent => metrics::counter!("purgecast_peer_udp_bytes_sent_total"),
            Counter::UdpDatagramsReceived => metrics::counter!("purgecast_peer_udp_datagrams_received_total"),
            Counter::UdpBytesReceived => metrics::counter!("purgecast_peer_udp_bytes_received_total"),
        };
        counter.increment(n);
    }

    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> TransportStats {
        let v = |c: Counter| self.values[c as usize].load(Ordering::Relaxed);
        TransportStats {
            frames_sent: v(Counter::FramesSent),
            streams_sent: v(Counter::StreamsSent),
            bytes_sent: v(Counter::BytesSent),
            frames_received: v(Counter::FramesReceived),
            bytes_received: v(Counter::BytesReceived),
            send_dropped: v(Counter::SendDropped),
            send_oversize: v(Counter::SendOversize),
            send_failed: v(Counter::SendFailed),
            connect_failures: v(Counter::ConnectFailures),
            handshake_failures: v(Counter::HandshakeFailures),
            frames_oversize: v(Counter::FramesOversize),
            read_failures: v(Counter::ReadFailures),
            udp_datagrams_sent: v(Counter::UdpDatagramsSent),
            udp_bytes_sent: v(Counter::UdpBytesSent),
            udp_datagrams_received: v(Counter::UdpDatagramsReceived),
            udp_bytes_received: v(Counter::UdpBytesReceived),
        }
    }
}
