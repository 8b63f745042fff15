//! Cached HTTP objects: what the edge serves, kept in the same database as
//! the index so a purge removes an object and its index entry in one batch.
//!
//! - `objects`: [`ObjectId`] (hash of the URL, then of the variant) ->
//!   [`ObjectRecord`] (URL, size, serialized response head, purge state).
//! - `bodies`: `ObjectId | chunk (u32 BE)` -> up to [`CHUNK_BYTES`] of the
//!   body, in RocksDB's blob files, so a hit streams chunk by chunk and a
//!   range request starts at the chunk it needs.
//!
//! An object always has an index entry under its URL; the entry carries the
//! tags, host and path purges select by. Deleting the entry (hard purge,
//! expiry, flush) deletes the URL's objects in the same batch; evicting the
//! URL's last object deletes the entry.
//!
//! The fill/purge race: a fill records [`Store::purge_seq`] when it starts.
//! When it is stored, under the writer lock that also applies purges, any
//! purge applied since then that matches the object drops the fill, so an
//! object fetched before a purge never lands after it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use purgecast_core::{CacheKey, Purge, Selector};
use rocksdb::WriteBatch;

use super::codec::{self, Range};
use super::deferred::Verdict;
use super::entries::put_entry;
use super::hot::Head;
use super::scan::Cfs;
use super::*;

/// Body bytes per row: big enough that a 1 MiB object is four reads, small
/// enough that a range request does not read much it then discards.
pub const CHUNK_BYTES: usize = 256 << 10;

/// How many recent purges the race check remembers. A fill that started
/// before the oldest of them is dropped: it has been in flight for longer
/// than this many purges took, and it cannot be proven untouched.
const RECENT_PURGES: usize = 16_384;

/// Hash of the URL (pingora's primary key hash) then of the variant (zero
/// when the response does not vary).
pub type ObjectId = [u8; 32];

/// Id of a URL's variant; `variance` is pingora's variance hash.
pub fn object_id(url_hash: [u8; 16], variance: Option<[u8; 16]>) -> ObjectId {
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&url_hash);
    if let Some(v) = variance {
        id[16..].copy_from_slice(&v);
    }
    id
}

/// The primary key hash of a normalised URL, the same pingora computes for
/// a cache key whose primary is that URL.
pub fn url_hash(url: &str) -> [u8; 16] {
    pingora_cache::key::hash_key(url)
}

/// One stored object, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRecord {
    /// Normalised URL: the index entry this object belongs to.
    pub url: String,
    pub body_len: u64,
    /// When a soft purge made it stale (Unix ms); 0 = not purged.
    pub stale_since_ms: u64,
    /// The purge sequence when the fill (or revalidation) that wrote it
    /// started.
    pub stored_seq: u64,
    /// When the object may be swept: its freshness plus its serve-stale
    /// windows (Unix ms).
    pub expires_at_ms: u64,
    /// pingora's `CacheMeta`, serialized (internal part, response head).
    pub meta_internal: Vec<u8>,
    pub meta_header: Vec<u8>,
}

impl ObjectRecord {
    pub fn chunks(&self) -> u32 {
        chunk_count(self.body_len)
    }
}

fn chunk_count(len: u64) -> u32 {
    u32::try_from(len.div_ceil(CHUNK_BYTES as u64)).unwrap_or(u32::MAX)
}

/// A fetched response, ready to be stored.
#[derive(Debug)]
pub struct Fill {
    pub id: ObjectId,
    /// The URL it was fetched for.
    pub key: CacheKey,
    pub tags: Vec<String>,
    /// The zone of its host ("" = none).
    pub zone: String,
    /// `url` must equal `key.key`; `body_len` the sum of `body`.
    pub record: ObjectRecord,
    pub body: Vec<Bytes>,
    /// [`Store::purge_seq`] when the fetch started.
    pub started_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// Stored; `replaced` is the size of the copy it replaced.
    Stored { replaced: Option<u64> },
    /// A purge applied while the fill was in flight matches it: not stored.
    Raced,
}

/// Purges applied recently, for the race check (writer state).
#[derive(Debug, Default)]
pub(crate) struct RecentPurges {
    /// (sequence, purge), oldest first.
    log: VecDeque<(u64, Purge)>,
    /// Every purge up to this sequence has been forgotten.
    floor: u64,
}

impl RecentPurges {
    pub(crate) fn starting_at(seq: u64) -> Self {
        RecentPurges { log: VecDeque::new(), floor: seq }
    }

