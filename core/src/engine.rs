//! The protocol engine: one per node, driven by inputs, emitting outputs.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::config::{Config, Strategy};
use crate::id::{NodeId, PurgeId, StreamId};
use crate::member::{Member, MemberState, Members};
use crate::message::{Message, Stage, Watermark};
use crate::purge::{Mode, Purge, Tenant};
use crate::seen::Seen;
use crate::selector::Selector;
use crate::swim::Swim;
use crate::targets::Targets;
use crate::time::Time;
use crate::tracker::{PurgeStatus, Tracker};

mod acks;
mod join;
mod membership;
mod output;
mod relay;

pub use join::JOIN_RETRY;
pub use output::{ApplyTicket, Event, OriginateError, Output, Seed, Stats, Timer};

/// Byte budget of one catch-up message, well under the wire frame limit.
const CATCHUP_BYTES: usize = 1 << 20;

/// One node's protocol state machine. Inputs are the `handle_*` methods
/// (and [`Engine::originate`]); outputs come out of [`Engine::poll_output`]
/// and [`Engine::poll_timeout`]. See docs/protocol.md, "Where each rule lives".
pub struct Engine {
    cfg: Config,
    me: Member,
    stream: StreamId,
    next_seq: u64,
    members: Members,
    /// Peer lists derived from `members`, for every hop.
    targets: Targets,
    seen: Seen,
    tracker: Tracker,
    swim: Swim,
    rng: StdRng,
    out: VecDeque<Output>,
    next_ae: Time,
    /// Seeds to knock on while alone, and when to knock next.
    seeds: Vec<Seed>,
    join_at: Option<Time>,
    /// When each member that is down went down, to forget it.
    downs: membership::Downs,
    /// Applies handed out and not yet back: (stream, seq).
    unapplied: BTreeSet<(StreamId, u64)>,
    catch_up: CatchUp,
    /// Acks relayed through one member per PoP (`Config::ack_relay`).
    relay: relay::Relay,
    stats: Stats,
}

/// Whether this node has caught up with the cluster since it started (see
/// [`Event::CaughtUp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CatchUp {
    /// No peer's digest has shown that this node lacks nothing.
    Behind,
    /// One has (`with`); these applies, queued before it, are not back yet.
    Applying {
        with: NodeId,
        queued: BTreeSet<(StreamId, u64)>,
    },
    Done,
}

