//! The Cloudflare dialect: `POST /client/v4/zones/{zone_id}/purge_cache`
//! with Cloudflare's body shapes, and the status of a purge, both in
//! Cloudflare's envelope. Purges are hard: Cloudflare's API has no soft
//! purge, and keeping its shape exactly keeps existing scripts working.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use purgecast_core::{Mode, Selector};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{clip, ApiError};
use super::status::status_json;
use super::{bearer, envelope, path_error, read_body};
use crate::api::front::{Accepted, Front, PurgeCall, Status};
use crate::tenants::{MAX_NAMED, MAX_URLS};

const API: &str = "cloudflare";
const KINDS: &str = "\"files\", \"tags\", \"hosts\", \"prefixes\" or \"purge_everything\": true";

/// A purge_cache body. Absent and `null` are the same; a field this API
/// does not know is an error, so a typo is not silently a no-op.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// Strings or `{"url", "headers"}` objects: parsed by hand to say
    /// which entry is wrong and why.
    files: Option<Vec<Value>>,
    tags: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    prefixes: Option<Vec<String>>,
    purge_everything: Option<bool>,
}

/// The purge a purge_cache body asks for in `zone`.
///
/// `"purge_everything": false` counts as absent (some scripts send it
/// beside `files`), so alone it is a request for nothing, an error.
pub(crate) fn parse_cloudflare(body: &[u8], zone: &str) -> Result<PurgeCall, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::Malformed(format!("empty body: expected a JSON object with one of {KINDS}"))),
        // serde would also take a struct as an array of its fields.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::Malformed(format!("expected a JSON object with one of {KINDS}"))),
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let everything = b.purge_everything == Some(true);
    let given: Vec<&str> = [
        ("files", b.files.is_some()),
        ("tags", b.tags.is_some()),
        ("hosts", b.hosts.is_some()),
        ("prefixes", b.prefixes.is_some()),
        ("purge_everything", everything),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(ApiError::Invalid(format!(
            "one kind of purge per request, got {}: send them as separate requests",
            given.join(", ")
        )));
    }
    let selectors = if everything {
        vec![Selector::Everything]
    } else if let Some(files) = &b.files {
        parse_list("files", files, MAX_URLS, file_selector)?
    } else if let Some(tags) = &b.tags {
        parse_list("tags", tags, MAX_NAMED, |t| Selector::tag(t).map_err(|e| e.to_string()))?
    } else if let Some(hosts) = &b.hosts {
        parse_list("hosts", hosts, MAX_NAMED, |h| Selector::host(h).map_err(|e| e.to_string()))?
    } else if let Some(prefixes) = &b.prefixes {
        // The core takes `host/path` with or without a scheme and drops it.
        parse_list("prefixes", prefixes, MAX_NAMED, |p| Selector::prefix(p).map_err(|e| e.to_string()))?
    } else if b.purge_everything == Some(false) {
        return Err(ApiError::Invalid(format!(
            "\"purge_everything\" is false: nothing to purge (set it to true, or send one of {KINDS})"
        )));
    } else {
        return Err(ApiError::Invalid(format!("nothing to purge: send one of {KINDS}")));
    };
    Ok(PurgeCall::new(Some(zone.to_string()), selectors, Mode::Hard))
}

