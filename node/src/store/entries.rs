//! The cache index: putting, reading, listing, counting and sweeping
//! entries.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use purgecast_core::Selector;
use purgecast_core::{normalize_host, parse_url};
use rocksdb::WriteBatch;

use super::codec::{self, Range};
use super::scan::Cfs;
use super::sinks;
use super::*;

/// Tags one entry may carry; each costs an index row.
pub const MAX_TAGS: usize = 256;

/// An entry as the cache reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryInput {
    /// Full URL; normalised before it becomes the key.
    pub key: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub stored_at_ms: u64,
    /// Unix ms; 0 = never.
    pub expires_at_ms: u64,
    /// The zone of its host ("" = none).
    pub zone: String,
}

/// Row counts of the three index families, from full scans.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub entries: u64,
    pub host_rows: u64,
    pub tag_rows: u64,
}

fn normalise(index: usize, input: &EntryInput) -> Result<Entry> {
    let ck = parse_url(&input.key).map_err(|source| StoreError::BadEntry { index, source })?;
    purgecast_core::validate_zone(&input.zone).map_err(|e| StoreError::BadZone(e.to_string()))?;
    let mut tags = Vec::with_capacity(input.tags.len());
    for t in &input.tags {
        Selector::tag(t).map_err(|source| StoreError::BadEntry { index, source })?;
        tags.push(t.clone());
    }
    tags.sort_unstable();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(StoreError::TooManyTags { index, count: tags.len() });
    }
    Ok(Entry {
        key: ck.key,
        host: ck.host,
        path: ck.path,
        tags,
        size: input.size,
        stored_at_ms: input.stored_at_ms,
        expires_at_ms: input.expires_at_ms,
        stale: false,
        stale_since_ms: 0,
        zone: input.zone.clone(),
        stored_seq: 0,
    })
}

/// Adds the deletion of `e` and all its index rows to `batch`.
pub(crate) fn delete_entry(batch: &mut WriteBatch, cfs: &Cfs<'_>, e: &Entry) {
    batch.delete_cf(cfs.entries, e.key.as_bytes());
    batch.delete_cf(cfs.by_host, codec::host_row(&e.host, &e.path, &e.key));
    for row in codec::entry_tag_rows(e) {
        batch.delete_cf(cfs.by_tag, row);
    }
}

/// Writes `new` and moves its index rows from what `old` had: only rows
/// that differ are touched, so a re-put of an unchanged entry leaves no
/// tombstones behind.
pub(crate) fn put_entry(batch: &mut WriteBatch, cfs: &Cfs<'_>, new: &Entry, old: Option<&Entry>) {
    let old_host = old.map(|o| codec::host_row(&o.host, &o.path, &o.key));
    let new_host = codec::host_row(&new.host, &new.path, &new.key);
    if old_host.as_ref() != Some(&new_host) {
        if let Some(h) = old_host {
            batch.delete_cf(cfs.by_host, h);
        }
        batch.put_cf(cfs.by_host, new_host, []);
    }
    let old_rows = old.map(codec::entry_tag_rows).unwrap_or_default();
    let new_rows = codec::entry_tag_rows(new);
    for row in old_rows.iter().filter(|r| !new_rows.contains(r)) {
        batch.delete_cf(cfs.by_tag, row);
    }
    for row in new_rows.iter().filter(|r| !old_rows.contains(r)) {
        batch.put_cf(cfs.by_tag, row, []);
    }
    batch.put_cf(cfs.entries, new.key.as_bytes(), codec::encode_entry(new));
}

impl Store {
    /// Stores entries, replacing any with the same key (and its index rows)
    /// atomically. A re-put is a fresh copy, so it is no longer stale.
    /// Inputs are validated first: one bad input rejects the whole call.
    /// Returns the number of distinct keys written (a key given twice is
    /// written once, with its last value).
    pub fn put_entries(&self, inputs: &[EntryInput]) -> Result<usize> {
        let mut fresh = BTreeMap::new();
        for (index, input) in inputs.iter().enumerate() {
            let e = normalise(index, input)?;
            fresh.insert(e.key.clone(), e);
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let _w = self.lock_writer();
        let cfs = self.cfs()?;
        let keys: Vec<&[u8]> = fresh.keys().map(|k| k.as_bytes()).collect();
        let old = self.fetch_entries(&keys)?;
        let mut count = self.count_all();
        let mut batch = WriteBatch::default();
        let seq = self.purge_seq();
        for (new, old) in fresh.values_mut().zip(old) {
            if old.is_none() {
                count += 1;
            }
            new.stored_seq = seq;
            put_entry(&mut batch, &cfs, new, old.as_ref());
        }
        batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(count));
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.set_count(count);
        Ok(fresh.len())
    }

