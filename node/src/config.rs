//! Node configuration: a TOML file, then `PURGECAST_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use purgecast_core::Config as ProtocolConfig;
use serde::{Deserialize, Serialize};

pub use crate::edge::EdgeConfig;
pub use crate::sink::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(transparent)]
    Protocol(#[from] purgecast_core::ConfigError),
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
    /// Operator tokens the APIs accept, with every permission in every
    /// zone; with no tenants file and none of these, the API is open.
    pub api_tokens: Vec<String>,
    /// Zones and scoped tokens (docs/tenants.md); re-read on change and on
    /// SIGHUP. Unset: one default zone covering every host.
    pub tenants_file: Option<PathBuf>,
    /// Purge requests a second this node takes for the default zone (no
    /// tenants file), and the bucket's depth; a tenants file's zones set
    /// their own.
    pub default_zone_rate: u32,
    pub default_zone_burst: u32,
    /// Frames queued for a peer at once go in one QUIC stream (see
    /// `transport/batch.rs`). Nodes of builds before batches cannot read
    /// them: false while such nodes remain in the cluster.
    pub batch_peer_frames: bool,
    /// TLS for the gRPC API (unset: plain HTTP/2).
    pub api_tls: ServerTls,
    /// The Cloudflare- and Fastly-shaped HTTP purge APIs (docs/http-api.md).
    pub http_api: HttpApiConfig,
    /// The protocol's parameters: core's own `Config`, durations as
    /// human strings ("500ms", "24h").
    pub protocol: ProtocolConfig,
    /// The HTTP cache in front of origins (off unless `edge.listen` is set).
    pub edge: EdgeConfig,
    /// External caches every purge is applied to besides the store
    /// (`[[sink]]` sections).
    pub sink: Vec<SinkConfig>,
    /// Test-only: JSON file of per-destination delay/loss for the QUIC socket.
    pub wan_emulation: Option<PathBuf>,
    /// "text" or "json".
    pub log_format: String,
}

/// A server certificate chain and key (PEM) for a client-facing listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ServerTls {
    fn validate(&self, key: &'static str) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid { key, reason: "cert and key go together".into() });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpApiConfig {
    /// Off when unset.
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
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
            tenants_file: None,
            default_zone_rate: crate::tenants::DEFAULT_RATE,
            default_zone_burst: crate::tenants::DEFAULT_BURST,
            batch_peer_frames: true,
            api_tls: ServerTls::default(),
            http_api: HttpApiConfig::default(),
            protocol: ProtocolConfig::default(),
            edge: EdgeConfig::default(),
            sink: Vec::new(),
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
        if self.default_zone_rate == 0 {
            return bad("default_zone_rate", "must be more than 0");
        }
        if self.default_zone_burst == 0 {
            return bad("default_zone_burst", "must be more than 0");
        }
        self.edge.validate()?;
        self.api_tls.validate("api_tls")?;
        let http_tls = ServerTls { cert: self.http_api.tls_cert.clone(), key: self.http_api.tls_key.clone() };
        http_tls.validate("http_api.tls_cert")?;
        crate::sink::validate_all(&self.sink)?;
        Ok(self.protocol.validate()?)
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
        assert!(toml::from_str::<NodeConfig>("[protocol]\nstrategy = \"flood\"").is_err());
        assert!(toml::from_str::<NodeConfig>("[protocol]\nae_interval = \"500\"").is_err(), "a unit is required");
        let c: NodeConfig = toml::from_str("[protocol]\nstrategy = \"gossip\"\nretention = \"2h\"").unwrap();
        assert_eq!(c.protocol.strategy, purgecast_core::Strategy::Gossip);
        assert_eq!(c.protocol.retention, std::time::Duration::from_secs(7200));
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "tls.ca", .. })));
        let mut c = c;
        c.tls = TlsConfig { ca: "ca".into(), cert: "c".into(), key: "k".into() };
        c.protocol.ae_interval = std::time::Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::Protocol(e)) if e.key == "ae_interval"));
    }
}
