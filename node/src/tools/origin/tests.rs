//! The origin over real HTTP/1.1 on loopback, one raw request per connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{serve, OriginArgs, TagsHeader};

fn args() -> OriginArgs {
    OriginArgs { listen: ([127, 0, 0, 1], 0).into(), max_age: 60, swr: 0, sie: 0, tags_header: TagsHeader::CacheTag }
}

async fn start(args: OriginArgs) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { serve(listener, &args, std::future::pending()).await });
    addr
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text());
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("reply in time").unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<_> =
        lines.map(|l| l.split_once(':').unwrap()).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let reply = Reply { status, headers, body: raw[end + 4..].to_vec() };
    assert!(reply.header("transfer-encoding").is_none(), "this helper does not decode chunked bodies");
    reply
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    send(addr, "GET", target, &[]).await
}

async fn post(addr: SocketAddr, target: &str) -> Value {
    send(addr, "POST", target, &[]).await.json()
}

#[tokio::test]
async fn objects_are_versioned_and_tagged() {
    let addr = start(args()).await;
    let r = get(addr, "/products/1?tags=sku-1,red").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "test.local/products/1?tags=sku-1,red v1\n");
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("last-modified"), Some("Sat, 01 Jan 2000 00:00:00 GMT"));
    assert_eq!(r.header("cache-tag"), Some("all,products,sku-1,red"));
    assert_eq!(r.header("set-cookie"), None);

    let head = send(addr, "HEAD", "/products/1?tags=sku-1,red", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), Some("\"v1\""));
    assert_eq!(head.header("content-length"), r.header("content-length"));
}

#[tokio::test]
async fn flags_shape_cache_control_and_tag_header() {
    let addr =
        start(OriginArgs { max_age: 30, swr: 10, sie: 600, tags_header: TagsHeader::SurrogateKey, ..args() }).await;
    let r = get(addr, "/img/a.png?tags=x").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=30, stale-while-revalidate=10, stale-if-error=600"));
    assert_eq!(r.header("surrogate-key"), Some("all img x"));
    assert_eq!(r.header("cache-tag"), None);

    let addr = start(OriginArgs { tags_header: TagsHeader::Xkey, ..args() }).await;
    assert_eq!(get(addr, "/").await.header("xkey"), Some("all"));
}

#[tokio::test]
async fn bump_changes_one_path_or_all() {
    let addr = start(args()).await;
    assert_eq!(get(addr, "/a").await.text(), "test.local/a v1\n");
    assert_eq!(post(addr, "/__origin/bump?path=/a").await["version"], 2);
    assert_eq!(get(addr, "/a").await.header("etag"), Some("\"v2\""));
    assert_eq!(get(addr, "/b").await.text(), "test.local/b v1\n");

    post(addr, "/__origin/bump").await;
    assert_eq!(get(addr, "/a").await.text(), "test.local/a v3\n");
    assert_eq!(get(addr, "/b").await.text(), "test.local/b v2\n");
}

