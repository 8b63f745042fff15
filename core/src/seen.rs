//! What this node has seen: per-stream watermarks for anti-entropy, the id
//! set that drops duplicates, and the retained purges it can serve to peers
//! that missed them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::id::{PurgeId, StreamId};
use crate::message::Watermark;
use crate::purge::Purge;
use crate::time::Time;

#[derive(Debug, Default)]
struct Stream {
    /// Every seq in 1..=contiguous has been seen.
    contiguous: u64,
    /// Seen seqs above `contiguous` (arrived out of order).
    above: BTreeSet<u64>,
    /// Retained purges sorted by seq, with the time they were seen. A
    /// deque, not a map: purges mostly arrive in order, a stream often
    /// holds one or two, and a B-tree node per stream costs ~1 KB. The
    /// purge itself is shared with the message it came in.
    log: VecDeque<(Time, Arc<Purge>)>,
    /// Highest seq dropped from `log` by retention: a peer behind this
    /// cannot catch up on this stream any more.
    pruned_through: u64,
    last_seen: Time,
}

impl Stream {
    fn mark(&mut self, seq: u64) {
        if seq <= self.contiguous {
            return;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }

    fn has(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }

    /// Index of the first retained purge with a seq above `seq`.
    fn after(&self, seq: u64) -> usize {
        self.log.partition_point(|(_, p)| p.seq <= seq)
    }

    fn pop_oldest(&mut self) -> Option<Arc<Purge>> {
        let (_, p) = self.log.pop_front()?;
        self.pruned_through = self.pruned_through.max(p.seq);
        Some(p)
    }
}

/// Result of comparing a peer's digest with what we hold.
#[derive(Debug, Default)]
pub struct Gap {
    pub purges: Vec<Arc<Purge>>,
    pub expired: Vec<Watermark>,
}

#[derive(Debug, Default)]
pub struct Seen {
    ids: HashMap<PurgeId, StreamId>,
    streams: BTreeMap<StreamId, Stream>,
    retained: usize,
}

impl Seen {
    pub fn contains(&self, id: PurgeId) -> bool {
        self.ids.contains_key(&id)
    }

    /// Records a purge; false if it was already seen (by id or position).
    pub fn insert(&mut self, now: Time, purge: &Arc<Purge>) -> bool {
        if self.ids.contains_key(&purge.id) {
            return false;
        }
        let st = self.streams.entry(purge.stream).or_default();
        if st.has(purge.seq) {
            return false;
        }
        st.mark(purge.seq);
        st.last_seen = st.last_seen.max(now);
        let at = st.after(purge.seq);
        st.log.insert(at, (now, Arc::clone(purge)));
        self.ids.insert(purge.id, purge.stream);
        self.retained += 1;
        true
    }

    pub fn watermarks(&self) -> Vec<Watermark> {
        self.streams.iter().map(|(s, st)| Watermark { stream: *s, seq: st.contiguous }).collect()
    }

    pub fn watermark(&self, stream: StreamId) -> u64 {
        self.streams.get(&stream).map_or(0, |s| s.contiguous)
    }

    /// Highest seq seen in a stream (the origin's own counter on restore).
    pub fn max_seq(&self, stream: StreamId) -> u64 {
        self.streams.get(&stream).map_or(0, |s| s.above.last().copied().unwrap_or(s.contiguous))
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
        for (sid, st) in &self.streams {
            while at < theirs.len() && theirs[at].stream < *sid {
                at += 1;
            }
            let their = match theirs.get(at) {
                Some(w) if w.stream == *sid => w.seq,
                _ => 0,
            };
            if their < st.pruned_through {
                gap.expired.push(Watermark { stream: *sid, seq: st.pruned_through });
            }
            // Usually the peer is level with us: skip the range search
            // (the log holds only seen seqs, all <= the highest seen).
            if st.above.last().map_or(st.contiguous, |s| (*s).max(st.contiguous)) <= their {
                continue;
            }
            for (_, p) in st.log.range(st.after(their)..) {
                if gap.purges.len() >= limit {
                    return gap;
                }
                gap.purges.push(Arc::clone(p));
            }
        }
        gap
    }

    /// After a flush, everything up to `seq` of a stream counts as seen:
    /// the index holds nothing those purges could still remove.
    pub fn skip_to(&mut self, stream: StreamId, seq: u64) -> bool {
        let st = self.streams.entry(stream).or_default();
        if st.contiguous >= seq {
            return false;
        }
        st.contiguous = seq;
        st.above.retain(|s| *s > seq);
        while st.above.remove(&(st.contiguous + 1)) {
            st.contiguous += 1;
        }
        st.pruned_through = st.pruned_through.max(seq);
        true
    }

    /// Drops purges seen before `now - keep`, and the oldest beyond `max`.
    /// Returns how many were dropped.
    pub fn prune(&mut self, now: Time, keep: Duration, max: usize) -> usize {
        let cutoff = now - keep;
        let mut dropped = 0;
        let over = self.retained.saturating_sub(max);
        // Age first; then, if still over the cap, oldest-first across streams.
        for st in self.streams.values_mut() {
            while st.log.front().is_some_and(|(t, _)| *t < cutoff) {
                if let Some(p) = st.pop_oldest() {
                    self.ids.remove(&p.id);
                    dropped += 1;
                }
            }
        }
        let mut excess = over.saturating_sub(dropped);
        while excess > 0 {
            let oldest = self.streams.iter().filter_map(|(sid, st)| st.log.front().map(|(t, _)| (*t, *sid))).min();
            let Some((_, sid)) = oldest else { break };
            let Some(st) = self.streams.get_mut(&sid) else { break };
            if let Some(p) = st.pop_oldest() {
                self.ids.remove(&p.id);
                dropped += 1;
                excess -= 1;
            }
        }
        // A stream with nothing left to serve is forgotten once it has been
        // quiet for twice the retention: by then every peer has pruned it
        // too, so no old purge of it can come back and be applied twice.
        // Forgetting keeps digests from growing with every restart.
        let forget = now - keep - keep;
        self.streams.retain(|_, st| !st.log.is_empty() || !st.above.is_empty() || st.last_seen >= forget);
        self.retained -= dropped.min(self.retained);
        dropped
    }

    pub fn retained(&self) -> usize {
        self.retained
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
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
}
