//! pingora-cache's `Storage` over the node's store: lookups read object
//! records and body chunks, a miss handler buffers the body and hands the
//! whole object to the store in one batch, with its index entry.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use purgecast_core::parse_url;

use super::eviction::Lru;
use super::metrics;
use super::tags::Tags;
use crate::store::{object_id, Fill, FillOutcome, ObjectId, ObjectRecord, Store, CHUNK_BYTES};

/// Put in the cache key's extensions when the key is made, before the
/// lookup: the purge sequence a fill for this key is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillStart(pub u64);

/// The zone of the request's host, carried from the request to the fill.
#[derive(Clone)]
pub(crate) struct FillZone(pub String);

pub(crate) struct RocksStorage {
    pub store: Arc<Store>,
    pub lru: Lru,
    pub tags: Tags,
}

fn internal(context: &'static str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::InternalError, format!("{context}: {e}"))
}

fn id_of(key: &impl CacheHashKey) -> ObjectId {
    object_id(key.primary_bin(), key.variance_bin())
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When the stored copy is of no use any more: fresh, then the longer of
/// its serve-stale windows.
fn expires_at_ms(meta: &CacheMeta) -> u64 {
    let windows = meta.stale_while_revalidate_sec().max(meta.stale_if_error_sec());
    ms(meta.fresh_until()).saturating_add(u64::from(windows) * 1000)
}

fn started(key: &CacheKey) -> u64 {
    // A key made elsewhere has no start: 0 is the most cautious answer (any
    // purge since the store opened drops the fill).
    key.extensions.get::<FillStart>().map_or(0, |s| s.0)
}

impl RocksStorage {
    /// Blocking store calls run off the async workers: a purge holding the
    /// writer lock may be fsyncing a large batch.
    async fn blocking<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| internal(context, e))?
            .map_err(|e| internal(context, e))
    }
}

#[async_trait]
impl Storage for RocksStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let id = id_of(key);
        let head = self.store.object_head(&id).map_err(|e| internal("object lookup", e))?;
        let Some(head) = head else { return Ok(None) };
        let meta = super::meta::decode(&head)?;
        self.lru.touch(&id);
        let rec = &head.rec;
        let hit = RocksHit {
            store: self.store.clone(),
            id,
            body_len: rec.body_len,
            pos: 0,
            end: rec.body_len,
            stale_since_ms: rec.stale_since_ms,
            first: head.first.clone(),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let url = key.primary_key_str().ok_or_else(|| internal("cache key", "not UTF-8"))?;
        let parsed = parse_url(url).map_err(|e| internal("cache key", e))?;
        let (meta_internal, meta_header) = meta.serialize()?;
        let record = ObjectRecord {
            url: parsed.key.clone(),
            body_len: 0,
            stale_since_ms: 0,
            stored_seq: started(key),
            expires_at_ms: expires_at_ms(meta),
            meta_internal,
            meta_header,
        };
        Ok(Box::new(RocksMiss {
            storage: self,
            fill: Some(Fill {
                id: id_of(key),
                key: parsed,
                tags: self.tags.of(meta.response_header()),
                zone: key.extensions.get::<FillZone>().map(|z| z.0.clone()).unwrap_or_default(),
                record,
                body: Vec::new(),
                started_seq: started(key),
            }),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _why: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let id = id_of(target.key());
        match self.blocking("evict", move |s| s.evict_object(&id)).await? {
            Some(_) => Ok(PurgeOutcome::Purged(None)),
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let id = id_of(key);
        let serialized = meta.serialize()?;
        let expires = expires_at_ms(meta);
        let since = started(key);
        let written = self.blocking("refresh", move |s| s.refresh_object(&id, serialized, expires, since)).await?;
        if written {
            metrics::revalidated();
        }
        Ok(written)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reads an object's body chunk by chunk from `pos` to `end` (exclusive).
pub(crate) struct RocksHit {
    store: Arc<Store>,
    id: ObjectId,
    body_len: u64,
    pos: u64,
    end: u64,
    /// Soft-purged at this time (Unix ms); 0 = not purged.
    pub stale_since_ms: u64,
    /// Chunk 0, read with the record: an object of one chunk is served
    /// whole even if a purge removes it right after the lookup.
    first: Option<Bytes>,
}

impl RocksHit {
    pub fn soft_purged_at(&self) -> Option<SystemTime> {
        (self.stale_since_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(self.stale_since_ms))
    }
}

#[async_trait]
impl HandleHit for RocksHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let chunk = self.pos / CHUNK_BYTES as u64;
        let index = u32::try_from(chunk).map_err(|e| internal("body chunk", e))?;
        // Gone mid-read: a purge removed the object after the lookup. The
        // response is cut rather than finished from a copy that no longer
        // exists.
        let data = match (index, &self.first) {
            (0, Some(first)) => first.clone(),
            _ => self
                .store
                .object_chunk(&self.id, index)
                .map_err(|e| internal("body read", e))?
                .ok_or_else(|| internal("body read", "object purged while it was being served"))?,
        };
        let offset = (self.pos - chunk * CHUNK_BYTES as u64) as usize;
        let want = (self.end - self.pos).min((data.len().saturating_sub(offset)) as u64) as usize;
        if want == 0 {
            return Err(internal("body read", "stored body is shorter than its record says"));
        }
        self.pos += want as u64;
        metrics::bytes_served(want);
        Ok(Some(data.slice(offset..offset + want)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        if start >= self.body_len {
            return Error::e_explain(ErrorType::InternalError, format!("seek start {start} >= {}", self.body_len));
        }
        self.pos = start;
        self.end = end.map_or(self.body_len, |e| (e as u64).min(self.body_len));
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body_len as usize
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Buffers a fetched body; `finish` stores it, index entry included.
struct RocksMiss {
    storage: &'static RocksStorage,
    fill: Option<Fill>,
}

#[async_trait]
impl HandleMiss for RocksMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if let Some(fill) = &mut self.fill {
            fill.record.body_len += data.len() as u64;
            fill.body.push(data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let fill = self.fill.take().ok_or_else(|| internal("fill", "finished twice"))?;
        let (id, len) = (fill.id, fill.record.body_len);
        let storage = self.storage;
        match storage.blocking("store object", move |s| s.store_object(fill)).await? {
            FillOutcome::Raced => metrics::fill_raced(),
            FillOutcome::Stored { .. } => {
                metrics::stored();
                let pushed_out = storage.lru.admit(id);
                let store = storage.store.clone();
                let lru = storage.lru.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(old) = pushed_out {
                        if let Ok(Some(len)) = store.evict_object(&old) {
                            metrics::evicted(len);
                        }
                    }
                    lru.evict_over(&store);
                });
            }
        }
        Ok(MissFinishType::Created(len as usize))
    }
}
