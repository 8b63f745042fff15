//! The store against the reference semantics, `Selector::matches`, over
//! random entries, purges and batch boundaries.

use std::collections::BTreeMap;

use proptest::prelude::*;
use purgecast_core::{parse_url, CacheKey};
use purgecast_core::{Mode, Selector};

use super::tests::{all_entries, assert_consistent, input, open, purge};
use super::*;

const HOSTS: &[&str] = &["a.com", "b.com", "a.com:8080"];
const PATHS: &[&str] = &["/", "/a", "/a/b", "/ab", "/b?x=1", "/a/"];
const PREFIXES: &[&str] = &["/", "/a", "/a/", "/b", "/c"];
const TAGS: &[&str] = &["t1", "t2", "t3"];

fn url() -> impl Strategy<Value = String> {
    (any::<bool>(), 0..HOSTS.len(), 0..PATHS.len())
        .prop_map(|(tls, h, p)| format!("{}://{}{}", if tls { "https" } else { "http" }, HOSTS[h], PATHS[p]))
}

fn tags() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(TAGS, 0..=TAGS.len())
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        4 => url().prop_map(|u| Selector::url(&u).unwrap()),
        2 => (0..HOSTS.len()).prop_map(|h| Selector::host(HOSTS[h]).unwrap()),
        3 => (0..HOSTS.len(), 0..PREFIXES.len())
            .prop_map(|(h, p)| Selector::prefix(&format!("{}{}", HOSTS[h], PREFIXES[p])).unwrap()),
        3 => (0..TAGS.len()).prop_map(|t| Selector::tag(TAGS[t]).unwrap()),
        1 => Just(Selector::Everything),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<(String, Vec<&'static str>)>),
    /// Purges applied in one batch: (mode is soft, selectors, issued_at).
    Purges(Vec<(bool, Vec<Selector>, u64)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => prop::collection::vec((url(), tags()), 1..8).prop_map(Op::Put),
        2 => prop::collection::vec((any::<bool>(), prop::collection::vec(selector(), 1..4), 0..50u64), 1..6)
            .prop_map(Op::Purges),
    ]
}

/// The reference model: key -> (parsed key, tags, stale, stale_since).
type Model = BTreeMap<String, (CacheKey, Vec<String>, bool, u64)>;

fn model_apply(m: &mut Model, soft: bool, sels: &[Selector], issued: u64) -> ApplyOutcome {
    let hit: Vec<String> = m
        .iter()
        .filter(|(_, (ck, tags, _, _))| sels.iter().any(|s| s.matches(ck, tags)))
        .map(|(k, _)| k.clone())
        .collect();
    let mut out = ApplyOutcome { matched: hit.len() as u64, ..Default::default() };
    for k in hit {
        if !soft {
            m.remove(&k);
            out.removed += 1;
        } else if let Some(e) = m.get_mut(&k) {
            if !e.2 {
                out.marked_stale += 1;
                e.3 = issued;
            }
            e.2 = true;
            e.3 = e.3.min(issued);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_reference_matching(ops in prop::collection::vec(op(), 1..10)) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut model = Model::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Put(items) => {
                    let inputs: Vec<EntryInput> = items.iter().map(|(u, t)| input(u, t)).collect();
                    s.put_entries(&inputs).unwrap();
                    for (u, t) in items {
                        let ck = parse_url(&u).unwrap();
                        let mut tags: Vec<String> = t.iter().map(|x| x.to_string()).collect();
                        tags.sort();
                        model.insert(ck.key.clone(), (ck, tags, false, 0));
                    }
                }
                Op::Purges(list) => {
                    let mut batch = Vec::new();
                    let mut expected = Vec::new();
                    for (soft, sels, issued) in list {
                        seq += 1;
                        let mut p = purge(seq, if soft { Mode::Soft } else { Mode::Hard }, sels.clone());
                        p.issued_at_ms = issued;
                        expected.push(model_apply(&mut model, soft, &sels, issued));
                        batch.push((p, seq));
                    }
                    prop_assert_eq!(s.apply_purges(&batch).unwrap(), expected);
                }
            }
            prop_assert_eq!(s.count_all(), model.len() as u64);
        }
        let got: Vec<(String, Vec<String>, bool, u64)> =
            all_entries(&s).into_iter().map(|e| (e.key, e.tags, e.stale, e.stale_since_ms)).collect();
        let want: Vec<(String, Vec<String>, bool, u64)> =
            model.into_iter().map(|(k, (_, tags, stale, since))| (k, tags, stale, since)).collect();
        prop_assert_eq!(got, want);
        for h in HOSTS {
            prop_assert_eq!(s.count_by_host(h).unwrap(), s.list_by_host(h, usize::MAX).unwrap().len() as u64);
        }
        assert_consistent(&s);
    }
}
