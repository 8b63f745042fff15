//! Applying purges: each selector kind, hard and soft, and many purges in
//! one atomic batch together with their log records.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use purgecast_core::{Mode, Purge, Selector};
use rocksdb::WriteBatch;

use super::codec::{self, Range};
use super::deferred::{self, Deferred};
use super::entries::delete_entry;
use super::objects::Dropped;
use super::scan::{Cfs, Keys};
use super::sinks;
use super::*;

/// What one purge did to this node's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Distinct entries the purge matched.
    pub matched: u64,
    /// Entries deleted (hard purges).
    pub removed: u64,
    /// Entries that were fresh and are now stale (soft purges). Entries
    /// already stale are matched but not counted again.
    pub marked_stale: u64,
    /// Too large to apply inline: in effect now, its entries are counted
    /// by the sweep ([`Store::sweep_deferred`]) instead.
    pub deferred: bool,
}

/// A hard purge removing fewer entries than this leaves its tombstones to
/// deletion-triggered compaction rather than queueing a manual one.
const COMPACT_MIN_REMOVED: u64 = 64;

/// A selector's index rows, read before the purge is applied.
struct Rows {
    cf: &'static str,
    range: Range,
    keys: Keys,
}

/// Builds one WriteBatch for a run of purges. The database does not show
/// the batch's own changes until it is written, so later purges of the same
/// batch read entries through `overlay`: an entry deleted by an earlier
/// purge is neither matched nor deleted again, which keeps counts exact.
struct Builder<'s> {
    store: &'s Store,
    cfs: Cfs<'s>,
    batch: WriteBatch,
    /// Key -> the entry as the batch leaves it (None = deleted).
    overlay: BTreeMap<Vec<u8>, Option<Entry>>,
    /// An earlier purge deleted everything: only `overlay` rows exist.
    wiped: bool,
    count: u64,
    dirty: Vec<(&'static str, Option<Range>)>,
    /// Objects this batch deletes; all of them when `wiped`.
    dropped: Dropped,
    /// The purge sequence after the purges added so far.
    seq: u64,
    applied: Vec<(u64, Purge)>,
    /// Purges of this batch left to the sweep (see `deferred.rs`).
    deferred: Vec<Deferred>,
}

/// Per-purge bookkeeping.
struct Run<'p> {
    purge: &'p Purge,
    out: ApplyOutcome,
    /// Keys already matched, for soft purges with several selectors (a hard
    /// purge's deletions already show in the overlay).
    seen: Option<BTreeSet<Vec<u8>>>,
    /// Smallest range covering the entry keys this selector deleted.
    span: Option<Range>,
    /// URLs whose objects the purge deletes (hard) or marks stale (soft),
    /// handled together once its selectors are matched: one ordered walk
    /// over the objects instead of a seek per URL.
    urls: Vec<String>,
}

impl<'s> Builder<'s> {
    fn new(store: &'s Store) -> Result<Self> {
        Ok(Builder {
            store,
            cfs: store.cfs()?,
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            wiped: false,
            count: store.count_all(),
            dirty: Vec::new(),
            dropped: Dropped::default(),
            seq: store.purge_seq(),
            applied: Vec::new(),
            deferred: Vec::new(),
        })
    }

