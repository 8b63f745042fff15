//! The purgecast node: drives the sans-IO core with tokio, QUIC and RocksDB.

pub mod api;
pub mod applier;
pub mod config;
pub mod dev;
pub mod driver;
pub mod index_api;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;
pub mod wan;
