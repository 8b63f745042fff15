//! The sink backlog: purges the store has applied that an external cache
//! (a `[[sink]]`) has not confirmed yet.
//!
//! A purge's backlog rows are written in the batch that applies it, one per
//! configured sink, so a crash can never lose a purge for a cache: either
//! the store has the purge and every sink owes it, or neither. A sink
//! deletes its row when its cache confirms; the node acks the purge to its
//! origin once no sink owes it.
//!
//! Rows: `name_len (u8) | sink name | apply_seq (u64 BE)` -> purge record.
//! `apply_seq` is the store's purge sequence, so each sink's rows come back
//! in the order the purges were applied, and a reader that remembers where
//! it stopped seeks past the tombstones its confirmations left.

use purgecast_core::{Mode, NodeId, Purge, PurgeId, Selector, StreamId};

use super::codec::{self, Range};
use super::*;

/// Longest sink name (it prefixes each of the sink's keys).
pub const MAX_SINK_NAME: usize = 64;

/// A purge a sink owes, with its place in the sink's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub sink: String,
    pub apply_seq: u64,
    pub purge: Purge,
}

/// The purge a local index flush stands for: everything, hard. Its
/// sequence number 0 marks it as no stream's purge (real ones count from
/// 1), so nobody acks it.
pub fn flush_purge() -> Purge {
    Purge {
        id: PurgeId(0),
        stream: StreamId { origin: NodeId(0), epoch: 0 },
        seq: 0,
        selectors: vec![Selector::Everything],
        mode: Mode::Hard,
        issued_at_ms: 0,
        zone: String::new(),
        requested_by: String::new(),
    }
}

/// Whether `purge` is a local flush rather than a purge of the cluster.
pub fn is_flush(purge: &Purge) -> bool {
    purge.seq == 0
}

pub(crate) fn sink_prefix(sink: &str) -> Vec<u8> {
    let name = &sink.as_bytes()[..sink.len().min(MAX_SINK_NAME)];
    let mut k = Vec::with_capacity(1 + name.len() + 8);
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k
}

pub(crate) fn sink_key(sink: &str, apply_seq: u64) -> Vec<u8> {
    let mut k = sink_prefix(sink);
    k.extend_from_slice(&apply_seq.to_be_bytes());
    k
}

fn decode_key(k: &[u8]) -> Result<(String, u64), CodecError> {
    let len = usize::from(*k.first().ok_or(CodecError::Key(k.len()))?);
    if k.len() != 1 + len + 8 {
        return Err(CodecError::Key(k.len()));
    }
    let name = String::from_utf8_lossy(&k[1..1 + len]).into_owned();
    let seq = u64::from_be_bytes(k[1 + len..].try_into().map_err(|_| CodecError::Key(k.len()))?);
    Ok((name, seq))
}

impl Store {
    /// Up to `limit` purges `sink` owes with an apply sequence above
    /// `after`, oldest first.
    pub fn sink_backlog(&self, sink: &str, after: u64, limit: usize) -> Result<Vec<Owed>> {
        let prefix = Range::prefix(sink_prefix(sink));
        self.owed(&Range { lower: sink_key(sink, after.saturating_add(1)), upper: prefix.upper }, limit as u64)
    }

    /// Every purge any sink owes (at start-up, to hold back their acks).
    pub fn unconfirmed(&self) -> Result<Vec<Owed>> {
        self.owed(&Range::all(), u64::MAX)
    }

    fn owed(&self, range: &Range, limit: u64) -> Result<Vec<Owed>> {
        let mut out = Vec::new();
        self.for_each_row(self.cf(CF_SINKS)?, range, limit, |k, v| {
            let (sink, apply_seq) = decode_key(k).map_err(corrupt("sink backlog key"))?;
            let (purge, _) = codec::decode_purge_record(v).map_err(corrupt("sink backlog record"))?;
            out.push(Owed { sink, apply_seq, purge });
            Ok(true)
        })?;
        Ok(out)
    }

    /// `sink`'s cache confirmed the purge at `apply_seq`. Not synced: a
    /// confirmation lost in a crash only sends that purge again.
    pub fn confirm_sink(&self, sink: &str, apply_seq: u64) -> Result<()> {
        self.db.delete_cf_opt(self.cf(CF_SINKS)?, sink_key(sink, apply_seq), &self.write_opts(false))?;
        Ok(())
    }

    /// Drops the whole backlog of a sink that is no longer configured.
    pub fn forget_sink(&self, sink: &str) -> Result<()> {
        let range = Range::prefix(sink_prefix(sink));
        self.db.delete_range_cf_opt(self.cf(CF_SINKS)?, &range.lower, &range.upper, &self.write_opts(true))?;
        Ok(())
    }
}
