//! The Cloudflare- and Fastly-shaped HTTP purge APIs and PURGE at the edge,
//! with a real HTTP client against real nodes, their effect checked on
//! every node's edge.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use purgecast_tests::http::{self, Origin};
use purgecast_tests::tenants::{token, write, zone, TestToken};
use purgecast_tests::{Cluster, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Rig {
    _origin: Origin,
    c: Cluster,
    shop: TestToken,
    blog: TestToken,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _file: PathBuf,
}

async fn rig() -> Result<Rig> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tenants.toml");
    let shop = token("shop-ci", &["shop"], &["purge", "purge_everything"], None)?;
    let blog = token("blog-ci", &["blog"], &["purge"], None)?;
    let text = zone("shop", &["shop.test", "*.shop.test"], Some((1000, 1000)))
        + &zone("blog", &["blog.test"], Some((1, 2)))
        + &shop.section
        + &blog.section;
    write(&file, &text)?;
    let origin = Origin::start(&[]).await?;
    let opts = Opts {
        edge_origin: Some(origin.upstream()),
        tokens: vec!["operator".into()],
        tenants_file: Some(file.clone()),
        http_api: true,
        ..Opts::default()
    };
    let c = Cluster::start(3, opts).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    Ok(Rig { _origin: origin, c, shop, blog, http, _dir: dir, _file: file })
}

