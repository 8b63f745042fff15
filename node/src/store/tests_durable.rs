//! Store tests about what survives: reopen, purge log, meta, flush, expiry,
//! compaction and damaged data.

use purgecast_core::{Mode, Selector};

use super::codec;
use super::tests::{all_entries, assert_consistent, input, open, purge};
use super::*;

#[test]
fn reopen_keeps_entries_counter_and_purge_log() {
    let dir = tempfile::tempdir().unwrap();
    let purges = vec![
        (purge(2, Mode::Soft, vec![Selector::tag("t1").unwrap()]), 20),
        (purge(1, Mode::Hard, vec![Selector::url("https://a.com/1").unwrap()]), 10),
    ];
    let before = {
        let s = open(dir.path());
        let inputs: Vec<_> = (0..50).map(|i| input(&format!("https://a.com/{i}"), &[&format!("t{}", i % 3)])).collect();
        s.put_entries(&inputs).unwrap();
        s.apply_purges(&purges).unwrap();
        assert_eq!(s.count_all(), 49);
        all_entries(&s)
    };
    let s = open(dir.path());
    assert_eq!(s.count_all(), 49);
    assert_eq!(all_entries(&s), before);
    assert_consistent(&s);
    // Ordered by stream position, not by application order.
    let log = s.applied_purges().unwrap();
    assert_eq!(log, vec![purges[1].clone(), purges[0].clone()]);
    assert!(s.has_applied(&purges[0].0).unwrap());
    assert!(!s.has_applied(&purge(3, Mode::Hard, vec![Selector::Everything])).unwrap());
    let mut impostor = purges[0].0.clone();
    impostor.id = purgecast_core::PurgeId(1);
    assert!(!s.has_applied(&impostor).unwrap(), "same position, different purge");
}

#[test]
fn a_lost_counter_is_recounted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.put_entries(&[input("https://a.com/1", &[]), input("https://a.com/2", &[])]).unwrap();
        s.db.delete_cf(s.cf(CF_META).unwrap(), META_COUNT).unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.count_all(), 2);
    assert_consistent(&s);
}

#[test]
fn boot_epoch_counts_up_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        assert_eq!(s.next_boot_epoch().unwrap(), 1);
        assert_eq!(s.next_boot_epoch().unwrap(), 2);
        s.put_meta("node_name", b"n1").unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.next_boot_epoch().unwrap(), 3);
    assert_eq!(s.get_meta("node_name").unwrap().as_deref(), Some(&b"n1"[..]));
    assert_eq!(s.get_meta("absent").unwrap(), None);
    // A caller's key cannot reach the store's own.
    s.put_meta("s/boot_epoch", &[0xff]).unwrap();
    assert_eq!(s.next_boot_epoch().unwrap(), 4);
}

#[test]
fn prune_drops_only_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let purges: Vec<_> = (1..=10).map(|i| (purge(i, Mode::Hard, vec![Selector::tag("x").unwrap()]), i * 100)).collect();
    s.apply_purges(&purges).unwrap();
    assert_eq!(s.purge_log_len().unwrap(), 10);
    assert_eq!(s.prune_purge_log(450).unwrap(), 4);
    assert_eq!(s.applied_purges().unwrap(), purges[4..].to_vec());
    assert_eq!(s.prune_purge_log(450).unwrap(), 0);
}

#[test]
fn flush_empties_the_index_but_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let inputs: Vec<_> = (0..100).map(|i| input(&format!("https://h{}.com/{i}", i % 4), &["a", "b"])).collect();
    s.put_entries(&inputs).unwrap();
    s.apply_purge(&purge(1, Mode::Hard, vec![Selector::host("h0.com").unwrap()]), 1).unwrap();
    assert_eq!(s.count_all(), 75);
    assert_eq!(s.flush_index().unwrap(), 75);
    assert_eq!(s.count_all(), 0);
    assert_eq!(s.index_stats().unwrap(), IndexStats::default());
    assert_eq!(s.purge_log_len().unwrap(), 1);
    s.put_entries(&inputs[..3]).unwrap();
    assert_eq!(s.count_by_tag("", "a").unwrap(), 3);
    assert_consistent(&s);
}

#[test]
fn expired_entries_are_hidden_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let inputs: Vec<_> = (0..10)
        .map(|i| EntryInput {
            expires_at_ms: if i % 2 == 0 { 500 } else { 0 },
            ..input(&format!("https://a.com/{i}"), &["t"])
        })
        .collect();
    s.put_entries(&inputs).unwrap();
    assert!(s.get_at("https://a.com/0", 499).unwrap().is_some());
    assert_eq!(s.get_at("https://a.com/0", 500).unwrap(), None);
    assert!(s.get_at("https://a.com/1", u64::MAX).unwrap().is_some());
    // The wall clock is long past 500.
    assert_eq!(s.get("https://a.com/0").unwrap(), None);
    assert_eq!(s.remove_expired(400, 100).unwrap(), 0);
    // Three entries a call: the sweep resumes where it stopped.
    let mut removed = 0;
    for _ in 0..4 {
        removed += s.remove_expired(600, 3).unwrap();
    }
    assert_eq!(removed, 5);
    assert_eq!(s.count_all(), 5);
    assert_eq!(s.count_by_tag("", "t").unwrap(), 5);
    assert_consistent(&s);
}

