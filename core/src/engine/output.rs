//! What the engine hands its driver: outputs to act on, events to report,
//! the ticket that closes an apply, the timers it keeps and the counters it
//! exports.

use std::sync::Arc;
use std::time::Duration;

use crate::id::{NodeId, PurgeId, StreamId};
use crate::member::{Member, MemberState};
use crate::message::Message;
use crate::purge::{Purge, PurgeError};
use crate::time::Time;

/// Work for the driver, taken with [`Engine::poll_output`](super::Engine::poll_output).
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send `msg` to member `to` (its address is in its [`Member::profile`]).
    Send {
        /// The member to send to.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Send `msg` to a seed the driver gave [`Engine::set_seeds`](super::Engine::set_seeds):
    /// the engine knows seeds only by their position in that list.
    SendSeed {
        /// Which seed.
        seed: Seed,
        /// The message (a join).
        msg: Message,
    },
    /// Apply this purge to the local index, make it durable, then hand
    /// `ticket` to [`Engine::applied`](super::Engine::applied). The purge is
    /// shared with the messages that carry it: a node applies what it
    /// forwards without copying selectors.
    Apply {
        /// What to apply.
        purge: Arc<Purge>,
        /// Proof of the request, consumed by the acknowledgement.
        ticket: ApplyTicket,
    },
    /// This node missed purges that no peer retains any more: remove every
    /// entry from the local index before serving again.
    Flush {
        /// The stream with the hole.
        stream: StreamId,
        /// Every purge of `stream` up to this seq is lost to this node.
        missed_through: u64,
    },
    /// Something the driver may log or count.
    Event(Event),
}

/// The only way to acknowledge an apply: made by the engine with each
/// [`Output::Apply`], neither clonable nor constructible elsewhere, and
/// consumed by [`Engine::applied`](super::Engine::applied). A driver that
/// drops it sends no ack (right when the apply failed); it cannot ack a
/// purge it was never asked to apply, nor ack one twice.
#[must_use = "hand the ticket to Engine::applied once the purge is applied"]
#[derive(Debug, PartialEq, Eq)]
pub struct ApplyTicket {
    pub(super) id: PurgeId,
    pub(super) origin: NodeId,
    /// Its place in its stream: until the ticket comes back, digests to the
    /// origin stop below it.
    pub(super) stream: StreamId,
    pub(super) seq: u64,
    /// When the purge came through the topology fanout, if it did: its
    /// ack may then go through the PoP's relay (`Config::ack_relay`).
    pub(super) received: Option<Time>,
    /// The engine that issued it (checked in debug builds).
    pub(super) node: NodeId,
}

impl ApplyTicket {
    /// The purge this ticket is for.
    pub fn purge_id(&self) -> PurgeId {
        self.id
    }
}

/// A seed: an address given to [`Engine::set_seeds`](super::Engine::set_seeds),
/// named by its position in that list. The engine cannot know a seed's
/// [`NodeId`] before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seed(pub(super) u32);

impl Seed {
    /// Position of the seed in the list given to `set_seeds`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The engine's timers. [`Engine::poll_timeout`](super::Engine::poll_timeout)
/// is the earliest armed one; [`Engine::handle_timeout`](super::Engine::handle_timeout)
/// fires every one that is due, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Knock on the seeds again: armed only while this node knows no other
    /// member and has seeds.
    JoinRetry,
    /// Anti-entropy round, reconnect to one dead member, retention and
    /// completion-tracking pruning. Always armed.
    AntiEntropy,
    /// SWIM: next probe, probe deadline or suspicion expiry. Always armed.
    Swim,
    /// A batch of relayed acks is due (armed while one waits; see
    /// `Config::ack_relay`).
    AckRelay,
}

/// Why [`Engine::originate`](super::Engine::originate) refused a purge.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum OriginateError {
    /// The node has seeds but no seed has answered yet: it could only apply
    /// the purge to itself and hope anti-entropy spreads it later, so it
    /// refuses and the client retries on a node that can spread it now.
    #[error(
        "this node has not joined the cluster yet (no peer reachable through its seeds); retry or use another node"
    )]
    NotJoined,
    /// The selectors are invalid.
    #[error("invalid purge: {0}")]
    Invalid(#[from] PurgeError),
}

/// Things a driver may log or count; none needs an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A member became reachable (new, or back from dead).
    MemberUp(Member),
    /// A known member announced a new boot epoch: it restarted, and any
    /// connection to its previous process is dead.
    MemberRestarted(Member),
    /// A member became unreachable.
    MemberDown {
        /// The member as now known.
        member: Member,
        /// Dead or left.
        state: MemberState,
    },
    /// A purge this node originated has been applied by every reachable
    /// member it expected.
    PurgeComplete {
        /// The purge.
        id: PurgeId,
        /// Time from origination to the last ack.
        after: Duration,
    },
    /// Every purge that peer `with` had seen when it sent its digest is
    /// applied here: the first time since start-up that this node is known
    /// to lack nothing the cluster sent while it was away. Emitted once. A
    /// cache should not serve objects it kept from before the start until
    /// then.
    CaughtUp {
        /// The peer whose digest showed it.
        with: NodeId,
    },
    /// A message from a peer was invalid and dropped.
    Rejected {
        /// The sender.
        from: NodeId,
        /// The message kind.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Counters the driver exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Purges originated here.
    pub originated: u64,
    /// Purges first learnt from a push.
    pub received_new: u64,
    /// Pushes or catch-ups of purges already seen.
    pub duplicates: u64,
    /// Purges first learnt from anti-entropy.
    pub caught_up: u64,
    /// Invalid peer messages dropped.
    pub rejected: u64,
    /// Index flushes requested.
    pub flushes: u64,
    /// Originated purges that completed.
    pub completed: u64,
    /// Dead members dropped from the table after `forget_dead_after`.
    pub forgotten: u64,
}