    pub(crate) fn push(&mut self, seq: u64, purge: Purge) {
        self.log.push_back((seq, purge));
        while self.log.len() > RECENT_PURGES {
            if let Some((s, _)) = self.log.pop_front() {
                self.floor = s;
            }
        }
    }

    /// Whether a purge applied after `since` may have matched this object.
    fn hits(&self, since: u64, zone: &str, key: &CacheKey, tags: &[String]) -> bool {
        if since < self.floor {
            return true;
        }
        self.log.iter().rev().take_while(|(seq, _)| *seq > since).any(|(_, p)| reaches(p, zone, key, tags))
    }
}

/// Whether `purge` matches an object of `zone` at `key` with `tags`, as
/// the apply does (see `apply.rs`): tags and everything only within the
/// purge's zone; URLs, hosts and prefixes within it too, or on objects of
/// no zone (cached before zones were configured).
pub(crate) fn reaches(purge: &Purge, zone: &str, key: &CacheKey, tags: &[String]) -> bool {
    let same_zone = purge.zone == zone;
    let located = purge.zone.is_empty() || same_zone || zone.is_empty();
    purge.selectors.iter().any(|s| match s {
        Selector::Url(_) | Selector::Host(_) | Selector::Prefix { .. } => located && s.matches(key, tags),
        Selector::Tag(_) => same_zone && s.matches(key, tags),
        Selector::Everything => purge.zone.is_empty() || same_zone,
    })
}

/// Objects deleted by one batch, so counters stay exact and a later step of
/// the same batch does not rewrite what an earlier one deleted.
#[derive(Debug, Default)]
pub(crate) struct Dropped {
    pub ids: HashSet<ObjectId>,
    pub bytes: u64,
    /// Objects the batch marked stale (soft purge): not deleted, but their
    /// copies in the hot tier are out of date.
    pub staled: Vec<ObjectId>,
}

impl Store {
    /// Purges applied on this node so far; persisted, never decreasing.
    pub fn purge_seq(&self) -> u64 {
        self.purge_seq.load(Ordering::Acquire)
    }

    /// Stored objects and their body bytes.
    pub fn object_stats(&self) -> (u64, u64) {
        (self.objects.load(Ordering::Acquire), self.object_bytes.load(Ordering::Acquire))
    }

    /// Copies of small objects in the hot tier and the bytes they hold.
    pub fn memory_stats(&self) -> (usize, u64) {
        self.hot.stats()
    }

    pub fn object(&self, id: &ObjectId) -> Result<Option<ObjectRecord>> {
        match self.db.get_pinned_cf(self.cf(CF_OBJECTS)?, id)? {
            Some(v) => Ok(Some(codec::decode_object(&v).map_err(corrupt("object"))?)),
            None => Ok(None),
        }
    }

