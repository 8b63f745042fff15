//! Deferred purges: a purge whose tags, hosts, prefixes or zone match more
//! than [`DEFER_OVER`] entries is not applied row by row inside its batch.
//!
//! Deleting 100k entries, their index rows, objects and body chunks in one
//! batch is about a million RocksDB writes (seconds), and the purge's ack,
//! every purge queued behind it and every fill wait for it. Instead the
//! purge's batch writes its log record and a deferral record (`meta`,
//! `d/<seq>`), and from that write on:
//!
//! - readers treat every row it reaches and whose `stored_seq` is below the
//!   purge's sequence as purged: [`Store::object_head`] (the edge's hit
//!   path), [`Store::get`], listings and counts. Rows written later (a new
//!   fill, a re-put) carry a higher `stored_seq` and are not touched;
//! - the apply worker sweeps it ([`Store::sweep_deferred`]): bounded
//!   batches that delete (hard) or mark stale (soft) exactly those rows,
//!   walking the purge's index ranges with a cursor, and finally drop the
//!   deferral record.
//!
//! So the purge is in effect (and the node may ack it: it will not serve
//! the old objects) as soon as its batch is on disk, and the store's rows
//! catch up shortly after. A restart reloads the deferral records and
//! sweeps them from the start (sweeping is idempotent). This is the
//! "generation checked on read" of the old lazy designs, bounded: the
//! check costs nothing while no sweep is pending, and only purges still
//! being swept are checked.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use purgecast_core::{CacheKey, Mode, Purge, Selector};
use rocksdb::WriteBatch;

use super::codec::{self, Range};
use super::entries::delete_entry;
use super::objects::{reaches, Dropped};
use super::scan::Cfs;
use super::*;

/// A purge matching more entries than this (over its tag, host, prefix and
/// zone selectors) is deferred. Below it, applying inline costs a few ms.
pub(crate) const DEFER_OVER: u64 = 1024;

/// Prefix of deferral records in `meta`: `d/` + the purge's sequence (BE).
const META_DEFERRED: &[u8] = b"d/";

/// One purge being swept.
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    /// Its purge sequence: it reaches rows stored before it.
    pub seq: u64,
    pub purge: Purge,
}

impl Deferred {
    /// How it affects a row stored at `stored_seq` of an entry with this
    /// zone, key and tags.
    fn effect(&self, stored_seq: u64, zone: &str, key: &CacheKey, tags: &[String]) -> Option<Mode> {
        (stored_seq < self.seq && reaches(&self.purge, zone, key, tags)).then_some(self.purge.mode)
    }
}

/// What the pending deferred purges make of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Untouched,
    /// Soft-purged since this time (Unix ms, as the purge says; objects
    /// store at least 1, since 0 means not purged there).
    Stale(u64),
    Purged,
}

/// Where the oldest deferred purge's sweep resumes: the selector, and the
/// last index row handled in it.
#[derive(Debug, Default)]
pub(crate) struct SweepCursor {
    seq: u64,
    selector: usize,
    after: Option<Vec<u8>>,
}

/// Progress of one [`Store::sweep_deferred`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepOutcome {
    /// Entries deleted or marked stale by this call.
    pub swept: u64,
    /// Whether it was a soft purge (`swept` counts entries marked stale).
    pub soft: bool,
    /// Deferred purges still pending after it.
    pub remaining: usize,
}

pub(crate) fn deferred_key(seq: u64) -> Vec<u8> {
    [META_DEFERRED, &codec::encode_u64(seq)[..]].concat()
}

/// The index rows a selector of `purge` names: the family, the range and
/// how many fields precede the entry key in a row (0: the row is the
/// entry). None for a URL, which names its entry directly.
pub(crate) fn index_range(purge: &Purge, sel: &Selector) -> Option<(&'static str, Range, usize)> {
    Some(match sel {
        Selector::Url(_) => return None,
        Selector::Host(h) => (CF_BY_HOST, Range::host(h), 2),
        Selector::Prefix { host, path_prefix } => (CF_BY_HOST, Range::host_path(host, path_prefix), 2),
        Selector::Tag(t) => (CF_BY_TAG, Range::tag(&codec::zoned_tag(&purge.zone, t)), 1),
        Selector::Everything if purge.zone.is_empty() => (CF_ENTRIES, Range::all(), 0),
        Selector::Everything => (CF_BY_TAG, Range::tag(&codec::zone_marker(&purge.zone)), 1),
    })
}

