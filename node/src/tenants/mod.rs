//! Tenants: zones (a tenant's hosts), scoped tokens, per-zone rate limits,
//! and the check every purge passes before it is accepted, whatever API it
//! came through.
//!
//! - `file`: the tenants file (TOML), validated as a whole;
//! - `zones`: host -> zone;
//! - `tokens`: hashed tokens, their zones, permissions and expiry;
//! - `access`: identities, the purge check and its refusals;
//! - `limits`: one token bucket per zone.
//!
//! Without a tenants file a node has one default zone covering every host
//! (purges carry the empty zone) and its API is open unless `api_tokens`
//! is set. The file is re-read when it changes (polled) and on SIGHUP; a
//! bad file is refused with its reason in the log and the metrics, and the
//! last good one stays in force.

mod access;
mod file;
mod limits;
pub mod tokens;
mod zones;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

pub use access::{Identity, Refusal, DEFAULT_ZONE, MAX_NAMED, MAX_URLS};
pub use file::{parse_time, FileError, Tenancy};
pub use tokens::{AuthError, Permission, ZoneScope};
pub use zones::{DEFAULT_BURST, DEFAULT_RATE};

/// What one version of the tenants file (or its absence) says.
#[derive(Debug)]
pub struct Snapshot {
    /// None: no tenants file.
    pub tenancy: Option<Tenancy>,
    /// The node's `api_tokens`: operator tokens, all zones, every right.
    api_tokens: Vec<String>,
    /// Rate and burst of the default zone (no tenants file).
    default_limit: (u32, u32),
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot { tenancy: None, api_tokens: Vec::new(), default_limit: (DEFAULT_RATE, DEFAULT_BURST) }
    }
}

impl Snapshot {
    /// No token anywhere: every caller is an operator.
    pub fn is_open(&self) -> bool {
        self.api_tokens.is_empty() && self.tenancy.as_ref().is_none_or(|t| t.tokens.is_empty())
    }

    /// Who presents `token` (the bearer token, if any) at `now_secs`.
    pub fn authenticate(&self, token: Option<&str>, now_secs: u64) -> Result<Identity, AuthError> {
        if self.is_open() {
            return Ok(Identity::operator("-"));
        }
        let file_tokens = self.tenancy.as_ref().map(|t| &t.tokens).filter(|t| !t.is_empty());
        let presented = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if self.api_tokens.iter().any(|t| tokens::constant_time_eq(t.as_bytes(), presented.as_bytes())) {
            return Ok(Identity::operator("config"));
        }
        match file_tokens {
            Some(tokens) => tokens.authenticate(presented, now_secs).map(Identity::token),
            None => Err(AuthError::Invalid),
        }
    }
}

/// The node's tenants, shared by every API and the edge.
pub struct Tenants {
    current: RwLock<Arc<Snapshot>>,
    path: Option<PathBuf>,
    api_tokens: Vec<String>,
    default_limit: (u32, u32),
    limits: limits::Limits,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tenants {
    /// Loads `path` (if given); a bad file at start-up is an error: the
    /// node has no last good one to fall back on.
    /// `default_limit`: rate and burst of the default zone.
    pub fn load(
        path: Option<&Path>,
        api_tokens: Vec<String>,
        default_limit: (u32, u32),
    ) -> Result<Arc<Tenants>, FileError> {
        let tenancy = path.map(file::load).transpose()?;
        if let Some(t) = &tenancy {
            report(t);
            if t.tokens.is_empty() && api_tokens.is_empty() {
                tracing::warn!("tenants file has zones but no tokens: the API is open to anyone who reaches it");
            }
        }
        let snap = Snapshot { tenancy, api_tokens: api_tokens.clone(), default_limit };
        Ok(Arc::new(Tenants {
            current: RwLock::new(Arc::new(snap)),
            path: path.map(Path::to_path_buf),
            api_tokens,
            default_limit,
            limits: limits::Limits::default(),
        }))
    }

    /// Zones and tokens as they are now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file; keeps the current one if the new one is bad.
    pub fn reload(&self) -> Result<(), FileError> {
        let Some(path) = &self.path else { return Ok(()) };
        match file::load(path) {
            Ok(t) => {
                report(&t);
                self.limits.retain(|z| t.zones.get(z).is_some());
                let snap = Snapshot {
                    tenancy: Some(t),
                    api_tokens: self.api_tokens.clone(),
                    default_limit: self.default_limit,
                };
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
                metrics::counter!("purgecast_tenants_reloads_total", "result" => "ok").increment(1);
                metrics::gauge!("purgecast_tenants_file_valid").set(1.0);
                tracing::info!(path = %path.display(), "tenants file reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("purgecast_tenants_reloads_total", "result" => e.reason()).increment(1);
                metrics::gauge!("purgecast_tenants_file_valid").set(0.0);
                tracing::error!(error = %e, "tenants file REFUSED; the last good one stays in force");
                Err(e)
            }
        }
    }

    /// Takes one purge request from `zone`'s bucket.
    pub fn take(&self, snap: &Snapshot, zone: &str) -> Result<(), Refusal> {
        let (rate, burst) = snap.limit_of(zone);
        self.limits
            .take(zone, rate, burst)
            .map_err(|retry_after| Refusal::Limited { zone: zone.to_string(), retry_after })
    }

    /// Counts a refusal by zone and reason.
    pub fn refused(&self, zone: &str, r: &Refusal) {
        let zone = if zone.is_empty() { DEFAULT_ZONE.to_string() } else { zone.to_string() };
        metrics::counter!("purgecast_api_refusals_total", "zone" => zone, "reason" => r.reason()).increment(1);
    }

    /// Re-reads the file when it changes (checked every `every`) or on
    /// SIGHUP, until shutdown.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let Some(path) = self.path.clone() else { return };
        metrics::gauge!("purgecast_tenants_file_valid").set(1.0);
        let me = self.clone();
        tokio::spawn(async move {
            let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
            let mut last = stamp(&path);
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = hangup => { let _ = me.reload(); last = stamp(&path); }
                    _ = tokio::time::sleep(every) => {
                        let now = stamp(&path);
                        if now != last {
                            last = now;
                            let _ = me.reload();
                        }
                    }
                }
            }
        });
    }
}

fn report(t: &Tenancy) {
    metrics::gauge!("purgecast_tenants_zones").set(t.zones.len() as f64);
    metrics::gauge!("purgecast_tenants_tokens").set(t.tokens.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_zone_takes_the_configured_rate_and_burst() {
        let tenants = Tenants::load(None, Vec::new(), (2, 3)).unwrap();
        let snap = tenants.snapshot();
        assert_eq!(snap.limit_of(""), (2, 3));
        for _ in 0..3 {
            assert!(tenants.take(&snap, "").is_ok(), "the bucket is 3 deep");
        }
        assert!(matches!(tenants.take(&snap, ""), Err(Refusal::Limited { .. })));
        assert_eq!(Snapshot::default().limit_of(""), (DEFAULT_RATE, DEFAULT_BURST));
    }
}
