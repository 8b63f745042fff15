//! The purgecast node: drives the sans-IO core with tokio, QUIC and RocksDB.
//!
//! Layout, by concern:
//! - [`server`] wires a node together and runs it until shutdown;
//! - `protocol`: the loop that drives `purgecast_core::Engine` and the apply
//!   worker that writes purges to the store;
//! - `transport`: QUIC between nodes (mutual TLS from [`tls`]);
//! - [`store`]: the RocksDB cache index and purge log;
//! - `api`: the gRPC services clients call;
//! - `edge`: the HTTP cache in front of origins, stored in the same store;
//! - `sink`: the caches an operator already runs, purged beside the store;
//! - `tenants`: zones, scoped tokens and rate limits every API checks;
//! - `metrics`: Prometheus and the HTTP health checks;
//! - `health`: readiness as named conditions, shared by HTTP and gRPC;
//! - [`tools`]: operator commands that are not part of a running node
//!   (certificate generation, the local dev cluster).

mod api;
mod clock;
pub mod config;
mod edge;
mod health;
mod metrics;
mod protocol;
pub mod server;
mod sink;
pub mod store;
mod tenants;
pub mod tls;
pub mod tools;
mod transport;
