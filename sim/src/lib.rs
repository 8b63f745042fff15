//! purgesim: drives many instances of the purgecast core `Engine` (the same
//! code the node runs) with a discrete-event loop over a world map of
//! points of presence, next to baselines, and reports how close each gets
//! to the physical bound. Same seed, same output, byte for byte.

pub mod baseline;
pub mod cli;
pub mod engines;
pub mod fuzz;
pub mod metrics;
pub mod msg_kind;
pub mod net;
pub mod plot;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod topology;
pub mod workload;
pub mod world;
