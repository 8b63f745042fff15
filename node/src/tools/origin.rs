//! `purgecast origin`: a small HTTP origin with versioned objects, cache tags
//! and a control API (bump, hit counters, a gate, failure mode). It sits
//! behind the edge cache in `purgecast dev`, in the edge's integration tests
//! and in benchmarks. docs/origin.md describes the flags and endpoints.

mod object;
mod state;
#[cfg(test)]
mod tests;

use std::future::{Future, IntoFuture};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;

use state::Origin;
pub use state::GATE_MAX;

/// In-flight requests get this long to finish after SIGTERM; held and
/// delayed ones are released first, so it is only a backstop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct OriginArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// `max-age` in the default Cache-Control.
    #[arg(long, default_value_t = 60)]
    pub max_age: u64,
    /// `stale-while-revalidate` in the default Cache-Control (0: omitted).
    #[arg(long, default_value_t = 0)]
    pub swr: u64,
    /// `stale-if-error` in the default Cache-Control (0: omitted).
    #[arg(long, default_value_t = 0)]
    pub sie: u64,
    /// Header that carries the object's tags.
    #[arg(long, value_enum, default_value_t = TagsHeader::CacheTag)]
    pub tags_header: TagsHeader,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagsHeader {
    /// `Cache-Tag: a,b` (Cloudflare style).
    CacheTag,
    /// `Surrogate-Key: a b` (Fastly style).
    SurrogateKey,
    /// `xkey: a b` (Varnish style).
    Xkey,
}

impl TagsHeader {
    fn name(self) -> HeaderName {
        HeaderName::from_static(match self {
            Self::CacheTag => "cache-tag",
            Self::SurrogateKey => "surrogate-key",
            Self::Xkey => "xkey",
        })
    }

    fn value(self, tags: &[String]) -> String {
        tags.join(if self == Self::CacheTag { "," } else { " " })
    }
}

/// What every handler sees: the mutable state and the settings fixed at start.
struct Shared {
    state: Origin,
    cache_control: HeaderValue,
    tags: TagsHeader,
}

impl Shared {
    fn new(args: &OriginArgs) -> anyhow::Result<Self> {
        let mut cc = format!("public, max-age={}", args.max_age);
        if args.swr > 0 {
            cc.push_str(&format!(", stale-while-revalidate={}", args.swr));
        }
        if args.sie > 0 {
            cc.push_str(&format!(", stale-if-error={}", args.sie));
        }
        let cache_control = HeaderValue::from_str(&cc).context("building Cache-Control")?;
        Ok(Self { state: Origin::new(), cache_control, tags: args.tags_header })
    }
}

/// Binds, prints `origin listening on http://ADDR`, serves until `shutdown`.
pub fn run(args: OriginArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Tests and `purgecast dev` read this line to learn the port: flush it now.
        let mut out = std::io::stdout().lock();
        writeln!(out, "origin listening on http://{addr}").and_then(|()| out.flush()).context("writing to stdout")?;
        drop(out);
        tracing::info!(%addr, "origin listening");
        serve(listener, &args, shutdown).await.context("serving")
    })
}

/// Serves on an already bound listener (tests and `purgecast dev` embed it this way).
pub async fn serve(
    listener: TcpListener,
    args: &OriginArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::new(args)?);
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let release = Arc::clone(&shared);
    let server = axum::serve(listener, router(shared)).with_graceful_shutdown(async move {
        shutdown.await;
        // Held requests would otherwise keep the graceful shutdown waiting for minutes.
        release.state.set_gate(false);
        stopping_tx.send_replace(true);
    });
    let backstop = async move {
        if stopping.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server.into_future() => r.context("origin server"),
        () = backstop => Ok(()),
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__origin/bump", post(bump))
        .route("/__origin/hits", get(hits))
        .route("/__origin/reset", post(reset))
        .route("/__origin/gate", get(gate))
        .route("/__origin/gate/close", post(gate_close))
        .route("/__origin/gate/open", post(gate_open))
        .route("/__origin/fail", post(fail))
        // `get` also answers HEAD, with the body dropped and the headers kept.
        .route("/", get(object::handle))
        .route("/{*rest}", get(object::handle))
        .with_state(shared)
}

type St = State<Arc<Shared>>;

fn json(v: serde_json::Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn bump(State(s): St, uri: Uri) -> Response {
    match param(&uri, "path") {
        Some(path) => {
            let version = s.state.bump_path(&path);
            json(json!({ "path": path, "version": version }))
        }
        None => json(json!({ "generation": s.state.bump_all() })),
    }
}

async fn hits(State(s): St, uri: Uri) -> Response {
    if let Some(path) = param(&uri, "path") {
        let h = s.state.path_hits(&path);
        return json(json!({ "path": path, "hits": h.hits, "conditional": h.conditional }));
    }
    let (total, paths) = s.state.hits();
    let paths: serde_json::Map<String, serde_json::Value> = paths.into_iter().map(|(p, n)| (p, n.into())).collect();
    json(json!({ "total": total.hits, "conditional": total.conditional, "paths": paths }))
}

async fn reset(State(s): St) -> Response {
    s.state.reset();
    json(json!({ "reset": true }))
}

fn gate_report(s: &Shared) -> Response {
    let (closed, waiting) = s.state.gate();
    json(json!({ "closed": closed, "waiting": waiting }))
}

async fn gate(State(s): St) -> Response {
    gate_report(&s)
}

async fn gate_close(State(s): St) -> Response {
    s.state.set_gate(true);
    gate_report(&s)
}

async fn gate_open(State(s): St) -> Response {
    s.state.set_gate(false);
    gate_report(&s)
}

async fn fail(State(s): St, uri: Uri) -> Response {
    let status = param(&uri, "status").unwrap_or_default();
    match status.parse::<u16>() {
        Ok(n) if n == 0 || (400..=599).contains(&n) => {
            s.state.set_fail(n);
            json(json!({ "status": n }))
        }
        _ => (StatusCode::BAD_REQUEST, "fail: status must be 0 or 400-599\n").into_response(),
    }
}

fn param(uri: &Uri, name: &str) -> Option<String> {
    query_pairs(uri.query().unwrap_or("")).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, written here because axum's
/// `query` feature (and its serde_urlencoded) is not in the workspace build.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    // Two hex digits are at most 255.
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
