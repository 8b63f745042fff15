//! What this node has seen: per-stream watermarks for anti-entropy, the id
//! set that drops duplicates, and the retained purges it can serve to peers
//! that missed them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::hash::{mix64, Keyed, KeyedMap};
use crate::id::{PurgeId, StreamId};
use crate::idset::IdSet;
use crate::message::Watermark;
use crate::purge::Purge;
use crate::time::Time;

/// What digests read of a stream, kept apart from the rest so that the walks
/// over every stream (two per anti-entropy exchange) read small arrays
/// instead of chasing a tree of large nodes.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    /// Every seq in 1..=contiguous has been seen.
    contiguous: u64,
    /// Highest seq seen (or skipped to): max(contiguous, above).
    top: u64,
    /// Highest seq dropped from the log by retention: a peer behind this
    /// cannot catch up on this stream any more.
    pruned_through: u64,
}

#[derive(Debug, Default)]
struct Body {
    /// Seen seqs above `contiguous` (arrived out of order).
    above: BTreeSet<u64>,
    /// Retained purges sorted by seq, with the time they were seen. A
    /// deque, not a map: purges mostly arrive in order, a stream often
    /// holds one or two, and a B-tree node per stream costs ~1 KB. The
    /// purge itself is shared with the message it came in.
    log: VecDeque<(Time, Arc<Purge>)>,
    last_seen: Time,
}

impl Body {
    /// Index of the first retained purge with a seq above `seq`.
    fn after(&self, seq: u64) -> usize {
        self.log.partition_point(|(_, p)| p.seq <= seq)
    }
}

/// Streams added since `order` was last sorted stay in a short unsorted
/// tail, merged when it fills or before a walk.
const FRESH_MAX: usize = 16;

/// Result of comparing a peer's digest with what we hold.
#[derive(Debug, Default)]
pub struct Gap {
    pub purges: Vec<Arc<Purge>>,
    pub expired: Vec<Watermark>,
}

/// Streams are numbered in order of arrival: `heads[i]` and `bodies[i]` are
/// stream i, `index` finds i by id, and `order` lists (id, i) sorted by id
/// for digests.
#[derive(Debug, Default)]
pub struct Seen {
    ids: IdSet,
    index: KeyedMap<StreamId, u32>,
    heads: Vec<Head>,
    bodies: Vec<Body>,
    /// Sorted by stream up to `sorted`, then at most FRESH_MAX new ones.
    order: Vec<(StreamId, u32)>,
    sorted: usize,
    retained: usize,
    /// At most the earliest time a log's first entry was seen: while it is
    /// within retention, pruning by age has nothing to do.
    first_seen_bound: Option<Time>,
    /// Some stream may have an empty log (a candidate to forget).
    maybe_empty: bool,
}

impl Seen {
    /// `key` keys the id table's hash; derive it from a private seed.
    pub fn with_key(key: u64) -> Seen {
        Seen { ids: IdSet::with_key(key), index: KeyedMap::with_hasher(Keyed::new(mix64(key))), ..Seen::default() }
    }

    pub fn contains(&self, id: PurgeId) -> bool {
        self.ids.contains(&id)
    }

    fn head(&self, stream: StreamId) -> Option<&Head> {
        self.index.get(&stream).map(|i| &self.heads[*i as usize])
    }

    /// The stream's number, added empty if new.
    fn number(&mut self, stream: StreamId) -> usize {
        if let Some(i) = self.index.get(&stream) {
            return *i as usize;
        }
        if self.order.len() - self.sorted >= FRESH_MAX {
            self.settle();
        }
        let i = self.heads.len();
        self.heads.push(Head::default());
        self.bodies.push(Body::default());
        self.index.insert(stream, i as u32);
        self.order.push((stream, i as u32));
        i
    }

    /// Sorts the new streams into `order` (a sorted run plus a short tail:
    /// one merge pass).
    fn settle(&mut self) {
        if self.sorted < self.order.len() {
            self.order.sort_by_key(|(s, _)| *s);
            self.sorted = self.order.len();
        }
    }

    /// Every stream in id order, with its number; `f` returns false to
    /// stop.
    fn each_stream(&self, mut f: impl FnMut(StreamId, usize) -> bool) {
        let mut fresh = self.order[self.sorted..].to_vec();
        fresh.sort_by_key(|(s, _)| *s);
        let mut fresh = fresh.into_iter().peekable();
        for &(s, i) in &self.order[..self.sorted] {
            while let Some((x, j)) = fresh.next_if(|(x, _)| *x < s) {
                if !f(x, j as usize) {
                    return;
                }
            }
            if !f(s, i as usize) {
                return;
            }
        }
        for (x, j) in fresh {
            if !f(x, j as usize) {
                return;
            }
        }
    }

