//! RocksDB-backed cache index, purge log and node metadata.
//!
//! Column families:
//! - `entries`: cache key (normalised URL) -> [`Entry`] fields.
//! - `by_host`: `host \0 path \0 key` -> empty; host and prefix purges are
//!   range scans.
//! - `by_tag`: `tag \0 key` -> empty.
//! - `purges`: applied-purge log, `origin | epoch | seq` (u64 BE each) ->
//!   the purge and when it was applied, to restore the engine on restart.
//! - `meta`: entry counter, boot epoch, purge sequence, format version,
//!   small node values.
//! - `objects`, `bodies`: the edge's cached responses (see [`objects`]).
//! - `sinks`: purges external caches have not confirmed (see [`sinks`]).
//!
//! Every change to an entry changes its index rows and the entry counter in
//! the same `WriteBatch`, and a purge's effects and its log record are one
//! batch too, so after a crash the log never claims a purge the index does
//! not reflect (or the reverse).
//!
//! Expiry is a read-time view: [`Store::get`] hides an entry whose
//! `expires_at_ms` (0 = never) has passed, while lists, counts and purges
//! see every stored entry until [`Store::remove_expired`] sweeps it out.
//!
//! Writers (puts, purges, sweeps) are serialised by one mutex because each
//! reads before it writes; readers never take it.

mod apply;
mod codec;
mod compact;
mod compactor;
mod deferred;
mod entries;
mod hot;
mod log;
mod objects;
mod open;
mod scan;
mod sinks;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_deferred;
#[cfg(test)]
mod tests_durable;
#[cfg(test)]
mod tests_hot;
#[cfg(test)]
mod tests_objects;
#[cfg(test)]
mod tests_sinks;
#[cfg(test)]
mod tests_zones;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use purgecast_core::SelectorError;
use rocksdb::{ColumnFamily, WriteOptions, DB};

pub use apply::ApplyOutcome;
pub use codec::CodecError;
pub use compact::Compacted;
pub use compactor::{spawn_compactor, Compactor};
pub use deferred::SweepOutcome;
#[cfg(any(test, feature = "test-util"))]
pub use entries::IndexStats;
pub use entries::{EntryInput, MAX_TAGS};
pub use hot::Head;
pub use objects::{object_id, url_hash, Fill, FillOutcome, ObjectId, ObjectRecord, CHUNK_BYTES};

use compact::Dirty;
pub use sinks::{flush_purge, is_flush, Owed, MAX_SINK_NAME};

use objects::RecentPurges;

/// Format of the whole database; bumped when a layout changes incompatibly.
pub const FORMAT_VERSION: u64 = 1;

const CF_ENTRIES: &str = "entries";
const CF_BY_HOST: &str = "by_host";
const CF_BY_TAG: &str = "by_tag";
const CF_PURGES: &str = "purges";
const CF_META: &str = "meta";
const CF_OBJECTS: &str = "objects";
const CF_BODIES: &str = "bodies";
const CF_SINKS: &str = "sinks";

const META_FORMAT: &[u8] = b"s/format";
const META_COUNT: &[u8] = b"s/entry_count";
const META_BOOT: &[u8] = b"s/boot_epoch";
const META_PURGE_SEQ: &[u8] = b"s/purge_seq";
/// Callers' keys live under their own prefix so they cannot clobber ours.
const META_USER: &[u8] = b"u/";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("column family {0} is missing")]
    MissingCf(&'static str),
    #[error("database format {found} is not supported (this build reads format {FORMAT_VERSION})")]
    Format { found: u64 },
    #[error("corrupt {what}: {source}")]
    Corrupt { what: &'static str, source: CodecError },
    #[error("entry {index}: {source}")]
    BadEntry { index: usize, source: SelectorError },
    #[error("{0}")]
    BadZone(String),
    #[error("entry {index} has {count} tags (at most {MAX_TAGS})")]
    TooManyTags { index: usize, count: usize },
    #[error("{0}")]
    BadQuery(SelectorError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn corrupt(what: &'static str) -> impl Fn(CodecError) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync purge writes (and `flush_index`) before returning. A purge this
    /// node accepted must survive power loss, since it has told the client
    /// so; without sync a crash of the process still loses nothing, an OS
    /// crash may lose the last writes.
    pub sync: bool,
    /// Block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Memtable size of the entries and index column families.
    pub write_buffer_bytes: usize,
    /// Names of the external caches (`[[sink]]`) every applied purge is
    /// owed to until each confirms it.
    pub sinks: Vec<String>,
    /// A purge whose tag, host, prefix and zone selectors match more
    /// entries than this is deferred: in effect at once, swept after (see
    /// [`deferred`]).
    pub defer_over: u64,
    /// Bytes of small objects (one body chunk) kept decoded in memory
    /// besides the block cache, most recently served first (see [`hot`]);
    /// 0 = none.
    pub hot_bytes: u64,
    /// Entries removed, at least, before the index families are compacted
    /// whole (and a quarter of the store; see [`compact`]).
    pub compact_whole_after: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: true,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
            sinks: Vec::new(),
            defer_over: deferred::DEFER_OVER,
            hot_bytes: 64 << 20,
            compact_whole_after: compact::FULL_MIN_REMOVED,
        }
    }
}

/// One cached object, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised URL.
    pub key: String,
    pub host: String,
    /// Path with query, starting with '/'.
    pub path: String,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    pub size: u64,
    pub stored_at_ms: u64,
    /// Unix ms; 0 = never.
    pub expires_at_ms: u64,
    /// Set by a soft purge: serve only after revalidation.
    pub stale: bool,
    pub stale_since_ms: u64,
    /// The tenant zone of its host ("" = none): its tags are that zone's.
    pub zone: String,
    /// [`Store::purge_seq`] when it was written: deferred purges applied
    /// later do not reach it.
    pub stored_seq: u64,
}