    /// The entry for a URL (normalised first), or None if absent or expired
    /// by the wall clock.
    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.get_at(key, crate::clock::now_ms())
    }

    /// As [`Store::get`], with the current time given.
    pub fn get_at(&self, key: &str, now_ms: u64) -> Result<Option<Entry>> {
        let ck = parse_url(key).map_err(StoreError::BadQuery)?;
        Ok(self.fetch_entry(ck.key.as_bytes())?.filter(|e| !e.is_expired(now_ms)).and_then(|e| self.as_read(e)))
    }

    /// Up to `limit` entries of a host, in path order.
    pub fn list_by_host(&self, host: &str, limit: usize) -> Result<Vec<Entry>> {
        let host = normalize_host(host).map_err(StoreError::BadQuery)?;
        self.list(self.cf(CF_BY_HOST)?, &Range::host(&host), limit, 2)
    }

    /// Up to `limit` entries carrying a tag, in key order.
    /// Entries of `zone` ("" = no zone) carrying `tag`.
    pub fn list_by_tag(&self, zone: &str, tag: &str, limit: usize) -> Result<Vec<Entry>> {
        Selector::tag(tag).map_err(StoreError::BadQuery)?;
        self.list(self.cf(CF_BY_TAG)?, &Range::tag(&codec::zoned_tag(zone, tag)), limit, 1)
    }

    /// Up to `limit` entries of the index rows in `range`, as readers see
    /// them. While deferred purges are being swept some rows name entries
    /// already purged, so it reads on until it has `limit` or the range ends.
    fn list(&self, cf: &rocksdb::ColumnFamily, range: &Range, limit: usize, fields: usize) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.each_visible(cf, range, limit, fields, |e| out.push(e))?;
        Ok(out)
    }

    /// Calls `f` with up to `limit` entries of the rows in `range`, read in
    /// slices so a count of a million rows does not hold them all.
    fn each_visible(
        &self,
        cf: &rocksdb::ColumnFamily,
        range: &Range,
        limit: usize,
        fields: usize,
        mut f: impl FnMut(Entry),
    ) -> Result<()> {
        const SLICE: usize = 4096;
        let mut seen = 0usize;
        let mut from = range.clone();
        // Rows hidden by a deferred purge do not count toward the limit:
        // each further pass reads twice as many, so a small listing over a
        // run of purged rows takes a few passes, not one per row.
        let mut pass = 1usize;
        while seen < limit {
            let want = (limit - seen).max(pass).min(SLICE) as u64;
            pass = pass.saturating_mul(2);
            let (keys, last) = self.scan_keys_from(cf, &from, want, fields)?;
            let exhausted = (keys.len() as u64) < want;
            // A row whose entry vanished can only be a racing purge between
            // the two reads; skip it rather than fail the listing.
            for e in self.fetch_entries(&keys)?.into_iter().flatten().filter_map(|e| self.as_read(e)) {
                if seen < limit {
                    seen += 1;
                    f(e);
                }
            }
            match last {
                Some(row) if !exhausted => from = from.past(&row),
                _ => break,
            }
        }
        Ok(())
    }

    /// Entries of a host. Counting keys only, unless deferred purges are
    /// being swept: then each entry is read and judged as [`Store::get`] does.
    pub fn count_by_host(&self, host: &str) -> Result<u64> {
        let host = normalize_host(host).map_err(StoreError::BadQuery)?;
        self.count_visible(CF_BY_HOST, &Range::host(&host), 2)
    }

    pub fn count_by_tag(&self, zone: &str, tag: &str) -> Result<u64> {
        Selector::tag(tag).map_err(StoreError::BadQuery)?;
        self.count_visible(CF_BY_TAG, &Range::tag(&codec::zoned_tag(zone, tag)), 1)
    }

    fn count_visible(&self, cf_name: &'static str, range: &Range, fields: usize) -> Result<u64> {
        if self.deferred_purges() == 0 {
            return self.count_rows(cf_name, range, u64::MAX);
        }
        let mut n = 0u64;
        self.each_visible(self.cf(cf_name)?, range, usize::MAX, fields, |_| n += 1)?;
        Ok(n)
    }

    /// Exact row counts by full scans: a consistency check for tests and
    /// operators (entries must equal host rows, and the counter).
    #[cfg(any(test, feature = "test-util"))]
    pub fn index_stats(&self) -> Result<IndexStats> {
        let all = Range::all();
        Ok(IndexStats {
            entries: self.count_rows(CF_ENTRIES, &all, u64::MAX)?,
            host_rows: self.count_rows(CF_BY_HOST, &all, u64::MAX)?,
            tag_rows: self.count_rows(CF_BY_TAG, &all, u64::MAX)?,
        })
    }

    /// Removes every entry and index row (not the purge log). Returns how
    /// many entries there were.
    ///
    /// A flush counts as a purge of everything: it takes a purge sequence
    /// number (so a fill that started before it is not stored as fresh
    /// after it), and every sink owes it, so the caches beside the node are
    /// emptied too (see [`sinks::flush_purge`]).
    pub fn flush_index(&self) -> Result<u64> {
        let removed = {
            let mut w = self.lock_writer();
            let cfs = self.cfs()?;
            let removed = self.count_all();
            let all = Range::all();
            let mut batch = WriteBatch::default();
            for cf in [cfs.entries, cfs.by_host, cfs.by_tag, cfs.objects, cfs.bodies] {
                batch.delete_range_cf(cf, &all.lower, &all.upper);
            }
            batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(0));
            self.delete_deferred_records(&mut batch, &cfs);
            let seq = self.purge_seq() + 1;
            let flush = sinks::flush_purge();
            let record = codec::encode_purge_record(&flush, 0);
            for sink in &self.opts.sinks {
                batch.put_cf(cfs.sinks, sinks::sink_key(sink, seq), &record);
            }
            batch.put_cf(cfs.meta, META_PURGE_SEQ, codec::encode_u64(seq));
            self.db.write_opt(batch, &self.write_opts(self.opts.sync))?;
            self.set_count(0);
            self.forget_all_objects();
            self.clear_deferred(&mut w);
            self.purge_seq.store(seq, Ordering::Release);
            w.recent.push(seq, flush);
            removed
        };
        self.mark_index_dirty();
        Ok(removed)
    }

    /// Deletes expired entries, scanning at most `max_scan` entries from
    /// where the previous call stopped (wrapping around at the end), so a
    /// periodic call bounds its work. Returns how many were removed.
    pub fn remove_expired(&self, now_ms: u64, max_scan: u64) -> Result<u64> {
        let mut w = self.lock_writer();
        let cfs = self.cfs()?;
        let range = Range::from(w.expiry_cursor.take().unwrap_or_default());
        let mut expired = Vec::new();
        let mut scanned = 0u64;
        let mut cursor = None;
        self.for_each_row(cfs.entries, &range, u64::MAX, |k, v| {
            if scanned >= max_scan {
                cursor = Some(k.to_vec());
                return Ok(false);
            }
            scanned += 1;
            let e = codec::decode_entry(k, v).map_err(corrupt("entry"))?;
            if e.is_expired(now_ms) {
                expired.push(e);
            }
            Ok(true)
        })?;
        w.expiry_cursor = cursor;
        if expired.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        let mut dropped = super::objects::Dropped::default();
        for e in &expired {
            delete_entry(&mut batch, &cfs, e);
        }
        let urls: Vec<&str> = expired.iter().map(|e| e.key.as_str()).collect();
        self.drop_objects_of(&mut batch, &cfs, &urls, &mut dropped)?;
        let removed = expired.len() as u64;
        let count = self.count_all().saturating_sub(removed);
        batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(count));
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.set_count(count);
        self.forget_objects(&dropped);
        Ok(removed)
    }
}
