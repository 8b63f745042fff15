//! The edge: every node an HTTP cache over its own store, in front of a
//! real origin process (`purgecast origin`), purged through the purge plane.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use purgecast_tests::http::{self, Origin, Response};
use purgecast_tests::metrics::{labelled, scrape, value};
use purgecast_tests::{everything, host, prefix, tag, url, Cluster, Opts};

const SITE: &str = "site.test";

fn opts(origin: &Origin, edge: &[(&str, &str)]) -> Opts {
    Opts {
        edge_origin: Some(origin.upstream()),
        edge: edge.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Opts::default()
    }
}

async fn get(c: &Cluster, i: usize, path: &str) -> Result<Response> {
    http::get(c.nodes[i].edge, SITE, path, &[]).await
}

/// Waits until node `i`'s edge serves stored objects (caught up after a
/// start), bounded.
async fn wait_caught_up(c: &Cluster, i: usize) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(m) = scrape(c.nodes[i].metrics).await {
            if value(&m, "purgecast_edge_caught_up") == 1.0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {i} did not catch up")
}

fn version(r: &Response) -> String {
    r.text().trim().rsplit(' ').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn miss_then_hit_with_one_origin_request_and_the_hit_survives_a_restart() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let mut c = Cluster::start(3, opts(&origin, &[])).await?;
    let first = get(&c, 0, "/a/1").await?;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.cache().contains("fwd=miss"), "{first:?}");
    assert_eq!(first.text(), "site.test/a/1 v1\n");
    assert!(first.header("cache-tag").is_none(), "tag headers are stripped: {first:?}");
    let second = get(&c, 0, "/a/1").await?;
    assert!(second.is_hit(), "{second:?}");
    assert_eq!(second.body, first.body);
    assert!(second.header("age").is_some(), "a hit says its age: {second:?}");
    assert_eq!(origin.hits("/a/1").await?.0, 1);

    c.kill9(0);
    c.restart(0).await?;
    wait_caught_up(&c, 0).await?;
    let after = get(&c, 0, "/a/1").await?;
    assert!(after.is_hit(), "the object is on disk: {after:?}");
    assert_eq!(after.body, first.body);
    assert_eq!(origin.hits("/a/1").await?.0, 1, "no second origin request");
    Ok(())
}

/// Caches `path` on every node, bumps the origin, purges through node 1
/// and checks that the next GET on every other node is a miss with the new
/// version.
async fn purge_case(c: &Cluster, origin: &Origin, path: &str, sel: purgecast_proto::api::Selector) -> Result<()> {
    for i in 0..c.nodes.len() {
        get(c, i, path).await?;
        assert!(get(c, i, path).await?.is_hit(), "{path} cached on node {i}");
    }
    let old = version(&get(c, 0, path).await?);
    origin.bump().await?;
    c.purge_and_wait(1, vec![sel], false).await?;
    for i in [0, 2] {
        let r = get(c, i, path).await?;
        assert!(r.cache().contains("fwd=miss"), "{path} on node {i} after the purge: {r:?}");
        assert_ne!(version(&r), old, "{path} on node {i} is the new version");
    }
    Ok(())
}

#[tokio::test]
async fn a_purge_of_each_kind_on_one_node_is_a_miss_on_every_other() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let c = Cluster::start(3, opts(&origin, &[])).await?;
    purge_case(&c, &origin, "/u/1", url("http://site.test/u/1")).await?;
    purge_case(&c, &origin, "/t/1?tags=red", tag("red")).await?;
    purge_case(&c, &origin, "/p/dir/1", prefix("http://site.test/p/dir/")).await?;
    purge_case(&c, &origin, "/h/1", host(SITE)).await?;
    purge_case(&c, &origin, "/e/1", everything()).await?;
    // Untouched by a purge that does not select it.
    get(&c, 0, "/keep/1").await?;
    c.purge_and_wait(2, vec![tag("blue")], false).await?;
    assert!(get(&c, 0, "/keep/1").await?.is_hit());
    Ok(())
}

#[tokio::test]
async fn a_soft_purge_serves_stale_once_then_revalidates_with_a_304() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let c = Cluster::start(3, opts(&origin, &[])).await?;
    let first = get(&c, 0, "/soft/1").await?;
    assert!(get(&c, 0, "/soft/1").await?.is_hit());
    c.purge_and_wait(1, vec![url("http://site.test/soft/1")], true).await?;
    let stale = get(&c, 0, "/soft/1").await?;
    assert_eq!(stale.cache(), "purgecast; hit; fwd=stale", "served stale, revalidated behind: {stale:?}");
    assert_eq!(stale.body, first.body);
    let start = Instant::now();
    while origin.hits("/soft/1").await?.1 == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/soft/1").await?, (2, 1), "one conditional request");
    // The revalidation is written back; the next request is a plain hit.
    let start = Instant::now();
    loop {
        let r = get(&c, 0, "/soft/1").await?;
        if r.is_hit() {
            assert_eq!(r.body, first.body);
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no hit after the revalidation: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.hits("/soft/1").await?.0, 2);
    Ok(())
}

