//! Real QUIC on 127.0.0.1. Shared helpers are also used by the WAN tests.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use purgecast_core::wire::MAX_FRAME;
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout, Instant};

use super::{Inbound, Transport, TransportOptions};
use crate::tls::Identity;
use crate::tools::certs::{dev_sans, generate_ca, issue_node_cert, CaBundle};
use crate::transport::WanHandle;

pub(crate) struct TestNode {
    pub t: Transport,
    pub rx: Receiver<Inbound>,
    pub addr: String,
}

pub(crate) fn identity(ca: &CaBundle, trust: &CaBundle, name: &str) -> Identity {
    let cert = issue_node_cert(ca, name, &dev_sans(name)).unwrap();
    Identity::from_pem(&cert.cert_pem, &cert.key_pem, &trust.cert_pem).unwrap()
}

pub(crate) async fn node(id: &Identity, opts: TransportOptions, wan: Option<WanHandle>) -> TestNode {
    let (t, rx) = Transport::bind("127.0.0.1:0".parse().unwrap(), id, opts, wan).await.unwrap();
    let addr = t.local_addr().unwrap().to_string();
    TestNode { t, rx, addr }
}

pub(crate) async fn pair(ca: &CaBundle, wan: Option<WanHandle>) -> (TestNode, TestNode) {
    let a = node(&identity(ca, ca, "a"), TransportOptions::default(), wan).await;
    let b = node(&identity(ca, ca, "b"), TransportOptions::default(), None).await;
    (a, b)
}

pub(crate) async fn recv_within(rx: &mut Receiver<Inbound>, wait: Duration) -> Option<Inbound> {
    timeout(wait, rx.recv()).await.ok().flatten()
}

