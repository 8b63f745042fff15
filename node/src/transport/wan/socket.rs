//! The emulating `AsyncUdpSocket`: wraps quinn's tokio socket and applies the
//! live [`WanHandle`] config to every outgoing datagram.

use std::collections::BTreeMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WanHandle;

/// Datagrams held for later delivery, per socket; beyond this they are
/// dropped (counted), as a router with a full buffer would.
const DELAY_QUEUE: usize = 16 * 1024;
/// Attempts to hand one delayed datagram to a busy socket before giving up.
const SEND_ATTEMPTS: usize = 8;

/// Wraps `socket` for use with `quinn::Endpoint::new_with_abstract_socket`.
/// Must be called inside a tokio runtime: delayed datagrams are sent by a
/// task that ends when the returned socket is dropped.
pub fn emulated_socket(socket: std::net::UdpSocket, handle: WanHandle) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    let inner = TokioRuntime.wrap_udp_socket(socket)?;
    let (tx, rx) = mpsc::channel(DELAY_QUEUE);
    tokio::spawn(deliver_delayed(inner.clone(), rx));
    let rng = Mutex::new(StdRng::seed_from_u64(handle.seed()));
    Ok(Arc::new(WanSocket { inner, handle, rng, delayed: tx }))
}

#[derive(Debug)]
struct WanSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    handle: WanHandle,
    rng: Mutex<StdRng>,
    delayed: mpsc::Sender<Delayed>,
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

impl Delayed {
    fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.destination,
            ecn: self.ecn,
            contents: &self.contents,
            segment_size: self.segment_size,
            src_ip: self.src_ip,
        }
    }
}

impl AsyncUdpSocket for WanSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let link = self.handle.link_for(t.destination);
        if link.is_passthrough() {
            return self.inner.try_send(t);
        }
        let (lost, extra) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let lost = link.loss > 0.0 && rng.random::<f64>() < link.loss;
            let jitter = u64::try_from(link.jitter.as_micros()).unwrap_or(u64::MAX);
            let extra = if jitter == 0 { 0 } else { rng.random_range(0..=jitter) };
            (lost, Duration::from_micros(extra))
        };
        // A dropped datagram reports success: that is what loss looks like to the sender.
        if link.blocked || lost {
            self.handle.count_dropped();
            return Ok(());
        }
        let delay = link.delay + extra;
        if delay.is_zero() {
            return self.inner.try_send(t);
        }
        let d = Delayed {
            due: Instant::now() + delay,
            destination: t.destination,
            ecn: t.ecn,
            contents: t.contents.to_vec(),
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        match self.delayed.try_send(d) {
            Ok(()) => self.handle.count_delayed(),
            Err(_) => self.handle.count_dropped(),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per transmit, so loss and delay apply per datagram.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends delayed datagrams when due, earliest first (ties in arrival order),
/// so order holds except where jitter reorders, as on a real path.
async fn deliver_delayed(inner: Arc<dyn AsyncUdpSocket>, mut rx: mpsc::Receiver<Delayed>) {
    let mut queue: BTreeMap<(Instant, u64), Delayed> = BTreeMap::new();
    let mut poller = inner.clone().create_io_poller();
    let mut arrival = 0u64;
    loop {
        let next_due = queue.first_key_value().map(|(k, _)| k.0);
        tokio::select! {
            msg = rx.recv(), if queue.len() < DELAY_QUEUE => match msg {
                Some(d) => {
                    queue.insert((d.due, arrival), d);
                    arrival += 1;
                }
                // The socket is gone: pending datagrams go with it.
                None => return,
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                while let Some(entry) = queue.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    send_now(&*inner, &mut poller, &entry.remove()).await;
                }
            }
        }
    }
}

async fn send_now(inner: &dyn AsyncUdpSocket, poller: &mut Pin<Box<dyn UdpPoller>>, d: &Delayed) {
    for _ in 0..SEND_ATTEMPTS {
        match inner.try_send(&d.transmit()) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(to = %d.destination, error = %e, "WAN emulation: delayed send failed");
                return;
            }
        }
    }
}
