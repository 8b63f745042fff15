//! `[[sink]]` sections: the external caches this node applies purges to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use purgecast_core::human_duration as human;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::store::MAX_SINK_NAME;

/// Which cache a sink talks to, and so how it speaks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Varnish with the VCL in deploy/connectors/varnish: every selector.
    Varnish,
    /// nginx with ngx_cache_purge: URLs only.
    Nginx,
    /// Apache Traffic Server: URLs only.
    Ats,
    /// Any HTTP endpoint that takes the purge as JSON: every selector.
    Webhook,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Varnish => "varnish",
            SinkKind::Nginx => "nginx",
            SinkKind::Ats => "ats",
            SinkKind::Webhook => "webhook",
        }
    }

    /// Whether the cache can apply anything but URL purges.
    pub fn urls_only(self) -> bool {
        matches!(self, SinkKind::Nginx | SinkKind::Ats)
    }
}

/// What a URL-only cache does with a selector it cannot apply.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unsupported {
    /// Leave the cache alone for that selector, count it in
    /// `purgecast_sink_skipped_total` and confirm the rest.
    Skip,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique among the node's sinks; names its metrics and its backlog
    /// (renaming a sink drops what the old name still owed).
    pub name: String,
    pub kind: SinkKind,
    /// The cache's HTTP address, `host:port` (varnish, nginx, ats).
    #[serde(default)]
    pub address: Option<String>,
    /// Webhook URL; `{id}` becomes the purge id.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook method (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// Extra request headers (e.g. the webhook's credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// PEM CA file for an https webhook with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Required for nginx and ats: these caches purge URLs only, and the
    /// operator must say so ("skip") rather than lose the rest silently.
    #[serde(default)]
    pub unsupported: Option<Unsupported>,
    /// Longest wait for one request to the cache.
    #[serde(default = "default_timeout", with = "human")]
    pub timeout: Duration,
    /// The node turns not ready once this sink has failed for this long.
    #[serde(default = "default_not_ready_after", with = "human")]
    pub not_ready_after: Duration,
    /// Varnish, nginx, ATS: send every purge again this long after the
    /// cache confirmed it, which removes objects that were being fetched
    /// the first time (the caches skip them). Set it to the backend's fetch
    /// time limit; "0s" turns it off.
    #[serde(default = "default_repeat_after", with = "human")]
    pub repeat_after: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_not_ready_after() -> Duration {
    Duration::from_secs(30)
}

fn default_repeat_after() -> Duration {
    Duration::from_secs(5)
}

impl SinkConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |reason: String| Err(ConfigError::Invalid { key: "sink", reason });
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_SINK_NAME {
            return bad(format!("name {name:?} must be 1 to {MAX_SINK_NAME} bytes"));
        }
        let kind = self.kind.as_str();
        match (self.kind, &self.address, &self.url) {
            (SinkKind::Webhook, _, None) => return bad(format!("{name}: a webhook needs `url`")),
            (SinkKind::Webhook, Some(_), _) => return bad(format!("{name}: a webhook takes `url`, not `address`")),
            (SinkKind::Webhook, None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return bad(format!("{name}: url {url:?} must start with http:// or https://"));
                }
            }
            (_, None, _) => return bad(format!("{name}: a {kind} sink needs `address` (host:port of the cache)")),
            (_, Some(_), Some(_)) => return bad(format!("{name}: `url` is only for kind = \"webhook\"")),
            (_, Some(address), None) => {
                if address.contains('/') || !address.contains(':') {
                    return bad(format!("{name}: address {address:?} must be host:port"));
                }
            }
        }
        if self.kind != SinkKind::Webhook && (self.method.is_some() || self.ca_file.is_some()) {
            return bad(format!("{name}: `method` and `ca_file` are only for kind = \"webhook\""));
        }
        if let Some(m) = &self.method {
            if ::http::Method::from_bytes(m.as_bytes()).is_err() {
                return bad(format!("{name}: method {m:?} is not an HTTP method"));
            }
        }
        for (k, v) in &self.headers {
            if ::http::HeaderName::from_bytes(k.as_bytes()).is_err() || ::http::HeaderValue::from_str(v).is_err() {
                return bad(format!("{name}: header {k:?} is not a valid HTTP header name and value"));
            }
        }
        if self.kind.urls_only() && self.unsupported.is_none() {
            return bad(format!(
                "{name}: {kind} can purge only URLs; tag, host, prefix and everything purges cannot reach it. \
                 Set unsupported = \"skip\" to accept that (they are then counted in purgecast_sink_skipped_total)"
            ));
        }
        if !self.kind.urls_only() && self.unsupported.is_some() {
            return bad(format!("{name}: `unsupported` is only for nginx and ats ({kind} takes every selector)"));
        }
        if self.timeout.is_zero() {
            return bad(format!("{name}: timeout must be above zero"));
        }
        Ok(())
    }
}

