//! Cloudflare's response envelope, `{success, errors, messages, result}`,
//! and the error codes it carries.
//!
//! Codes are Cloudflare's where Cloudflare has one for the same failure,
//! so scripts that already branch on them keep working; the two marked
//! "purgecast" have no Cloudflare counterpart.
//!
//! | code  | HTTP | meaning |
//! |-------|------|---------|
//! | 1012  | 400  | invalid purge request: no kind or several, an empty or over-long list, a bad URL, host, prefix or tag, a bad purge id |
//! | 6007  | 400  | malformed JSON body: syntax, a wrong type, an unknown field |
//! | 6100  | 413  | body over 1 MiB (purgecast) |
//! | 7000  | 404  | no such route |
//! | 7001  | 405  | method not allowed on this route |
//! | 7003  | 404  | unknown zone, or a purge this node does not track |
//! | 9109  | 403  | the token may not do this (zone or permission) |
//! | 10000 | 401  | authentication error: token missing, unknown or expired |
//! | 971   | 429  | the zone's purge rate limit is reached (see `Retry-After`) |
//! | 1199  | 503  | this node cannot accept purges now: retry on another (purgecast) |

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json_response;
use crate::tenants::Refusal;

pub(crate) const INVALID_REQUEST: u32 = 1012;
pub(crate) const MALFORMED_JSON: u32 = 6007;
pub(crate) const TOO_LARGE: u32 = 6100;
pub(crate) const NO_ROUTE: u32 = 7000;
pub(crate) const METHOD_NOT_ALLOWED: u32 = 7001;
pub(crate) const NOT_FOUND: u32 = 7003;
pub(crate) const FORBIDDEN: u32 = 9109;
pub(crate) const AUTHENTICATION: u32 = 10000;
pub(crate) const RATE_LIMITED: u32 = 971;
pub(crate) const UNAVAILABLE: u32 = 1199;

pub(crate) fn code(err: &ApiError) -> u32 {
    match err {
        ApiError::Malformed(_) => MALFORMED_JSON,
        ApiError::Invalid(_) => INVALID_REQUEST,
        ApiError::TooLarge => TOO_LARGE,
        ApiError::NoRoute(_) => NO_ROUTE,
        ApiError::MethodNotAllowed(_) => METHOD_NOT_ALLOWED,
        ApiError::NotTracked(_) => NOT_FOUND,
        ApiError::Refused(r) => match r {
            Refusal::Unauthenticated(_) => AUTHENTICATION,
            Refusal::Denied(_) => FORBIDDEN,
            Refusal::Invalid(_) => INVALID_REQUEST,
            Refusal::UnknownZone(_) => NOT_FOUND,
            Refusal::Limited { .. } => RATE_LIMITED,
            Refusal::Unavailable(_) => UNAVAILABLE,
        },
    }
}

pub(crate) fn success_body(result: Value) -> Value {
    json!({ "success": true, "errors": [], "messages": [], "result": result })
}

/// Status, headers and envelope of a failure.
pub(crate) fn failure_parts(err: &ApiError) -> (StatusCode, HeaderMap, Value) {
    let body = json!({
        "success": false,
        "errors": [{ "code": code(err), "message": err.to_string() }],
        "messages": [],
        "result": null,
    });
    (err.status(), err.headers(), body)
}

pub(crate) fn success(result: Value) -> Response {
    json_response(StatusCode::OK, HeaderMap::new(), &success_body(result))
}

pub(crate) fn failure(err: &ApiError) -> Response {
    let (status, headers, body) = failure_parts(err);
    json_response(status, headers, &body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};

    use super::*;
    use crate::tenants::AuthError;

    #[test]
    fn a_success_has_the_whole_envelope() {
        let body = success_body(json!({ "id": "abc" }));
        assert_eq!(body, json!({ "success": true, "errors": [], "messages": [], "result": { "id": "abc" } }));
    }

    #[test]
    fn a_failure_has_the_whole_envelope_with_its_code_and_message() {
        let (status, _, body) = failure_parts(&ApiError::Invalid("tags is empty".into()));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({
                "success": false,
                "errors": [{ "code": 1012, "message": "tags is empty" }],
                "messages": [],
                "result": null,
            })
        );
    }

    #[test]
    fn each_failure_gets_its_code() {
        let cases = [
            (ApiError::Malformed("x".into()), MALFORMED_JSON),
            (ApiError::Invalid("x".into()), INVALID_REQUEST),
            (ApiError::TooLarge, TOO_LARGE),
            (ApiError::NoRoute("/x".into()), NO_ROUTE),
            (ApiError::MethodNotAllowed("PUT".into()), METHOD_NOT_ALLOWED),
            (ApiError::NotTracked("x".into()), NOT_FOUND),
            (ApiError::Refused(Refusal::Unauthenticated(AuthError::Missing)), AUTHENTICATION),
            (ApiError::Refused(Refusal::Denied("x".into())), FORBIDDEN),
            (ApiError::Refused(Refusal::Invalid("x".into())), INVALID_REQUEST),
            (ApiError::Refused(Refusal::UnknownZone("x".into())), NOT_FOUND),
            (ApiError::Refused(Refusal::Unavailable("x".into())), UNAVAILABLE),
        ];
        for (err, c) in cases {
            assert_eq!(code(&err), c, "{err:?}");
        }
    }

    #[test]
    fn a_rate_limited_failure_is_429_with_retry_after() {
        let err = ApiError::Refused(Refusal::Limited { zone: "shop".into(), retry_after: Duration::from_millis(1500) });
        let (status, headers, body) = failure_parts(&err);
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
        assert_eq!(body["errors"][0]["code"], json!(RATE_LIMITED));
    }

    #[test]
    fn an_unauthenticated_failure_is_401_with_www_authenticate_and_no_token() {
        let err = ApiError::Refused(Refusal::Unauthenticated(AuthError::Invalid));
        let (status, headers, body) = failure_parts(&err);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer"));
        assert_eq!(body["errors"][0]["code"], json!(AUTHENTICATION));
    }
}
