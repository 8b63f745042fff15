//! Ack relays: acks of a PoP reach a purge's origin as a few batches
//! instead of one message per member (config `ack_relay`).
//!
//! A member that got a purge from its PoP's entry (stage `PopLocal`) acks
//! to that entry instead of to the origin; the entry collects the acks of
//! one purge for `ack_flush` after the first, its own included, and sends
//! them as one `AppliedBy` to the origin. The origin handles O(PoPs x
//! pop_entry) ack messages per purge rather than O(members), and still
//! learns every member that applied, so its status lists stay exact.
//!
//! Nothing new has to be reliable: an entry that dies with a batch loses
//! acks the way a lost `Applied` does, and the origin's digests and owed-
//! ack chasing (`credit_digest`, `ask_owing`) repair both.

use crate::hash::KeyedMap;
use crate::id::{NodeId, PurgeId};
use crate::time::Time;

/// Most members one `AppliedBy` may name (a PoP is far smaller).
pub const MAX_RELAYED: usize = 4096;

/// Relays forgotten by a member that never applied (crashed store, lost
/// apply) are dropped after this long.
const RELAY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Acks of one purge waiting at its PoP entry.
#[derive(Debug)]
struct Batch {
    origin: NodeId,
    nodes: Vec<NodeId>,
    due: Time,
}

/// Both sides of the relay on one node.
#[derive(Debug, Default)]
pub(super) struct Relay {
    /// Member side: where to send my ack of a purge, and since when.
    to: KeyedMap<PurgeId, (NodeId, Time)>,
    /// Entry side: purges I covered my PoP with, and their acks so far.
    batches: KeyedMap<PurgeId, Batch>,
    /// Purges I covered my PoP with and their origins, until their batch
    /// is flushed (acks arrive only after the push).
    covering: KeyedMap<PurgeId, (NodeId, Time)>,
}

impl Relay {
    /// I got `id` from my PoP's entry `entry`: ack there.
    pub fn ack_via(&mut self, id: PurgeId, entry: NodeId, now: Time) {
        self.to.entry(id).or_insert((entry, now));
    }

    /// Where my ack of `id` goes, if through a relay (consumed).
    pub fn take_route(&mut self, id: PurgeId) -> Option<NodeId> {
        self.to.remove(&id).map(|(entry, _)| entry)
    }

    /// I covered my PoP with `id` (origin `origin`): its acks come to me.
    pub fn covering(&mut self, id: PurgeId, origin: NodeId, now: Time) {
        self.covering.entry(id).or_insert((origin, now));
    }

    /// An ack of `id` by `node` to relay; false if I do not relay `id`.
    pub fn add(&mut self, id: PurgeId, node: NodeId, now: Time, flush_after: std::time::Duration) -> bool {
        let Some((origin, _)) = self.covering.get(&id).copied() else { return false };
        let batch =
            self.batches.entry(id).or_insert_with(|| Batch { origin, nodes: Vec::new(), due: now + flush_after });
        if !batch.nodes.contains(&node) && batch.nodes.len() < MAX_RELAYED {
            batch.nodes.push(node);
        }
        true
    }

    /// When the next batch is due.
    pub fn next_due(&self) -> Option<Time> {
        self.batches.values().map(|b| b.due).min()
    }

    /// Batches due at `now`: (purge, origin, members that applied it).
    pub fn due(&mut self, now: Time) -> Vec<(PurgeId, NodeId, Vec<NodeId>)> {
        let ids: Vec<PurgeId> = self.batches.iter().filter(|(_, b)| b.due <= now).map(|(id, _)| *id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(b) = self.batches.remove(&id) {
                out.push((id, b.origin, b.nodes));
            }
        }
        out
    }

    /// Forgets routes and coverings older than [`RELAY_TTL`].
    pub fn prune(&mut self, now: Time) {
        let live = |since: &Time| now.since(*since) < RELAY_TTL;
        self.to.retain(|_, (_, since)| live(since));
        self.covering.retain(|_, (_, since)| live(since));
    }
}