    /// An object's record and its first body chunk, read from one snapshot
    /// (a purge between two separate reads would cut the response of an
    /// object the lookup found, and one read serves a small object whole),
    /// or from the hot tier's copy of them.
    pub fn object_head(&self, id: &ObjectId) -> Result<Option<Arc<Head>>> {
        if let Some(head) = self.hot.get(id) {
            if !self.deferred_since(head.rec.stored_seq) {
                return Ok(Some(head));
            }
        }
        let generation = self.hot.generation();
        let snap = self.db.snapshot();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&snap);
        let Some(v) = self.db.get_pinned_cf_opt(self.cf(CF_OBJECTS)?, id, &ro)? else { return Ok(None) };
        let mut rec = codec::decode_object(&v).map_err(corrupt("object"))?;
        let judged = self.deferred_since(rec.stored_seq);
        if judged {
            // A deferred purge may reach it: its entry says how (zone, tags).
            if let Some(v) = self.db.get_pinned_cf_opt(self.cf(CF_ENTRIES)?, rec.url.as_bytes(), &ro)? {
                let e = codec::decode_entry(rec.url.as_bytes(), &v).map_err(corrupt("entry"))?;
                let key = CacheKey { key: e.key, host: e.host, path: e.path };
                match self.verdict(rec.stored_seq, &e.zone, &key, &e.tags) {
                    Verdict::Untouched => {}
                    Verdict::Purged => return Ok(None),
                    Verdict::Stale(at) => {
                        let at = at.max(1);
                        if rec.stale_since_ms == 0 || rec.stale_since_ms > at {
                            rec.stale_since_ms = at;
                        }
                    }
                }
            }
        }
        let first = if rec.body_len == 0 {
            None
        } else {
            let chunk = self.db.get_pinned_cf_opt(self.cf(CF_BODIES)?, codec::chunk_key(id, 0), &ro)?;
            chunk.map(|c| Bytes::copy_from_slice(&c))
        };
        let head = Arc::new(Head::new(rec, first));
        // A copy a deferred purge judged differs from its row: not kept.
        if !judged {
            self.hot.offer(generation, *id, &head);
        }
        Ok(Some(head))
    }

    /// One chunk of an object's body; None if the object is gone.
    pub fn object_chunk(&self, id: &ObjectId, index: u32) -> Result<Option<Bytes>> {
        let v = self.db.get_pinned_cf(self.cf(CF_BODIES)?, codec::chunk_key(id, index))?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Stores a fetched object with its index entry, unless a purge applied
    /// since the fetch started matches it.
    pub fn store_object(&self, mut fill: Fill) -> Result<FillOutcome> {
        // What deferred purges judge the object by (see `deferred.rs`).
        fill.record.stored_seq = fill.started_seq;
        let w = self.lock_writer();
        if w.recent.hits(fill.started_seq, &fill.zone, &fill.key, &fill.tags) {
            return Ok(FillOutcome::Raced);
        }
        let cfs = self.cfs()?;
        let mut batch = WriteBatch::default();
        let old_entry = self.fetch_entry(fill.key.key.as_bytes())?;
        // An entry a deferred hard purge already took is not merged into:
        // its URL's other objects are dropped now rather than inherit the
        // new entry's tags and come back to life.
        let mut dropped = Dropped::default();
        let mut merge_from = old_entry.clone();
        if let Some(old) = &old_entry {
            if self.as_read(old.clone()).is_none() {
                merge_from = None;
                for (id, rec) in self.objects_of(&cfs, &old.key)? {
                    if id != fill.id && rec.stored_seq < self.purge_seq() {
                        delete_object(&mut batch, &cfs, &id, &rec);
                        dropped.ids.insert(id);
                        dropped.bytes += rec.body_len;
                    }
                }
            }
        }
        let mut entry = Entry {
            key: fill.key.key.clone(),
            host: fill.key.host.clone(),
            path: fill.key.path.clone(),
            tags: fill.tags.clone(),
            size: fill.record.body_len,
            stored_at_ms: crate::clock::now_ms(),
            expires_at_ms: fill.record.expires_at_ms,
            stale: false,
            stale_since_ms: 0,
            zone: fill.zone.clone(),
            stored_seq: self.purge_seq(),
        };
        if let Some(old) = &merge_from {
            // Other variants of the URL keep the entry's tags and lifetime.
            entry.tags.extend(old.tags.iter().cloned());
            entry.tags.sort_unstable();
            entry.tags.dedup();
            entry.tags.truncate(MAX_TAGS);
            entry.expires_at_ms = entry.expires_at_ms.max(old.expires_at_ms);
        }
        put_entry(&mut batch, &cfs, &entry, old_entry.as_ref());
        let count = self.count_all() + u64::from(old_entry.is_none());

        let old = self.object(&fill.id)?;
        let new_chunks = fill.record.chunks();
        if let Some(old) = &old {
            for i in new_chunks..old.chunks() {
                batch.delete_cf(cfs.bodies, codec::chunk_key(&fill.id, i));
            }
        }
        batch.put_cf(cfs.objects, fill.id, codec::encode_object(&fill.record));
        let mut chunks = rechunk(&fill.body);
        for (i, chunk) in chunks.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            batch.put_cf(cfs.bodies, codec::chunk_key(&fill.id, i), chunk);
        }
        batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(count));
        // Cached content need not survive an OS crash: no fsync.
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.set_count(count);
        self.forget_objects(&dropped);
        let body_len = fill.record.body_len;
        let first = (!chunks.is_empty()).then(|| Bytes::from(chunks.swap_remove(0)));
        self.hot.replace(fill.id, Head::new(fill.record, first));
        let replaced = old.map(|o| o.body_len);
        if replaced.is_none() {
            self.objects.fetch_add(1, Ordering::AcqRel);
        }
        self.object_bytes.fetch_add(body_len, Ordering::AcqRel);
        self.object_bytes.fetch_sub(replaced.unwrap_or(0), Ordering::AcqRel);
        drop(w);
        Ok(FillOutcome::Stored { replaced })
    }

    /// A revalidation (304) gave the object new metadata. Not written if the
    /// object is gone or a purge since `started_seq` matches its URL, for
    /// the same reason a fill is dropped. Returns whether it was written.
    pub fn refresh_object(
        &self,
        id: &ObjectId,
        meta: (Vec<u8>, Vec<u8>),
        expires_at_ms: u64,
        started_seq: u64,
    ) -> Result<bool> {
        let w = self.lock_writer();
        let Some(mut rec) = self.object(id)? else { return Ok(false) };
        let Some(entry) = self.fetch_entry(rec.url.as_bytes())? else { return Ok(false) };
        let key = CacheKey { key: entry.key.clone(), host: entry.host.clone(), path: entry.path.clone() };
        if w.recent.hits(started_seq, &entry.zone, &key, &entry.tags) {
            return Ok(false);
        }
        (rec.meta_internal, rec.meta_header) = meta;
        rec.stale_since_ms = 0;
        rec.stored_seq = started_seq;
        rec.expires_at_ms = expires_at_ms;
        let cfs = self.cfs()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cfs.objects, id, codec::encode_object(&rec));
        if entry.stale || entry.expires_at_ms < expires_at_ms {
            let mut fresh = entry.clone();
            fresh.stale = false;
            fresh.stale_since_ms = 0;
            fresh.expires_at_ms = fresh.expires_at_ms.max(expires_at_ms);
            fresh.stored_seq = fresh.stored_seq.max(started_seq);
            put_entry(&mut batch, &cfs, &fresh, Some(&entry));
        }
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.hot.forget([id]);
        Ok(true)
    }

    /// Removes one object to make room; the URL's index entry goes with its
    /// last object. Returns the body size freed, or None if it was gone.
    pub fn evict_object(&self, id: &ObjectId) -> Result<Option<u64>> {
        let _w = self.lock_writer();
        let Some(rec) = self.object(id)? else { return Ok(None) };
        let cfs = self.cfs()?;
        let mut batch = WriteBatch::default();
        delete_object(&mut batch, &cfs, id, &rec);
        let siblings = self.objects_of(&cfs, &rec.url)?.into_iter().filter(|(other, _)| other != id).count();
        let mut count = self.count_all();
        if siblings == 0 {
            if let Some(e) = self.fetch_entry(rec.url.as_bytes())? {
                super::entries::delete_entry(&mut batch, &cfs, &e);
                count = count.saturating_sub(1);
                batch.put_cf(cfs.meta, META_COUNT, codec::encode_u64(count));
            }
        }
        self.db.write_opt(batch, &self.write_opts(false))?;
        self.hot.forget([id]);
        self.set_count(count);
        self.objects.fetch_sub(1, Ordering::AcqRel);
        self.object_bytes.fetch_sub(rec.body_len, Ordering::AcqRel);
        Ok(Some(rec.body_len))
    }

    /// Calls `f(id, body_len)` for every stored object (start-up: the edge
    /// rebuilds its eviction order and the counters come from the same scan).
    pub fn each_object(&self, mut f: impl FnMut(ObjectId, u64)) -> Result<()> {
        self.for_each_row(self.cf(CF_OBJECTS)?, &Range::all(), u64::MAX, |k, v| {
            f(object_key(k)?, codec::decode_object_len(v).map_err(corrupt("object"))?);
            Ok(true)
        })
    }

    /// Every variant stored for a URL.
    pub(crate) fn objects_of(&self, cfs: &Cfs<'_>, url: &str) -> Result<Vec<(ObjectId, ObjectRecord)>> {
        self.objects_of_many(cfs, &[url])
    }

    /// The objects of many URLs with one iterator. The URL hashes are
    /// walked in key order and the iterator steps forward with `next` when
    /// the next hash is close, which costs a fraction of a seek: a tag purge
    /// of 100k URLs among 1M objects was 87% per-URL seeks before.
    pub(crate) fn objects_of_many(&self, cfs: &Cfs<'_>, urls: &[&str]) -> Result<Vec<(ObjectId, ObjectRecord)>> {
        /// Steps tried before a seek: about the distance between targets
        /// when one object in ten is purged.
        const MAX_STEPS: usize = 16;
        let mut targets: Vec<[u8; 16]> = urls.iter().map(|u| url_hash(u)).collect();
        targets.sort_unstable();
        targets.dedup();
        let (Some(first), Some(last)) = (targets.first(), targets.last()) else { return Ok(Vec::new()) };
        let range = Range { lower: first.to_vec(), upper: Range::prefix(last.to_vec()).upper };
        let mut it = self.db.raw_iterator_cf_opt(cfs.objects, super::scan::bounded(&range));
        it.seek(first);
        let mut out = Vec::new();
        for t in &targets {
            let mut steps = 0;
            while steps < MAX_STEPS && it.key().is_some_and(|k| k < t.as_slice()) {
                it.next();
                steps += 1;
            }
            if it.key().is_some_and(|k| k < t.as_slice()) {
                it.seek(t);
            }
            while let Some((k, v)) = it.item() {
                if !k.starts_with(t) {
                    break;
                }
                out.push((object_key(k)?, codec::decode_object(v).map_err(corrupt("object"))?));
                it.next();
            }
        }
        it.status()?;
        Ok(out)
    }

    /// Adds the deletion of every object of `urls` to `batch`.
    pub(crate) fn drop_objects_of(
        &self,
        batch: &mut WriteBatch,
        cfs: &Cfs<'_>,
        urls: &[&str],
        dropped: &mut Dropped,
    ) -> Result<()> {
        for (id, rec) in self.objects_of_many(cfs, urls)? {
            if dropped.ids.insert(id) {
                delete_object(batch, cfs, &id, &rec);
                dropped.bytes += rec.body_len;
            }
        }
        Ok(())
    }

    /// Adds marking every object of `urls` stale since `since_ms` to
    /// `batch` (soft purge). The earliest time wins: purges arrive out of
    /// order.
    pub(crate) fn stale_objects_of(
        &self,
        batch: &mut WriteBatch,
        cfs: &Cfs<'_>,
        urls: &[&str],
        since_ms: u64,
        dropped: &mut Dropped,
    ) -> Result<()> {
        let since_ms = since_ms.max(1);
        for (id, mut rec) in self.objects_of_many(cfs, urls)? {
            if dropped.ids.contains(&id) || (rec.stale_since_ms != 0 && rec.stale_since_ms <= since_ms) {
                continue;
            }
            rec.stale_since_ms = since_ms;
            batch.put_cf(cfs.objects, id, codec::encode_object(&rec));
            dropped.staled.push(id);
        }
        Ok(())
    }

    /// After a batch that deleted `dropped` was written.
    pub(crate) fn forget_objects(&self, dropped: &Dropped) {
        self.hot.forget(dropped.ids.iter().chain(&dropped.staled));
        let n = dropped.ids.len() as u64;
        let _ = self.objects.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(n)));
        let b = dropped.bytes;
        let _ = self.object_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(b)));
    }

    /// After a batch that deleted every object was written.
    pub(crate) fn forget_all_objects(&self) {
        self.hot.clear();
        self.objects.store(0, Ordering::Release);
        self.object_bytes.store(0, Ordering::Release);
    }
}

