//! Ack relays: a PoP's acks reach a purge's origin in a few batches instead
//! of one message per member (config `ack_relay`).
//!
//! Every member of a PoP picks the same relay for an origin: the reachable
//! member of the PoP (itself included) that ranks first by a hash of
//! (origin, member), rendezvous hashing, so the choice moves only when that
//! member's state does. A member that got a purge through the topology
//! fanout acks to it; the relay collects its PoP's acks per origin and
//! sends them as one `AppliedBy` `ack_flush` after the first, and no sooner
//! than `ack_spacing` after its previous batch to that origin. At a low rate
//! a batch carries one purge a few ms after its last local apply; at a high
//! rate it carries every purge of the last `ack_spacing`, so an origin
//! handles about PoPs / `ack_spacing` ack messages per second however many
//! purges it sends. A member of the origin's own PoP batches its own acks
//! for `ack_flush` only: they cross no WAN link, and spacing them would
//! delay every completion inside a PoP by up to `ack_spacing`.
//!
//! Views of who is reachable differ for a while after a failure, so the
//! first two of the ranking both collect a purge's acks: a member that
//! believes the first dead still reaches one that relays. Nothing new has
//! to be reliable: a relay that dies with a batch, or an ack that reached a
//! member that relays nothing, is lost the way a lost `Applied` is, and the
//! origin's digests and owed-ack chasing (`credit_digest`, `ask_owing`)
//! repair both.

use std::time::Duration;

use crate::hash::{mix64, KeyedMap};
use crate::id::{NodeId, PurgeId};
use crate::time::Time;

/// Most members one purge's acks in an `AppliedBy` may name (a PoP is far
/// smaller), and most purges one `AppliedBy` may carry.
pub const MAX_RELAYED: usize = 4096;
pub const MAX_RELAYED_PURGES: usize = 1024;

/// Coverings of purges nobody acked (a crashed store, a lost apply) are
/// dropped after this long.
const RELAY_TTL: Duration = Duration::from_secs(20);

/// A member acks through the relay only if it applied within this long of
/// receiving the purge; later (an external cache that confirmed late) the
/// relay may have forgotten the purge, so the ack goes straight to the
/// origin.
pub const ROUTE_WINDOW: Duration = Duration::from_secs(10);

/// Most purges whose acks came before the purge itself are held at once: a
/// bound on what a peer can make a relay keep.
const EARLY_MAX: usize = 1 << 16;

/// The acks of one purge: who applied it.
pub type PurgeAcks = (PurgeId, Vec<NodeId>);

/// When batches leave: `flush` after the first ack of an empty batch, and
/// no sooner than `spacing` after the previous batch to the same origin.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    pub flush: Duration,
    pub spacing: Duration,
}

/// Where a member's ack of a purge of `origin` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// I am in the origin's PoP: my own ack, batched to the origin.
    Own,
    /// To my PoP's relay for that origin (perhaps me); `cover`: I am among
    /// the first two of the ranking, so acks for it may come to me.
    Relay { relay: NodeId, cover: bool },
}

/// The rank of `node` as relay for `origin`'s acks: the highest relays.
fn rank(origin: NodeId, node: NodeId) -> u64 {
    mix64(origin.0 ^ mix64(node.0 ^ 0x7265_6c61_7921))
}

/// My PoP's relay for `origin`, among `locals` (reachable members of my
/// PoP other than me) and me.
pub(super) fn route(origin: NodeId, me: NodeId, locals: &[NodeId]) -> Route {
    let mut first = (rank(origin, me), me);
    let mut second: Option<(u64, NodeId)> = None;
    for &n in locals.iter().filter(|n| **n != me) {
        let r = (rank(origin, n), n);
        if r > first {
            second = Some(first);
            first = r;
        } else if second.is_none_or(|s| r > s) {
            second = Some(r);
        }
    }
    Route::Relay { relay: first.1, cover: first.1 == me || second.is_some_and(|s| s.1 == me) }
}

/// Acks for one origin waiting to leave.
#[derive(Debug)]
struct Batch {
    acks: Vec<PurgeAcks>,
    due: Time,
}

/// The relay side on one node.
#[derive(Debug, Default)]
pub(super) struct Relay {
    /// Purges whose acks I collect, their origins, and since when.
    covering: KeyedMap<PurgeId, (NodeId, Time)>,
    /// Acks that came before the purge itself, held until I learn it.
    early: KeyedMap<PurgeId, (Vec<NodeId>, Time)>,
    /// Acks collected, by origin.
    batches: KeyedMap<NodeId, Batch>,
    /// When the last batch to each origin left, while that still holds the
    /// next one back.
    sent: KeyedMap<NodeId, Time>,
}

impl Relay {
    /// I collect the acks of `id` (origin `origin`); acks that came early
    /// join the batch now.
    pub fn cover(&mut self, id: PurgeId, origin: NodeId, now: Time, pace: Pace) {
        self.covering.entry(id).or_insert((origin, now));
        if let Some((nodes, _)) = self.early.remove(&id) {
            for node in nodes {
                self.push(origin, id, node, now, pace);
            }
        }
    }