    /// Records a purge; false if it was already seen (by id or position).
    pub fn insert(&mut self, now: Time, purge: &Arc<Purge>) -> bool {
        if self.ids.contains(&purge.id) {
            return false;
        }
        let i = self.number(purge.stream);
        let (head, body) = (&mut self.heads[i], &mut self.bodies[i]);
        let seq = purge.seq;
        if seq <= head.contiguous || body.above.contains(&seq) {
            // The stream may have just been created, empty.
            self.maybe_empty = true;
            return false;
        }
        if seq == head.contiguous + 1 && body.above.is_empty() {
            // In order, the common case: a B-tree insert and remove would
            // allocate and free a node for nothing.
            head.contiguous = seq;
        } else {
            body.above.insert(seq);
            while body.above.remove(&(head.contiguous + 1)) {
                head.contiguous += 1;
            }
        }
        head.top = head.top.max(seq);
        body.last_seen = body.last_seen.max(now);
        let at = body.after(seq);
        // Many streams only ever hold a purge or two (one per origin that
        // purged once): start at one slot, not the default four.
        if body.log.capacity() == 0 {
            body.log.reserve_exact(1);
        }
        body.log.insert(at, (now, Arc::clone(purge)));
        self.ids.insert(purge.id);
        self.retained += 1;
        self.first_seen_bound = Some(self.first_seen_bound.map_or(now, |t| t.min(now)));
        true
    }

    pub fn watermarks(&self) -> Vec<Watermark> {
        let mut out = Vec::with_capacity(self.heads.len());
        self.each_stream(|stream, i| {
            out.push(Watermark { stream, seq: self.heads[i].contiguous });
            true
        });
        out
    }

    pub fn watermark(&self, stream: StreamId) -> u64 {
        self.head(stream).map_or(0, |h| h.contiguous)
    }

    /// What the sender of `theirs` lacks, up to `limit` purges.
    pub fn gap(&self, theirs: &[Watermark], limit: usize) -> Gap {
        // Digests come sorted by stream (see `watermarks`), so a merge walk
        // replaces a hash map per digest; a peer's unsorted list is sorted
        // here first.
        let sorted;
        let theirs = if theirs.windows(2).all(|w| w[0].stream <= w[1].stream) {
            theirs
        } else {
            let mut v = theirs.to_vec();
            v.sort_by_key(|w| w.stream);
            sorted = v;
            &sorted[..]
        };
        let mut at = 0;
        let mut gap = Gap::default();
        self.each_stream(|stream, i| {
            let h = &self.heads[i];
            while at < theirs.len() && theirs[at].stream < stream {
                at += 1;
            }
            let their = match theirs.get(at) {
                Some(w) if w.stream == stream => w.seq,
                _ => 0,
            };
            if their < h.pruned_through {
                gap.expired.push(Watermark { stream, seq: h.pruned_through });
            }
            // Usually the peer is level with us: skip the log (it holds
            // only seen seqs, all <= top).
            if h.top <= their {
                return true;
            }
            let body = &self.bodies[i];
            for (_, p) in body.log.range(body.after(their)..) {
                if gap.purges.len() >= limit {
                    return false;
                }
                gap.purges.push(Arc::clone(p));
            }
            true
        });
        gap
    }

    /// After a flush, everything up to `seq` of a stream counts as seen:
    /// the index holds nothing those purges could still remove.
    pub fn skip_to(&mut self, stream: StreamId, seq: u64) -> bool {
        self.maybe_empty = true;
        let i = self.number(stream);
        let (head, body) = (&mut self.heads[i], &mut self.bodies[i]);
        if head.contiguous >= seq {
            return false;
        }
        head.contiguous = seq;
        body.above.retain(|s| *s > seq);
        while body.above.remove(&(head.contiguous + 1)) {
            head.contiguous += 1;
        }
        head.top = head.top.max(head.contiguous);
        head.pruned_through = head.pruned_through.max(seq);
        true
    }

