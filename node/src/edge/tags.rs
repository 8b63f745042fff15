//! Tags from response headers: `Cache-Tag` (comma-separated, Cloudflare),
//! `Surrogate-Key` (space-separated, Fastly), `xkey` (either, Varnish).

use pingora_http::ResponseHeader;
use purgecast_core::Selector;

use crate::store::MAX_TAGS;

#[derive(Debug, Clone)]
pub(crate) struct Tags {
    headers: Vec<http::HeaderName>,
}

impl Tags {
    pub fn new(names: &[String]) -> Tags {
        Tags { headers: names.iter().filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()).collect() }
    }

    pub fn headers(&self) -> &[http::HeaderName] {
        &self.headers
    }

    /// The object's tags: every valid tag in every configured header,
    /// deduplicated, at most `MAX_TAGS`. A tag the purge API would refuse
    /// (too long, control characters) is skipped: no purge could name it.
    pub fn of(&self, resp: &ResponseHeader) -> Vec<String> {
        let mut tags = Vec::new();
        for name in &self.headers {
            for value in resp.headers.get_all(name) {
                let Ok(text) = value.to_str() else { continue };
                for t in text.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()) {
                    if Selector::tag(t).is_ok() {
                        tags.push(t.to_string());
                    }
                }
            }
        }
        tags.sort_unstable();
        tags.dedup();
        tags.truncate(MAX_TAGS);
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_from_every_dialect_and_bad_ones_are_skipped() {
        let tags = Tags::new(&["cache-tag".into(), "surrogate-key".into(), "xkey".into()]);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Cache-Tag", "a, b,,c").unwrap();
        resp.append_header("Surrogate-Key", "d  e a").unwrap();
        resp.append_header("xkey", "f,g").unwrap();
        resp.append_header("Other", "z").unwrap();
        assert_eq!(tags.of(&resp), ["a", "b", "c", "d", "e", "f", "g"]);
        let mut long = ResponseHeader::build(200, None).unwrap();
        long.append_header("Cache-Tag", format!("{}, ok", "x".repeat(2000))).unwrap();
        assert_eq!(tags.of(&long), ["ok"]);
    }
}
