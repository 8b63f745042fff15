//! Store tests against real RocksDB in temporary directories.

use std::path::Path;

use purgecast_core::parse_url;
use purgecast_core::{Mode, NodeId, Purge, PurgeId, Selector, StreamId};

use super::codec::{self, Range};
use super::*;

pub(super) fn open(dir: &Path) -> Store {
    open_deferring(dir, StoreOptions::default().defer_over)
}

/// A store that defers purges matching more than `defer_over` entries.
pub(super) fn open_deferring(dir: &Path, defer_over: u64) -> Store {
    let opts = StoreOptions {
        sync: false,
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        defer_over,
        ..StoreOptions::default()
    };
    Store::open(dir, opts).unwrap()
}

pub(super) fn input(url: &str, tags: &[&str]) -> EntryInput {
    EntryInput { key: url.into(), tags: tags.iter().map(|t| t.to_string()).collect(), size: 100, ..Default::default() }
}

pub(super) fn purge(seq: u64, mode: Mode, selectors: Vec<Selector>) -> Purge {
    Purge {
        id: PurgeId(u128::from(seq) + 1000),
        stream: StreamId { origin: NodeId(7), epoch: 1 },
        seq,
        selectors,
        mode,
        issued_at_ms: 1000 + seq,
        zone: String::new(),
        requested_by: String::new(),
    }
}

/// Every entry, straight from the entries family.
pub(super) fn all_entries(s: &Store) -> Vec<Entry> {
    let mut out = Vec::new();
    s.for_each_row(s.cf(CF_ENTRIES).unwrap(), &Range::all(), u64::MAX, |k, v| {
        out.push(codec::decode_entry(k, v).unwrap());
        Ok(true)
    })
    .unwrap();
    out
}

/// Index rows are exactly those of the stored entries and the counter is
/// exact: no orphans, nothing missing.
pub(super) fn assert_consistent(s: &Store) {
    let entries = all_entries(s);
    let stats = s.index_stats().unwrap();
    assert_eq!(stats.entries, entries.len() as u64);
    assert_eq!(s.count_all(), stats.entries, "counter");
    assert_eq!(stats.host_rows, stats.entries, "host rows");
    // Tags, plus a zone marker row for entries of a zone.
    let tags: usize = entries.iter().map(|e| codec::entry_tag_rows(e).len()).sum();
    assert_eq!(stats.tag_rows, tags as u64, "tag rows");
    let cfs = s.cfs().unwrap();
    for e in &entries {
        assert!(s.db.get_cf(cfs.by_host, codec::host_row(&e.host, &e.path, &e.key)).unwrap().is_some());
        for row in codec::entry_tag_rows(e) {
            assert!(s.db.get_cf(cfs.by_tag, row).unwrap().is_some());
        }
    }
}

const FIXTURE: &[(&str, &[&str])] = &[
    ("https://a.com/", &["home"]),
    ("https://a.com/static/app.js", &["js", "static"]),
    ("http://a.com/static/app.js", &["js", "static"]),
    ("https://a.com/static/img/logo.png", &["static"]),
    ("https://a.com/staticky", &[]),
    ("https://a.com:8080/static/x", &["static"]),
    ("https://b.com/static/app.js", &["js"]),
    ("https://b.com/?q=1", &["home"]),
];

fn fixture(dir: &Path) -> Store {
    let s = open(dir);
    let inputs: Vec<_> = FIXTURE.iter().map(|(u, t)| input(u, t)).collect();
    assert_eq!(s.put_entries(&inputs).unwrap(), FIXTURE.len());
    s
}

fn expected_matches(sel: &Selector) -> Vec<String> {
    let mut keys: Vec<String> = FIXTURE
        .iter()
        .filter(|(u, t)| {
            let tags: Vec<String> = t.iter().map(|x| x.to_string()).collect();
            sel.matches(&parse_url(u).unwrap(), &tags)
        })
        .map(|(u, _)| parse_url(u).unwrap().key)
        .collect();
    keys.sort();
    keys
}

fn selectors() -> Vec<Selector> {
    vec![
        Selector::url("https://a.com/static/app.js").unwrap(),
        Selector::url("https://a.com/not-cached").unwrap(),
        Selector::host("a.com").unwrap(),
        Selector::host("a.com:8080").unwrap(),
        Selector::prefix("a.com/static/").unwrap(),
        Selector::prefix("a.com/static").unwrap(),
        Selector::tag("static").unwrap(),
        Selector::tag("js").unwrap(),
        Selector::Everything,
    ]
}

#[test]
fn put_normalises_and_get_finds() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.put_entries(&[input("HTTPS://A.com/x?y#frag", &["b", "a", "a"])]).unwrap(), 1);
    let e = s.get("https://a.com/x?y").unwrap().unwrap();
    assert_eq!((e.key.as_str(), e.host.as_str(), e.path.as_str()), ("https://a.com/x?y", "a.com", "/x?y"));
    assert_eq!(e.tags, vec!["a", "b"]);
    assert!(!e.stale);
    assert_eq!(s.get("https://a.com/other").unwrap(), None);
    assert!(matches!(s.get("ftp://a.com/"), Err(StoreError::BadQuery(_))));
    assert_eq!(s.list_by_host("A.COM", 10).unwrap(), vec![e.clone()]);
    assert_eq!(s.list_by_tag("", "b", 10).unwrap(), vec![e]);
    assert_consistent(&s);
}

