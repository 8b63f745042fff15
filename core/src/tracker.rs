//! Completion tracking for purges this node originated: who was expected
//! to apply each one, who has, and how long each took.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::id::{NodeId, PurgeId};
use crate::member::Members;
use crate::time::Time;

/// Every member acknowledges every purge to its origin, so recording an
/// apply and checking completion must not cost a walk over the expected
/// set each time: see [`Tracker::check`].
#[derive(Debug, Clone)]
struct Tracked {
    accepted: Time,
    /// Sorted, no duplicates.
    expected: Vec<NodeId>,
    /// Per expected member: time from accept to the origin learning of its
    /// apply.
    done: Vec<Option<Duration>>,
    /// Expected members that have not applied yet.
    left: usize,
    /// Indices of those, once few enough remain to be worth walking.
    rest: Option<Vec<u32>>,
    /// Applies from members that were not expected (joined later).
    extra: BTreeMap<NodeId, Duration>,
    completed: Option<Duration>,
}

/// A snapshot of one purge's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeStatus {
    /// The purge.
    pub id: PurgeId,
    /// When this node originated it.
    pub accepted: Time,
    /// Members expected to apply it (reachable when it was originated).
    pub expected: usize,
    /// Members that acknowledged it, with the time they took.
    pub applied: Vec<(NodeId, Duration)>,
    /// Expected, reachable, not applied yet.
    pub pending: Vec<NodeId>,
    /// Expected, now dead or gone, not applied.
    pub dead: Vec<NodeId>,
    /// Accept -> last reachable member applied, once that has happened.
    pub completed: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    by_id: BTreeMap<PurgeId, Tracked>,
    order: VecDeque<PurgeId>,
}

impl Tracker {
    /// `expected`: the members that should apply it, in any order.
    pub fn start(&mut self, id: PurgeId, now: Time, mut expected: Vec<NodeId>) {
        expected.sort_unstable();
        expected.dedup();
        let done = vec![None; expected.len()];
        let left = expected.len();
        let t = Tracked { accepted: now, expected, done, left, rest: None, extra: BTreeMap::new(), completed: None };
        self.by_id.insert(id, t);
        self.order.push_back(id);
    }

    /// Records an apply; returns the completion time if this apply (or the
    /// membership view) just completed the purge.
    pub fn record(&mut self, id: PurgeId, node: NodeId, now: Time, members: &Members) -> Option<Duration> {
        let t = self.by_id.get_mut(&id)?;
        let lat = now.since(t.accepted);
        match t.expected.binary_search(&node) {
            Ok(i) => {
                if t.done[i].is_none() {
                    t.done[i] = Some(lat);
                    t.left -= 1;
                }
            }
            Err(_) => {
                t.extra.entry(node).or_insert(lat);
            }
        }
        Self::check(t, now, members)
    }

    /// Re-evaluates every open purge after a membership change (a dead
    /// member no longer holds completion back). Returns those completed.
    pub fn recheck(&mut self, now: Time, members: &Members) -> Vec<(PurgeId, Duration)> {
        let mut done = Vec::new();
        for (id, t) in &mut self.by_id {
            if t.completed.is_none() {
                if let Some(d) = Self::check(t, now, members) {
                    done.push((*id, d));
                }
            }
        }
        done
    }

    /// Complete when no expected member that is still reachable is owed an
    /// apply. Members never leave the table (leaving is a state), so while
    /// more expected members are outstanding than the table holds
    /// unreachable members, one of them must be reachable: the answer for
    /// nearly every ack, without a walk. Past that point the outstanding
    /// few are listed once and walked.
    fn check(t: &mut Tracked, now: Time, members: &Members) -> Option<Duration> {
        if t.completed.is_some() || t.left > members.unreachable_count() {
            return None;
        }
        let rest =
            t.rest.get_or_insert_with(|| (0..t.done.len() as u32).filter(|i| t.done[*i as usize].is_none()).collect());
        rest.retain(|i| t.done[*i as usize].is_none());
        let waiting = rest.iter().any(|i| members.get(t.expected[*i as usize]).is_some_and(|m| m.state.is_reachable()));
        if waiting {
            return None;
        }
        let d = now.since(t.accepted);
        t.completed = Some(d);
        Some(d)
    }

