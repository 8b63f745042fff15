//! Completion tracking for purges this node originated: who was expected
//! to apply each one, who has, and how long each took.
//!
//! A member tells the origin twice that it has a purge: by an ack when it
//! applies it, and by every anti-entropy digest it sends the origin
//! afterwards (its watermark for the origin's stream covers the purge's
//! seq). Acks are fast; digests repair a lost ack, or one a member never
//! sent because it had applied the purge just before a crash.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
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
    /// Sorted, no duplicates; shared with the purges before it while the
    /// reachable members stay the same (at 1,000 purges/s over 3,300
    /// members, a copy each would be 2.6 GB of the default 100,000
    /// tracked purges).
    expected: Arc<[NodeId]>,
    /// Per expected member: microseconds from accept to the origin
    /// learning of its apply ([`NOT_DONE`] until then); four bytes
    /// where an `Option<Duration>` took sixteen.
    done: Vec<u32>,
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

/// A `Tracked::done` slot of a member that has not applied yet.
const NOT_DONE: u32 = u32::MAX;

/// Saturates at 71 minutes, past `track_for`'s default of an hour.
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
}

#[derive(Debug, Default)]
pub struct Tracker {
    by_id: BTreeMap<PurgeId, Tracked>,
    /// The expected set of the last purge started, to share with the next.
    last_expected: Option<Arc<[NodeId]>>,
    /// In origination order, which is seq order.
    order: VecDeque<(u64, PurgeId)>,
    /// Per member, the highest watermark of this run's stream already
    /// credited (see [`Tracker::covered`]).
    credited: BTreeMap<NodeId, u64>,
    /// Where the search for a member owing acks resumes (a seq).
    cursor: u64,
}

/// How many tracked purges one call of [`Tracker::owing`] looks at.
const OWING_SCAN: usize = 32;

impl Tracker {
    /// `expected`: the members that should apply it, in any order. `seq`
    /// grows with every call (one stream per run).
    pub fn start(&mut self, id: PurgeId, seq: u64, now: Time, mut expected: Vec<NodeId>) {
        expected.sort_unstable();
        expected.dedup();
        let expected = match &self.last_expected {
            Some(last) if **last == *expected => last.clone(),
            _ => {
                let shared: Arc<[NodeId]> = expected.into();
                self.last_expected = Some(shared.clone());
                shared
            }
        };
        let done = vec![NOT_DONE; expected.len()];
        let left = expected.len();
        let t = Tracked { accepted: now, expected, done, left, rest: None, extra: BTreeMap::new(), completed: None };
        self.by_id.insert(id, t);
        self.order.push_back((seq, id));
    }

    /// `node`'s digest says it has every purge of this run's stream up to
    /// `seq`: records an apply by it of each tracked one it had not been
    /// credited with yet. Returns those this completed.
    pub fn covered(&mut self, node: NodeId, seq: u64, now: Time, members: &Members) -> Vec<(PurgeId, Duration)> {
        let from = self.credited.get(&node).copied().unwrap_or(0);
        if seq <= from {
            return Vec::new();
        }
        self.credited.insert(node, seq);
        let start = self.order.partition_point(|(s, _)| *s <= from);
        let ids: Vec<PurgeId> = self.order.range(start..).take_while(|(s, _)| *s <= seq).map(|(_, id)| *id).collect();
        ids.into_iter().filter_map(|id| self.record(id, node, now, members).map(|d| (id, d))).collect()
    }

    /// A reachable member that owes an apply of a purge accepted at least
    /// `grace` ago, if one is found among the next few tracked purges: the
    /// origin asks it for a digest. The search resumes where it stopped, so
    /// purges waiting only on dead members do not hide the others.
    pub fn owing(&mut self, now: Time, grace: Duration, me: NodeId, members: &Members) -> Option<NodeId> {
        let start = self.order.partition_point(|(s, _)| *s <= self.cursor);
        let n = self.order.len();
        for k in 0..OWING_SCAN.min(n) {
            let (seq, id) = self.order[(start + k) % n];
            let Some(t) = self.by_id.get(&id) else { continue };
            if now.since(t.accepted) < grace {
                // Everything after it is younger: start over next time.
                self.cursor = 0;
                return None;
            }
            self.cursor = seq;
            if t.left == 0 {
                continue;
            }
            let owed = t.expected.iter().zip(&t.done).filter(|(_, d)| **d == NOT_DONE).map(|(n, _)| *n);
            let mut reachable = owed.filter(|n| *n != me && members.get(*n).is_some_and(|m| m.state.is_reachable()));
            if let Some(n) = reachable.next() {
                return Some(n);
            }
        }
        None
    }

