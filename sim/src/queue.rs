//! The event queue: a calendar of fixed-width time buckets in a ring, with
//! a heap only for the bucket being drained and for events beyond the
//! ring's horizon. Pops in exactly (time, insertion order), like one big
//! binary heap, but each sift touches a few thousand entries instead of a
//! million.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use purgecast_core::Time;

/// Ordered by time then sequence (unique), so the payload is never
/// compared: it can be a whole message, which saves parking it elsewhere
/// and a cache miss to fetch it.
struct Item<T> {
    /// Microseconds.
    at: u64,
    /// Insertion order.
    seq: u64,
    v: T,
}

impl<T> PartialEq for Item<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Item<T> {}

impl<T> PartialOrd for Item<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Item<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Queue<T> {
    width: u64,
    ring: Vec<Vec<Item<T>>>,
    /// Index (time / width) of the bucket being drained.
    cursor: u64,
    cur: BinaryHeap<Reverse<Item<T>>>,
    overflow: BinaryHeap<Reverse<Item<T>>>,
    in_ring: usize,
    seq: u64,
    /// Emptied buckets' allocations, handed to buckets that fill next.
    spare: Vec<Vec<Item<T>>>,
}

impl<T> Queue<T> {
    /// `width_us` per bucket, `buckets` in the ring (the horizon is their
    /// product; later events wait in an overflow heap).
    pub fn new(width_us: u64, buckets: usize) -> Queue<T> {
        Queue {
            width: width_us.max(1),
            ring: (0..buckets.max(2)).map(|_| Vec::new()).collect(),
            cursor: 0,
            cur: BinaryHeap::new(),
            overflow: BinaryHeap::new(),
            spare: Vec::new(),
            in_ring: 0,
            seq: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cur.is_empty() && self.in_ring == 0 && self.overflow.is_empty()
    }

    fn horizon(&self) -> u64 {
        self.cursor + self.ring.len() as u64
    }

    /// Events in the past are delivered next, as if scheduled now.
    pub fn push(&mut self, at: Time, v: T) {
        self.seq += 1;
        let item = Item { at: at.as_micros(), seq: self.seq, v };
        let b = item.at / self.width;
        if b <= self.cursor {
            self.cur.push(Reverse(item));
        } else if b < self.horizon() {
            self.bucket(b).push(item);
            self.in_ring += 1;
        } else {
            self.overflow.push(Reverse(item));
        }
    }

    pub fn pop(&mut self) -> Option<(Time, T)> {
        // Bounded: each turn moves the cursor forward by at least one bucket
        // or returns; the cursor never passes the last event.
        loop {
            if let Some(Reverse(Item { at, v, .. })) = self.cur.pop() {
                return Some((Time(at), v));
            }
            if self.in_ring == 0 {
                let Reverse(first) = self.overflow.peek()?;
                self.cursor = first.at / self.width;
            } else {
                self.cursor += 1;
            }
            self.pull_overflow();
            let n = self.ring.len() as u64;
            // A bucket that kept its peak allocation would hold the
            // busiest moment's worth of events for every slot of the ring:
            // the allocation goes to the spares, to be reused by a bucket
            // filling up now.
            let mut bucket = std::mem::take(&mut self.ring[(self.cursor % n) as usize]);
            self.in_ring -= bucket.len();
            self.cur.extend(bucket.drain(..).map(Reverse));
            if bucket.capacity() > 0 {
                self.spare.push(bucket);
            }
        }
    }

    fn bucket(&mut self, b: u64) -> &mut Vec<Item<T>> {
        let n = self.ring.len() as u64;
        let slot = &mut self.ring[(b % n) as usize];
        if slot.capacity() == 0 {
            if let Some(v) = self.spare.pop() {
                *slot = v;
            }
        }
        slot
    }

    /// Moves overflow events that the ring now covers into it (or into the
    /// current bucket).
    fn pull_overflow(&mut self) {
        let horizon = self.horizon();
        while let Some(Reverse(first)) = self.overflow.peek() {
            let b = first.at / self.width;
            if b >= horizon {
                break;
            }
            let Some(Reverse(first)) = self.overflow.pop() else { break };
            if b <= self.cursor {
                self.cur.push(Reverse(first));
            } else {
                self.bucket(b).push(first);
                self.in_ring += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn pops_in_time_then_insertion_order_like_a_heap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut q: Queue<u32> = Queue::new(100, 16);
        let mut reference = BinaryHeap::new();
        let mut now = 0u64;
        let mut seq = 0u64;
        let mut popped = 0;
        for step in 0..20_000u32 {
            if rng.random_bool(0.55) {
                // Mostly near, sometimes far beyond the ring's 1.6 ms horizon.
                let d = if rng.random_bool(0.1) { rng.random_range(0..50_000) } else { rng.random_range(0..500) };
                seq += 1;
                q.push(Time(now + d), step);
                reference.push(Reverse((now + d, seq, step)));
            } else if let Some((t, v)) = q.pop() {
                let Reverse((rt, _, rv)) = reference.pop().unwrap();
                assert_eq!((t.as_micros(), v), (rt, rv));
                now = t.as_micros();
                popped += 1;
            }
        }
        while let Some((t, v)) = q.pop() {
            let Reverse((rt, _, rv)) = reference.pop().unwrap();
            assert_eq!((t.as_micros(), v), (rt, rv));
        }
        assert!(reference.is_empty() && q.is_empty());
        assert!(popped > 1000);
    }
}
