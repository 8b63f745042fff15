//! Object requests: every GET/HEAD outside `/__origin/`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, LAST_MODIFIED, SET_COOKIE, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{query_pairs, Shared};

/// Benchmarks want large bodies; more than this is a typo, not a benchmark.
pub const MAX_SIZE: usize = 64 << 20;
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Fixed so that revalidation by date behaves the same on every run.
const LAST_MODIFIED_AT: &str = "Sat, 01 Jan 2000 00:00:00 GMT";

/// Per-request shaping taken from the query string. Unknown parameters are
/// ignored so callers can add their own cache-busting ones.
#[derive(Default, Debug)]
struct Shape {
    size: Option<usize>,
    cc: Option<HeaderValue>,
    vary: Option<HeaderName>,
    cookie: bool,
    delay: Duration,
    tags: Vec<String>,
}

impl Shape {
    fn parse(query: &str) -> Result<Self, String> {
        let mut s = Shape::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "size" => {
                    let n: usize = v.parse().map_err(|_| format!("size: not a number: {v:?}"))?;
                    if n > MAX_SIZE {
                        return Err(format!("size: {n} is over {MAX_SIZE}"));
                    }
                    s.size = Some(n);
                }
                "cc" => s.cc = Some(HeaderValue::from_str(&v).map_err(|_| format!("cc: invalid header value {v:?}"))?),
                "vary" => {
                    s.vary = Some(HeaderName::from_bytes(v.as_bytes()).map_err(|_| format!("vary: bad header {v:?}"))?)
                }
                "cookie" => s.cookie = v == "1",
                "delay_ms" => {
                    let ms: u64 = v.parse().map_err(|_| format!("delay_ms: not a number: {v:?}"))?;
                    s.delay = Duration::from_millis(ms).min(MAX_DELAY);
                }
                "tags" => {
                    for tag in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if !tag.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                            return Err(format!("tags: bad tag {tag:?}"));
                        }
                        s.tags.push(tag.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/__origin/") {
        return (StatusCode::NOT_FOUND, "unknown origin control endpoint\n").into_response();
    }
    let conditional = req.headers().contains_key(IF_NONE_MATCH);
    // Counted on arrival, before the gate: tests look for the held request here.
    shared.state.count(&path, conditional);
    let shape = match Shape::parse(req.uri().query().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    shared.state.pass_gate().await;
    if !shape.delay.is_zero() {
        tokio::time::sleep(shape.delay).await;
    }
    // Read after waiting so a test can bump or fail the origin while a request is held.
    if let Some(status) = shared.state.failing() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, [(CACHE_CONTROL, "no-store")], "origin failure\n").into_response();
    }
    let version = shared.state.version(&path);
    respond(&shared, &req, &path, &shape, version)
}

fn respond(shared: &Shared, req: &Request, path: &str, shape: &Shape, version: u64) -> Response {
    let etag = format!("\"v{version}\"");
    let mut b = Response::builder()
        .header(ETAG, &etag)
        .header(CACHE_CONTROL, shape.cc.clone().unwrap_or_else(|| shared.cache_control.clone()))
        .header(LAST_MODIFIED, LAST_MODIFIED_AT)
        .header(shared.tags.name(), shared.tags.value(&tags(path, &shape.tags)));
    if let Some(name) = &shape.vary {
        b = b.header(VARY, name.as_str());
    }
    let revalidated = req.headers().get(IF_NONE_MATCH).is_some_and(|v| etag_matches(v, &etag));
    let built = if revalidated {
        b.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        if shape.cookie {
            b = b.header(SET_COOKIE, format!("origin-session=v{version}; Path=/; HttpOnly"));
        }
        b.header(CONTENT_TYPE, "text/plain; charset=utf-8").body(Body::from(body(req, shape, version)))
    };
    built.unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("origin: {e}\n")).into_response())
}

/// `all`, the first path segment, then the caller's.
fn tags(path: &str, extra: &[String]) -> Vec<String> {
    let mut tags = vec!["all".to_string()];
    if let Some(first) = path.trim_start_matches('/').split('/').next().filter(|s| !s.is_empty()) {
        tags.push(first.to_string());
    }
    tags.extend(extra.iter().cloned());
    tags
}

fn body(req: &Request, shape: &Shape, version: u64) -> Vec<u8> {
    let uri = req.uri();
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).or(uri.host()).unwrap_or("-");
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let mut line = format!("{host}{target} v{version}");
    if let Some(name) = &shape.vary {
        line.push_str(&format!(" vary={}", joined(req.headers(), name)));
    }
    line.push('\n');
    let mut body = line.into_bytes();
    if let Some(n) = shape.size {
        pad(&mut body, n);
    }
    body
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let values: Vec<_> = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
    values.join(", ")
}

/// Exactly `n` bytes: the versioned line first so caches' copies stay
/// distinguishable, and a trailing newline when there is room for one.
fn pad(body: &mut Vec<u8>, n: usize) {
    let grow = n > body.len();
    body.resize(n, b'.');
    if grow {
        if let Some(last) = body.last_mut() {
            *last = b'\n';
        }
    }
}

/// `If-None-Match` may list several tags, use `*`, or weak tags.
fn etag_matches(header: &HeaderValue, etag: &str) -> bool {
    let Ok(s) = header.to_str() else { return false };
    s.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}
