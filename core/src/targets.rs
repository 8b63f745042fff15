//! Who a node sends to, derived from its member table. The table changes
//! rarely and is consulted on every hop, so the derived lists are cached
//! and dropped together whenever who is reachable, or where, changes.

use crate::id::NodeId;
use crate::member::{Member, MemberState, Members};

/// Reachable members other than me, grouped by PoP.
#[derive(Debug, Default)]
pub(crate) struct Pops {
    /// Sorted by PoP name, so that walks are deterministic.
    pub by_pop: Vec<(String, Vec<NodeId>)>,
    /// Index of my own PoP in `by_pop`, if any peer shares it.
    mine: Option<usize>,
}

impl Pops {
    fn build(members: &Members, me: &Member) -> Pops {
        let mut by_pop: Vec<(String, Vec<NodeId>)> = Vec::new();
        for m in members.reachable().filter(|m| m.id != me.id) {
            let pop = &m.profile.location.pop;
            match by_pop.binary_search_by(|(p, _)| p.as_str().cmp(pop)) {
                Ok(i) => by_pop[i].1.push(m.id),
                Err(i) => by_pop.insert(i, (pop.clone(), vec![m.id])),
            }
        }
        let mine = by_pop.binary_search_by(|(p, _)| p.as_str().cmp(&me.profile.location.pop)).ok();
        Pops { by_pop, mine }
    }

    /// Reachable peers in my own PoP.
    pub fn local(&self) -> &[NodeId] {
        self.mine.map_or(&[], |i| &self.by_pop[i].1)
    }

    pub fn is_mine(&self, i: usize) -> bool {
        self.mine == Some(i)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Targets {
    peers: Option<Vec<NodeId>>,
    pops: Option<Pops>,
    dead: Option<Vec<NodeId>>,
}

impl Targets {
    /// Call after any change to who is reachable or where they are.
    pub fn invalidate(&mut self) {
        *self = Targets::default();
    }

    /// Reachable members other than me, by id.
    pub fn peers(&mut self, members: &Members, me: NodeId) -> &[NodeId] {
        self.peers.get_or_insert_with(|| members.reachable().map(|m| m.id).filter(|n| *n != me).collect())
    }

    pub fn pops(&mut self, members: &Members, me: &Member) -> &Pops {
        self.pops.get_or_insert_with(|| Pops::build(members, me))
    }

    /// Borrowed out while the caller sends (which needs the engine
    /// mutably); hand it back with [`Targets::put_pops`].
    pub fn take_pops(&mut self, members: &Members, me: &Member) -> Pops {
        self.pops.take().unwrap_or_else(|| Pops::build(members, me))
    }

    pub fn put_pops(&mut self, pops: Pops) {
        self.pops = Some(pops);
    }

    /// Members I believe dead, by id.
    pub fn dead(&mut self, members: &Members) -> &[NodeId] {
        self.dead.get_or_insert_with(|| members.iter().filter(|m| m.state == MemberState::Dead).map(|m| m.id).collect())
    }
}
