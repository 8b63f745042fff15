//! The edge's metrics, named in one place (the dashboards and alerts in
//! deploy/monitoring reference these names; a test checks they exist).

use std::sync::OnceLock;

use metrics::{counter, gauge, Counter};

/// The `outcome` labels of `purgecast_edge_requests_total`.
const OUTCOMES: [&str; 6] = ["hit", "miss", "stale", "revalidated", "bypass", "error"];

/// Handles of the counters every request touches, looked up once: a lookup
/// in the registry hashes the name and labels each time. The recorder is
/// installed before the edge serves, so the first lookup finds it.
fn per_request(slot: &'static OnceLock<Counter>, make: impl FnOnce() -> Counter) -> &'static Counter {
    slot.get_or_init(make)
}

/// How a request was answered, the `outcome` label of
/// `purgecast_edge_requests_total`.
pub(crate) fn request(outcome: &'static str, collapsed: bool) {
    static BY_OUTCOME: [OnceLock<Counter>; OUTCOMES.len()] = [const { OnceLock::new() }; OUTCOMES.len()];
    match OUTCOMES.iter().position(|o| *o == outcome) {
        Some(i) => {
            per_request(&BY_OUTCOME[i], || counter!("purgecast_edge_requests_total", "outcome" => outcome)).increment(1)
        }
        None => counter!("purgecast_edge_requests_total", "outcome" => outcome).increment(1),
    }
    if collapsed {
        counter!("purgecast_edge_collapsed_requests_total").increment(1);
    }
}

pub(crate) fn origin_fetch(status: u16) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("purgecast_edge_origin_fetches_total", "status" => class).increment(1);
}

pub(crate) fn origin_error() {
    counter!("purgecast_edge_origin_errors_total").increment(1);
}

pub(crate) fn bytes_served(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    per_request(&C, || counter!("purgecast_edge_hit_bytes_total")).increment(n as u64);
}

/// Body bytes sent to clients, hits and misses alike.
pub(crate) fn served(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    per_request(&C, || counter!("purgecast_edge_served_bytes_total")).increment(n as u64);
}

pub(crate) fn revalidated() {
    counter!("purgecast_edge_revalidations_total").increment(1);
}

pub(crate) fn stored() {
    counter!("purgecast_edge_fills_total", "result" => "stored").increment(1);
}

/// A fill dropped because a purge applied while it was in flight matched.
pub(crate) fn fill_raced() {
    counter!("purgecast_edge_fills_total", "result" => "raced").increment(1);
}

pub(crate) fn evicted(bytes: u64) {
    counter!("purgecast_edge_evictions_total").increment(1);
    counter!("purgecast_edge_evicted_bytes_total").increment(bytes);
}

pub(crate) fn cached(objects: u64, bytes: u64) {
    gauge!("purgecast_edge_objects").set(objects as f64);
    gauge!("purgecast_edge_cached_bytes").set(bytes as f64);
}

/// The hot tier: copies of small objects kept in memory.
pub(crate) fn in_memory(objects: u64, bytes: u64) {
    gauge!("purgecast_edge_memory_objects").set(objects as f64);
    gauge!("purgecast_edge_memory_bytes").set(bytes as f64);
}

pub(crate) fn caught_up(yes: bool) {
    gauge!("purgecast_edge_caught_up").set(if yes { 1.0 } else { 0.0 });
}

/// Registers every series at zero, so dashboards and alerts find them on a
/// node that has not served anything yet.
pub(crate) fn describe() {
    for outcome in OUTCOMES {
        counter!("purgecast_edge_requests_total", "outcome" => outcome).absolute(0);
    }
    for status in ["2xx", "3xx", "4xx", "5xx"] {
        counter!("purgecast_edge_origin_fetches_total", "status" => status).absolute(0);
    }
    for result in ["stored", "raced"] {
        counter!("purgecast_edge_fills_total", "result" => result).absolute(0);
    }
    for name in [
        "purgecast_edge_collapsed_requests_total",
        "purgecast_edge_origin_errors_total",
        "purgecast_edge_hit_bytes_total",
        "purgecast_edge_served_bytes_total",
        "purgecast_edge_revalidations_total",
        "purgecast_edge_evictions_total",
        "purgecast_edge_evicted_bytes_total",
    ] {
        counter!(name).absolute(0);
    }
}