/// An `objects` row's key: the object id.
fn object_key(k: &[u8]) -> Result<ObjectId> {
    k.try_into().map_err(|_| corrupt("object key")(codec::CodecError::Key(k.len())))
}

pub(crate) fn delete_object(batch: &mut WriteBatch, cfs: &Cfs<'_>, id: &ObjectId, rec: &ObjectRecord) {
    batch.delete_cf(cfs.objects, id);
    for i in 0..rec.chunks() {
        batch.delete_cf(cfs.bodies, codec::chunk_key(id, i));
    }
}

/// The body cut into rows of exactly [`CHUNK_BYTES`] (the last shorter),
/// whatever sizes it arrived in, so chunk `i` starts at `i * CHUNK_BYTES`.
fn rechunk(parts: &[Bytes]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    for part in parts {
        let mut rest: &[u8] = part;
        while !rest.is_empty() {
            let take = (CHUNK_BYTES - cur.len()).min(rest.len());
            cur.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if cur.len() == CHUNK_BYTES {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rechunk_cuts_at_fixed_offsets_whatever_the_input_sizes() {
        let parts = vec![Bytes::from(vec![1u8; CHUNK_BYTES - 3]), Bytes::from(vec![2u8; 10]), Bytes::new()];
        let chunks = rechunk(&parts);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), CHUNK_BYTES);
        assert_eq!(&chunks[0][CHUNK_BYTES - 3..], &[2, 2, 2]);
        assert_eq!(chunks[1], vec![2u8; 7]);
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(CHUNK_BYTES as u64 + 1), 2);
    }
}