/// The selectors a sweep walks (URL selectors were applied inline).
fn sweep_ranges(purge: &Purge) -> Vec<(&'static str, Range, usize)> {
    purge.selectors.iter().filter_map(|sel| index_range(purge, sel)).collect()
}

impl Store {
    /// Purges deferred and not yet swept.
    pub fn deferred_purges(&self) -> usize {
        self.deferred_len.load(Ordering::Acquire)
    }

    fn deferred_snapshot(&self) -> Arc<Vec<Deferred>> {
        self.deferred.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_deferred(&self, list: Vec<Deferred>) {
        let n = list.len();
        *self.deferred.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
        self.deferred_len.store(n, Ordering::Release);
    }

    /// Called with the writer lock held, after the batch that recorded them
    /// was written.
    pub(crate) fn add_deferred(&self, new: Vec<Deferred>) {
        if new.is_empty() {
            return;
        }
        let mut list = (*self.deferred_snapshot()).clone();
        list.extend(new);
        self.set_deferred(list);
    }

    /// After a batch that deleted every entry: nothing is left to sweep.
    /// The caller's batch deleted the records ([`Store::delete_deferred_records`]).
    pub(super) fn clear_deferred(&self, w: &mut Writer) {
        w.sweep = SweepCursor::default();
        self.set_deferred(Vec::new());
    }

    pub(crate) fn delete_deferred_records(&self, batch: &mut WriteBatch, cfs: &Cfs<'_>) {
        let range = Range::prefix(META_DEFERRED.to_vec());
        batch.delete_range_cf(cfs.meta, &range.lower, &range.upper);
    }

    /// Reads the deferral records at open.
    pub(crate) fn load_deferred(&self) -> Result<()> {
        let mut list = Vec::new();
        self.for_each_row(self.cf(CF_META)?, &Range::prefix(META_DEFERRED.to_vec()), u64::MAX, |k, v| {
            let seq = codec::decode_u64(&k[META_DEFERRED.len()..]).map_err(corrupt("deferral key"))?;
            let (purge, _) = codec::decode_purge_record(v).map_err(corrupt("deferral record"))?;
            list.push(Deferred { seq, purge });
            Ok(true)
        })?;
        // Keys are `d/` + the sequence big-endian: already oldest first.
        self.set_deferred(list);
        Ok(())
    }

    /// What pending deferred purges make of a row stored at `stored_seq`
    /// (the latest hard purge wins over soft ones; soft keeps the earliest
    /// time). Costs one atomic load when nothing is pending.
    pub(crate) fn verdict(&self, stored_seq: u64, zone: &str, key: &CacheKey, tags: &[String]) -> Verdict {
        if self.deferred_purges() == 0 {
            return Verdict::Untouched;
        }
        let mut out = Verdict::Untouched;
        for d in self.deferred_snapshot().iter() {
            match d.effect(stored_seq, zone, key, tags) {
                Some(Mode::Hard) => return Verdict::Purged,
                Some(Mode::Soft) => {
                    let at = d.purge.issued_at_ms;
                    out = match out {
                        Verdict::Stale(t) if t <= at => out,
                        _ => Verdict::Stale(at),
                    };
                }
                None => {}
            }
        }
        out
    }

    /// Whether a pending deferred purge was applied after `stored_seq`
    /// (then a row stored then needs its entry to be judged).
    pub(crate) fn deferred_since(&self, stored_seq: u64) -> bool {
        self.deferred_purges() > 0 && self.deferred_snapshot().iter().any(|d| d.seq > stored_seq)
    }

    /// An entry as readers see it: None if a pending hard purge reaches it,
    /// stale if a soft one does.
    pub(crate) fn as_read(&self, e: Entry) -> Option<Entry> {
        let key = CacheKey { key: e.key.clone(), host: e.host.clone(), path: e.path.clone() };
        match self.verdict(e.stored_seq, &e.zone, &key, &e.tags) {
            Verdict::Untouched => Some(e),
            Verdict::Purged => None,
            Verdict::Stale(at) => {
                let mut e = e;
                if !e.stale || e.stale_since_ms > at {
                    e.stale = true;
                    e.stale_since_ms = at;
                }
                Some(e)
            }
        }
    }

    /// Sweeps up to about `budget` index rows of the oldest deferred purge:
    /// deletes (hard) or marks stale (soft) what it reached, in one batch.
    /// The batch is not synced: the deferral record is, and a sweep lost
    /// to a crash is done again after the restart.
    pub fn sweep_deferred(&self, budget: usize) -> Result<SweepOutcome> {
        let mut w = self.lock_writer();
        let list = self.deferred_snapshot();
        let Some(d) = list.first() else { return Ok(SweepOutcome::default()) };
        if w.sweep.seq != d.seq {
            w.sweep = SweepCursor { seq: d.seq, selector: 0, after: None };
        }
        let cfs = self.cfs()?;
        let ranges = sweep_ranges(&d.purge);
        let mut batch = WriteBatch::default();
        let mut sweep = Sweep {
            d,
            count: self.count_all(),
            swept: 0,
            urls: Vec::new(),
            dirty: Vec::new(),
            handled: HashSet::new(),
        };
        let mut left = budget.max(1) as u64;
        while let Some(&(cf, ref range, fields)) = ranges.get(w.sweep.selector) {
            let from = match &w.sweep.after {
                Some(row) => range.past(row),
                None => range.clone(),
            };
            let (keys, last) = self.scan_keys_from(self.cf(cf)?, &from, left, fields)?;
            for e in self.fetch_entries(&keys)?.into_iter().flatten() {
                sweep.entry(&mut batch, &cfs, e);
            }
            left -= keys.len() as u64;
            if left == 0 {
                w.sweep.after = last;
                break;
            }
            if d.purge.mode == Mode::Hard {
                sweep.dirty.push((cf, Some(range.clone())));
            }
            w.sweep.selector += 1;
            w.sweep.after = None;
        }
        let done = w.sweep.selector >= ranges.len();
        let mut dropped = Dropped::default();
        let urls: Vec<&str> = sweep.urls.iter().map(String::as_str).collect();
        for (id, mut rec) in self.objects_of_many(&cfs, &urls)? {
            if rec.stored_seq >= d.seq {
                continue;
            }
            match d.purge.mode {
                Mode::Hard => {
                    if dropped.ids.insert(id) {
                        super::objects::delete_object(&mut batch, &cfs, &id, &rec);
                        dropped.bytes += rec.body_len;
                    }
                }
                Mode::Soft => {
                    let at = d.purge.issued_at_ms.max(1);
                    if rec.stale_since_ms == 0 || rec.stale_since_ms > at {
                        rec.stale_since_ms = at;
                        batch.put_cf(cfs.objects, id, codec::encode_object(&rec));
                        dropped.staled.push(id);
                    }
                }
            }
        }
        if done {
            batch.delete_cf(cfs.meta, deferred_key(d.seq));
        }
        batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(sweep.count));
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.set_count(sweep.count);
        self.forget_objects(&dropped);
        self.mark_dirty(sweep.dirty);
        let swept = sweep.swept;
        let mut remaining = list.len();
        if done {
            self.set_deferred(list[1..].to_vec());
            w.sweep = SweepCursor::default();
            remaining -= 1;
        }
        Ok(SweepOutcome { swept, soft: d.purge.mode == Mode::Soft, remaining })
    }
}

