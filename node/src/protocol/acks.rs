//! Acks held for the sinks: a purge the store has applied is acked to its
//! origin only once every sink (external cache) has confirmed it.

use std::collections::HashMap;

use purgecast_core::{ApplyTicket, PurgeId};

pub struct Acks {
    /// Sinks configured on this node.
    sinks: usize,
    /// Ticket and how many sinks still owe the purge.
    held: HashMap<PurgeId, (ApplyTicket, usize)>,
    /// Confirmations that came before their purge's ticket: a sink can read
    /// its backlog row before the loop hears from the apply worker.
    early: HashMap<PurgeId, usize>,
}

impl Acks {
    pub fn new(sinks: usize) -> Acks {
        Acks { sinks, held: HashMap::new(), early: HashMap::new() }
    }

    /// The store applied the purge: its ticket comes straight back when no
    /// sink owes it, else it is held.
    pub fn applied(&mut self, ticket: ApplyTicket) -> Option<ApplyTicket> {
        self.owed(ticket, self.sinks)
    }

    /// A purge restored at start-up that `owed` sinks had not confirmed.
    pub fn owed(&mut self, ticket: ApplyTicket, owed: usize) -> Option<ApplyTicket> {
        let id = ticket.purge_id();
        let owed = owed.saturating_sub(self.early.remove(&id).unwrap_or(0));
        if owed == 0 {
            return Some(ticket);
        }
        self.held.insert(id, (ticket, owed));
        None
    }

    /// One sink confirmed the purge: its ticket once the last one has.
    pub fn confirmed(&mut self, id: PurgeId) -> Option<ApplyTicket> {
        let Some((_, owed)) = self.held.get_mut(&id) else {
            *self.early.entry(id).or_default() += 1;
            return None;
        };
        *owed -= 1;
        if *owed > 0 {
            return None;
        }
        self.held.remove(&id).map(|(ticket, _)| ticket)
    }

    /// Purges applied to the store that some sink has not confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use purgecast_core::{Config, Engine, Location, Member, Mode, NodeId, Profile, Purge, Selector, StreamId, Time};

    use super::*;

    /// Real tickets, as a restarted node gets them for unfinished purges.
    fn tickets(n: u64) -> Vec<ApplyTicket> {
        let profile = Profile {
            name: "n".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            location: Location { pop: "p".into(), region: "r".into() },
        };
        let mut engine = Engine::new(Config::default(), Member::new(NodeId(1), profile), 1, 1, Time::ZERO);
        (1..=n)
            .map(|seq| {
                let purge = Purge {
                    id: PurgeId(u128::from(seq)),
                    stream: StreamId { origin: NodeId(9), epoch: 1 },
                    seq,
                    selectors: vec![Selector::Everything],
                    mode: Mode::Hard,
                    issued_at_ms: 0,
                    zone: String::new(),
                    requested_by: String::new(),
                };
                engine.restore_unfinished(Time::ZERO, Arc::new(purge))
            })
            .collect()
    }

    #[test]
    fn without_sinks_a_ticket_comes_straight_back() {
        let mut acks = Acks::new(0);
        let t = tickets(1).pop().unwrap();
        assert!(acks.applied(t).is_some());
        assert_eq!(acks.unconfirmed(), 0);
    }

    #[test]
    fn the_ticket_comes_back_after_the_last_sink_confirms() {
        let mut acks = Acks::new(2);
        let t = tickets(1).pop().unwrap();
        let id = t.purge_id();
        assert!(acks.applied(t).is_none());
        assert!(acks.confirmed(id).is_none(), "one of two");
        assert_eq!(acks.unconfirmed(), 1);
        assert_eq!(acks.confirmed(id).map(|t| t.purge_id()), Some(id));
        assert_eq!(acks.unconfirmed(), 0);
    }

    #[test]
    fn confirmations_before_the_ticket_count() {
        let mut acks = Acks::new(2);
        let mut ts = tickets(2);
        let (a, b) = (ts.remove(0), ts.remove(0));
        let (ia, ib) = (a.purge_id(), b.purge_id());
        assert!(acks.confirmed(ia).is_none());
        assert!(acks.confirmed(ia).is_none());
        assert!(acks.confirmed(ib).is_none());
        assert_eq!(acks.applied(a).map(|t| t.purge_id()), Some(ia), "both sinks were done already");
        assert!(acks.applied(b).is_none());
        assert_eq!(acks.confirmed(ib).map(|t| t.purge_id()), Some(ib));
    }

    #[test]
    fn a_restored_purge_waits_only_for_the_sinks_that_owe_it() {
        let mut acks = Acks::new(3);
        let t = tickets(1).pop().unwrap();
        let id = t.purge_id();
        assert!(acks.owed(t, 1).is_none());
        assert!(acks.confirmed(id).is_some());
    }
}
