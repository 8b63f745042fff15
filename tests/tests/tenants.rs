//! Tenants: zones confine purges, tokens are scoped and checked on every
//! node, the tenants file reloads without restarts, rate limits, and the
//! audit log. Real nodes with their edges in front of a real origin.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use purgecast_client::{Client, ClientError};
use purgecast_proto::api as pb;
use purgecast_tests::http::{self, Origin};
use purgecast_tests::metrics::{labelled, scrape, value};
use purgecast_tests::tenants::{token, write, zone, TestToken};
use purgecast_tests::{bin, everything, host, prefix, tag, url, Cluster, Opts};

const OPERATOR: &str = "operator-secret";

struct Rig {
    origin: Origin,
    c: Cluster,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn rig(n: usize, tenants: &str) -> Result<Rig> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tenants.toml");
    write(&file, tenants)?;
    let origin = Origin::start(&[]).await?;
    let opts = Opts {
        edge_origin: Some(origin.upstream()),
        tokens: vec![OPERATOR.into()],
        tenants_file: Some(file.clone()),
        ..Opts::default()
    };
    let c = Cluster::start(n, opts).await?;
    Ok(Rig { origin, c, file, _dir: dir })
}

async fn as_token(c: &Cluster, i: usize, t: &TestToken) -> Result<Client> {
    Ok(Client::connect(&c.nodes[i].endpoint(), Some(t.secret.clone())).await?)
}

async fn is_hit(c: &Cluster, i: usize, site: &str, path: &str) -> Result<bool> {
    Ok(http::get(c.nodes[i].edge, site, path, &[]).await?.is_hit())
}

/// Caches `site/path` on every node's edge (the second GET must hit).
async fn warm(c: &Cluster, site: &str, path: &str) -> Result<()> {
    for i in 0..c.nodes.len() {
        let first = http::get(c.nodes[i].edge, site, path, &[]).await?;
        assert_eq!(first.status, 200, "{first:?}");
        assert!(is_hit(c, i, site, path).await?, "node {i} {site}{path} not cached");
    }
    Ok(())
}

fn code(e: ClientError) -> tonic::Code {
    e.code().unwrap_or_else(|| panic!("not an RPC status: {e}"))
}

async fn purge_wait(client: &Client, zone: &str, sel: Vec<pb::Selector>) -> Result<pb::PurgeStatus> {
    let id = client.purge_in(zone, sel, pb::PurgeMode::Hard).await?.id;
    Ok(client.wait_complete(&id, Duration::from_secs(20), Duration::from_millis(20)).await?)
}

fn two_zones(tokens: &[&TestToken]) -> String {
    let mut s = zone("a", &["a.test", "*.a.test"], None) + &zone("b", &["b.test"], None);
    for t in tokens {
        s.push_str(&t.section);
    }
    s
}