    /// Drops acks held for `id`, a purge I learned and do not relay.
    pub fn drop_early(&mut self, id: PurgeId) {
        self.early.remove(&id);
    }

    /// An ack of `id` by `node` (of my PoP) to relay; false if I do not
    /// cover `id`.
    pub fn add(&mut self, id: PurgeId, node: NodeId, now: Time, pace: Pace) -> bool {
        let Some((origin, _)) = self.covering.get(&id).copied() else { return false };
        self.push(origin, id, node, now, pace);
        true
    }

    /// An ack of a purge I have not seen yet: kept until I do (or for
    /// [`RELAY_TTL`]).
    pub fn hold(&mut self, id: PurgeId, node: NodeId, now: Time) {
        if self.early.len() >= EARLY_MAX && !self.early.contains_key(&id) {
            return;
        }
        let (nodes, _) = self.early.entry(id).or_insert_with(|| (Vec::new(), now));
        if !nodes.contains(&node) && nodes.len() < MAX_RELAYED {
            nodes.push(node);
        }
    }

    /// Adds an ack of `id` by `node` to the batch for `origin`.
    pub fn push(&mut self, origin: NodeId, id: PurgeId, node: NodeId, now: Time, pace: Pace) {
        let sent = self.sent.get(&origin).copied();
        let batch = self.batches.entry(origin).or_insert_with(|| {
            let due = now + pace.flush;
            // Spacing holds a batch back only while purges keep coming: the
            // first one after a quiet spell leaves after `flush`.
            let due = sent.map_or(due, |at| due.max(at + pace.spacing));
            Batch { acks: Vec::new(), due }
        });
        let at = match batch.acks.iter().rposition(|(p, _)| *p == id) {
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
    }

    /// When the next batch is due.
    pub fn next_due(&self) -> Option<Time> {
        self.batches.values().map(|b| b.due).min()
    }

    /// Batches due at `now`, by origin in id order: (origin, the acks for
    /// it), cut to what one message may carry.
    pub fn due(&mut self, now: Time) -> Vec<(NodeId, Vec<PurgeAcks>)> {
        let mut origins: Vec<NodeId> = self.batches.iter().filter(|(_, b)| b.due <= now).map(|(o, _)| *o).collect();
        origins.sort_unstable();
        let mut out = Vec::with_capacity(origins.len());
        for origin in origins {
            let Some(b) = self.batches.remove(&origin) else { continue };
            self.sent.insert(origin, now);
            let mut acks = b.acks.into_iter().peekable();
            while acks.peek().is_some() {
                out.push((origin, acks.by_ref().take(MAX_RELAYED_PURGES).collect()));
            }
        }
        out
    }

    /// Forgets coverings and early acks older than [`RELAY_TTL`], and
    /// last-batch times that no longer hold anything back.
    pub fn prune(&mut self, now: Time, spacing: Duration) {
        let live = |since: &Time| now.since(*since) < RELAY_TTL;
        self.covering.retain(|_, (_, since)| live(since));
        self.early.retain(|_, (_, since)| live(since));
        self.sent.retain(|_, at| now.since(*at) < spacing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Pace = Pace { flush: Duration::from_millis(2), spacing: Duration::ZERO };
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_batch_per_origin_carries_every_purge_of_its_window() {
        let (o1, o2) = (NodeId(1), NodeId(2));
        let mut r = Relay::default();
        let t0 = Time::ZERO;
        for (id, origin) in [(PurgeId(10), o1), (PurgeId(11), o1), (PurgeId(20), o2)] {
            r.cover(id, origin, t0, PACE);
        }
        assert!(r.add(PurgeId(10), NodeId(5), t0, PACE));
        assert!(r.add(PurgeId(11), NodeId(5), t0 + MS, PACE));
        assert!(r.add(PurgeId(10), NodeId(6), t0 + MS, PACE));
        assert!(r.add(PurgeId(10), NodeId(6), t0 + MS, PACE), "a repeated ack is taken");
        assert!(r.add(PurgeId(20), NodeId(5), t0 + MS, PACE));
        assert!(!r.add(PurgeId(99), NodeId(5), t0, PACE), "a purge I do not cover is not relayed");
        assert_eq!(r.next_due(), Some(t0 + PACE.flush), "due after the first ack for that origin");
        let mut due = r.due(t0 + PACE.flush);
        assert_eq!(due.len(), 1, "origin 2's batch is not due yet");
        let (origin, acks) = due.remove(0);
        assert_eq!(origin, o1);
        assert_eq!(acks, vec![(PurgeId(10), vec![NodeId(5), NodeId(6)]), (PurgeId(11), vec![NodeId(5)])]);
        assert_eq!(r.due(t0 + PACE.flush + MS), vec![(o2, vec![(PurgeId(20), vec![NodeId(5)])])]);
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn batches_to_one_origin_are_spaced_and_the_first_after_a_lull_is_not() {
        let pace = Pace { flush: Duration::from_millis(2), spacing: Duration::from_millis(20) };
        let o = NodeId(1);
        let mut r = Relay::default();
        let t0 = Time::ZERO;
        r.push(o, PurgeId(1), NodeId(5), t0, pace);
        assert_eq!(r.next_due(), Some(t0 + pace.flush), "the first batch waits only for the flush");
        assert_eq!(r.due(t0 + pace.flush).len(), 1);
        // Purges keep coming: each ack joins the one batch that waits out
        // the spacing.
        for k in 0..10u128 {
            r.push(o, PurgeId(2 + k), NodeId(5), t0 + MS * 3 + MS * k as u32, pace);
        }
        assert_eq!(r.next_due(), Some(t0 + pace.flush + pace.spacing));
        assert!(r.due(t0 + pace.flush + pace.spacing - MS).is_empty());
        let due = r.due(t0 + pace.flush + pace.spacing);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.len(), 10, "one message for the ten purges of the window");
        // Another origin is not held back by this one.
        r.push(NodeId(2), PurgeId(50), NodeId(5), t0 + MS * 23, pace);
        assert_eq!(r.next_due(), Some(t0 + MS * 25));
        // After a lull longer than the spacing, back to the flush alone.
        let later = t0 + Duration::from_secs(1);
        r.prune(later, pace.spacing);
        r.push(o, PurgeId(99), NodeId(5), later, pace);
        let _ = r.due(t0 + MS * 25);
        assert_eq!(r.next_due(), Some(later + pace.flush));
    }

    #[test]
    fn acks_that_come_before_the_purge_join_its_batch_once_it_is_covered() {
        let mut r = Relay::default();
        r.hold(PurgeId(1), NodeId(5), Time::ZERO);
        r.hold(PurgeId(2), NodeId(6), Time::ZERO);
        assert_eq!(r.next_due(), None, "nothing to send before the origin is known");
        r.cover(PurgeId(1), NodeId(9), Time::ZERO + MS, PACE);
        r.drop_early(PurgeId(2));
        r.cover(PurgeId(2), NodeId(9), Time::ZERO + MS, PACE);
        assert_eq!(r.due(Time::ZERO + MS * 10), vec![(NodeId(9), vec![(PurgeId(1), vec![NodeId(5)])])]);
    }

    #[test]
    fn a_batch_past_the_message_limit_leaves_as_several_messages() {
        let mut r = Relay::default();
        let n = MAX_RELAYED_PURGES as u128 + 5;
        for i in 0..n {
            r.cover(PurgeId(i), NodeId(1), Time::ZERO, PACE);
            assert!(r.add(PurgeId(i), NodeId(5), Time::ZERO, PACE));
        }
        let due = r.due(Time::ZERO);
        let sizes: Vec<usize> = due.iter().map(|(_, acks)| acks.len()).collect();
        assert_eq!(sizes, vec![MAX_RELAYED_PURGES, 5]);
        assert!(due.iter().all(|(origin, _)| *origin == NodeId(1)));
    }

    #[test]
    fn coverings_are_forgotten_after_the_ttl() {
        let mut r = Relay::default();
        r.cover(PurgeId(3), NodeId(1), Time::ZERO, PACE);
        r.hold(PurgeId(4), NodeId(5), Time::ZERO);
        r.prune(Time::ZERO + RELAY_TTL, PACE.spacing);
        assert!(!r.add(PurgeId(3), NodeId(5), Time::ZERO + RELAY_TTL, PACE));
        r.cover(PurgeId(4), NodeId(1), Time::ZERO + RELAY_TTL, PACE);
        assert_eq!(r.next_due(), None, "an early ack past the TTL is gone");
    }

    #[test]
    fn every_member_of_a_pop_picks_the_same_relay_and_two_cover() {
        let pop: Vec<NodeId> = (100..110).map(NodeId).collect();
        let origin = NodeId(7);
        let routes: Vec<Route> = pop
            .iter()
            .map(|me| route(origin, *me, &pop.iter().copied().filter(|n| n != me).collect::<Vec<_>>()))
            .collect();
        let relays: Vec<NodeId> =
            routes.iter().map(|r| if let Route::Relay { relay, .. } = r { *relay } else { NodeId(0) }).collect();
        assert!(relays.iter().all(|r| *r == relays[0]), "{relays:?}");
        let covering = routes.iter().filter(|r| matches!(r, Route::Relay { cover: true, .. })).count();
        assert_eq!(covering, 2);
        // Another origin spreads the work to another member, most likely.
        let others: Vec<NodeId> = (0..20)
            .map(|o| match route(NodeId(o), pop[0], &pop[1..]) {
                Route::Relay { relay, .. } => relay,
                Route::Own => NodeId(0),
            })
            .collect();
        assert!(others.iter().any(|r| *r != others[0]));
    }
}