    /// Drops the first purge of a stream's log.
    fn pop_first(&mut self, i: usize) -> bool {
        let h = &mut self.heads[i];
        let Some((_, p)) = self.bodies[i].log.pop_front() else { return false };
        h.pruned_through = h.pruned_through.max(p.seq);
        self.ids.remove(&p.id);
        if self.bodies[i].log.is_empty() {
            self.maybe_empty = true;
        }
        true
    }

    /// Drops purges seen before `now - keep`, and the oldest beyond `max`.
    /// Returns how many were dropped.
    pub fn prune(&mut self, now: Time, keep: Duration, max: usize) -> usize {
        let cutoff = now - keep;
        let forget = now - keep - keep;
        let by_age = self.first_seen_bound.is_some_and(|t| t < cutoff);
        let over = self.retained.saturating_sub(max);
        // Nothing old, nothing over the cap, no empty stream: skip the walks
        // (the usual case, every anti-entropy round).
        if !by_age && over == 0 && !self.maybe_empty {
            return 0;
        }
        let mut dropped = 0;
        // Age first; then, if still over the cap, oldest-first across streams.
        if by_age {
            for i in 0..self.heads.len() {
                while self.bodies[i].log.front().is_some_and(|(t, _)| *t < cutoff) {
                    if self.pop_first(i) {
                        dropped += 1;
                    }
                }
            }
        }
        let mut excess = over.saturating_sub(dropped);
        while excess > 0 {
            let oldest = self
                .order
                .iter()
                .filter_map(|(s, i)| self.bodies[*i as usize].log.front().map(|(t, _)| (*t, *s, *i as usize)))
                .min();
            let Some((_, _, i)) = oldest else { break };
            if self.pop_first(i) {
                dropped += 1;
                excess -= 1;
            }
        }
        self.first_seen_bound = self.bodies.iter().filter_map(|b| b.log.front().map(|(t, _)| *t)).min();
        // A stream with nothing left to serve is forgotten once it has been
        // quiet for twice the retention: by then every peer has pruned it
        // too, so no old purge of it can come back and be applied twice.
        // Forgetting keeps digests from growing with every restart.
        if self.maybe_empty {
            self.forget(forget);
        }
        self.retained -= dropped.min(self.retained);
        dropped
    }

    fn forget(&mut self, before: Time) {
        let empty = |b: &Body| b.log.is_empty() && b.above.is_empty();
        self.maybe_empty = self.bodies.iter().any(empty);
        let gone = |b: &Body| empty(b) && b.last_seen < before;
        if !self.bodies.iter().any(gone) {
            return;
        }
        // Renumber the streams kept, in id order.
        self.settle();
        let heads = std::mem::take(&mut self.heads);
        let mut bodies: Vec<Option<Body>> = std::mem::take(&mut self.bodies).into_iter().map(Some).collect();
        let order = std::mem::take(&mut self.order);
        self.index.clear();
        for (stream, i) in order {
            let Some(b) = bodies[i as usize].take() else { continue };
            if gone(&b) {
                continue;
            }
            let n = self.heads.len() as u32;
            self.heads.push(heads[i as usize]);
            self.bodies.push(b);
            self.index.insert(stream, n);
            self.order.push((stream, n));
        }
        self.sorted = self.order.len();
    }

    pub fn retained(&self) -> usize {
        self.retained
    }

