//! The purgecast protocol as a sans-IO state machine.
//!
//! [`Engine`] takes inputs — a message from a peer, a local purge, a
//! timeout, with the current time passed in as a value — and queues outputs:
//! messages to send, purges to apply, events. It never touches a socket, a
//! clock or a global RNG: randomness comes from a seed given at construction.
//! The node daemon drives it with tokio and QUIC; the simulator drives the
//! very same code with a discrete-event loop.

pub mod config;
pub mod engine;
pub mod hash;
pub mod id;
mod idset;
pub mod member;
pub mod message;
pub mod purge;
pub mod seen;
pub mod selector;
pub mod swim;
mod targets;
pub mod time;
pub mod tracker;
pub mod wire;

pub use config::{Config, Strategy};
pub use engine::{Engine, Event, Output};
pub use id::{NodeId, PurgeId, StreamId};
pub use member::{Location, Member, MemberState, Profile};
pub use message::{Message, Stage};
pub use purge::{Mode, Purge};
pub use selector::{Selector, SelectorError};
pub use time::Time;
pub use tracker::PurgeStatus;
