//! The hot tier against the store without one: the same operations on
//! both, and every object read through each after every step must be the
//! same. Reading everything after each step fills the hot tier, so a copy
//! a write failed to forget is served and caught.

use bytes::Bytes;
use proptest::prelude::*;
use purgecast_core::{Mode, Purge, Selector};

use super::tests::purge;
use super::tests_objects::fill;
use super::*;

const URLS: &[&str] = &["http://a.com/x", "http://a.com/y/1", "http://b.com/y/2", "http://b.com/z"];
const TAGS: &[&str] = &["t1", "t2"];

fn open_with(dir: &std::path::Path, hot_bytes: u64) -> Store {
    let opts = StoreOptions {
        sync: false,
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        // Small, so that host, tag and everything purges are often deferred.
        defer_over: 2,
        hot_bytes,
        ..StoreOptions::default()
    };
    Store::open(dir, opts).unwrap()
}

fn ids() -> Vec<ObjectId> {
    URLS.iter().flat_map(|u| [None, Some([9u8; 16])].map(|v| object_id(url_hash(u), v))).collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// URL, variant, tags, body length, how many purges ago it started.
    Fill(usize, bool, Vec<&'static str>, usize, u64),
    /// (soft, selectors) in one batch.
    Purges(Vec<(bool, Vec<Selector>)>),
    /// Object, how many purges ago the revalidation started.
    Refresh(usize, u64),
    Evict(usize),
    Sweep(usize),
    Flush,
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        3 => (0..URLS.len()).prop_map(|u| Selector::url(URLS[u]).unwrap()),
        1 => prop_oneof![Just("a.com"), Just("b.com")].prop_map(|h| Selector::host(h).unwrap()),
        1 => Just(Selector::prefix("b.com/y").unwrap()),
        2 => (0..TAGS.len()).prop_map(|t| Selector::tag(TAGS[t]).unwrap()),
        1 => Just(Selector::Everything),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = ids().len();
    prop_oneof![
        4 => (0..URLS.len(), any::<bool>(), proptest::sample::subsequence(TAGS, 0..=2),
              prop_oneof![0..64usize, Just(CHUNK_BYTES + 5)], 0..3u64)
            .prop_map(|(u, v, t, len, ago)| Op::Fill(u, v, t, len, ago)),
        3 => prop::collection::vec((any::<bool>(), prop::collection::vec(selector(), 1..3)), 1..3)
            .prop_map(Op::Purges),
        1 => (0..n, 0..3u64).prop_map(|(i, ago)| Op::Refresh(i, ago)),
        1 => (0..n).prop_map(Op::Evict),
        2 => (1..4usize).prop_map(Op::Sweep),
        1 => Just(Op::Flush),
    ]
}

fn run(s: &Store, op: &Op, seq: &mut u64) {
    match op {
        Op::Fill(u, v, tags, len, ago) => {
            let body: Vec<u8> = (0..*len).map(|i| (i as u64 + *seq) as u8).collect();
            let mut f = fill(s, URLS[*u], tags, &body, v.then_some([9u8; 16]));
            f.started_seq = s.purge_seq().saturating_sub(*ago);
            s.store_object(f).unwrap();
        }
        Op::Purges(list) => {
            let batch: Vec<(Purge, u64)> = list
                .iter()
                .map(|(soft, sels)| {
                    *seq += 1;
                    (purge(*seq, if *soft { Mode::Soft } else { Mode::Hard }, sels.clone()), *seq)
                })
                .collect();
            s.apply_purges(&batch).unwrap();
        }
        Op::Refresh(i, ago) => {
            let meta = (format!("m{seq}").into_bytes(), b"h".to_vec());
            s.refresh_object(&ids()[*i], meta, u64::MAX / 2, s.purge_seq().saturating_sub(*ago)).unwrap();
        }
        Op::Evict(i) => {
            s.evict_object(&ids()[*i]).unwrap();
        }
        Op::Sweep(budget) => {
            s.sweep_deferred(*budget).unwrap();
        }
        Op::Flush => {
            s.flush_index().unwrap();
        }
    }
}

type Seen = Option<(ObjectRecord, Option<Bytes>)>;

fn read(s: &Store, id: &ObjectId) -> Seen {
    s.object_head(id).unwrap().map(|h| (h.rec.clone(), h.first.clone()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reads_through_the_hot_tier_are_reads_of_the_rows(ops in prop::collection::vec(op(), 1..24)) {
        let (dir_hot, dir_cold) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (hot, cold) = (open_with(dir_hot.path(), 1 << 20), open_with(dir_cold.path(), 0));
        let (mut seq_hot, mut seq_cold) = (0, 0);
        for (step, op) in ops.iter().enumerate() {
            run(&hot, op, &mut seq_hot);
            run(&cold, op, &mut seq_cold);
            for id in ids() {
                let (h, c) = (read(&hot, &id), read(&cold, &id));
                prop_assert_eq!(h, c, "step {} ({:?}), object {:?}", step, op, &id[..2]);
            }
        }
        let small = ids().iter().filter_map(|id| read(&cold, id)).any(|(r, _)| r.body_len <= CHUNK_BYTES as u64);
        if hot.deferred_purges() == 0 && small {
            prop_assert!(hot.hot.stats().0 > 0, "small objects that are read are kept");
        }
    }
}