/// Checked before parsing any entry, so an over-long list costs nothing.
fn parse_list<T>(
    field: &str,
    items: &[T],
    max: usize,
    parse: impl Fn(&T) -> Result<Selector, String>,
) -> Result<Vec<Selector>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::Invalid(format!("\"{field}\" is empty: nothing to purge")));
    }
    if items.len() > max {
        return Err(ApiError::Invalid(format!("too many {field}: {} (at most {max} in one request)", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(item).map_err(|e| ApiError::Invalid(format!("{field}[{i}]: {e}"))))
        .collect()
}

/// A file is a URL, or `{"url": ..., "headers": {...}}`: Cloudflare keys
/// some caches on those headers; here the URL alone is the key, so the
/// headers are accepted and ignored.
fn file_selector(v: &Value) -> Result<Selector, String> {
    const SHAPE: &str = "a file is a URL string or {\"url\": \"...\", \"headers\": {...}}";
    let url = match v {
        Value::String(u) => u,
        Value::Object(o) => file_object_url(o).map_err(|e| format!("{e} ({SHAPE})"))?,
        _ => return Err(format!("expected a URL string or an object, got {} ({SHAPE})", kind_of(v))),
    };
    Selector::url(url).map_err(|e| e.to_string())
}

fn file_object_url(o: &Map<String, Value>) -> Result<&String, String> {
    if let Some(k) = o.keys().find(|k| *k != "url" && *k != "headers") {
        return Err(format!("unknown field {:?}", clip(k)));
    }
    match o.get("headers") {
        None | Some(Value::Object(_)) | Some(Value::Null) => {}
        Some(other) => return Err(format!("\"headers\" must be an object, got {}", kind_of(other))),
    }
    match o.get("url") {
        Some(Value::String(u)) => Ok(u),
        Some(other) => Err(format!("\"url\" must be a string, got {}", kind_of(other))),
        None => Err("missing \"url\"".into()),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) async fn purge(
    State(front): State<Front>,
    zone: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match try_purge(&front, zone, &headers, body).await {
        Ok(accepted) => envelope::success(json!({ "id": accepted.id.to_string() })),
        Err(e) => {
            e.log(API);
            envelope::failure(&e)
        }
    }
}

async fn try_purge(
    front: &Front,
    zone: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, ApiError> {
    let Path(zone) = zone.map_err(path_error)?;
    let body = read_body(body)?;
    let call = parse_cloudflare(&body, &zone)?;
    Ok(front.purge(bearer(headers), call).await?)
}

/// The zone in the path is not checked against the purge: status is
/// keyed by id alone, as in gRPC (an id is 128 random bits).
pub(crate) async fn status(
    State(front): State<Front>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match try_status(&front, path, &headers).await {
        Ok(s) => envelope::success(status_json(&s)),
        Err(e) => {
            e.log(API);
            envelope::failure(&e)
        }
    }
}

async fn try_status(
    front: &Front,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
) -> Result<Status, ApiError> {
    let Path((_zone, id)) = path.map_err(path_error)?;
    let found = front.status(bearer(headers), &id).await?;
    found.ok_or(ApiError::NotTracked(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PurgeCall, ApiError> {
        parse_cloudflare(body.as_bytes(), "shop")
    }

    fn selectors_of(body: &str) -> Vec<Selector> {
        match parse(body) {
            Ok(call) => call.selectors,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn invalid(body: &str) -> String {
        match parse(body) {
            Err(ApiError::Invalid(m)) => m,
            other => panic!("{body}: expected Invalid, got {other:?}"),
        }
    }

    fn malformed(body: &str) -> String {
        match parse(body) {
            Err(ApiError::Malformed(m)) => m,
            other => panic!("{body}: expected Malformed, got {other:?}"),
        }
    }

    fn list(items: impl Iterator<Item = String>) -> String {
        format!("[{}]", items.map(|s| format!("{s:?}")).collect::<Vec<_>>().join(","))
    }

    #[test]
    fn files_become_url_selectors_in_the_zone_of_the_path_and_are_hard() {
        let call = match parse(r#"{"files": ["https://WWW.example.com/a?b=1", "http://www.example.com/c"]}"#) {
            Ok(call) => call,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(call.zone.as_deref(), Some("shop"));
        assert_eq!(call.mode, Mode::Hard);
        assert_eq!(
            call.selectors,
            vec![
                Selector::url("https://www.example.com/a?b=1").unwrap(),
                Selector::url("http://www.example.com/c").unwrap()
            ]
        );
    }

    #[test]
    fn a_file_may_be_an_object_whose_headers_are_ignored() {
        let s = selectors_of(
            r#"{"files": [{"url": "https://www.example.com/a", "headers": {"Origin": "https://x", "CF-IPCountry": "US"}},
                          {"url": "https://www.example.com/b"},
                          "https://www.example.com/c"]}"#,
        );
        assert_eq!(
            s,
            vec![
                Selector::url("https://www.example.com/a").unwrap(),
                Selector::url("https://www.example.com/b").unwrap(),
                Selector::url("https://www.example.com/c").unwrap(),
            ]
        );
    }

    #[test]
    fn a_bad_file_object_says_which_entry_and_why() {
        assert!(invalid(r#"{"files": ["https://a.com/", {"headers": {}}]}"#).contains("files[1]: missing \"url\""));
        assert!(invalid(r#"{"files": [{"url": 5}]}"#).contains("\"url\" must be a string, got a number"));
        assert!(invalid(r#"{"files": [{"url": "https://a.com/", "headers": []}]}"#).contains("\"headers\" must be"));
        assert!(invalid(r#"{"files": [{"url": "https://a.com/", "method": "GET"}]}"#).contains("unknown field"));
        assert!(invalid(r#"{"files": [42]}"#).contains("files[0]: expected a URL string or an object, got a number"));
    }

    #[test]
    fn tags_hosts_and_prefixes_become_their_selectors() {
        assert_eq!(
            selectors_of(r#"{"tags": ["a", "b"]}"#),
            vec![Selector::tag("a").unwrap(), Selector::tag("b").unwrap()]
        );
        assert_eq!(selectors_of(r#"{"hosts": ["WWW.example.com"]}"#), vec![Selector::host("www.example.com").unwrap()]);
        assert_eq!(
            selectors_of(r#"{"prefixes": ["www.example.com/foo"]}"#),
            vec![Selector::prefix("www.example.com/foo").unwrap()]
        );
    }

    #[test]
    fn a_prefix_with_a_scheme_is_the_same_prefix() {
        assert_eq!(
            selectors_of(r#"{"prefixes": ["https://www.example.com/foo", "HTTP://www.example.com/foo"]}"#),
            vec![Selector::prefix("www.example.com/foo").unwrap(), Selector::prefix("www.example.com/foo").unwrap()]
        );
    }

    #[test]
    fn purge_everything_true_is_everything_and_false_is_nothing() {
        assert_eq!(selectors_of(r#"{"purge_everything": true}"#), vec![Selector::Everything]);
        assert!(invalid(r#"{"purge_everything": false}"#).contains("nothing to purge"));
        // false beside another kind is just that kind.
        assert_eq!(selectors_of(r#"{"purge_everything": false, "tags": ["a"]}"#), vec![Selector::tag("a").unwrap()]);
    }

    #[test]
    fn one_kind_per_request() {
        let m = invalid(r#"{"files": ["https://a.com/"], "tags": ["a"]}"#);
        assert!(m.contains("one kind of purge per request, got files, tags"), "{m}");
        assert!(invalid(r#"{"purge_everything": true, "hosts": ["a.com"]}"#).contains("hosts, purge_everything"));
        assert!(invalid(r#"{}"#).contains("nothing to purge"));
        assert!(invalid(r#"{"tags": null}"#).contains("nothing to purge"));
    }

    #[test]
    fn empty_lists_are_refused() {
        for kind in ["files", "tags", "hosts", "prefixes"] {
            let m = invalid(&format!(r#"{{"{kind}": []}}"#));
            assert!(m.contains(&format!("\"{kind}\" is empty")), "{m}");
        }
    }

    #[test]
    fn over_limit_lists_are_refused_before_any_entry_is_parsed() {
        let files = list((0..=MAX_URLS).map(|i| format!("https://a.com/{i}")));
        assert!(invalid(&format!(r#"{{"files": {files}}}"#)).contains("too many files: 501"));
        let at_limit = list((0..MAX_URLS).map(|i| format!("https://a.com/{i}")));
        assert_eq!(selectors_of(&format!(r#"{{"files": {at_limit}}}"#)).len(), MAX_URLS);
        // Bad entries, but too many of them: the count is what is reported.
        let tags = list((0..=MAX_NAMED).map(|_| "bad tag".to_string()));
        assert!(invalid(&format!(r#"{{"tags": {tags}}}"#)).contains("too many tags: 101"));
        for kind in ["hosts", "prefixes"] {
            let items = list((0..=MAX_NAMED).map(|i| format!("h{i}.com/")));
            assert!(invalid(&format!(r#"{{"{kind}": {items}}}"#)).contains(&format!("too many {kind}")));
        }
    }

    #[test]
    fn bad_selectors_say_which_entry_and_why() {
        assert!(invalid(r#"{"files": ["ftp://a.com/x"]}"#).starts_with("files[0]: url"));
        assert!(invalid(r#"{"files": ["https://a.com/", "https://a com/"]}"#).starts_with("files[1]:"));
        assert!(invalid(r#"{"tags": ["ok", ""]}"#).starts_with("tags[1]: tag is empty"));
        assert!(invalid(r#"{"tags": ["has space"]}"#).starts_with("tags[0]:"));
        assert!(invalid(r#"{"hosts": ["bad host!"]}"#).starts_with("hosts[0]:"));
        assert!(invalid(r#"{"prefixes": ["no-path"]}"#).starts_with("prefixes[0]:"));
    }

    #[test]
    fn malformed_json_and_wrong_types_say_what_is_wrong() {
        assert!(malformed("").contains("empty body"));
        assert!(malformed("  \n").contains("empty body"));
        assert!(malformed("{\"files\": [").contains("EOF"));
        assert!(malformed("not json").contains("expected"));
        assert!(malformed(r#"{"tags": "a"}"#).contains("invalid type"));
        assert!(malformed(r#"{"tags": [1]}"#).contains("invalid type"));
        assert!(malformed(r#"{"purge_everything": "true"}"#).contains("invalid type"));
        assert!(malformed(r#"["https://a.com/"]"#).contains("expected a JSON object"));
        assert!(malformed(r#"[null, null, null, null, true]"#).contains("expected a JSON object"));
        assert!(malformed("\"tags\"").contains("expected a JSON object"));
        assert!(malformed(r#"{"tags": ["a"], "soft": true}"#).contains("unknown field `soft`"));
        assert!(malformed(r#"{"tags": ["a"], "tags": ["b"]}"#).contains("duplicate field"));
    }

    #[test]
    fn any_bytes_are_an_error_not_a_panic() {
        for body in [&b"\xff\xfe"[..], b"{\"files\": [\"\xff\"]}", b"\0", b"{\"files\": [[[[[]]]]]}"] {
            assert!(parse_cloudflare(body, "shop").is_err());
        }
        let deep = format!("{{\"files\": {}", "[".repeat(10_000));
        assert!(matches!(parse_cloudflare(deep.as_bytes(), "shop"), Err(ApiError::Malformed(_))));
    }
}
