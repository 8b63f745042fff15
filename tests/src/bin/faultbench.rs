//! Fault benchmarks on a real loopback cluster (docs/benchmarks.md):
//! catch-up after missed purges, failure-detection time, idle traffic.
//! Nodes run with the protocol's production defaults, not the fast timers
//! the integration tests use.
//!
//! ```sh
//! cargo build --release -p purgecast-node -p purgecast-client -p purgecast-tests --all-targets
//! target/release/faultbench catchup --missed 10000
//! target/release/faultbench detect --nodes 16 --runs 5
//! target/release/faultbench idle --nodes 16 --secs 30
//! target/release/faultbench status-after-restart --runs 3
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use purgecast_proto::api as pb;
use purgecast_tests::{entry, metrics, tag, url, Cluster, Opts};

#[derive(Parser)]
#[command(about = "Fault benchmarks on a real loopback cluster")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A node is killed, misses purges, restarts: time until its index is clean.
    Catchup {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value_t = 10_000)]
        missed: usize,
        /// Purges in flight while the node is down.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// SIGKILL one node: time until a peer suspects it and every peer has it dead.
    Detect {
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Purges from several origins while some nodes are SIGKILLed and
    /// restarted: time until every origin reports every purge complete
    /// with nothing pending (issue 10's repro).
    StatusAfterRestart {
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        #[arg(long, default_value_t = 300)]
        purges: usize,
        #[arg(long, default_value_t = 5)]
        origins: usize,
        /// Nodes killed (the last ones) at a third of the purges and
        /// restarted at two thirds.
        #[arg(long, default_value_t = 3)]
        killed: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Peer traffic of an idle cluster, per node per second.
    Idle {
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
}

fn production() -> Opts {
    Opts { protocol: Vec::new(), ..Opts::default() }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Catchup { nodes, missed, concurrency } => catchup(nodes, missed, concurrency).await,
        Cmd::Detect { nodes, runs } => detect(nodes, runs).await,
        Cmd::Idle { nodes, secs } => idle(nodes, secs).await,
        Cmd::StatusAfterRestart { nodes, purges, origins, killed, runs } => {
            for run in 1..=runs {
                status_after_restart(run, nodes, purges, origins, killed).await?;
            }
            Ok(())
        }
    }
}

async fn status_after_restart(run: usize, n: usize, purges: usize, origins: usize, killed: usize) -> Result<()> {
    if origins + killed > n || origins == 0 {
        bail!("need origins + killed <= nodes and at least one origin");
    }
    let mut c = Cluster::start(n, production()).await?;
    let victims: Vec<usize> = (n - killed..n).collect();
    let mut clients = Vec::new();
    for o in 0..origins {
        clients.push(c.client(o).await?);
    }
    let mut ids = Vec::new();
    let mut restarted = None;
    for i in 0..purges {
        if i == purges / 3 {
            victims.iter().for_each(|v| c.kill9(*v));
        }
        if i == purges * 2 / 3 {
            for v in &victims {
                c.spawn(*v)?;
            }
            for v in &victims {
                c.wait_ready(*v).await?;
            }
            restarted = Some(Instant::now());
        }
        let sel = url(&format!("https://sar.example/{run}/{i}"));
        let id = clients[i % origins].purge(vec![sel], pb::PurgeMode::Hard).await?.id;
        ids.push((i % origins, id));
    }
    let storm_end = Instant::now();
    let restarted = restarted.unwrap_or(storm_end);
    let deadline = Duration::from_secs(150);
    let (mut complete_at, mut settled_at) = (None, None);
    let (mut incomplete, mut pending) = (0, 0);
    while storm_end.elapsed() < deadline && settled_at.is_none() {
        (incomplete, pending) = (0, 0);
        for (o, id) in &ids {
            let s = clients[*o].status(id).await?;
            incomplete += usize::from(!s.complete);
            pending += usize::from(!s.pending.is_empty());
        }
        if incomplete == 0 && complete_at.is_none() {
            complete_at = Some(storm_end.elapsed());
        }
        if incomplete == 0 && pending == 0 {
            settled_at = Some(storm_end.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ms = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    let since_restart = storm_end - restarted;
    println!(
        "run {run}: {purges} purges from {origins} origins on {n} nodes, {killed} killed at {} and restarted at {} \
         (storm ended {:.0} ms after the restart)",
        purges / 3,
        purges * 2 / 3,
        since_restart.as_secs_f64() * 1e3
    );
    println!("  storm end -> every purge complete:         {}", ms(complete_at));
    println!("  storm end -> complete and nothing pending: {}", ms(settled_at));
    if settled_at.is_none() {
        println!("  after {deadline:?}: {incomplete} incomplete, {pending} with members pending");
    }
    Ok(())
}

async fn catchup(n: usize, missed: usize, concurrency: usize) -> Result<()> {
    if n < 2 {
        bail!("need at least 2 nodes");
    }
    let mut c = Cluster::start(n, production()).await?;
    let victim = n - 1;
    let tags: Vec<String> = (0..missed).map(|k| format!("cu-{k}")).collect();
    for chunk in tags.chunks(1000) {
        let entries = chunk.iter().map(|t| entry(&format!("https://cu.example/{t}"), &[t])).collect();
        c.client(victim).await?.index_put(entries).await?;
    }
    c.kill9(victim);
    let issued = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mine: Vec<String> = tags.iter().skip(w).step_by(concurrency).cloned().collect();
        let client = c.client(w % victim).await?;
        tasks.spawn(async move {
            for t in mine {
                client.purge(vec![tag(&t)], pb::PurgeMode::Hard).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let issue_secs = issued.elapsed().as_secs_f64();
    eprintln!("issued {missed} purges in {issue_secs:.1} s while node-{victim} was down");

    let spawned = Instant::now();
    c.restart(victim).await?;
    let ready = spawned.elapsed();
    let deadline = Duration::from_secs(300);
    // Progress every 250 ms on stderr: the shape of the curve (steady,
    // or one step per anti-entropy round) says where catch-up waits.
    let mut next_report = Duration::ZERO;
    let clean = loop {
        if c.count_all(victim).await? == 0 {
            break spawned.elapsed();
        }
        if spawned.elapsed() > deadline {
            bail!("node-{victim} still has entries after {deadline:?}");
        }
        if spawned.elapsed() >= next_report {
            let text = metrics::scrape(c.nodes[victim].metrics).await?;
            let n = metrics::value(&text, "purgecast_purges_caught_up_total");
            eprintln!("  {:>6.0} ms: {n:.0} caught up", spawned.elapsed().as_secs_f64() * 1e3);
            next_report += Duration::from_millis(250);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = metrics::scrape(c.nodes[victim].metrics).await?;
    let caught_up = metrics::value(&text, "purgecast_purges_caught_up_total");
    println!("catch-up: {missed} purges missed by 1 of {n} nodes");
    println!("  process start -> API up:      {:>8.0} ms", ready.as_secs_f64() * 1e3);
    println!("  process start -> index clean: {:>8.0} ms", clean.as_secs_f64() * 1e3);
    println!("  API up -> index clean:        {:>8.0} ms", (clean - ready).as_secs_f64() * 1e3);
    println!("  purges learnt by anti-entropy: {caught_up:.0} ({:.0}/s from start)", caught_up / clean.as_secs_f64());
    Ok(())
}

async fn member_state(c: &Cluster, i: usize, name: &str) -> Result<String> {
    let m = c.client(i).await?.members().await?;
    Ok(m.into_iter().find(|m| m.name == name).map(|m| m.state).unwrap_or_default())
}

async fn detect(n: usize, runs: usize) -> Result<()> {
    if n < 4 || runs == 0 {
        bail!("need at least 4 nodes and 1 run");
    }
    let mut c = Cluster::start(n, production()).await?;
    let mut rows = Vec::new();
    for r in 0..runs {
        // Seeds are nodes 0 and 1; victims come from the rest.
        let victim = 2 + r % (n - 2);
        let name = c.nodes[victim].name.clone();
        let others: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
        c.kill9(victim);
        let t0 = Instant::now();
        let (mut first_suspect, mut all_dead) = (None, None);
        while all_dead.is_none() && t0.elapsed() < Duration::from_secs(60) {
            let mut dead = 0;
            for &i in &others {
                let s = member_state(&c, i, &name).await?;
                if s != "alive" && first_suspect.is_none() {
                    first_suspect = Some(t0.elapsed());
                }
                dead += usize::from(s == "dead");
            }
            if dead == others.len() {
                all_dead = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (Some(s), Some(d)) = (first_suspect, all_dead) else {
            bail!("run {r}: {name} not declared dead by every peer within 60 s");
        };
        println!(
            "run {r}: {name} killed; first suspicion {:.0} ms, dead on all {} peers {:.0} ms",
            s.as_secs_f64() * 1e3,
            others.len(),
            d.as_secs_f64() * 1e3
        );
        rows.push((s, d));
        c.restart(victim).await?;
        c.wait_members(n, Duration::from_secs(60)).await?;
    }
    let med = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "failure detection, {n} nodes, {runs} runs: median first suspicion {:.0} ms, median dead everywhere {:.0} ms",
        med(rows.iter().map(|r| r.0).collect()),
        med(rows.iter().map(|r| r.1).collect())
    );
    Ok(())
}

/// Node `i`'s messages sent per kind, and its totals in [`TOTALS`] order.
async fn sent(c: &Cluster, i: usize) -> Result<(BTreeMap<String, f64>, Vec<f64>)> {
    let text = metrics::scrape(c.nodes[i].metrics).await?;
    let mut kinds = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("purgecast_peer_messages_sent_total{")) {
        let kind = line.split("kind=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("?");
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *kinds.entry(kind.to_string()).or_insert(0.0) += v;
    }
    Ok((kinds, TOTALS.iter().map(|(name, _)| metrics::value(&text, name)).collect()))
}

const TOTALS: [(&str, &str); 3] = [
    ("purgecast_peer_bytes_sent_total", "frame payload B/s"),
    ("purgecast_peer_udp_bytes_sent_total", "UDP B/s (QUIC)"),
    ("purgecast_peer_udp_datagrams_sent_total", "UDP datagrams/s"),
];

async fn idle(n: usize, secs: u64) -> Result<()> {
    if n < 2 || secs == 0 {
        bail!("need at least 2 nodes and 1 second");
    }
    let mut c = Cluster::start(n, production()).await?;
    c.wait_members(n, Duration::from_secs(60)).await?;
    // Let joins, first digests and probe schedules settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut before = Vec::new();
    for i in 0..n {
        before.push(sent(&c, i).await?);
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let dt = t0.elapsed().as_secs_f64();
    let mut per_kind: BTreeMap<String, f64> = BTreeMap::new();
    let mut rates = vec![Vec::new(); TOTALS.len()];
    for (i, (k0, t0)) in before.iter().enumerate() {
        let (k1, t1) = sent(&c, i).await?;
        for (kind, v) in k1 {
            *per_kind.entry(kind.clone()).or_insert(0.0) += v - k0.get(&kind).copied().unwrap_or(0.0);
        }
        for (j, r) in rates.iter_mut().enumerate() {
            r.push((t1[j] - t0[j]) / dt);
        }
    }
    let msgs: f64 = per_kind.values().sum::<f64>() / dt / n as f64;
    println!("idle traffic sent, {n} nodes, {dt:.1} s; per node:");
    println!("  {:>20}: {msgs:.1}", "protocol messages/s");
    for ((_, label), mut r) in TOTALS.iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        println!("  {label:>20}: {:.0} mean (min {:.0}, max {:.0})", r.iter().sum::<f64>() / n as f64, r[0], r[n - 1]);
    }
    for (kind, v) in per_kind {
        println!("  {:>20}: {:.2}", format!("{kind} messages/s"), v / dt / n as f64);
    }
    Ok(())
}
