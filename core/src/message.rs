//! Messages between engines. `wire` maps them to protobuf.

use std::sync::Arc;

use crate::id::{NodeId, PurgeId, StreamId};
use crate::member::Member;
use crate::purge::Purge;

/// What the receiver of a pushed purge does with it next: its role in
/// active fanout. See docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Flat gossip: forward to `fanout` random members.
    Gossip,
    /// First node reached in its PoP: forward to the rest of the PoP.
    PopEntry,
    /// Reached inside a PoP by its entry: apply, forward nowhere.
    PopLocal,
    /// Inside a PoP too large to cover directly: forward to `fanout` random
    /// members of the same PoP.
    PopGossip,
}

/// How far a node is in one purge stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The stream.
    pub stream: StreamId,
    /// Every seq 1..=seq of the stream has been applied.
    pub seq: u64,
}

/// A protocol message between two engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Shared: a purge is pushed to many peers, and every copy of it in
    /// memory (in flight, retained for catch-up) can be the same one.
    Push {
        /// The purge.
        purge: Arc<Purge>,
        /// What the receiver does with it next.
        stage: Stage,
    },
    /// "I have applied this purge"; sent to its origin.
    Applied {
        /// The purge applied.
        purge_id: PurgeId,
        /// The node that applied it (must be the sender).
        node: NodeId,
    },
    /// Acks relayed by an entry of the appliers' PoP (see
    /// `Config::ack_relay`): purges of the receiver, each with the members
    /// that applied it.
    AppliedBy {
        /// (purge, members that applied it).
        acks: Vec<(PurgeId, Vec<NodeId>)>,
    },
    /// Anti-entropy summary: per stream, how far the sender is.
    Digest {
        /// The sender's watermarks, sorted by stream.
        watermarks: Vec<Watermark>,
        /// Whether the receiver should answer with its own digest.
        reply: bool,
    },
    /// Purges the receiver of a digest has that its sender lacks.
    Catchup {
        /// Purges the digest sender lacks, oldest first.
        purges: Vec<Arc<Purge>>,
        /// Streams whose missing purges nobody retains any more: flush.
        expired: Vec<Watermark>,
    },
    /// A node joining through a seed.
    Join {
        /// The joining node.
        member: Member,
    },
    /// Membership news or a full list.
    Members {
        /// The members.
        members: Vec<Member>,
    },
    /// SWIM probe.
    Ping {
        /// Probe id, echoed by the ack.
        probe: u64,
        /// Piggybacked membership news.
        updates: Vec<Member>,
    },
    /// Answer to a `Ping` (direct or relayed).
    PingAck {
        /// The probe id answered.
        probe: u64,
        /// Piggybacked membership news.
        updates: Vec<Member>,
    },
    /// Ask the receiver to probe `target` for the sender.
    PingReq {
        /// The requester's probe id.
        probe: u64,
        /// The member to probe.
        target: NodeId,
        /// Piggybacked membership news.
        updates: Vec<Member>,
    },
    /// A graceful leave.
    Leave {
        /// The leaving node, state `Left`.
        member: Member,
    },
}

impl Message {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Push { .. } => "push",
            Message::Applied { .. } => "applied",
            Message::AppliedBy { .. } => "applied_by",
            Message::Digest { .. } => "digest",
            Message::Catchup { .. } => "catchup",
            Message::Join { .. } => "join",
            Message::Members { .. } => "members",
            Message::Ping { .. } => "ping",
            Message::PingAck { .. } => "ping_ack",
            Message::PingReq { .. } => "ping_req",
            Message::Leave { .. } => "leave",
        }
    }
}
