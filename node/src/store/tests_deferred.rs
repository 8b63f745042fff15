//! Deferred purges: in effect for every reader as soon as they are
//! applied, swept to exactly the rows they reached, across restarts.

use proptest::prelude::*;
use purgecast_core::{parse_url, CacheKey, Mode, Selector};

use super::tests::{all_entries, assert_consistent, input, open_deferring, purge};
use super::tests_objects::fill;
use super::*;

fn tag(t: &str) -> Selector {
    Selector::tag(t).unwrap()
}

fn sweep_all(s: &Store, budget: usize) -> u64 {
    let mut swept = 0;
    for _ in 0..10_000 {
        let out = s.sweep_deferred(budget).unwrap();
        swept += out.swept;
        if out.remaining == 0 {
            assert_eq!(s.deferred_purges(), 0);
            return swept;
        }
    }
    panic!("the sweep never finished");
}

/// 12 entries tagged `hot`, 12 tagged `cold`; one object for each of the
/// first three of each.
fn load(s: &Store) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    for i in 0..12 {
        for t in ["hot", "cold"] {
            let url = format!("https://a.com/{t}/{i}");
            if i < 3 {
                let f = fill(s, &url, &[t], b"body", None);
                ids.push(f.id);
                assert_eq!(s.store_object(f).unwrap(), FillOutcome::Stored { replaced: None });
            } else {
                s.put_entries(&[input(&url, &[t])]).unwrap();
            }
        }
    }
    ids
}

#[test]
fn a_large_hard_purge_is_in_effect_at_once_and_the_sweep_removes_exactly_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_deferring(dir.path(), 4);
    let ids = load(&s);
    let (hot_obj, cold_obj) = (ids[0], ids[1]);

    let out = s.apply_purge(&purge(1, Mode::Hard, vec![tag("hot")]), 5).unwrap();
    assert!(out.deferred, "12 entries is over the bound of 4");
    assert_eq!(s.deferred_purges(), 1);
    assert_eq!(all_entries(&s).len(), 24, "nothing deleted yet");
    // Every reader already sees it purged.
    assert!(s.get("https://a.com/hot/0").unwrap().is_none());
    assert!(s.object_head(&hot_obj).unwrap().is_none(), "the edge misses");
    assert!(s.list_by_tag("", "hot", 100).unwrap().is_empty());
    assert_eq!(s.count_by_tag("", "hot").unwrap(), 0);
    assert_eq!(s.count_by_host("a.com").unwrap(), 12);
    assert_eq!(s.list_by_host("a.com", 5).unwrap().len(), 5, "a listing reads past purged rows to its limit");
    assert!(s.object_head(&cold_obj).unwrap().is_some());
    assert!(s.get("https://a.com/cold/7").unwrap().is_some());

    // Written after the purge: not reached, before or after the sweep.
    let again = fill(&s, "https://a.com/hot/1", &["hot"], b"new", None);
    let again_id = again.id;
    assert_eq!(s.store_object(again).unwrap(), FillOutcome::Stored { replaced: Some(4) });
    s.put_entries(&[input("https://a.com/hot/5", &["hot"])]).unwrap();
    assert_eq!(s.count_by_tag("", "hot").unwrap(), 2);

    assert_eq!(sweep_all(&s, 3), 10, "12 old hot entries minus the 2 rewritten");
    assert_eq!(s.count_by_tag("", "hot").unwrap(), 2);
    assert!(s.object_head(&again_id).unwrap().is_some());
    assert!(s.object(&hot_obj).unwrap().is_none(), "swept objects are gone from the store");
    assert_eq!(s.object_stats().0, 4, "3 cold objects and the new hot one");
    assert_eq!(all_entries(&s).len(), 14);
    assert_consistent(&s);
}

#[test]
fn a_large_soft_purge_serves_stale_until_revalidated_and_the_sweep_marks_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_deferring(dir.path(), 4);
    let ids = load(&s);
    let p = purge(1, Mode::Soft, vec![tag("hot")]);
    assert!(s.apply_purge(&p, 5).unwrap().deferred);
    let rec = s.object_head(&ids[0]).unwrap().unwrap().rec.clone();
    assert_eq!(rec.stale_since_ms, p.issued_at_ms, "served stale from now on");
    let e = s.get("https://a.com/hot/4").unwrap().unwrap();
    assert!(e.stale && e.stale_since_ms == p.issued_at_ms);
    assert!(!s.get("https://a.com/cold/4").unwrap().unwrap().stale);

    // A revalidation started after the purge makes the object fresh again.
    let started = s.purge_seq();
    assert!(s.refresh_object(&ids[0], (b"m".to_vec(), b"h".to_vec()), u64::MAX / 2, started).unwrap());
    assert_eq!(s.object_head(&ids[0]).unwrap().unwrap().rec.stale_since_ms, 0);

    sweep_all(&s, 5);
    assert_eq!(s.object_head(&ids[0]).unwrap().unwrap().rec.stale_since_ms, 0, "the sweep spares the refresh");
    let rec = s.object_head(&ids[2]).unwrap().unwrap().rec.clone();
    assert_eq!(rec.stale_since_ms, p.issued_at_ms, "now stored stale");
    assert!(all_entries(&s).iter().filter(|e| e.tags == ["hot"]).all(|e| e.stale || e.key == "https://a.com/hot/0"));
    assert_consistent(&s);
}

