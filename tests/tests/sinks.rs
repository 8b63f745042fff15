//! Sinks: each node purges a real cache beside it (Varnish, nginx, Apache
//! Traffic Server, or a webhook), started by the test on loopback in front
//! of a real origin process.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use purgecast_proto::api as pb;
use purgecast_tests::caches::{available, Cache, Kind};
use purgecast_tests::http::{self, Origin, Receiver, Response};
use purgecast_tests::metrics::{http_get, labelled, scrape};
use purgecast_tests::{everything, host, prefix, tag, url, Cluster, Opts};

const SITE: &str = "site.test";
const OTHER: &str = "other.test";

async fn get(cache: &Cache, host: &str, path: &str) -> Result<Response> {
    http::get(cache.addr, host, path, &[]).await
}

/// `HIT`, `HIT-STALE`, `MISS` (Varnish's VCL) or nginx/ATS's own words.
fn state(r: &Response) -> String {
    r.header("x-cache").unwrap_or("").to_ascii_uppercase()
}

fn version(r: &Response) -> String {
    r.text().trim().rsplit(' ').next().unwrap_or_default().to_string()
}

/// Fills `path` into `cache` and checks the next request is a hit.
async fn warm(cache: &Cache, host: &str, path: &str) -> Result<()> {
    let first = get(cache, host, path).await?;
    if first.status != 200 {
        bail!("{host}{path} on {:?}: {first:?}", cache.kind);
    }
    let second = get(cache, host, path).await?;
    if !state(&second).starts_with("HIT") {
        bail!("{host}{path} not cached by {:?}: {second:?}", cache.kind);
    }
    Ok(())
}

/// A test origin, `caches` caches of `kind` in front of it, and `nodes`
/// nodes, node i purging cache i through a sink named "cache" (`extra`:
/// more sink keys). None when the cache is not installed (outside CI).
struct Rig {
    origin: Origin,
    caches: Vec<Cache>,
    c: Cluster,
    _root: tempfile::TempDir,
}

async fn rig(kind: Kind, caches: usize, nodes: usize, extra: &[(&str, &str)]) -> Result<Option<Rig>> {
    if !available(kind)? {
        return Ok(None);
    }
    let origin = Origin::start(&[]).await?;
    let root = tempfile::tempdir()?;
    let mut cs = Vec::new();
    for i in 0..caches {
        let dir = root.path().join(format!("{}-{i}", kind.sink_kind()));
        cs.push(Cache::start(kind, &dir, &origin.upstream()).await?);
    }
    let node_extra = cs.iter().enumerate().map(|(i, cache)| (i, cache.sink_toml("cache", extra))).collect();
    let c = Cluster::start(nodes, Opts { node_extra, ..Opts::default() }).await?;
    Ok(Some(Rig { origin, caches: cs, c, _root: root }))
}

async fn purge(c: &Cluster, i: usize, selectors: Vec<pb::Selector>, soft: bool) -> Result<pb::PurgeStatus> {
    let status = c.purge_and_wait(i, selectors, soft).await?;
    assert!(status.complete && status.pending.is_empty(), "{status:?}");
    Ok(status)
}

#[tokio::test]
async fn three_varnish_caches_purged_by_tag_url_host_and_prefix() -> Result<()> {
    let Some(Rig { origin: _origin, caches: vs, c, _root }) = rig(Kind::Varnish, 3, 3, &[]).await? else {
        return Ok(());
    };
    let paths = [
        (SITE, "/a/1?tags=red"),
        (SITE, "/b/2"),
        (SITE, "/c/3"),
        (SITE, "/d/4"),
        (OTHER, "/a/1"),
        // Regex metacharacters in a prefix are matched literally.
        (SITE, "/e.x(1)+[z]/k"),
        (SITE, "/eax(1)+[z]/k"),
    ];
    for v in &vs {
        for (h, p) in paths {
            warm(v, h, p).await?;
        }
    }

    // Tag, through node 0: only the tagged object goes, on all three.
    purge(&c, 0, vec![tag("red")], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, SITE, "/a/1?tags=red").await?), "MISS");
        assert!(state(&get(v, SITE, "/b/2").await?).starts_with("HIT"));
    }
    // URL, through node 1.
    purge(&c, 1, vec![url("http://site.test/b/2")], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, SITE, "/b/2").await?), "MISS");
        assert!(state(&get(v, SITE, "/c/3").await?).starts_with("HIT"));
    }
    // Prefix, through node 2: /c goes, /d and the other host stay.
    purge(&c, 2, vec![prefix("site.test/c")], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, SITE, "/c/3").await?), "MISS");
        assert!(state(&get(v, SITE, "/d/4").await?).starts_with("HIT"));
        assert!(state(&get(v, OTHER, "/a/1").await?).starts_with("HIT"));
    }
    purge(&c, 2, vec![prefix("site.test/e.x(1)+[z]/")], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, SITE, "/e.x(1)+[z]/k").await?), "MISS");
        assert!(state(&get(v, SITE, "/eax(1)+[z]/k").await?).starts_with("HIT"), "'.' is not a wildcard");
    }
    // Host: the other host goes, site.test stays.
    purge(&c, 0, vec![host(OTHER)], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, OTHER, "/a/1").await?), "MISS");
        assert!(state(&get(v, SITE, "/d/4").await?).starts_with("HIT"));
    }
    // Everything.
    purge(&c, 1, vec![everything()], false).await?;
    for v in &vs {
        assert_eq!(state(&get(v, SITE, "/d/4").await?), "MISS");
    }
    let m = scrape(c.nodes[0].metrics).await?;
    assert!(labelled(&m, "purgecast_sink_purges_total", &[("result", "confirmed"), ("sink", "cache")]) >= 5.0, "{m}");
    Ok(())
}

