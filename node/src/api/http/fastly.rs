//! The Fastly dialect: purge one surrogate key, a batch of them, or a
//! whole zone (Fastly's "service"), and read a purge's status. Responses
//! are bare JSON as Fastly sends them; errors are `{"msg", "detail"}`.
//!
//! A batch takes its keys from the `Surrogate-Key` header when the request
//! has one (the body is then not read as keys at all), else from a JSON
//! body `{"surrogate_keys": [...]}`: one rule, so a client sending both is
//! never half-obeyed.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use purgecast_core::{Mode, Selector};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::status::status_json;
use super::{bearer, json_response, path_error, read_body};
use crate::api::front::{Accepted, Front, PurgeCall, Status};
use crate::tenants::Refusal;

const API: &str = "fastly";

/// Most keys in one batch purge (Fastly's limit).
pub(crate) const MAX_KEYS: usize = 256;

static FASTLY_KEY: HeaderName = HeaderName::from_static("fastly-key");
static SOFT_PURGE: HeaderName = HeaderName::from_static("fastly-soft-purge");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static LIMIT_REMAINING: HeaderName = HeaderName::from_static("fastly-ratelimit-remaining");
static LIMIT_RESET: HeaderName = HeaderName::from_static("fastly-ratelimit-reset");

/// `Fastly-Key`, else `Authorization: Bearer`.
pub(crate) fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(&FASTLY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
}

/// `Fastly-Soft-Purge: 1` is soft, `0` or none hard; anything else is
/// refused rather than guessed, since guessing hard deletes what the
/// client meant to keep serving stale.
pub(crate) fn mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    match headers.get(&SOFT_PURGE).map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("0")) => Ok(Mode::Hard),
        Some(Ok("1")) => Ok(Mode::Soft),
        Some(_) => Err(ApiError::Invalid("Fastly-Soft-Purge must be 1 (soft purge) or 0".into())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    surrogate_keys: Vec<String>,
}

/// The keys of a batch purge, duplicates dropped, in request order.
pub(crate) fn surrogate_keys(headers: &HeaderMap, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let mut values = headers.get_all(&SURROGATE_KEY).into_iter().peekable();
    let keys: Vec<String> = if values.peek().is_some() {
        let mut keys = Vec::new();
        for v in values {
            let v = v.to_str().map_err(|_| ApiError::Invalid("Surrogate-Key header is not visible ASCII".into()))?;
            keys.extend(v.split_ascii_whitespace().map(str::to_string));
        }
        if keys.is_empty() {
            return Err(ApiError::Invalid("Surrogate-Key header holds no keys".into()));
        }
        keys
    } else {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::Invalid(
                "no surrogate keys: send a Surrogate-Key header or a JSON body {\"surrogate_keys\": [...]}".into(),
            ));
        }
        let b: BatchBody = serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
        if b.surrogate_keys.is_empty() {
            return Err(ApiError::Invalid("\"surrogate_keys\" is empty: nothing to purge".into()));
        }
        b.surrogate_keys
    };
    if keys.len() > MAX_KEYS {
        return Err(ApiError::Invalid(format!(
            "too many surrogate keys: {} (at most {MAX_KEYS} in one request)",
            keys.len()
        )));
    }
    let mut unique = Vec::with_capacity(keys.len());
    for k in keys {
        if !unique.contains(&k) {
            unique.push(k);
        }
    }
    Ok(unique)
}

fn tag_selectors(keys: &[String]) -> Result<Vec<Selector>, ApiError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| Selector::tag(k).map_err(|e| ApiError::Invalid(format!("surrogate key {i}: {e}"))))
        .collect()
}

pub(crate) fn key_call(zone: &str, key: &str, headers: &HeaderMap) -> Result<PurgeCall, ApiError> {
    let selectors = tag_selectors(&[key.to_string()])?;
    Ok(PurgeCall::new(Some(zone.to_string()), selectors, mode(headers)?))
}

