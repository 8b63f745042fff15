use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{timeout, Instant};

use super::*;
use crate::tools::certs::generate_ca;
use crate::transport::tests::{eventually, pair, recv_within, TestNode};

const WAIT: Duration = Duration::from_secs(15);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn json_config_parses_and_first_matching_rule_wins() {
    let cfg = WanConfig::from_json(
        r#"{ "seed": 7,
             "default": { "delay_ms": 20 },
             "rules": [ { "dest": "10.0.0.5:7000", "link": { "blocked": true } },
                        { "dest": "10.0.0.5", "link": { "delay_ms": 80, "jitter_ms": 10, "loss": 0.25 } },
                        { "dest": "node-c:7000", "link": {} } ] }"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.seed, 7);
    assert!(cfg.link_for(sa("10.0.0.5:7000")).blocked);
    let l = cfg.link_for(sa("10.0.0.5:7001"));
    assert_eq!(
        (l.delay, l.jitter, l.loss, l.blocked),
        (Duration::from_millis(80), Duration::from_millis(10), 0.25, false)
    );
    assert_eq!(cfg.link_for(sa("10.0.0.6:7000")), LinkSpec::delayed(Duration::from_millis(20)));
    // IPv4-mapped IPv6 destinations (dual-stack sockets) match v4 rules.
    assert!(cfg.link_for(sa("[::ffff:10.0.0.5]:7000")).blocked);
    assert_eq!(cfg.rules[2].dest, Dest::Name { host: "node-c".into(), port: Some(7000) });
    let back = WanConfig::from_json(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn invalid_configs_are_rejected() {
    assert!(WanConfig::from_json(r#"{ "default": { "delay": 5 } }"#).is_err());
    assert!(WanConfig::from_json(r#"{ "rules": [ { "dest": "a:b", "link": {} } ] }"#).is_err());
    let lossy = WanConfig::from_json(r#"{ "default": { "loss": 1.5 } }"#).unwrap();
    assert!(matches!(lossy.validate(), Err(WanError::Invalid(_))));
    let slow = WanConfig::from_json(r#"{ "default": { "delay_ms": 3600000 } }"#).unwrap();
    assert!(matches!(slow.validate(), Err(WanError::Invalid(_))));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wan.json");
    assert!(matches!(WanConfig::from_json_file(&path), Err(WanError::Io { .. })));
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(WanConfig::from_json_file(&path), Err(WanError::Json { .. })));
}

#[tokio::test]
async fn names_resolve_to_matching_addresses() {
    let mut cfg = WanConfig {
        rules: vec![WanRule::new(Dest::try_from("localhost:7000".to_string()).unwrap(), LinkSpec::blocked())],
        ..WanConfig::default()
    };
    assert!(!cfg.link_for(sa("127.0.0.1:7000")).blocked, "unresolved names match nothing");
    cfg.resolve().await;
    assert!(cfg.link_for(sa("127.0.0.1:7000")).blocked);
    assert!(!cfg.link_for(sa("127.0.0.1:7001")).blocked);
}

#[tokio::test]
async fn reloader_follows_file_changes_and_keeps_config_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wan.json");
    std::fs::write(&path, "{}").unwrap();
    let handle = WanHandle::new(WanConfig::load(&path).await.unwrap());
    let task = spawn_reloader(path.clone(), handle.clone());

    std::fs::write(&path, r#"{ "rules": [ { "dest": "127.0.0.1:9", "link": { "blocked": true } } ] }"#).unwrap();
    assert!(eventually(WAIT, || handle.link_for(sa("127.0.0.1:9")).blocked).await);

    std::fs::write(&path, "not json at all").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(handle.link_for(sa("127.0.0.1:9")).blocked, "a bad file must not replace the config");

    // With no other holder of the handle left, the reloader ends by itself.
    drop(handle);
    timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

/// Connects a (emulated) to b and checks one frame gets through unimpeded.
async fn warmed_up(handle: &WanHandle) -> (TestNode, TestNode) {
    let ca = generate_ca("ca").unwrap();
    let (a, mut b) = pair(&ca, Some(handle.clone())).await;
    a.t.send(&b.addr, Bytes::from_static(b"warm-up"));
    assert_eq!(&recv_within(&mut b.rx, WAIT).await.unwrap().bytes[..], b"warm-up");
    (a, b)
}

#[tokio::test]
async fn a_delayed_link_delays_delivery() {
    let handle = WanHandle::default();
    let (a, mut b) = warmed_up(&handle).await;
    handle.set_link(sa(&b.addr), LinkSpec::delayed(Duration::from_millis(50)));
    let start = Instant::now();
    a.t.send(&b.addr, Bytes::from_static(b"slow"));
    let got = recv_within(&mut b.rx, WAIT).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(&got.bytes[..], b"slow");
    assert!(elapsed >= Duration::from_millis(50), "delivered after {elapsed:?}");
    assert!(handle.delayed() > 0);
}

#[tokio::test]
async fn a_blocked_link_delivers_nothing_until_healed() {
    let handle = WanHandle::default();
    let (a, mut b) = warmed_up(&handle).await;
    handle.set_link(sa(&b.addr), LinkSpec::blocked());
    for i in 0..3u8 {
        a.t.send(&b.addr, Bytes::from(vec![i]));
    }
    assert!(recv_within(&mut b.rx, Duration::from_millis(700)).await.is_none());
    assert!(handle.dropped() > 0);

    handle.set_link(sa(&b.addr), LinkSpec::default());
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv_within(&mut b.rx, WAIT).await.expect("healed link delivers").bytes[0]);
    }
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
}

#[tokio::test]
async fn a_lossy_link_still_delivers_through_retransmission() {
    let handle = WanHandle::new(WanConfig { seed: 42, ..WanConfig::default() });
    let (a, mut b) = warmed_up(&handle).await;
    handle.set_link(sa(&b.addr), LinkSpec { loss: 0.3, ..LinkSpec::default() });
    // Enough packets that a 30% loss rate certainly hits some.
    for i in 0..100u8 {
        a.t.send(&b.addr, Bytes::from(vec![i; 1000]));
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(recv_within(&mut b.rx, WAIT).await.expect("retransmitted").bytes[0]);
    }
    got.sort();
    assert_eq!(got, (0..100).collect::<Vec<u8>>());
    assert!(handle.dropped() > 0);
}