#[test]
fn a_deferred_purge_survives_a_restart_before_its_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let hot = {
        let s = open_deferring(dir.path(), 4);
        let ids = load(&s);
        s.apply_purge(&purge(1, Mode::Hard, vec![tag("hot")]), 5).unwrap();
        s.sweep_deferred(3).unwrap();
        ids[0]
    };
    let s = open_deferring(dir.path(), 4);
    assert_eq!(s.deferred_purges(), 1, "reloaded from its record");
    assert!(s.get("https://a.com/hot/9").unwrap().is_none());
    assert!(s.object_head(&hot).unwrap().is_none());
    sweep_all(&s, 100);
    drop(s);
    let s = open_deferring(dir.path(), 4);
    assert_eq!(s.deferred_purges(), 0, "its record went with the last slice");
    assert_eq!(all_entries(&s).len(), 12);
    assert_consistent(&s);
}

#[test]
fn refilling_a_purged_url_does_not_bring_its_other_variants_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_deferring(dir.path(), 0);
    let url = "https://a.com/v";
    let gz = fill(&s, url, &["hot"], b"gzip", Some([1; 16]));
    let br = fill(&s, url, &["hot"], b"brotli", Some([2; 16]));
    let (gz_id, br_id) = (gz.id, br.id);
    s.store_object(gz).unwrap();
    s.store_object(br).unwrap();
    assert!(s.apply_purge(&purge(1, Mode::Hard, vec![tag("hot")]), 5).unwrap().deferred);
    // The new copy carries other tags: the old variant must stay purged.
    let fresh = fill(&s, url, &["other"], b"gzip2", Some([1; 16]));
    s.store_object(fresh).unwrap();
    assert!(s.object_head(&gz_id).unwrap().is_some());
    assert!(s.object_head(&br_id).unwrap().is_none());
    assert_eq!(s.get(url).unwrap().unwrap().tags, ["other"], "the purged entry's tags are not inherited");
    sweep_all(&s, 10);
    assert!(s.object(&br_id).unwrap().is_none());
    assert!(s.object_head(&gz_id).unwrap().is_some());
    assert_consistent(&s);
}

#[test]
fn a_fill_that_started_before_a_deferred_purge_is_dropped_and_everything_ends_all_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_deferring(dir.path(), 4);
    load(&s);
    let late = fill(&s, "https://a.com/hot/late", &["hot"], b"late", None);
    s.apply_purge(&purge(1, Mode::Hard, vec![tag("hot")]), 5).unwrap();
    assert_eq!(s.store_object(late).unwrap(), FillOutcome::Raced);
    s.apply_purge(&purge(2, Mode::Soft, vec![tag("cold")]), 5).unwrap();
    assert_eq!(s.deferred_purges(), 2);
    s.apply_purge(&purge(3, Mode::Hard, vec![Selector::Everything]), 5).unwrap();
    assert_eq!(s.deferred_purges(), 0);
    drop(s);
    let s = open_deferring(dir.path(), 4);
    assert_eq!(s.deferred_purges(), 0, "the records went with everything");
    assert_eq!(s.count_all(), 0);
}

#[test]
fn zones_confine_a_deferred_purge() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_deferring(dir.path(), 2);
    for (zone, host) in [("shop", "shop.com"), ("blog", "blog.com")] {
        let inputs: Vec<EntryInput> =
            (0..6).map(|i| EntryInput { zone: zone.into(), ..input(&format!("https://{host}/{i}"), &["x"]) }).collect();
        s.put_entries(&inputs).unwrap();
    }
    let mut everything_in_shop = purge(1, Mode::Hard, vec![Selector::Everything]);
    everything_in_shop.zone = "shop".into();
    assert!(s.apply_purge(&everything_in_shop, 5).unwrap().deferred);
    assert_eq!(s.count_by_host("shop.com").unwrap(), 0);
    assert_eq!(s.count_by_host("blog.com").unwrap(), 6);
    assert_eq!(s.count_by_tag("blog", "x").unwrap(), 6);
    sweep_all(&s, 4);
    assert_eq!(all_entries(&s).len(), 6);
    assert!(all_entries(&s).iter().all(|e| e.zone == "blog"));
    assert_consistent(&s);
}

