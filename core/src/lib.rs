//! The purgecast protocol as a sans-IO state machine.
//!
//! [`Engine`] takes inputs — a message from a peer
//! ([`Engine::handle_message`]), a local purge ([`Engine::originate`]), an
//! acknowledged apply ([`Engine::applied`]), a timeout
//! ([`Engine::handle_timeout`]), with the current time passed in as a value
//! — and queues outputs ([`Engine::poll_output`], [`Engine::poll_timeout`]):
//! messages to send, purges to apply, events. It never touches a socket, a
//! clock or a global RNG: randomness comes from a seed given at
//! construction. The node daemon drives it with tokio and QUIC; the
//! simulator drives the very same code with a discrete-event loop.
//!
//! docs/protocol.md says where each rule lives.
#![warn(missing_docs)]

mod config;
mod duration;
mod engine;
mod hash;
mod id;
mod idset;
mod member;
mod message;
mod purge;
mod seen;
mod selector;
mod swim;
mod targets;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod time;
mod tracker;
pub mod wire;

pub use config::{Config, ConfigError, Strategy};
pub use duration::{format_duration, human as human_duration, parse_duration, DurationError};
pub use engine::{ApplyTicket, Engine, Event, OriginateError, Output, Seed, Stats, Timer, JOIN_RETRY};
pub use hash::{mix64, Keyed, KeyedMap};
pub use id::{BadPurgeId, NodeId, PurgeId, StreamId};
pub use member::{Location, Member, MemberState, Members, Profile};
pub use message::{Message, Stage, Watermark};
pub use purge::{validate_zone, Mode, Purge, PurgeError, Tenant, MAX_SELECTORS, MAX_ZONE_LEN};
pub use selector::{normalize_host, parse_url, CacheKey, Selector, SelectorError};
pub use time::Time;
pub use tracker::PurgeStatus;
