//! A node killed with SIGKILL keeps its index and its applied-purge log.

use std::time::Duration;

use purgecast_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_keeps_its_index_and_applied_log() {
    let mut c = Cluster::start(3, Opts::default()).await.unwrap();
    c.put_everywhere(&[("https://k.example/keep", &["keep"]), ("https://k.example/gone", &["old"])]).await.unwrap();
    c.purge_and_wait(0, vec![tag("old")], false).await.unwrap();

    c.kill9(2);
    c.restart(2).await.unwrap();
    c.wait_members(3, Duration::from_secs(30)).await.unwrap();

    assert!(c.get(2, "https://k.example/keep").await.unwrap().is_some(), "index survives SIGKILL");
    assert!(c.get(2, "https://k.example/gone").await.unwrap().is_none(), "applied purge stays applied");

    // If the restarted node had forgotten that it applied the "old" purge,
    // anti-entropy would bring it back and it would delete this new entry.
    c.client(2).await.unwrap().index_put(vec![entry("https://k.example/new", &["old"])]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c.get(2, "https://k.example/new").await.unwrap().is_some(), "old purge must not be applied again");
    let m = metrics::scrape(c.nodes[2].metrics).await.unwrap();
    assert_eq!(metrics::value(&m, "purgecast_purges_applied_total"), 0.0, "nothing re-applied after restart");

    // And it still takes part: a new purge reaches it.
    let s = c.purge_and_wait(1, vec![tag("keep")], false).await.unwrap();
    assert_eq!(s.members_applied, 3);
    assert!(c.get(2, "https://k.example/keep").await.unwrap().is_none());
}
