//! The tenants file: zones and tokens, as TOML, validated as a whole (one
//! bad line rejects the file, and the node keeps the last good one).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::tokens::{self, Permission, Token, Tokens, ZoneScope};
use super::zones::{Zone, ZoneError, Zones, DEFAULT_BURST, DEFAULT_RATE};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{path}: {source}")]
    Zone { path: String, source: ZoneError },
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

impl FileError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FileError::Read { .. } => "read",
            FileError::Parse { .. } => "parse",
            FileError::Zone { .. } | FileError::Invalid { .. } => "invalid",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    zone: Vec<RawZone>,
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    id: String,
    hosts: Vec<String>,
    rate: Option<u32>,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    id: String,
    hash: String,
    zones: Vec<String>,
    permissions: Vec<Permission>,
    expires: Option<String>,
}

/// Zones and tokens of one file.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    pub zones: Zones,
    pub tokens: Tokens,
}

pub fn load(path: &Path) -> Result<Tenancy, FileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: p.clone(), source })?;
    parse(&p, &text)
}

pub fn parse(path: &str, text: &str) -> Result<Tenancy, FileError> {
    let invalid = |what: String| FileError::Invalid { path: path.to_string(), what };
    let raw: RawFile = toml::from_str(text).map_err(|source| FileError::Parse { path: path.to_string(), source })?;
    let mut zones = Vec::new();
    for z in raw.zone {
        purgecast_core::validate_zone(&z.id).map_err(|e| invalid(e.to_string()))?;
        if z.id.is_empty() {
            return Err(invalid("a zone needs an id".into()));
        }
        zones.push(Zone {
            id: z.id,
            hosts: z.hosts,
            rate: z.rate.unwrap_or(DEFAULT_RATE),
            burst: z.burst.unwrap_or(DEFAULT_BURST),
        });
    }
    let zones = Zones::new(zones).map_err(|source| FileError::Zone { path: path.to_string(), source })?;
    let mut list = Vec::new();
    let mut ids = BTreeSet::new();
    for t in raw.token {
        if !tokens::valid_id(&t.id) {
            return Err(invalid(format!("token id {:?} must be 1 to 64 of a-z, 0-9, '-', '_'", t.id)));
        }
        if !ids.insert(t.id.clone()) {
            return Err(invalid(format!("token {:?} is defined twice", t.id)));
        }
        let hash = tokens::parse_hash(&t.hash)
            .ok_or_else(|| invalid(format!("token {:?}: hash must be sha256:<64 hex digits>", t.id)))?;
        let scope = if t.zones.iter().any(|z| z == "*") {
            ZoneScope::All
        } else {
            for z in &t.zones {
                if zones.get(z).is_none() {
                    return Err(invalid(format!("token {:?}: unknown zone {z:?}", t.id)));
                }
            }
            ZoneScope::Only(t.zones.iter().cloned().collect())
        };
        if t.permissions.is_empty() {
            return Err(invalid(format!("token {:?} has no permissions", t.id)));
        }
        let expires_at = match &t.expires {
            None => None,
            Some(s) => Some(parse_time(s).ok_or_else(|| {
                invalid(format!("token {:?}: expires {s:?} is not an RFC 3339 time (2027-01-31T00:00:00Z)", t.id))
            })?),
        };
        list.push(Token { id: t.id, hash, zones: scope, permissions: t.permissions.into_iter().collect(), expires_at });
    }
    Ok(Tenancy { zones, tokens: Tokens::new(list) })
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[zone]]
id = "shop"
hosts = ["shop.example", "*.shop.example"]
rate = 5
burst = 10

[[zone]]
id = "blog"
hosts = ["blog.example"]

[[token]]
id = "shop-ci"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
zones = ["shop"]
permissions = ["purge", "index:read"]
expires = "2027-01-31T00:00:00Z"

[[token]]
id = "ops"
hash = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
zones = ["*"]
permissions = ["admin"]
"#;

    #[test]
    fn a_good_file_loads_with_defaults_for_missing_limits() {
        let t = parse("t.toml", GOOD).unwrap();
        assert_eq!(t.zones.len(), 2);
        assert_eq!(t.zones.get("blog").map(|z| (z.rate, z.burst)), Some((DEFAULT_RATE, DEFAULT_BURST)));
        assert_eq!(t.zones.get("shop").map(|z| (z.rate, z.burst)), Some((5, 10)));
        assert_eq!(t.tokens.len(), 2);
    }

    #[test]
    fn every_kind_of_mistake_is_refused_with_a_reason() {
        let cases = [
            (GOOD.replace("zones = [\"shop\"]", "zones = [\"nope\"]"), "unknown zone"),
            (GOOD.replace("sha256:0000", "sha256:zz00"), "hash must be"),
            (GOOD.replace("2027-01-31T00:00:00Z", "tomorrow"), "RFC 3339"),
            (GOOD.replace("\"index:read\"", "\"index:delete\""), "unknown variant"),
            (GOOD.replace("id = \"ops\"", "id = \"shop-ci\""), "defined twice"),
            (GOOD.replace("id = \"blog\"", "id = \"Blog!\""), "zone id"),
            (GOOD.replace("hosts = [\"blog.example\"]", "hosts = [\"shop.example\"]"), "is in zones"),
            (GOOD.replace("rate = 5", "rate = 0"), "at least 1"),
            (GOOD.replace("permissions = [\"admin\"]", "permissions = []"), "no permissions"),
            (format!("{GOOD}\nsurprise = 1\n"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = parse("t.toml", &text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