#[tokio::test]
async fn a_zone_token_reaches_only_its_zone_on_every_node() -> Result<()> {
    let ta = token("team-a", &["a"], &["purge", "purge_everything"], None)?;
    let tb = token("team-b", &["b"], &["purge"], None)?;
    let old = token("old", &["a"], &["purge"], Some("2001-01-01T00:00:00Z"))?;
    let r = rig(3, &two_zones(&[&ta, &tb, &old])).await?;
    let c = &r.c;
    for (site, path) in [("b.test", "/x/1"), ("a.test", "/x/1"), ("www.a.test", "/y/1")] {
        warm(c, site, path).await?;
    }
    let a = as_token(c, 0, &ta).await?;
    // Every way zone A's token could name zone B's objects is refused.
    let attempts = [
        ("", vec![url("http://b.test/x/1")]),
        ("", vec![host("b.test")]),
        ("", vec![prefix("b.test/x")]),
        ("b", vec![tag("x")]),
        ("b", vec![everything()]),
        ("", vec![url("http://a.test/x/1"), url("http://b.test/x/1")]),
    ];
    for (zone, sel) in attempts {
        let e = a.purge_in(zone, sel.clone(), pb::PurgeMode::Hard).await.unwrap_err();
        assert_eq!(code(e), tonic::Code::PermissionDenied, "{zone:?} {sel:?}");
    }
    // Zone A's tag `x` is zone A's only: B's `x` objects stay cached.
    purge_wait(&a, "", vec![tag("x")]).await?;
    for i in 0..3 {
        assert!(!is_hit(c, i, "a.test", "/x/1").await?, "node {i}: a's x object survived");
        assert!(is_hit(c, i, "b.test", "/x/1").await?, "node {i}: b's x object was purged by a's tag");
        assert!(is_hit(c, i, "www.a.test", "/y/1").await?, "node {i}: an untagged object went");
    }
    // Zone A's everything leaves zone B intact.
    warm(c, "a.test", "/x/1").await?;
    purge_wait(&a, "a", vec![everything()]).await?;
    for i in 0..3 {
        assert!(!is_hit(c, i, "www.a.test", "/y/1").await?, "node {i}: a's everything missed an object");
        assert!(is_hit(c, i, "b.test", "/x/1").await?, "node {i}: a's everything reached b");
    }
    // B's token lacks purge_everything.
    let b = as_token(c, 1, &tb).await?;
    let e = b.purge_in("b", vec![everything()], pb::PurgeMode::Hard).await.unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    // Expired, unknown and missing tokens are refused before anything else.
    let expired = as_token(c, 2, &old).await?;
    let e = expired.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap_err();
    assert_eq!(code(e), tonic::Code::Unauthenticated);
    let forged = Client::connect(&c.nodes[2].endpoint(), Some(format!("team-a.{}", "0".repeat(64)))).await?;
    assert_eq!(
        code(forged.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap_err()),
        tonic::Code::Unauthenticated
    );
    let none = Client::connect(&c.nodes[2].endpoint(), None).await?;
    assert_eq!(code(none.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap_err()), tonic::Code::Unauthenticated);
    for i in 0..3 {
        assert!(is_hit(c, i, "b.test", "/x/1").await?, "node {i}: a refused purge removed b's object");
    }
    let m = scrape(c.nodes[0].metrics).await?;
    assert!(labelled(&m, "purgecast_api_refusals_total", &[("zone", "b"), ("reason", "denied")]) >= 2.0, "{m}");
    // The edge refuses hosts of no zone, and serves nothing for them.
    let before = r.origin.hits("/x/1").await?.0;
    let other = http::get(c.nodes[0].edge, "c.test", "/x/1", &[]).await?;
    assert_eq!(other.status, 421, "{other:?}");
    assert_eq!(r.origin.hits("/x/1").await?.0, before, "a refused host reached the origin");
    Ok(())
}