    #[cfg(test)]
    pub fn streams(&self) -> usize {
        self.heads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::purge::Mode;
    use crate::selector::Selector;

    fn p(stream: StreamId, seq: u64) -> Arc<Purge> {
        Arc::new(Purge {
            id: PurgeId(u128::from(stream.origin.0) << 64 | u128::from(seq)),
            stream,
            seq,
            selectors: vec![Selector::Everything],
            mode: Mode::Hard,
            issued_at_ms: 0,
            zone: String::new(),
            requested_by: String::new(),
        })
    }

    #[test]
    fn watermark_advances_only_over_contiguous_seqs() {
        let s = StreamId { origin: NodeId(1), epoch: 1 };
        let mut seen = Seen::default();
        assert!(seen.insert(Time(0), &p(s, 2)));
        assert_eq!(seen.watermark(s), 0);
        assert!(seen.insert(Time(0), &p(s, 1)));
        assert_eq!(seen.watermark(s), 2);
        assert!(!seen.insert(Time(0), &p(s, 1)), "duplicate must be refused");
    }

    #[test]
    fn gap_lists_what_the_peer_lacks_and_what_expired() {
        let s = StreamId { origin: NodeId(1), epoch: 1 };
        let mut seen = Seen::default();
        for seq in 1..=5 {
            seen.insert(Time(seq * 1_000_000), &p(s, seq));
        }
        let g = seen.gap(&[Watermark { stream: s, seq: 3 }], 10);
        assert_eq!(g.purges.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(g.expired.is_empty());
        // Keep only what was seen in the last 2.5 s at t = 5 s: seqs 3..5.
        let dropped = seen.prune(Time(5_000_000), Duration::from_millis(2500), 100);
        assert_eq!(dropped, 2);
        let g = seen.gap(&[Watermark { stream: s, seq: 1 }], 10);
        assert_eq!(g.expired, vec![Watermark { stream: s, seq: 2 }]);
        assert_eq!(g.purges.len(), 3);
        let g = seen.gap(&[], 2);
        assert_eq!(g.purges.len(), 2, "limit respected");
    }

    #[test]
    fn prune_caps_the_count_oldest_first() {
        let a = StreamId { origin: NodeId(1), epoch: 1 };
        let b = StreamId { origin: NodeId(2), epoch: 1 };
        let mut seen = Seen::default();
        seen.insert(Time(1), &p(a, 1));
        seen.insert(Time(2), &p(b, 1));
        seen.insert(Time(3), &p(a, 2));
        assert_eq!(seen.prune(Time(4), Duration::from_secs(10), 1), 2);
        assert_eq!(seen.retained(), 1);
        assert!(seen.contains(p(a, 2).id));
        assert!(!seen.contains(p(b, 1).id));
    }

    #[test]
    fn skip_to_after_flush_moves_the_watermark() {
        let s = StreamId { origin: NodeId(1), epoch: 1 };
        let mut seen = Seen::default();
        seen.insert(Time(0), &p(s, 7));
        assert!(seen.skip_to(s, 6));
        assert_eq!(seen.watermark(s), 7);
        assert!(!seen.skip_to(s, 3));
    }

    #[test]
    fn many_streams_stay_in_stream_order_across_merges() {
        let mut seen = Seen::default();
        // Scrambled origins, more than one batch of fresh streams.
        let origins: Vec<u64> = (0..40u64).map(|i| (i * 17) % 41 + 1).collect();
        for (k, o) in origins.iter().enumerate() {
            let s = StreamId { origin: NodeId(*o), epoch: 1 };
            for seq in 1..=(*o % 3 + 1) {
                assert!(seen.insert(Time(k as u64), &p(s, seq)));
            }
        }
        assert_eq!(seen.streams(), 40);
        let w = seen.watermarks();
        assert!(w.windows(2).all(|x| x[0].stream < x[1].stream));
        assert!(w.iter().all(|x| x.seq == x.stream.origin.0 % 3 + 1));
        let g = seen.gap(&[], 1000);
        assert_eq!(g.purges.len(), seen.retained());
        assert!(g.purges.windows(2).all(|x| (x[0].stream, x[0].seq) < (x[1].stream, x[1].seq)));
        // A peer level with us gets nothing.
        assert!(seen.gap(&w, 1000).purges.is_empty());
    }

    #[test]
    fn quiet_empty_streams_are_forgotten_and_the_rest_kept() {
        let keep = Duration::from_secs(10);
        let mut seen = Seen::default();
        let a = StreamId { origin: NodeId(1), epoch: 1 };
        let b = StreamId { origin: NodeId(2), epoch: 1 };
        let c = StreamId { origin: NodeId(3), epoch: 1 };
        seen.insert(Time(0), &p(a, 1));
        assert!(seen.skip_to(b, 4));
        assert_eq!(seen.prune(Time(1_000_000), keep, 100), 0);
        assert_eq!(seen.streams(), 2, "b is empty but not quiet for long enough yet");
        seen.insert(Time(12_000_000), &p(a, 2));
        seen.insert(Time(25_000_000), &p(c, 1));
        // At 25 s: a's purges are older than 10 s, but a was heard from 13 s
        // ago; b has been quiet for 25 s.
        assert_eq!(seen.prune(Time(25_000_000), keep, 100), 2);
        assert_eq!(seen.streams(), 2);
        assert_eq!(seen.watermark(b), 0, "b forgotten");
        assert_eq!(seen.watermark(a), 2);
        assert_eq!(seen.gap(&[], 10).purges.len(), 1);
        assert_eq!(seen.gap(&[], 10).expired, vec![Watermark { stream: a, seq: 2 }]);
        assert!(seen.contains(p(c, 1).id) && !seen.contains(p(a, 1).id));
    }
}
