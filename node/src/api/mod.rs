//! The gRPC services clients call: purges and their status, membership, and
//! the index a cache server fills. Every request is validated here; a bad
//! one gets INVALID_ARGUMENT saying what is wrong, never a crash.

mod index;
mod purge;

pub(crate) use index::IndexService;
pub(crate) use purge::PurgerService;

/// Most entries in one Put.
pub(crate) const MAX_PUT: usize = 10_000;
/// Most entries one List returns.
pub(crate) const MAX_LIST: u32 = 10_000;
