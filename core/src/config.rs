//! Protocol parameters. The node reads them from its config file; the
//! simulator sweeps them.

use std::time::Duration;

/// How a purge spreads from its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub strategy: Strategy,
    /// Random peers per push in flat gossip and in large PoPs; `None`
    /// derives ceil(ln n) + 2 from the number of reachable members.
    pub fanout: Option<usize>,
    /// Members of each remote PoP the origin pushes to (redundancy against
    /// loss and a dead entry node).
    pub pop_entry: usize,
    /// A PoP up to this size is covered by its entry nodes directly; above
    /// it, the entries gossip inside the PoP with `fanout`.
    pub pop_direct_max: usize,
    /// Anti-entropy period; each round sends a digest to `ae_peers` peers.
    pub ae_interval: Duration,
    pub ae_peers: usize,
    /// Most purges in one catch-up message.
    pub ae_batch: usize,
    /// How long applied purges are kept for catch-up.
    pub retention: Duration,
    /// Upper bound on purges kept in memory for catch-up, whatever their age.
    pub retention_max_purges: usize,
    /// Completion tracking of purges this node originated: how many, and
    /// for how long.
    pub track_max: usize,
    pub track_for: Duration,
    /// Failure detection (SWIM): probe period, direct-ack timeout, helpers
    /// for indirect probes, and how long a suspect has to refute.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub probe_helpers: usize,
    pub suspect_timeout: Duration,
    /// A member dead (or gone) this long is dropped from the member table,
    /// so nothing knocks on it any more (see `reconnect`); if it comes
    /// back, its join or its own knocks teach the cluster of it again. As
    /// long as purge retention: a member down longer has to flush its index
    /// anyway.
    pub forget_dead_after: Duration,
    /// Membership updates piggybacked on each probe message.
    pub piggyback_max: usize,
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
        }
    }
}

impl Config {
    /// ceil(ln n) + 2, at least 1: the fanout that reaches everyone with
    /// high probability in flat gossip (Erdős–Rényi threshold plus margin).
    pub fn fanout_for(&self, n: usize) -> usize {
        self.fanout.unwrap_or_else(|| ((n.max(1) as f64).ln().ceil() as usize) + 2).max(1)
    }
}
