//! Test-only WAN emulation for the QUIC socket: per-destination delay, jitter,
//! loss and partitions, changeable while the node runs.
//!
//! Only outgoing datagrams are affected, so a symmetric link needs the rule on
//! both ends (a shared JSON file, reloaded on change, does that). Rules are
//! tried in order; the first whose `dest` matches wins, else `default`.
//!
//! ```json
//! { "seed": 7,
//!   "default": { "delay_ms": 20 },
//!   "rules": [ { "dest": "10.0.0.5:7000", "link": { "blocked": true } },
//!              { "dest": "node-c",        "link": { "delay_ms": 80, "jitter_ms": 10, "loss": 0.01 } } ] }
//! ```

// A test tool: the node drives it from a file; the rest of its API serves
// the unit tests, so outside them parts of it are unused.
#![cfg_attr(not(test), allow(dead_code))]

mod socket;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use socket::emulated_socket;

/// Largest config file read, so a wrong path cannot exhaust memory.
const MAX_FILE: u64 = 1 << 20;
/// Longest delay accepted; delayed datagrams are held in memory meanwhile.
const MAX_DELAY: Duration = Duration::from_secs(60);
const RELOAD_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WanError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("invalid WAN emulation config: {0}")]
    Invalid(String),
}

/// What happens to datagrams sent over one link.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSpec {
    #[serde(rename = "delay_ms", with = "millis")]
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram.
    #[serde(rename = "jitter_ms", with = "millis")]
    pub jitter: Duration,
    /// Probability in `0..=1` that a datagram is dropped.
    pub loss: f64,
    /// Drop everything: a partition.
    pub blocked: bool,
}

impl LinkSpec {
    pub fn delayed(delay: Duration) -> LinkSpec {
        LinkSpec { delay, ..LinkSpec::default() }
    }

    pub fn blocked() -> LinkSpec {
        LinkSpec { blocked: true, ..LinkSpec::default() }
    }

    fn is_passthrough(&self) -> bool {
        !self.blocked && self.loss <= 0.0 && self.delay.is_zero() && self.jitter.is_zero()
    }

    fn validate(&self) -> Result<(), WanError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(WanError::Invalid(format!("loss {} is not within 0..=1", self.loss)));
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return Err(WanError::Invalid(format!("delay + jitter exceeds {MAX_DELAY:?}")));
        }
        Ok(())
    }
}

/// A rule's destination: `ip:port`, `ip`, `name:port` or `name`. Names are
/// resolved by [`WanConfig::resolve`] (Docker DNS names in compose tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Dest {
    Addr(SocketAddr),
    Ip(IpAddr),
    Name { host: String, port: Option<u16> },
}

impl TryFrom<String> for Dest {
    type Error = String;
    fn try_from(s: String) -> Result<Dest, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Dest::Addr(a));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Dest::Ip(ip));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?)),
            None => (s.as_str(), None),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(format!("bad destination {s:?}"));
        }
        Ok(Dest::Name { host: host.to_string(), port })
    }
}

impl From<Dest> for String {
    fn from(d: Dest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Addr(a) => write!(f, "{a}"),
            Dest::Ip(ip) => write!(f, "{ip}"),
            Dest::Name { host, port: Some(p) } => write!(f, "{host}:{p}"),
            Dest::Name { host, port: None } => write!(f, "{host}"),
        }
    }
}