/// One sweep batch in the making.
struct Sweep<'d> {
    d: &'d Deferred,
    count: u64,
    swept: u64,
    /// URLs of reached entries: their older objects go too.
    urls: Vec<String>,
    dirty: Vec<(&'static str, Option<Range>)>,
    /// Entries this batch already handled: two selectors of one purge may
    /// name the same entry, and the database shows the batch only once
    /// written.
    handled: HashSet<String>,
}

impl Sweep<'_> {
    fn entry(&mut self, batch: &mut WriteBatch, cfs: &Cfs<'_>, mut e: Entry) {
        let key = CacheKey { key: e.key.clone(), host: e.host.clone(), path: e.path.clone() };
        if !reaches(&self.d.purge, &e.zone, &key, &e.tags) || !self.handled.insert(e.key.clone()) {
            return;
        }
        // A newer entry keeps its row, but its URL's objects stored before
        // the purge still go.
        self.urls.push(e.key.clone());
        if e.stored_seq >= self.d.seq {
            return;
        }
        match self.d.purge.mode {
            Mode::Hard => {
                delete_entry(batch, cfs, &e);
                self.count = self.count.saturating_sub(1);
                self.swept += 1;
            }
            Mode::Soft => {
                let at = self.d.purge.issued_at_ms;
                if !e.stale || e.stale_since_ms > at {
                    e.stale = true;
                    e.stale_since_ms = at;
                    batch.put_cf(cfs.entries, e.key.as_bytes(), codec::encode_entry(&e));
                    self.swept += 1;
                }
            }
        }
    }
}