pub(crate) fn batch_call(zone: &str, headers: &HeaderMap, body: &[u8]) -> Result<(Vec<String>, PurgeCall), ApiError> {
    let mode = mode(headers)?;
    let keys = surrogate_keys(headers, body)?;
    let selectors = tag_selectors(&keys)?;
    // Fastly takes 256 surrogate keys in one batch, more than the other
    // APIs' 100 tags a request.
    let call = PurgeCall { max_named: MAX_KEYS, ..PurgeCall::new(Some(zone.to_string()), selectors, mode) };
    Ok((keys, call))
}

/// Always hard: Fastly ignores `Fastly-Soft-Purge` on purge_all.
pub(crate) fn all_call(zone: &str) -> PurgeCall {
    PurgeCall::new(Some(zone.to_string()), vec![Selector::Everything], Mode::Hard)
}

/// Fastly's short titles; the detail is the full reason.
fn title(err: &ApiError) -> &'static str {
    match err {
        ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::Refused(Refusal::Invalid(_)) => "Bad request",
        ApiError::TooLarge => "Payload too large",
        ApiError::NoRoute(_) | ApiError::NotTracked(_) | ApiError::Refused(Refusal::UnknownZone(_)) => {
            "Record not found"
        }
        ApiError::MethodNotAllowed(_) => "Method not allowed",
        ApiError::Refused(Refusal::Unauthenticated(_)) => "Provided credentials are missing or invalid",
        ApiError::Refused(Refusal::Denied(_)) => "Forbidden",
        ApiError::Refused(Refusal::Limited { .. }) => "Too many requests",
        ApiError::Refused(Refusal::Unavailable(_)) => "Service unavailable",
    }
}

/// Status, headers and body of a failure at `now_secs` (Unix time: the
/// rate-limit reset is an instant, not a delay).
pub(crate) fn error_parts(err: &ApiError, now_secs: u64) -> (StatusCode, HeaderMap, Value) {
    let mut headers = err.headers();
    if let Some(secs) = err.retry_after_secs() {
        headers.insert(LIMIT_REMAINING.clone(), HeaderValue::from_static("0"));
        headers.insert(LIMIT_RESET.clone(), HeaderValue::from(now_secs.saturating_add(secs)));
    }
    (err.status(), headers, json!({ "msg": title(err), "detail": err.to_string() }))
}

pub(crate) fn error_response(err: &ApiError) -> Response {
    let (status, headers, body) = error_parts(err, crate::tenants::now_secs());
    json_response(status, headers, &body)
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, HeaderMap::new(), &body)
}

fn failed(err: ApiError) -> Response {
    err.log(API);
    error_response(&err)
}

fn accepted_body(a: &Accepted) -> Value {
    json!({ "status": "ok", "id": a.id.to_string() })
}

/// Drains the body only to refuse an oversized one like every other route.
fn ignore_body(body: Result<Bytes, BytesRejection>) -> Result<(), ApiError> {
    read_body(body).map(drop)
}

pub(crate) async fn purge_key(
    State(front): State<Front>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let Path((zone, key)) = path.map_err(path_error)?;
        ignore_body(body)?;
        let call = key_call(&zone, &key, &headers)?;
        Ok::<_, ApiError>(front.purge(token(&headers), call).await?)
    };
    match result.await {
        Ok(a) => ok(accepted_body(&a)),
        Err(e) => failed(e),
    }
}

pub(crate) async fn purge_batch(
    State(front): State<Front>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let Path(zone) = path.map_err(path_error)?;
        let body = read_body(body)?;
        let (keys, call) = batch_call(&zone, &headers, &body)?;
        let accepted = front.purge(token(&headers), call).await?;
        Ok::<_, ApiError>((keys, accepted))
    };
    match result.await {
        // One purge for all keys: each key maps to its id.
        Ok((keys, a)) => {
            let id = Value::String(a.id.to_string());
            ok(Value::Object(keys.into_iter().map(|k| (k, id.clone())).collect::<Map<_, _>>()))
        }
        Err(e) => failed(e),
    }
}

pub(crate) async fn purge_all(
    State(front): State<Front>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let Path(zone) = path.map_err(path_error)?;
        ignore_body(body)?;
        Ok::<_, ApiError>(front.purge(token(&headers), all_call(&zone)).await?)
    };
    match result.await {
        Ok(a) => ok(accepted_body(&a)),
        Err(e) => failed(e),
    }
}