#[test]
fn bad_input_rejects_the_whole_call() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let err = s.put_entries(&[input("https://a.com/ok", &[]), input("not a url", &[])]).unwrap_err();
    assert!(matches!(err, StoreError::BadEntry { index: 1, .. }), "{err}");
    let err = s.put_entries(&[input("https://a.com/ok", &["bad tag"])]).unwrap_err();
    assert!(matches!(err, StoreError::BadEntry { index: 0, .. }), "{err}");
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = s.put_entries(&[input("https://a.com/ok", &refs)]).unwrap_err();
    assert!(matches!(err, StoreError::TooManyTags { index: 0, count } if count == MAX_TAGS + 1));
    assert_eq!(s.count_all(), 0);
    assert_consistent(&s);
}

#[test]
fn reput_replaces_tags_and_freshens() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.put_entries(&[input("https://a.com/x", &["a", "b"])]).unwrap();
    s.apply_purge(&purge(1, Mode::Soft, vec![Selector::tag("a").unwrap()]), 5).unwrap();
    assert!(s.get("https://a.com/x").unwrap().unwrap().stale);
    // The same key twice in one call: the last one wins.
    let n = s.put_entries(&[input("https://a.com/x", &["z"]), input("https://a.com/x", &["b", "c"])]).unwrap();
    assert_eq!(n, 1);
    assert_eq!(s.count_by_tag("", "a").unwrap(), 0);
    assert_eq!(s.count_by_tag("", "b").unwrap(), 1);
    assert_eq!(s.count_by_tag("", "c").unwrap(), 1);
    assert_eq!(s.count_by_tag("", "z").unwrap(), 0);
    assert_eq!(s.count_all(), 1);
    assert!(!s.get("https://a.com/x").unwrap().unwrap().stale);
    assert_consistent(&s);
}

#[test]
fn every_selector_kind_hard() {
    for (i, sel) in selectors().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let s = fixture(dir.path());
        let gone = expected_matches(&sel);
        let out = s.apply_purge(&purge(1, Mode::Hard, vec![sel.clone()]), 9).unwrap();
        let n = gone.len() as u64;
        assert_eq!(out, ApplyOutcome { matched: n, removed: n, marked_stale: 0, ..Default::default() }, "{i}: {sel:?}");
        let left: Vec<String> = all_entries(&s).into_iter().map(|e| e.key).collect();
        assert_eq!(left.len(), FIXTURE.len() - gone.len(), "{sel:?}");
        assert!(left.iter().all(|k| !gone.contains(k)), "{sel:?}");
        assert_consistent(&s);
    }
}

#[test]
fn every_selector_kind_soft() {
    for sel in selectors() {
        let dir = tempfile::tempdir().unwrap();
        let s = fixture(dir.path());
        let hit = expected_matches(&sel);
        let n = hit.len() as u64;
        let p = purge(5, Mode::Soft, vec![sel.clone()]);
        assert_eq!(
            s.apply_purge(&p, 9).unwrap(),
            ApplyOutcome { matched: n, removed: 0, marked_stale: n, ..Default::default() },
            "{sel:?}"
        );
        for e in all_entries(&s) {
            assert_eq!(e.stale, hit.contains(&e.key), "{sel:?} {}", e.key);
            assert_eq!(e.stale_since_ms, if e.stale { p.issued_at_ms } else { 0 });
        }
        assert_eq!(s.count_all(), FIXTURE.len() as u64);
        // Already stale: matched again, not marked again; an earlier purge
        // arriving late moves stale-since back, a later one does not.
        let later = purge(9, Mode::Soft, vec![sel.clone()]);
        assert_eq!(
            s.apply_purge(&later, 10).unwrap(),
            ApplyOutcome { matched: n, removed: 0, marked_stale: 0, ..Default::default() }
        );
        let earlier = purge(2, Mode::Soft, vec![sel.clone()]);
        s.apply_purge(&earlier, 11).unwrap();
        for e in all_entries(&s).into_iter().filter(|e| e.stale) {
            assert_eq!(e.stale_since_ms, earlier.issued_at_ms);
        }
        assert_consistent(&s);
    }
}

#[test]
fn overlapping_selectors_count_each_entry_once() {
    let sels =
        vec![Selector::host("a.com").unwrap(), Selector::tag("js").unwrap(), Selector::prefix("a.com/").unwrap()];
    let mut expected: Vec<String> = sels.iter().flat_map(expected_matches).collect();
    expected.sort();
    expected.dedup();
    let n = expected.len() as u64;
    for mode in [Mode::Hard, Mode::Soft] {
        let dir = tempfile::tempdir().unwrap();
        let s = fixture(dir.path());
        let out = s.apply_purge(&purge(1, mode, sels.clone()), 9).unwrap();
        assert_eq!(out.matched, n, "{mode:?}");
        assert_eq!(out.removed + out.marked_stale, n, "{mode:?}");
        assert_consistent(&s);
    }
}

