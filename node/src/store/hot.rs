//! The hot tier: recently served small objects (record and whole body)
//! kept in memory, so a hit on them reads no RocksDB row.
//!
//! It is a copy, never the truth: every write that changes or removes an
//! object row forgets the object here, under the writer lock and after the
//! batch is written (`Store::store_object`, `refresh_object`,
//! `evict_object`, a purge's commit, the expiry and deferred sweeps, a
//! flush). A purge is acknowledged only after its commit returns, so no
//! read that starts after the ack finds a purged copy here. Pending
//! deferred purges are judged at read time, as for rows (see
//! `Store::object_head`).
//!
//! A copy read from RocksDB is only admitted if nothing was forgotten since
//! that read began ([`Hot::generation`]): otherwise a purge could forget an
//! object between the read and the admission, and the old copy would land
//! after it.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use super::{ObjectId, ObjectRecord, CHUNK_BYTES};

/// An object's record and its first body chunk (the whole body when the
/// object has one chunk), as a hit needs them.
#[derive(Debug)]
pub struct Head {
    pub rec: ObjectRecord,
    pub first: Option<Bytes>,
    /// What the reader made of `rec` (the edge: its decoded `CacheMeta`),
    /// kept with the copy so a hit in memory decodes nothing.
    decoded: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Head {
    pub(crate) fn new(rec: ObjectRecord, first: Option<Bytes>) -> Head {
        Head { rec, first, decoded: OnceLock::new() }
    }

    /// `decode(&self.rec)`, computed once per copy.
    pub fn decoded<T, E>(&self, decode: impl FnOnce(&ObjectRecord) -> Result<T, E>) -> Result<T, E>
    where
        T: Any + Clone + Send + Sync,
    {
        if let Some(t) = self.decoded.get().and_then(|d| d.downcast_ref::<T>()) {
            return Ok(t.clone());
        }
        let t = decode(&self.rec)?;
        // A racing reader may have set it first; both decoded the same row.
        let _ = self.decoded.set(Box::new(t.clone()));
        Ok(t)
    }

    /// Bytes this copy holds, for the tier's budget: the record and body,
    /// plus a rough allowance for the decoded head (a header map) and the
    /// map slot.
    fn weight(&self) -> u64 {
        const OVERHEAD: usize = 1024;
        let rec = self.rec.url.len() + self.rec.meta_internal.len() + self.rec.meta_header.len();
        (rec + self.first.as_ref().map_or(0, Bytes::len) + OVERHEAD) as u64
    }

    /// Whether the whole object is in this copy.
    fn is_whole(&self) -> bool {
        self.rec.body_len as usize <= CHUNK_BYTES
            && self.first.as_ref().map_or(0, Bytes::len) as u64 == self.rec.body_len
    }
}

struct Inner {
    map: lru::LruCache<ObjectId, Arc<Head>>,
    bytes: u64,
    /// Bumped by every forget; see the module comment.
    generation: u64,
}

/// See the module comment. Off when its budget is 0.
pub(crate) struct Hot {
    inner: Mutex<Inner>,
    budget: u64,
}

impl Hot {
    pub(crate) fn new(budget: u64) -> Hot {
        // Bounded by the byte budget, not by a count.
        let inner = Inner { map: lru::LruCache::unbounded(), bytes: 0, generation: 0 };
        Hot { inner: Mutex::new(inner), budget }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only a copy: a panic mid-update leaves at worst a stale budget.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &ObjectId) -> Option<Arc<Head>> {
        if self.budget == 0 {
            return None;
        }
        self.lock().map.get(id).cloned()
    }

    /// Taken before a read whose result may be [`Hot::offer`]ed.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A copy read from RocksDB, admitted only if nothing was forgotten
    /// since `generation` was taken before the read.
    pub(crate) fn offer(&self, generation: u64, id: ObjectId, head: &Arc<Head>) {
        if self.budget == 0 || !head.is_whole() || head.weight() > self.budget / 8 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation == generation && !inner.map.contains(&id) {
            self.admit(&mut inner, id, head.clone());
        }
    }

    /// A fill just written (the caller holds the writer lock): the new copy
    /// replaces the old one.
    pub(crate) fn replace(&self, id: ObjectId, head: Head) {
        let mut inner = self.lock();
        Self::remove(&mut inner, &id);
        inner.generation += 1;
        if self.budget > 0 && head.is_whole() && head.weight() <= self.budget / 8 {
            self.admit(&mut inner, id, Arc::new(head));
        }
    }

    /// Objects a write just changed or removed.
    pub(crate) fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a ObjectId>) {
        let mut inner = self.lock();
        inner.generation += 1;
        // A purge of 100k objects should not look each up in an empty tier
        // (always empty on a node without an edge).
        if inner.map.is_empty() {
            return;
        }
        for id in ids {
            Self::remove(&mut inner, id);
        }
    }

    /// Every object (a flush, a purge of everything).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.clear();
        inner.bytes = 0;
    }

    /// Copies held and their bytes.
    pub(crate) fn stats(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }

    fn remove(inner: &mut Inner, id: &ObjectId) {
        if let Some(old) = inner.map.pop(id) {
            inner.bytes = inner.bytes.saturating_sub(old.weight());
        }
    }

    fn admit(&self, inner: &mut Inner, id: ObjectId, head: Arc<Head>) {
        inner.bytes += head.weight();
        if let Some(old) = inner.map.put(id, head) {
            inner.bytes = inner.bytes.saturating_sub(old.weight());
        }
        while inner.bytes > self.budget {
            let Some((_, old)) = inner.map.pop_lru() else { break };
            inner.bytes = inner.bytes.saturating_sub(old.weight());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(url: &str, body: &[u8]) -> Head {
        let rec = ObjectRecord { url: url.into(), body_len: body.len() as u64, ..ObjectRecord::default() };
        Head::new(rec, Some(Bytes::copy_from_slice(body)))
    }

    #[test]
    fn an_offer_made_across_a_forget_is_refused_and_the_budget_holds() {
        let hot = Hot::new(64 << 10);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let g = hot.generation();
        hot.forget([&b]);
        hot.offer(g, a, &Arc::new(head("http://x/a", b"old")));
        assert!(hot.get(&a).is_none(), "a copy read before a forget must not be admitted");
        let g = hot.generation();
        hot.offer(g, a, &Arc::new(head("http://x/a", b"new")));
        assert_eq!(hot.get(&a).and_then(|h| h.first.clone()), Some(Bytes::from_static(b"new")));
        hot.forget([&a]);
        assert!(hot.get(&a).is_none());

        for i in 0..64u8 {
            hot.replace([i; 32], head("http://x/b", &[i; 512]));
        }
        let (n, bytes) = hot.stats();
        assert!(bytes <= 64 << 10 && n < 64 && n > 0, "{n} copies, {bytes} bytes");
        assert!(hot.get(&[63; 32]).is_some() && hot.get(&[0; 32]).is_none(), "least recent go first");
        hot.clear();
        assert_eq!(hot.stats(), (0, 0));
    }

    #[test]
    fn a_copy_without_its_whole_body_or_over_an_eighth_of_the_budget_stays_out() {
        let hot = Hot::new(8 << 10);
        let mut partial = head("http://x/p", b"abc");
        partial.rec.body_len = 10;
        hot.replace([1; 32], partial);
        hot.replace([2; 32], head("http://x/big", &[0; 2048]));
        assert_eq!(hot.stats().0, 0);
        let decoded: Result<usize, ()> = head("http://x/d", b"d").decoded(|r| Ok(r.url.len()));
        assert_eq!(decoded, Ok(10));
    }
}