#[tokio::test]
async fn if_none_match_gets_304_until_bumped() {
    let addr = start(args()).await;
    let r = send(addr, "GET", "/p/1", &[("If-None-Match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(r.header("cache-tag"), Some("all,p"));
    // A 304 may only carry the 200's length; hyper drops axum's `0`.
    assert_eq!(r.header("content-length"), None);

    post(addr, "/__origin/bump?path=/p/1").await;
    let r = send(addr, "GET", "/p/1", &[("If-None-Match", "\"v1\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "test.local/p/1 v2\n");
    let r = send(addr, "GET", "/p/1", &[("If-None-Match", "\"v9\", W/\"v2\"")]).await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn hits_count_object_requests_only() {
    let addr = start(args()).await;
    get(addr, "/x").await;
    get(addr, "/x?size=10").await;
    send(addr, "GET", "/x", &[("If-None-Match", "\"v1\"")]).await;
    get(addr, "/y").await;
    post(addr, "/__origin/bump?path=/y").await;

    let h = send(addr, "GET", "/__origin/hits", &[]).await.json();
    assert_eq!(h["total"], 4);
    assert_eq!(h["conditional"], 1);
    assert_eq!(h["paths"], serde_json::json!({ "/x": 3, "/y": 1 }));
    let x = send(addr, "GET", "/__origin/hits?path=/x", &[]).await.json();
    assert_eq!(x, serde_json::json!({ "path": "/x", "hits": 3, "conditional": 1 }));

    post(addr, "/__origin/reset").await;
    let h = send(addr, "GET", "/__origin/hits", &[]).await.json();
    assert_eq!(h["total"], 0);
    assert_eq!(h["paths"], serde_json::json!({}));
    // Reset is for counters, not content.
    assert_eq!(get(addr, "/y").await.text(), "test.local/y v2\n");
}

async fn waiting(addr: SocketAddr, want: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = send(addr, "GET", "/__origin/gate", &[]).await.json();
        if g["waiting"] == want || Instant::now() > deadline {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn gate_holds_requests_until_opened() {
    let addr = start(args()).await;
    assert_eq!(post(addr, "/__origin/gate/close").await, serde_json::json!({ "closed": true, "waiting": 0 }));
    let held = tokio::spawn(get(addr, "/held"));
    assert_eq!(waiting(addr, 1).await, serde_json::json!({ "closed": true, "waiting": 1 }));
    // Counted on arrival, while still held.
    assert_eq!(send(addr, "GET", "/__origin/hits?path=/held", &[]).await.json()["hits"], 1);
    // Content decided at release, not arrival.
    post(addr, "/__origin/bump").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!held.is_finished());

    assert_eq!(post(addr, "/__origin/gate/open").await["closed"], false);
    let r = tokio::time::timeout(Duration::from_secs(10), held).await.unwrap().unwrap();
    assert_eq!(r.text(), "test.local/held v2\n");
    assert_eq!(waiting(addr, 0).await["waiting"], 0);
}

#[tokio::test]
async fn shutdown_releases_held_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(listener, &args(), async move {
            let _ = stopped.await;
        })
        .await
    });
    post(addr, "/__origin/gate/close").await;
    let held = tokio::spawn(get(addr, "/held"));
    waiting(addr, 1).await;
    stop.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), held).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn fail_mode_answers_the_status_until_cleared() {
    let addr = start(args()).await;
    assert_eq!(post(addr, "/__origin/fail?status=503").await["status"], 503);
    let r = get(addr, "/f").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "origin failure\n");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("etag"), None);

    assert_eq!(send(addr, "POST", "/__origin/fail?status=200", &[]).await.status, 400);
    post(addr, "/__origin/fail?status=0").await;
    assert_eq!(get(addr, "/f").await.status, 200);
}

#[tokio::test]
async fn size_pads_or_truncates_exactly() {
    let addr = start(args()).await;
    let r = get(addr, "/big?size=100000").await;
    assert_eq!(r.body.len(), 100_000);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert!(r.text().starts_with("test.local/big?size=100000 v1\n"));
    assert!(r.text().ends_with(".\n"));
    assert_eq!(get(addr, "/big?size=4").await.text(), "test");
    assert_eq!(get(addr, "/big?size=0").await.body.len(), 0);
    assert_eq!(get(addr, "/big?size=67108865").await.status, 400);
    assert_eq!(get(addr, "/big?size=lots").await.status, 400);
}

#[tokio::test]
async fn vary_makes_variants_differ() {
    let addr = start(args()).await;
    let fr = send(addr, "GET", "/v?vary=Accept-Language", &[("Accept-Language", "fr")]).await;
    let de = send(addr, "GET", "/v?vary=Accept-Language", &[("Accept-Language", "de")]).await;
    assert_eq!(fr.header("vary").map(str::to_ascii_lowercase).as_deref(), Some("accept-language"));
    assert_eq!(fr.text(), "test.local/v?vary=Accept-Language v1 vary=fr\n");
    assert_eq!(de.text(), "test.local/v?vary=Accept-Language v1 vary=de\n");
    assert_eq!(get(addr, "/v").await.header("vary"), None);
    assert_eq!(get(addr, "/v?vary=bad%20name").await.status, 400);
}

#[tokio::test]
async fn cc_cookie_and_delay_shape_one_response() {
    let addr = start(args()).await;
    assert_eq!(get(addr, "/c?cc=no-store").await.header("cache-control"), Some("no-store"));
    assert_eq!(get(addr, "/c?cc=max-age=5").await.header("cache-control"), Some("max-age=5"));
    assert_eq!(get(addr, "/c?cc=private,%20max-age=5").await.header("cache-control"), Some("private, max-age=5"));
    assert_eq!(get(addr, "/c?cookie=1").await.header("set-cookie"), Some("origin-session=v1; Path=/; HttpOnly"));

    let t = Instant::now();
    assert_eq!(get(addr, "/c?delay_ms=200").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn control_paths_and_methods_are_checked() {
    let addr = start(args()).await;
    assert_eq!(get(addr, "/__origin/nope").await.status, 404);
    assert_eq!(send(addr, "POST", "/anything", &[]).await.status, 405);
    assert_eq!(get(addr, "/__origin/bump").await.status, 405);
    let h = send(addr, "GET", "/__origin/hits", &[]).await.json();
    assert_eq!(h["total"], 0);
}
