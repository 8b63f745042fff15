//! Ack relays: acks of a PoP reach a purge's origin in a few batches
//! instead of one message per member (config `ack_relay`).
//!
//! A member that got a purge from its PoP's entry (stage `PopLocal`) acks
//! to that entry instead of to the origin; the entry collects acks, its own
//! included, per origin for `ack_flush` after the first, and sends them as
//! one `AppliedBy` to that origin: the acks of every purge of that origin
//! it relays in the window. The origin handles O(PoPs) ack messages per
//! flush window rather than O(members) per purge, and still learns every
//! member that applied, so its status lists stay exact.
//!
//! Nothing new has to be reliable: an entry that dies with a batch loses
//! acks the way a lost `Applied` does, and the origin's digests and owed-
//! ack chasing (`credit_digest`, `ask_owing`) repair both.

use std::time::Duration;

use crate::hash::KeyedMap;
use crate::id::{NodeId, PurgeId};
use crate::time::Time;

/// Most members one purge's acks in an `AppliedBy` may name (a PoP is far
/// smaller), and most purges one `AppliedBy` may carry.
pub const MAX_RELAYED: usize = 4096;
pub const MAX_RELAYED_PURGES: usize = 1024;

/// Routes and coverings of purges a member never applied (crashed store,
/// lost apply) are dropped after this long.
const RELAY_TTL: Duration = Duration::from_secs(60);

/// The acks of one purge: who applied it.
pub type PurgeAcks = (PurgeId, Vec<NodeId>);

/// Acks for one origin waiting at a PoP entry.
#[derive(Debug)]
struct Batch {
    acks: Vec<PurgeAcks>,
    due: Time,
}

/// Both sides of the relay on one node.
#[derive(Debug, Default)]
pub(super) struct Relay {
    /// Member side: where to send my ack of a purge, and since when.
    to: KeyedMap<PurgeId, (NodeId, Time)>,
    /// Entry side: purges I covered my PoP with, their origins, and when.
    covering: KeyedMap<PurgeId, (NodeId, Time)>,
    /// Entry side: acks collected, by origin.
    batches: KeyedMap<NodeId, Batch>,
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
    pub fn add(&mut self, id: PurgeId, node: NodeId, now: Time, flush_after: Duration) -> bool {
        let Some((origin, _)) = self.covering.get(&id).copied() else { return false };
        let batch = self.batches.entry(origin).or_insert_with(|| Batch { acks: Vec::new(), due: now + flush_after });
        let at = match batch.acks.iter().position(|(p, _)| *p == id) {
            Some(at) => at,
            None => {
                batch.acks.push((id, Vec::new()));
                batch.acks.len() - 1
            }
        };
        let nodes = &mut batch.acks[at].1;
        if !nodes.contains(&node) && nodes.len() < MAX_RELAYED {
            nodes.push(node);
        }
        // A full batch goes now rather than growing past what a peer takes.
        if batch.acks.len() >= MAX_RELAYED_PURGES {
            batch.due = now;
        }
        true
    }

    /// When the next batch is due.
    pub fn next_due(&self) -> Option<Time> {
        self.batches.values().map(|b| b.due).min()
    }

    /// Batches due at `now`: (origin, the acks for it), cut to what one
    /// message may carry.
    pub fn due(&mut self, now: Time) -> Vec<(NodeId, Vec<PurgeAcks>)> {
        let origins: Vec<NodeId> = self.batches.iter().filter(|(_, b)| b.due <= now).map(|(o, _)| *o).collect();
        let mut out = Vec::with_capacity(origins.len());
        for origin in origins {
            let Some(b) = self.batches.remove(&origin) else { continue };
            let mut acks = b.acks.into_iter().peekable();
            while acks.peek().is_some() {
                out.push((origin, acks.by_ref().take(MAX_RELAYED_PURGES).collect()));
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

#[cfg(test)]
mod tests {
    use super::*;

    const FLUSH: Duration = Duration::from_millis(2);

    #[test]
    fn one_batch_per_origin_carries_every_purge_of_its_window() {
        let (o1, o2) = (NodeId(1), NodeId(2));
        let mut r = Relay::default();
        let t0 = Time::ZERO;
        for (id, origin) in [(PurgeId(10), o1), (PurgeId(11), o1), (PurgeId(20), o2)] {
            r.covering(id, origin, t0);
        }
        assert!(r.add(PurgeId(10), NodeId(5), t0, FLUSH));
        assert!(r.add(PurgeId(11), NodeId(5), t0 + Duration::from_millis(1), FLUSH));
        assert!(r.add(PurgeId(10), NodeId(6), t0 + Duration::from_millis(1), FLUSH));
        assert!(r.add(PurgeId(10), NodeId(6), t0 + Duration::from_millis(1), FLUSH), "a repeated ack is taken");
        assert!(r.add(PurgeId(20), NodeId(5), t0 + Duration::from_millis(1), FLUSH));
        assert!(!r.add(PurgeId(99), NodeId(5), t0, FLUSH), "a purge I do not cover is not relayed");
        assert_eq!(r.next_due(), Some(t0 + FLUSH), "due after the first ack for that origin");
        let mut due = r.due(t0 + FLUSH);
        assert_eq!(due.len(), 1, "origin 2's batch is not due yet");
        let (origin, acks) = due.remove(0);
        assert_eq!(origin, o1);
        assert_eq!(acks, vec![(PurgeId(10), vec![NodeId(5), NodeId(6)]), (PurgeId(11), vec![NodeId(5)])]);
        assert_eq!(r.due(t0 + FLUSH + Duration::from_millis(1)), vec![(o2, vec![(PurgeId(20), vec![NodeId(5)])])]);
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn a_batch_past_the_message_limit_leaves_as_several_messages() {
        let mut r = Relay::default();
        let n = MAX_RELAYED_PURGES as u128 + 5;
        for i in 0..n {
            r.covering(PurgeId(i), NodeId(1), Time::ZERO);
            assert!(r.add(PurgeId(i), NodeId(5), Time::ZERO, FLUSH));
        }
        let due = r.due(Time::ZERO);
        let sizes: Vec<usize> = due.iter().map(|(_, acks)| acks.len()).collect();
        assert_eq!(sizes, vec![MAX_RELAYED_PURGES, 5]);
        assert!(due.iter().all(|(origin, _)| *origin == NodeId(1)));
    }

    #[test]
    fn routes_are_taken_once_and_forgotten_after_a_minute() {
        let mut r = Relay::default();
        r.ack_via(PurgeId(1), NodeId(7), Time::ZERO);
        r.ack_via(PurgeId(2), NodeId(7), Time::ZERO);
        r.covering(PurgeId(3), NodeId(1), Time::ZERO);
        assert_eq!(r.take_route(PurgeId(1)), Some(NodeId(7)));
        assert_eq!(r.take_route(PurgeId(1)), None);
        r.prune(Time::ZERO + RELAY_TTL);
        assert_eq!(r.take_route(PurgeId(2)), None);
        assert!(!r.add(PurgeId(3), NodeId(5), Time::ZERO + RELAY_TTL, FLUSH));
    }
}
