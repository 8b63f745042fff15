//! Sinks: the caches an operator already runs (Varnish, nginx, Apache
//! Traffic Server, or anything behind a webhook), purged by this node
//! beside its own store.
//!
//! The store writes each applied purge into every sink's backlog in the
//! same batch (see `store::sinks`). One worker per sink reads its backlog in
//! apply order, sends each purge through the sink's [`Connector`] until the
//! cache confirms it, then deletes the row and reports the purge to the
//! protocol loop, which acks it to its origin once no sink owes it. So a
//! purge is acked only when every cache on the node has it, a cache that is
//! down gets its backlog when it is back, and a restart loses nothing.

mod config;
mod http;
mod urls;
mod varnish;
mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use purgecast_core::{Purge, PurgeId, Selector};
use tokio::sync::{mpsc, watch, Notify};

pub use config::{validate_all, SinkConfig, SinkKind};
pub use http::SinkError;

use crate::health::{Health, SINKS};
use crate::store::Store;

/// Backlog rows a worker reads at a time.
const READ_BATCH: usize = 64;
/// Pause before the first retry of a failed purge; doubles up to the max.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What a cache did with a purge it confirmed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Kinds of selectors the cache cannot apply and left alone.
    pub skipped: Vec<&'static str>,
}

/// How purges reach one kind of cache. `apply` returns once the cache has
/// confirmed the whole purge; an error means it must be sent again (a
/// cache's purge is idempotent).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn apply(&self, purge: &Purge) -> Result<Outcome, SinkError>;

    /// What of `purge` to send a second time after `repeat_after`: the
    /// selectors for which the cache skips objects being fetched. None:
    /// nothing.
    fn repeat_of(&self, purge: &Purge) -> Option<Purge> {
        let _ = purge;
        None
    }
}

/// `purge` with only the selectors `keep` accepts; None when none is left.
fn only(purge: &Purge, keep: impl Fn(&Selector) -> bool) -> Option<Purge> {
    let selectors: Vec<Selector> = purge.selectors.iter().filter(|s| keep(s)).cloned().collect();
    (!selectors.is_empty()).then(|| Purge { selectors, ..purge.clone() })
}

fn connector(cfg: &SinkConfig) -> Result<Arc<dyn Connector>, SinkError> {
    let base = |a: &Option<String>| format!("http://{}", a.as_deref().unwrap_or_default());
    Ok(match cfg.kind {
        SinkKind::Varnish => {
            Arc::new(varnish::Varnish { http: http::client(cfg.timeout, None)?, base: base(&cfg.address) })
        }
        SinkKind::Nginx | SinkKind::Ats => {
            Arc::new(urls::UrlPurger { http: http::client(cfg.timeout, None)?, base: base(&cfg.address) })
        }
        SinkKind::Webhook => Arc::new(webhook::Webhook {
            http: http::client(cfg.timeout, cfg.ca_file.as_deref())?,
            url: cfg.url.clone().unwrap_or_default(),
            method: http::method(cfg.method.as_deref().unwrap_or("POST")),
            headers: cfg.headers.clone(),
        }),
    })
}

/// The running sinks: wake them when the store has new purges for them.
#[derive(Clone, Default)]
pub struct Sinks {
    wake: Vec<Arc<Notify>>,
}

impl Sinks {
    pub fn len(&self) -> usize {
        self.wake.len()
    }

