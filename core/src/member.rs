//! Cluster members and the local view of them.

use std::collections::BTreeMap;

use crate::id::NodeId;

/// Where a node runs: point of presence (data centre) and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Location {
    pub pop: String,
    pub region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemberState {
    #[default]
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    /// Members that should receive purges: a suspect may only be slow.
    pub fn is_reachable(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// Address peers dial (host:port).
    pub peer_addr: String,
    /// gRPC address, informational.
    pub api_addr: String,
    pub location: Location,
    /// Bumped by the member itself to refute a suspicion or announce a
    /// restart; a higher incarnation always wins.
    pub incarnation: u64,
    pub state: MemberState,
}

/// Incarnations carry the member's boot epoch in their high bits (see
/// `Engine::new`): a restart shows as a jump in [`Member::boot`], which tells
/// peers that whatever connection they hold to the old process is dead.
pub const EPOCH_SHIFT: u32 = 20;

impl Member {
    /// The boot epoch this incarnation belongs to.
    pub fn boot(&self) -> u64 {
        self.incarnation >> EPOCH_SHIFT
    }

    /// SWIM's precedence: higher incarnation wins; at equal incarnation the
    /// graver state wins (suspect over alive, dead over suspect).
    pub fn supersedes(&self, other: &Member) -> bool {
        self.incarnation > other.incarnation
            || (self.incarnation == other.incarnation && self.state.rank() > other.state.rank())
    }
}

/// The local view of the cluster, ordered by id so that iteration (and so
/// every output derived from it) is deterministic.
#[derive(Debug, Clone, Default)]
pub struct Members {
    by_id: BTreeMap<NodeId, Member>,
}

impl Members {
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: NodeId) -> Option<&mut Member> {
        self.by_id.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Merges news about a member; returns the previous state if the news
    /// changed anything (None if it was new or stale news).
    pub fn apply(&mut self, m: Member) -> Applied {
        match self.by_id.get_mut(&m.id) {
            None => {
                self.by_id.insert(m.id, m);
                Applied::New
            }
            Some(cur) if m.supersedes(cur) => {
                let prev = cur.state;
                // Addresses may change across restarts; keep the newest.
                *cur = m;
                Applied::Changed(prev)
            }
            Some(_) => Applied::Stale,
        }
    }

    pub fn reachable(&self) -> impl Iterator<Item = &Member> {
        self.by_id.values().filter(|m| m.state.is_reachable())
    }

    pub fn reachable_count(&self) -> usize {
        self.reachable().count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    Changed(MemberState),
    Stale,
}
