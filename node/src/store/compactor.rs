//! The compactor: a thread of its own that runs [`Store::compact_purged_ranges`]
//! every few seconds. A full compaction of ten million entries takes most
//! of a minute; on the apply worker it would hold every purge that long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Compacted, Store};

/// Stops the thread when dropped. The thread holds the store only while
/// it compacts, so dropping the last other handle still closes the
/// database, at worst after the compaction in progress.
#[derive(Debug)]
pub struct Compactor {
    stop: Arc<AtomicBool>,
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the compactor; `every` is the pause between two rounds.
pub fn spawn_compactor(store: &Arc<Store>, every: Duration) -> std::io::Result<Compactor> {
    let stop = Arc::new(AtomicBool::new(false));
    let weak = Arc::downgrade(store);
    let flag = stop.clone();
    std::thread::Builder::new().name("purgecast-compact".into()).spawn(move || run(weak, every, flag))?;
    Ok(Compactor { stop })
}

fn run(store: Weak<Store>, every: Duration, stop: Arc<AtomicBool>) {
    loop {
        let until = Instant::now() + every;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100).min(every));
        }
        let Some(store) = store.upgrade() else { return };
        let started = Instant::now();
        match store.compact_purged_ranges() {
            Ok(Compacted { runs: 0, .. }) => {}
            Ok(Compacted { runs, full }) => {
                let kind = if full { "full" } else { "ranges" };
                let took = started.elapsed();
                metrics::counter!("purgecast_store_compactions_total", "kind" => kind).increment(1);
                metrics::histogram!("purgecast_store_compaction_seconds", "kind" => kind).record(took.as_secs_f64());
                if full {
                    tracing::info!(
                        runs,
                        took_ms = took.as_millis() as u64,
                        entries = store.count_all(),
                        "compacted the index families after many removals"
                    );
                } else {
                    tracing::debug!(runs, took_ms = took.as_millis() as u64, "compacted purged ranges");
                }
            }
            Err(e) => tracing::warn!(error = %e, "compacting purged ranges failed"),
        }
    }
}
