//! Tombstone cleanup after hard purges.
//!
//! A purged host or tag leaves a run of tombstones that every later scan of
//! nearby keys would step over until compaction drops them. Purges record
//! the ranges they emptied here; the node calls
//! [`Store::compact_purged_ranges`] periodically from its own thread, off
//! the purge path. Small scattered deletions are left to the
//! deletion-triggered compaction configured at open, until they add up:
//! once the entries removed since the last full compaction reach a share
//! of the store, the index families are compacted whole. Ranges alone left
//! scans 2.6 to 4.8x slower than on a fresh store after 10M deletes
//! (docs/benchmarks.md): the re-filled ranges and the scattered URL
//! deletes of the `entries` family stay spread over levels.

use std::collections::BTreeMap;

use rocksdb::{BottommostLevelCompaction, CompactOptions};

use super::codec::Range;
use super::*;

/// The index families: what a full compaction rewrites.
const INDEX_CFS: [&str; 3] = [CF_ENTRIES, CF_BY_HOST, CF_BY_TAG];
/// Past this many pending ranges in one family, compact all of it instead:
/// bounded memory, and by then most of it is dirty anyway.
const MAX_RANGES: usize = 256;
/// A full compaction of the index families is due once the entries removed
/// since the last one are at least this many (`StoreOptions::compact_whole_after`)...
pub(crate) const FULL_MIN_REMOVED: u64 = 100_000;
/// ...and at least 1/`FULL_SHARE` of the entries there were (live plus
/// removed). Each full compaction rewrites the index once, so its cost per
/// removed entry stays bounded: a quarter of the store's size.
const FULL_SHARE: u64 = 4;

#[derive(Debug, Default)]
struct CfDirty {
    ranges: Vec<Range>,
    whole: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Dirty {
    by_cf: BTreeMap<&'static str, CfDirty>,
}

impl Dirty {
    fn add(&mut self, cf: &'static str, range: Option<Range>) {
        let d = self.by_cf.entry(cf).or_default();
        match range {
            _ if d.whole => {}
            None => {
                d.whole = true;
                d.ranges.clear();
            }
            Some(r) => {
                d.ranges.push(r);
                if d.ranges.len() > MAX_RANGES {
                    d.ranges = merge(std::mem::take(&mut d.ranges));
                    if d.ranges.len() > MAX_RANGES {
                        d.whole = true;
                        d.ranges.clear();
                    }
                }
            }
        }
    }
}

/// Sorts ranges and joins those that overlap or touch.
fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.overlaps_or_touches(&r) => *last = last.span(&r),
            _ => out.push(r),
        }
    }
    out
}

/// Manual compactions run beside automatic ones: an exclusive one (RocksDB's
/// default) holds RocksDB's own compactions back, and during a full
/// compaction of most of a minute writes would then stall on level-0 files.
fn options(full: bool) -> CompactOptions {
    let mut o = CompactOptions::default();
    o.set_exclusive_manual_compaction(false);
    if full {
        // Rewrite the last level too (once), or its tombstones and the
        // overlap of re-filled ranges stay.
        o.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
    }
    o
}

/// What one call of [`Store::compact_purged_ranges`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Compactions run (ranges, families).
    pub runs: usize,
    /// Whether the index families were compacted whole.
    pub full: bool,
}

impl Store {
    /// Publishes the entry count a committed batch left; what it removed
    /// counts toward the next full compaction. Call it after the write.
    pub(crate) fn set_count(&self, count: u64) {
        let before = self.count.swap(count, Ordering::AcqRel);
        if count < before {
            self.removed_since_full.fetch_add(before - count, Ordering::Relaxed);
        }
    }

    /// Whether the index families are due a full compaction (see
    /// [`FULL_SHARE`]).
    fn full_compaction_due(&self) -> bool {
        let removed = self.removed_since_full.load(Ordering::Relaxed);
        removed >= self.opts.compact_whole_after.max(1)
            && removed.saturating_mul(FULL_SHARE) >= self.count_all().saturating_add(removed)
    }

    /// Records ranges emptied by a committed batch (None = the whole family).
    pub(crate) fn mark_dirty(&self, ranges: Vec<(&'static str, Option<Range>)>) {
        if ranges.is_empty() {
            return;
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for (cf, r) in ranges {
            dirty.add(cf, r);
        }
    }

    /// Number of ranges waiting for [`Store::compact_purged_ranges`].
    #[cfg(any(test, feature = "test-util"))]
    pub fn pending_compactions(&self) -> usize {
        let dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.by_cf.values().map(|d| if d.whole { 1 } else { d.ranges.len() }).sum()
    }

    /// Compacts every range hard purges emptied since the last call, so
    /// their tombstones stop slowing scans, or the whole index families
    /// when the entries removed since their last full compaction are a
    /// quarter of the store. Blocking, for most of a minute at ten million
    /// entries (35 to 50 s on 2 cores; writes go on meanwhile): call it from
    /// its own thread.
    pub fn compact_purged_ranges(&self) -> Result<Compacted> {
        let full = self.full_compaction_due();
        if full {
            self.removed_since_full.store(0, Ordering::Relaxed);
        }
        let work = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut dirty.by_cf)
        };
        let mut runs = 0;
        if full {
            for name in INDEX_CFS {
                self.db.compact_range_cf_opt(self.cf(name)?, None::<&[u8]>, None::<&[u8]>, &options(true));
                runs += 1;
            }
        }
        for (name, d) in work {
            if full && INDEX_CFS.contains(&name) {
                continue;
            }
            let cf = self.cf(name)?;
            if d.whole {
                self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options(false));
                runs += 1;
                continue;
            }
            for r in merge(d.ranges) {
                self.db.compact_range_cf_opt(cf, Some(&r.lower), Some(&r.upper), &options(false));
                runs += 1;
            }
        }
        Ok(Compacted { runs, full })
    }

    /// Queues the index families for a compaction whole (after a flush
    /// emptied them), left to the compaction thread like any other.
    pub(crate) fn mark_index_dirty(&self) {
        self.mark_dirty(INDEX_CFS.iter().map(|cf| (*cf, None)).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &[u8], b: &[u8]) -> Range {
        Range { lower: a.to_vec(), upper: b.to_vec() }
    }

    #[test]
    fn overlapping_ranges_merge_and_disjoint_ones_stay() {
        let m = merge(vec![r(b"c", b"e"), r(b"a", b"b"), r(b"d", b"f"), r(b"b", b"c")]);
        assert_eq!(m, vec![r(b"a", b"f")]);
        let m = merge(vec![r(b"x", b"y"), r(b"a", b"b")]);
        assert_eq!(m, vec![r(b"a", b"b"), r(b"x", b"y")]);
    }

    #[test]
    fn too_many_ranges_collapse_into_the_whole_family() {
        let mut d = Dirty::default();
        for i in 0..=MAX_RANGES as u32 {
            let k = (i * 2).to_be_bytes().to_vec();
            let mut u = k.clone();
            u.push(0);
            d.add("by_tag", Some(Range { lower: k, upper: u }));
        }
        let cf = &d.by_cf["by_tag"];
        assert!(cf.whole);
        assert!(cf.ranges.is_empty());
        d.add("by_tag", Some(r(b"a", b"b")));
        assert!(d.by_cf["by_tag"].ranges.is_empty());
    }
}
