//! What a purge matches, and the validation every selector passes before it
//! enters the cluster, whether it comes from a client or from a peer.
//!
//! Cache keys are URLs normalised once here (lower-case scheme and host, no
//! fragment), so the index and every purge agree on the same key.

pub const MAX_URL_LEN: usize = 8192;
pub const MAX_HOST_LEN: usize = 253;
pub const MAX_TAG_LEN: usize = 1024;

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// One cache entry, by its full normalised URL.
    Url(String),
    /// Every entry of one host.
    Host(String),
    /// Every entry of `host` whose path starts with `path_prefix`.
    Prefix {
        /// Normalised host.
        host: String,
        /// Path prefix, starting with '/'.
        path_prefix: String,
    },
    /// Every entry carrying this surrogate key.
    Tag(String),
    /// Every entry.
    Everything,
}

/// A selector that must not be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SelectorError {
    /// An empty URL.
    #[error("url is empty")]
    EmptyUrl,
    /// A URL over the length limit.
    #[error("url is longer than {MAX_URL_LEN} bytes")]
    UrlTooLong,
    /// Not http or https.
    #[error("url {0:?} must start with http:// or https://")]
    BadScheme(String),
    /// A host that is not a valid DNS name or IP.
    #[error("host {0:?} is not a valid host name (letters, digits, '-', '.', optional :port)")]
    BadHost(String),
    /// Characters a URL may not hold.
    #[error("url {0:?} contains whitespace or control characters")]
    BadUrlChars(String),
    /// A prefix that is not a URL path prefix.
    #[error("prefix {0:?} must be host/path (e.g. example.com/static/)")]
    BadPrefix(String),
    /// An empty tag.
    #[error("tag is empty")]
    EmptyTag,
    /// A tag over the length limit.
    #[error("tag is longer than {MAX_TAG_LEN} bytes")]
    TagTooLong,
    /// Characters a tag may not hold.
    #[error("tag {0:?} contains whitespace or control characters")]
    BadTag(String),
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A parsed cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Normalised URL: the key itself.
    pub key: String,
    /// Normalised host.
    pub host: String,
    /// Path with query, always starting with '/'.
    pub path: String,
}

/// Validates and lower-cases a host name, with an optional `:port`.
pub fn normalize_host(host: &str) -> Result<String, SelectorError> {
    let h = host.to_ascii_lowercase();
    if lower_host_ok(&h) {
        Ok(h)
    } else {
        Err(SelectorError::BadHost(clip(host)))
    }
}

/// The checks of [`normalize_host`] on an already lower-case host.
fn lower_host_ok(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= MAX_HOST_LEN
        && !name.starts_with('.')
        && !name.starts_with('-')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    name_ok && port_ok
}

/// True only if `url` is a valid URL already in the normal form
/// [`parse_url`] gives (so re-parsing would return it unchanged), checked
/// without allocating: every node re-validates every purge it receives.
fn url_is_normal(url: &str) -> bool {
    if url.is_empty() || url.len() > MAX_URL_LEN || has_bad_chars(url) || url.contains('#') {
        return false;
    }
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    path.starts_with('/') && !host.bytes().any(|b| b.is_ascii_uppercase()) && lower_host_ok(host)
}

fn has_bad_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses a full URL into its normalised cache key.
pub fn parse_url(url: &str) -> Result<CacheKey, SelectorError> {
    if url.is_empty() {
        return Err(SelectorError::EmptyUrl);
    }
    if url.len() > MAX_URL_LEN {
        return Err(SelectorError::UrlTooLong);
    }
    if has_bad_chars(url) {
        return Err(SelectorError::BadUrlChars(clip(url)));
    }
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https", &url[8..])
    } else if lower.starts_with("http://") {
        ("http", &url[7..])
    } else {
        return Err(SelectorError::BadScheme(clip(url)));
    };
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = normalize_host(&rest[..split])?;
    let mut path = rest[split..].to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    Ok(CacheKey { key: format!("{scheme}://{host}{path}"), host, path })
}