/// Waits until `ok(i)` holds on every node, bounded.
async fn on_every_node<F, Fut>(n: usize, limit: Duration, mut ok: F) -> Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() && start.elapsed() < limit {
        let mut still = Vec::new();
        for i in pending {
            if !ok(i).await {
                still.push(i);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !pending.is_empty() {
        bail!("nodes {pending:?} never got there");
    }
    Ok(())
}

/// Whether the node takes `secret` (a members call), or refuses it as
/// unknown; any other failure is an error, not a refusal.
async fn accepted(endpoint: String, secret: &str) -> bool {
    let c = match Client::connect(&endpoint, Some(secret.to_string())).await {
        Ok(c) => c,
        Err(e) => panic!("cannot reach {endpoint}: {e}"),
    };
    match c.members().await {
        Ok(_) => true,
        Err(e) if e.code() == Some(tonic::Code::Unauthenticated) => false,
        Err(e) => panic!("{endpoint}: {e}"),
    }
}

#[tokio::test]
async fn a_tenants_file_change_applies_on_every_node_and_a_bad_one_keeps_the_last_good() -> Result<()> {
    let first = token("first", &["a"], &["purge"], None)?;
    let second = token("second", &["b"], &["purge"], None)?;
    let r = rig(3, &two_zones(&[&first])).await?;
    let endpoints: Vec<String> = r.c.nodes.iter().map(|n| n.endpoint()).collect();
    for e in &endpoints {
        assert!(accepted(e.clone(), &first.secret).await);
        assert!(!accepted(e.clone(), &second.secret).await, "a token not in the file was accepted");
    }
    write(&r.file, &two_zones(&[&first, &second]))?;
    let s2 = second.secret.clone();
    on_every_node(3, Duration::from_secs(15), |i| {
        let (e, s2) = (endpoints[i].clone(), s2.clone());
        async move { accepted(e, &s2).await }
    })
    .await?;
    // A token removed from the file stops working, everywhere.
    write(&r.file, &two_zones(&[&second]))?;
    let gone = first.secret.clone();
    on_every_node(3, Duration::from_secs(15), |i| {
        let (e, gone) = (endpoints[i].clone(), gone.clone());
        async move { !accepted(e, &gone).await }
    })
    .await?;
    // A malformed file is refused; the last good one stays in force.
    write(&r.file, "[[zone]]\nid = \"a\"\nhosts = [\"not a host\"]\n")?;
    let metrics: Vec<_> = r.c.nodes.iter().map(|n| n.metrics).collect();
    on_every_node(3, Duration::from_secs(15), |i| {
        let addr = metrics[i];
        async move { scrape(addr).await.is_ok_and(|m| value(&m, "purgecast_tenants_file_valid") == 0.0) }
    })
    .await?;
    for (i, e) in endpoints.iter().enumerate() {
        assert!(accepted(e.clone(), &second.secret).await, "node {i} dropped the last good file");
        assert!(r.c.nodes[i].log().contains("tenants file REFUSED"), "node {i} did not say why");
    }
    Ok(())
}

#[tokio::test]
async fn a_burst_over_the_zone_bucket_is_refused_with_retry_after_and_the_rest_apply() -> Result<()> {
    let t = token("bursty", &["a"], &["purge"], None)?;
    let tenants = zone("a", &["a.test"], Some((1, 3))) + &zone("b", &["b.test"], None) + &t.section;
    let r = rig(3, &tenants).await?;
    let c = &r.c;
    for k in 0..6 {
        warm(c, "a.test", &format!("/burst/{k}")).await?;
    }
    let client = as_token(c, 0, &t).await?;
    // The raw service, to read the status's metadata.
    let raw = pb::purger_client::PurgerClient::new(c.channel(0).await?);
    let (mut ok, mut limited) = (Vec::new(), 0);
    let started = Instant::now();
    // All six at once: the burst is what the bucket must cut.
    let mut calls = Vec::new();
    for k in 0..6 {
        let sel = url(&format!("http://a.test/burst/{k}"));
        let mut req = tonic::Request::new(pb::PurgeRequest { selectors: vec![sel], ..Default::default() });
        req.metadata_mut().insert("authorization", format!("Bearer {}", t.secret).parse()?);
        let mut raw = raw.clone();
        calls.push((k, tokio::spawn(async move { raw.purge(req).await })));
    }
    for (k, call) in calls {
        match call.await? {
            Ok(resp) => ok.push((k, resp.into_inner().id)),
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                let retry = s.metadata().get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("");
                assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "retry-after {retry:?}");
                limited += 1;
            }
            Err(e) => bail!("unexpected {e}"),
        }
    }
    // Three in the bucket, one more for each second the burst took; the
    // rest refused.
    let refills = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(ok.len() >= 3 && ok.len() <= 3 + refills, "accepted {ok:?} in {refills} s");
    assert_eq!(ok.len() + limited, 6);
    assert!(limited >= 1 || refills >= 3, "accepted {ok:?}, limited {limited}");
    for (k, id) in &ok {
        client.wait_complete(id, Duration::from_secs(20), Duration::from_millis(20)).await?;
        for i in 0..3 {
            assert!(!is_hit(c, i, "a.test", &format!("/burst/{k}")).await?, "node {i}: accepted purge {k} not applied");
        }
    }
    // Another zone's bucket is its own.
    let op = Client::connect(&c.nodes[0].endpoint(), Some(OPERATOR.into())).await?;
    op.purge(vec![url("http://b.test/x")], pb::PurgeMode::Hard).await?;
    let m = scrape(c.nodes[0].metrics).await?;
    assert!(labelled(&m, "purgecast_api_refusals_total", &[("zone", "a"), ("reason", "rate_limited")]) >= 2.0);
    Ok(())
}

