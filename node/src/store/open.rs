//! Opening the database: RocksDB tuning per column family, format check and
//! the entry counter.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use super::codec::{self, Range};
use super::compact::Dirty;
use super::*;

/// Deletion-triggered compaction: an SST file with at least this many
/// tombstones in any window of this many keys is queued for compaction, so
/// range scans over heavily purged hosts and tags do not wade through
/// tombstones until the next manual compaction.
const DELETION_WINDOW: usize = 1024;
const DELETION_TRIGGER: usize = 256;
const DELETION_RATIO: f64 = 0.5;

impl Store {
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);
        // The purge log and meta are written rarely; without a cap their
        // unflushed memtables would pin every WAL file written since.
        db_opts.set_max_total_wal_size(128 << 20);
        db_opts.set_compression_type(DBCompressionType::None);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_ENTRIES, cf_options(&opts, &cache, true)),
            ColumnFamilyDescriptor::new(CF_BY_HOST, cf_options(&opts, &cache, false)),
            ColumnFamilyDescriptor::new(CF_BY_TAG, cf_options(&opts, &cache, false)),
            ColumnFamilyDescriptor::new(CF_PURGES, small_cf_options(&cache)),
            ColumnFamilyDescriptor::new(CF_META, small_cf_options(&cache)),
            ColumnFamilyDescriptor::new(CF_OBJECTS, cf_options(&opts, &cache, true)),
            ColumnFamilyDescriptor::new(CF_BODIES, body_cf_options(&opts, &cache)),
            ColumnFamilyDescriptor::new(CF_SINKS, sink_cf_options(&cache)),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let store = Store {
            db,
            hot: hot::Hot::new(opts.hot_bytes),
            opts,
            writer: Mutex::new(Writer::default()),
            count: AtomicU64::new(0),
            dirty: Mutex::new(Dirty::default()),
            removed_since_full: AtomicU64::new(0),
            purge_seq: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            object_bytes: AtomicU64::new(0),
            deferred: RwLock::new(Arc::new(Vec::new())),
            deferred_len: AtomicUsize::new(0),
        };
        store.check_format()?;
        let count = store.load_count()?;
        store.count.store(count, Ordering::Release);
        let seq = match store.db.get_pinned_cf(store.cf(CF_META)?, META_PURGE_SEQ)? {
            Some(v) => codec::decode_u64(&v).map_err(corrupt("purge sequence"))?,
            None => 0,
        };
        store.purge_seq.store(seq, Ordering::Release);
        store.load_deferred()?;
        // No fill survives a restart, so none can predate this point.
        store.lock_writer().recent = RecentPurges::starting_at(seq);
        let (mut objects, mut bytes) = (0u64, 0u64);
        store.each_object(|_, len| {
            objects += 1;
            bytes += len;
        })?;
        store.objects.store(objects, Ordering::Release);
        store.object_bytes.store(bytes, Ordering::Release);
        Ok(store)
    }

    fn check_format(&self) -> Result<()> {
        let meta = self.cf(CF_META)?;
        match self.db.get_pinned_cf(meta, META_FORMAT)? {
            Some(v) => {
                let found = codec::decode_u64(&v).map_err(corrupt("format version"))?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format { found });
                }
            }
            None => self.db.put_cf_opt(meta, META_FORMAT, codec::encode_u64(FORMAT_VERSION), &self.write_opts(true))?,
        }
        Ok(())
    }

    /// The persisted counter, or a recount if it is missing (a store
    /// created before the counter existed, or a damaged meta family).
    fn load_count(&self) -> Result<u64> {
        let meta = self.cf(CF_META)?;
        if let Some(v) = self.db.get_pinned_cf(meta, META_COUNT)? {
            return codec::decode_u64(&v).map_err(corrupt("entry counter"));
        }
        let n = self.count_rows(CF_ENTRIES, &Range::all(), u64::MAX)?;
        self.db.put_cf(meta, META_COUNT, codec::encode_u64(n))?;
        Ok(n)
    }
}

fn table_options(cache: &Cache, bloom: bool) -> BlockBasedOptions {
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_cache_index_and_filter_blocks(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if bloom {
        // Most URL purges name objects this node never cached; a bloom
        // filter answers those without reading a data block. (So
        // optimize_filters_for_hits, which drops the last level's filters,
        // would be exactly wrong here.)
        t.set_bloom_filter(10.0, false);
    }
    t
}

fn cf_options(opts: &StoreOptions, cache: &Cache, bloom: bool) -> Options {
    let mut o = Options::default();
    o.set_block_based_table_factory(&table_options(cache, bloom));
    o.set_write_buffer_size(opts.write_buffer_bytes);
    o.set_compression_type(DBCompressionType::None);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.add_compact_on_deletion_collector_factory(DELETION_WINDOW, DELETION_TRIGGER, DELETION_RATIO);
    o
}

/// Bodies go to blob files: the LSM tree then holds only small pointers,
/// so compactions do not rewrite megabytes of body, and garbage collection
/// reclaims purged bodies as their blob files age.
fn body_cf_options(opts: &StoreOptions, cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_block_based_table_factory(&table_options(cache, false));
    o.set_write_buffer_size(opts.write_buffer_bytes);
    o.set_compression_type(DBCompressionType::None);
    o.set_enable_blob_files(true);
    o.set_min_blob_size(4096);
    o.set_blob_file_size(256 << 20);
    o.set_enable_blob_gc(true);
    o.set_blob_gc_age_cutoff(0.25);
    o
}

/// Every confirmation deletes a backlog row: deletion-triggered compaction
/// keeps the tombstones from piling up in front of a start-up scan.
fn sink_cf_options(cache: &Cache) -> Options {
    let mut o = small_cf_options(cache);
    o.add_compact_on_deletion_collector_factory(DELETION_WINDOW, DELETION_TRIGGER, DELETION_RATIO);
    o
}

fn small_cf_options(cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_block_based_table_factory(&table_options(cache, false));
    o.set_write_buffer_size(4 << 20);
    o.set_compression_type(DBCompressionType::None);
    o
}
