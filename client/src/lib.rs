//! Client library for the purgecast gRPC API, and the pieces `purgectl`
//! is built from (selector parsing, bulk entry files, the
//! purge-latency benchmark).

pub mod bench;
pub mod client;
pub mod error;
pub mod jsonl;
pub mod selector;
pub mod stats;

pub use client::{normalize_endpoint, Client, EntryFilter};
pub use error::ClientError;
pub use purgecast_proto::api;