/// Polls `cond` every 20 ms until it holds or `wait` passes.
pub(crate) async fn eventually(wait: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

const WAIT: Duration = Duration::from_secs(10);

/// Binds a new transport on the address a closed one used: a restart. The
/// port frees once the old endpoint's driver has finished.
async fn rebind(addr: SocketAddr, id: &Identity) -> (Transport, Receiver<Inbound>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match Transport::bind(addr, id, TransportOptions::default(), None).await {
            Ok(bound) => return bound,
            Err(e) => {
                assert!(Instant::now() < deadline, "port never freed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn frames_flow_both_ways_with_verified_names() {
    let ca = generate_ca("ca").unwrap();
    let (mut a, mut b) = pair(&ca, None).await;
    a.t.send(&b.addr, Bytes::from_static(b"hello"));
    let got = recv_within(&mut b.rx, WAIT).await.unwrap();
    assert_eq!(&got.bytes[..], b"hello");
    assert_eq!(got.peer_name.as_deref(), Some("a"));
    assert_eq!(got.from_addr.to_string(), a.addr);

    b.t.send(&a.addr, Bytes::from_static(b"world"));
    let got = recv_within(&mut a.rx, WAIT).await.unwrap();
    assert_eq!(&got.bytes[..], b"world");
    assert_eq!(got.peer_name.as_deref(), Some("b"));

    for i in 0..200u32 {
        a.t.send(&b.addr, Bytes::from(i.to_be_bytes().to_vec()));
    }
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let f = recv_within(&mut b.rx, WAIT).await.unwrap();
        seen.insert(u32::from_be_bytes(f.bytes[..].try_into().unwrap()));
    }
    assert_eq!(seen, (0..200).collect());
    let (sa, sb) = (a.t.stats(), b.t.stats());
    assert_eq!(sa.frames_sent, 201);
    assert_eq!(sa.frames_received, 1);
    assert_eq!(sb.frames_received, 201);
    assert_eq!(sb.bytes_received, 5 + 200 * 4);
    assert_eq!(sa.send_dropped + sa.send_failed + sa.connect_failures, 0);

    // Wire counters are sampled once a second; they must come to cover the
    // payload plus QUIC's own overhead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.t.stats().udp_bytes_sent <= sa.bytes_sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sa, sb) = (a.t.stats(), b.t.stats());
    assert!(sa.udp_bytes_sent > sa.bytes_sent, "wire bytes {} vs payload {}", sa.udp_bytes_sent, sa.bytes_sent);
    assert!(sa.udp_datagrams_sent > 0 && sb.udp_datagrams_received > 0);
}

#[tokio::test]
async fn frames_queued_together_share_a_stream_unless_batching_is_off() {
    let ca = generate_ca("ca").unwrap();
    for batch in [true, false] {
        let opts = TransportOptions { batch, ..TransportOptions::default() };
        let a = node(&identity(&ca, &ca, "a"), opts, None).await;
        let mut b = node(&identity(&ca, &ca, "b"), TransportOptions::default(), None).await;
        // A third start with the byte that marks a batch: they must still
        // arrive as sent.
        let sent: Vec<Bytes> = (0..150u32).map(|i| Bytes::from(vec![(i % 3) as u8, i as u8])).collect();
        // One thread and no await: every frame is queued before the peer's
        // task first runs.
        for f in &sent {
            a.t.send(&b.addr, f.clone());
        }
        let mut got = Vec::new();
        for _ in 0..sent.len() {
            got.push(recv_within(&mut b.rx, WAIT).await.expect("every frame arrives").bytes);
        }
        // Streams are read concurrently; a batch keeps its own order.
        got.sort();
        let mut want = sent.clone();
        want.sort();
        assert_eq!(got, want, "batch {batch}");
        let s = a.t.stats();
        assert_eq!(s.frames_sent, 150);
        assert_eq!(s.bytes_sent, 300);
        assert_eq!(s.streams_sent, if batch { 3 } else { 150 }, "64 frames a batch at most");
        assert_eq!(b.t.stats().frames_received, 150);
        assert_eq!(b.t.stats().read_failures, 0);
    }
}

#[tokio::test]
async fn peers_without_a_ca_signed_cert_are_refused_both_ways() {
    let ca = generate_ca("ca").unwrap();
    let rogue_ca = generate_ca("rogue").unwrap();
    let mut a = node(&identity(&ca, &ca, "a"), TransportOptions::default(), None).await;
    // b: foreign cert, trusts only its own CA. c: foreign cert, trusts ours,
    // so only a's client-cert check stands between c and a.
    let mut b = node(&identity(&rogue_ca, &rogue_ca, "b"), TransportOptions::default(), None).await;
    let mut c = node(&identity(&rogue_ca, &ca, "c"), TransportOptions::default(), None).await;

    a.t.send(&b.addr, Bytes::from_static(b"a->b"));
    b.t.send(&a.addr, Bytes::from_static(b"b->a"));
    c.t.send(&a.addr, Bytes::from_static(b"c->a"));
    assert!(eventually(WAIT, || a.t.stats().connect_failures >= 1).await, "a accepted b's server cert");
    assert!(eventually(WAIT, || b.t.stats().connect_failures >= 1).await, "b accepted a's server cert");
    assert!(eventually(WAIT, || a.t.stats().handshake_failures >= 2).await, "a accepted a client cert");

    assert!(recv_within(&mut a.rx, Duration::from_millis(500)).await.is_none());
    assert!(recv_within(&mut b.rx, Duration::from_millis(100)).await.is_none());
    assert!(recv_within(&mut c.rx, Duration::from_millis(100)).await.is_none());
    assert_eq!(a.t.stats().frames_received + b.t.stats().frames_received, 0);
}

#[tokio::test]
async fn oversize_frames_are_dropped_and_counted() {
    let ca = generate_ca("ca").unwrap();
    let big_sender = TransportOptions { max_frame: 2 * MAX_FRAME, ..TransportOptions::default() };
    let a = node(&identity(&ca, &ca, "a"), big_sender, None).await;
    let mut b = node(&identity(&ca, &ca, "b"), TransportOptions::default(), None).await;

    a.t.send(&b.addr, Bytes::from(vec![0u8; MAX_FRAME + 1]));
    assert!(eventually(WAIT, || b.t.stats().frames_oversize == 1).await);
    a.t.send(&b.addr, Bytes::from_static(b"small"));
    let got = recv_within(&mut b.rx, WAIT).await.unwrap();
    assert_eq!(&got.bytes[..], b"small");
    assert_eq!(b.t.stats().frames_received, 1);

    // A sender with the default limit refuses up front.
    b.t.send(&a.addr, Bytes::from(vec![0u8; MAX_FRAME + 1]));
    assert_eq!(b.t.stats().send_oversize, 1);
}

#[tokio::test]
async fn full_queues_drop_and_count() {
    let ca = generate_ca("ca").unwrap();
    let opts = TransportOptions { queue_frames: 4, ..TransportOptions::default() };
    let a = node(&identity(&ca, &ca, "a"), opts, None).await;
    let mut b = node(&identity(&ca, &ca, "b"), TransportOptions::default(), None).await;

    // The test runtime is single-threaded: the peer task cannot drain
    // before this loop yields, so exactly 4 frames fit.
    for i in 0..10u8 {
        a.t.send(&b.addr, Bytes::from(vec![i]));
    }
    assert_eq!(a.t.stats().send_dropped, 6);
    let mut got = BTreeSet::new();
    for _ in 0..4 {
        got.insert(recv_within(&mut b.rx, WAIT).await.unwrap().bytes[0]);
    }
    assert_eq!(got, (0..4).collect());
    assert!(recv_within(&mut b.rx, Duration::from_millis(300)).await.is_none());

    let opts = TransportOptions { queue_bytes: 10, ..TransportOptions::default() };
    let c = node(&identity(&ca, &ca, "c"), opts, None).await;
    for _ in 0..3 {
        c.t.send(&b.addr, Bytes::from_static(b"1234"));
    }
    assert_eq!(c.t.stats().send_dropped, 1);
}

#[tokio::test]
async fn unreachable_peers_fail_counted_and_reconnect_when_back() {
    let ca = generate_ca("ca").unwrap();
    let opts = TransportOptions {
        connect_timeout: Duration::from_millis(500),
        backoff_max: Duration::from_millis(300),
        ..TransportOptions::default()
    };
    let a = node(&identity(&ca, &ca, "a"), opts, None).await;
    let b = node(&identity(&ca, &ca, "b"), TransportOptions::default(), None).await;
    let b_addr = b.t.local_addr().unwrap();
    b.t.close().await;
    drop(b);

    a.t.send(&b_addr.to_string(), Bytes::from_static(b"lost"));
    assert!(eventually(WAIT, || a.t.stats().connect_failures >= 1 && a.t.stats().send_failed >= 1).await);

    let (_b2, mut rx) = rebind(b_addr, &identity(&ca, &ca, "b")).await;
    let mut delivered = None;
    for _ in 0..50 {
        a.t.send(&b_addr.to_string(), Bytes::from_static(b"again"));
        if let Some(f) = recv_within(&mut rx, Duration::from_millis(300)).await {
            delivered = Some(f);
            break;
        }
    }
    assert_eq!(&delivered.unwrap().bytes[..], b"again");
}

#[tokio::test]
async fn close_delivers_queued_frames_then_refuses_sends() {
    let ca = generate_ca("ca").unwrap();
    let (a, mut b) = pair(&ca, None).await;
    for i in 0..50u8 {
        a.t.send(&b.addr, Bytes::from(vec![i]));
    }
    timeout(WAIT, a.t.close()).await.unwrap();
    let mut got = BTreeSet::new();
    while let Some(f) = recv_within(&mut b.rx, Duration::from_millis(500)).await {
        got.insert(f.bytes[0]);
    }
    assert_eq!(got, (0..50).collect());
    a.t.send(&b.addr, Bytes::from_static(b"late"));
    assert_eq!(a.t.stats().send_dropped, 1);
}

#[tokio::test]
async fn bad_peer_addresses_do_not_crash() {
    let ca = generate_ca("ca").unwrap();
    let a = node(&identity(&ca, &ca, "a"), TransportOptions::default(), None).await;
    a.t.send("no-port", Bytes::from_static(b"x"));
    a.t.send("[::1]:1", Bytes::from_static(b"x"));
    assert!(eventually(WAIT, || a.t.stats().connect_failures >= 2).await);
    assert_eq!(a.t.stats().frames_sent, 0);
}

/// A peer killed with SIGKILL leaves a connection that looks alive: once
/// its stream credit is spent, the next write waits for credit that never
/// comes. When that peer restarts, `reconnect` must cut that write short
/// rather than let it hold the queue (and the new process's join reply)
/// for the write timeout. Here both timeouts are a minute, so only the
/// cut can deliver within `WAIT`.
#[cfg(feature = "wan-emulation")]
#[tokio::test]
async fn reconnect_cuts_a_write_stuck_on_a_dead_process() {
    let ca = generate_ca("ca").unwrap();
    let long = Duration::from_secs(60);
    let opts = TransportOptions { write_timeout: long, idle_timeout: long, ..TransportOptions::default() };
    let a_wan = WanHandle::new(crate::transport::wan::WanConfig::default());
    let b_wan = WanHandle::new(crate::transport::wan::WanConfig::default());
    let a = node(&identity(&ca, &ca, "a"), opts, Some(a_wan.clone())).await;
    let mut b1 = node(&identity(&ca, &ca, "b"), TransportOptions::default(), Some(b_wan.clone())).await;
    let a_addr = a.t.local_addr().unwrap();
    let b_addr = b1.t.local_addr().unwrap();
    a.t.send(&b1.addr, Bytes::from_static(b"hello"));
    assert_eq!(&recv_within(&mut b1.rx, WAIT).await.unwrap().bytes[..], b"hello");

    // b1 "dies": nothing passes either way, not even its close.
    a_wan.set_link(b_addr, crate::transport::wan::LinkSpec::blocked());
    b_wan.set_link(a_addr, crate::transport::wan::LinkSpec::blocked());
    // More frames than the 256 streams b1 granted: the peer task ends up
    // waiting for stream credit on the dead connection.
    for _ in 0..300 {
        a.t.send(&b1.addr, Bytes::from_static(b"stale"));
    }
    assert!(eventually(WAIT, || a.t.stats().frames_sent >= 256).await, "{:?}", a.t.stats());
    tokio::time::sleep(Duration::from_millis(300)).await;
    b1.t.close().await;
    drop(b1);

    // b restarts on the same address; a learns of it (in the node, from
    // its join) and reconnects.
    let (_b2, mut rx) = rebind(b_addr, &identity(&ca, &ca, "b")).await;
    a_wan.set_link(b_addr, crate::transport::wan::LinkSpec::default());
    a.t.reconnect(&b_addr.to_string());
    a.t.send(&b_addr.to_string(), Bytes::from_static(b"after restart"));
    let got = recv_within(&mut rx, WAIT).await.expect("the frame for the new process never came");
    assert_eq!(&got.bytes[..], b"after restart", "stale frames must not reach the new process");
}
