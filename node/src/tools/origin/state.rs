//! What the origin remembers between requests: versions, hit counters, the
//! gate and the failure mode. Tests drive all of it through the control API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// A held request is answered anyway after this long, so a test that forgets
/// to open the gate cannot wedge a cache (or a benchmark) forever.
pub const GATE_MAX: Duration = Duration::from_secs(120);

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hits {
    pub hits: u64,
    pub conditional: u64,
}

#[derive(Default)]
struct Inner {
    /// Added to every path's version: one global bump invalidates everything
    /// without touching a per-path map that may hold thousands of keys.
    generation: u64,
    bumps: HashMap<String, u64>,
    total: Hits,
    paths: HashMap<String, Hits>,
}

pub struct Origin {
    inner: Mutex<Inner>,
    /// `true` while closed. A watch channel lets every held request wake on one send.
    gate: watch::Sender<bool>,
    waiting: AtomicU64,
    /// 0 when healthy, otherwise the status every object request gets.
    fail: AtomicU16,
}

/// Keeps `waiting` exact even when the connection drops and the handler
/// future is cancelled mid-wait.
struct Held<'a>(&'a AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Origin {
    fn default() -> Self {
        Self::new()
    }
}

impl Origin {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            gate: watch::Sender::new(false),
            waiting: AtomicU64::new(0),
            fail: AtomicU16::new(0),
        }
    }

    /// A panicking handler must not turn every later request into a 500:
    /// the counters stay meaningful after a poisoned lock.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn version(&self, path: &str) -> u64 {
        let inner = self.lock();
        1 + inner.generation + inner.bumps.get(path).copied().unwrap_or(0)
    }

    pub fn bump_all(&self) -> u64 {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.generation
    }

    /// Returns the path's new version.
    pub fn bump_path(&self, path: &str) -> u64 {
        let mut inner = self.lock();
        let generation = inner.generation;
        let n = inner.bumps.entry(path.to_string()).or_insert(0);
        *n += 1;
        1 + generation + *n
    }

    pub fn count(&self, path: &str, conditional: bool) {
        let mut inner = self.lock();
        let add = |h: &mut Hits| {
            h.hits += 1;
            h.conditional += u64::from(conditional);
        };
        add(&mut inner.total);
        add(inner.paths.entry(path.to_string()).or_default());
    }

    pub fn hits(&self) -> (Hits, Vec<(String, u64)>) {
        let inner = self.lock();
        let mut paths: Vec<_> = inner.paths.iter().map(|(p, h)| (p.clone(), h.hits)).collect();
        paths.sort();
        (inner.total, paths)
    }

    pub fn path_hits(&self, path: &str) -> Hits {
        self.lock().paths.get(path).copied().unwrap_or_default()
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.total = Hits::default();
        inner.paths.clear();
    }

    pub fn set_gate(&self, closed: bool) {
        // `send_replace` works with no receiver, unlike `send`.
        self.gate.send_replace(closed);
    }

    pub fn gate(&self) -> (bool, u64) {
        (*self.gate.borrow(), self.waiting.load(Ordering::SeqCst))
    }

    /// Waits while the gate is closed, at most `GATE_MAX`.
    pub async fn pass_gate(&self) {
        let mut rx = self.gate.subscribe();
        if !*rx.borrow_and_update() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.waiting);
        let _ = tokio::time::timeout(GATE_MAX, rx.wait_for(|closed| !closed)).await;
    }

    pub fn set_fail(&self, status: u16) {
        self.fail.store(status, Ordering::SeqCst);
    }

    pub fn failing(&self) -> Option<u16> {
        Some(self.fail.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}
