//! Cluster members and the local view of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::id::NodeId;

/// Where a node runs: point of presence (data centre) and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Location {
    /// Point of presence: a purge crosses to each PoP once.
    pub pop: String,
    /// Region (informational).
    pub region: String,
}

/// SWIM's view of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemberState {
    /// Answers probes.
    #[default]
    Alive,
    /// Missed a probe; has `suspect_timeout` to refute.
    Suspect,
    /// Declared dead; knocked on by reconnect rounds.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Lower-case name for logs and metrics.
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

/// What a member says about itself. It does not change while the process
/// runs, so every record of the member shares one copy: a node holds a few
/// records per member (view, gossip queue, messages), and a simulator holds
/// 3,300 views of 3,300 members, where copying strings cost gigabytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// Unique node name; its hash is the node id.
    pub name: String,
    /// Address peers dial (host:port).
    pub peer_addr: String,
    /// gRPC address, informational.
    pub api_addr: String,
    /// Where the node runs.
    pub location: Location,
}

/// One member as known at some incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (hash of its name).
    pub id: NodeId,
    /// What it says about itself, shared between records.
    pub profile: Arc<Profile>,
    /// Bumped by the member itself to refute a suspicion or announce a
    /// restart; a higher incarnation always wins.
    pub incarnation: u64,
    /// Its state in this view.
    pub state: MemberState,
}

/// Incarnations carry the member's boot epoch in their high bits (see
/// `Engine::new`): a restart shows as a jump in [`Member::boot`], which tells
/// peers that whatever connection they hold to the old process is dead.
pub const EPOCH_SHIFT: u32 = 20;

impl Member {
    /// A member at incarnation 0, alive.
    pub fn new(id: NodeId, profile: Profile) -> Member {
        Member { id, profile: Arc::new(profile), incarnation: 0, state: MemberState::Alive }
    }

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
///
/// A sorted vector rather than a map: members join rarely and are looked up
/// and walked all the time, and a simulator holds thousands of these views
/// (a B-tree costs half as much again per member). Members added in id
/// order append.
#[derive(Debug, Clone, Default)]
pub struct Members {
    by_id: Vec<Member>,
    /// How many are neither alive nor suspect.
    unreachable: usize,
    /// How many were forgotten: see [`Members::unreachable_count`].
    forgotten: usize,
    /// The incarnation each forgotten member was forgotten at: news about it
    /// no newer than that is stale (it would bring back a member long dead,
    /// each time a node passes on what it heard before the death).
    gone: BTreeMap<NodeId, u64>,
}

impl Members {
    fn find(&self, id: NodeId) -> Result<usize, usize> {
        self.by_id.binary_search_by_key(&id, |m| m.id)
    }

    /// The member with this id, if known.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.find(id).ok().map(|i| &self.by_id[i])
    }

