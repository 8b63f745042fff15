//! Cached objects: one batch with their index entry, gone with it, and the
//! fill/purge race check.

use bytes::Bytes;
use purgecast_core::{parse_url, Mode, Selector};

use super::tests::{assert_consistent, open, purge};
use super::*;

pub(super) fn fill(store: &Store, url: &str, tags: &[&str], body: &[u8], variance: Option<[u8; 16]>) -> Fill {
    let key = parse_url(url).unwrap();
    Fill {
        id: object_id(url_hash(&key.key), variance),
        record: ObjectRecord {
            url: key.key.clone(),
            body_len: body.len() as u64,
            expires_at_ms: u64::MAX / 2,
            meta_internal: b"meta".to_vec(),
            meta_header: b"head".to_vec(),
            ..ObjectRecord::default()
        },
        key,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        zone: String::new(),
        body: body.chunks(1000).map(Bytes::copy_from_slice).collect(),
        started_seq: store.purge_seq(),
    }
}

pub(super) fn read_body(store: &Store, id: &ObjectId) -> Vec<u8> {
    let rec = store.object(id).unwrap().unwrap();
    (0..rec.chunks()).flat_map(|i| store.object_chunk(id, i).unwrap().unwrap().to_vec()).collect()
}

#[test]
fn an_object_is_stored_with_its_index_entry_and_a_hard_purge_removes_both() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let big: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17)).map(|i| (i % 251) as u8).collect();
    let a = fill(&s, "http://a.com/big", &["red"], &big, None);
    let id = a.id;
    assert_eq!(s.store_object(a).unwrap(), FillOutcome::Stored { replaced: None });
    assert_eq!(read_body(&s, &id), big, "chunked at fixed offsets, read back whole");
    let e = s.get("http://a.com/big").unwrap().expect("the index entry is written with the object");
    assert_eq!(e.tags, ["red"]);
    assert_eq!(s.object_stats(), (1, big.len() as u64));
    assert_consistent(&s);

    s.apply_purge(&purge(1, Mode::Hard, vec![Selector::tag("red").unwrap()]), 5).unwrap();
    assert!(s.object(&id).unwrap().is_none());
    assert!(s.object_chunk(&id, 0).unwrap().is_none() && s.object_chunk(&id, 2).unwrap().is_none());
    assert!(s.get("http://a.com/big").unwrap().is_none());
    assert_eq!(s.object_stats(), (0, 0));
    assert_consistent(&s);
}

#[test]
fn every_variant_of_a_url_goes_with_a_url_purge_and_everything_clears_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let en = fill(&s, "http://a.com/v", &[], b"en", None);
    let fr = fill(&s, "http://a.com/v", &[], b"fr", Some([7u8; 16]));
    let other = fill(&s, "http://a.com/w", &["t"], b"w", None);
    let (en_id, fr_id, other_id) = (en.id, fr.id, other.id);
    for f in [en, fr, other] {
        s.store_object(f).unwrap();
    }
    assert_eq!(s.count_all(), 2, "one entry per URL");
    s.apply_purge(&purge(1, Mode::Hard, vec![Selector::url("http://a.com/v").unwrap()]), 5).unwrap();
    assert!(s.object(&en_id).unwrap().is_none() && s.object(&fr_id).unwrap().is_none());
    assert_eq!(read_body(&s, &other_id), b"w");
    s.apply_purge(&purge(2, Mode::Hard, vec![Selector::Everything]), 6).unwrap();
    assert!(s.object(&other_id).unwrap().is_none());
    assert_eq!(s.object_stats(), (0, 0));
    assert_consistent(&s);
}

#[test]
fn a_fill_that_started_before_a_matching_purge_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let early = fill(&s, "http://a.com/x", &["t1"], b"old", None);
    let unrelated = fill(&s, "http://a.com/y", &["t2"], b"y", None);
    s.apply_purge(&purge(1, Mode::Hard, vec![Selector::tag("t1").unwrap()]), 5).unwrap();
    assert_eq!(s.store_object(early).unwrap(), FillOutcome::Raced);
    assert!(s.get("http://a.com/x").unwrap().is_none(), "nothing of the raced fill is written");
    assert_eq!(s.store_object(unrelated).unwrap(), FillOutcome::Stored { replaced: None }, "a non-matching purge");
    // A fill that starts after the purge is stored.
    let late = fill(&s, "http://a.com/x", &["t1"], b"new", None);
    assert_eq!(s.store_object(late).unwrap(), FillOutcome::Stored { replaced: None });
    // Host, prefix and soft purges count too.
    for (seq, sel, mode) in [
        (2, Selector::host("a.com").unwrap(), Mode::Hard),
        (3, Selector::prefix("a.com/x").unwrap(), Mode::Hard),
        (4, Selector::url("http://a.com/x").unwrap(), Mode::Soft),
    ] {
        let f = fill(&s, "http://a.com/x", &[], b"again", None);
        s.apply_purge(&purge(seq, mode, vec![sel]), 5).unwrap();
        assert_eq!(s.store_object(f).unwrap(), FillOutcome::Raced, "purge {seq}");
    }
}

