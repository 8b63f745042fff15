//! The request path, as pingora's phases: admit the request and pick its
//! origin, key it, look it up, decide what is cacheable, and tell the
//! client how it was answered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::filters::resp_cacheable;
use pingora_cache::key::{CacheKey, HashBinary};
use pingora_cache::{CacheMeta, CacheMetaDefaults, CachePhase, ForcedFreshness, HitHandler, NoCacheReason};
use pingora_cache::{RespCacheable, VarianceBuilder};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use purgecast_core::{normalize_host, parse_url};
use tokio::sync::watch;

use super::metrics;
use super::storage::{FillStart, FillZone, RocksHit, RocksStorage};
use super::EdgeConfig;

/// Statuses cached when the origin gives them freshness (RFC 9110's
/// heuristically cacheable set, less 206: ranges are cut from full bodies).
const CACHEABLE: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// Request headers larger than this, together, get 431 (pingora itself
/// reads up to about a megabyte); as nginx's default of 4 x 8 KiB buffers,
/// with room to spare for cookies.
const MAX_HEADER_BYTES: usize = 64 << 10;

pub(crate) struct Edge {
    pub cfg: EdgeConfig,
    pub storage: &'static RocksStorage,
    pub lock: &'static pingora_cache::lock::CacheKeyLockImpl,
    pub defaults: CacheMetaDefaults,
    /// Until the node has caught up after a restart, stored objects may
    /// have been purged while it was down: every lookup is a forced miss.
    pub caught_up: watch::Receiver<bool>,
    /// Zones (which hosts are served) and the purge front door for PURGE.
    pub front: crate::api::Front,
}

#[derive(Default)]
pub(crate) struct Ctx {
    upstream: Option<String>,
    /// The request's URL as the index keys it, made once per request.
    url: Option<String>,
    /// The zone of the request's host ("" = none).
    zone: String,
    fetched: Option<u16>,
}

fn no_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

pub(crate) fn defaults(cfg: &EdgeConfig) -> CacheMetaDefaults {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    // Heuristic freshness (`default_ttl`) is applied by `response_cache_filter`,
    // which can read the config: pingora's default is a plain fn.
    CacheMetaDefaults::new(no_ttl, secs(cfg.stale_while_revalidate), secs(cfg.stale_if_error))
}

impl Edge {
    fn origin_for(&self, host: &str) -> Option<&String> {
        self.cfg.origins.get(host).or(self.cfg.default_origin.as_ref())
    }

    /// The request's URL as the index keys it: scheme from
    /// `X-Forwarded-Proto` (the edge itself speaks plain HTTP behind
    /// whatever terminates TLS), host from `Host`.
    pub(super) fn url_of(req: &RequestHeader) -> Option<String> {
        let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
        let https = req
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let scheme = if https { "https" } else { "http" };
        Some(parse_url(&format!("{scheme}://{host}{path}")).ok()?.key)
    }

    async fn refuse(session: &mut Session, status: u16, why: &str) -> Result<bool> {
        let mut resp = ResponseHeader::build(status, Some(3))?;
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        resp.insert_header("cache-status", "purgecast; fwd=bypass; detail=refused")?;
        let body = Bytes::from(format!("{why}\n"));
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        metrics::request("error", false);
        Ok(true)
    }
}

