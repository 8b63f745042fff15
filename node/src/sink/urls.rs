//! Caches that purge one URL per request and nothing else: nginx with
//! ngx_cache_purge, and Apache Traffic Server.

use async_trait::async_trait;
use purgecast_core::{parse_url, Purge, Selector};
use reqwest::{Client, StatusCode};

use super::http::{method, send, SinkError};
use super::{Connector, Outcome};

pub struct UrlPurger {
    pub http: Client,
    /// `http://host:port` of the cache.
    pub base: String,
}

/// 404 means the cache did not hold the object: nothing left to purge.
fn purged_or_absent(s: StatusCode) -> bool {
    s.is_success() || s == StatusCode::NOT_FOUND
}

#[async_trait]
impl Connector for UrlPurger {
    async fn apply(&self, purge: &Purge) -> Result<Outcome, SinkError> {
        let mut out = Outcome::default();
        for sel in &purge.selectors {
            // Soft purges become hard ones: neither cache can mark an
            // object stale, and a miss is never less safe than a stale hit.
            let Selector::Url(u) = sel else {
                out.skipped.push(sel.kind());
                continue;
            };
            // Both caches key the object by host and path as the client
            // sent them (ATS through the cachekey plugin, see
            // deploy/connectors/ats/remap.config), so the PURGE names them
            // the same way.
            let key = parse_url(u).map_err(|e| SinkError::Client(e.to_string()))?;
            let req = self.http.request(method("PURGE"), format!("{}{}", self.base, key.path)).header("host", key.host);
            send(format!("PURGE {u}"), req, purged_or_absent).await?;
        }
        Ok(out)
    }

    /// nginx and ATS skip an object being fetched too: the purge answers
    /// 404 and the fetch then stores the old copy. Only URLs reach them.
    fn repeat_of(&self, purge: &Purge) -> Option<Purge> {
        super::only(purge, |s| matches!(s, Selector::Url(_)))
    }
}