    pub fn status(&self, id: PurgeId, members: &Members) -> Option<PurgeStatus> {
        let t = self.by_id.get(&id)?;
        let mut pending = Vec::new();
        let mut dead = Vec::new();
        let mut applied: Vec<(NodeId, Duration)> = t.extra.iter().map(|(n, d)| (*n, *d)).collect();
        for (n, done) in t.expected.iter().zip(&t.done) {
            if let Some(d) = done {
                applied.push((*n, *d));
            } else if members.get(*n).is_some_and(|m| m.state.is_reachable()) {
                pending.push(*n);
            } else {
                dead.push(*n);
            }
        }
        applied.sort_unstable_by_key(|(n, _)| *n);
        Some(PurgeStatus {
            id,
            accepted: t.accepted,
            expected: t.expected.len(),
            applied,
            pending,
            dead,
            completed: t.completed,
        })
    }

    /// Forgets the oldest beyond `max` and those older than `keep`.
    pub fn prune(&mut self, now: Time, keep: Duration, max: usize) {
        while let Some(id) = self.order.front().copied() {
            let old = self.by_id.get(&id).is_none_or(|t| now.since(t.accepted) > keep);
            if self.order.len() > max || old {
                self.order.pop_front();
                self.by_id.remove(&id);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Member, MemberState, Profile};

    fn member(id: u64, state: MemberState) -> Member {
        Member { incarnation: 1, state, ..Member::new(NodeId(id), Profile::default()) }
    }

    #[test]
    fn completes_when_every_reachable_expected_member_applied() {
        let mut ms = Members::default();
        for id in 1..=4 {
            ms.merge(member(id, MemberState::Alive));
        }
        let mut tr = Tracker::default();
        let id = PurgeId(7);
        tr.start(id, Time(0), vec![NodeId(3), NodeId(1), NodeId(2), NodeId(1)]);
        assert_eq!(tr.record(id, NodeId(1), Time(10), &ms), None);
        assert_eq!(tr.record(id, NodeId(4), Time(20), &ms), None, "4 was not expected");
        assert_eq!(tr.record(id, NodeId(3), Time(30), &ms), None);
        assert_eq!(tr.record(id, NodeId(1), Time(40), &ms), None, "a repeat keeps the first time");
        let st = tr.status(id, &ms).unwrap();
        assert_eq!(st.expected, 3);
        let us = |x: u64| Duration::from_micros(x);
        assert_eq!(st.applied, vec![(NodeId(1), us(10)), (NodeId(3), us(30)), (NodeId(4), us(20))]);
        assert_eq!(st.pending, vec![NodeId(2)]);
        // 2 dies: nothing reachable is left waiting.
        ms.merge(member(2, MemberState::Dead));
        assert_eq!(tr.recheck(Time(50), &ms), vec![(id, us(50))]);
        assert_eq!(tr.status(id, &ms).unwrap().dead, vec![NodeId(2)]);
        assert_eq!(tr.record(id, NodeId(2), Time(60), &ms), None, "already complete");
    }

    #[test]
    fn counts_and_walks_agree_when_members_die_and_come_back() {
        let mut ms = Members::default();
        for id in 1..=6 {
            ms.merge(member(id, MemberState::Alive));
        }
        // Unreachable members that were never expected count too, so the
        // O(1) test passes to the walk, which must still find the living.
        for id in 7..=9 {
            ms.merge(member(id, MemberState::Dead));
        }
        let mut tr = Tracker::default();
        let (a, b) = (PurgeId(1), PurgeId(2));
        tr.start(a, Time(0), (1..=4).map(NodeId).collect());
        tr.start(b, Time(0), (1..=6).map(NodeId).collect());
        assert_eq!(tr.record(a, NodeId(1), Time(1), &ms), None, "2, 3 and 4 are alive and owe it");
        assert_eq!(tr.record(a, NodeId(2), Time(2), &ms), None);
        assert_eq!(tr.record(a, NodeId(3), Time(3), &ms), None);
        assert_eq!(tr.record(a, NodeId(4), Time(4), &ms), Some(Duration::from_micros(4)));

        ms.merge(member(5, MemberState::Dead));
        ms.merge(member(6, MemberState::Dead));
        for n in 1..=3 {
            assert_eq!(tr.record(b, NodeId(n), Time(10), &ms), None, "4 is alive and owes it");
        }
        // 5 refutes its death before 4 applies: it is owed again.
        ms.merge(Member { incarnation: 2, ..member(5, MemberState::Alive) });
        assert_eq!(tr.record(b, NodeId(4), Time(20), &ms), None, "5 is back");
        assert_eq!(tr.record(b, NodeId(5), Time(30), &ms), Some(Duration::from_micros(30)), "6 is dead");
    }
}