#[tokio::test]
async fn a_fill_in_flight_during_a_purge_is_not_stored() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let c = Cluster::start(3, opts(&origin, &[])).await?;
    origin.gate(true).await?;
    let edge = c.nodes[0].edge;
    let fill = tokio::spawn(async move { http::get(edge, SITE, "/race/1", &[]).await });
    origin.wait_held(Duration::from_secs(10)).await?;
    c.purge_and_wait(2, vec![url("http://site.test/race/1")], false).await?;
    origin.gate(false).await?;
    let old = fill.await??;
    assert_eq!(old.status, 200);
    // The site changes after the old copy was fetched: a node that stored
    // the in-flight fill would now serve a hit of the old version.
    origin.bump().await?;
    for i in 0..3 {
        let r = get(&c, i, "/race/1").await?;
        assert!(r.cache().contains("fwd=miss"), "node {i}: {r:?}");
        assert_ne!(version(&r), version(&old), "node {i} serves the new version");
    }
    let m = scrape(c.nodes[0].metrics).await?;
    let raced = labelled(&m, "purgecast_edge_fills_total", &[("result", "raced")]);
    assert!(raced >= 1.0, "the dropped fill is counted:\n{m}");
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_cold_gets_make_one_origin_request() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let c = Cluster::start(1, opts(&origin, &[])).await?;
    origin.gate(true).await?;
    let edge = c.nodes[0].edge;
    let tasks: Vec<_> =
        (0..50).map(|_| tokio::spawn(async move { http::get(edge, SITE, "/herd/1", &[]).await })).collect();
    origin.wait_held(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.waiting().await?, 1, "the other 49 wait for the first fetch");
    origin.gate(false).await?;
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await??;
        assert_eq!(r.status, 200, "{r:?}");
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(origin.hits("/herd/1").await?.0, 1);
    Ok(())
}

#[tokio::test]
async fn stale_if_error_covers_an_origin_failure() -> Result<()> {
    let origin = Origin::start(&["--max-age", "1", "--sie", "60"]).await?;
    let c = Cluster::start(1, opts(&origin, &[("stale_while_revalidate", "\"0s\"")])).await?;
    let first = get(&c, 0, "/sie/1").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    origin.fail(503).await?;
    let r = get(&c, 0, "/sie/1").await?;
    assert_eq!(r.status, 200, "stale copy instead of the 503: {r:?}");
    assert_eq!(r.body, first.body);
    origin.fail(0).await?;
    Ok(())
}

#[tokio::test]
async fn vary_keeps_variants_apart() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let c = Cluster::start(1, opts(&origin, &[])).await?;
    let e = c.nodes[0].edge;
    let path = "/vary/1?vary=Accept-Language";
    let en = http::get(e, SITE, path, &[("Accept-Language", "en")]).await?;
    let fr = http::get(e, SITE, path, &[("Accept-Language", "fr")]).await?;
    assert!(en.text().contains("vary=en") && fr.text().contains("vary=fr"), "{en:?} {fr:?}");
    let en2 = http::get(e, SITE, path, &[("Accept-Language", "en")]).await?;
    let fr2 = http::get(e, SITE, path, &[("Accept-Language", "fr")]).await?;
    assert!(en2.is_hit() && fr2.is_hit(), "{en2:?} {fr2:?}");
    assert_eq!((en2.body, fr2.body), (en.body, fr.body));
    // A URL purge removes every variant.
    c.purge_and_wait(0, vec![url("http://site.test/vary/1?vary=Accept-Language")], false).await?;
    let again = http::get(e, SITE, path, &[("Accept-Language", "fr")]).await?;
    assert!(again.cache().contains("fwd=miss"), "{again:?}");
    Ok(())
}

