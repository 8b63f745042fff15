//! A purge: what to remove, how, and where it came from.

use crate::id::{NodeId, PurgeId, StreamId};
use crate::selector::{Selector, SelectorError};

/// At most this many selectors in one purge (a CDN API takes ~100 a call).
pub const MAX_SELECTORS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Delete matching entries.
    #[default]
    Hard,
    /// Keep matching entries but mark them stale (revalidate before serving).
    Soft,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub id: PurgeId,
    pub stream: StreamId,
    /// Position in the stream, from 1, without gaps.
    pub seq: u64,
    pub selectors: Vec<Selector>,
    pub mode: Mode,
    /// Unix milliseconds when the origin accepted it (wall clock; used as
    /// the stale-since time of soft purges).
    pub issued_at_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PurgeError {
    #[error("a purge needs at least one selector")]
    NoSelectors,
    #[error("too many selectors: {0} (at most {MAX_SELECTORS} in one purge)")]
    TooManySelectors(usize),
    #[error("selector {index}: {source}")]
    Selector { index: usize, source: SelectorError },
    #[error("seq must start at 1")]
    ZeroSeq,
}

impl Purge {
    pub fn origin(&self) -> NodeId {
        self.stream.origin
    }

    /// Checks everything a peer could get wrong.
    pub fn validate(&self) -> Result<(), PurgeError> {
        validate_selectors(&self.selectors)?;
        if self.seq == 0 {
            return Err(PurgeError::ZeroSeq);
        }
        Ok(())
    }

    pub fn approx_len(&self) -> usize {
        48 + self.selectors.iter().map(Selector::approx_len).sum::<usize>()
    }
}

pub fn validate_selectors(selectors: &[Selector]) -> Result<(), PurgeError> {
    if selectors.is_empty() {
        return Err(PurgeError::NoSelectors);
    }
    if selectors.len() > MAX_SELECTORS {
        return Err(PurgeError::TooManySelectors(selectors.len()));
    }
    for (index, s) in selectors.iter().enumerate() {
        s.validate().map_err(|source| PurgeError::Selector { index, source })?;
    }
    Ok(())
}