#[tokio::test]
async fn a_soft_purge_serves_grace_then_the_new_version() -> Result<()> {
    let Some(Rig { origin, caches: vs, c, _root }) = rig(Kind::Varnish, 2, 2, &[]).await? else {
        return Ok(());
    };
    for v in &vs {
        warm(v, SITE, "/s/1").await?;
        warm(v, SITE, "/s/2").await?;
    }
    origin.bump().await?;
    purge(&c, 0, vec![tag("s")], true).await?;
    purge(&c, 1, vec![url("http://site.test/s/2")], true).await?;
    for v in &vs {
        for path in ["/s/1", "/s/2"] {
            let stale = get(v, SITE, path).await?;
            assert_eq!(state(&stale), "HIT-STALE", "{path}: {stale:?}");
            assert_eq!(version(&stale), "v1", "grace serves the old copy at once");
            // The background fetch replaces it; bounded wait.
            let start = Instant::now();
            loop {
                let r = get(v, SITE, path).await?;
                if version(&r) == "v2" && state(&r) == "HIT" {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("{path} never refreshed: {r:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// A cache that hangs (SIGSTOP: it keeps its objects) while purges arrive:
/// the purge stays pending at its origin, the node turns not ready, and
/// when the cache is back the purge reaches it, also after the node itself
/// was killed and restarted in between.
#[tokio::test]
async fn a_hung_varnish_gets_its_purges_when_back_even_across_a_node_restart() -> Result<()> {
    let Some(Rig { origin: _origin, caches: vs, mut c, _root }) =
        rig(Kind::Varnish, 3, 3, &[("timeout", "\"300ms\""), ("not_ready_after", "\"1s\"")]).await?
    else {
        return Ok(());
    };
    for v in &vs {
        warm(v, SITE, "/h/1").await?;
        warm(v, SITE, "/h/2").await?;
    }
    vs[2].freeze(true)?;
    let client = c.client(0).await?;
    let first = client.purge(vec![tag("h")], pb::PurgeMode::Hard).await?.id;
    let node2 = c.nodes[2].name.clone();
    // The other caches confirm; node 2 stays pending for as long as its
    // cache is away.
    let start = Instant::now();
    loop {
        let s = client.status(&first).await?;
        if s.pending == vec![node2.clone()] {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the caches of nodes 0 and 1 never confirmed: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let s = client.status(&first).await?;
        assert!(!s.complete, "complete while node 2's cache is hung: {s:?}");
        assert_eq!(s.pending, vec![node2.clone()]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, why) = http_get(c.nodes[2].metrics, "/readyz").await?;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("sinks"), "{why}");

    // The node dies with the purge unconfirmed, and comes back.
    c.kill9(2);
    c.restart(2).await?;
    let second = client.purge(vec![url("http://site.test/h/2")], pb::PurgeMode::Hard).await?.id;
    tokio::time::sleep(Duration::from_millis(500)).await;

    vs[2].freeze(false)?;
    for id in [&first, &second] {
        let s = client.wait_complete(id, Duration::from_secs(20), Duration::from_millis(50)).await?;
        assert!(s.complete && s.pending.is_empty(), "{s:?}");
    }
    assert_eq!(state(&get(&vs[2], SITE, "/h/1").await?), "MISS", "the restarted node sent the backlog");
    assert_eq!(state(&get(&vs[2], SITE, "/h/2").await?), "MISS");
    let (code, why) = http_get(c.nodes[2].metrics, "/readyz").await?;
    assert_eq!(code, 200, "ready again: {why}");
    Ok(())
}

/// A Varnish that is down (connection refused) while a purge arrives gets
/// it once it is started again; until then its node is pending.
#[tokio::test]
async fn a_stopped_varnish_gets_the_purge_once_started_again() -> Result<()> {
    let Some(Rig { origin: _origin, caches: mut vs, c, _root }) = rig(Kind::Varnish, 2, 2, &[]).await? else {
        return Ok(());
    };
    vs[1].stop();
    let client = c.client(0).await?;
    let id = client.purge(vec![tag("down")], pb::PurgeMode::Hard).await?.id;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = client.status(&id).await?;
    assert!(!s.complete && s.pending == vec![c.nodes[1].name.clone()], "{s:?}");
    vs[1].restart().await?;
    let s = client.wait_complete(&id, Duration::from_secs(20), Duration::from_millis(50)).await?;
    assert!(s.complete && s.pending.is_empty(), "{s:?}");
    let m = scrape(c.nodes[1].metrics).await?;
    assert!(labelled(&m, "purgecast_sink_purges_total", &[("result", "failed"), ("sink", "cache")]) >= 1.0, "{m}");
    Ok(())
}

/// Varnish skips objects being fetched when a tag purge arrives
/// (varnish-cache#1420): the fetch stores the old object after the purge.
/// The sink's repeat removes it.
#[tokio::test]
async fn a_fill_racing_a_tag_purge_is_removed_by_the_repeat() -> Result<()> {
    let Some(Rig { origin, caches: vs, c, _root }) = rig(Kind::Varnish, 1, 1, &[("repeat_after", "\"1s\"")]).await?
    else {
        return Ok(());
    };
    origin.gate(true).await?;
    let addr = vs[0].addr;
    let fill = tokio::spawn(async move { http::get(addr, SITE, "/race/1", &[]).await });
    origin.wait_held(Duration::from_secs(10)).await?;
    // The origin has answered nothing yet: the purge finds a busy object.
    purge(&c, 0, vec![tag("race")], false).await?;
    origin.gate(false).await?;
    let filled = fill.await??;
    assert_eq!(version(&filled), "v1");
    // New content from now on: what a request should get once the object
    // the racing fill stored is gone.
    origin.bump().await?;
    let raced = get(&vs[0], SITE, "/race/1").await?;
    assert_eq!((state(&raced).as_str(), version(&raced).as_str()), ("HIT", "v1"), "the race, as Varnish has it");
    let start = Instant::now();
    loop {
        let r = get(&vs[0], SITE, "/race/1").await?;
        if version(&r) == "v2" {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the repeat never removed the raced object: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = scrape(c.nodes[0].metrics).await?;
    assert!(labelled(&m, "purgecast_sink_repeats_total", &[("result", "confirmed"), ("sink", "cache")]) >= 1.0);
    Ok(())
}

/// nginx and ATS purge URLs; other selectors are skipped, counted, and do
/// not hold the purge up.
async fn url_only_cache(kind: Kind) -> Result<()> {
    let Some(Rig { origin: _origin, caches: cs, c, _root }) = rig(kind, 1, 2, &[]).await? else {
        return Ok(());
    };
    warm(&cs[0], SITE, "/u/1").await?;
    warm(&cs[0], SITE, "/u/2").await?;
    // Through the node without the cache: it travels the purge plane.
    purge(&c, 1, vec![url("http://site.test/u/1")], false).await?;
    let r = get(&cs[0], SITE, "/u/1").await?;
    assert!(!state(&r).starts_with("HIT"), "{kind:?} still serves a purged URL: {r:?}");
    purge(&c, 1, vec![tag("u")], false).await?;
    assert!(state(&get(&cs[0], SITE, "/u/2").await?).starts_with("HIT"), "a tag cannot reach {kind:?}");
    let m = scrape(c.nodes[0].metrics).await?;
    assert_eq!(labelled(&m, "purgecast_sink_skipped_total", &[("selector", "tag"), ("sink", "cache")]), 1.0, "{m}");
    Ok(())
}

#[tokio::test]
async fn nginx_purges_urls() -> Result<()> {
    url_only_cache(Kind::Nginx).await
}

#[tokio::test]
async fn traffic_server_purges_urls() -> Result<()> {
    url_only_cache(Kind::Ats).await
}

#[tokio::test]
async fn a_webhook_gets_each_purge_as_json_and_is_retried() -> Result<()> {
    let hook = Receiver::start(2).await?;
    let sink = format!(
        "[[sink]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{}/purges/{{id}}\"\n\
         headers = {{ Authorization = \"Bearer hook-secret\" }}\n",
        hook.addr
    );
    let c = Cluster::start(2, Opts { node_extra: vec![(0, sink)], ..Opts::default() }).await?;
    let status = purge(&c, 1, vec![tag("t1"), prefix("site.test/p/")], true).await?;
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (head, body) = &got[0];
    assert!(head.starts_with(&format!("POST /purges/{} ", status.id)), "{head}");
    assert!(head.to_ascii_lowercase().contains("authorization: bearer hook-secret"), "{head}");
    assert_eq!(body["id"], status.id.as_str());
    assert_eq!(body["mode"], "soft");
    assert_eq!(body["selectors"][0]["tag"], "t1");
    assert_eq!(body["selectors"][1]["prefix"]["host"], "site.test");
    assert_eq!(body["selectors"][1]["prefix"]["path"], "/p/");
    let m = scrape(c.nodes[0].metrics).await?;
    assert_eq!(labelled(&m, "purgecast_sink_purges_total", &[("result", "failed"), ("sink", "hook")]), 2.0, "{m}");
    Ok(())
}