fn audit(endpoint: &str, secret: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = std::process::Command::new(bin("purgectl"))
        .args(["--endpoint", endpoint, "--token", secret, "--json", "audit"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("purgectl audit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every file under `dir`, for the secret search.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

#[tokio::test]
async fn the_audit_log_has_every_accepted_purge_once_and_no_secret_anywhere() -> Result<()> {
    let ta = token("audit-a", &["a"], &["purge"], None)?;
    let tb = token("audit-b", &["b"], &["purge"], None)?;
    let ops = token("ops", &["*"], &["admin"], None)?;
    let r = rig(3, &two_zones(&[&ta, &tb, &ops])).await?;
    let c = &r.c;
    let mut ids = Vec::new();
    for k in 0..24 {
        let (t, site, zone) = if k % 3 == 0 { (&tb, "b.test", "b") } else { (&ta, "a.test", "a") };
        let client = as_token(c, k % 3, t).await?;
        let sel = if k % 2 == 0 { url(&format!("http://{site}/storm/{k}")) } else { tag(&format!("t{k}")) };
        let resp = client.purge_in(zone, vec![sel], pb::PurgeMode::Hard).await?;
        ids.push((resp.id.clone(), zone.to_string(), t.id.clone()));
        client.wait_complete(&resp.id, Duration::from_secs(20), Duration::from_millis(20)).await?;
    }
    let all = audit(&c.nodes[2].endpoint(), &ops.secret, &[])?;
    let records = all["records"].as_array().cloned().unwrap_or_default();
    for (id, zone, tok) in &ids {
        let found: Vec<_> = records.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(found.len(), 1, "purge {id} appears {} times", found.len());
        assert_eq!(found[0]["zone"], zone.as_str());
        assert_eq!(found[0]["token"], tok.as_str());
    }
    assert_eq!(records.len(), ids.len(), "records of purges nobody accepted: {all}");
    // A zone's token sees its own zone only.
    let mine = audit(&c.nodes[1].endpoint(), &tb.secret, &[])?;
    let mine = mine["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(mine.len(), 8);
    assert!(mine.iter().all(|r| r["zone"] == "b"));
    let denied = audit(&c.nodes[1].endpoint(), &tb.secret, &["--zone", "a"]).expect_err("b read a's audit");
    assert!(denied.to_string().contains("may not read zone"), "{denied}");
    let since = audit(&c.nodes[0].endpoint(), &ops.secret, &["--since", "2999-01-01T00:00:00Z"])?;
    assert_eq!(since["records"].as_array().map(Vec::len), Some(0));

    // No secret in any log, metric or file.
    let secrets: Vec<&str> = [&ta, &tb, &ops].iter().map(|t| t.secret.rsplit('.').next().unwrap_or_default()).collect();
    let mut texts = Vec::new();
    for n in &c.nodes {
        texts.push((format!("{} log", n.name), n.log().into_bytes()));
        texts.push((format!("{} metrics", n.name), scrape(n.metrics).await?.into_bytes()));
    }
    let mut paths = Vec::new();
    files(c.dir.path(), &mut paths);
    files(r.file.parent().unwrap_or(Path::new("/nonexistent")), &mut paths);
    for p in paths {
        if let Ok(bytes) = std::fs::read(&p) {
            texts.push((p.display().to_string(), bytes));
        }
    }
    assert!(texts.len() > 10, "too few places searched");
    for (what, bytes) in &texts {
        for s in &secrets {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()), "a token secret is in {what}");
        }
    }
    Ok(())
}
