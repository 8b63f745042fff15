//! Getting into the cluster: knocking on seeds while alone, and refusing
//! to originate until some member is known. Both drivers (node and
//! simulator) used to carry this policy; it lives here so they cannot
//! drift apart.

use std::time::Duration;

use super::{Engine, Output, Seed};
use crate::time::Time;

/// How often a node that knows no other member knocks on its seeds again.
pub const JOIN_RETRY: Duration = Duration::from_secs(1);

impl Engine {
    /// Gives the engine the addresses it may knock on while it knows no
    /// other member (a node's configured seeds). An address equal to this
    /// node's own `peer_addr` is skipped, so every node can share one seed
    /// list. If the node is alone, it knocks at once, then every
    /// second until someone answers ([`Timer::JoinRetry`](super::Timer::JoinRetry)).
    /// Knocks come out as [`Output::SendSeed`], naming the seed by its
    /// position in `addrs`.
    pub fn set_seeds<S: AsRef<str>>(&mut self, now: Time, addrs: &[S]) {
        let own = &self.me.profile.peer_addr;
        self.seeds = addrs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.as_ref() != own.as_str())
            .filter_map(|(i, _)| u32::try_from(i).ok().map(Seed))
            .collect();
        self.join_at = None;
        self.knock(now);
    }

    /// Whether this node knows another member, or has no seeds to wait for
    /// (a one-node cluster, or a configured member list).
    pub fn is_joined(&self) -> bool {
        self.seeds.is_empty() || !self.alone()
    }

    pub(super) fn alone(&self) -> bool {
        self.members.len() <= 1
    }

    /// Knocks on every seed if alone and re-arms the retry; disarms it once
    /// someone is known.
    fn knock(&mut self, now: Time) {
        if self.is_joined() {
            self.join_at = None;
            return;
        }
        self.join_at = Some(now + JOIN_RETRY);
        let msg = self.join_message();
        self.out.extend(self.seeds.iter().map(|&seed| Output::SendSeed { seed, msg: msg.clone() }));
    }

    /// The join-retry timer, first of the timers so that knocks go out
    /// before the round's other messages.
    pub(super) fn join_timer(&mut self, now: Time) {
        // A node that became alone again (every other member forgotten)
        // starts knocking again.
        if self.join_at.is_none() && !self.is_joined() {
            self.join_at = Some(now);
        }
        if self.join_at.is_some_and(|t| t <= now) {
            self.knock(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Timer;
    use crate::testing::member;

    fn knocks(e: &mut Engine) -> Vec<usize> {
        std::iter::from_fn(|| e.poll_output())
            .filter_map(|o| if let Output::SendSeed { seed, .. } = o { Some(seed.index()) } else { None })
            .collect()
    }

    #[test]
    fn knocks_on_other_seeds_every_second_while_alone_then_stops() {
        let me = member(1, 0, 0);
        let mut e = Engine::new(Config::default(), me.clone(), 1, 7, Time::ZERO);
        let seeds = ["127.0.0.1:7000", me.profile.peer_addr.as_str(), "127.0.0.1:7002"];
        e.set_seeds(Time::ZERO, &seeds);
        assert_eq!(knocks(&mut e), vec![0, 2], "at once, and never to itself");
        assert!(!e.is_joined());
        let t = Time::ZERO + JOIN_RETRY;
        assert!(e.poll_timeout() <= t);
        e.handle_timeout(t);
        assert_eq!(knocks(&mut e), vec![0, 2]);
        e.add_member(member(0, 0, 0));
        assert!(e.is_joined());
        e.handle_timeout(t + JOIN_RETRY);
        assert!(knocks(&mut e).is_empty());
        assert_ne!(e.next_timer().0, Timer::JoinRetry, "disarmed once joined");
    }
}
