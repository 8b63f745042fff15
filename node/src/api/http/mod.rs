//! The HTTP/JSON purge APIs, beside gRPC, in the two dialects people
//! already script against. Both only translate: every request goes through
//! the same front door (`api::front`) as gRPC, which authenticates, confines
//! to a zone, rate-limits and accepts. Reference: `docs/http-api.md`.
//!
//! Cloudflare (`Authorization: Bearer`; Cloudflare's envelope):
//! - `POST /client/v4/zones/{zone_id}/purge_cache`: one of `files`, `tags`,
//!   `hosts`, `prefixes`, `purge_everything`; always a hard purge;
//! - `GET  /client/v4/zones/{zone_id}/purges/{id}`: a purge's status.
//!
//! Fastly (`Fastly-Key` or `Authorization: Bearer`; `Fastly-Soft-Purge: 1`
//! for a soft purge; bare JSON, errors `{"msg", "detail"}`):
//! - `POST /service/{zone_id}/purge/{key}`: one surrogate key;
//! - `POST /service/{zone_id}/purge`: up to 256 keys (`Surrogate-Key`
//!   header, else `{"surrogate_keys": [...]}`), all in one purge;
//! - `POST /service/{zone_id}/purge_all`: the whole zone, always hard;
//! - `GET  /service/{zone_id}/purges/{id}`: a purge's status.
//!
//! Anything else is a JSON 404 (405 for a known route with another
//! method), in the Fastly shape under `/service/`, else the Cloudflare
//! envelope. Bodies over 1 MiB are refused with 413.
//!
//! - `cloudflare`, `fastly`: each dialect's parsing (pure, tested without
//!   a node) and handlers;
//! - `envelope`: Cloudflare's envelope and error codes;
//! - `error`: failures and their HTTP statuses, shared;
//! - `status`: a purge's status as JSON, shared;
//! - `serve`: plain HTTP or TLS.

mod cloudflare;
mod envelope;
mod error;
mod fastly;
#[cfg(test)]
mod fuzz_tests;
mod serve;
mod status;

pub(crate) use serve::serve;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::DefaultBodyLimit;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::Value;

use self::error::{clip, ApiError, MAX_BODY};
use super::front::Front;

/// The routes of both dialects, over `front`.
pub(crate) fn router(front: Front) -> Router {
    Router::new()
        .route("/client/v4/zones/{zone_id}/purge_cache", post(cloudflare::purge))
        .route("/client/v4/zones/{zone_id}/purges/{id}", get(cloudflare::status))
        .route("/service/{zone_id}/purge/{key}", post(fastly::purge_key))
        .route("/service/{zone_id}/purge", post(fastly::purge_batch))
        .route("/service/{zone_id}/purge_all", post(fastly::purge_all))
        .route("/service/{zone_id}/purges/{id}", get(fastly::status))
        // Applies to the routes above only: it must come after them.
        .method_not_allowed_fallback(wrong_method)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(front)
}

/// Errors outside a handler (no route, wrong method) in the shape of the
/// dialect the path belongs to.
fn error_for_path(path: &str, err: &ApiError) -> Response {
    if path.starts_with("/service/") {
        err.log("fastly");
        fastly::error_response(err)
    } else {
        err.log("cloudflare");
        envelope::failure(err)
    }
}

async fn no_route(uri: Uri) -> Response {
    error_for_path(uri.path(), &ApiError::NoRoute(clip(uri.path())))
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    error_for_path(uri.path(), &ApiError::MethodNotAllowed(clip(method.as_str())))
}

pub(crate) fn json_response(status: StatusCode, mut headers: HeaderMap, body: &Value) -> Response {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (status, headers, body.to_string()).into_response()
}

/// The token of `Authorization: Bearer <token>` (scheme in any case), if
/// the request has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The body, taken as bytes so that a bad one gets the dialect's error
/// shape rather than axum's plain-text rejection, and so that any
/// content type (or none) is fine.
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::Malformed(r.body_text())
        }
    })
}

/// A path segment that does not decode (bad percent-encoding, not UTF-8).
pub(crate) fn path_error(r: PathRejection) -> ApiError {
    ApiError::Invalid(format!("bad path: {}", r.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        match HeaderValue::try_from(value) {
            Ok(v) => h.insert(AUTHORIZATION, v),
            Err(e) => panic!("{e}"),
        };
        h
    }

    #[test]
    fn bearer_token() {
        assert_eq!(bearer(&auth("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(&auth("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(&auth("BEARER abc")), Some("abc"));
        assert_eq!(bearer(&auth("Basic abc")), None);
        assert_eq!(bearer(&auth("Bearer")), None);
        assert_eq!(bearer(&auth("Bearer  ")), None);
        assert_eq!(bearer(&auth("abc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