fn outcome(phase: CachePhase) -> (&'static str, &'static str) {
    match phase {
        CachePhase::Hit => ("hit", "purgecast; hit"),
        CachePhase::Stale | CachePhase::StaleUpdating => ("stale", "purgecast; hit; fwd=stale"),
        CachePhase::Expired | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            ("revalidated", "purgecast; fwd=stale")
        }
        CachePhase::Miss => ("miss", "purgecast; fwd=miss"),
        _ => ("bypass", "purgecast; fwd=bypass"),
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let header_bytes: usize = req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len())
            + req.uri.authority().map_or(0, |a| a.as_str().len());
        if header_bytes + target > MAX_HEADER_BYTES {
            return Edge::refuse(session, 431, "request headers too large").await;
        }
        let host = session.req_header().headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
        let Some(host) = host.and_then(|h| normalize_host(h).ok()) else {
            return Edge::refuse(session, 400, "a valid Host header is required").await;
        };
        match self.front.tenants.snapshot().zone_of_host(&host) {
            Ok(zone) => ctx.zone = zone,
            Err(_) => return Edge::refuse(session, 421, "this host is in no zone served here").await,
        }
        if session.req_header().method.as_str() == "PURGE" {
            return super::purge::purge(&self.front, session).await;
        }
        let Some(upstream) = self.origin_for(&host) else {
            return Edge::refuse(session, 404, "unknown host: no origin is configured for it").await;
        };
        ctx.upstream = Some(upstream.clone());
        ctx.url = Edge::url_of(session.req_header());
        if ctx.url.is_none() {
            return Edge::refuse(session, 400, "the request URL cannot be a cache key").await;
        }
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        let cacheable = matches!(req.method, http::Method::GET | http::Method::HEAD)
            && !req.headers.contains_key(http::header::AUTHORIZATION);
        if cacheable {
            session.cache.enable(self.storage, None, None, Some(self.lock), None);
            session.cache.set_max_file_size_bytes(usize::try_from(self.cfg.max_object_bytes).unwrap_or(usize::MAX));
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let url = ctx
            .url
            .clone()
            .or_else(|| Edge::url_of(session.req_header()))
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no cache key for this request"))?;
        let mut key = CacheKey::new(url, "");
        key.extensions.insert(FillStart(self.storage.store.purge_seq()));
        key.extensions.insert(FillZone(ctx.zone.clone()));
        Ok(key)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit: &mut HitHandler,
        _is_fresh: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        if !*self.caught_up.borrow() {
            return Ok(Some(ForcedFreshness::ForceMiss));
        }
        let soft = hit.as_any().downcast_ref::<RocksHit>().and_then(RocksHit::soft_purged_at);
        Ok(soft.map(|at| ForcedFreshness::ForceExpiredServeStale { expired_at: Some(at) }))
    }

    /// Stale copies are served within their windows: the origin's
    /// `stale-while-revalidate`/`stale-if-error`, or the operator's
    /// defaults (`[edge]`), which are the out-of-band permission RFC 9111
    /// asks for. pingora's default never serves stale while revalidating,
    /// which would make a soft purge a blocking revalidation.
    fn should_serve_stale(&self, _session: &mut Session, _ctx: &mut Ctx, error: Option<&Error>) -> bool {
        error.is_none_or(|e| e.esource() == &pingora_error::ErrorSource::Upstream)
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, _ctx: &mut Ctx, req: &RequestHeader) -> Option<HashBinary> {
        let mut vary = VarianceBuilder::new();
        for value in meta.headers().get_all(http::header::VARY) {
            let Ok(names) = value.to_str() else { continue };
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let name = name.to_ascii_lowercase();
                let v = req.headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
                vary.add_owned_name_value(name, v);
            }
        }
        vary.finalize()
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        if !CACHEABLE.contains(&resp.status.as_u16()) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        if !self.cfg.cache_set_cookie && resp.headers.contains_key(http::header::SET_COOKIE) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie")));
        }
        let vary_all = resp.headers.get_all(http::header::VARY).iter().any(|v| v.as_bytes().trim_ascii() == b"*");
        if vary_all {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let cc = CacheControl::from_resp_headers(resp);
        let explicit = cc.as_ref().is_some_and(|c| c.fresh_duration().is_some())
            || resp.headers.contains_key(http::header::EXPIRES);
        let cacheable = resp_cacheable(cc.as_ref(), resp.clone(), false, &self.defaults);
        if explicit || !matches!(cacheable, RespCacheable::Uncacheable(NoCacheReason::OriginNotCache)) {
            return Ok(cacheable);
        }
        // No freshness from the origin: `default_ttl`, for 200s only, unless
        // the origin said no-store or private.
        let refused = cc.as_ref().is_some_and(|c| c.no_store() || c.private());
        if self.cfg.default_ttl.is_zero() || resp.status != 200 || refused {
            return Ok(cacheable);
        }
        let now = SystemTime::now();
        Ok(RespCacheable::Cacheable(CacheMeta::new(
            now + self.cfg.default_ttl,
            now,
            self.defaults.serve_stale_while_revalidate_sec(),
            self.defaults.serve_stale_if_error_sec(),
            resp.clone(),
        )))
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let upstream = ctx.upstream.as_deref().ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no origin"))?;
        // pingora's `HttpPeer::new` panics on a name that does not resolve;
        // resolve here and fail the request instead.
        let addr =
            tokio::net::lookup_host(upstream).await.ok().and_then(|mut a| a.next()).ok_or_else(|| {
                Error::explain(ErrorType::ConnectNoRoute, format!("origin {upstream} does not resolve"))
            })?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.cfg.origin_connect_timeout);
        peer.options.total_connection_timeout = Some(self.cfg.origin_connect_timeout);
        peer.options.read_timeout = Some(self.cfg.origin_read_timeout);
        peer.options.write_timeout = Some(self.cfg.origin_read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if session.cache.enabled() {
            // Whole bodies only, HEAD as GET, and validators of the stored
            // copy when revalidating.
            pingora_cache::filters::upstream::request_filter(req, session.cache.maybe_cache_meta());
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.fetched = Some(resp.status.as_u16());
        metrics::origin_fetch(resp.status.as_u16());
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, _ctx: &mut Ctx) -> Result<()> {
        let (_, status) = outcome(session.cache.phase());
        resp.insert_header("cache-status", status)?;
        if self.cfg.strip_tag_headers {
            for name in self.storage.tags.headers() {
                resp.remove_header(name);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(b) = body {
            metrics::served(b.len());
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, _ctx: &mut Ctx) {
        if let Some(e) = e {
            if matches!(e.etype(), ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ReadTimedout)
                || e.esource() == &pingora_error::ErrorSource::Upstream
            {
                metrics::origin_error();
            }
            metrics::request("error", false);
            return;
        }
        let (label, _) = outcome(session.cache.phase());
        let collapsed = session.cache.enabled() && session.cache.lock_duration().is_some();
        metrics::request(label, collapsed);
    }
}

/// Shared by the accept loop: `Arc` because pingora's app API takes one.
pub(crate) type App = pingora_proxy::HttpProxy<Edge>;

pub(crate) fn app(edge: Edge) -> Arc<App> {
    let conf = Arc::new(pingora_core::server::configuration::ServerConf::default());
    Arc::new(pingora_proxy::http_proxy(&conf, edge))
}
