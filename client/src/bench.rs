//! The purge-latency benchmark behind `purgectl bench`: issue purges at a
//! fixed rate from random origins and collect the completion time each
//! origin reports (accept -> last live member applied).

use std::sync::Arc;
use std::time::Duration;

use purgecast_core::MAX_SELECTORS;
use purgecast_proto::api::selector::Kind;
use purgecast_proto::api::{PurgeMode, Selector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;
use crate::stats::LatencySummary;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cluster file: {0}")]
    ClusterFile(#[from] serde_json::Error),
    #[error("no endpoints to benchmark")]
    NoEndpoints,
    #[error("invalid benchmark settings: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The part of the cluster file written by `purgecast dev` that we use.
#[derive(Deserialize)]
struct ClusterFile {
    nodes: Vec<ClusterNode>,
}

#[derive(Deserialize)]
struct ClusterNode {
    grpc: String,
}

/// The gRPC endpoints listed in a cluster file, in file order.
pub fn cluster_endpoints(json: &str) -> Result<Vec<String>, BenchError> {
    let file: ClusterFile = serde_json::from_str(json)?;
    let endpoints: Vec<String> = file.nodes.into_iter().map(|n| n.grpc).filter(|g| !g.trim().is_empty()).collect();
    if endpoints.is_empty() {
        return Err(BenchError::NoEndpoints);
    }
    Ok(endpoints)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchSelector {
    Url,
    Tag,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub purges: usize,
    /// Purges issued per second.
    pub rate: f64,
    pub selector: BenchSelector,
    /// Selectors in each purge, every one of them unique.
    pub selectors: usize,
    pub mode: PurgeMode,
    /// How long after its accept a purge may take to complete.
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// Status polls in flight at once, across all purges.
    pub max_polls: usize,
    /// Purge calls in flight at once; when saturated the issue rate drops
    /// and the report shows it.
    pub max_purges: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub endpoints: usize,
    pub purges: usize,
    pub accepted: usize,
    /// Purge calls that failed.
    pub failed: usize,
    pub completed: usize,
    /// Accepted but not complete within the timeout.
    pub timed_out: usize,
    /// Status polls that failed (the purge kept being polled).
    pub status_errors: usize,
    pub target_rate: f64,
    pub selector: BenchSelector,
    pub selectors_per_purge: usize,
    /// Accept rate: accepted purges per second between the first and the
    /// last accept (0 with fewer than two).
    pub throughput_per_s: f64,
    pub issue_secs: f64,
    pub elapsed_secs: f64,
    /// Origin-reported completion latency of the completed purges.
    pub completion: Option<LatencySummary>,
    pub first_error: Option<String>,
}

enum Outcome {
    Failed(String),
    /// `completion_ms` is `None` when the purge timed out.
    Accepted {
        at: Instant,
        completion_ms: Option<f64>,
        status_errors: usize,
        last_error: Option<String>,
    },
}

pub async fn run(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    if cfg.endpoints.is_empty() {
        return Err(BenchError::NoEndpoints);
    }
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err(BenchError::Invalid("rate must be a positive number"));
    }
    if cfg.max_polls == 0 || cfg.max_purges == 0 {
        return Err(BenchError::Invalid("concurrency limits must be at least 1"));
    }
    if !(1..=MAX_SELECTORS).contains(&cfg.selectors) {
        return Err(BenchError::Invalid("selectors per purge must be between 1 and the node's limit"));
    }
    // Selector names are numbered purge * selectors + k; an overflow would
    // repeat names.
    if cfg.purges.checked_mul(cfg.selectors).is_none() {
        return Err(BenchError::Invalid("too many purges for this many selectors each"));
    }
    let mut clients = Vec::with_capacity(cfg.endpoints.len());
    for ep in &cfg.endpoints {
        clients.push(Client::connect(ep, cfg.token.clone()).await?);
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // Tags and URLs must be new on every run, or a node could answer from
    // an earlier run's state; the seed alone would repeat them.
    let run_id = format!("{:x}-{:x}", cfg.seed, unix_ms());
    let purge_slots = Arc::new(Semaphore::new(cfg.max_purges));
    let poll_slots = Arc::new(Semaphore::new(cfg.max_polls));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..cfg.purges {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / cfg.rate)).await;
        let Ok(permit) = purge_slots.clone().acquire_owned().await else { break };
        let client = clients[rng.random_range(0..clients.len())].clone();
        let sels = bench_selectors(cfg.selector, &run_id, i, cfg.selectors);
        let (mode, timeout, poll, polls) = (cfg.mode, cfg.timeout, cfg.poll_interval, poll_slots.clone());
        tasks.spawn(async move {
            let id = match client.purge(sels, mode).await {
                Ok(resp) => resp.id,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            drop(permit);
            track(&client, id, Instant::now(), timeout, poll, &polls).await
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.add(joined.unwrap_or_else(|e| Outcome::Failed(format!("task failed: {e}"))));
    }
    Ok(tally.report(cfg, clients.len(), start))
}

#[derive(Default)]
struct Tally {
    failed: usize,
    timed_out: usize,
    status_errors: usize,
    latencies: Vec<f64>,
    first_accept: Option<Instant>,
    last_accept: Option<Instant>,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Failed(err) => {
                self.failed += 1;
                self.first_error.get_or_insert(err);
            }
            Outcome::Accepted { at, completion_ms, status_errors, last_error } => {
                self.first_accept = Some(self.first_accept.map_or(at, |f| f.min(at)));
                self.last_accept = Some(self.last_accept.map_or(at, |l| l.max(at)));
                self.status_errors += status_errors;
                match completion_ms {
                    Some(ms) => self.latencies.push(ms),
                    None => self.timed_out += 1,
                }
                if let Some(err) = last_error {
                    self.first_error.get_or_insert(err);
                }
            }
        }
    }

    fn report(self, cfg: &BenchConfig, endpoints: usize, start: Instant) -> BenchReport {
        let accepted = self.latencies.len() + self.timed_out;
        // Intervals between accepts, not accepts since start: the latter
        // overstates the rate of a short run.
        let window = match (self.first_accept, self.last_accept) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        let throughput_per_s = if accepted >= 2 && window > 0.0 { (accepted - 1) as f64 / window } else { 0.0 };
        BenchReport {
            endpoints,
            purges: cfg.purges,
            accepted,
            failed: self.failed,
            completed: self.latencies.len(),
            timed_out: self.timed_out,
            status_errors: self.status_errors,
            target_rate: cfg.rate,
            selector: cfg.selector,
            selectors_per_purge: cfg.selectors,
            throughput_per_s,
            issue_secs: self.last_accept.map_or(0.0, |l| l.duration_since(start).as_secs_f64()),
            elapsed_secs: start.elapsed().as_secs_f64(),
            completion: LatencySummary::from_samples(&self.latencies),
            first_error: self.first_error,
        }
    }
}

/// Polls one purge on its origin until complete or `timeout` after accept.
async fn track(
    client: &Client,
    id: String,
    accepted: Instant,
    timeout: Duration,
    poll: Duration,
    slots: &Semaphore,
) -> Outcome {
    let poll = poll.max(Duration::from_millis(1));
    let deadline = accepted + timeout;
    let max_polls = timeout.as_millis() / poll.as_millis() + 2;
    let mut status_errors = 0;
    let mut last_error = None;
    for _ in 0..max_polls {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = {
            let Ok(_slot) = slots.acquire().await else { break };
            tokio::time::timeout(remaining, client.status(&id)).await
        };
        match answer {
            Ok(Ok(s)) if s.complete => {
                return Outcome::Accepted {
                    at: accepted,
                    completion_ms: Some(s.completion_ms),
                    status_errors,
                    last_error,
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                status_errors += 1;
                last_error = Some(format!("status {id}: {e}"));
            }
            Err(_elapsed) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + poll).min(deadline)).await;
    }
    Outcome::Accepted { at: accepted, completion_ms: None, status_errors, last_error }
}

/// Purge `i`'s `n` selectors. Numbering them `i * n + k` keeps every name
/// unique within and across purges (for a fixed `n`, as in one run), and
/// with `n == 1` they are the names of a one-selector run.
fn bench_selectors(kind: BenchSelector, run_id: &str, i: usize, n: usize) -> Vec<Selector> {
    (0..n).map(|k| bench_selector(kind, run_id, i * n + k)).collect()
}

/// A selector no other purge of any run uses.
fn bench_selector(kind: BenchSelector, run_id: &str, i: usize) -> Selector {
    let kind = match kind {
        BenchSelector::Tag => Kind::Tag(format!("bench-{run_id}-{i}")),
        BenchSelector::Url => Kind::Url(format!("http://bench.purgecast.test/{run_id}/{i}")),
    };
    Selector { kind: Some(kind) }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_file_endpoints_tolerate_extra_fields() {
        let json = r#"{"nodes":[
            {"name":"a","id":"1","grpc":"http://127.0.0.1:7100","peer":"127.0.0.1:7200","metrics":"http://127.0.0.1:7300","pid":123},
            {"name":"b","grpc":"http://127.0.0.1:7101","extra":{"x":1}}
        ],"started_at":"now"}"#;
        assert_eq!(cluster_endpoints(json).unwrap(), ["http://127.0.0.1:7100", "http://127.0.0.1:7101"]);
    }

    #[test]
    fn cluster_file_errors() {
        assert!(matches!(cluster_endpoints(r#"{"nodes":[]}"#), Err(BenchError::NoEndpoints)));
        assert!(matches!(cluster_endpoints(r#"{"nodes":[{"name":"a"}]}"#), Err(BenchError::ClusterFile(_))));
        assert!(matches!(cluster_endpoints("nope"), Err(BenchError::ClusterFile(_))));
    }

    #[test]
    fn bench_selectors_are_unique_per_purge() {
        let a = bench_selector(BenchSelector::Tag, "r1", 0);
        let b = bench_selector(BenchSelector::Tag, "r1", 1);
        assert_ne!(a, b);
        assert_eq!(crate::selector::display(&a), "tag:bench-r1-0");
        let u = bench_selector(BenchSelector::Url, "r1", 7);
        assert_eq!(crate::selector::display(&u), "url:http://bench.purgecast.test/r1/7");
    }

    #[test]
    fn many_selectors_per_purge_are_all_unique_and_exactly_n() {
        use std::collections::HashSet;
        for kind in [BenchSelector::Tag, BenchSelector::Url] {
            for n in [1, 2, 10, 100] {
                let mut seen = HashSet::new();
                for i in 0..50 {
                    let sels = bench_selectors(kind, "r1", i, n);
                    assert_eq!(sels.len(), n, "{kind:?} purge {i} with {n} selectors");
                    let mine: HashSet<String> = sels.iter().map(crate::selector::display).collect();
                    assert_eq!(mine.len(), n, "{kind:?} purge {i}: a selector repeats within the purge");
                    for s in mine {
                        assert!(seen.insert(s.clone()), "{kind:?}: {s} is in two purges (n = {n})");
                    }
                }
                assert_eq!(seen.len(), 50 * n);
            }
        }
        // One selector per purge names them as before.
        assert_eq!(bench_selectors(BenchSelector::Tag, "r1", 3, 1), vec![bench_selector(BenchSelector::Tag, "r1", 3)]);
    }

    #[test]
    fn tally_counts_outcomes_and_accept_rate() {
        let t0 = Instant::now();
        let mut tally = Tally::default();
        let accepted = |ms: u64, done: Option<f64>| Outcome::Accepted {
            at: t0 + Duration::from_millis(ms),
            completion_ms: done,
            status_errors: 1,
            last_error: None,
        };
        tally.add(accepted(0, Some(12.0)));
        tally.add(Outcome::Failed("UNAVAILABLE: down".into()));
        tally.add(accepted(500, None));
        tally.add(accepted(1000, Some(4.0)));
        let r = tally.report(&cfg(), 3, t0);
        assert_eq!((r.accepted, r.failed, r.completed, r.timed_out, r.status_errors), (3, 1, 2, 1, 3));
        assert!((r.throughput_per_s - 2.0).abs() < 1e-9, "{}", r.throughput_per_s);
        assert!((r.issue_secs - 1.0).abs() < 1e-9);
        assert_eq!(r.completion.map(|c| c.max_ms), Some(12.0));
        assert_eq!(r.first_error.as_deref(), Some("UNAVAILABLE: down"));
    }

    fn cfg() -> BenchConfig {
        BenchConfig {
            endpoints: vec!["127.0.0.1:1".into()],
            token: None,
            purges: 1,
            rate: 10.0,
            selector: BenchSelector::Tag,
            selectors: 1,
            mode: PurgeMode::Hard,
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
            max_polls: 4,
            max_purges: 4,
            seed: 1,
        }
    }

    #[tokio::test]
    async fn settings_are_checked_before_connecting() {
        let bad_rate = BenchConfig { rate: 0.0, ..cfg() };
        assert!(matches!(run(&bad_rate).await, Err(BenchError::Invalid(_))));
        let no_slots = BenchConfig { max_polls: 0, ..cfg() };
        assert!(matches!(run(&no_slots).await, Err(BenchError::Invalid(_))));
        let no_selectors = BenchConfig { selectors: 0, ..cfg() };
        assert!(matches!(run(&no_selectors).await, Err(BenchError::Invalid(_))));
        let over_limit = BenchConfig { selectors: MAX_SELECTORS + 1, ..cfg() };
        assert!(matches!(run(&over_limit).await, Err(BenchError::Invalid(_))));
        let overflow = BenchConfig { purges: usize::MAX, selectors: 2, ..cfg() };
        assert!(matches!(run(&overflow).await, Err(BenchError::Invalid(_))));
        let none = BenchConfig { endpoints: vec![], ..cfg() };
        assert!(matches!(run(&none).await, Err(BenchError::NoEndpoints)));
        // Valid settings reach the connect step, which fails on port 1.
        assert!(matches!(run(&cfg()).await, Err(BenchError::Client(ClientError::Transport { .. }))));
    }
}
