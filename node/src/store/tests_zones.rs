//! Zones in the store: tags and everything are per zone, and no purge of
//! one zone touches another zone's entries, whatever its selectors say.

use purgecast_core::{Mode, Selector};

use super::tests::{all_entries, input, open, purge};
use super::*;

fn zoned(url: &str, tags: &[&str], zone: &str) -> EntryInput {
    EntryInput { zone: zone.into(), ..input(url, tags) }
}

fn keys(s: &Store) -> Vec<String> {
    let mut k: Vec<String> = all_entries(s).into_iter().map(|e| e.key).collect();
    k.sort();
    k
}

fn in_zone(seq: u64, zone: &str, selectors: Vec<Selector>) -> purgecast_core::Purge {
    purgecast_core::Purge { zone: zone.into(), ..purge(seq, Mode::Hard, selectors) }
}

#[test]
fn a_zone_purge_reaches_only_its_zone_whatever_its_selectors_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.put_entries(&[
        zoned("https://a.test/1", &["x"], "a"),
        zoned("https://a.test/2", &["y"], "a"),
        zoned("https://b.test/1", &["x"], "b"),
        zoned("https://b.test/2", &["y"], "b"),
        input("https://old.test/1", &["x"]),
    ])
    .unwrap();
    assert_eq!(s.count_by_tag("a", "x").unwrap(), 1);
    assert_eq!(s.count_by_tag("", "x").unwrap(), 1, "the zoneless entry keeps its plain tag");

    // What a misbehaving peer could send as zone a: b's URL, host, prefix.
    let widen = vec![
        Selector::url("https://b.test/1").unwrap(),
        Selector::host("b.test").unwrap(),
        Selector::prefix("b.test/").unwrap(),
    ];
    let out = s.apply_purge(&in_zone(1, "a", widen), 1).unwrap();
    assert_eq!(out.matched, 0);
    assert_eq!(keys(&s).len(), 5);

    // Zone a's tag x is a's: b's x and the zoneless x stay.
    s.apply_purge(&in_zone(2, "a", vec![Selector::tag("x").unwrap()]), 2).unwrap();
    assert_eq!(keys(&s), ["https://a.test/2", "https://b.test/1", "https://b.test/2", "https://old.test/1"]);

    // Zone b's everything is b's entries only.
    s.apply_purge(&in_zone(3, "b", vec![Selector::Everything]), 3).unwrap();
    assert_eq!(keys(&s), ["https://a.test/2", "https://old.test/1"]);
    let stats = s.index_stats().unwrap();
    assert_eq!((stats.entries, stats.host_rows), (2, 2));

    // A zone's URL purge still reaches an entry of no zone (cached before
    // zones were configured); no zone is the whole store.
    s.apply_purge(&in_zone(4, "a", vec![Selector::url("https://old.test/1").unwrap()]), 4).unwrap();
    assert_eq!(keys(&s), ["https://a.test/2"]);
    s.apply_purge(&in_zone(5, "", vec![Selector::Everything]), 5).unwrap();
    assert!(keys(&s).is_empty());
}

#[test]
fn moving_an_entry_to_another_zone_moves_its_tag_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.put_entries(&[zoned("https://a.test/1", &["x"], "a")]).unwrap();
    s.put_entries(&[zoned("https://a.test/1", &["x"], "b")]).unwrap();
    assert_eq!(s.count_by_tag("a", "x").unwrap(), 0);
    assert_eq!(s.count_by_tag("b", "x").unwrap(), 1);
    s.apply_purge(&in_zone(1, "a", vec![Selector::Everything]), 1).unwrap();
    assert_eq!(keys(&s).len(), 1, "zone a's everything took zone b's entry");
    s.apply_purge(&in_zone(2, "b", vec![Selector::Everything]), 2).unwrap();
    assert!(keys(&s).is_empty());
    assert_eq!(s.index_stats().unwrap().tag_rows, 0, "marker or tag rows left behind");
}
