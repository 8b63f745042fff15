//! Protocol parameters. The node reads them from its config file (the
//! `[protocol]` table, through serde; durations as human strings such as
//! "500ms" or "24h"); the simulator sweeps them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::human;

/// How a purge spreads from its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Topology-aware active fanout (the default): the origin pushes at once
    /// to `pop_entry` members of every PoP, and each of them to the rest of
    /// its PoP. One WAN hop per PoP, so delivery tracks the direct fibre
    /// latency from the origin.
    #[default]
    Topology,
    /// Flat random gossip: every node, on first receipt, pushes to `fanout`
    /// random members. Kept for comparison in the simulator.
    Gossip,
}

/// The protocol's parameters; every node of a cluster should use the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How a purge spreads from its origin.
    pub strategy: Strategy,
    /// Random peers per push in flat gossip and in large PoPs; `None`
    /// derives ceil(ln n) + 2 from the number of reachable members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<usize>,
    /// Members of each remote PoP the origin pushes to (redundancy against
    /// loss and a dead entry node).
    pub pop_entry: usize,
    /// A PoP up to this size is covered by its entry nodes directly; above
    /// it, the entries gossip inside the PoP with `fanout`.
    pub pop_direct_max: usize,
    /// Anti-entropy period; each round sends a digest to `ae_peers` peers.
    #[serde(with = "human")]
    pub ae_interval: Duration,
    /// Peers each anti-entropy round sends the digest to.
    pub ae_peers: usize,
    /// Most purges in one catch-up message.
    pub ae_batch: usize,
    /// How long applied purges are kept for catch-up.
    #[serde(with = "human")]
    pub retention: Duration,
    /// Upper bound on purges kept in memory for catch-up, whatever their age.
    pub retention_max_purges: usize,
    /// Completion tracking of purges this node originated: how many...
    pub track_max: usize,
    /// ...and for how long.
    #[serde(with = "human")]
    pub track_for: Duration,
    /// Failure detection (SWIM): probe period.
    #[serde(with = "human")]
    pub probe_interval: Duration,
    /// Direct-ack timeout of a probe, before indirect probes.
    #[serde(with = "human")]
    pub probe_timeout: Duration,
    /// Helpers asked for an indirect probe.
    pub probe_helpers: usize,
    /// How long a suspect has to refute before it is declared dead.
    #[serde(with = "human")]
    pub suspect_timeout: Duration,
    /// A member dead (or gone) this long is dropped from the member table,
    /// so nothing knocks on it any more (see `reconnect`); if it comes
    /// back, its join or its own knocks teach the cluster of it again. As
    /// long as purge retention: a member down longer has to flush its index
    /// anyway.
    #[serde(with = "human")]
    pub forget_dead_after: Duration,
    /// Membership updates piggybacked on each probe message.
    pub piggyback_max: usize,
    /// Members that got a purge through the PoP fanout ack to one member
    /// of their PoP (the same for every purge of an origin), which relays
    /// them in batches, so an origin handles acks per PoP rather than per
    /// member (`engine/relay.rs`).
    pub ack_relay: bool,
    /// How long a relay collects acks after the first before sending them.
    #[serde(with = "human")]
    pub ack_flush: Duration,
    /// Least time between two batches of acks from one relay to one
    /// origin: under a stream of purges one batch carries all of this
    /// span's, so an origin's ack load is about PoPs / `ack_spacing` per
    /// second whatever its rate (0: every batch after `ack_flush`).
    #[serde(with = "human")]
    pub ack_spacing: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::Topology,
            fanout: None,
            // Three copies per remote PoP: with 1% loss, two copies leave
            // ~3% of purges waiting on a QUIC retransmission to some PoP
            // (the simulator's P99 went from 3.5x to 1.03x the fibre bound).
            pop_entry: 3,
            pop_direct_max: 32,
            ae_interval: Duration::from_millis(500),
            ae_peers: 1,
            ae_batch: 512,
            retention: Duration::from_secs(24 * 3600),
            retention_max_purges: 1_000_000,
            track_max: 100_000,
            track_for: Duration::from_secs(3600),
            // The direct-ack timeout must exceed a worldwide RTT (~300 ms
            // over fibre) plus a retransmission, or far members are
            // suspected all the time and suspicion news floods the
            // piggyback queues (simulated: thousands of false deaths per
            // minute at 3,300 members with 200 ms / 500 ms).
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(600),
            probe_helpers: 3,
            suspect_timeout: Duration::from_secs(2),
            // Serf's reconnect_timeout; a partition longer than this on both
            // sides splits the cluster until a node restarts or rejoins.
            forget_dead_after: Duration::from_secs(24 * 3600),
            piggyback_max: 8,
            // Simulated, 330 PoPs x 10, 100 purges/s through one origin: the
            // origin's acks per purge fall from 3,134 to 473 and completion
            // P50 from 6.4 s (an origin saturated by acks) to 141 ms.
            ack_relay: true,
            // A few intra-PoP round trips: most of a PoP's acks in one batch
            // for little added completion time.
            ack_flush: Duration::from_millis(2),
            // Simulated, 330 PoPs x 10, 1,000 purges/s through one origin
            // (docs/benchmarks.md): 17 ack messages per purge reach it
            // instead of 468, and completion stays at 1.01x the fibre
            // bound instead of 42x. The origin learns of applies up to
            // 20 ms later under such a stream, not at all later alone.
            ack_spacing: Duration::from_millis(20),
        }
    }
}