    /// Current state of entries, seen through the batch built so far.
    fn resolve(&self, keys: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Option<Entry>)>> {
        let (known, unknown): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| self.wiped || self.overlay.contains_key(k));
        let mut out: Vec<(Vec<u8>, Option<Entry>)> = known
            .into_iter()
            .map(|k| {
                let e = self.overlay.get(&k).cloned().flatten();
                (k, e)
            })
            .collect();
        let fetched = match unknown.as_slice() {
            [] => Vec::new(),
            [one] => vec![self.store.fetch_entry(one)?],
            many => self.store.fetch_entries(many)?,
        };
        out.extend(unknown.into_iter().zip(fetched));
        Ok(out)
    }

    fn visit(&mut self, run: &mut Run<'_>, key: Vec<u8>, entry: Option<Entry>) -> Result<()> {
        let Some(mut e) = entry else { return Ok(()) };
        // A zone's purge never reaches another zone's entries, whatever a
        // peer put in it (tag and everything rows are per zone already).
        let zone = &run.purge.zone;
        if !zone.is_empty() && !e.zone.is_empty() && e.zone != *zone {
            return Ok(());
        }
        if let Some(seen) = &mut run.seen {
            if !seen.insert(key.clone()) {
                return Ok(());
            }
        }
        run.out.matched += 1;
        match run.purge.mode {
            Mode::Hard => {
                delete_entry(&mut self.batch, &self.cfs, &e);
                run.urls.push(e.key.clone());
                let point = codec::point(&key);
                run.span = Some(match run.span.take() {
                    Some(s) => s.span(&point),
                    None => point,
                });
                self.overlay.insert(key, None);
                self.count = self.count.saturating_sub(1);
                run.out.removed += 1;
            }
            Mode::Soft => {
                let fresh = !e.stale;
                // Keep the earliest stale-since: purges can arrive out of order.
                if fresh || e.stale_since_ms > run.purge.issued_at_ms {
                    let at = run.purge.issued_at_ms;
                    run.urls.push(e.key.clone());
                    e.stale = true;
                    e.stale_since_ms = at;
                    self.batch.put_cf(self.cfs.entries, &key, codec::encode_entry(&e));
                    self.overlay.insert(key, Some(e));
                }
                if fresh {
                    run.out.marked_stale += 1;
                }
            }
        }
        Ok(())
    }

    /// Matches the entries `rows` names.
    fn index_scan(&mut self, run: &mut Run<'_>, rows: Rows) -> Result<()> {
        let Rows { cf, range, keys } = rows;
        let before = run.out.removed;
        for (k, e) in self.resolve(keys)? {
            self.visit(run, k, e)?;
        }
        if run.out.removed - before >= COMPACT_MIN_REMOVED {
            self.dirty.push((cf, Some(range)));
        }
        Ok(())
    }

    /// Deletes or marks stale the objects of the entries `run` matched.
    fn objects_of_run(&mut self, run: &Run<'_>) -> Result<()> {
        let urls: Vec<&str> = run.urls.iter().map(String::as_str).collect();
        match run.purge.mode {
            Mode::Hard => self.store.drop_objects_of(&mut self.batch, &self.cfs, &urls, &mut self.dropped),
            Mode::Soft => {
                let at = run.purge.issued_at_ms;
                self.store.stale_objects_of(&mut self.batch, &self.cfs, &urls, at, &mut self.dropped)
            }
        }
    }

    fn everything(&mut self, run: &mut Run<'_>) -> Result<()> {
        if run.purge.mode == Mode::Hard {
            run.out.matched += self.count;
            run.out.removed += self.count;
            self.count = 0;
            let all = Range::all();
            for (name, cf) in
                [(CF_ENTRIES, self.cfs.entries), (CF_BY_HOST, self.cfs.by_host), (CF_BY_TAG, self.cfs.by_tag)]
            {
                self.batch.delete_range_cf(cf, &all.lower, &all.upper);
                self.dirty.push((name, None));
            }
            for cf in [self.cfs.objects, self.cfs.bodies] {
                self.batch.delete_range_cf(cf, &all.lower, &all.upper);
            }
            self.wiped = true;
            self.overlay.clear();
            self.deferred.clear();
            self.store.delete_deferred_records(&mut self.batch, &self.cfs);
            return Ok(());
        }
        if self.wiped {
            return Ok(());
        }
        let store = self.store;
        let entries = self.cfs.entries;
        store.for_each_row(entries, &Range::all(), u64::MAX, |k, v| {
            let e = match self.overlay.get(k) {
                Some(known) => known.clone(),
                None => Some(codec::decode_entry(k, v).map_err(corrupt("entry"))?),
            };
            self.visit(run, k.to_vec(), e)?;
            Ok(true)
        })
    }

    /// The index rows each selector names (by position; None for URLs, a
    /// hard everything and after a wipe), read once, or None when together
    /// they name more than `defer_over` entries: the purge is then
    /// deferred, and reading stopped at that bound.
    fn read_rows(&self, purge: &Purge, selectors: &[Selector]) -> Result<Option<Vec<Option<Rows>>>> {
        let mut out: Vec<Option<Rows>> = selectors.iter().map(|_| None).collect();
        if self.wiped {
            return Ok(Some(out));
        }
        let bound = self.store.opts.defer_over;
        let mut seen = 0u64;
        for (i, sel) in selectors.iter().enumerate() {
            // A hard purge of everything is three range deletions.
            if *sel == Selector::Everything && purge.zone.is_empty() && purge.mode == Mode::Hard {
                continue;
            }
            let Some((cf, range, fields)) = deferred::index_range(purge, sel) else { continue };
            let limit = bound.saturating_sub(seen).saturating_add(1);
            let keys = self.store.scan_keys(self.store.cf(cf)?, &range, limit, fields)?;
            seen += keys.len() as u64;
            if seen > bound {
                return Ok(None);
            }
            out[i] = Some(Rows { cf, range, keys });
        }
        Ok(Some(out))
    }

    fn apply(&mut self, purge: &Purge, applied_at_ms: u64) -> Result<ApplyOutcome> {
        let everything = [Selector::Everything];
        // Everything subsumes the other selectors of its purge.
        let selectors =
            if purge.selectors.contains(&Selector::Everything) { &everything[..] } else { &purge.selectors[..] };
        let several_soft = purge.mode == Mode::Soft && selectors.len() > 1;
        let mut rows = self.read_rows(purge, selectors)?;
        let defer = rows.is_none();
        let mut run = Run {
            purge,
            out: ApplyOutcome::default(),
            seen: several_soft.then(BTreeSet::new),
            span: None,
            urls: Vec::new(),
        };
        for (i, sel) in selectors.iter().enumerate() {
            match sel {
                // The sweep takes the rest; URLs are cheap to do now.
                _ if defer && !matches!(sel, Selector::Url(_)) => {}
                Selector::Url(u) => {
                    let key = u.as_bytes().to_vec();
                    let e = if self.wiped || self.overlay.contains_key(&key) {
                        self.overlay.get(&key).cloned().flatten()
                    } else {
                        self.store.fetch_entry(&key)?
                    };
                    self.visit(&mut run, key, e)?;
                }
                Selector::Everything if purge.zone.is_empty() => self.everything(&mut run)?,
                // Hosts, prefixes, tags, a zone's everything: the rows read
                // above (none after a wipe: nothing is left to match).
                _ => {
                    if let Some(r) = rows.as_mut().and_then(|r| r.get_mut(i)).and_then(Option::take) {
                        self.index_scan(&mut run, r)?;
                    }
                }
            }
        }
        self.objects_of_run(&run)?;
        if run.out.removed >= COMPACT_MIN_REMOVED && !self.wiped {
            if let Some(span) = run.span.take() {
                self.dirty.push((CF_ENTRIES, Some(span)));
            }
        }
        let record = codec::encode_purge_record(purge, applied_at_ms);
        self.seq += 1;
        if defer {
            self.batch.put_cf(self.cfs.meta, deferred::deferred_key(self.seq), &record);
            self.deferred.push(Deferred { seq: self.seq, purge: purge.clone() });
            run.out.deferred = true;
        }
        for sink in &self.store.opts.sinks {
            self.batch.put_cf(self.cfs.sinks, sinks::sink_key(sink, self.seq), &record);
        }
        self.batch.put_cf(self.cfs.purges, codec::purge_key(purge), record);
        self.applied.push((self.seq, purge.clone()));
        Ok(run.out)
    }

    /// Writes the batch; returns the purges with their sequence numbers for
    /// the race check, which the caller records before it lets go of the
    /// writer lock.
    fn commit(mut self, w: &mut Writer) -> Result<Vec<(u64, Purge)>> {
        self.batch.put_cf(self.cfs.meta, META_COUNT, codec::encode_u64(self.count));
        self.batch.put_cf(self.cfs.meta, META_PURGE_SEQ, codec::encode_u64(self.seq));
        let store = self.store;
        store.db.write_opt(self.batch, &store.write_opts(store.opts.sync))?;
        store.set_count(self.count);
        if self.wiped {
            store.forget_all_objects();
            store.clear_deferred(w);
        } else {
            store.forget_objects(&self.dropped);
        }
        store.purge_seq.store(self.seq, Ordering::Release);
        store.mark_dirty(self.dirty);
        store.add_deferred(self.deferred);
        Ok(self.applied)
    }
}

