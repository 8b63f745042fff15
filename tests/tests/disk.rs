//! A full disk is visible and loses nothing. The fault is real: node-1's
//! data directory is a small tmpfs the test fills. Its store writes then
//! fail, so it must turn not ready (HTTP and gRPC health), refuse new
//! purges, and hold the purges it got without acking them; once space is
//! back and the node restarted, it must apply and ack them and be ready.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use purgecast_proto::api as pb;
use purgecast_tests::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Smaller than RocksDB's WAL preallocation (1.1 x the 32 MiB write
/// buffer), so the WAL cannot reserve the space the test wants to fill.
const TMPFS_SIZE: &str = "16m";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the filesystem is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    // Bounded: 64 MiB of 64 KiB chunks, then 1 KiB ones for the tail.
    for size in [64 << 10, 1 << 10] {
        let chunk = vec![0u8; size];
        for _ in 0..1024 {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
    path
}

async fn readyz(c: &Cluster, i: usize) -> (u16, String) {
    metrics::http_get(c.nodes[i].metrics, "/readyz").await.unwrap()
}

async fn purger_health(c: &Cluster, i: usize) -> ServingStatus {
    let mut h = HealthClient::new(c.channel(i).await.unwrap());
    let req = HealthCheckRequest { service: "purgecast.api.v1.Purger".into() };
    h.check(req).await.unwrap().into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_turns_node_not_ready_and_its_purges_wait_until_space_is_back() {
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("node-1-data");
    let _tmpfs = match Tmpfs::mount(&mount) {
        Ok(t) => t,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({why}); run as root, or with CI=true to make this a failure"
            );
            return;
        }
        Err(why) => panic!("CI=true: this test must run, but mounting a tmpfs failed: {why}"),
    };
    let opts = Opts { data_dirs: vec![(1, mount.clone())], ..Opts::default() };
    let mut c = Cluster::start(2, opts).await.unwrap();
    let tags: Vec<String> = (0..300).map(|k| format!("d{k}")).collect();
    let entries: Vec<(String, &str)> = tags.iter().map(|t| (format!("https://disk.example/{t}"), t.as_str())).collect();
    for i in 0..2 {
        let batch = entries.iter().map(|(k, t)| entry(k, &[*t])).collect();
        c.client(i).await.unwrap().index_put(batch).await.unwrap();
    }
    assert_eq!(readyz(&c, 1).await.0, 200);

    let filler = fill(&mount);
    // The WAL's last page may still take a few records: purge until node-1
    // says its store fails (bounded by the tags we have).
    let origin = c.client(0).await.unwrap();
    let mut issued = 0;
    let start = Instant::now();
    while readyz(&c, 1).await.0 == 200 {
        assert!(
            issued < tags.len() - 1 && start.elapsed() < Duration::from_secs(60),
            "node-1 never noticed its full disk"
        );
        origin.purge(vec![tag(&tags[issued])], pb::PurgeMode::Hard).await.unwrap();
        issued += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = readyz(&c, 1).await;
    assert_eq!(code, 503);
    assert!(body.contains("store: writes fail"), "readyz must name the failing condition: {body:?}");
    assert_eq!(purger_health(&c, 1).await, ServingStatus::NotServing);
    assert_eq!(readyz(&c, 0).await.0, 200, "the healthy node stays ready");

    // A purge that reaches node-1 now is held, not acked.
    let held_tag = &tags[issued];
    let held = origin.purge(vec![tag(held_tag)], pb::PurgeMode::Hard).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = origin.status(&held.id).await.unwrap();
    assert!(!s.complete, "node-1 cannot have stored it: {s:?}");
    assert_eq!(s.pending, vec!["node-1".to_string()], "node-1 must not count as applied: {s:?}");
    let key = format!("https://disk.example/{held_tag}");
    assert!(c.get(1, &key).await.unwrap().is_some(), "reads still work; the entry is still there");
    let m = metrics::scrape(c.nodes[1].metrics).await.unwrap();
    assert!(metrics::value(&m, "purgecast_apply_errors_total") > 0.0);
    // And node-1 refuses new purges rather than spread what it cannot store.
    let e = c.client(1).await.unwrap().purge(vec![tag("other")], pb::PurgeMode::Hard).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    assert!(e.to_string().contains("store"), "{e}");

    std::fs::remove_file(&filler).unwrap();
    // RocksDB stays read-only after a failed WAL write (its automatic
    // recovery does not cover it, and the Rust binding has no `Resume`), so
    // the operator restarts the node once space is back. What it held in
    // memory is not lost: the origin still has it and anti-entropy brings it.
    c.kill9(1);
    c.spawn(1).unwrap();
    c.wait_ready(1).await.unwrap();
    let s = origin.wait_complete(&held.id, Duration::from_secs(60), POLL).await.unwrap();
    assert_eq!(s.members_applied, 2, "{s:?}");
    assert!(c.get(1, &key).await.unwrap().is_none(), "node-1 applied the held purge");
    for t in &tags[..issued] {
        assert_eq!(c.count_tag(1, t).await.unwrap(), 0, "node-1 applied {t}, issued while its disk filled");
    }
    let start = Instant::now();
    while readyz(&c, 1).await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "node-1 must turn ready again: {:?}", readyz(&c, 1).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(purger_health(&c, 1).await, ServingStatus::Serving);
}
