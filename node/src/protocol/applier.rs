//! The apply worker: a dedicated thread that writes purges into the store.
//!
//! RocksDB calls block, and a synced write waits for the disk, so they stay
//! off the protocol loop. Whatever queued up while a write was in flight
//! goes into the next WriteBatch together, which is what makes a burst of
//! purges cheap.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use purgecast_core::{ApplyTicket, Purge, PurgeId};
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::store::Store;

/// Largest number of purges written in one batch.
const MAX_BATCH: usize = 1024;
/// Jobs queued for the worker. When it is full the driver keeps the rest
/// and stops reading from peers and clients until the worker catches up:
/// backpressure, never a dropped purge (the engine already counts it seen).
pub const QUEUE: usize = 4 * MAX_BATCH;

pub enum Job {
    /// The store syncs every batch (`StoreOptions::sync`), so a client gets
    /// the id of a purge it submitted only once it is on disk.
    /// The ticket goes back to the engine once the purge is on disk.
    Apply { purge: Arc<Purge>, ticket: ApplyTicket },
    /// Drop every index entry: this node missed purges nobody retains.
    Flush { reason: String },
}

/// Reported back to the protocol loop once a batch is in the store.
pub struct Done {
    /// Tickets of the purges now durable, for `Engine::applied`.
    pub applied: Vec<ApplyTicket>,
    /// Purges that could not be stored; their tickets are dropped, so no
    /// ack is sent for them.
    pub failed: Vec<(PurgeId, String)>,
}

pub fn spawn(store: Arc<Store>, retention: Duration, done: mpsc::UnboundedSender<Done>) -> std_mpsc::SyncSender<Job> {
    let (tx, rx) = std_mpsc::sync_channel::<Job>(QUEUE);
    let spawned = std::thread::Builder::new().name("purgecast-apply".into()).spawn(move || {
        let mut last_upkeep = Instant::now();
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => Some(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if let Some(first) = first {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let report = run_jobs(&store, jobs);
                if done.send(report).is_err() {
                    return;
                }
            }
            if last_upkeep.elapsed() >= Duration::from_secs(5) {
                last_upkeep = Instant::now();
                upkeep(&store, retention);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the apply thread");
    }
    tx
}

fn run_jobs(store: &Store, jobs: Vec<Job>) -> Done {
    let mut done = Done { applied: Vec::new(), failed: Vec::new() };
    let mut batch = Batch::default();
    let now = now_ms();
    for job in jobs {
        match job {
            Job::Apply { purge, ticket } => {
                batch.purges.push((purge, now));
                batch.tickets.push(ticket);
            }
            Job::Flush { reason } => {
                // Purges queued before the flush go in first: order matters.
                write_batch(store, &mut batch, &mut done);
                match store.flush_index() {
                    Ok(n) => {
                        metrics::counter!("purgecast_flushes_total").increment(1);
                        tracing::error!(removed = n, %reason, "FLUSHED the whole local index: this node missed purges no peer retains");
                    }
                    Err(e) => tracing::error!(error = %e, "index flush failed"),
                }
            }
        }
    }
    write_batch(store, &mut batch, &mut done);
    done
}

/// Purges to write together, with their tickets in the same order.
#[derive(Default)]
struct Batch {
    purges: Vec<(Arc<Purge>, u64)>,
    tickets: Vec<ApplyTicket>,
}

fn write_batch(store: &Store, batch: &mut Batch, done: &mut Done) {
    let Batch { purges: batch, tickets } = batch;
    if batch.is_empty() {
        return;
    }
    let started = Instant::now();
    match store.apply_purges(batch) {
        Ok(outcomes) => {
            let removed: u64 = outcomes.iter().map(|o| o.removed).sum();
            let marked_stale: u64 = outcomes.iter().map(|o| o.marked_stale).sum();
            let secs = started.elapsed().as_secs_f64();
            metrics::histogram!("purgecast_purge_apply_seconds").record(secs);
            metrics::counter!("purgecast_purges_applied_total").increment(batch.len() as u64);
            metrics::counter!("purgecast_entries_removed_total").increment(removed);
            metrics::counter!("purgecast_entries_marked_stale_total").increment(marked_stale);
            done.applied.append(tickets);
        }
        Err(e) => {
            tracing::error!(error = %e, purges = batch.len(), "applying purges failed");
            metrics::counter!("purgecast_apply_errors_total").increment(1);
            done.failed.extend(tickets.drain(..).map(|t| (t.purge_id(), e.to_string())));
        }
    }
    batch.clear();
}

/// Meta key of the last time this node was known to be up (Unix ms).
pub const LAST_ALIVE: &str = "last_alive_ms";

fn upkeep(store: &Store, retention: Duration) {
    if let Err(e) = store.put_meta(LAST_ALIVE, &now_ms().to_be_bytes()) {
        tracing::warn!(error = %e, "recording liveness failed");
    }
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    match store.prune_purge_log(cutoff) {
        Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned applied-purge log"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning the purge log failed"),
    }
    if let Err(e) = store.compact_purged_ranges() {
        tracing::warn!(error = %e, "compacting purged ranges failed");
    }
    metrics::gauge!("purgecast_index_entries").set(store.count_all() as f64);
}
