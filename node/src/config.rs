//! Node configuration: a TOML file, then `PURGECAST_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use purgecast_core::{Config as ProtocolConfig, Strategy};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique node name; its hash is the node id.
    pub name: String,
    /// QUIC address for peer traffic.
    pub listen_peer: SocketAddr,
    /// Address peers dial to reach this node (host:port; a DNS name works).
    /// Defaults to `listen_peer`.
    pub advertise_peer: Option<String>,
    /// gRPC API address.
    pub listen_api: SocketAddr,
    /// API address shown to other members and clients (host:port). Defaults
    /// to `listen_api`, or, when that binds every interface, to the host of
    /// `advertise_peer` with the API port.
    pub advertise_api: Option<String>,
    /// Prometheus metrics and health checks (HTTP).
    pub listen_metrics: SocketAddr,
    pub data_dir: PathBuf,
    /// Peer addresses to join through (host:port).
    pub seeds: Vec<String>,
    /// Point of presence and region of this node.
    pub pop: String,
    pub region: String,
    pub tls: TlsConfig,
    /// Bearer tokens accepted by the API; empty = no authentication.
    pub api_tokens: Vec<String>,
    pub protocol: ProtocolSection,
    /// Test-only: JSON file of per-destination delay/loss for the QUIC socket.
    pub wan_emulation: Option<PathBuf>,
    /// "text" or "json".
    pub log_format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolSection {
    /// "topology" or "gossip".
    pub strategy: String,
    /// 0 = ceil(ln n) + 2.
    pub fanout: usize,
    pub pop_entry: usize,
    pub pop_direct_max: usize,
    pub ae_interval_ms: u64,
    pub ae_peers: usize,
    pub retention_secs: u64,
    pub retention_max_purges: usize,
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub suspect_timeout_ms: u64,
}

impl Default for ProtocolSection {
    fn default() -> Self {
        let d = ProtocolConfig::default();
        ProtocolSection {
            strategy: "topology".into(),
            fanout: 0,
            pop_entry: d.pop_entry,
            pop_direct_max: d.pop_direct_max,
            ae_interval_ms: d.ae_interval.as_millis() as u64,
            ae_peers: d.ae_peers,
            retention_secs: d.retention.as_secs(),
            retention_max_purges: d.retention_max_purges,
            probe_interval_ms: d.probe_interval.as_millis() as u64,
            probe_timeout_ms: d.probe_timeout.as_millis() as u64,
            suspect_timeout_ms: d.suspect_timeout.as_millis() as u64,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node-0".into(),
            listen_peer: SocketAddr::from(([127, 0, 0, 1], 7200)),
            advertise_peer: None,
            listen_api: SocketAddr::from(([127, 0, 0, 1], 7100)),
            advertise_api: None,
            listen_metrics: SocketAddr::from(([127, 0, 0, 1], 7300)),
            data_dir: PathBuf::from("./data"),
            seeds: Vec::new(),
            pop: "local".into(),
            region: "local".into(),
            tls: TlsConfig::default(),
            api_tokens: Vec::new(),
            protocol: ProtocolSection::default(),
            wan_emulation: None,
            log_format: "text".into(),
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    pub fn advertise(&self) -> String {
        self.advertise_peer.clone().unwrap_or_else(|| self.listen_peer.to_string())
    }

    pub fn advertise_api(&self) -> String {
        if let Some(a) = &self.advertise_api {
            return a.clone();
        }
        if !self.listen_api.ip().is_unspecified() {
            return self.listen_api.to_string();
        }
        // "host:port" or "[v6]:port": keep the host as written.
        let peer = self.advertise();
        match peer.rsplit_once(':') {
            Some((host, _)) if !host.is_empty() => format!("{host}:{}", self.listen_api.port()),
            _ => self.listen_api.to_string(),
        }
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        if self.name.is_empty() || self.name.len() > 128 {
            return bad("name", "must be 1 to 128 characters");
        }
        if self.pop.is_empty() {
            return bad("pop", "must not be empty");
        }
        for (key, p) in [("tls.ca", &self.tls.ca), ("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if p.as_os_str().is_empty() {
                return bad(key, "is required (generate with `purgecast certs`)");
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format", "must be \"text\" or \"json\"");
        }
        self.protocol_config().map(|_| ())
    }

    pub fn protocol_config(&self) -> Result<ProtocolConfig, ConfigError> {
        let p = &self.protocol;
        let strategy = match p.strategy.as_str() {
            "topology" => Strategy::Topology,
            "gossip" => Strategy::Gossip,
            other => {
                return Err(ConfigError::Invalid {
                    key: "protocol.strategy",
                    reason: format!("{other:?}: expected \"topology\" or \"gossip\""),
                })
            }
        };
        if p.ae_interval_ms == 0 || p.probe_interval_ms == 0 {
            return Err(ConfigError::Invalid { key: "protocol", reason: "intervals must be > 0".into() });
        }
        Ok(ProtocolConfig {
            strategy,
            fanout: (p.fanout > 0).then_some(p.fanout),
            pop_entry: p.pop_entry.max(1),
            pop_direct_max: p.pop_direct_max,
            ae_interval: Duration::from_millis(p.ae_interval_ms),
            ae_peers: p.ae_peers.max(1),
            retention: Duration::from_secs(p.retention_secs),
            retention_max_purges: p.retention_max_purges.max(1),
            probe_interval: Duration::from_millis(p.probe_interval_ms),
            probe_timeout: Duration::from_millis(p.probe_timeout_ms),
            suspect_timeout: Duration::from_millis(p.suspect_timeout_ms),
            ..ProtocolConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let c = NodeConfig::default();
        let text = toml::to_string(&c).unwrap();
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn the_api_is_advertised_where_clients_can_reach_it() {
        let mut c = NodeConfig::default();
        assert_eq!(c.advertise_api(), "127.0.0.1:7100");
        c.listen_api = "0.0.0.0:7100".parse().unwrap();
        c.advertise_peer = Some("node-1:7200".into());
        assert_eq!(c.advertise_api(), "node-1:7100");
        c.advertise_peer = Some("[fd00::1]:7200".into());
        assert_eq!(c.advertise_api(), "[fd00::1]:7100");
        c.advertise_api = Some("api.node-1.example:443".into());
        assert_eq!(c.advertise_api(), "api.node-1.example:443");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<NodeConfig>("nmae = \"x\"").is_err());
        let mut c = NodeConfig::default();
        c.protocol.strategy = "flood".into();
        assert!(c.protocol_config().is_err());
        c.protocol.strategy = "gossip".into();
        assert_eq!(c.protocol_config().unwrap().strategy, Strategy::Gossip);
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "tls.ca", .. })));
    }
}
