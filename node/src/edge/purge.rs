//! `PURGE <url>` at the edge (Fastly's and Varnish's habit): one URL, hard
//! or soft (`Fastly-Soft-Purge: 1`), through the same front door as every
//! purge API. Only with a token: the edge faces the internet, so an open
//! API (no tokens configured) does not make PURGE open.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use purgecast_core::{Mode, Selector};

use super::metrics;
use super::proxy::Edge;
use crate::api::{Front, PurgeCall};
use crate::tenants::Refusal;

fn token(session: &Session) -> Option<String> {
    let h = &session.req_header().headers;
    let bearer =
        h.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let fastly = h.get("fastly-key").and_then(|v| v.to_str().ok());
    bearer.or(fastly).map(|t| t.trim().to_string())
}

async fn answer(session: &mut Session, status: u16, body: serde_json::Value, retry: Option<u64>) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    if let Some(secs) = retry {
        resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    let body = Bytes::from(format!("{body}\n"));
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    metrics::request("purge", false);
    Ok(true)
}

fn refusal_status(r: &Refusal) -> u16 {
    match r {
        Refusal::Unauthenticated(_) => 401,
        Refusal::Denied(_) => 403,
        Refusal::Invalid(_) => 400,
        Refusal::UnknownZone(_) => 404,
        Refusal::Limited { .. } => 429,
        Refusal::Unavailable(_) => 503,
    }
}

/// Answers a PURGE request; always handles it (returns true).
pub(super) async fn purge(front: &Front, session: &mut Session) -> Result<bool> {
    let token = token(session);
    if front.tenants.snapshot().is_open() {
        let msg = "PURGE at the edge needs a token, and this node has none configured";
        return answer(session, 403, serde_json::json!({ "status": "error", "msg": msg }), None).await;
    }
    let Some(url) = Edge::url_of(session.req_header()) else {
        let msg = "the request URL cannot be a cache key";
        return answer(session, 400, serde_json::json!({ "status": "error", "msg": msg }), None).await;
    };
    let soft = session.req_header().headers.get("fastly-soft-purge").is_some_and(|v| v.as_bytes() == b"1");
    let selectors = match Selector::url(&url) {
        Ok(s) => vec![s],
        Err(e) => {
            return answer(session, 400, serde_json::json!({ "status": "error", "msg": e.to_string() }), None).await
        }
    };
    let call = PurgeCall::new(None, selectors, if soft { Mode::Soft } else { Mode::Hard });
    tracing::debug!(%url, soft, "PURGE at the edge");
    match front.purge(token.as_deref(), call).await {
        Ok(a) => answer(session, 200, serde_json::json!({ "status": "ok", "id": a.id.to_string() }), None).await,
        Err(r) => {
            let retry = r.retry_after_secs();
            let body = serde_json::json!({ "status": "error", "msg": r.to_string() });
            answer(session, refusal_status(&r), body, retry).await
        }
    }
}