impl Selector {
    /// The selector's kind as a lower-case word (`url`, `host`, `prefix`,
    /// `tag`, `everything`), for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Url(_) => "url",
            Selector::Host(_) => "host",
            Selector::Prefix { .. } => "prefix",
            Selector::Tag(_) => "tag",
            Selector::Everything => "everything",
        }
    }

    /// A URL selector, normalised.
    pub fn url(url: &str) -> Result<Selector, SelectorError> {
        Ok(Selector::Url(parse_url(url)?.key))
    }

    /// A host selector, normalised.
    pub fn host(host: &str) -> Result<Selector, SelectorError> {
        Ok(Selector::Host(normalize_host(host)?))
    }

    /// Accepts `host/path-prefix` or `scheme://host/path-prefix`; the scheme
    /// does not narrow the match (a prefix purge covers http and https).
    pub fn prefix(prefix: &str) -> Result<Selector, SelectorError> {
        if prefix.is_empty() || prefix.len() > MAX_URL_LEN || has_bad_chars(prefix) {
            return Err(SelectorError::BadPrefix(clip(prefix)));
        }
        let lower = prefix.to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            &prefix[8..]
        } else if lower.starts_with("http://") {
            &prefix[7..]
        } else {
            prefix
        };
        let Some(slash) = rest.find('/') else {
            return Err(SelectorError::BadPrefix(clip(prefix)));
        };
        let host = normalize_host(&rest[..slash]).map_err(|_| SelectorError::BadPrefix(clip(prefix)))?;
        Ok(Selector::Prefix { host, path_prefix: rest[slash..].to_string() })
    }

    /// A tag selector, checked.
    pub fn tag(tag: &str) -> Result<Selector, SelectorError> {
        if tag.is_empty() {
            return Err(SelectorError::EmptyTag);
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(SelectorError::TagTooLong);
        }
        if has_bad_chars(tag) {
            return Err(SelectorError::BadTag(clip(tag)));
        }
        Ok(Selector::Tag(tag.to_string()))
    }

    /// Re-validates a selector, e.g. one that arrived from a peer: a peer is
    /// trusted to be in the cluster, not to be bug-free.
    pub fn validate(&self) -> Result<(), SelectorError> {
        let again = match self {
            // The common case, without re-parsing; anything else takes the
            // full path below, which names the error.
            Selector::Url(u) if url_is_normal(u) => return Ok(()),
            Selector::Url(u) => Selector::url(u)?,
            Selector::Host(h) => Selector::host(h)?,
            Selector::Prefix { host, path_prefix } => {
                if !path_prefix.starts_with('/') {
                    return Err(SelectorError::BadPrefix(clip(path_prefix)));
                }
                Selector::prefix(&format!("{host}{path_prefix}"))?
            }
            Selector::Tag(t) => Selector::tag(t)?,
            Selector::Everything => Selector::Everything,
        };
        if &again == self {
            Ok(())
        } else {
            Err(SelectorError::BadUrlChars("selector is not in normal form".into()))
        }
    }

    /// Whether this selector matches an entry; the store uses indexes
    /// instead, this is the reference semantics (and what tests check).
    pub fn matches(&self, key: &CacheKey, tags: &[String]) -> bool {
        match self {
            Selector::Url(u) => *u == key.key,
            Selector::Host(h) => *h == key.host,
            Selector::Prefix { host, path_prefix } => *host == key.host && key.path.starts_with(path_prefix.as_str()),
            Selector::Tag(t) => tags.iter().any(|x| x == t),
            Selector::Everything => true,
        }
    }

    /// Rough byte size, for bounding messages.
    pub fn approx_len(&self) -> usize {
        match self {
            Selector::Url(s) | Selector::Host(s) | Selector::Tag(s) => s.len() + 4,
            Selector::Prefix { host, path_prefix } => host.len() + path_prefix.len() + 6,
            Selector::Everything => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_normalised() {
        let k = parse_url("HTTPS://Example.COM/A/b?x=1#frag").unwrap();
        assert_eq!(k.key, "https://example.com/A/b?x=1");
        assert_eq!(k.host, "example.com");
        assert_eq!(k.path, "/A/b?x=1");
        assert_eq!(parse_url("http://example.com").unwrap().path, "/");
        assert_eq!(parse_url("http://example.com?q").unwrap().key, "http://example.com/?q");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert_eq!(parse_url(""), Err(SelectorError::EmptyUrl));
        assert!(matches!(parse_url("ftp://x/"), Err(SelectorError::BadScheme(_))));
        assert!(matches!(parse_url("http:///path"), Err(SelectorError::BadHost(_))));
        assert!(matches!(parse_url("http://a b/"), Err(SelectorError::BadUrlChars(_))));
        assert!(matches!(parse_url("http://ex..com/"), Err(SelectorError::BadHost(_))));
        assert!(matches!(parse_url("http://ex.com:99999/"), Err(SelectorError::BadHost(_))));
        let long = format!("http://x.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(parse_url(&long), Err(SelectorError::UrlTooLong));
    }

    #[test]
    fn prefix_accepts_with_or_without_scheme() {
        let a = Selector::prefix("example.com/static/").unwrap();
        let b = Selector::prefix("https://EXAMPLE.com/static/").unwrap();
        assert_eq!(a, b);
        assert!(Selector::prefix("example.com").is_err());
        assert!(Selector::prefix("/static").is_err());
    }

    #[test]
    fn matching_follows_each_kind() {
        let k = parse_url("https://example.com/static/app.js").unwrap();
        let tags = vec!["t1".to_string()];
        assert!(Selector::url("https://example.com/static/app.js").unwrap().matches(&k, &tags));
        assert!(!Selector::url("http://example.com/static/app.js").unwrap().matches(&k, &tags));
        assert!(Selector::host("example.com").unwrap().matches(&k, &tags));
        assert!(!Selector::host("other.com").unwrap().matches(&k, &tags));
        assert!(Selector::prefix("example.com/static/").unwrap().matches(&k, &tags));
        assert!(!Selector::prefix("example.com/img/").unwrap().matches(&k, &tags));
        assert!(Selector::tag("t1").unwrap().matches(&k, &tags));
        assert!(!Selector::tag("t2").unwrap().matches(&k, &tags));
        assert!(Selector::Everything.matches(&k, &tags));
    }

    #[test]
    fn the_fast_normal_form_check_agrees_with_reparsing() {
        for u in [
            "https://example.com/x",
            "http://example.com/x?y=1",
            "https://example.com:8443/a/b",
            "https://example.com",
            "https://example.com?q",
            "https://Example.com/x",
            "HTTPS://example.com/x",
            "https://example.com/x#f",
            "https://ex..com/x",
            "https://example.com:99999/x",
            "https://-x.com/",
            "https://example.com/a b",
            "ftp://example.com/x",
            "https:///x",
            "https://x.com/A/B",
        ] {
            let reparsed = parse_url(u).is_ok_and(|k| k.key == u);
            assert_eq!(url_is_normal(u), reparsed, "{u}");
        }
    }

    #[test]
    fn validate_rejects_what_a_peer_should_not_send() {
        assert!(Selector::Url("https://example.com/x".into()).validate().is_ok());
        assert!(Selector::Url("HTTPS://example.com/x".into()).validate().is_err());
        assert!(Selector::Host("bad host".into()).validate().is_err());
        assert!(Selector::Tag(String::new()).validate().is_err());
        assert!(Selector::Prefix { host: "a.com".into(), path_prefix: "x".into() }.validate().is_err());
    }
}
