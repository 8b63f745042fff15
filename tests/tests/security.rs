//! A node whose certificate is not signed by the cluster CA is refused.

use std::time::Duration;

use purgecast_client::Client;
use purgecast_proto::api as pb;
use purgecast_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_a_cluster_certificate_is_refused() {
    let c = Cluster::start(2, Opts::default()).await.unwrap();
    c.put_everywhere(&[("https://s.example/x", &["x"])]).await.unwrap();

    // An intruder with a certificate from its own CA, seeding to the cluster.
    let other = tempfile::tempdir().unwrap();
    let certs = other.path().join("certs");
    make_certs(&certs, &["intruder".to_string()]).unwrap();
    let mut intruder = Node::new(other.path(), "intruder").unwrap();
    let seeds = [c.nodes[0].peer, c.nodes[1].peer];
    std::fs::write(&intruder.config, config_text(&intruder, &certs, &seeds, &Opts::default(), 0)).unwrap();
    intruder.spawn().unwrap();

    let mut refused = None;
    for _ in 0..100 {
        if let Ok(p) = Client::connect(&intruder.endpoint(), None).await {
            // Its seeds refuse its handshake, so it never joins, and it
            // refuses purges it could not spread.
            refused = p.purge(vec![tag("x")], pb::PurgeMode::Hard).await.err();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.unwrap_or_else(|| panic!("intruder must answer and refuse:\n{}", intruder.log()));
    assert_eq!(refused.code(), Some(tonic::Code::Unavailable), "{refused}");
    assert!(refused.to_string().contains("not joined"), "{refused}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    for i in 0..2 {
        let m = c.client(i).await.unwrap().members().await.unwrap();
        assert_eq!(m.len(), 2, "node {i} must not know the intruder: {m:?}");
        assert!(c.get(i, "https://s.example/x").await.unwrap().is_some(), "node {i}: entry intact");
    }
    assert!(intruder.is_running(), "a refused handshake must not crash the intruder either");
}