#[test]
fn a_soft_purge_marks_objects_stale_and_only_a_later_revalidation_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let f = fill(&s, "http://a.com/s", &["t"], b"body", None);
    let id = f.id;
    s.store_object(f).unwrap();
    let before = s.purge_seq();
    s.apply_purge(&purge(1, Mode::Soft, vec![Selector::tag("t").unwrap()]), 5).unwrap();
    let rec = s.object(&id).unwrap().unwrap();
    assert_eq!(rec.stale_since_ms, 1001, "stale since the purge was issued");
    assert_eq!(read_body(&s, &id), b"body", "the body stays for revalidation");
    let meta = (b"m2".to_vec(), b"h2".to_vec());
    assert!(!s.refresh_object(&id, meta.clone(), u64::MAX / 2, before).unwrap(), "started before the purge");
    assert!(s.refresh_object(&id, meta, u64::MAX / 2, s.purge_seq()).unwrap());
    let rec = s.object(&id).unwrap().unwrap();
    assert_eq!((rec.stale_since_ms, rec.meta_internal.as_slice()), (0, b"m2".as_slice()));
    assert!(!s.get("http://a.com/s").unwrap().unwrap().stale);
}

#[test]
fn evicting_a_urls_last_object_removes_its_entry_and_the_sequence_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = open(dir.path());
        let f = fill(&s, "http://a.com/e", &["t"], b"12345", None);
        let id = f.id;
        s.store_object(f).unwrap();
        s.apply_purge(&purge(1, Mode::Hard, vec![Selector::tag("other").unwrap()]), 5).unwrap();
        assert_eq!(s.purge_seq(), 1);
        id
    };
    let s = open(dir.path());
    assert_eq!(s.purge_seq(), 1, "persisted");
    assert_eq!(s.object_stats(), (1, 5), "counted at open");
    assert_eq!(s.evict_object(&id).unwrap(), Some(5));
    assert_eq!(s.evict_object(&id).unwrap(), None);
    assert!(s.get("http://a.com/e").unwrap().is_none());
    assert_eq!(s.object_stats(), (0, 0));
    assert_consistent(&s);
}

/// A tag matching some URLs among many, some with several variants: the
/// ordered walk over the objects (steps and seeks) finds exactly theirs,
/// hard and soft.
#[test]
fn a_tag_purge_over_many_urls_takes_exactly_their_objects() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut tagged = Vec::new();
    let mut others = Vec::new();
    for i in 0..600u32 {
        // Every 7th URL is tagged; runs of untagged ones in between vary, so
        // the walk both steps and seeks.
        let hot = i % 7 == 0 || (200..230).contains(&i);
        let url = format!("http://a.com/o/{i}");
        let variants: Vec<Option<[u8; 16]>> = match i % 3 {
            0 => vec![None],
            1 => vec![Some([1; 16]), Some([2; 16])],
            _ => vec![Some([3; 16]), Some([4; 16]), Some([5; 16])],
        };
        for v in variants {
            let f = fill(&s, &url, if hot { &["hot"] } else { &["cold"] }, b"body", v);
            let id = f.id;
            s.store_object(f).unwrap();
            if hot {
                tagged.push(id)
            } else {
                others.push(id)
            }
        }
    }
    let (n, bytes) = s.object_stats();
    assert_eq!(n as usize, tagged.len() + others.len());

    s.apply_purge(&purge(1, Mode::Soft, vec![Selector::tag("hot").unwrap()]), 5).unwrap();
    assert!(tagged.iter().all(|id| s.object(id).unwrap().unwrap().stale_since_ms != 0), "every tagged object stale");
    assert!(others.iter().all(|id| s.object(id).unwrap().unwrap().stale_since_ms == 0), "no other one");

    s.apply_purge(&purge(2, Mode::Hard, vec![Selector::tag("hot").unwrap()]), 6).unwrap();
    assert!(tagged.iter().all(|id| s.object(id).unwrap().is_none()));
    assert!(others.iter().all(|id| s.object(id).unwrap().is_some()));
    assert_eq!(s.object_stats(), (others.len() as u64, bytes - 4 * tagged.len() as u64));
    assert_consistent(&s);
}
