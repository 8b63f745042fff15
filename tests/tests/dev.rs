//! `purgecast dev` as a new user runs it: the cluster it announces is
//! whole (a purge issued right away reaches every node), and SIGTERM (what
//! `kill` and `timeout` send) stops every node it started.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use purgecast_client::Client;
use purgecast_proto::api as pb;
use purgecast_tests::*;

/// A base port whose gRPC (base+i), peer (base+1000+i, UDP) and metrics
/// (base+2000+i) ports are all free now, for nodes 0..n.
/// A base port whose every port `dev` takes is free: node i's gRPC, peer
/// (UDP), metrics, edge and HTTP API at base+i, +1000+i, +2000+i, +3000+i,
/// +6000+i, the demo origin at base+4000. All below 32768, where the
/// kernel picks no outgoing connection's port.
fn free_base(n: u16) -> u16 {
    let seed = u32::from(std::process::id() as u16);
    for k in 0..200u32 {
        let base = 20_000 + ((seed * 7_919 + k * 1_237) % 6_000) as u16;
        let tcp = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        let free = tcp(base + 4000)
            && (0..n).all(|i| {
                UdpSocket::bind(("127.0.0.1", base + 1000 + i)).is_ok()
                    && [0, 2000, 3000, 6000].iter().all(|off| tcp(base + off + i))
            });
        if free {
            return base;
        }
    }
    panic!("no free port range found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_announces_a_whole_cluster_and_sigterm_leaves_no_node_behind() {
    let n = 4;
    let dir = tempfile::tempdir().unwrap();
    let cluster_file = dir.path().join("cluster.json");
    let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut dev = Command::new(bin("purgecast"))
        .arg("dev")
        .args(["--nodes", &n.to_string(), "--base-port", &free_base(n).to_string()])
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .arg("--cluster-file")
        .arg(&cluster_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let dev_log = || std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();

    // The cluster file appears only once the cluster is whole.
    let start = Instant::now();
    let file: serde_json::Value = loop {
        let parsed = std::fs::read_to_string(&cluster_file).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(v) = parsed {
            break v;
        }
        assert!(dev.try_wait().unwrap().is_none(), "purgecast dev exited:\n{}", dev_log());
        assert!(start.elapsed() < Duration::from_secs(120), "no cluster file after 120 s:\n{}", dev_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let nodes = file["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), usize::from(n));
    let grpc: Vec<String> = nodes.iter().map(|x| x["grpc"].as_str().unwrap().to_string()).collect();
    let pids: Vec<u64> = nodes.iter().map(|x| x["pid"].as_u64().unwrap()).collect();

    // Right away, as a user would: every node already sees every other.
    for (i, endpoint) in grpc.iter().enumerate() {
        let members = Client::connect(endpoint, None).await.unwrap().members().await.unwrap();
        let alive = members.iter().filter(|m| m.state == "alive").count();
        assert_eq!(alive, usize::from(n), "node-{i} sees {alive} alive at announcement: {members:?}");
    }
    let origin = Client::connect(&grpc[0], None).await.unwrap();
    let id = origin.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap().id;
    let s = origin.wait_complete(&id, Duration::from_secs(20), POLL).await.unwrap();
    assert_eq!((s.members_applied, s.members_total), (u32::from(n), u32::from(n)), "{s:?}");

    // SIGTERM, as `kill <pid>` and `timeout` send it.
    let killed = Command::new("kill").args(["-TERM", &dev.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "purgecast dev ignored SIGTERM:\n{}", dev_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a requested stop is a clean exit: {status}\n{}", dev_log());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "node pid {pid} outlived purgecast dev:\n{}", dev_log());
    }
}