#[test]
fn large_hard_purges_queue_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let inputs: Vec<_> = (0..300).map(|i| input(&format!("https://a.com/p/{i}"), &["big"])).collect();
    s.put_entries(&inputs).unwrap();
    s.put_entries(&[input("https://b.com/x", &["small"])]).unwrap();
    s.apply_purge(&purge(1, Mode::Hard, vec![Selector::tag("small").unwrap()]), 1).unwrap();
    assert_eq!(s.pending_compactions(), 0, "one deletion is left to automatic compaction");
    s.apply_purge(&purge(2, Mode::Hard, vec![Selector::prefix("a.com/p/").unwrap()]), 2).unwrap();
    assert_eq!(s.pending_compactions(), 2, "by_host range and entries span");
    assert_eq!(s.compact_purged_ranges().unwrap(), Compacted { runs: 2, full: false });
    assert_eq!(s.pending_compactions(), 0);
    assert_eq!(s.count_all(), 0);
    assert_eq!(s.count_by_tag("", "big").unwrap(), 0);
    assert_consistent(&s);
}

/// Tombstones RocksDB's SST files of `cf` hold (table properties, so
/// flushed files only).
fn tombstones(s: &Store, cf: &'static str) -> u64 {
    let props = s.db.property_value_cf(s.cf(cf).unwrap(), "rocksdb.aggregated-table-properties").unwrap().unwrap();
    let field = props.split(';').map(str::trim).find_map(|f| f.strip_prefix("# deletions=")).unwrap();
    field.parse().unwrap()
}

#[test]
fn many_scattered_removals_compact_the_index_whole() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { sync: false, compact_whole_after: 100, ..StoreOptions::default() };
    let s = Store::open(dir.path(), opts).unwrap();
    let inputs: Vec<_> = (0..400).map(|i| input(&format!("https://a.com/{i}"), &[&format!("t{}", i % 7)])).collect();
    s.put_entries(&inputs).unwrap();
    // URL purges mark no range: only the count of removals can call for it.
    let urls =
        |from: u64, to: u64| (from..to).map(|i| Selector::url(&format!("https://a.com/{}", i * 4)).unwrap()).collect();
    s.apply_purge(&purge(1, Mode::Hard, urls(0, 60)), 1).unwrap();
    assert_eq!(s.pending_compactions(), 0);
    assert_eq!(s.compact_purged_ranges().unwrap(), Compacted::default(), "60 removed: under the minimum");
    s.apply_purge(&purge(2, Mode::Hard, urls(60, 100)), 2).unwrap();
    for cf in [CF_ENTRIES, CF_BY_HOST, CF_BY_TAG] {
        s.db.flush_cf(s.cf(cf).unwrap()).unwrap();
        assert!(tombstones(&s, cf) >= 100, "{cf} holds the purges' tombstones");
    }
    let all_three = Compacted { runs: 3, full: true };
    assert_eq!(s.compact_purged_ranges().unwrap(), all_three, "100 of 400: a quarter");
    for cf in [CF_ENTRIES, CF_BY_HOST, CF_BY_TAG] {
        assert_eq!(tombstones(&s, cf), 0, "{cf} compacted to its last level");
    }
    assert_eq!(s.count_all(), 300);
    assert_eq!(s.count_by_host("a.com").unwrap(), 300);
    assert_eq!(s.get("https://a.com/4").unwrap(), None);
    assert!(s.get("https://a.com/5").unwrap().is_some());
    assert_consistent(&s);
    assert_eq!(s.compact_purged_ranges().unwrap(), Compacted::default(), "the count starts over");
}

#[test]
fn damaged_rows_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.db.put_cf(s.cf(CF_ENTRIES).unwrap(), b"https://a.com/x", [9, 9]).unwrap();
    let err = s.get("https://a.com/x").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { source: CodecError::Format(9), .. }), "{err}");
    s.db.put_cf(s.cf(CF_PURGES).unwrap(), [0u8; 24], [codec::VALUE_V1, 0xff]).unwrap();
    assert!(matches!(s.applied_purges(), Err(StoreError::Corrupt { .. })));
    s.db.put_cf(s.cf(CF_META).unwrap(), META_BOOT, [1]).unwrap();
    assert!(matches!(s.next_boot_epoch(), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.db.put_cf(s.cf(CF_META).unwrap(), META_FORMAT, codec::encode_u64(FORMAT_VERSION + 1)).unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Format { found } if found == FORMAT_VERSION + 1), "{err}");
}

#[test]
fn synced_store_works_and_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(s.opts.sync);
    s.put_entries(&[input("https://a.com/x", &["t"])]).unwrap();
    let out = s.apply_purge(&purge(1, Mode::Hard, vec![Selector::tag("t").unwrap()]), 1).unwrap();
    assert_eq!(out.removed, 1);
}
