//! The APIs clients call: gRPC (purges and their status, the audit log,
//! membership, and the index a cache server fills) and the Cloudflare- and
//! Fastly-shaped HTTP purge APIs. Every request is validated and checked
//! against its token by the front door (`front`); a bad one gets a clear
//! error saying what is wrong, never a crash.

mod front;
pub(crate) mod http;
mod index;
mod purge;

pub(crate) use front::{Front, PurgeCall};
pub(crate) use index::IndexService;
pub(crate) use purge::PurgerService;

/// Most entries in one Put.
pub(crate) const MAX_PUT: usize = 10_000;
/// Most entries one List returns.
pub(crate) const MAX_LIST: u32 = 10_000;