#[tokio::test]
async fn a_purge_missed_while_down_is_applied_before_the_edge_serves_the_object() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    // Slow anti-entropy: the restarted node learns what it missed seconds
    // after its edge opens, so serving the old copy meanwhile would show.
    let mut o = opts(&origin, &[]);
    o.protocol.retain(|(k, _)| k != "ae_interval");
    o.protocol.push(("ae_interval".into(), "\"2s\"".into()));
    let mut c = Cluster::start(3, o).await?;
    get(&c, 2, "/down/1").await?;
    let old = get(&c, 2, "/down/1").await?;
    assert!(old.is_hit());
    c.kill9(2);
    c.wait_members(2, Duration::from_secs(20)).await?;
    c.purge_and_wait(0, vec![url("http://site.test/down/1")], false).await?;
    origin.bump().await?;
    c.spawn(2)?;
    // From the first request the edge answers, it never serves the old copy.
    let start = Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = get(&c, 2, "/down/1").await {
            assert_eq!(r.status, 200, "{r:?}");
            assert_ne!(version(&r), version(&old), "served the purged copy: {r:?}");
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered > 0, "the edge never answered after the restart");
    wait_caught_up(&c, 2).await?;
    get(&c, 2, "/down/1").await?;
    assert!(get(&c, 2, "/down/1").await?.is_hit(), "caught up, it serves from its cache again");
    Ok(())
}

#[tokio::test]
async fn bad_requests_and_bad_origins_get_clean_errors_and_the_node_keeps_serving() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let table = format!(
        "{{ \"ok.test\" = \"{up}\", \"dead.test\" = \"{dead}\", \"slow.test\" = \"{up}\" }}",
        up = origin.upstream()
    );
    let mut o = opts(&origin, &[("origin_read_timeout", "\"1s\""), ("origins", &table)]);
    o.edge_origin = Some(String::new());
    let c = Cluster::start(1, o).await?;
    let e = c.nodes[0].edge;
    let healthy = || async { http::get(e, "ok.test", "/fine", &[]).await };
    assert_eq!(healthy().await?.status, 200);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
        ("no host", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec()),
        ("bad host", b"GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n".to_vec()),
        ("unknown host", b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n".to_vec()),
        (
            "oversized header",
            format!("GET / HTTP/1.1\r\nHost: ok.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(200_000))
                .into_bytes(),
        ),
        (
            "huge header",
            format!("GET / HTTP/1.1\r\nHost: ok.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(4 << 20))
                .into_bytes(),
        ),
    ];
    for (what, req) in cases {
        match http::raw(e, &req).await {
            Ok(r) => assert!((400..500).contains(&r.status), "{what}: {r:?}"),
            // Refusing to read a request that is not HTTP at all by closing
            // the connection is clean too; what matters is the next line.
            Err(err) => assert!(what == "garbage" || what == "huge header", "{what}: {err}"),
        }
        assert_eq!(healthy().await?.status, 200, "still serving after {what}");
    }
    let down = http::get(e, "dead.test", "/x", &[]).await?;
    assert!((500..600).contains(&down.status), "origin down: {down:?}");
    let slow = http::get(e, "slow.test", "/x?delay_ms=5000", &[]).await?;
    assert!((500..600).contains(&slow.status), "origin too slow: {slow:?}");
    assert_eq!(healthy().await?.status, 200, "still serving");
    Ok(())
}

#[tokio::test]
async fn the_cache_stays_under_its_size_and_evicted_objects_leave_the_index() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    let o = opts(&origin, &[("cache_bytes", "8192"), ("max_object_bytes", "4096")]);
    let c = Cluster::start(1, o).await?;
    for k in 0..10 {
        let r = get(&c, 0, &format!("/big/{k}?size=2048")).await?;
        assert_eq!(r.body.len(), 2048);
    }
    // Eviction runs right after each fill, off the request path, and the
    // size gauges follow once a second: wait for both.
    let start = Instant::now();
    let m = loop {
        let m = scrape(c.nodes[0].metrics).await?;
        let settled = value(&m, "purgecast_edge_evictions_total") >= 6.0
            && value(&m, "purgecast_edge_objects") == 4.0
            && value(&m, "purgecast_edge_cached_bytes") <= 8192.0;
        if settled || start.elapsed() > Duration::from_secs(10) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(value(&m, "purgecast_edge_cached_bytes") <= 8192.0, "{m}");
    assert!(value(&m, "purgecast_edge_evictions_total") >= 6.0, "{m}");
    // The most recent objects stay, the oldest went, with their entries.
    assert!(get(&c, 0, "/big/9?size=2048").await?.is_hit());
    let client = c.client(0).await?;
    assert!(client.index_get("http://site.test/big/0?size=2048").await?.is_none(), "evicted: no index entry");
    assert!(client.index_get("http://site.test/big/9?size=2048").await?.is_some());
    // Larger than max_object_bytes: served, not cached.
    get(&c, 0, "/huge/1?size=5000").await?;
    let again = get(&c, 0, "/huge/1?size=5000").await?;
    assert!(!again.is_hit() && again.body.len() == 5000, "{again:?}");
    assert_eq!(origin.hits("/huge/1").await?.0, 2, "fetched each time");
    Ok(())
}