    /// Records an apply; returns the completion time if this apply (or the
    /// membership view) just completed the purge.
    pub fn record(&mut self, id: PurgeId, node: NodeId, now: Time, members: &Members) -> Option<Duration> {
        self.record_all(id, &[node], now, members)
    }

    /// Records applies of one purge by several members (a relay's batch)
    /// with one lookup of the purge: an origin of a world-wide cluster
    /// records thousands per purge (`core/benches/acks.rs`).
    pub fn record_all(&mut self, id: PurgeId, nodes: &[NodeId], now: Time, members: &Members) -> Option<Duration> {
        let t = self.by_id.get_mut(&id)?;
        let lat = now.since(t.accepted);
        for node in nodes {
            match t.expected.binary_search(node) {
                Ok(i) => {
                    if t.done[i] == NOT_DONE {
                        t.done[i] = micros(lat);
                        t.left -= 1;
                    }
                }
                Err(_) => {
                    t.extra.entry(*node).or_insert(lat);
                }
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
        let rest = t
            .rest
            .get_or_insert_with(|| (0..t.done.len() as u32).filter(|i| t.done[*i as usize] == NOT_DONE).collect());
        rest.retain(|i| t.done[*i as usize] == NOT_DONE);
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
            if *done != NOT_DONE {
                applied.push((*n, Duration::from_micros(u64::from(*done))));
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
        while let Some((_, id)) = self.order.front().copied() {
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

    /// Members 1..=n, all alive.
    fn alive(n: u64) -> Members {
        let mut ms = Members::default();
        for id in 1..=n {
            ms.merge(member(id, MemberState::Alive));
        }
        ms
    }

    #[test]
    fn purges_with_the_same_members_share_one_expected_set_and_batches_record_at_once() {
        let ms = alive(3);
        let mut tr = Tracker::default();
        let all = vec![NodeId(2), NodeId(1), NodeId(3)];
        tr.start(PurgeId(1), 1, Time(0), all.clone());
        tr.start(PurgeId(2), 2, Time(0), all.clone());
        tr.start(PurgeId(3), 3, Time(0), vec![NodeId(1), NodeId(2)]);
        let set = |id| tr.by_id[&PurgeId(id)].expected.clone();
        assert!(Arc::ptr_eq(&set(1), &set(2)), "one copy for the same members");
        assert!(!Arc::ptr_eq(&set(2), &set(3)));
        assert_eq!(&*set(1), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(tr.record_all(PurgeId(2), &[NodeId(3), NodeId(1)], Time(5), &ms), None);
        assert_eq!(tr.record_all(PurgeId(2), &[NodeId(2), NodeId(9)], Time(7), &ms), Some(Duration::from_micros(7)));
        let st = tr.status(PurgeId(2), &ms).unwrap();
        let us = Duration::from_micros;
        assert_eq!(st.applied, vec![(NodeId(1), us(5)), (NodeId(2), us(7)), (NodeId(3), us(5)), (NodeId(9), us(7))]);
        assert!(tr.status(PurgeId(1), &ms).unwrap().applied.is_empty(), "shared members, separate progress");
        // Past u32 microseconds (71 minutes) a time saturates, it does not wrap.
        tr.record(PurgeId(1), NodeId(1), Time(5_000_000_000), &ms);
        let late = tr.status(PurgeId(1), &ms).unwrap().applied[0].1;
        assert_eq!(late, us(u64::from(u32::MAX - 1)));
    }

    #[test]
    fn completes_when_every_reachable_expected_member_applied() {
        let mut ms = alive(4);
        let mut tr = Tracker::default();
        let id = PurgeId(7);
        tr.start(id, 1, Time(0), vec![NodeId(3), NodeId(1), NodeId(2), NodeId(1)]);
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
        tr.start(a, 1, Time(0), (1..=4).map(NodeId).collect());
        tr.start(b, 2, Time(0), (1..=6).map(NodeId).collect());
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

#[cfg(test)]
mod repair {
    //! Completion that does not hang on a lost or never-sent ack.

    use std::time::Duration;

    use super::*;
    use crate::engine::{Engine, Event, Output};
    use crate::member::{Member, MemberState, Profile};
    use crate::message::Message;
    use crate::purge::Mode;
    use crate::selector::Selector;
    use crate::Config;

    /// A test network's member (`core::testing`), in one PoP.
    fn member(i: u64) -> Member {
        crate::testing::member(i as usize, 0, 0)
    }

    fn engine(cfg: Config, i: u64, epoch: u64, peers: &[Member]) -> Engine {
        let mut e = Engine::new(cfg, member(i), epoch, i, Time::ZERO);
        for p in peers {
            e.add_member(p.clone());
        }
        e
    }

    fn drain(e: &mut Engine) -> Vec<Output> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    fn completed(outs: &[Output]) -> Vec<PurgeId> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Event(Event::PurgeComplete { id, .. }) => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn digests_credit_each_purge_once_from_where_the_last_one_stopped() {
        let mut ms = Members::default();
        for id in 1..=3 {
            ms.merge(Member { incarnation: 1, ..Member::new(NodeId(id), Profile::default()) });
        }
        let mut tr = Tracker::default();
        for seq in 1..=4 {
            tr.start(PurgeId(seq.into()), seq, Time(0), vec![NodeId(1), NodeId(2)]);
        }
        tr.record(PurgeId(1), NodeId(1), Time(1), &ms);
        assert_eq!(tr.covered(NodeId(2), 2, Time(5), &ms), vec![(PurgeId(1), Duration::from_micros(5))]);
        assert_eq!(tr.covered(NodeId(1), 3, Time(6), &ms), vec![(PurgeId(2), Duration::from_micros(6))]);
        assert_eq!(tr.covered(NodeId(1), 2, Time(7), &ms), vec![], "an older digest changes nothing");
        assert_eq!(tr.covered(NodeId(2), 4, Time(8), &ms).len(), 1, "3 completes, 4 still owed by 1");
        assert_eq!(tr.status(PurgeId(4), &ms).unwrap().pending, vec![NodeId(1)]);
        // 3 was never expected: its digest shows up as an apply, nothing more.
        tr.covered(NodeId(3), 4, Time(9), &ms);
        assert!(tr.status(PurgeId(4), &ms).unwrap().applied.iter().any(|(n, _)| *n == NodeId(3)));
    }

    #[test]
    fn owing_finds_a_reachable_debtor_past_purges_that_wait_on_the_dead() {
        let mut ms = Members::default();
        for id in 1..=3 {
            ms.merge(Member { incarnation: 1, ..Member::new(NodeId(id), Profile::default()) });
        }
        ms.merge(Member { incarnation: 1, state: MemberState::Dead, ..Member::new(NodeId(4), Profile::default()) });
        let mut tr = Tracker::default();
        let grace = Duration::from_micros(100);
        // Purges waiting only on the dead member 4 (and on me, 1), then one
        // owed by 3.
        for seq in 1..=40 {
            tr.start(PurgeId(seq.into()), seq, Time(0), vec![NodeId(1), NodeId(4)]);
        }
        tr.start(PurgeId(41), 41, Time(0), vec![NodeId(1), NodeId(3)]);
        assert_eq!(tr.owing(Time(50), grace, NodeId(1), &ms), None, "too young to chase");
        let found: Vec<Option<NodeId>> = (0..3).map(|_| tr.owing(Time(200), grace, NodeId(1), &ms)).collect();
        assert!(found.contains(&Some(NodeId(3))), "{found:?}");
        tr.record(PurgeId(41), NodeId(3), Time(300), &ms);
        assert!((0..3).all(|_| tr.owing(Time(400), grace, NodeId(1), &ms).is_none()));
    }

    /// The case: a member applied a purge, crashed before its ack
    /// left, restarted with the purge restored from its store and so never
    /// acks it. The origin chases it, and the restarted member's digest
    /// completes the purge.
    #[test]
    fn a_purge_applied_before_a_crash_completes_from_the_restarted_members_digest() {
        let (o, k) = (member(1), member(2));
        // No random anti-entropy peers: only the chase sends digests.
        let mut origin = engine(Config { ae_peers: 0, ..Config::default() }, 1, 1, std::slice::from_ref(&k));
        let purge = origin.originate(Time::ZERO, vec![Selector::url("https://a.example/x").unwrap()], Mode::Hard, 0);
        let purge = purge.unwrap();
        let (mut pushed, mut ticket) = (None, None);
        for out in drain(&mut origin) {
            match out {
                Output::Send { to, msg: Message::Push { purge, .. } } if to == k.id => pushed = Some(purge),
                Output::Apply { ticket: t, .. } => ticket = Some(t),
                _ => {}
            }
        }
        let pushed = pushed.expect("pushed to k");
        origin.applied(Time::ZERO, ticket.expect("the origin applies its own purge"));
        assert_eq!(origin.status(purge.id).unwrap().pending, vec![k.id]);

        // k applies it (to its store), then dies before acking; it comes
        // back as a new process that restores the store.
        let mut k2 = engine(Config::default(), 2, 2, std::slice::from_ref(&o));
        k2.restore(Time::ZERO, pushed);

        // Two anti-entropy periods later the origin asks k for a digest.
        let later = Time::ZERO + Config::default().ae_interval * 5;
        origin.handle_timeout(later);
        let asked = drain(&mut origin)
            .into_iter()
            .any(|out| matches!(out, Output::Send { to, msg: Message::Digest { reply: true, .. } } if to == k.id));
        assert!(asked, "the origin chases the member that owes an ack");
        let reply = Message::Digest { watermarks: k2.watermarks(), reply: false };
        origin.handle_message(later, k.id, reply);
        assert_eq!(completed(&drain(&mut origin)), vec![purge.id]);
        let st = origin.status(purge.id).unwrap();
        assert!(st.pending.is_empty() && st.completed.is_some(), "{st:?}");
    }

    /// A digest credits only durable applies: an apply still queued (a
    /// held write on a full disk) keeps its member pending.
    #[test]
    fn a_queued_apply_is_not_credited_until_its_ticket_comes_back() {
        let (o, k) = (member(1), member(2));
        let quiet = Config { ae_peers: 0, ..Config::default() };
        let mut origin = engine(quiet.clone(), 1, 1, std::slice::from_ref(&k));
        let mut node = engine(quiet, 2, 1, std::slice::from_ref(&o));

        let purge = origin.originate(Time::ZERO, vec![Selector::url("https://a.example/y").unwrap()], Mode::Hard, 0);
        let purge = purge.unwrap();
        let mut push = None;
        for out in drain(&mut origin) {
            match out {
                Output::Send { to, msg } if to == k.id => push = Some(msg),
                Output::Apply { ticket, .. } => origin.applied(Time::ZERO, ticket),
                _ => {}
            }
        }
        node.handle_message(Time::ZERO, o.id, push.expect("pushed to k"));
        let ticket = drain(&mut node).into_iter().find_map(|out| match out {
            Output::Apply { ticket, .. } => Some(ticket),
            _ => None,
        });
        let ticket = ticket.expect("k is asked to apply");

        // The origin asks k for its digest while k's write is still held.
        let ask = Message::Digest { watermarks: origin.watermarks(), reply: true };
        node.handle_message(Time::ZERO, o.id, ask);
        for out in drain(&mut node) {
            if let Output::Send { to, msg } = out {
                assert_eq!(to, o.id);
                origin.handle_message(Time::ZERO, k.id, msg);
            }
        }
        let st = origin.status(purge.id).unwrap();
        assert_eq!(st.pending, vec![k.id], "a digest must not credit a queued apply: {st:?}");

        // Once durable, k acks (its own acks to an origin of its PoP go in
        // batches, `ack_flush` after the first) and the purge completes.
        node.applied(Time::ZERO, ticket);
        node.handle_timeout(Time::ZERO + Config::default().ack_flush);
        for out in drain(&mut node) {
            if let Output::Send { msg, .. } = out {
                origin.handle_message(Time::ZERO, k.id, msg);
            }
        }
        assert!(origin.status(purge.id).unwrap().completed.is_some());
    }
}
