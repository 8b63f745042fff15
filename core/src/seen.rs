//! What this node has seen: per-stream watermarks for anti-entropy, the id
//! set that drops duplicates, and the retained purges it can serve to peers
//! that missed them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::id::{PurgeId, StreamId};
use crate::message::Watermark;
use crate::purge::Purge;
use crate::time::Time;

/// What digests read of a stream, kept apart from the rest so that the walks
/// over every stream (two per anti-entropy exchange) read one small
/// contiguous array instead of chasing a tree of large nodes.
#[derive(Debug, Clone, Copy)]
struct Head {
    stream: StreamId,
    /// Every seq in 1..=contiguous has been seen.
    contiguous: u64,
    /// Highest seq seen (or skipped to): max(contiguous, above).
    top: u64,
    /// Highest seq dropped from the log by retention: a peer behind this
    /// cannot catch up on this stream any more.
    pruned_through: u64,
    /// Index of the rest of the stream in `Seen::bodies`.
    body: u32,
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

/// Streams added since the sorted array was last merged stay in a short
/// unsorted list: a new stream (a new origin) would otherwise shift half
/// the array.
const FRESH_MAX: usize = 16;

/// Result of comparing a peer's digest with what we hold.
#[derive(Debug, Default)]
pub struct Gap {
    pub purges: Vec<Arc<Purge>>,
    pub expired: Vec<Watermark>,
}

#[derive(Debug, Default)]
pub struct Seen {
    ids: HashMap<PurgeId, StreamId>,
    /// Sorted by stream.
    heads: Vec<Head>,
    /// Not yet merged into `heads`, at most FRESH_MAX.
    fresh: Vec<Head>,
    bodies: Vec<Body>,
    retained: usize,
    /// At most the earliest time a log's first entry was seen: while it is
    /// within retention, pruning by age has nothing to do.
    first_seen_bound: Option<Time>,
    /// Some stream may have an empty log (a candidate to forget).
    maybe_empty: bool,
}

impl Seen {
    pub fn contains(&self, id: PurgeId) -> bool {
        self.ids.contains_key(&id)
    }

    fn head(&self, stream: StreamId) -> Option<&Head> {
        match self.heads.binary_search_by_key(&stream, |h| h.stream) {
            Ok(i) => Some(&self.heads[i]),
            Err(_) => self.fresh.iter().find(|h| h.stream == stream),
        }
    }

    /// Where a stream's head is, `(in fresh, index)`; added empty if new.
    fn locate_or_add(&mut self, stream: StreamId) -> (bool, usize) {
        if let Ok(i) = self.heads.binary_search_by_key(&stream, |h| h.stream) {
            return (false, i);
        }
        if let Some(i) = self.fresh.iter().position(|h| h.stream == stream) {
            return (true, i);
        }
        if self.fresh.len() >= FRESH_MAX {
            self.settle();
        }
        let body = self.bodies.len() as u32;
        self.bodies.push(Body::default());
        self.fresh.push(Head { stream, contiguous: 0, top: 0, pruned_through: 0, body });
        (true, self.fresh.len() - 1)
    }

    /// The stream's head and body, created empty if new.
    fn stream_mut(&mut self, stream: StreamId) -> (&mut Head, &mut Body) {
        let (in_fresh, i) = self.locate_or_add(stream);
        let head = if in_fresh { &mut self.fresh[i] } else { &mut self.heads[i] };
        let body = &mut self.bodies[head.body as usize];
        (head, body)
    }

    /// Merges the fresh streams into the sorted array (a sorted run plus
    /// a short tail: one merge pass).
    fn settle(&mut self) {
        if !self.fresh.is_empty() {
            self.heads.append(&mut self.fresh);
            self.heads.sort_by_key(|h| h.stream);
        }
    }

    /// Every stream's head in stream order; `f` returns false to stop.
    fn each_head(&self, mut f: impl FnMut(&Head) -> bool) {
        let mut fresh: Vec<&Head> = self.fresh.iter().collect();
        fresh.sort_by_key(|h| h.stream);
        let mut fresh = fresh.into_iter().peekable();
        for h in &self.heads {
            while let Some(x) = fresh.next_if(|x| x.stream < h.stream) {
                if !f(x) {
                    return;
                }
            }
            if !f(h) {
                return;
            }
        }
        for x in fresh {
            if !f(x) {
                return;
            }
        }
    }

