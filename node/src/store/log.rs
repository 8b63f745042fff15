//! The applied-purge log: what the engine needs to know after a restart.

use purgecast_core::Purge;
use rocksdb::WriteBatch;

use super::codec::{self, Range};
use super::*;

impl Store {
    /// Every logged purge with the time it was applied, ordered by
    /// (origin, epoch, seq), so each stream comes back in sequence.
    pub fn applied_purges(&self) -> Result<Vec<(Purge, u64)>> {
        let mut out = Vec::new();
        self.for_each_row(self.cf(CF_PURGES)?, &Range::all(), u64::MAX, |_, v| {
            out.push(codec::decode_purge_record(v).map_err(corrupt("purge log record"))?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The newest `limit` logged purges `keep` accepts, newest first, and
    /// whether more matched: one pass over the log holding at most `limit`
    /// purges (the audit log reads this on every call).
    pub fn newest_purges(&self, keep: impl Fn(&Purge) -> bool, limit: usize) -> Result<(Vec<Purge>, bool)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // A min-heap on (accepted at, id): the oldest kept one goes first.
        let mut heap: BinaryHeap<Reverse<(u64, purgecast_core::PurgeId, ByTime)>> = BinaryHeap::new();
        let mut more = false;
        self.for_each_row(self.cf(CF_PURGES)?, &Range::all(), u64::MAX, |_, v| {
            let (p, _) = codec::decode_purge_record(v).map_err(corrupt("purge log record"))?;
            if keep(&p) {
                heap.push(Reverse((p.issued_at_ms, p.id, ByTime(p))));
                if heap.len() > limit {
                    heap.pop();
                    more = true;
                }
            }
            Ok(true)
        })?;
        let mut out: Vec<Purge> = heap.into_iter().map(|Reverse((_, _, ByTime(p)))| p).collect();
        out.sort_by_key(|p| std::cmp::Reverse((p.issued_at_ms, p.id)));
        Ok((out, more))
    }

    /// Whether this very purge (same stream position and id) was applied.
    #[cfg(any(test, feature = "test-util"))]
    pub fn has_applied(&self, purge: &Purge) -> Result<bool> {
        match self.db.get_pinned_cf(self.cf(CF_PURGES)?, codec::purge_key(purge))? {
            Some(v) => {
                let (logged, _) = codec::decode_purge_record(&v).map_err(corrupt("purge log record"))?;
                Ok(logged.id == purge.id)
            }
            None => Ok(false),
        }
    }

    /// Number of records in the purge log.
    #[cfg(any(test, feature = "test-util"))]
    pub fn purge_log_len(&self) -> Result<u64> {
        self.count_rows(CF_PURGES, &Range::all(), u64::MAX)
    }

    /// Deletes log records applied before `older_than_ms`; returns how many.
    /// Holds the writer lock so a purge being logged concurrently is never
    /// judged by a stale read.
    pub fn prune_purge_log(&self, older_than_ms: u64) -> Result<u64> {
        let purges = self.cf(CF_PURGES)?;
        let mut pruned = 0u64;
        {
            let _w = self.lock_writer();
            let mut batch = WriteBatch::default();
            self.for_each_row(purges, &Range::all(), u64::MAX, |k, v| {
                let (_, applied_at) = codec::decode_purge_record(v).map_err(corrupt("purge log record"))?;
                if applied_at < older_than_ms {
                    batch.delete_cf(purges, k);
                    pruned += 1;
                }
                Ok(true)
            })?;
            if pruned > 0 {
                self.db.write_opt(batch, &self.write_opts(false))?;
            }
        }
        if pruned > 0 {
            self.db.compact_range_cf(purges, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(pruned)
    }
}

/// A purge carried through a heap ordered by the fields before it: it
/// compares equal to every other, so only (time, id) decide.
struct ByTime(Purge);

impl PartialEq for ByTime {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ByTime {}

impl PartialOrd for ByTime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByTime {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}
