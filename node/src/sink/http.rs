//! The HTTP requests sinks send, and what counts as a cache's "yes".

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{what}: {source}")]
    Request { what: String, source: reqwest::Error },
    #[error("{what}: the cache answered {status}: {body}")]
    Refused { what: String, status: StatusCode, body: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A client for one sink: its own connection pool and timeout.
pub fn client(timeout: Duration, ca_file: Option<&std::path::Path>) -> Result<Client, SinkError> {
    // Caches are addressed directly: an HTTP_PROXY in the environment must
    // not reroute purges.
    let mut b = Client::builder().timeout(timeout).connect_timeout(timeout).pool_max_idle_per_host(4).no_proxy();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| SinkError::Client(format!("{}: {e}", path.display())))?;
        let ca =
            reqwest::Certificate::from_pem(&pem).map_err(|e| SinkError::Client(format!("{}: {e}", path.display())))?;
        b = b.add_root_certificate(ca);
    }
    b.build().map_err(|e| SinkError::Client(e.to_string()))
}

/// PURGE, BAN, or a webhook's method (checked when the config is read).
pub fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap_or(Method::POST)
}

/// Sends `req`; `ok` says which statuses mean the cache did it.
pub async fn send(what: String, req: RequestBuilder, ok: impl Fn(StatusCode) -> bool) -> Result<(), SinkError> {
    let resp = req.send().await.map_err(|source| SinkError::Request { what: what.clone(), source })?;
    let status = resp.status();
    if ok(status) {
        return Ok(());
    }
    // The cache's own words, cut by characters: a byte cut could land
    // inside one, and the text is whatever the cache sent.
    let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
    Err(SinkError::Refused { what, status, body: body.trim().to_string() })
}
