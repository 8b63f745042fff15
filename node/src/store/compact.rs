//! Tombstone cleanup after hard purges.
//!
//! A purged host or tag leaves a run of tombstones that every later scan of
//! nearby keys would step over until compaction drops them. Purges record
//! the ranges they emptied here; the node calls
//! [`Store::compact_purged_ranges`] periodically, off the purge path.
//! Small scattered deletions are left to the deletion-triggered compaction
//! configured at open.

use std::collections::BTreeMap;

use super::codec::Range;
use super::*;

/// Past this many pending ranges in one family, compact all of it instead:
/// bounded memory, and by then most of it is dirty anyway.
const MAX_RANGES: usize = 256;

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

impl Store {
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
    /// their tombstones stop slowing scans. Blocking; call it from a
    /// blocking task. Returns the number of compactions run.
    pub fn compact_purged_ranges(&self) -> Result<usize> {
        let work = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut dirty.by_cf)
        };
        let mut runs = 0;
        for (name, d) in work {
            let cf = self.cf(name)?;
            if d.whole {
                self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                runs += 1;
                continue;
            }
            for r in merge(d.ranges) {
                self.db.compact_range_cf(cf, Some(&r.lower), Some(&r.upper));
                runs += 1;
            }
        }
        Ok(runs)
    }

    pub(crate) fn compact_all_index(&self) -> Result<()> {
        for name in [CF_ENTRIES, CF_BY_HOST, CF_BY_TAG] {
            self.db.compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for name in [CF_ENTRIES, CF_BY_HOST, CF_BY_TAG] {
            dirty.by_cf.remove(name);
        }
        Ok(())
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
