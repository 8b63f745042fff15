//! Size-bounded eviction: least recently used objects leave first.
//!
//! The order lives in memory (rebuilt from the store at start-up, in key
//! order, so a restart forgets recency but not sizes); the byte count that
//! decides when to evict is the store's own, so objects a purge already
//! removed never make the cache evict early. An id the store no longer has
//! is skipped when it comes up.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use crate::store::{ObjectId, Store};

/// Ids remembered at most; past it the oldest is evicted even under the
/// byte limit, so the order cannot grow without bound on tiny objects.
const MAX_TRACKED: usize = 16 << 20;

#[derive(Clone)]
pub(crate) struct Lru {
    order: Arc<Mutex<lru::LruCache<ObjectId, ()>>>,
    limit_bytes: u64,
}

impl Lru {
    pub fn new(limit_bytes: u64) -> Lru {
        let cap = NonZeroUsize::new(MAX_TRACKED).unwrap_or(NonZeroUsize::MIN);
        Lru { order: Arc::new(Mutex::new(lru::LruCache::new(cap))), limit_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<ObjectId, ()>> {
        // The order is advisory: a panic mid-update leaves it usable.
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start-up: every stored object, oldest first.
    pub fn load(&self, store: &Store) -> crate::store::Result<usize> {
        let mut order = self.lock();
        store.each_object(|id, _| {
            order.put(id, ());
        })?;
        Ok(order.len())
    }

    pub fn touch(&self, id: &ObjectId) {
        self.lock().get(id);
    }

    /// A new object; returns an id pushed out by the count bound, if any.
    pub fn admit(&self, id: ObjectId) -> Option<ObjectId> {
        self.lock().push(id, ()).and_then(|(old, ())| (old != id).then_some(old))
    }

    /// Evicts least recently used objects until the store is under the
    /// limit. Bounded by the number of ids tracked. Returns how many went.
    pub fn evict_over(&self, store: &Store) -> u64 {
        let mut evicted = 0;
        let mut budget = self.lock().len();
        while store.object_stats().1 > self.limit_bytes && budget > 0 {
            budget -= 1;
            let Some((id, ())) = self.lock().pop_lru() else { break };
            match store.evict_object(&id) {
                Ok(Some(len)) => {
                    evicted += 1;
                    super::metrics::evicted(len);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "eviction failed");
                    break;
                }
            }
        }
        evicted
    }
}