impl Engine {
    /// `epoch` must differ at every start of the same node (the driver
    /// persists a boot counter): it names this run's purge stream.
    pub fn new(cfg: Config, me: Member, epoch: u64, seed: u64, now: Time) -> Engine {
        let mut rng = StdRng::seed_from_u64(seed);
        // Spread the first anti-entropy rounds so a cluster started at
        // once does not tick in lockstep.
        let ae_jitter = rng.random_range(0..=cfg.ae_interval.as_micros().max(1) as u64);
        let mut me = me;
        // A restarted node must outrank what the cluster remembers of its
        // previous run (possibly "dead"), so its incarnation starts high.
        me.incarnation = me.incarnation.max(epoch.saturating_mul(1 << crate::member::EPOCH_SHIFT));
        let mut members = Members::default();
        members.merge(me.clone());
        let swim = Swim::new(&cfg, now, &mut rng);
        Engine {
            stream: StreamId { origin: me.id, epoch },
            next_seq: 1,
            members,
            targets: Targets::default(),
            // Keyed from the seed without drawing from the RNG, so the
            // engine's random choices stay what they were.
            seen: Seen::with_key((seed ^ 0x243f_6a88_85a3_08d3).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            tracker: Tracker::default(),
            swim,
            next_ae: now + Duration::from_micros(ae_jitter),
            seeds: Vec::new(),
            join_at: None,
            downs: membership::Downs::default(),
            out: VecDeque::new(),
            unapplied: BTreeSet::new(),
            catch_up: CatchUp::Behind,
            relay: relay::Relay::default(),
            stats: Stats::default(),
            rng,
            me,
            cfg,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// This node as it announces itself.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The protocol parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's view of the cluster, itself included.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Whether [`Event::CaughtUp`] has been emitted.
    pub fn is_caught_up(&self) -> bool {
        self.catch_up == CatchUp::Done
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Purges retained for catch-up.
    pub fn retained(&self) -> usize {
        self.seen.retained()
    }

    /// Whether this node has seen (applied or been asked to apply) `id`.
    pub fn has_seen(&self, id: PurgeId) -> bool {
        self.seen.contains(id)
    }

    /// Per stream, the seq up to which every purge has been seen.
    pub fn watermarks(&self) -> Vec<Watermark> {
        self.seen.watermarks()
    }

    /// The digest this node sends `to`. Anti-entropy wants what this node
    /// has seen, applies still queued included, so that peers do not send
    /// them again; but an origin credits the watermark of its own stream as
    /// applies (`Tracker::covered`), and an apply counts only once durable.
    /// So the recipient's own streams stop below the first apply still
    /// outstanding (a held write on a full disk, a sink not yet confirmed).
    fn digest_for(&self, to: NodeId) -> Vec<Watermark> {
        let mut watermarks = self.seen.watermarks();
        if self.unapplied.is_empty() {
            return watermarks;
        }
        for w in watermarks.iter_mut().filter(|w| w.stream.origin == to) {
            if let Some((_, first)) = self.unapplied.range((w.stream, 0)..=(w.stream, w.seq)).next() {
                w.seq = first - 1;
            }
        }
        watermarks
    }

    /// Re-learns a purge applied before a restart (from the store), so it
    /// is neither applied again nor lost to peers that need it.
    pub fn restore(&mut self, now: Time, purge: Arc<Purge>) {
        self.seen.insert(now, &purge);
    }

    /// Re-learns a purge whose apply was started but not finished before a
    /// restart (the store has it, an external cache has not confirmed it).
    /// It is seen, so it is neither applied nor forwarded again, and
    /// unapplied: no digest credits it to its origin until the returned
    /// ticket comes back through [`Engine::applied`].
    pub fn restore_unfinished(&mut self, now: Time, purge: Arc<Purge>) -> ApplyTicket {
        self.seen.insert(now, &purge);
        self.ticket(&purge, None)
    }

    /// Adds a member known from configuration, without announcing it.
    pub fn add_member(&mut self, m: Member) {
        if m.id != self.me.id {
            self.members.merge(m);
            self.targets.invalidate();
        }
    }

    /// The message a new node sends to a seed to join.
    pub(crate) fn join_message(&self) -> Message {
        Message::Join { member: self.me.clone() }
    }

    /// The next queued output, in the order the engine produced them. Drain
    /// after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next: the earliest
    /// armed timer. Anti-entropy and SWIM are always armed, so there always
    /// is one.
    pub fn poll_timeout(&self) -> Time {
        self.next_timer().1
    }

    /// The earliest armed timer and when it is due (on a tie, the one
    /// [`Engine::handle_timeout`] fires first).
    pub fn next_timer(&self) -> (Timer, Time) {
        let mut next = (Timer::AntiEntropy, self.next_ae);
        if let Some(t) = self.join_at.filter(|t| *t <= next.1) {
            next = (Timer::JoinRetry, t);
        }
        let swim = self.swim.next_timeout();
        if swim < next.1 {
            next = (Timer::Swim, swim);
        }
        if let Some(t) = self.relay.next_due().filter(|t| *t < next.1) {
            next = (Timer::AckRelay, t);
        }
        next
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// Accepts a purge from a local client: numbers it, spreads it and
    /// queues its local apply. The caller should make the apply durable
    /// before it answers the client. Refused while the node has seeds but
    /// knows no other member ([`OriginateError::NotJoined`]).
    pub fn originate(
        &mut self,
        now: Time,
        selectors: Vec<Selector>,
        mode: Mode,
        issued_at_ms: u64,
    ) -> Result<Purge, OriginateError> {
        let tenant = Tenant::default();
        self.originate_in(now, tenant, selectors, mode, issued_at_ms)
    }

    /// [`Engine::originate`] confined to a tenant zone and recording who
    /// asked (see [`Purge::zone`], [`Purge::requested_by`]).
    pub fn originate_in(
        &mut self,
        now: Time,
        tenant: Tenant,
        selectors: Vec<Selector>,
        mode: Mode,
        issued_at_ms: u64,
    ) -> Result<Purge, OriginateError> {
        if !self.is_joined() {
            return Err(OriginateError::NotJoined);
        }
        let Tenant { zone, requested_by } = tenant;
        let purge = Purge {
            id: PurgeId(self.rng.random()),
            stream: self.stream,
            seq: self.next_seq,
            selectors,
            mode,
            issued_at_ms,
            zone,
            requested_by,
        };
        purge.validate()?;
        self.next_seq += 1;
        let shared = Arc::new(purge.clone());
        self.seen.insert(now, &shared);
        let expected: Vec<NodeId> = self.members.reachable().map(|m| m.id).collect();
        self.tracker.start(purge.id, purge.seq, now, expected);
        self.stats.originated += 1;
        self.spread_from_origin(&shared);
        self.apply(shared, None);
        Ok(purge)
    }

    /// `received`: when it came through the topology fanout, if it did.
    fn apply(&mut self, purge: Arc<Purge>, received: Option<Time>) {
        let ticket = self.ticket(&purge, received);
        self.out.push_back(Output::Apply { purge, ticket });
    }

    /// Issues the one ticket that acks `purge`; until it comes back the
    /// purge is unapplied, so digests to its origin stop below it.
    fn ticket(&mut self, purge: &Purge, received: Option<Time>) -> ApplyTicket {
        self.unapplied.insert((purge.stream, purge.seq));
        let (id, origin, stream, seq, node) = (purge.id, purge.origin(), purge.stream, purge.seq, self.me.id);
        ApplyTicket { id, origin, stream, seq, received, node }
    }

    /// The driver has applied the purge of `ticket` to its index (durably):
    /// tell its origin.
    pub fn applied(&mut self, now: Time, ticket: ApplyTicket) {
        debug_assert_eq!(ticket.node, self.me.id, "a ticket from another engine");
        let ApplyTicket { id, origin, stream, seq, received, .. } = ticket;
        self.unapplied.remove(&(stream, seq));
        if let CatchUp::Applying { with, queued } = &mut self.catch_up {
            queued.remove(&(stream, seq));
            if queued.is_empty() {
                let with = *with;
                self.caught_up(with);
            }
        }
        if origin == self.me.id {
            self.record_applies(now, id, &[origin]);
        } else {
            self.ack(now, id, origin, received);
        }
    }

    /// Applies of a purge of mine by `nodes` (one ack, or a relay's batch).
    fn record_applies(&mut self, now: Time, id: PurgeId, nodes: &[NodeId]) {
        if let Some(after) = self.tracker.record_all(id, nodes, now, &self.members) {
            self.stats.completed += 1;
            self.event(Event::PurgeComplete { id, after });
        }
    }

    /// Completion of a purge this node originated, while it is tracked.
    pub fn status(&self, id: PurgeId) -> Option<PurgeStatus> {
        self.tracker.status(id, &self.members)
    }

    /// A message from peer `from` (authenticated by the driver).
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        if from == self.me.id {
            return;
        }
        match msg {
            Message::Push { purge, stage } => self.on_push(now, from, purge, stage),
            Message::Applied { purge_id, node } => self.on_applied(now, from, purge_id, node),
            Message::AppliedBy { acks } => self.on_applied_by(now, from, acks),
            Message::Digest { watermarks, reply } => {
                self.credit_digest(now, from, &watermarks);
                self.check_caught_up(from, &watermarks);
                self.on_digest(from, &watermarks, reply);
            }
            Message::Catchup { purges, expired } => self.on_catchup(now, from, purges, expired),
            Message::Join { member } => self.on_join(now, from, member),
            Message::Members { members } => {
                // News that I am dead may come from a node that I think is
                // dead too (see `reconnect`): my piggybacked refutation would
                // never reach it, so answer it directly.
                let refute = members.iter().any(|m| m.id == self.me.id && m.state != MemberState::Alive);
                if members.iter().any(|m| m.id == from) {
                    self.members.heard_from(from);
                }
                for m in members {
                    self.learn(now, m);
                }
                if refute && self.me.state == MemberState::Alive {
                    self.send(from, Message::Members { members: vec![self.me.clone()] });
                }
            }
            Message::Leave { member } => {
                if member.id == from {
                    self.learn(now, Member { state: MemberState::Left, ..member });
                }
            }
            Message::Ping { .. } | Message::PingAck { .. } | Message::PingReq { .. } => {
                self.swim_input(crate::swim::Input { now, from, msg });
            }
        }
    }

    fn reject(&mut self, from: NodeId, kind: &'static str, reason: String) {
        self.stats.rejected += 1;
        self.event(Event::Rejected { from, kind, reason });
    }

    fn on_push(&mut self, now: Time, from: NodeId, purge: Arc<Purge>, stage: Stage) {
        // Most pushes are duplicates (every redundant copy is): drop them
        // before paying for validation.
        if self.seen.contains(purge.id) {
            self.stats.duplicates += 1;
            return;
        }
        if let Err(e) = purge.validate() {
            return self.reject(from, "push", e.to_string());
        }
        if !self.seen.insert(now, &purge) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received_new += 1;
        // Acks of purges spread by PoP go through the PoP's relay.
        let received = match stage {
            Stage::PopEntry | Stage::PopLocal | Stage::PopGossip => {
                self.note_for_relay(now, &purge);
                Some(now)
            }
            Stage::Gossip => None,
        };
        self.forward(&purge, stage, from);
        self.apply(purge, received);
    }

    fn forward(&mut self, purge: &Arc<Purge>, stage: Stage, from: NodeId) {
        match stage {
            Stage::PopLocal => {}
            Stage::PopEntry => {
                let exclude = [from, purge.origin()];
                let locals: Vec<NodeId> = self
                    .targets
                    .pops(&self.members, &self.me)
                    .local()
                    .iter()
                    .filter(|n| !exclude.contains(n))
                    .copied()
                    .collect();
                self.cover_pop(purge, &locals);
            }
            Stage::PopGossip => {
                let locals: Vec<NodeId> = self
                    .targets
                    .pops(&self.members, &self.me)
                    .local()
                    .iter()
                    .filter(|n| **n != from)
                    .copied()
                    .collect();
                let k = self.cfg.fanout_for(locals.len() + 1);
                self.push_random(purge, &locals, k, Stage::PopGossip);
            }
            Stage::Gossip => {
                let peers = self.targets.peers(&self.members, self.me.id);
                // Me plus my peers (I am always reachable to myself).
                let k = self.cfg.fanout_for(peers.len() + 1);
                // Draw one spare so that dropping the sender still leaves k;
                // the draw comes back shuffled, so the first k of the rest
                // are a uniform choice.
                let chosen: Vec<NodeId> =
                    peers.choose_multiple(&mut self.rng, k + 1).copied().filter(|n| *n != from).take(k).collect();
                for id in chosen {
                    self.send(id, Message::Push { purge: Arc::clone(purge), stage: Stage::Gossip });
                }
            }
        }
    }

    fn spread_from_origin(&mut self, purge: &Arc<Purge>) {
        match self.cfg.strategy {
            Strategy::Gossip => self.forward(purge, Stage::Gossip, self.me.id),
            Strategy::Topology => {
                // Borrowed out and put back rather than cloned: nothing
                // below changes membership.
                let pops = self.targets.take_pops(&self.members, &self.me);
                for (i, (_, ids)) in pops.by_pop.iter().enumerate() {
                    if pops.is_mine(i) {
                        self.cover_pop(purge, ids);
                    } else {
                        self.push_random(purge, ids, self.cfg.pop_entry, Stage::PopEntry);
                    }
                }
                self.targets.put_pops(pops);
            }
        }
    }

    /// Covers a PoP from inside it: every member directly if it is small,
    /// otherwise gossip among its members.
    fn cover_pop(&mut self, purge: &Arc<Purge>, ids: &[NodeId]) {
        if ids.len() <= self.cfg.pop_direct_max {
            for id in ids {
                self.send(*id, Message::Push { purge: Arc::clone(purge), stage: Stage::PopLocal });
            }
        } else {
            let k = self.cfg.fanout_for(ids.len() + 1);
            self.push_random(purge, ids, k, Stage::PopGossip);
        }
    }

    fn push_random(&mut self, purge: &Arc<Purge>, ids: &[NodeId], k: usize, stage: Stage) {
        let chosen: Vec<NodeId> = ids.choose_multiple(&mut self.rng, k).copied().collect();
        for id in chosen {
            self.send(id, Message::Push { purge: Arc::clone(purge), stage });
        }
    }

    fn on_digest(&mut self, from: NodeId, theirs: &[Watermark], reply: bool) {
        let gap = self.seen.gap(theirs, self.cfg.ae_batch);
        let mut purges = Vec::new();
        let mut bytes = 0;
        for p in gap.purges {
            bytes += p.approx_len();
            if bytes > CATCHUP_BYTES && !purges.is_empty() {
                break;
            }
            purges.push(p);
        }
        if !purges.is_empty() || !gap.expired.is_empty() {
            self.send(from, Message::Catchup { purges, expired: gap.expired });
        }
        if reply {
            let watermarks = self.digest_for(from);
            self.send(from, Message::Digest { watermarks, reply: false });
        }
    }

    /// A digest's watermark for my stream is an ack of every purge up to it
    /// (see `Tracker`).
    fn credit_digest(&mut self, now: Time, from: NodeId, theirs: &[Watermark]) {
        let Ok(i) = theirs.binary_search_by_key(&self.stream, |w| w.stream) else { return };
        for (id, after) in self.tracker.covered(from, theirs[i].seq, now, &self.members) {
            self.stats.completed += 1;
            self.event(Event::PurgeComplete { id, after });
        }
    }

    /// A peer's digest that names nothing this node has not seen means it
    /// has caught up with that peer, once the applies already queued are
    /// done (they are copied, so a storm of new ones cannot delay it).
    fn check_caught_up(&mut self, from: NodeId, theirs: &[Watermark]) {
        if self.catch_up != CatchUp::Behind || theirs.iter().any(|w| self.seen.watermark(w.stream) < w.seq) {
            return;
        }
        if self.unapplied.is_empty() {
            self.caught_up(from);
        } else {
            self.catch_up = CatchUp::Applying { with: from, queued: self.unapplied.clone() };
        }
    }

    fn caught_up(&mut self, with: NodeId) {
        self.catch_up = CatchUp::Done;
        self.event(Event::CaughtUp { with });
    }

    /// Acks can be lost (a connection cut by a restart or a death verdict)
    /// or never sent (applied just before a crash, restored after it). So
    /// when a reachable member still owes one after two anti-entropy
    /// periods, it is sent a digest asking for its own: its watermark
    /// settles what it has, and each side catches up on what it lacks.
    fn ask_owing(&mut self, now: Time) {
        let grace = self.cfg.ae_interval * 2;
        if let Some(id) = self.tracker.owing(now, grace, self.me.id, &self.members) {
            let watermarks = self.digest_for(id);
            self.send(id, Message::Digest { watermarks, reply: true });
        }
    }

    fn on_catchup(&mut self, now: Time, from: NodeId, purges: Vec<Arc<Purge>>, expired: Vec<Watermark>) {
        for w in expired {
            if self.seen.watermark(w.stream) < w.seq {
                self.stats.flushes += 1;
                self.out.push_back(Output::Flush { stream: w.stream, missed_through: w.seq });
                self.seen.skip_to(w.stream, w.seq);
            }
        }
        let full = purges.len() >= self.cfg.ae_batch;
        let mut learned = 0;
        for purge in purges {
            if let Err(e) = purge.validate() {
                self.reject(from, "catchup", e.to_string());
                continue;
            }
            if self.seen.insert(now, &purge) {
                self.stats.caught_up += 1;
                learned += 1;
                // Members that got it pushed may ack it to me.
                if self.cfg.strategy == Strategy::Topology {
                    self.note_for_relay(now, &purge);
                }
                self.apply(purge, None);
            } else {
                self.stats.duplicates += 1;
            }
        }
        // A full batch that taught us something means the peer probably has
        // more: ask again now rather than one anti-entropy period later, so
        // a node that missed many purges catches up at network speed.
        if full && learned > 0 {
            let watermarks = self.digest_for(from);
            self.send(from, Message::Digest { watermarks, reply: false });
        }
    }

    /// Fires every timer due at `now` (see [`Timer`]); harmless when none is.
    pub fn handle_timeout(&mut self, now: Time) {
        self.join_timer(now);
        if now >= self.next_ae {
            self.next_ae = now + self.cfg.ae_interval;
            self.anti_entropy_round();
            self.ask_owing(now);
            self.reconnect();
            self.forget_dead(now);
            self.seen.prune(now, self.cfg.retention, self.cfg.retention_max_purges);
            self.tracker.prune(now, self.cfg.track_for, self.cfg.track_max);
            self.relay.prune(now, self.cfg.ack_spacing);
        }
        if now >= self.swim.next_timeout() {
            self.swim_tick(now);
        }
        self.flush_acks(now);
    }

    fn anti_entropy_round(&mut self) {
        let peers = self.targets.peers(&self.members, self.me.id);
        let chosen: Vec<NodeId> = peers.choose_multiple(&mut self.rng, self.cfg.ae_peers).copied().collect();
        if chosen.is_empty() {
            return;
        }
        for id in chosen {
            let watermarks = self.digest_for(id);
            self.send(id, Message::Digest { watermarks, reply: true });
        }
    }
}
