//! The protocol loop: owns the engine and feeds it the network, the API,
//! the apply worker and the clock. One task, so the engine needs no lock.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use bytes::Bytes;
use purgecast_core::{
    wire, ApplyTicket, Engine, Event, Member, MemberState, Mode, NodeId, OriginateError, Output, Purge, PurgeError,
    PurgeId, PurgeStatus, Selector, Tenant, Time,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::acks::Acks;
use super::applier::{self, Done, Job};
use crate::sink::Sinks;
use crate::transport::{Inbound, Transport};

pub struct Accepted {
    pub purge: Purge,
    pub members_total: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid purge: {0}")]
    Invalid(#[from] PurgeError),
    #[error("the purge could not be stored: {0}")]
    Store(String),
    #[error("node is shutting down")]
    Stopped,
    #[error(
        "this node has not joined the cluster yet (no peer reachable through its seeds); retry or use another node"
    )]
    NotJoined,
}

impl From<OriginateError> for DriverError {
    fn from(e: OriginateError) -> DriverError {
        match e {
            OriginateError::NotJoined => DriverError::NotJoined,
            OriginateError::Invalid(e) => DriverError::Invalid(e),
        }
    }
}

pub enum Command {
    Purge {
        tenant: Tenant,
        selectors: Vec<Selector>,
        mode: Mode,
        reply: oneshot::Sender<Result<Accepted, DriverError>>,
    },
    Status {
        id: PurgeId,
        reply: oneshot::Sender<Option<(PurgeStatus, Vec<Member>)>>,
    },
    Members {
        reply: oneshot::Sender<Vec<Member>>,
    },
}

/// Cheap handle the API uses to reach the loop.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    /// This node, as it announces itself.
    pub me: Member,
}

