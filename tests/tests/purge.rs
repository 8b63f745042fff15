//! Purges of every kind, hard and soft, reach and apply on every node.

use std::time::Duration;

use purgecast_tests::*;

const ENTRIES: &[(&str, &[&str])] = &[
    ("https://a.example/index.html", &["home"]),
    ("https://a.example/static/app.js", &["js", "release-1"]),
    ("https://a.example/static/app.css", &["css", "release-1"]),
    ("https://a.example/img/logo.png", &["img"]),
    ("https://b.example/page", &["release-1"]),
    ("https://c.example/doc", &["docs"]),
    ("https://d.example/one", &["d"]),
];

async fn present(c: &Cluster, i: usize, key: &str) -> bool {
    c.get(i, key).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selector_kind_hard_and_soft_on_every_node() {
    let c = Cluster::start(4, Opts { pops: 2, ..Opts::default() }).await.unwrap();
    c.put_everywhere(ENTRIES).await.unwrap();
    let n = c.nodes.len();

    // Hard URL purge from node 1.
    let s = c.purge_and_wait(1, vec![url("https://a.example/index.html")], false).await.unwrap();
    assert_eq!(s.members_applied as usize, n);
    // Hard prefix purge from node 2.
    c.purge_and_wait(2, vec![prefix("a.example/static/")], false).await.unwrap();
    // Soft tag purge from node 3.
    c.purge_and_wait(3, vec![tag("img")], true).await.unwrap();
    // Hard host purge from node 0.
    c.purge_and_wait(0, vec![host("b.example")], false).await.unwrap();

    for i in 0..n {
        assert!(!present(&c, i, "https://a.example/index.html").await, "node {i}: url purge");
        assert!(!present(&c, i, "https://a.example/static/app.js").await, "node {i}: prefix purge");
        assert!(!present(&c, i, "https://a.example/static/app.css").await, "node {i}: prefix purge");
        let logo = c.get(i, "https://a.example/img/logo.png").await.unwrap().expect("soft purge keeps the entry");
        assert!(logo.stale && logo.stale_since_ms > 0, "node {i}: soft tag purge marks stale");
        assert!(!present(&c, i, "https://b.example/page").await, "node {i}: host purge");
        let doc = c.get(i, "https://c.example/doc").await.unwrap().expect("untouched entry stays");
        assert!(!doc.stale, "node {i}: unrelated entry must stay fresh");
        // Tag index rows of purged entries are gone too.
        assert_eq!(c.count_tag(i, "release-1").await.unwrap(), 0, "node {i}: tag rows of purged entries");
    }

    // Soft "everything", then hard "everything".
    c.purge_and_wait(1, vec![everything()], true).await.unwrap();
    for i in 0..n {
        let d = c.get(i, "https://d.example/one").await.unwrap().expect("soft keeps");
        assert!(d.stale, "node {i}: soft everything marks stale");
    }
    c.purge_and_wait(2, vec![everything()], false).await.unwrap();
    for i in 0..n {
        assert_eq!(c.count_all(i).await.unwrap(), 0, "node {i}: hard everything empties the index");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_with_many_selectors_and_per_member_latency() {
    let c = Cluster::start(3, Opts::default()).await.unwrap();
    c.put_everywhere(ENTRIES).await.unwrap();
    let s = c.purge_and_wait(0, vec![url("https://c.example/doc"), tag("d"), host("b.example")], false).await.unwrap();
    assert_eq!(s.members_total, 3);
    assert_eq!(s.applied.len(), 3);
    assert!(s.pending.is_empty() && s.dead.is_empty());
    assert!(s.completion_ms > 0.0);
    assert!(s.applied.iter().all(|a| a.latency_ms <= s.completion_ms + 1e-6));
    for i in 0..3 {
        for k in ["https://c.example/doc", "https://d.example/one", "https://b.example/page"] {
            assert!(!present(&c, i, k).await, "node {i}: {k}");
        }
        assert!(present(&c, i, "https://a.example/index.html").await);
    }
}

/// Two PoPs with two entry nodes each: every purge reaches some nodes
/// twice. Each must be applied once and counted as a duplicate after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_is_dropped_and_harmless() {
    let c = Cluster::start(5, Opts { pops: 2, ..Opts::default() }).await.unwrap();
    let purges = 10;
    for k in 0..purges {
        c.purge_and_wait(k % 5, vec![tag(&format!("t{k}"))], false).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dups = 0.0;
    for node in &c.nodes {
        let m = metrics::scrape(node.metrics).await.unwrap();
        assert_eq!(
            metrics::value(&m, "purgecast_purges_applied_total"),
            purges as f64,
            "{}: applied once each",
            node.name
        );
        dups += metrics::value(&m, "purgecast_purge_duplicates_total");
    }
    assert!(dups > 0.0, "the two-entry fanout must have produced duplicates");
}