#[test]
fn a_batch_equals_the_same_purges_one_by_one() {
    let purges = vec![
        (purge(1, Mode::Soft, vec![Selector::tag("static").unwrap()]), 10),
        (purge(2, Mode::Hard, vec![Selector::url("https://a.com/static/app.js").unwrap()]), 11),
        (purge(3, Mode::Hard, vec![Selector::url("https://a.com/static/app.js").unwrap()]), 12),
        (purge(4, Mode::Hard, vec![Selector::host("a.com").unwrap()]), 13),
        (purge(5, Mode::Soft, vec![Selector::tag("js").unwrap(), Selector::tag("home").unwrap()]), 14),
        (purge(6, Mode::Hard, vec![Selector::tag("js").unwrap()]), 15),
    ];
    let one = tempfile::tempdir().unwrap();
    let seq = fixture(one.path());
    let expected: Vec<ApplyOutcome> = purges.iter().map(|(p, at)| seq.apply_purge(p, *at).unwrap()).collect();
    let two = tempfile::tempdir().unwrap();
    let batched = fixture(two.path());
    assert_eq!(batched.apply_purges(&purges).unwrap(), expected);
    assert_eq!(expected[2].matched, 0, "deleted earlier in the batch");
    assert_eq!(all_entries(&batched), all_entries(&seq));
    assert_eq!(batched.count_all(), seq.count_all());
    assert_eq!(batched.applied_purges().unwrap(), purges);
    assert_consistent(&batched);
}

#[test]
fn everything_in_a_batch_then_more_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture(dir.path());
    let n = FIXTURE.len() as u64;
    let outs = s
        .apply_purges(&[
            (purge(1, Mode::Soft, vec![Selector::host("b.com").unwrap()]), 1),
            (purge(2, Mode::Hard, vec![Selector::url("https://a.com/").unwrap()]), 2),
            (purge(3, Mode::Hard, vec![Selector::tag("x").unwrap(), Selector::Everything]), 3),
            (purge(4, Mode::Soft, vec![Selector::Everything]), 4),
            (purge(5, Mode::Hard, vec![Selector::host("a.com").unwrap()]), 5),
        ])
        .unwrap();
    assert_eq!(outs[0], ApplyOutcome { matched: 2, removed: 0, marked_stale: 2, ..Default::default() });
    assert_eq!(outs[2], ApplyOutcome { matched: n - 1, removed: n - 1, marked_stale: 0, ..Default::default() });
    assert_eq!(outs[3], ApplyOutcome::default());
    assert_eq!(outs[4], ApplyOutcome::default());
    assert_eq!(s.index_stats().unwrap(), IndexStats::default());
    assert_eq!(s.count_all(), 0);
    assert!(s.pending_compactions() >= 3);
    // The range deletion must not hide later writes.
    s.put_entries(&[input("https://a.com/", &["home"])]).unwrap();
    assert_eq!(s.count_by_tag("", "home").unwrap(), 1);
    assert_consistent(&s);
    assert!(s.compact_purged_ranges().unwrap().runs >= 3);
    assert_eq!(s.pending_compactions(), 0);
    assert_consistent(&s);
}

#[test]
fn everything_soft_marks_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture(dir.path());
    let n = FIXTURE.len() as u64;
    let out = s.apply_purge(&purge(1, Mode::Soft, vec![Selector::Everything]), 1).unwrap();
    assert_eq!(out, ApplyOutcome { matched: n, removed: 0, marked_stale: n, ..Default::default() });
    assert!(all_entries(&s).iter().all(|e| e.stale));
}

#[test]
fn malformed_selectors_match_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture(dir.path());
    let bad = vec![
        Selector::Url("garbage".into()),
        Selector::Host(String::new()),
        Selector::Tag(String::new()),
        Selector::Prefix { host: "a.com".into(), path_prefix: "\0".into() },
    ];
    let out = s.apply_purge(&purge(1, Mode::Hard, bad), 1).unwrap();
    assert_eq!(out, ApplyOutcome::default());
    assert_eq!(s.count_all(), FIXTURE.len() as u64);
}

#[test]
fn newest_purges_keeps_the_newest_matching_ones_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for seq in 1..=6 {
        let zone = if seq % 2 == 0 { "a" } else { "b" };
        let p = Purge { zone: zone.into(), ..purge(seq, Mode::Hard, vec![Selector::Everything]) };
        s.apply_purge(&p, seq).unwrap();
    }
    let (got, more) = s.newest_purges(|p| p.zone == "a", 2).unwrap();
    assert_eq!(got.iter().map(|p| p.seq).collect::<Vec<_>>(), [6, 4]);
    assert!(more, "a third match was left out");
    let (got, more) = s.newest_purges(|p| p.zone == "b", 10).unwrap();
    assert_eq!(got.iter().map(|p| p.seq).collect::<Vec<_>>(), [5, 3, 1]);
    assert!(!more);
}
