//! Zones: a tenant's host names (exact, or `*.suffix` wildcards) and its
//! purge rate limit. Every host belongs to at most one zone.

use std::collections::HashMap;

/// Cloudflare's Enterprise shape: 50 purge requests a second, bursts of 500.
pub const DEFAULT_RATE: u32 = 50;
pub const DEFAULT_BURST: u32 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub id: String,
    /// As written in the file (lower case), for messages.
    pub hosts: Vec<String>,
    /// Purge requests per second, refilled continuously.
    pub rate: u32,
    /// Requests the bucket holds.
    pub burst: u32,
}

/// Host -> zone, for every zone of one tenants file.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: HashMap<String, Zone>,
    exact: HashMap<String, String>,
    /// `.example.com` -> zone, for `*.example.com`.
    wildcard: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {0:?} is defined twice")]
    Duplicate(String),
    #[error("host {host:?} is in zones {first:?} and {second:?}")]
    Overlap { host: String, first: String, second: String },
    #[error("zone {zone:?}: host {host:?} is not a host name or *.suffix")]
    BadHost { zone: String, host: String },
    #[error("zone {0:?} has no hosts")]
    NoHosts(String),
    #[error("zone {zone:?}: rate and burst must be at least 1")]
    BadLimit { zone: String },
}

/// The host name without a port.
fn name_of(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl Zones {
    pub fn new(list: Vec<Zone>) -> Result<Self, ZoneError> {
        let mut z = Zones::default();
        for zone in list {
            if zone.hosts.is_empty() {
                return Err(ZoneError::NoHosts(zone.id));
            }
            if zone.rate == 0 || zone.burst == 0 {
                return Err(ZoneError::BadLimit { zone: zone.id });
            }
            for host in &zone.hosts {
                let (map, key) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut z.wildcard, format!(".{suffix}")),
                    None => (&mut z.exact, host.clone()),
                };
                let name = key.trim_start_matches('.');
                if purgecast_core::normalize_host(name).ok().as_deref() != Some(name) || name.contains(':') {
                    return Err(ZoneError::BadHost { zone: zone.id.clone(), host: host.clone() });
                }
                if let Some(first) = map.insert(key, zone.id.clone()) {
                    return Err(ZoneError::Overlap { host: host.clone(), first, second: zone.id.clone() });
                }
            }
            if let Some(old) = z.zones.insert(zone.id.clone(), zone) {
                return Err(ZoneError::Duplicate(old.id));
            }
        }
        Ok(z)
    }

    pub fn get(&self, id: &str) -> Option<&Zone> {
        self.zones.get(id)
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// The zone of a (normalised) host: an exact name first, then the
    /// longest matching wildcard.
    pub fn zone_of(&self, host: &str) -> Option<&str> {
        let name = name_of(host);
        if let Some(z) = self.exact.get(name) {
            return Some(z);
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if let Some(z) = self.wildcard.get(suffix) {
                return Some(z);
            }
            rest = &rest[dot + 1..];
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(id: &str, hosts: &[&str]) -> Zone {
        Zone { id: id.into(), hosts: hosts.iter().map(|h| h.to_string()).collect(), rate: 1, burst: 1 }
    }

    #[test]
    fn hosts_map_to_their_zone_exact_names_before_wildcards() {
        let z = Zones::new(vec![
            zone("shop", &["shop.example", "*.shop.example"]),
            zone("static", &["static.shop.example"]),
            zone("deep", &["*.eu.shop.example"]),
        ])
        .unwrap();
        assert_eq!(z.zone_of("shop.example"), Some("shop"));
        assert_eq!(z.zone_of("shop.example:8080"), Some("shop"));
        assert_eq!(z.zone_of("www.shop.example"), Some("shop"));
        assert_eq!(z.zone_of("static.shop.example"), Some("static"));
        assert_eq!(z.zone_of("a.eu.shop.example"), Some("deep"));
        assert_eq!(z.zone_of("eu.shop.example"), Some("shop"));
        assert_eq!(z.zone_of("example"), None);
        assert_eq!(z.zone_of("evilshop.example"), None);
    }

    #[test]
    fn a_host_in_two_zones_or_a_bad_host_is_refused() {
        let e = Zones::new(vec![zone("a", &["x.example"]), zone("b", &["x.example"])]).unwrap_err();
        assert!(matches!(e, ZoneError::Overlap { .. }), "{e}");
        let e = Zones::new(vec![zone("a", &["not a host"])]).unwrap_err();
        assert!(matches!(e, ZoneError::BadHost { .. }), "{e}");
        let e = Zones::new(vec![zone("a", &["UPPER.example"])]).unwrap_err();
        assert!(matches!(e, ZoneError::BadHost { .. }), "{e}");
        let e = Zones::new(vec![zone("a", &["x.example"]), zone("a", &["y.example"])]).unwrap_err();
        assert_eq!(e, ZoneError::Duplicate("a".into()));
    }
}
