//! Readiness as a set of named conditions.
//!
//! Each subsystem that can make the node unfit to take traffic owns one
//! condition (`store`, later sinks or the edge) and sets it whenever it
//! learns something; the node is ready when every condition holds. Both
//! `/readyz` (HTTP, for load balancers and Kubernetes) and the gRPC health
//! service (for gRPC-aware balancers) show the same answer, and `/readyz`
//! says which condition fails and why.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Conditions by name; `Err` carries why it fails.
type Conditions = BTreeMap<&'static str, Result<(), String>>;

/// Condition that holds once the node serves its API, and fails again on shutdown.
pub const SERVING: &str = "serving";
/// Condition the apply worker keeps: the last store write succeeded.
pub const STORE: &str = "store";
/// Condition the sinks keep: no external cache has failed for longer than
/// its `not_ready_after`.
pub const SINKS: &str = "sinks";

#[derive(Clone)]
pub struct Health {
    conditions: Arc<watch::Sender<Conditions>>,
}

impl Default for Health {
    fn default() -> Self {
        let start = Conditions::from([(SERVING, Err("starting".to_string()))]);
        Health { conditions: Arc::new(watch::Sender::new(start)) }
    }
}

impl Health {
    /// Records the state of one condition; watchers wake only on a change.
    pub fn set_condition(&self, name: &'static str, state: Result<(), String>) {
        self.conditions.send_if_modified(|c| {
            if c.get(name) == Some(&state) {
                return false;
            }
            match &state {
                Ok(()) => tracing::info!(condition = name, "readiness condition holds again"),
                Err(why) => {
                    tracing::warn!(condition = name, reason = %why, "readiness condition fails: node not ready")
                }
            }
            metrics::gauge!("purgecast_ready_condition", "condition" => name).set(f64::from(u8::from(state.is_ok())));
            c.insert(name, state);
            true
        });
    }

    /// Why a condition fails, or None while it holds (or was never set).
    pub fn failing(&self, name: &str) -> Option<String> {
        self.conditions.borrow().get(name).and_then(|s| s.as_ref().err().cloned())
    }

    /// Every failing condition as `name: reason`, in name order.
    pub fn report(&self) -> Vec<String> {
        self.conditions
            .borrow()
            .iter()
            .filter_map(|(name, s)| s.as_ref().err().map(|why| format!("{name}: {why}")))
            .collect()
    }

    /// Mirrors readiness into the gRPC health service: the whole server
    /// ("") and each named service turn NOT_SERVING while any condition fails.
    pub fn spawn_grpc_mirror(&self, reporter: HealthReporter, services: Vec<&'static str>) {
        let mut rx = self.conditions.subscribe();
        tokio::spawn(async move {
            loop {
                let ready = rx.borrow_and_update().values().all(Result::is_ok);
                metrics::gauge!("purgecast_ready").set(f64::from(u8::from(ready)));
                let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                for name in std::iter::once("").chain(services.iter().copied()) {
                    reporter.set_service_status(name, status).await;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let h = Health::default();
        assert!(!h.report().is_empty(), "not ready before it serves");
        assert_eq!(h.report(), vec!["serving: starting".to_string()]);
        h.set_condition(SERVING, Ok(()));
        assert!(h.report().is_empty());
        h.set_condition(STORE, Err("disk full".into()));
        assert_eq!(h.failing(STORE).as_deref(), Some("disk full"));
        assert_eq!(h.report(), vec!["store: disk full".to_string()]);
        h.set_condition(STORE, Ok(()));
        assert!(h.report().is_empty());
        assert_eq!(h.failing(STORE), None);
    }
}