/// Reference model: key -> (parsed key, tags, stale, stale_since).
type Model = std::collections::BTreeMap<String, (CacheKey, Vec<String>, bool, u64)>;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<(u8, Vec<&'static str>)>),
    Purges(Vec<(bool, Vec<Selector>, u64)>),
    Sweep(usize),
}

const URLS: &[&str] = &["https://a.com/", "https://a.com/x", "https://a.com/x/y", "https://b.com/x", "http://b.com/"];
const TAGS: &[&str] = &["t1", "t2"];

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        2 => (0..URLS.len()).prop_map(|u| Selector::url(URLS[u]).unwrap()),
        2 => prop_oneof![Just("a.com"), Just("b.com")].prop_map(|h| Selector::host(h).unwrap()),
        2 => prop_oneof![Just("a.com/x"), Just("b.com/")].prop_map(|p| Selector::prefix(p).unwrap()),
        3 => (0..TAGS.len()).prop_map(|t| tag(TAGS[t])),
        1 => Just(Selector::Everything),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop::collection::vec((0..URLS.len() as u8, proptest::sample::subsequence(TAGS, 0..=2)), 1..4).prop_map(Op::Put),
        3 => prop::collection::vec((any::<bool>(), prop::collection::vec(selector(), 1..3), 0..50u64), 1..4)
            .prop_map(Op::Purges),
        2 => (1..4usize).prop_map(Op::Sweep),
    ]
}

fn model_apply(m: &mut Model, soft: bool, sels: &[Selector], issued: u64) {
    let hit: Vec<String> = m
        .iter()
        .filter(|(_, (ck, tags, _, _))| sels.iter().any(|s| s.matches(ck, tags)))
        .map(|(k, _)| k.clone())
        .collect();
    for k in hit {
        if !soft {
            m.remove(&k);
        } else if let Some(e) = m.get_mut(&k) {
            e.3 = if e.2 { e.3.min(issued) } else { issued };
            e.2 = true;
        }
    }
}

fn visible(s: &Store) -> Vec<(String, Vec<String>, bool, u64)> {
    all_entries(s)
        .into_iter()
        .filter_map(|e| s.as_read(e))
        .map(|e| (e.key, e.tags, e.stale, e.stale_since_ms))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever mix of inline and deferred purges, puts and partial sweeps,
    /// readers see what applying every purge inline would give, and once
    /// swept the rows are exactly that.
    #[test]
    fn deferred_and_inline_purges_read_the_same(defer_over in 0..3u64, ops in prop::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let s = open_deferring(dir.path(), defer_over);
        let mut model = Model::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Put(items) => {
                    let inputs: Vec<EntryInput> = items.iter().map(|(u, t)| input(URLS[*u as usize], t)).collect();
                    s.put_entries(&inputs).unwrap();
                    for (u, t) in items {
                        let ck = parse_url(URLS[u as usize]).unwrap();
                        let mut tags: Vec<String> = t.iter().map(|x| x.to_string()).collect();
                        tags.sort();
                        model.insert(ck.key.clone(), (ck, tags, false, 0));
                    }
                }
                Op::Purges(list) => {
                    let mut batch = Vec::new();
                    for (soft, sels, issued) in list {
                        seq += 1;
                        let mut p = purge(seq, if soft { Mode::Soft } else { Mode::Hard }, sels.clone());
                        p.issued_at_ms = issued;
                        model_apply(&mut model, soft, &sels, issued);
                        batch.push((p, seq));
                    }
                    s.apply_purges(&batch).unwrap();
                }
                Op::Sweep(budget) => {
                    s.sweep_deferred(budget).unwrap();
                }
            }
            let want: Vec<_> = model.iter().map(|(k, (_, t, st, since))| (k.clone(), t.clone(), *st, *since)).collect();
            prop_assert_eq!(visible(&s), want);
        }
        sweep_all(&s, 2);
        let want: Vec<_> = model.into_iter().map(|(k, (_, t, st, since))| (k, t, st, since)).collect();
        let raw: Vec<_> = all_entries(&s).into_iter().map(|e| (e.key, e.tags, e.stale, e.stale_since_ms)).collect();
        prop_assert_eq!(raw, want);
        assert_consistent(&s);
    }
}
