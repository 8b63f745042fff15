//! Building API selectors from command-line style strings.
//!
//! Only shape is checked here (non-empty values); the node validates and
//! normalises selectors and its error message is the authoritative one.

use purgecast_proto::api::selector::Kind;
use purgecast_proto::api::Selector;

/// A selector string that could not be turned into a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorParseError {
    #[error("empty {0} selector")]
    Empty(&'static str),
    #[error("unknown selector kind {0:?} (expected url, host, prefix, tag or everything)")]
    UnknownKind(String),
    #[error("selector {0:?} has no kind; write kind:value, e.g. tag:product-42")]
    MissingKind(String),
}

pub fn url(value: &str) -> Result<Selector, SelectorParseError> {
    non_empty("url", value).map(|v| wrap(Kind::Url(v)))
}

pub fn host(value: &str) -> Result<Selector, SelectorParseError> {
    non_empty("host", value).map(|v| wrap(Kind::Host(v)))
}

pub fn prefix(value: &str) -> Result<Selector, SelectorParseError> {
    non_empty("prefix", value).map(|v| wrap(Kind::Prefix(v)))
}

pub fn tag(value: &str) -> Result<Selector, SelectorParseError> {
    non_empty("tag", value).map(|v| wrap(Kind::Tag(v)))
}

pub fn everything() -> Selector {
    wrap(Kind::Everything(true))
}

/// Parses `kind:value` (`url:https://a/b`, `tag:t`, `host:h`, `prefix:h/p`)
/// or the bare word `everything`.
pub fn parse(spec: &str) -> Result<Selector, SelectorParseError> {
    let spec = spec.trim();
    if spec == "everything" {
        return Ok(everything());
    }
    let Some((kind, value)) = spec.split_once(':') else {
        return Err(SelectorParseError::MissingKind(spec.to_string()));
    };
    match kind {
        "url" => url(value),
        "host" => host(value),
        "prefix" => prefix(value),
        "tag" => tag(value),
        other => Err(SelectorParseError::UnknownKind(other.to_string())),
    }
}

/// Accumulates selectors in call order; the node's errors name selectors by
/// index ("selector 0: ..."), so callers should add kinds in a fixed order.
#[derive(Debug, Default, Clone)]
pub struct SelectorSet {
    selectors: Vec<Selector>,
}

impl SelectorSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn urls<S: AsRef<str>>(self, values: &[S]) -> Result<Self, SelectorParseError> {
        self.extend(values, url)
    }

    pub fn hosts<S: AsRef<str>>(self, values: &[S]) -> Result<Self, SelectorParseError> {
        self.extend(values, host)
    }

    pub fn prefixes<S: AsRef<str>>(self, values: &[S]) -> Result<Self, SelectorParseError> {
        self.extend(values, prefix)
    }

    pub fn tags<S: AsRef<str>>(self, values: &[S]) -> Result<Self, SelectorParseError> {
        self.extend(values, tag)
    }

    pub fn everything(mut self, yes: bool) -> Self {
        if yes {
            self.selectors.push(everything());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    pub fn build(self) -> Vec<Selector> {
        self.selectors
    }

    fn extend<S: AsRef<str>>(
        mut self,
        values: &[S],
        make: fn(&str) -> Result<Selector, SelectorParseError>,
    ) -> Result<Self, SelectorParseError> {
        for v in values {
            self.selectors.push(make(v.as_ref())?);
        }
        Ok(self)
    }
}

/// A one-line human rendering, e.g. `tag:product-42`.
pub fn display(sel: &Selector) -> String {
    match &sel.kind {
        Some(Kind::Url(v)) => format!("url:{v}"),
        Some(Kind::Host(v)) => format!("host:{v}"),
        Some(Kind::Prefix(v)) => format!("prefix:{v}"),
        Some(Kind::Tag(v)) => format!("tag:{v}"),
        Some(Kind::Everything(_)) => "everything".to_string(),
        None => "(empty)".to_string(),
    }
}

fn wrap(kind: Kind) -> Selector {
    Selector { kind: Some(kind) }
}

fn non_empty(what: &'static str, value: &str) -> Result<String, SelectorParseError> {
    let v = value.trim();
    if v.is_empty() {
        Err(SelectorParseError::Empty(what))
    } else {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_kinds() {
        assert_eq!(parse("url:https://a.example/x?y=1").unwrap(), wrap(Kind::Url("https://a.example/x?y=1".into())));
        assert_eq!(parse("host:a.example").unwrap(), wrap(Kind::Host("a.example".into())));
        assert_eq!(parse("prefix:a.example/img/").unwrap(), wrap(Kind::Prefix("a.example/img/".into())));
        assert_eq!(parse(" tag:p-1 ").unwrap(), wrap(Kind::Tag("p-1".into())));
        assert_eq!(parse("everything").unwrap(), wrap(Kind::Everything(true)));
    }

    #[test]
    fn parse_rejects_bad_specs() {
        assert_eq!(parse("tag:").unwrap_err(), SelectorParseError::Empty("tag"));
        assert_eq!(parse("tag:   ").unwrap_err(), SelectorParseError::Empty("tag"));
        assert_eq!(parse("colour:red").unwrap_err(), SelectorParseError::UnknownKind("colour".into()));
        assert_eq!(parse("product-42").unwrap_err(), SelectorParseError::MissingKind("product-42".into()));
    }

    #[test]
    fn set_keeps_call_order() {
        let set = SelectorSet::new()
            .tags(&["t1", "t2"])
            .unwrap()
            .urls(&["https://a/x"])
            .unwrap()
            .everything(true)
            .hosts::<&str>(&[])
            .unwrap();
        let shown: Vec<String> = set.build().iter().map(display).collect();
        assert_eq!(shown, ["tag:t1", "tag:t2", "url:https://a/x", "everything"]);
    }

    #[test]
    fn set_reports_first_bad_value_and_empty_set() {
        assert!(SelectorSet::new().is_empty());
        assert!(!SelectorSet::new().everything(true).is_empty());
        assert!(SelectorSet::new().everything(false).is_empty());
        assert_eq!(SelectorSet::new().hosts(&["ok", ""]).unwrap_err(), SelectorParseError::Empty("host"));
    }
}