    /// New purges are in the backlogs (a permit is kept if a worker is busy).
    pub fn wake(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// Starts one worker per sink. Each reports every purge its cache
/// confirmed on `confirmed`.
pub fn start(
    configs: &[SinkConfig],
    store: Arc<Store>,
    confirmed: mpsc::UnboundedSender<PurgeId>,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> Result<Sinks, SinkError> {
    let failing = Failing { health, by_sink: Arc::new(Mutex::new(BTreeMap::new())) };
    if !configs.is_empty() {
        failing.health.set_condition(SINKS, Ok(()));
    }
    let mut sinks = Sinks::default();
    for cfg in configs {
        let wake = Arc::new(Notify::new());
        let worker = Worker {
            name: cfg.name.clone(),
            connector: connector(cfg)?,
            store: store.clone(),
            confirmed: confirmed.clone(),
            wake: wake.clone(),
            shutdown: shutdown.clone(),
            not_ready_after: cfg.not_ready_after,
            repeat_after: cfg.repeat_after,
            failing: failing.clone(),
        };
        metrics::gauge!("purgecast_sink_failing", "sink" => cfg.name.clone()).set(0.0);
        for result in ["confirmed", "failed"] {
            metrics::counter!("purgecast_sink_purges_total", "sink" => cfg.name.clone(), "result" => result)
                .increment(0);
        }
        tracing::info!(sink = %cfg.name, kind = cfg.kind.as_str(), "sink started");
        tokio::spawn(worker.run());
        sinks.wake.push(wake);
    }
    Ok(sinks)
}

/// Why each sink that has failed longer than its `not_ready_after` fails;
/// the `sinks` readiness condition fails while there is one.
#[derive(Clone)]
struct Failing {
    health: Health,
    by_sink: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Failing {
    fn set(&self, sink: &str, why: Option<String>) {
        let mut by_sink = self.by_sink.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Some(why) => by_sink.insert(sink.to_string(), why),
            None => by_sink.remove(sink),
        };
        let state = if by_sink.is_empty() {
            Ok(())
        } else {
            Err(by_sink.iter().map(|(s, why)| format!("{s}: {why}")).collect::<Vec<_>>().join("; "))
        };
        self.health.set_condition(SINKS, state);
    }
}

struct Worker {
    name: String,
    connector: Arc<dyn Connector>,
    store: Arc<Store>,
    confirmed: mpsc::UnboundedSender<PurgeId>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    not_ready_after: Duration,
    repeat_after: Duration,
    failing: Failing,
}

impl Worker {
    async fn run(mut self) {
        // Apply sequence of the last row handled: reads seek past it, and so
        // past the tombstones of rows already confirmed.
        let mut after = 0u64;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let store = self.store.clone();
            let name = self.name.clone();
            let read = tokio::task::spawn_blocking(move || store.sink_backlog(&name, after, READ_BATCH)).await;
            let owed = match read {
                Ok(Ok(owed)) => owed,
                Ok(Err(e)) => {
                    tracing::error!(sink = %self.name, error = %e, "reading the sink backlog failed");
                    self.idle(MAX_RETRY_WAIT).await;
                    continue;
                }
                Err(e) => {
                    // The store task panicked: this worker cannot go on,
                    // and readiness says so rather than a silent stall.
                    tracing::error!(sink = %self.name, error = %e, "sink worker stopped: backlog read task failed");
                    self.failing.set(&self.name, Some(format!("worker stopped: {e}")));
                    return;
                }
            };
            if owed.is_empty() {
                self.idle(Duration::from_secs(1)).await;
                continue;
            }
            for o in owed {
                if !self.deliver(&o.purge).await {
                    return;
                }
                let (store, name, seq) = (self.store.clone(), self.name.clone(), o.apply_seq);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.confirm_sink(&name, seq)).await {
                    // The purge was applied; it may be sent again after a
                    // restart, which a cache's purge tolerates.
                    tracing::warn!(sink = %self.name, error = %e, "recording a confirmation failed");
                }
                after = o.apply_seq;
                // A local flush is no stream's purge: nobody waits for its ack.
                if !crate::store::is_flush(&o.purge) {
                    let _ = self.confirmed.send(o.purge.id);
                }
            }
        }
    }

    /// Waits for new rows, at most `d` (rows can also come from a restart).
    async fn idle(&mut self, d: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.changed() => {}
        }
    }

    /// Sends `purge` until the cache confirms it; false on shutdown.
    async fn deliver(&mut self, purge: &Purge) -> bool {
        let sink = self.name.clone();
        let mut wait = FIRST_RETRY_WAIT;
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.connector.apply(purge).await {
                Ok(outcome) => {
                    metrics::histogram!("purgecast_sink_request_seconds", "sink" => sink.clone())
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("purgecast_sink_purges_total", "sink" => sink.clone(), "result" => "confirmed")
                        .increment(1);
                    for kind in outcome.skipped {
                        metrics::counter!("purgecast_sink_skipped_total", "sink" => sink.clone(), "selector" => kind)
                            .increment(1);
                    }
                    if failing_since.is_some() {
                        tracing::info!(sink = %sink, "sink confirms purges again");
                        metrics::gauge!("purgecast_sink_failing", "sink" => sink.clone()).set(0.0);
                        self.failing.set(&sink, None);
                    }
                    if let Some(again) = self.connector.repeat_of(purge).filter(|_| !self.repeat_after.is_zero()) {
                        self.repeat(again);
                    }
                    return true;
                }
                Err(e) => {
                    metrics::counter!("purgecast_sink_purges_total", "sink" => sink.clone(), "result" => "failed")
                        .increment(1);
                    let since = *failing_since.get_or_insert(started);
                    metrics::gauge!("purgecast_sink_failing", "sink" => sink.clone()).set(1.0);
                    tracing::warn!(sink = %sink, id = %purge.id, error = %e, retry_in_ms = wait.as_millis() as u64, "sink purge failed");
                    if since.elapsed() >= self.not_ready_after {
                        let secs = since.elapsed().as_secs();
                        self.failing.set(&sink, Some(format!("failing for {secs}s: {e}")));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.changed() => return false,
            }
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
    }

    /// Sends the purge again later, for objects the cache was fetching the
    /// first time (it skips them). Best effort: a few tries, then a warning.
    fn repeat(&self, purge: Purge) {
        let connector = self.connector.clone();
        let sink = self.name.clone();
        let after = self.repeat_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            for attempt in 0..3u32 {
                match connector.apply(&purge).await {
                    Ok(_) => {
                        metrics::counter!("purgecast_sink_repeats_total", "sink" => sink, "result" => "confirmed")
                            .increment(1);
                        return;
                    }
                    Err(e) if attempt == 2 => {
                        tracing::warn!(sink = %sink, id = %purge.id, error = %e, "the repeated purge failed");
                    }
                    Err(_) => tokio::time::sleep(FIRST_RETRY_WAIT * 2u32.pow(attempt)).await,
                }
            }
            metrics::counter!("purgecast_sink_repeats_total", "sink" => sink, "result" => "failed").increment(1);
        });
    }
}