/// As in the Cloudflare dialect, the zone in the path is not checked:
/// status is keyed by id alone.
pub(crate) async fn status(
    State(front): State<Front>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Path((_zone, id)) = path.map_err(path_error)?;
        let found: Option<Status> = front.status(token(&headers), &id).await?;
        found.ok_or(ApiError::NotTracked(id))
    };
    match result.await {
        Ok(s) => ok(status_json(&s)),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header::{AUTHORIZATION, RETRY_AFTER};

    use super::*;
    use crate::tenants::AuthError;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            match (HeaderName::try_from(*k), HeaderValue::try_from(*v)) {
                (Ok(k), Ok(v)) => {
                    h.append(k, v);
                }
                _ => panic!("bad test header {k}: {v}"),
            }
        }
        h
    }

    fn keys(pairs: &[(&str, &str)], body: &str) -> Result<Vec<String>, ApiError> {
        surrogate_keys(&headers(pairs), body.as_bytes())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_token_is_fastly_key_else_bearer() {
        assert_eq!(token(&headers(&[("fastly-key", "k1"), ("authorization", "Bearer b1")])), Some("k1"));
        assert_eq!(token(&headers(&[("authorization", "Bearer b1")])), Some("b1"));
        assert_eq!(token(&headers(&[("fastly-key", " "), ("authorization", "bearer b1")])), Some("b1"));
        assert_eq!(token(&headers(&[])), None);
        assert_eq!(token(&headers(&[(AUTHORIZATION.as_str(), "Basic abc")])), None);
    }

    #[test]
    fn soft_purge_header() {
        assert_eq!(mode(&headers(&[])), Ok(Mode::Hard));
        assert_eq!(mode(&headers(&[("fastly-soft-purge", "1")])), Ok(Mode::Soft));
        assert_eq!(mode(&headers(&[("Fastly-Soft-Purge", " 1 ")])), Ok(Mode::Soft));
        assert_eq!(mode(&headers(&[("fastly-soft-purge", "0")])), Ok(Mode::Hard));
        assert!(matches!(mode(&headers(&[("fastly-soft-purge", "yes")])), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn surrogate_key_header_is_split_on_any_whitespace() {
        assert_eq!(keys(&[("surrogate-key", "a b")], ""), Ok(strings(&["a", "b"])));
        assert_eq!(keys(&[("surrogate-key", "  a    b\tc  ")], ""), Ok(strings(&["a", "b", "c"])));
        assert_eq!(keys(&[("surrogate-key", "a"), ("surrogate-key", "b a")], ""), Ok(strings(&["a", "b"])));
    }

    #[test]
    fn an_empty_surrogate_key_header_is_refused() {
        assert!(matches!(keys(&[("surrogate-key", "")], ""), Err(ApiError::Invalid(_))));
        assert!(matches!(keys(&[("surrogate-key", "   ")], r#"{"surrogate_keys": ["a"]}"#), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn the_header_wins_over_the_body() {
        assert_eq!(keys(&[("surrogate-key", "h")], r#"{"surrogate_keys": ["b"]}"#), Ok(strings(&["h"])));
        // The body is not read as keys at all then, so it need not be JSON.
        assert_eq!(keys(&[("surrogate-key", "h")], "not json"), Ok(strings(&["h"])));
    }

    #[test]
    fn keys_from_a_json_body() {
        assert_eq!(keys(&[], r#"{"surrogate_keys": ["a", "b", "a"]}"#), Ok(strings(&["a", "b"])));
        assert!(matches!(keys(&[], r#"{"surrogate_keys": []}"#), Err(ApiError::Invalid(_))));
        assert!(matches!(keys(&[], ""), Err(ApiError::Invalid(_))));
        assert!(matches!(keys(&[], "{"), Err(ApiError::Malformed(_))));
        assert!(matches!(keys(&[], r#"{"surrogate_keys": "a"}"#), Err(ApiError::Malformed(_))));
        assert!(matches!(keys(&[], r#"{"surrogate_keys": [1]}"#), Err(ApiError::Malformed(_))));
        assert!(matches!(keys(&[], r#"{"keys": ["a"]}"#), Err(ApiError::Malformed(_))));
        assert!(matches!(surrogate_keys(&HeaderMap::new(), b"\xff"), Err(ApiError::Malformed(_))));
    }

    #[test]
    fn at_most_256_keys() {
        let at_limit = (0..MAX_KEYS).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(keys(&[("surrogate-key", at_limit.as_str())], "").map(|k| k.len()), Ok(MAX_KEYS));
        let over = format!("{at_limit} one-more");
        let err = keys(&[("surrogate-key", over.as_str())], "");
        assert!(matches!(&err, Err(ApiError::Invalid(m)) if m.contains("too many surrogate keys: 257")), "{err:?}");
        let body = serde_json::json!({ "surrogate_keys": (0..=MAX_KEYS).map(|i| format!("k{i}")).collect::<Vec<_>>() });
        assert!(matches!(keys(&[], &body.to_string()), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn batch_call_is_tags_in_the_zone_with_the_mode_of_the_header() {
        let h = headers(&[("surrogate-key", "a b"), ("fastly-soft-purge", "1")]);
        let (k, call) = match batch_call("shop", &h, b"") {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(k, strings(&["a", "b"]));
        assert_eq!(call.zone.as_deref(), Some("shop"));
        assert_eq!(call.mode, Mode::Soft);
        assert_eq!(call.selectors, vec![Selector::Tag("a".into()), Selector::Tag("b".into())]);
        let bad = batch_call("shop", &headers(&[]), br#"{"surrogate_keys": ["ok", "b\u0001d"]}"#);
        assert!(matches!(&bad, Err(ApiError::Invalid(m)) if m.starts_with("surrogate key 1:")), "{bad:?}");
    }

    #[test]
    fn a_single_key_is_one_tag() {
        let call = key_call("shop", "product-1", &headers(&[]));
        let Ok(call) = call.map(|c| (c.zone, c.selectors, c.mode)) else { panic!("refused") };
        assert_eq!(call, (Some("shop".into()), vec![Selector::Tag("product-1".into())], Mode::Hard));
        assert!(matches!(key_call("shop", "", &headers(&[])), Err(ApiError::Invalid(_))));
        assert!(matches!(key_call("shop", "a b", &headers(&[])), Err(ApiError::Invalid(_))));
        let soft = key_call("shop", "k", &headers(&[("fastly-soft-purge", "1")]));
        assert!(matches!(soft, Ok(PurgeCall { mode: Mode::Soft, .. })));
    }

    #[test]
    fn purge_all_is_everything_and_always_hard() {
        let call = all_call("shop");
        assert_eq!(call.selectors, vec![Selector::Everything]);
        assert_eq!(call.mode, Mode::Hard);
        assert_eq!(call.zone.as_deref(), Some("shop"));
    }

    #[test]
    fn errors_are_msg_and_detail_with_the_shared_statuses() {
        let (status, _, body) = error_parts(&ApiError::Refused(Refusal::UnknownZone("nope".into())), 0);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({ "msg": "Record not found", "detail": "unknown zone \"nope\"" }));
        let (status, _, body) = error_parts(&ApiError::Refused(Refusal::Unauthenticated(AuthError::Missing)), 0);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["msg"], json!("Provided credentials are missing or invalid"));
        let (status, _, _) = error_parts(&ApiError::Malformed("x".into()), 0);
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_rate_limited_request_has_fastly_rate_limit_headers() {
        let err = ApiError::Refused(Refusal::Limited { zone: "shop".into(), retry_after: Duration::from_millis(2100) });
        let (status, h, body) = error_parts(&err, 1_700_000_000);
        let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(get(&RETRY_AFTER).as_deref(), Some("3"));
        assert_eq!(get(&LIMIT_REMAINING).as_deref(), Some("0"));
        assert_eq!(get(&LIMIT_RESET).as_deref(), Some("1700000003"));
        assert_eq!(body["msg"], json!("Too many requests"));
        let (_, h, _) = error_parts(&ApiError::Invalid("x".into()), 1);
        assert!(h.get(&LIMIT_RESET).is_none());
    }
}
