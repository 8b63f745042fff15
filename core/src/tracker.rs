//! Completion tracking for purges this node originated: who was expected
//! to apply each one, who has, and how long each took.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::id::{NodeId, PurgeId};
use crate::member::Members;
use crate::time::Time;

#[derive(Debug, Clone)]
struct Tracked {
    accepted: Time,
    expected: BTreeSet<NodeId>,
    /// Node -> time from accept to the origin learning of its apply.
    applied: BTreeMap<NodeId, Duration>,
    completed: Option<Duration>,
}

/// A snapshot of one purge's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeStatus {
    pub id: PurgeId,
    pub accepted: Time,
    pub expected: usize,
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
    pub fn start(&mut self, id: PurgeId, now: Time, expected: BTreeSet<NodeId>) {
        self.by_id.insert(id, Tracked { accepted: now, expected, applied: BTreeMap::new(), completed: None });
        self.order.push_back(id);
    }

    pub fn is_tracked(&self, id: PurgeId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Records an apply; returns the completion time if this apply (or the
    /// membership view) just completed the purge.
    pub fn record(&mut self, id: PurgeId, node: NodeId, now: Time, members: &Members) -> Option<Duration> {
        let t = self.by_id.get_mut(&id)?;
        let lat = now.since(t.accepted);
        t.applied.entry(node).or_insert(lat);
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

    fn check(t: &mut Tracked, now: Time, members: &Members) -> Option<Duration> {
        if t.completed.is_some() {
            return None;
        }
        let waiting = t
            .expected
            .iter()
            .any(|n| !t.applied.contains_key(n) && members.get(*n).is_some_and(|m| m.state.is_reachable()));
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
        for n in t.expected.iter().filter(|n| !t.applied.contains_key(n)) {
            if members.get(*n).is_some_and(|m| m.state.is_reachable()) {
                pending.push(*n);
            } else {
                dead.push(*n);
            }
        }
        Some(PurgeStatus {
            id,
            accepted: t.accepted,
            expected: t.expected.len(),
            applied: t.applied.iter().map(|(n, d)| (*n, *d)).collect(),
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

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
