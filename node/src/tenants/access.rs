//! Who may purge what: a presented token becomes an [`Identity`], and a
//! purge request becomes a purge confined to one zone, or a [`Refusal`].

use std::time::Duration;

use purgecast_core::Selector;

use super::tokens::{AuthError, Permission, ZoneScope};
use super::Snapshot;

/// Most tags, hosts or prefixes in one purge request (Cloudflare's limit).
pub const MAX_NAMED: usize = 100;
/// Most URLs in one purge request (Cloudflare Enterprise's limit).
pub const MAX_URLS: usize = 500;

/// The zone id clients name when a node has no tenants file.
pub const DEFAULT_ZONE: &str = "default";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Token id for logs and the audit log: `-` when the API is open,
    /// `config` for a token from the node's `api_tokens`.
    pub token_id: String,
    pub zones: ZoneScope,
    pub admin: bool,
    permissions: Vec<Permission>,
}

impl Identity {
    /// Everything allowed: an open API or an operator's `api_tokens`.
    pub fn operator(token_id: &str) -> Self {
        Identity { token_id: token_id.into(), zones: ZoneScope::All, admin: true, permissions: Vec::new() }
    }

    pub fn token(t: &super::tokens::Token) -> Self {
        Identity {
            token_id: t.id.clone(),
            zones: t.zones.clone(),
            admin: t.allows(Permission::Admin),
            permissions: t.permissions.iter().copied().collect(),
        }
    }

    pub fn allows(&self, p: Permission) -> bool {
        self.admin || self.permissions.contains(&p)
    }

    pub fn reaches(&self, zone: &str) -> bool {
        match &self.zones {
            ZoneScope::All => true,
            ZoneScope::Only(z) => z.contains(zone),
        }
    }

    fn only_zone(&self) -> Option<&str> {
        match &self.zones {
            ZoneScope::Only(z) if z.len() == 1 => z.iter().next().map(String::as_str),
            _ => None,
        }
    }
}

/// Why a request was not accepted; each maps to a gRPC code and an HTTP
/// status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unknown zone {0:?}")]
    UnknownZone(String),
    #[error("purge rate limit of zone {zone:?} reached; retry in {:.1} s", retry_after.as_secs_f64())]
    Limited { zone: String, retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// `Retry-After` in whole seconds for a rate-limited request: rounded
    /// up, so a client that waits that long finds a token in the bucket,
    /// and at least 1, because 0 invites a busy loop.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Limited { retry_after, .. } => {
                Some((retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1))
            }
            _ => None,
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(e) => e.reason(),
            Refusal::Denied(_) => "denied",
            Refusal::Invalid(_) => "invalid",
            Refusal::UnknownZone(_) => "unknown_zone",
            Refusal::Limited { .. } => "rate_limited",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

/// The host a selector names, if any.
fn host_of(s: &Selector) -> Option<&str> {
    match s {
        Selector::Url(u) => {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            Some(&rest[..rest.find(['/', '?']).unwrap_or(rest.len())])
        }
        Selector::Host(h) => Some(h),
        Selector::Prefix { host, .. } => Some(host),
        Selector::Tag(_) | Selector::Everything => None,
    }
}

/// Per-request list limits: `max_named` tags, hosts and prefixes (usually
/// [`MAX_NAMED`]) and [`MAX_URLS`] URLs.
pub fn check_counts(selectors: &[Selector], max_named: usize) -> Result<(), Refusal> {
    let urls = selectors.iter().filter(|s| matches!(s, Selector::Url(_))).count();
    let named = selectors.iter().filter(|s| !matches!(s, Selector::Url(_) | Selector::Everything)).count();
    if selectors.is_empty() {
        return Err(Refusal::Invalid("a purge needs at least one selector".into()));
    }
    if urls > MAX_URLS {
        return Err(Refusal::Invalid(format!("too many URLs: {urls} (at most {MAX_URLS} in one request)")));
    }
    if named > max_named {
        return Err(Refusal::Invalid(format!(
            "too many tags, hosts and prefixes: {named} (at most {max_named} in one request)"
        )));
    }
    Ok(())
}