/// A parameter that parses but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protocol.{key}: {reason}")]
pub struct ConfigError {
    /// The parameter.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Config {
    /// Checks what serde cannot: zero periods and counts that would stop
    /// the protocol.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("ae_interval", self.ae_interval.is_zero()),
            ("probe_interval", self.probe_interval.is_zero()),
            ("probe_timeout", self.probe_timeout.is_zero()),
            ("ack_flush", self.ack_relay && self.ack_flush.is_zero()),
        ];
        for (key, zero) in positive {
            if zero {
                return Err(ConfigError { key, reason: "must be longer than 0" });
            }
        }
        let at_least_one = [
            ("pop_entry", self.pop_entry),
            ("ae_peers", self.ae_peers),
            ("ae_batch", self.ae_batch),
            ("retention_max_purges", self.retention_max_purges),
            ("fanout", self.fanout.unwrap_or(1)),
        ];
        for (key, n) in at_least_one {
            if n == 0 {
                return Err(ConfigError { key, reason: "must be at least 1" });
            }
        }
        // An ack held longer than an anti-entropy period would be chased
        // (`ask_owing`) before it leaves.
        if self.ack_relay && self.ack_flush + self.ack_spacing > self.ae_interval {
            return Err(ConfigError {
                key: "ack_spacing",
                reason: "ack_flush + ack_spacing must not exceed ae_interval",
            });
        }
        Ok(())
    }

    /// ceil(ln n) + 2, at least 1: the fanout that reaches everyone with
    /// high probability in flat gossip (Erdős–Rényi threshold plus margin).
    pub fn fanout_for(&self, n: usize) -> usize {
        self.fanout.unwrap_or_else(|| ((n.max(1) as f64).ln().ceil() as usize) + 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_may_not_be_held_past_an_anti_entropy_period() {
        assert_eq!(Config::default().validate(), Ok(()));
        let ms = Duration::from_millis;
        let held = Config { ack_spacing: ms(499), ..Config::default() };
        assert_eq!(held.validate().map_err(|e| e.key), Err("ack_spacing"), "2 ms + 499 ms > 500 ms");
        assert_eq!(Config { ack_spacing: ms(498), ..Config::default() }.validate(), Ok(()));
        assert_eq!(Config { ack_spacing: Duration::ZERO, ..Config::default() }.validate(), Ok(()));
        assert_eq!(Config { ack_relay: false, ..held }.validate(), Ok(()), "no relays, nothing held");
    }
}