impl Rig {
    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.c.nodes[i].http_api)
    }

    async fn cf(&self, i: usize, zone: &str, token: &str, body: &str) -> Result<(StatusCode, Value)> {
        let resp = self
            .http
            .post(self.url(i, &format!("/client/v4/zones/{zone}/purge_cache")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        Ok((resp.status(), resp.json().await?))
    }

    async fn warm(&self, site: &str, path: &str) -> Result<()> {
        for i in 0..self.c.nodes.len() {
            http::get(self.c.nodes[i].edge, site, path, &[]).await?;
            if !self.hit(i, site, path).await? {
                bail!("node {i}: {site}{path} not cached");
            }
        }
        Ok(())
    }

    async fn hit(&self, i: usize, site: &str, path: &str) -> Result<bool> {
        Ok(http::get(self.c.nodes[i].edge, site, path, &[]).await?.is_hit())
    }

    /// Waits until `site/path` misses on every node (bounded).
    async fn gone_everywhere(&self, site: &str, path: &str) -> Result<()> {
        let start = Instant::now();
        for i in 0..self.c.nodes.len() {
            while self.hit(i, site, path).await? {
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("node {i} still serves {site}{path}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// The purge status over HTTP until complete (bounded).
    async fn complete(&self, i: usize, path: &str, token: &str) -> Result<Value> {
        let start = Instant::now();
        loop {
            let resp = self.http.get(self.url(i, path)).bearer_auth(token).send().await?;
            let v: Value = resp.json().await?;
            let status = if v.get("result").is_some() { v["result"].clone() } else { v };
            if status["complete"] == true {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("never complete: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ok_envelope(v: &Value) -> String {
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["messages"], json!([]), "{v}");
    v["result"]["id"].as_str().unwrap_or_default().to_string()
}

fn error_code(v: &Value) -> i64 {
    assert_eq!(v["success"], false, "{v}");
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["errors"][0]["code"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn cloudflare_bodies_purge_every_node_and_errors_come_in_the_envelope() -> Result<()> {
    let r = rig().await?;
    let t = r.shop.secret.clone();
    let cases: [(&str, &str, &str); 5] = [
        ("/files/1", r#"{"files":["http://shop.test/files/1"]}"#, "shop.test"),
        ("/files/2", r#"{"files":[{"url":"http://shop.test/files/2","headers":{"Origin":"x"}}]}"#, "shop.test"),
        ("/tagged/1", r#"{"tags":["tagged"]}"#, "shop.test"),
        ("/h/1", r#"{"hosts":["www.shop.test"]}"#, "www.shop.test"),
        ("/static/a.css", r#"{"prefixes":["https://shop.test/static/"]}"#, "shop.test"),
    ];
    for (path, body, site) in cases {
        r.warm(site, path).await?;
        r.warm("blog.test", path).await?;
        let (status, v) = r.cf(0, "shop", &t, body).await?;
        assert_eq!(status, StatusCode::OK, "{body}: {v}");
        let id = ok_envelope(&v);
        // Status is tracked by the accepting node only.
        let elsewhere =
            r.http.get(r.url(1, &format!("/client/v4/zones/shop/purges/{id}"))).bearer_auth(&t).send().await?;
        assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(&elsewhere.json().await?), 7003);
        let st = r.complete(0, &format!("/client/v4/zones/shop/purges/{id}"), &t).await?;
        assert_eq!(st["members_applied"], 3, "{st}");
        r.gone_everywhere(site, path).await?;
        for i in 0..3 {
            assert!(r.hit(i, "blog.test", path).await?, "{body} reached another zone on node {i}");
        }
    }
    r.warm("shop.test", "/all/1").await?;
    let (status, v) = r.cf(2, "shop", &t, r#"{"purge_everything":true}"#).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    ok_envelope(&v);
    r.gone_everywhere("shop.test", "/all/1").await?;

    let many_tags = json!({ "tags": (0..101).map(|i| format!("t{i}")).collect::<Vec<_>>() }).to_string();
    let bad: [(&str, &str, StatusCode, i64); 9] = [
        ("shop", "{not json", StatusCode::BAD_REQUEST, 6007),
        ("shop", r#"{"tags":"x"}"#, StatusCode::BAD_REQUEST, 6007),
        ("shop", r#"{"tags":["a"],"hosts":["shop.test"]}"#, StatusCode::BAD_REQUEST, 1012),
        ("shop", r#"{}"#, StatusCode::BAD_REQUEST, 1012),
        ("shop", &many_tags, StatusCode::BAD_REQUEST, 1012),
        ("shop", r#"{"files":["http://blog.test/x"]}"#, StatusCode::FORBIDDEN, 9109),
        ("blog", r#"{"tags":["x"]}"#, StatusCode::FORBIDDEN, 9109),
        ("nope", r#"{"tags":["x"]}"#, StatusCode::NOT_FOUND, 7003),
        ("shop", r#"{"files":["ftp://shop.test/x"]}"#, StatusCode::BAD_REQUEST, 1012),
    ];
    for (zone, body, want, code) in bad {
        let (status, v) = r.cf(1, zone, &t, body).await?;
        assert_eq!((status, error_code(&v)), (want, code), "{zone} {body}: {v}");
    }
    let (status, v) = r.cf(1, "shop", "shop-ci.0000", r#"{"tags":["x"]}"#).await?;
    assert_eq!((status, error_code(&v)), (StatusCode::UNAUTHORIZED, 10000), "{v}");
    // The blog zone's bucket holds 2: a burst gets 429 with Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let resp = r
            .http
            .post(r.url(0, "/client/v4/zones/blog/purge_cache"))
            .bearer_auth(&r.blog.secret)
            .body(r#"{"tags":["b"]}"#)
            .send()
            .await?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let v: Value = resp.json().await?;
            assert_eq!(error_code(&v), 971);
            break;
        }
    }
    assert!(limited.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "no 429 with Retry-After");
    Ok(())
}

#[tokio::test]
async fn fastly_routes_purge_keys_soft_and_all_and_the_edge_takes_purge_with_a_token() -> Result<()> {
    let r = rig().await?;
    let t = r.shop.secret.clone();
    let post = |path: String| r.http.post(r.url(1, &path)).header("fastly-key", t.clone());
    // One key.
    r.warm("shop.test", "/k1/x").await?;
    let resp = post("/service/shop/purge/k1".into()).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await?;
    assert_eq!(v["status"], "ok", "{v}");
    r.gone_everywhere("shop.test", "/k1/x").await?;
    // A batch from the header, and one from the body: each key maps to an id.
    r.warm("shop.test", "/k2/x").await?;
    r.warm("shop.test", "/k3/x").await?;
    let v: Value = post("/service/shop/purge".into()).header("surrogate-key", "k2  k3").send().await?.json().await?;
    assert!(v["k2"].is_string() && v["k2"] == v["k3"], "{v}");
    r.gone_everywhere("shop.test", "/k2/x").await?;
    r.gone_everywhere("shop.test", "/k3/x").await?;
    r.warm("shop.test", "/k4/x").await?;
    let keys: Vec<String> = std::iter::once("k4".to_string()).chain((0..255).map(|i| format!("many{i}"))).collect();
    let resp = post("/service/shop/purge".into()).json(&json!({ "surrogate_keys": keys })).send().await?;
    assert_eq!(resp.status(), StatusCode::OK, "256 keys fit one Fastly batch");
    r.gone_everywhere("shop.test", "/k4/x").await?;
    let too_many: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
    let resp = post("/service/shop/purge".into()).json(&json!({ "surrogate_keys": too_many })).send().await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await?;
    assert!(v["msg"].is_string() && v["detail"].is_string(), "{v}");
    // Soft: the next request is served stale while it revalidates.
    r.warm("shop.test", "/k5/x").await?;
    let resp = post("/service/shop/purge/k5".into()).header("fastly-soft-purge", "1").send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let start = Instant::now();
    loop {
        let got = http::get(r.c.nodes[2].edge, "shop.test", "/k5/x", &[]).await?;
        if got.cache().contains("stale") {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("soft purge never showed as stale: {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // purge_all is the zone's everything.
    r.warm("shop.test", "/k6/x").await?;
    r.warm("blog.test", "/k6/x").await?;
    let v: Value = post("/service/shop/purge_all".into()).send().await?.json().await?;
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let st = r.complete(1, &format!("/service/shop/purges/{id}"), &t).await?;
    assert_eq!(st["members_applied"], 3, "{st}");
    r.gone_everywhere("shop.test", "/k6/x").await?;
    assert!(r.hit(0, "blog.test", "/k6/x").await?, "purge_all reached another zone");
    // Errors in Fastly's shape.
    let resp = r.http.post(r.url(1, "/service/shop/purge/x")).send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post("/service/shop/purge/x".into()).header("fastly-soft-purge", "maybe").send().await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = r.http.get(r.url(1, "/service/shop/purge_all")).send().await?;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // PURGE at the edge: only with a token, only in its zone.
    r.warm("shop.test", "/edge/1").await?;
    let no_token = http::request(r.c.nodes[0].edge, "PURGE", "shop.test", "/edge/1", &[]).await?;
    assert_eq!(no_token.status, 401, "{no_token:?}");
    let bearer = format!("Bearer {}", r.blog.secret);
    let other =
        http::request(r.c.nodes[0].edge, "PURGE", "shop.test", "/edge/1", &[("authorization", &bearer)]).await?;
    assert_eq!(other.status, 403, "{other:?}");
    // Node 0 would have applied an accepted purge before answering.
    assert!(r.hit(0, "shop.test", "/edge/1").await?);
    let purged = http::request(r.c.nodes[0].edge, "PURGE", "shop.test", "/edge/1", &[("fastly-key", &t)]).await?;
    assert_eq!(purged.status, 200, "{purged:?}");
    assert!(purged.text().contains("\"ok\""), "{purged:?}");
    r.gone_everywhere("shop.test", "/edge/1").await?;
    Ok(())
}
