//! Where acks go and what a node does with those it receives: straight to
//! the origin, or through the PoP's relay in paced batches
//! (`Config::ack_relay`, the rules in `relay.rs`).

use std::time::Duration;

use super::relay::{self, Pace, PurgeAcks, Route};
use super::Engine;
use crate::id::{NodeId, PurgeId};
use crate::message::Message;
use crate::purge::Purge;
use crate::time::Time;

impl Engine {
    fn pace(&self) -> Pace {
        Pace { flush: self.cfg.ack_flush, spacing: self.cfg.ack_spacing }
    }

    fn in_my_pop(&self, node: NodeId) -> bool {
        node == self.me.id
            || self.members.get(node).is_some_and(|m| m.profile.location.pop == self.me.profile.location.pop)
    }

    /// Where my ack of a purge of `origin` goes (see `relay.rs`).
    fn ack_route(&mut self, origin: NodeId) -> Route {
        if self.in_my_pop(origin) {
            return Route::Own;
        }
        let locals = self.targets.pops(&self.members, &self.me).local();
        relay::route(origin, self.me.id, locals)
    }

    /// The member of this node's PoP that relays the acks of purges of
    /// `origin` to it, as this node sees it: every member of the PoP with
    /// the same view of who is reachable picks the same one. `None` when
    /// `origin` is in this PoP (its members ack it directly) or relays are
    /// off. Walks the member table: for tools and tests.
    pub fn ack_relay_for(&self, origin: NodeId) -> Option<NodeId> {
        if !self.cfg.ack_relay || self.in_my_pop(origin) {
            return None;
        }
        let locals: Vec<NodeId> = self
            .members
            .reachable()
            .filter(|m| m.id != self.me.id && m.profile.location.pop == self.me.profile.location.pop)
            .map(|m| m.id)
            .collect();
        match relay::route(origin, self.me.id, &locals) {
            Route::Relay { relay, .. } => Some(relay),
            Route::Own => None,
        }
    }

    /// I have just learned `purge`: if acks of my PoP may come to me for
    /// it, collect them (those that came early included).
    pub(super) fn note_for_relay(&mut self, now: Time, purge: &Purge) {
        if !self.cfg.ack_relay {
            return;
        }
        let origin = purge.origin();
        match self.ack_route(origin) {
            Route::Relay { cover: true, .. } => {
                let pace = self.pace();
                self.relay.cover(purge.id, origin, now, pace);
            }
            Route::Relay { cover: false, .. } | Route::Own => self.relay.drop_early(purge.id),
        }
    }

    /// Sends (or batches) my ack of `id`, a purge of `origin` that came
    /// through the fanout at `received` (if it did).
    pub(super) fn ack(&mut self, now: Time, id: PurgeId, origin: NodeId, received: Option<Time>) {
        let routed = received.filter(|at| self.cfg.ack_relay && now.since(*at) < relay::ROUTE_WINDOW);
        if routed.is_none() {
            return self.send(origin, Message::Applied { purge_id: id, node: self.me.id });
        }
        let pace = self.pace();
        match self.ack_route(origin) {
            // My acks to an origin of my own PoP cross no WAN link: batched
            // for `ack_flush` only, never held back by `ack_spacing`, which
            // would add up to that much to every completion inside a PoP
            // (a whole local cluster) under a stream of purges.
            Route::Own => self.relay.push(origin, id, self.me.id, now, Pace { spacing: Duration::ZERO, ..pace }),
            Route::Relay { relay, .. } if relay == self.me.id => {
                // The view may have changed since the purge came: I relay
                // it now, whatever I thought then.
                self.relay.cover(id, origin, now, pace);
                self.relay.push(origin, id, self.me.id, now, pace);
            }
            Route::Relay { relay, .. } => self.send(relay, Message::Applied { purge_id: id, node: self.me.id }),
        }
    }

    pub(super) fn on_applied(&mut self, now: Time, from: NodeId, id: PurgeId, node: NodeId) {
        if node != from {
            return self.reject(from, "applied", "acknowledges for another node".into());
        }
        // A relay speaks for its own PoP only: an ack from elsewhere can
        // only be for a purge of mine.
        if !self.cfg.ack_relay || !self.in_my_pop(node) {
            return self.record_applies(now, id, &[node]);
        }
        let pace = self.pace();
        if self.relay.add(id, node, now, pace) {
            return;
        }
        if self.seen.contains(id) {
            // Mine, or one I do not relay (the sender's view differs from
            // mine): recorded if mine, else left to the origin's repair.
            self.record_applies(now, id, &[node]);
        } else {
            self.relay.hold(id, node, now);
        }
    }

    pub(super) fn on_applied_by(&mut self, now: Time, from: NodeId, acks: Vec<PurgeAcks>) {
        let too_many =
            acks.len() > relay::MAX_RELAYED_PURGES || acks.iter().any(|(_, nodes)| nodes.len() > relay::MAX_RELAYED);
        if too_many {
            return self.reject(from, "applied_by", "a batch larger than a relay sends".into());
        }
        // A relay speaks for its own PoP only, as `Applied` for its sender
        // only: acks for anyone else are dropped.
        let members = &self.members;
        let pop = members.get(from).map(|m| &m.profile.location.pop);
        let mut acks = acks;
        let mut foreign = 0usize;
        for (_, nodes) in &mut acks {
            let before = nodes.len();
            nodes.retain(|n| members.get(*n).map(|m| &m.profile.location.pop) == pop);
            foreign += before - nodes.len();
        }
        if foreign > 0 {
            self.reject(from, "applied_by", format!("acknowledges for {foreign} members of another PoP"));
        }
        self.record_acks(now, acks);
    }

    pub(super) fn record_acks(&mut self, now: Time, acks: Vec<PurgeAcks>) {
        for (id, nodes) in acks {
            self.record_applies(now, id, &nodes);
        }
    }

    /// Sends the batches due; one that holds only my own ack of one purge
    /// goes as a plain `Applied`.
    pub(super) fn flush_acks(&mut self, now: Time) {
        for (origin, mut acks) in self.relay.due(now) {
            if origin == self.me.id {
                self.record_acks(now, acks);
            } else if acks.len() == 1 && acks[0].1 == [self.me.id] {
                let (purge_id, _) = acks.remove(0);
                self.send(origin, Message::Applied { purge_id, node: self.me.id });
            } else {
                self.send(origin, Message::AppliedBy { acks });
            }
        }
    }
}
