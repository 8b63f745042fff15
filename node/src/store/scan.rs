//! Reads shared by queries and purges: bounded range scans and batched
//! point lookups.

use rocksdb::{ColumnFamily, ReadOptions};

use super::codec::{self, Range};
use super::*;

/// Entry keys, as index rows name them.
pub(crate) type Keys = Vec<Vec<u8>>;

/// Handles of all column families, looked up once per operation.
pub(crate) struct Cfs<'a> {
    pub entries: &'a ColumnFamily,
    pub by_host: &'a ColumnFamily,
    pub by_tag: &'a ColumnFamily,
    pub purges: &'a ColumnFamily,
    pub meta: &'a ColumnFamily,
    pub objects: &'a ColumnFamily,
    pub bodies: &'a ColumnFamily,
    pub sinks: &'a ColumnFamily,
}

/// Every iterator gets explicit bounds: RocksDB then stops at the bound
/// instead of stepping over tombstones beyond it, which matters right after
/// a large range was purged.
pub(crate) fn bounded(range: &Range) -> ReadOptions {
    let mut r = ReadOptions::default();
    r.set_iterate_lower_bound(range.lower.clone());
    r.set_iterate_upper_bound(range.upper.clone());
    r
}

impl Store {
    pub(crate) fn cfs(&self) -> Result<Cfs<'_>> {
        Ok(Cfs {
            entries: self.cf(CF_ENTRIES)?,
            by_host: self.cf(CF_BY_HOST)?,
            by_tag: self.cf(CF_BY_TAG)?,
            purges: self.cf(CF_PURGES)?,
            meta: self.cf(CF_META)?,
            objects: self.cf(CF_OBJECTS)?,
            bodies: self.cf(CF_BODIES)?,
            sinks: self.cf(CF_SINKS)?,
        })
    }

    /// Calls `f` with each row of `range` in key order, at most `limit`
    /// rows; `f` returns false to stop early.
    pub(crate) fn for_each_row(
        &self,
        cf: &ColumnFamily,
        range: &Range,
        limit: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator_cf_opt(cf, bounded(range));
        it.seek_to_first();
        let mut seen = 0u64;
        while seen < limit {
            let Some((k, v)) = it.item() else { break };
            if !f(k, v)? {
                break;
            }
            seen += 1;
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Entry keys named by the index rows of `range` (rows of `cf` have
    /// `fields` components before the key).
    pub(crate) fn scan_keys(
        &self,
        cf: &ColumnFamily,
        range: &Range,
        limit: u64,
        fields: usize,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(self.scan_keys_from(cf, range, limit, fields)?.0)
    }

    /// As [`Store::scan_keys`], with the last row read, where a scan in
    /// slices resumes (`Range::past`).
    pub(crate) fn scan_keys_from(
        &self,
        cf: &ColumnFamily,
        range: &Range,
        limit: u64,
        fields: usize,
    ) -> Result<(Keys, Option<Vec<u8>>)> {
        let mut keys = Vec::new();
        let mut last = Vec::new();
        self.for_each_row(cf, range, limit, |row, _| {
            keys.push(codec::row_entry_key(row, fields).map_err(corrupt("index row"))?.to_vec());
            last.clear();
            last.extend_from_slice(row);
            Ok(true)
        })?;
        Ok((keys, (!last.is_empty()).then_some(last)))
    }

    pub(crate) fn count_rows(&self, cf_name: &'static str, range: &Range, limit: u64) -> Result<u64> {
        let mut n = 0u64;
        self.for_each_row(self.cf(cf_name)?, range, limit, |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Looks up many entries in one batched read, in the order given.
    pub(crate) fn fetch_entries<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Entry>>> {
        let entries = self.cf(CF_ENTRIES)?;
        let found = self.db.batched_multi_get_cf(entries, keys.iter(), false);
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(found) {
            out.push(match value? {
                Some(v) => Some(codec::decode_entry(key.as_ref(), &v).map_err(corrupt("entry"))?),
                None => None,
            });
        }
        Ok(out)
    }

    pub(crate) fn fetch_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        match self.db.get_pinned_cf(self.cf(CF_ENTRIES)?, key)? {
            Some(v) => Ok(Some(codec::decode_entry(key, &v).map_err(corrupt("entry"))?)),
            None => Ok(None),
        }
    }
}
