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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub stream: StreamId,
    /// Every seq 1..=seq of the stream has been applied.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Shared: a purge is pushed to many peers, and every copy of it in
    /// memory (in flight, retained for catch-up) can be the same one.
    Push {
        purge: Arc<Purge>,
        stage: Stage,
    },
    /// "I have applied this purge"; sent to its origin.
    Applied {
        purge_id: PurgeId,
        node: NodeId,
    },
    /// Anti-entropy summary: per stream, how far the sender is.
    Digest {
        watermarks: Vec<Watermark>,
        reply: bool,
    },
    /// Purges the receiver of a digest has that its sender lacks.
    Catchup {
        purges: Vec<Arc<Purge>>,
        expired: Vec<Watermark>,
    },
    /// A node joining through a seed.
    Join {
        member: Member,
    },
    /// Membership news or a full list.
    Members {
        members: Vec<Member>,
    },
    Ping {
        probe: u64,
        updates: Vec<Member>,
    },
    PingAck {
        probe: u64,
        updates: Vec<Member>,
    },
    PingReq {
        probe: u64,
        target: NodeId,
        updates: Vec<Member>,
    },
    Leave {
        member: Member,
    },
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Push { .. } => "push",
            Message::Applied { .. } => "applied",
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