    /// Every known member, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_id.iter()
    }

    /// Number of known members, this node included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no member is known (never for an engine's view: it holds itself).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Merges news about a member: new, changed (with its previous state)
    /// or stale.
    pub fn merge(&mut self, m: Member) -> Merge {
        // Appending in id order is the common bulk case (configuration).
        let at = match self.by_id.last() {
            Some(last) if last.id < m.id => Err(self.by_id.len()),
            _ => self.find(m.id),
        };
        match at {
            Err(_) if self.gone.get(&m.id).is_some_and(|inc| m.incarnation <= *inc) => Merge::Stale,
            Err(i) => {
                self.gone.remove(&m.id);
                self.unreachable += usize::from(!m.state.is_reachable());
                self.by_id.insert(i, m);
                Merge::New
            }
            Ok(i) if m.supersedes(&self.by_id[i]) => {
                let cur = &mut self.by_id[i];
                let prev = cur.state;
                self.unreachable =
                    self.unreachable + usize::from(!m.state.is_reachable()) - usize::from(!prev.is_reachable());
                // Addresses may change across restarts; keep the newest.
                *cur = m;
                Merge::Changed(prev)
            }
            Ok(_) => Merge::Stale,
        }
    }

    /// Members that should receive purges (alive or suspect).
    pub fn reachable(&self) -> impl Iterator<Item = &Member> {
        self.by_id.iter().filter(|m| m.state.is_reachable())
    }

    /// Number of reachable members.
    pub fn reachable_count(&self) -> usize {
        self.by_id.len() - self.unreachable
    }

    /// Members that are not reachable, counting those forgotten (ever,
    /// even if learned again since): an upper bound on how many members an
    /// old purge's expected set may hold that are not reachable now.
    pub fn unreachable_count(&self) -> usize {
        self.unreachable + self.forgotten
    }

    /// Drops a member from the table, remembering its incarnation; true if
    /// it was there.
    pub fn forget(&mut self, id: NodeId) -> bool {
        let Ok(i) = self.find(id) else { return false };
        let m = self.by_id.remove(i);
        self.unreachable -= usize::from(!m.state.is_reachable());
        self.forgotten += 1;
        self.gone.insert(id, m.incarnation);
        true
    }

    /// The member itself says it is up: whatever incarnation it speaks
    /// with, news from it is not stale, so drop what was remembered.
    pub fn heard_from(&mut self, id: NodeId) {
        self.gone.remove(&id);
    }
}

/// What [`Members::merge`] did with a piece of membership news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// A member not known before.
    New,
    /// A known member, superseded; holds its previous state.
    Changed(MemberState),
    /// Older than what is known: ignored.
    Stale,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, incarnation: u64, state: MemberState) -> Member {
        Member { incarnation, state, ..Member::new(NodeId(id), Profile::default()) }
    }

    #[test]
    fn merge_keeps_id_order_and_swim_precedence() {
        let mut ms = Members::default();
        for id in [5, 1, 9, 3, 7, 10] {
            assert_eq!(ms.merge(m(id, 0, MemberState::Alive)), Merge::New);
        }
        let ids: Vec<u64> = ms.iter().map(|x| x.id.0).collect();
        assert_eq!(ids, vec![1, 3, 5, 7, 9, 10]);
        assert_eq!(ms.merge(m(3, 0, MemberState::Suspect)), Merge::Changed(MemberState::Alive));
        assert_eq!(ms.merge(m(3, 0, MemberState::Alive)), Merge::Stale);
        assert_eq!(ms.merge(m(3, 1, MemberState::Alive)), Merge::Changed(MemberState::Suspect));
        assert_eq!(ms.get(NodeId(3)).map(|x| x.incarnation), Some(1));
        assert!(ms.get(NodeId(4)).is_none());
        assert_eq!(ms.merge(m(9, 0, MemberState::Dead)), Merge::Changed(MemberState::Alive));
        assert_eq!(ms.reachable_count(), 5);
        assert_eq!(ms.unreachable_count(), 1);
        assert_eq!(ms.len(), 6);
        assert_eq!(ms.merge(m(9, 1, MemberState::Alive)), Merge::Changed(MemberState::Dead));
        assert_eq!(ms.merge(m(4, 0, MemberState::Left)), Merge::New);
        assert_eq!(ms.reachable_count(), ms.reachable().count());
        assert_eq!(ms.unreachable_count(), 1);
        assert_eq!(ms.len(), 7);
        // Forgetting the dead 4 keeps it counted as unreachable (old purges
        // may still expect it), and it can be learned again.
        assert!(ms.forget(NodeId(4)));
        assert!(!ms.forget(NodeId(4)));
        assert!(ms.get(NodeId(4)).is_none());
        assert_eq!((ms.len(), ms.reachable_count(), ms.unreachable_count()), (6, 6, 1));
        assert_eq!(ms.merge(m(4, 0, MemberState::Alive)), Merge::Stale, "news from before it was forgotten");
        assert_eq!(ms.merge(m(4, 1, MemberState::Alive)), Merge::New);
        assert_eq!(ms.reachable_count(), 7);
    }
}
