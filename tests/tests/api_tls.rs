//! The client-facing APIs over TLS: gRPC (`purgectl --endpoint https://..
//! --ca-file`) and the HTTP purge API, with the cluster CA's certificates.

use std::process::Command;

use anyhow::Result;
use purgecast_tests::{bin, Cluster, Opts};
use serde_json::Value;

const TOKEN: &str = "operator-secret";

fn purgectl(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(bin("purgectl")).args(["--token", TOKEN]).args(args).output()?)
}

#[tokio::test]
async fn grpc_and_http_apis_speak_tls_verified_against_a_ca_file() -> Result<()> {
    let opts = Opts { api_tls: true, http_api: true, tokens: vec![TOKEN.into()], ..Opts::default() };
    // The harness itself waits for membership over TLS (the client library).
    let c = Cluster::start(2, opts).await?;
    let ca = c.dir.path().join("certs").join("ca.pem");
    let ca_s = ca.display().to_string();
    let https = c.nodes[0].endpoint();
    assert!(https.starts_with("https://"), "{https}");

    let ok = purgectl(&["--endpoint", &https, "--ca-file", &ca_s, "--json", "members"])?;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let members: Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");
    let purged = purgectl(&["--endpoint", &https, "--ca-file", &ca_s, "purge", "--tag", "x", "--wait"])?;
    assert!(purged.status.success(), "{}", String::from_utf8_lossy(&purged.stderr));

    // Without the CA the node's certificate is not trusted; plain HTTP/2
    // to a TLS port gets nowhere either.
    let untrusted = purgectl(&["--endpoint", &https, "members"])?;
    assert!(!untrusted.status.success(), "a certificate of an unknown CA was accepted");
    let why = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(why.contains("certificate"), "refused for another reason: {why}");
    let plain = purgectl(&["--endpoint", &format!("http://{}", c.nodes[0].api), "members"])?;
    assert!(!plain.status.success(), "plain HTTP/2 reached a TLS API");

    // The HTTP purge API over HTTPS, verified against the same CA.
    let url = format!("https://{}/client/v4/zones/default/purge_cache", c.nodes[1].http_api);
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?;
    let trusting = reqwest::Client::builder().add_root_certificate(cert).build()?;
    let resp = trusting.post(&url).bearer_auth(TOKEN).body(r#"{"tags":["x"]}"#).send().await?;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let v: Value = resp.json().await?;
    assert_eq!(v["success"], true, "{v}");
    let strict = reqwest::Client::builder().build()?;
    assert!(strict.post(&url).bearer_auth(TOKEN).body("{}").send().await.is_err(), "untrusted certificate accepted");
    Ok(())
}