/// Checks every sink and that their names are unique.
pub fn validate_all(sinks: &[SinkConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for s in sinks {
        s.validate()?;
        if !names.insert(s.name.as_str()) {
            return Err(ConfigError::Invalid { key: "sink", reason: format!("two sinks are named {:?}", s.name) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            sink: Vec<SinkConfig>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        validate_all(&doc.sink).map_err(|e| e.to_string())?;
        Ok(doc.sink)
    }

    #[test]
    fn each_kind_parses_with_its_fields() {
        let sinks = parse(
            r#"
            [[sink]]
            name = "varnish"
            kind = "varnish"
            address = "127.0.0.1:6081"
            repeat_after = "2s"
            [[sink]]
            name = "nginx"
            kind = "nginx"
            address = "127.0.0.1:8081"
            unsupported = "skip"
            [[sink]]
            name = "hook"
            kind = "webhook"
            url = "https://hooks.example/purge/{id}"
            headers = { Authorization = "Bearer x" }
            "#,
        )
        .unwrap();
        assert_eq!(sinks.len(), 3);
        assert_eq!(sinks[0].repeat_after, Duration::from_secs(2));
        assert_eq!(sinks[1].unsupported, Some(Unsupported::Skip));
        assert_eq!(sinks[2].headers["Authorization"], "Bearer x");
        assert_eq!(sinks[2].timeout, default_timeout());
    }

    #[test]
    fn a_url_only_cache_must_be_told_what_to_do_with_the_rest() {
        let err = parse("[[sink]]\nname = \"n\"\nkind = \"nginx\"\naddress = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.contains("can purge only URLs") && err.contains("unsupported = \"skip\""), "{err}");
        let err = parse("[[sink]]\nname = \"a\"\nkind = \"ats\"\naddress = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.contains("can purge only URLs"), "{err}");
    }

    #[test]
    fn misplaced_or_missing_fields_are_refused() {
        for (text, want) in [
            ("name = \"v\"\nkind = \"varnish\"", "needs `address`"),
            ("name = \"v\"\nkind = \"varnish\"\naddress = \"x\"", "must be host:port"),
            ("name = \"w\"\nkind = \"webhook\"", "needs `url`"),
            ("name = \"w\"\nkind = \"webhook\"\nurl = \"ftp://x\"", "must start with http"),
            ("name = \"v\"\nkind = \"varnish\"\naddress = \"a:1\"\nunsupported = \"skip\"", "only for nginx"),
            ("name = \"v\"\nkind = \"varnish\"\naddress = \"a:1\"\nmethod = \"PUT\"", "only for kind"),
            ("name = \"\"\nkind = \"varnish\"\naddress = \"a:1\"", "must be 1 to"),
            ("name = \"v\"\nkind = \"squid\"\naddress = \"a:1\"", "unknown variant"),
            ("name = \"v\"\nkind = \"varnish\"\naddress = \"a:1\"\nadress = \"b\"", "unknown field"),
            ("name = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nmethod = \"PO ST\"", "not an HTTP method"),
            (
                "name = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nheaders = { \"a b\" = \"1\" }",
                "not a valid HTTP header",
            ),
        ] {
            let err = parse(&format!("[[sink]]\n{text}")).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        let twice = "[[sink]]\nname = \"v\"\nkind = \"varnish\"\naddress = \"a:1\"\n".repeat(2);
        assert!(parse(&twice).unwrap_err().contains("two sinks are named"));
    }
}