    /// Records a purge; false if it was already seen (by id or position).
    pub fn insert(&mut self, now: Time, purge: &Arc<Purge>) -> bool {
        if self.ids.contains_key(&purge.id) {
            return false;
        }
        let (head, body) = self.stream_mut(purge.stream);
        let seq = purge.seq;
        if seq <= head.contiguous || body.above.contains(&seq) {
            // The stream may have just been created, empty.
            self.maybe_empty = true;
            return false;
        }
        body.above.insert(seq);
        while body.above.remove(&(head.contiguous + 1)) {
            head.contiguous += 1;
        }
        head.top = head.top.max(seq);
        body.last_seen = body.last_seen.max(now);
        let at = body.after(seq);
        body.log.insert(at, (now, Arc::clone(purge)));
        self.ids.insert(purge.id, purge.stream);
        self.retained += 1;
        self.first_seen_bound = Some(self.first_seen_bound.map_or(now, |t| t.min(now)));
        true
    }

    pub fn watermarks(&self) -> Vec<Watermark> {
        let mut out = Vec::with_capacity(self.heads.len() + self.fresh.len());
        self.each_head(|h| {
            out.push(Watermark { stream: h.stream, seq: h.contiguous });
            true
        });
        out
    }

    pub fn watermark(&self, stream: StreamId) -> u64 {
        self.head(stream).map_or(0, |h| h.contiguous)
    }

    /// Highest seq seen in a stream (the origin's own counter on restore).
    pub fn max_seq(&self, stream: StreamId) -> u64 {
        self.head(stream).map_or(0, |h| h.top)
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
        self.each_head(|h| {
            while at < theirs.len() && theirs[at].stream < h.stream {
                at += 1;
            }
            let their = match theirs.get(at) {
                Some(w) if w.stream == h.stream => w.seq,
                _ => 0,
            };
            if their < h.pruned_through {
                gap.expired.push(Watermark { stream: h.stream, seq: h.pruned_through });
            }
            // Usually the peer is level with us: skip the log (it holds
            // only seen seqs, all <= top).
            if h.top <= their {
                return true;
            }
            let body = &self.bodies[h.body as usize];
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
        let (head, body) = self.stream_mut(stream);
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
        let Some((_, p)) = self.bodies[h.body as usize].log.pop_front() else { return false };
        h.pruned_through = h.pruned_through.max(p.seq);
        self.ids.remove(&p.id);
        if self.bodies[h.body as usize].log.is_empty() {
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
        self.settle();
        let mut dropped = 0;
        // Age first; then, if still over the cap, oldest-first across streams.
        if by_age {
            for i in 0..self.heads.len() {
                while self.bodies[self.heads[i].body as usize].log.front().is_some_and(|(t, _)| *t < cutoff) {
                    if self.pop_first(i) {
                        dropped += 1;
                    }
                }
            }
        }
        let mut excess = over.saturating_sub(dropped);
        while excess > 0 {
            let oldest = (0..self.heads.len())
                .filter_map(|i| self.bodies[self.heads[i].body as usize].log.front().map(|(t, _)| (*t, i)))
                .min_by_key(|(t, i)| (*t, self.heads[*i].stream));
            let Some((_, i)) = oldest else { break };
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
        let bodies = &self.bodies;
        let empty = |h: &Head| {
            let b = &bodies[h.body as usize];
            b.log.is_empty() && b.above.is_empty()
        };
        self.maybe_empty = self.heads.iter().any(empty);
        let gone = |h: &Head| {
            let b = &bodies[h.body as usize];
            empty(h) && b.last_seen < before
        };
        if !self.heads.iter().any(gone) {
            return;
        }
        let mut old: Vec<Option<Body>> = std::mem::take(&mut self.bodies).into_iter().map(Some).collect();
        let mut kept = Vec::with_capacity(self.heads.len());
        for mut h in std::mem::take(&mut self.heads) {
            let Some(b) = old[h.body as usize].take() else { continue };
            if b.log.is_empty() && b.above.is_empty() && b.last_seen < before {
                continue;
            }
            h.body = self.bodies.len() as u32;
            self.bodies.push(b);
            kept.push(h);
        }
        self.heads = kept;
    }

    pub fn retained(&self) -> usize {
        self.retained
    }

    pub fn streams(&self) -> usize {
        self.heads.len() + self.fresh.len()
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
        assert_eq!(seen.max_seq(s), 2);
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
