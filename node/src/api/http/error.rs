//! What can go wrong with an HTTP purge request, whichever dialect carried
//! it, and the HTTP status and headers each failure gets. The dialects
//! differ only in the body they wrap the message in.

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::tenants::Refusal;

/// Largest request body read.
pub(crate) const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body is not JSON, or not of the expected shape (a wrong type, an
    /// unknown field).
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// Well-formed, but not a purge this API takes (no kind or several,
    /// an empty or over-long list, a bad URL, host, prefix or tag).
    #[error("{0}")]
    Invalid(String),
    #[error("request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no route {0}")]
    NoRoute(String),
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("purge {0} is not tracked here: ask the node that accepted it (status is kept for an hour)")]
    NotTracked(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute(_) | ApiError::NotTracked(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Refused(r) => match r {
                Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                Refusal::Denied(_) => StatusCode::FORBIDDEN,
                Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
                Refusal::UnknownZone(_) => StatusCode::NOT_FOUND,
                Refusal::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
                Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// `Retry-After` for a rate-limited request, in whole seconds.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Refused(r) => r.retry_after_secs(),
            _ => None,
        }
    }

    /// Headers both dialects send with this error.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if self.status() == StatusCode::UNAUTHORIZED {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs() {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        h
    }

    /// Metric-style label for the log.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed",
            ApiError::Invalid(_) => "invalid",
            ApiError::TooLarge => "too_large",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::NotTracked(_) => "not_tracked",
            ApiError::Refused(r) => r.reason(),
        }
    }

    /// Refusals are routine (a client's mistake, a rate limit), so debug;
    /// the front already counts them in the metrics. Messages never hold a
    /// token's secret, only its id.
    pub(crate) fn log(&self, api: &'static str) {
        let status = self.status().as_u16();
        tracing::debug!(api, status, reason = self.reason(), error = %self, "HTTP purge request refused");
    }
}

/// User input echoed in a message, cut short.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tenants::AuthError;

    fn limited(ms: u64) -> ApiError {
        ApiError::Refused(Refusal::Limited { zone: "shop".into(), retry_after: Duration::from_millis(ms) })
    }

    #[test]
    fn every_failure_has_its_http_status() {
        let cases = [
            (ApiError::Malformed("x".into()), 400),
            (ApiError::Invalid("x".into()), 400),
            (ApiError::TooLarge, 413),
            (ApiError::NoRoute("/x".into()), 404),
            (ApiError::MethodNotAllowed("PUT".into()), 405),
            (ApiError::NotTracked("00".into()), 404),
            (ApiError::Refused(Refusal::Unauthenticated(AuthError::Missing)), 401),
            (ApiError::Refused(Refusal::Unauthenticated(AuthError::Expired("ci".into()))), 401),
            (ApiError::Refused(Refusal::Denied("no".into())), 403),
            (ApiError::Refused(Refusal::Invalid("no".into())), 400),
            (ApiError::Refused(Refusal::UnknownZone("nope".into())), 404),
            (limited(10), 429),
            (ApiError::Refused(Refusal::Unavailable("down".into())), 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(limited(0).retry_after_secs(), Some(1));
        assert_eq!(limited(1).retry_after_secs(), Some(1));
        assert_eq!(limited(1000).retry_after_secs(), Some(1));
        assert_eq!(limited(1001).retry_after_secs(), Some(2));
        assert_eq!(limited(2500).retry_after_secs(), Some(3));
        assert_eq!(ApiError::TooLarge.retry_after_secs(), None);
    }

    #[test]
    fn a_rate_limited_request_says_when_to_retry_and_an_unauthenticated_one_how_to_authenticate() {
        let h = limited(200).headers();
        assert_eq!(h.get(RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
        assert!(h.get(WWW_AUTHENTICATE).is_none());
        let h = ApiError::Refused(Refusal::Unauthenticated(AuthError::Invalid)).headers();
        assert_eq!(h.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer"));
        assert!(h.get(RETRY_AFTER).is_none());
        assert!(ApiError::Invalid("x".into()).headers().is_empty());
    }
}