impl Store {
    /// Applies one purge and records it in the purge log, atomically.
    /// Applying a purge again is harmless (it matches what is left).
    #[cfg(any(test, feature = "test-util"))]
    pub fn apply_purge(&self, purge: &Purge, applied_at_ms: u64) -> Result<ApplyOutcome> {
        let mut outcomes = self.apply_each(std::iter::once((purge, applied_at_ms)))?;
        Ok(outcomes.pop().unwrap_or_default())
    }

    /// Applies many purges, in order, in one atomic write (one fsync when
    /// `sync` is set). Returns one outcome per purge.
    pub fn apply_purges<P: Borrow<Purge>>(&self, purges: &[(P, u64)]) -> Result<Vec<ApplyOutcome>> {
        self.apply_each(purges.iter().map(|(p, at)| (p.borrow(), *at)))
    }

    fn apply_each<'p>(&self, purges: impl Iterator<Item = (&'p Purge, u64)>) -> Result<Vec<ApplyOutcome>> {
        let mut w = self.lock_writer();
        let mut b = Builder::new(self)?;
        let mut outcomes = Vec::new();
        for (purge, at) in purges {
            outcomes.push(b.apply(purge, at)?);
        }
        if !outcomes.is_empty() {
            for (seq, purge) in b.commit(&mut w)? {
                w.recent.push(seq, purge);
            }
        }
        Ok(outcomes)
    }
}