impl Entry {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// State only writers touch, behind `Store::writer`.
#[derive(Debug, Default)]
struct Writer {
    /// Where the next expiry sweep resumes.
    expiry_cursor: Option<Vec<u8>>,
    /// Purges applied lately, for the fill/purge race check.
    recent: RecentPurges,
    /// Where the sweep of the oldest deferred purge resumes.
    sweep: deferred::SweepCursor,
}

pub struct Store {
    db: DB,
    opts: StoreOptions,
    writer: Mutex<Writer>,
    /// Exact number of entries; persisted in `meta` by every batch that
    /// changes it, mirrored here for lock-free reads.
    count: AtomicU64,
    dirty: Mutex<Dirty>,
    /// Entries removed since the last full compaction of the index
    /// families (see [`compact`]); not persisted, so a restart starts over.
    removed_since_full: AtomicU64,
    /// Purges applied so far (persisted in `meta` with each purge batch).
    purge_seq: AtomicU64,
    /// Stored objects and their body bytes (counted at open).
    objects: AtomicU64,
    object_bytes: AtomicU64,
    /// Purges in effect whose sweep is not finished, oldest first (see
    /// [`deferred`]); readers check rows against them.
    deferred: RwLock<Arc<Vec<deferred::Deferred>>>,
    deferred_len: AtomicUsize,
    /// Copies of recently served small objects (see [`hot`]).
    hot: hot::Hot,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).field("entries", &self.count_all()).finish()
    }
}

impl Store {
    fn cf(&self, name: &'static str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or(StoreError::MissingCf(name))
    }

    /// A panic while holding the lock cannot leave the in-memory state
    /// inconsistent with the database: it is only updated after a write
    /// succeeds. So a poisoned lock is safe to keep using.
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_opts(&self, sync: bool) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        w
    }

    /// Number of stored entries (expired ones included until swept). Exact.
    pub fn count_all(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Increments and durably records the boot counter; the first call on a
    /// new store returns 1. The node uses it as the epoch of its purge
    /// stream, so it must never repeat, hence the synced write.
    pub fn next_boot_epoch(&self) -> Result<u64> {
        let _w = self.lock_writer();
        let meta = self.cf(CF_META)?;
        let current = match self.db.get_pinned_cf(meta, META_BOOT)? {
            Some(v) => codec::decode_u64(&v).map_err(corrupt("boot epoch"))?,
            None => 0,
        };
        let next = current.saturating_add(1);
        self.db.put_cf_opt(meta, META_BOOT, codec::encode_u64(next), &self.write_opts(true))?;
        Ok(next)
    }

    /// A small value stored by the node (e.g. its identity), or None.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META)?, user_meta_key(key))?)
    }

    /// Durably stores a small node value.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.db.put_cf_opt(self.cf(CF_META)?, user_meta_key(key), value, &self.write_opts(true))?;
        Ok(())
    }
}

fn user_meta_key(key: &str) -> Vec<u8> {
    [META_USER, key.as_bytes()].concat()
}
