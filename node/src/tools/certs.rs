//! Generating a cluster CA and node certificates (rcgen): an operator tool
//! (`purgecast certs`, `purgecast dev`), not part of a running node.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::tls::{read_file, TlsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// SANs for a development certificate: reachable as localhost and by name.
pub fn dev_sans(node_name: &str) -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), node_name.into()]
}

pub fn generate_ca(common_name: &str) -> Result<CaBundle, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
    let cert = params.self_signed(&key)?;
    Ok(CaBundle { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a certificate for `node_name` (its CN) valid for `sans`, each a DNS
/// name or an IP address.
pub fn issue_node_cert(ca: &CaBundle, node_name: &str, sans: &[String]) -> Result<NodeCert, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = dn(node_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Paths of one node's files in a certificate directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub fn cert_paths(dir: &Path, node_name: &str) -> Result<CertPaths, TlsError> {
    check_node_name(node_name)?;
    Ok(CertPaths {
        cert: dir.join(format!("{node_name}.pem")),
        key: dir.join(format!("{node_name}-key.pem")),
        ca: dir.join("ca.pem"),
    })
}

/// Writes `<dir>/ca.pem`, `<dir>/ca-key.pem` and, per node,
/// `<dir>/<node>.pem` and `<dir>/<node>-key.pem`. Keys are owner-only.
pub fn write_certs(dir: &Path, ca: &CaBundle, nodes: &[(String, NodeCert)]) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.to_path_buf(), source })?;
    write_file(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    write_file(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
    for (name, cert) in nodes {
        let paths = cert_paths(dir, name)?;
        write_file(&paths.cert, &cert.cert_pem, false)?;
        write_file(&paths.key, &cert.key_pem, true)?;
    }
    Ok(())
}

/// Reads `<dir>/ca.pem` and `<dir>/ca-key.pem`, to issue more node certs.
pub fn read_ca(dir: &Path) -> Result<CaBundle, TlsError> {
    Ok(CaBundle { cert_pem: read_file(&dir.join("ca.pem"))?, key_pem: read_file(&dir.join("ca-key.pem"))? })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Node names become file names, so they must not escape the directory.
fn check_node_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadNodeName(name.to_string()))
    }
}

/// Approximate calendar year; validity windows only need year precision.
fn current_year() -> i32 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io { path: path.to_path_buf(), source };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}
