//! rustls configs for mutual TLS between nodes, from PEM files made by
//! `purgecast certs` (see `tools::certs`) or any other CA.
//!
//! Every node holds a certificate signed by the cluster CA, valid for both
//! server and client auth, so one identity serves both ends of a QUIC
//! connection and a peer without a CA-signed cert fails the handshake.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// ALPN protocol id; a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"purgecast/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what}: invalid PEM: {source}")]
    Pem { what: String, source: rustls::pki_types::pem::Error },
    #[error("{0}: no certificate found")]
    NoCertificate(String),
    #[error("invalid node name {0:?} (allowed: letters, digits, '.', '-', '_'; not starting with '.')")]
    BadNodeName(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A node's certificate chain, its private key and the CA it trusts.
pub struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key(), roots: self.roots.clone() }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("Identity").field("name", &self.name()).field("roots", &self.roots.len()).finish()
    }
}

impl Identity {
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: parse_certs("certificate", cert_pem.as_bytes())?,
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|source| TlsError::Pem { what: "private key".into(), source })?,
            roots: parse_certs("CA certificate", ca_pem.as_bytes())?,
        })
    }

    /// The common name of this node's own certificate.
    pub fn name(&self) -> Option<String> {
        self.chain.first().and_then(|c| cert_names(c)).and_then(|n| n.common_name)
    }
}

/// Names found in a certificate: its subject CN and DNS/IP SANs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertNames {
    pub common_name: Option<String>,
    pub sans: Vec<String>,
}

/// Parses the names out of a DER certificate; `None` if it does not parse.
pub fn cert_names(der: &[u8]) -> Option<CertNames> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertNames { common_name, sans })
}

pub fn load_identity(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Identity, TlsError> {
    let with_path = |e: TlsError, p: &Path| match e {
        TlsError::Pem { source, .. } => TlsError::Pem { what: p.display().to_string(), source },
        TlsError::NoCertificate(_) => TlsError::NoCertificate(p.display().to_string()),
        other => other,
    };
    let cert = read_file(cert_path)?;
    let key = read_file(key_path)?;
    let ca = read_file(ca_path)?;
    Ok(Identity {
        chain: parse_certs("", cert.as_bytes()).map_err(|e| with_path(e, cert_path))?,
        key: PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|source| TlsError::Pem { what: key_path.display().to_string(), source })?,
        roots: parse_certs("", ca.as_bytes()).map_err(|e| with_path(e, ca_path))?,
    })
}

/// Server side: presents the node cert and demands a client cert signed by the CA.
pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(id)?), provider.clone()).build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(cfg)?)))
}

/// Client side: presents the node cert and verifies the server against the CA.
pub fn client_config(id: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(id)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(cfg)?)))
}

/// A plain TLS server (no client certificates) for a client-facing
/// listener: the HTTP purge API. `alpn` as the listener speaks it.
pub fn https_server_config(
    cert_path: &Path,
    key_path: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = parse_certs(&cert_path.display().to_string(), read_file(cert_path)?.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(read_file(key_path)?.as_bytes())
        .map_err(|source| TlsError::Pem { what: key_path.display().to_string(), source })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Explicit provider: other crates in the process may enable a different
/// rustls default, and QUIC must not depend on which one wins.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(id: &Identity) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in &id.roots {
        store.add(c.clone())?;
    }
    Ok(store)
}

fn parse_certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what: what.to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what.to_string()));
    }
    Ok(certs)
}

pub(crate) fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::certs::*;

    #[test]
    fn node_cert_carries_name_sans_and_both_usages() {
        let ca = generate_ca("test-ca").unwrap();
        let node = issue_node_cert(&ca, "node-a", &dev_sans("node-a")).unwrap();
        let id = Identity::from_pem(&node.cert_pem, &node.key_pem, &ca.cert_pem).unwrap();
        assert_eq!(id.name().as_deref(), Some("node-a"));
        let names = cert_names(&id.chain[0]).unwrap();
        assert_eq!(names.sans, vec!["localhost", "127.0.0.1", "node-a"]);
        let (_, cert) = x509_parser::parse_x509_certificate(&id.chain[0]).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!cert.is_ca());
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&id.roots[0]).unwrap();
        assert!(ca_cert.is_ca());
        assert_eq!(cert.issuer(), ca_cert.subject());
        server_config(&id).unwrap();
        client_config(&id).unwrap();
    }

    #[test]
    fn node_cert_verifies_against_its_ca_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let ca = generate_ca("ca-1").unwrap();
        let other = generate_ca("ca-2").unwrap();
        let node = issue_node_cert(&ca, "node-a", &dev_sans("node-a")).unwrap();
        let id = Identity::from_pem(&node.cert_pem, &node.key_pem, &ca.cert_pem).unwrap();
        let verify = |ca_pem: &str, name: &str| {
            let trust = Identity::from_pem(&node.cert_pem, &node.key_pem, ca_pem).unwrap();
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(&trust).unwrap()),
                provider(),
            )
            .build()
            .unwrap();
            let name = ServerName::try_from(name.to_string()).unwrap();
            v.verify_server_cert(&id.chain[0], &[], &name, &[], UnixTime::now()).is_ok()
        };
        assert!(verify(&ca.cert_pem, "localhost"));
        assert!(verify(&ca.cert_pem, "127.0.0.1"));
        assert!(verify(&ca.cert_pem, "node-a"));
        assert!(!verify(&ca.cert_pem, "node-b"));
        assert!(!verify(&other.cert_pem, "localhost"));
    }

    #[test]
    fn certs_round_trip_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("ca").unwrap();
        let a = issue_node_cert(&ca, "a", &dev_sans("a")).unwrap();
        write_certs(dir.path(), &ca, &[("a".to_string(), a.clone())]).unwrap();
        assert_eq!(read_ca(dir.path()).unwrap(), ca);
        let p = cert_paths(dir.path(), "a").unwrap();
        assert_eq!(p.key, dir.path().join("a-key.pem"));
        let id = load_identity(&p.cert, &p.key, &p.ca).unwrap();
        assert_eq!(id.name().as_deref(), Some("a"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        // A CA reloaded from disk still issues certs that chain to it.
        let b = issue_node_cert(&read_ca(dir.path()).unwrap(), "b", &dev_sans("b")).unwrap();
        let b_der = parse_certs("b", b.cert_pem.as_bytes()).unwrap();
        let (_, b_cert) = x509_parser::parse_x509_certificate(&b_der[0]).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&id.roots[0]).unwrap();
        assert_eq!(b_cert.issuer(), ca_cert.subject());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(cert_paths(dir.path(), "../x"), Err(TlsError::BadNodeName(_))));
        assert!(matches!(cert_paths(dir.path(), ""), Err(TlsError::BadNodeName(_))));
        let missing = dir.path().join("nope.pem");
        assert!(matches!(load_identity(&missing, &missing, &missing), Err(TlsError::Io { .. })));
        let ca = generate_ca("ca").unwrap();
        assert!(matches!(Identity::from_pem("garbage", &ca.key_pem, &ca.cert_pem), Err(TlsError::NoCertificate(_))));
        assert!(Identity::from_pem(&ca.cert_pem, "garbage", &ca.cert_pem).is_err());
        let bad_ca = CaBundle { cert_pem: ca.cert_pem.clone(), key_pem: "nope".into() };
        assert!(matches!(issue_node_cert(&bad_ca, "a", &[]), Err(TlsError::Generate(_))));
    }
}
