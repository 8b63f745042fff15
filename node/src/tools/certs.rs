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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{cert_names, Identity};

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