impl Handle {
    pub async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

pub struct Driver {
    engine: Engine,
    transport: Transport,
    apply: std_mpsc::SyncSender<Job>,
    /// Jobs the full apply queue could not take yet, in order.
    backlog: VecDeque<Job>,
    started: Instant,
    waiting: HashMap<PurgeId, (oneshot::Sender<Result<Accepted, DriverError>>, Accepted)>,
    /// The configured seeds: the engine names them by index
    /// (`Output::SendSeed`).
    seeds: Vec<String>,
    /// Turned true on `Event::CaughtUp` (the edge serves stored objects
    /// only from then on).
    caught_up: watch::Sender<bool>,
    /// Acks held until every sink has confirmed their purge.
    acks: Acks,
    sinks: Sinks,
}

pub struct Channels {
    pub inbound: mpsc::Receiver<Inbound>,
    pub done: mpsc::UnboundedReceiver<Done>,
    pub commands: mpsc::Receiver<Command>,
    /// Purges one sink's cache confirmed.
    pub confirmed: mpsc::UnboundedReceiver<PurgeId>,
    pub shutdown: watch::Receiver<bool>,
}

pub fn command_channel(me: Member) -> (Handle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(4096);
    (Handle { tx, me }, rx)
}

/// What the driver works with besides the engine.
pub struct Parts {
    pub transport: Transport,
    pub apply: std_mpsc::SyncSender<Job>,
    pub started: Instant,
    pub seeds: Vec<String>,
    pub caught_up: watch::Sender<bool>,
    pub sinks: Sinks,
    /// Tickets of purges restored at start-up that sinks still owe, with
    /// how many sinks owe each.
    pub unfinished: Vec<(ApplyTicket, usize)>,
}

impl Driver {
    pub fn new(mut engine: Engine, parts: Parts) -> Driver {
        let Parts { transport, apply, started, seeds, caught_up, sinks, unfinished } = parts;
        let now = Time::from_micros(started.elapsed().as_micros() as u64);
        engine.set_seeds(now, &seeds);
        let mut acks = Acks::new(sinks.len());
        for (ticket, owed) in unfinished {
            if let Some(ticket) = acks.owed(ticket, owed) {
                engine.applied(now, ticket);
            }
        }
        if sinks.len() > 0 {
            metrics::gauge!("purgecast_sink_unconfirmed").set(acks.unconfirmed() as f64);
        }
        Driver {
            engine,
            transport,
            apply,
            backlog: VecDeque::new(),
            started,
            waiting: HashMap::new(),
            seeds,
            caught_up,
            acks,
            sinks,
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(self.started.elapsed().as_micros() as u64)
    }

    pub async fn run(mut self, mut ch: Channels) {
        // Membership changes set the gauges; a lone node has none.
        self.member_gauges();
        // The first knocks on the seeds are already queued.
        self.drain();
        loop {
            let now = self.now();
            let wake = self.engine.poll_timeout();
            let sleep = tokio::time::sleep(wake.since(now));
            // With applies backed up, new work waits: peers' frames back up
            // into QUIC flow control and their bounded send queues.
            let open = self.backlog.is_empty();
            tokio::select! {
                Some(frame) = ch.inbound.recv(), if open => self.on_frame(frame),
                Some(done) = ch.done.recv() => self.on_done(done),
                Some(id) = ch.confirmed.recv() => self.on_confirmed(id),
                Some(cmd) = ch.commands.recv(), if open => self.on_command(cmd),
                _ = sleep => {}
                _ = ch.shutdown.changed() => {
                    self.engine.leave();
                    self.drain();
                    // Purges taken from peers but still backed up would be
                    // fetched again after restart; hand them over if we can.
                    for _ in 0..300 {
                        if self.backlog.is_empty() {
                            break;
                        }
                        self.submit_backlog();
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    return;
                }
            }
            let now = self.now();
            if self.engine.poll_timeout() <= now {
                self.engine.handle_timeout(now);
            }
            self.drain();
        }
    }

    fn on_frame(&mut self, frame: Inbound) {
        let (from, msg) = match wire::decode(&frame.bytes) {
            Ok(x) => x,
            Err(e) => {
                metrics::counter!("purgecast_peer_frames_malformed_total").increment(1);
                tracing::warn!(peer = %frame.from_addr, error = %e, "dropped malformed frame");
                return;
            }
        };
        // The TLS certificate names the sender: a node may not speak for another.
        if let Some(name) = &frame.peer_name {
            if NodeId::from_name(name) != from {
                metrics::counter!("purgecast_peer_frames_malformed_total").increment(1);
                tracing::warn!(peer = %frame.from_addr, cert = %name, claimed = %from, "dropped frame: sender does not match its certificate");
                return;
            }
        }
        metrics::counter!("purgecast_peer_messages_received_total", "kind" => msg.kind()).increment(1);
        let now = self.now();
        self.engine.handle_message(now, from, msg);
    }

    fn on_done(&mut self, done: Done) {
        let now = self.now();
        if !done.applied.is_empty() {
            self.sinks.wake();
        }
        for ticket in done.applied {
            let id = ticket.purge_id();
            if let Some(ticket) = self.acks.applied(ticket) {
                self.engine.applied(now, ticket);
            }
            // The client hears once the purge is durable here; its status
            // shows this node pending until the sinks confirm.
            if let Some((reply, accepted)) = self.waiting.remove(&id) {
                let _ = reply.send(Ok(accepted));
            }
        }
        for (id, err) in done.failed {
            if let Some((reply, _)) = self.waiting.remove(&id) {
                // Already spreading to peers; the apply worker keeps retrying
                // the local write, and acks only once it succeeds.
                let _ = reply.send(Err(DriverError::Store(format!("purge {id}: {err} (this node retries the write)"))));
            }
        }
    }

    fn on_confirmed(&mut self, id: PurgeId) {
        if let Some(ticket) = self.acks.confirmed(id) {
            let now = self.now();
            self.engine.applied(now, ticket);
        }
        metrics::gauge!("purgecast_sink_unconfirmed").set(self.acks.unconfirmed() as f64);
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Purge { tenant, selectors, mode, reply } => {
                match self.engine.originate_in(now, tenant, selectors, mode, crate::clock::now_ms()) {
                    Ok(purge) => {
                        metrics::counter!("purgecast_purges_accepted_total").increment(1);
                        let members_total = self.engine.members().reachable_count();
                        tracing::info!(id = %purge.id, seq = purge.seq, selectors = purge.selectors.len(), "purge accepted");
                        self.waiting.insert(purge.id, (reply, Accepted { purge, members_total }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Status { id, reply } => {
                let status = self.engine.status(id).map(|s| (s, self.engine.members().iter().cloned().collect()));
                let _ = reply.send(status);
            }
            Command::Members { reply } => {
                let _ = reply.send(self.engine.members().iter().cloned().collect());
            }
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    let Some(member) = self.engine.members().get(to) else { continue };
                    let bytes = wire::encode(self.engine.id(), &msg);
                    metrics::counter!("purgecast_peer_messages_sent_total", "kind" => msg.kind()).increment(1);
                    self.transport.send(&member.profile.peer_addr, Bytes::from(bytes));
                }
                Output::SendSeed { seed, msg } => {
                    let Some(addr) = self.seeds.get(seed.index()) else { continue };
                    let bytes = wire::encode(self.engine.id(), &msg);
                    metrics::counter!("purgecast_peer_messages_sent_total", "kind" => msg.kind()).increment(1);
                    self.transport.send(addr, Bytes::from(bytes));
                }
                Output::Apply { purge, ticket } => self.submit(Job::Apply { purge, ticket }),
                Output::Flush { stream, missed_through } => {
                    let reason = format!("missed purges of stream {stream} up to seq {missed_through}");
                    self.submit(Job::Flush { reason });
                }
                Output::Event(e) => self.on_event(e),
            }
        }
        self.submit_backlog();
        let s = self.engine.stats();
        metrics::counter!("purgecast_purge_duplicates_total").absolute(s.duplicates);
        metrics::counter!("purgecast_purges_caught_up_total").absolute(s.caught_up);
        metrics::counter!("purgecast_purges_received_total").absolute(s.received_new);
        metrics::counter!("purgecast_members_forgotten_total").absolute(s.forgotten);
        metrics::gauge!("purgecast_purges_retained").set(self.engine.retained() as f64);
    }

    /// Jobs go to the worker in order through the backlog; `drain` hands
    /// them over once per pass.
    fn submit(&mut self, job: Job) {
        self.backlog.push_back(job);
    }

    /// Moves what the worker has room for from the backlog into its queue.
    fn submit_backlog(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            match self.apply.try_send(job) {
                Ok(()) => {}
                Err(std_mpsc::TrySendError::Full(job)) => {
                    tracing::debug!(queue = applier::QUEUE, "apply queue full; pausing intake");
                    self.backlog.push_front(job);
                    break;
                }
                Err(std_mpsc::TrySendError::Disconnected(_)) => {
                    tracing::error!("apply worker is gone");
                    self.backlog.clear();
                }
            }
        }
        metrics::gauge!("purgecast_apply_backlog").set(self.backlog.len() as f64);
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::MemberUp(m) => {
                tracing::info!(member = %m.profile.name, addr = %m.profile.peer_addr, pop = %m.profile.location.pop, "member up");
                self.member_gauges();
            }
            Event::MemberRestarted(m) => {
                tracing::info!(member = %m.profile.name, addr = %m.profile.peer_addr, boot = m.boot(), "member restarted");
                self.transport.reconnect(&m.profile.peer_addr);
                self.member_gauges();
            }
            Event::MemberDown { member, state } => {
                tracing::warn!(member = %member.profile.name, state = state.as_str(), "member down");
                // Whatever is still queued for it would arrive stale, if ever.
                self.transport.reconnect(&member.profile.peer_addr);
                self.member_gauges();
            }
            Event::PurgeComplete { id, after } => {
                metrics::histogram!("purgecast_purge_completion_seconds").record(after.as_secs_f64());
                tracing::info!(%id, ms = after.as_secs_f64() * 1000.0, "purge complete on every live member");
            }
            Event::CaughtUp { with } => {
                tracing::info!(peer = %with, "caught up with the cluster: stored objects may be served");
                self.caught_up.send_replace(true);
            }
            Event::Rejected { from, kind, reason } => {
                metrics::counter!("purgecast_peer_messages_rejected_total", "kind" => kind).increment(1);
                tracing::warn!(peer = %from, kind, %reason, "rejected peer message");
            }
        }
    }

    /// Walks the member table: only after membership changed, not on every
    /// purge event.
    fn member_gauges(&self) {
        let members = self.engine.members();
        for state in [MemberState::Alive, MemberState::Suspect, MemberState::Dead, MemberState::Left] {
            let n = members.iter().filter(|m| m.state == state).count();
            metrics::gauge!("purgecast_members", "state" => state.as_str()).set(n as f64);
        }
    }
}
