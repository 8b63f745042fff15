//! The `[edge]` section: where the HTTP cache listens, which origins it
//! fronts, and how it caches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use purgecast_core::human_duration as human;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Tag headers read by default: Cloudflare's, Fastly's and Varnish xkey's.
pub const TAG_HEADERS: [&str; 3] = ["cache-tag", "surrogate-key", "xkey"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// HTTP listen address; the edge is off when unset.
    pub listen: Option<SocketAddr>,
    /// Upstream (`host:port`) for each request host (`Host` header, port
    /// included if the client sent one), e.g. `"example.com" = "10.0.0.5:80"`.
    pub origins: BTreeMap<String, String>,
    /// Upstream for hosts not in `origins`; unset = such hosts get 404.
    pub default_origin: Option<String>,
    /// Total body bytes kept; least recently used objects go first.
    pub cache_bytes: u64,
    /// Larger responses are passed through, not cached.
    pub max_object_bytes: u64,
    /// Small objects (one body chunk, 256 KiB at most) recently served are
    /// also kept in memory, decoded, up to this many bytes: their hits read
    /// nothing from RocksDB. 0 = off.
    pub memory_bytes: u64,
    /// Response headers whose values are the object's tags.
    pub tag_headers: Vec<String>,
    /// Remove tag headers from responses to clients.
    pub strip_tag_headers: bool,
    /// Cache responses that set cookies (off: they are passed through).
    pub cache_set_cookie: bool,
    /// Freshness of a 200 without Cache-Control or Expires; 0 = not cached.
    #[serde(with = "human")]
    pub default_ttl: Duration,
    /// After a soft purge, how long the stale copy may be served while it
    /// revalidates, when the origin gave no `stale-while-revalidate`.
    #[serde(with = "human")]
    pub stale_while_revalidate: Duration,
    /// How long a stale copy may stand in for an origin error, when the
    /// origin gave no `stale-if-error`.
    #[serde(with = "human")]
    pub stale_if_error: Duration,
    #[serde(with = "human")]
    pub origin_connect_timeout: Duration,
    /// Longest wait for each read from the origin.
    #[serde(with = "human")]
    pub origin_read_timeout: Duration,
    /// How long concurrent misses of one object wait for the first one's
    /// fetch before fetching themselves.
    #[serde(with = "human")]
    pub lock_timeout: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: None,
            origins: BTreeMap::new(),
            default_origin: None,
            cache_bytes: 1 << 30,
            max_object_bytes: 64 << 20,
            memory_bytes: 64 << 20,
            tag_headers: TAG_HEADERS.iter().map(|h| h.to_string()).collect(),
            strip_tag_headers: true,
            cache_set_cookie: false,
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            origin_connect_timeout: Duration::from_secs(2),
            origin_read_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
        }
    }
}

impl EdgeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        for (host, up) in &self.origins {
            if purgecast_core::normalize_host(host).is_err() {
                return bad("edge.origins", format!("{host:?} is not a host name"));
            }
            if !is_host_port(up) {
                return bad("edge.origins", format!("{up:?} (for {host}) is not host:port"));
            }
        }
        if let Some(up) = &self.default_origin {
            if !is_host_port(up) {
                return bad("edge.default_origin", format!("{up:?} is not host:port"));
            }
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > self.cache_bytes {
            return bad("edge.max_object_bytes", "must be between 1 and cache_bytes".into());
        }
        if self.tag_headers.iter().any(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err()) {
            return bad("edge.tag_headers", "every entry must be a header name".into());
        }
        for (key, d) in [
            ("edge.origin_connect_timeout", self.origin_connect_timeout),
            ("edge.origin_read_timeout", self.origin_read_timeout),
            ("edge.lock_timeout", self.lock_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be more than 0".into());
            }
        }
        Ok(())
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_section_parses_and_bad_values_are_named() {
        let c: EdgeConfig = toml::from_str(
            "listen = \"127.0.0.1:8080\"\ndefault_origin = \"127.0.0.1:9000\"\n\
             origin_read_timeout = \"5s\"\n[origins]\n\"example.com\" = \"10.0.0.5:80\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.origin_read_timeout, Duration::from_secs(5));
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.origins.insert("example.org".into(), "nowhere".into());
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid { key: "edge.origins", .. })));
        let mut bad = c;
        bad.max_object_bytes = bad.cache_bytes + 1;
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid { key: "edge.max_object_bytes", .. })));
        assert!(toml::from_str::<EdgeConfig>("listen_on = \"x\"").is_err());
    }
}
