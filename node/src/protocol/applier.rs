//! The apply worker: a dedicated thread that writes purges into the store.
//!
//! RocksDB calls block, and a synced write waits for the disk, so they stay
//! off the protocol loop. Whatever queued up while a write was in flight
//! goes into the next WriteBatch together, which is what makes a burst of
//! purges cheap.
//!
//! A write that fails (a full or failing disk) is not dropped: the worker
//! keeps the jobs it could not finish, marks the node not ready (`store`
//! condition) and writes them again, in order and before anything newer,
//! after a growing pause. Nothing is acknowledged until it is on disk, so
//! the origin sees this member as pending, not as done. While it holds
//! failed jobs it takes at most `MAX_BATCH` more; the rest wait in the
//! queue and, once that is full, in the driver (backpressure).

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use purgecast_core::{ApplyTicket, Purge, PurgeId};
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::health::{Health, STORE};
use crate::store::Store;

/// Largest number of purges written in one batch.
const MAX_BATCH: usize = 1024;
/// Jobs queued for the worker. When it is full the driver keeps the rest
/// and stops reading from peers and clients until the worker catches up:
/// backpressure, never a dropped purge (the engine already counts it seen).
pub const QUEUE: usize = 4 * MAX_BATCH;
/// Pause before the first retry of a failed write; it doubles per failure
/// up to `MAX_RETRY_WAIT`, so a dead disk costs one attempt every few seconds.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Entries the expiry sweep looks at per upkeep round (every 5 s).
const EXPIRY_SCAN: u64 = 10_000;
/// Index rows one slice of a deferred purge's sweep handles: a few ms of
/// writes, so a purge arriving meanwhile waits little.
const SWEEP_SLICE: usize = 1024;
/// A sweep slice runs when the queue is empty, and at least this often
/// under a steady stream of purges.
const SWEEP_AT_LEAST_EVERY: Duration = Duration::from_millis(100);

pub enum Job {
    /// The store syncs every batch (`StoreOptions::sync`), so a client gets
    /// the id of a purge it submitted only once it is on disk.
    /// The ticket goes back to the engine once the purge is on disk.
    Apply { purge: Arc<Purge>, ticket: ApplyTicket },
    /// Drop every index entry: this node missed purges nobody retains.
    Flush { reason: String },
}

/// Reported back to the protocol loop after each round of writes.
pub struct Done {
    /// Tickets of the purges now durable, for `Engine::applied`.
    pub applied: Vec<ApplyTicket>,
    /// Purges whose write failed this round. The worker keeps and retries
    /// them; this only lets a client waiting on one hear about it now.
    pub failed: Vec<(PurgeId, String)>,
}

pub fn spawn(
    store: Arc<Store>,
    retention: Duration,
    done: mpsc::UnboundedSender<Done>,
    health: Health,
) -> std_mpsc::SyncSender<Job> {
    let (tx, rx) = std_mpsc::sync_channel::<Job>(QUEUE);
    let worker = Worker { store, health, held: Vec::new(), retry_wait: FIRST_RETRY_WAIT };
    let spawned =
        std::thread::Builder::new().name("purgecast-apply".into()).spawn(move || worker.run(rx, retention, done));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the apply thread");
    }
    tx
}

struct Worker {
    store: Arc<Store>,
    health: Health,
    /// Jobs a failed write left unfinished, oldest first.
    held: Vec<Job>,
    retry_wait: Duration,
}

impl Worker {
    fn run(mut self, rx: std_mpsc::Receiver<Job>, retention: Duration, done: mpsc::UnboundedSender<Done>) {
        let mut last_upkeep = Instant::now();
        let mut last_sweep = Instant::now();
        loop {
            let mut jobs = std::mem::take(&mut self.held);
            let sweeping = self.store.deferred_purges() > 0;
            if jobs.is_empty() {
                let wait = if sweeping { Duration::ZERO } else { Duration::from_secs(1) };
                match rx.recv_timeout(wait) {
                    Ok(job) => jobs.push(job),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                if !pause(&done, self.retry_wait) {
                    return;
                }
                self.retry_wait = (self.retry_wait * 2).min(MAX_RETRY_WAIT);
            }
            let idle = jobs.is_empty();
            if !idle {
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let report = self.run_jobs(jobs);
                if done.send(report).is_err() {
                    return;
                }
            }
            if sweeping && self.held.is_empty() && (idle || last_sweep.elapsed() >= SWEEP_AT_LEAST_EVERY) {
                last_sweep = Instant::now();
                self.sweep();
            }
            if self.held.is_empty() && last_upkeep.elapsed() >= Duration::from_secs(5) {
                last_upkeep = Instant::now();
                self.upkeep(retention);
            }
        }
    }

    /// Runs jobs in order; stops at the first failed write and keeps it and
    /// everything after it in `held`.
    fn run_jobs(&mut self, jobs: Vec<Job>) -> Done {
        let mut done = Done { applied: Vec::new(), failed: Vec::new() };
        let mut batch: Vec<Pending> = Vec::new();
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            match job {
                Job::Apply { purge, ticket } => batch.push((purge, ticket)),
                Job::Flush { reason } => {
                    // Purges queued before the flush go in first: order matters.
                    let flushed = write_batch(&self.store, std::mem::take(&mut batch), &mut done)
                        .and_then(|()| flush(&self.store, &reason).map_err(|e| (e, Vec::new())));
                    if let Err((e, unwritten)) = flushed {
                        let before = unwritten.into_iter().map(Job::from);
                        self.hold(before.chain([Job::Flush { reason }]).chain(jobs).collect(), e);
                        return done;
                    }
                }
            }
        }
        match write_batch(&self.store, batch, &mut done) {
            Ok(()) => self.recovered(),
            Err((e, unwritten)) => self.hold(unwritten.into_iter().map(Job::from).collect(), e),
        }
        done
    }