impl From<SocketAddr> for Dest {
    fn from(a: SocketAddr) -> Dest {
        Dest::Addr(a)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanRule {
    pub dest: Dest,
    pub link: LinkSpec,
    /// Addresses `dest` resolved to, when it is a name.
    #[serde(skip)]
    resolved: Vec<IpAddr>,
}

impl WanRule {
    pub fn new(dest: impl Into<Dest>, link: LinkSpec) -> WanRule {
        WanRule { dest: dest.into(), link, resolved: Vec::new() }
    }

    fn matches(&self, to: SocketAddr) -> bool {
        let ip = to.ip().to_canonical();
        match &self.dest {
            Dest::Addr(a) => a.ip().to_canonical() == ip && a.port() == to.port(),
            Dest::Ip(i) => i.to_canonical() == ip,
            Dest::Name { port, .. } => port.is_none_or(|p| p == to.port()) && self.resolved.contains(&ip),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WanConfig {
    pub rules: Vec<WanRule>,
    pub default: LinkSpec,
    /// Seeds the loss and jitter RNG when a socket is created.
    pub seed: u64,
}

impl WanConfig {
    pub fn from_json(text: &str) -> Result<WanConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads and validates a config; names in rules stay unresolved (see [`WanConfig::load`]).
    pub fn from_json_file(path: &Path) -> Result<WanConfig, WanError> {
        let io = |source| WanError::Io { path: path.to_path_buf(), source };
        if std::fs::metadata(path).map_err(io)?.len() > MAX_FILE {
            return Err(WanError::TooLarge { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let cfg = WanConfig::from_json(&text).map_err(|source| WanError::Json { path: path.to_path_buf(), source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`WanConfig::from_json_file`] plus name resolution.
    pub async fn load(path: &Path) -> Result<WanConfig, WanError> {
        let mut cfg = WanConfig::from_json_file(path)?;
        cfg.resolve().await;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), WanError> {
        self.default.validate()?;
        self.rules.iter().try_for_each(|r| r.link.validate())
    }

    /// Resolves rules naming hosts. An unresolvable name matches nothing
    /// (logged): the emulation must not take a node down.
    pub async fn resolve(&mut self) {
        for rule in &mut self.rules {
            let Dest::Name { host, port } = &rule.dest else { continue };
            match tokio::net::lookup_host((host.as_str(), port.unwrap_or(0))).await {
                Ok(addrs) => rule.resolved = addrs.map(|a| a.ip().to_canonical()).collect(),
                Err(e) => {
                    tracing::warn!(dest = %rule.dest, error = %e, "WAN emulation: cannot resolve rule destination");
                    rule.resolved.clear();
                }
            }
        }
    }

    pub fn link_for(&self, to: SocketAddr) -> LinkSpec {
        self.rules.iter().find(|r| r.matches(to)).map_or(self.default, |r| r.link)
    }
}

/// Shared, runtime-mutable WAN emulation state: the live config plus counters.
#[derive(Debug, Clone, Default)]
pub struct WanHandle(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    config: RwLock<WanConfig>,
    dropped: AtomicU64,
    delayed: AtomicU64,
}

impl WanHandle {
    pub fn new(config: WanConfig) -> WanHandle {
        WanHandle(Arc::new(Shared { config: RwLock::new(config), ..Shared::default() }))
    }

    pub fn set(&self, config: WanConfig) {
        *self.0.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub fn update(&self, f: impl FnOnce(&mut WanConfig)) {
        f(&mut self.0.config.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Puts `link` in front of all rules for exactly `to`, replacing an
    /// earlier rule for the same address: cut or heal one link.
    pub fn set_link(&self, to: SocketAddr, link: LinkSpec) {
        self.update(|c| {
            c.rules.retain(|r| r.dest != Dest::Addr(to));
            c.rules.insert(0, WanRule::new(to, link));
        });
    }

    pub fn link_for(&self, to: SocketAddr) -> LinkSpec {
        self.0.config.read().unwrap_or_else(|e| e.into_inner()).link_for(to)
    }

    /// Datagrams dropped by loss, a blocked link or a full delay queue.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    pub fn delayed(&self) -> u64 {
        self.0.delayed.load(Ordering::Relaxed)
    }

    fn seed(&self) -> u64 {
        self.0.config.read().unwrap_or_else(|e| e.into_inner()).seed
    }

    fn count_dropped(&self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("purgecast_wan_dropped_total").increment(1);
    }

    fn count_delayed(&self) {
        self.0.delayed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("purgecast_wan_delayed_total").increment(1);
    }
}

/// Reloads `path` into `handle` whenever its modification time or size
/// changes after this call, polling every 200 ms. A bad file is logged and the previous
/// config kept. Stops once `handle` has no other holder (the socket is
/// gone), or when the returned task is aborted.
pub fn spawn_reloader(path: PathBuf, handle: WanHandle) -> tokio::task::JoinHandle<()> {
    // Taken now, not in the task: a change right after this call must count.
    let mut seen = stamp(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Arc::strong_count(&handle.0) > 1 {
            tick.tick().await;
            let now = stamp(&path);
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            match WanConfig::load(&path).await {
                Ok(cfg) => {
                    tracing::info!(path = %path.display(), rules = cfg.rules.len(), "WAN emulation config reloaded");
                    handle.set(cfg);
                }
                Err(e) => tracing::warn!(error = %e, "WAN emulation config not reloaded; keeping the previous one"),
            }
        }
    })
}

/// A `stat` is cheap enough to run on the runtime thread every 200 ms.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