impl Snapshot {
    /// The zone a purge is confined to, once `who` may send it there.
    /// `zone` is what the client named (a path segment or a field), if
    /// anything. Returns the zone id the purge carries: empty where the
    /// node has no zones, or for an operator's purge of the whole cluster.
    pub fn authorize_purge(
        &self,
        who: &Identity,
        zone: Option<&str>,
        selectors: &[Selector],
        max_named: usize,
    ) -> Result<String, Refusal> {
        check_counts(selectors, max_named)?;
        let everything = selectors.contains(&Selector::Everything);
        let needed = if everything { Permission::PurgeEverything } else { Permission::Purge };
        let zone = zone.filter(|z| !z.is_empty());
        let Some(tenancy) = &self.tenancy else {
            if let Some(z) = zone.filter(|z| *z != DEFAULT_ZONE) {
                return Err(Refusal::UnknownZone(z.to_string()));
            }
            if !who.allows(needed) {
                return Err(Refusal::Denied(format!(
                    "token {} lacks the {} permission",
                    who.token_id,
                    needed.as_str()
                )));
            }
            return Ok(String::new());
        };
        if let Some(z) = zone {
            if tenancy.zones.get(z).is_none() {
                return Err(Refusal::UnknownZone(z.to_string()));
            }
        }
        // Every host a selector names fixes the zone; they must agree.
        let mut found: Option<&str> = zone;
        for s in selectors {
            let Some(host) = host_of(s) else { continue };
            let Some(z) = tenancy.zones.zone_of(host) else {
                return Err(Refusal::Denied(format!("host {host:?} is in no zone served here")));
            };
            match found {
                Some(f) if f != z => {
                    return Err(Refusal::Denied(format!(
                        "host {host:?} is in zone {z:?}, not {f:?}: one purge reaches one zone"
                    )))
                }
                _ => found = Some(z),
            }
        }
        let zone = match found.or_else(|| who.only_zone()) {
            Some(z) => z,
            None if everything && who.admin => return Ok(String::new()),
            None => {
                return Err(Refusal::Invalid("name the zone of this purge (tags and everything are per zone)".into()))
            }
        };
        if !who.reaches(zone) {
            return Err(Refusal::Denied(format!("token {} may not purge zone {zone:?}", who.token_id)));
        }
        if !who.allows(needed) {
            return Err(Refusal::Denied(format!("token {} lacks the {} permission", who.token_id, needed.as_str())));
        }
        Ok(zone.to_string())
    }

    /// The zone of a host for the edge and the index: `Ok("")` without
    /// zones, `Err` for a host of no zone.
    pub fn zone_of_host(&self, host: &str) -> Result<String, Refusal> {
        match &self.tenancy {
            None => Ok(String::new()),
            Some(t) => t
                .zones
                .zone_of(host)
                .map(str::to_string)
                .ok_or_else(|| Refusal::Denied(format!("host {host:?} is in no zone served here"))),
        }
    }

    /// Checks `who` may use `p` on `zone` (a zone id from
    /// [`Snapshot::zone_of_host`]).
    pub fn authorize_zone(&self, who: &Identity, zone: &str, p: Permission) -> Result<(), Refusal> {
        if self.tenancy.is_some() && !who.reaches(zone) {
            return Err(Refusal::Denied(format!("token {} may not use zone {zone:?}", who.token_id)));
        }
        if !who.allows(p) {
            return Err(Refusal::Denied(format!("token {} lacks the {} permission", who.token_id, p.as_str())));
        }
        Ok(())
    }

    /// The zone id a client names, as purges carry it.
    pub fn resolve_zone(&self, named: &str) -> Result<String, Refusal> {
        match &self.tenancy {
            None if named.is_empty() || named == DEFAULT_ZONE => Ok(String::new()),
            Some(t) if t.zones.get(named).is_some() => Ok(named.to_string()),
            _ => Err(Refusal::UnknownZone(named.to_string())),
        }
    }

    /// Rate and burst of a zone's bucket.
    pub fn limit_of(&self, zone: &str) -> (u32, u32) {
        self.tenancy.as_ref().and_then(|t| t.zones.get(zone)).map_or(self.default_limit, |z| (z.rate, z.burst))
    }
}
