//! Delivery stays complete under SIGKILLs, partitions and long outages.

use std::time::{Duration, Instant};

use purgecast_proto::api as pb;
use purgecast_tests::*;

/// Waits (bounded) until no node has an entry with any of `tags`.
async fn wait_all_gone(c: &Cluster, tags: &[String], limit: Duration) -> Vec<(usize, String)> {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for i in 0..c.nodes.len() {
            for t in tags {
                if c.count_tag(i, t).await.unwrap_or(1) > 0 {
                    left.push((i, t.clone()));
                }
            }
        }
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn put_tags(c: &Cluster, i: usize, tags: &[String]) {
    let entries = tags.iter().map(|t| entry(&format!("https://f.example/{t}"), &[t])).collect();
    c.client(i).await.unwrap().index_put(entries).await.unwrap();
}

/// 1,000 purges from random origins while a third of the nodes is killed
/// with SIGKILL and restarted: every acknowledged purge ends up applied on
/// every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_a_third_during_a_purge_storm() {
    let n = 6;
    let mut c = Cluster::start(n, Opts { pops: 2, ..Opts::default() }).await.unwrap();
    let tags: Vec<String> = (0..1000).map(|k| format!("storm-{k}")).collect();
    for i in 0..n {
        put_tags(&c, i, &tags).await;
    }
    let victims = [1, 4];
    let mut acked = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(Some(c.client(i).await.unwrap()));
    }
    for (k, t) in tags.iter().enumerate() {
        if k == 300 {
            for v in victims {
                c.kill9(v);
                clients[v] = None;
            }
        }
        if k == 700 {
            for v in victims {
                c.restart(v).await.unwrap();
                clients[v] = Some(c.client(v).await.unwrap());
            }
        }
        let origin = (k * 7 + 3) % n;
        let Some(client) = clients[origin].as_ref() else { continue };
        if client.purge(vec![tag(t)], pb::PurgeMode::Hard).await.is_ok() {
            acked.push(t.clone());
        }
    }
    assert!(acked.len() >= 800, "most purges must be accepted, got {}", acked.len());
    let left = wait_all_gone(&c, &acked, Duration::from_secs(60)).await;
    if !left.is_empty() {
        for i in [0, 1] {
            let log = c.nodes[i].log();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("purge accepted")).collect();
            eprintln!("==== node {i} log (last 40 lines)\n{}", tail[tail.len().saturating_sub(40)..].join("\n"));
        }
    }
    assert!(
        left.is_empty(),
        "acknowledged purges not applied everywhere: {} left, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
}

/// Purges on both sides of a partition reach the other side once it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_and_both_sides_catch_up() {
    let c = Cluster::start(5, Opts { wan: true, ..Opts::default() }).await.unwrap();
    let tags: Vec<String> = (0..10).map(|k| format!("part-{k}")).collect();
    for i in 0..5 {
        put_tags(&c, i, &tags).await;
    }
    let (a, b) = ([0, 1, 2], [3, 4]);
    c.partition(&a, &b, true).unwrap();
    // The nodes poll their WAN file every 200 ms; under load a reload can lag.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (k, t) in tags.iter().enumerate() {
        let origin = if k % 2 == 0 { a[k % 3] } else { b[k % 2] };
        c.client(origin).await.unwrap().purge(vec![tag(t)], pb::PurgeMode::Hard).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // While cut, a purge from side A has not reached side B.
    assert_eq!(c.count_tag(3, "part-0").await.unwrap(), 1, "the partition must hold");
    assert_eq!(c.count_tag(0, "part-0").await.unwrap(), 0);
    c.partition(&a, &b, false).unwrap();
    let left = wait_all_gone(&c, &tags, Duration::from_secs(30)).await;
    assert!(left.is_empty(), "after healing: {left:?}");
}

/// A node down for longer than the retention window cannot know what it
/// missed: it flushes its whole index when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_longer_than_retention_flushes_on_return() {
    let mut opts = Opts::default();
    opts.protocol.push(("retention".into(), "\"2s\"".into()));
    let mut c = Cluster::start(3, opts).await.unwrap();
    c.put_everywhere(&[("https://r.example/a", &["a"]), ("https://r.example/b", &["b"])]).await.unwrap();
    // Let the victim record that it is alive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.kill9(2);
    c.client(0).await.unwrap().purge(vec![tag("a")], pb::PurgeMode::Hard).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.restart(2).await.unwrap();
    // Not only the missed purge's entry: everything is gone.
    assert_eq!(c.count_all(2).await.unwrap(), 0, "flushed index");
    assert!(c.nodes[2].log().contains("FLUSHED"), "the flush is logged loudly");
    let m = metrics::scrape(c.nodes[2].metrics).await.unwrap();
    assert_eq!(metrics::value(&m, "purgecast_flushes_total"), 1.0);
    // The nodes that stayed up keep their unrelated entry.
    assert_eq!(c.count_tag(1, "b").await.unwrap(), 1);
}

/// A node restarted after SIGKILL rejoins, and the purges it then accepts
/// reach every peer. Until it has rejoined it refuses purges (UNAVAILABLE)
/// rather than accept what it cannot spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_and_its_purges_spread() {
    let mut c = Cluster::start(3, Opts::default()).await.unwrap();
    c.put_everywhere(&[("https://p.example/a", &["a"])]).await.unwrap();
    c.kill9(2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(2).await.unwrap();
    let restarted = Instant::now();
    let mut accepted = None;
    for _ in 0..150 {
        match c.client(2).await.unwrap().purge(vec![tag("a")], pb::PurgeMode::Hard).await {
            Ok(r) => {
                accepted = Some(r);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(tonic::Code::Unavailable), "only 'not joined yet' is acceptable: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let accepted = accepted.expect("the restarted node must rejoin within 30 s");
    eprintln!("restarted node accepted a purge {:?} after its API came up", restarted.elapsed());
    assert_eq!(accepted.members_total, 3);
    let s = c.client(2).await.unwrap().wait_complete(&accepted.id, Duration::from_secs(20), POLL).await.unwrap();
    assert_eq!(s.members_applied, 3);
    for i in 0..3 {
        assert_eq!(c.count_tag(i, "a").await.unwrap(), 0, "node {i}");
    }
}