    fn hold(&mut self, jobs: Vec<Job>, error: String) {
        tracing::error!(%error, jobs = jobs.len(), retry_in_ms = self.retry_wait.as_millis() as u64, "store write failed; holding the purges and retrying");
        metrics::counter!("purgecast_apply_errors_total").increment(1);
        metrics::gauge!("purgecast_apply_held").set(jobs.len() as f64);
        self.health
            .set_condition(STORE, Err(format!("writes fail ({error}); {} purge job(s) held for retry", jobs.len())));
        self.held = jobs;
    }

    fn recovered(&mut self) {
        if self.retry_wait != FIRST_RETRY_WAIT {
            tracing::info!("store writes succeed again");
            metrics::gauge!("purgecast_apply_held").set(0.0);
        }
        self.retry_wait = FIRST_RETRY_WAIT;
        self.health.set_condition(STORE, Ok(()));
    }

    /// One slice of the oldest deferred purge's sweep. A failure is only
    /// logged: the purge is in effect already (readers check it), and the
    /// next slice tries again.
    fn sweep(&mut self) {
        match self.store.sweep_deferred(SWEEP_SLICE) {
            Ok(out) => {
                let counter =
                    if out.soft { "purgecast_entries_marked_stale_total" } else { "purgecast_entries_removed_total" };
                metrics::counter!(counter).increment(out.swept);
                metrics::gauge!("purgecast_store_deferred_purges").set(out.remaining as f64);
                if out.remaining == 0 {
                    tracing::debug!("deferred purges swept");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping a deferred purge failed"),
        }
    }

    fn upkeep(&mut self, retention: Duration) {
        let store = &self.store;
        match store.put_meta(LAST_ALIVE, &now_ms().to_be_bytes()) {
            Ok(()) => self.health.set_condition(STORE, Ok(())),
            Err(e) => {
                tracing::warn!(error = %e, "recording liveness failed");
                self.health.set_condition(STORE, Err(format!("writes fail ({e})")));
            }
        }
        let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
        match store.prune_purge_log(cutoff) {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned applied-purge log"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the purge log failed"),
        }
        // Reads already hide expired entries; this frees their rows, a
        // bounded slice per round (the store resumes where it stopped).
        match store.remove_expired(now_ms(), EXPIRY_SCAN) {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "removed expired entries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "removing expired entries failed"),
        }
        metrics::gauge!("purgecast_index_entries").set(store.count_all() as f64);
    }
}

fn flush(store: &Store, reason: &str) -> Result<(), String> {
    let n = store.flush_index().map_err(|e| e.to_string())?;
    metrics::counter!("purgecast_flushes_total").increment(1);
    tracing::error!(removed = n, %reason, "FLUSHED the whole local index: this node missed purges no peer retains");
    Ok(())
}

/// Sleeps `wait`, waking early only to return false when the protocol loop
/// has stopped (then held purges are dropped: they are not in the store, so
/// peers send them again after the restart).
fn pause(done: &mpsc::UnboundedSender<Done>, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        if done.is_closed() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A purge waiting for its write, with the ticket that acks it.
type Pending = (Arc<Purge>, ApplyTicket);

impl From<Pending> for Job {
    fn from((purge, ticket): Pending) -> Job {
        Job::Apply { purge, ticket }
    }
}

/// Writes one batch; on failure hands the batch back, tickets and all, to
/// be held and retried.
fn write_batch(store: &Store, batch: Vec<Pending>, done: &mut Done) -> Result<(), (String, Vec<Pending>)> {
    if batch.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let now = now_ms();
    let stamped: Vec<(&Purge, u64)> = batch.iter().map(|(p, _)| (p.as_ref(), now)).collect();
    let written = store.apply_purges(&stamped);
    drop(stamped);
    match written {
        Ok(outcomes) => {
            let removed: u64 = outcomes.iter().map(|o| o.removed).sum();
            let marked_stale: u64 = outcomes.iter().map(|o| o.marked_stale).sum();
            metrics::histogram!("purgecast_purge_apply_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("purgecast_purges_applied_total").increment(batch.len() as u64);
            metrics::counter!("purgecast_entries_removed_total").increment(removed);
            metrics::counter!("purgecast_entries_marked_stale_total").increment(marked_stale);
            let deferred = outcomes.iter().filter(|o| o.deferred).count() as u64;
            if deferred > 0 {
                metrics::counter!("purgecast_purges_deferred_total").increment(deferred);
                metrics::gauge!("purgecast_store_deferred_purges").set(store.deferred_purges() as f64);
            }
            done.applied.extend(batch.into_iter().map(|(_, ticket)| ticket));
            Ok(())
        }
        Err(e) => {
            let e = e.to_string();
            done.failed.extend(batch.iter().map(|(p, _)| (p.id, e.clone())));
            Err((e, batch))
        }
    }
}

/// Meta key of the last time this node was known to be up (Unix ms).
pub const LAST_ALIVE: &str = "last_alive_ms";
