//! Ack relays (`Config::ack_relay`): the origin gets a PoP's acks in a few
//! batches from one relay per PoP, paced under a stream of purges, still
//! learns every member, and loses nothing when a relay dies holding a batch
//! (anti-entropy credits the applies); a relay never speaks for a member
//! of another PoP.

use std::time::Duration;

use purgecast_core::testing::{member, Net};
use purgecast_core::{Config, Member, MemberState, Message, Mode, NodeId, PurgeId, Selector};

const POPS: usize = 6;
const PER_POP: usize = 16;
const STEP: Duration = Duration::from_millis(1);

fn members() -> Vec<Member> {
    (0..POPS * PER_POP).map(|i| member(i, i % POPS, 0)).collect()
}

fn cfg(relay: bool) -> Config {
    Config {
        ack_relay: relay,
        suspect_timeout: Duration::from_secs(3600),
        probe_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

/// Originates at node 0 and runs until node 0 reports completion (bounded);
/// returns the acks node 0 received (plain and relayed) and the members it
/// counted as applied.
fn one_purge(relay: bool) -> (u64, u64, usize, bool) {
    let mut net = Net::new(members(), cfg(relay), 3);
    let purge = net.originate(0, vec![Selector::tag("t").unwrap_or(Selector::Everything)], Mode::Hard);
    let Ok(purge) = purge else { panic!("originate refused") };
    let mut complete = false;
    for _ in 0..2_000 {
        net.step(STEP);
        let status = net.engine(0).status(purge.id);
        if status.as_ref().is_some_and(|s| s.completed.is_some()) {
            complete = true;
            break;
        }
    }
    let applied = net.engine(0).status(purge.id).map_or(0, |s| s.applied.len());
    (net.received(0, "applied"), net.received(0, "applied_by"), applied, complete)
}

#[test]
fn the_origin_gets_acks_per_pop_not_per_member_and_still_every_member() {
    let (plain, relayed, applied, complete) = one_purge(false);
    assert!(complete);
    assert_eq!(applied, POPS * PER_POP);
    assert_eq!((plain, relayed), ((POPS * PER_POP - 1) as u64, 0), "one ack per other member without relays");

    let (plain, relayed, applied, complete) = one_purge(true);
    assert!(complete, "relayed acks never completed the purge");
    assert_eq!(applied, POPS * PER_POP, "a member is missing from the origin's list");
    // One relay per remote PoP flushes `ack_flush` after its first ack; a
    // straggler's ack makes a second batch, no more.
    let remote = (POPS - 1) as u64;
    assert!(relayed >= remote && relayed <= 2 * remote, "{relayed} batches for {remote} remote PoPs");
    // The origin's own PoP acks it directly, one purge in a batch being a
    // plain ack; every remote member's ack arrives in a batch.
    assert_eq!(plain, (PER_POP - 1) as u64, "remote members acked the origin directly");
}

/// `count` purges at node 0, one per `every`; runs until node 0 reports
/// every one complete (bounded). Returns the ack messages node 0 handled
/// and whether every member of every purge was listed as applied.
fn stream(cfg: Config, count: usize, every: Duration) -> (u64, bool) {
    let mut net = Net::new(members(), cfg, 7);
    let mut ids = Vec::new();
    for k in 0..count {
        let sel = Selector::url(&format!("https://a.example/{k}")).unwrap_or(Selector::Everything);
        match net.originate(0, vec![sel], Mode::Hard) {
            Ok(p) => ids.push(p.id),
            Err(e) => panic!("{e}"),
        }
        net.run_for(every, STEP);
    }
    let done =
        |net: &Net| ids.iter().all(|id| net.engine(0).status(*id).is_some_and(|s| s.applied.len() == POPS * PER_POP));
    for _ in 0..2_000 {
        if done(&net) {
            break;
        }
        net.step(STEP);
    }
    (net.received(0, "applied") + net.received(0, "applied_by"), done(&net))
}

#[test]
fn under_a_stream_of_purges_each_pop_sends_one_batch_per_spacing() {
    let spacing = Duration::from_millis(20);
    let (count, every) = (100, Duration::from_millis(1));
    let (unpaced, complete) = stream(Config { ack_spacing: Duration::ZERO, ..cfg(true) }, count, every);
    assert!(complete, "an unpaced stream lost an ack");
    let (paced, complete) = stream(Config { ack_spacing: spacing, ..cfg(true) }, count, every);
    assert!(complete, "a paced stream lost an ack: the origin does not list every member of every purge");
    // 100 ms of purges: every remote PoP sends about one batch per 20 ms,
    // plus the last stragglers; the origin's own members, whose acks cross
    // no WAN link, one per `ack_flush` (2 ms) each.
    let span = count as u64 * every.as_millis() as u64;
    let remote = (POPS - 1) as u64 * (span.div_ceil(spacing.as_millis() as u64) + 2);
    let own = (PER_POP - 1) as u64 * (span.div_ceil(2) + 2);
    assert!(paced <= remote + own, "{paced} ack messages, more than {remote} remote batches + {own} local ones");
    // Unpaced, the remote PoPs alone would send one batch per ack_flush
    // each and break the bound above; and pacing must save something.
    assert!(paced < unpaced, "pacing saved nothing: {paced} vs {unpaced} without");
}

/// The relay of PoP `pop` for acks to node 0, as every member of the PoP
/// sees it (they must agree).
fn relay_of(net: &Net, pop: usize) -> usize {
    let origin = net.id(0);
    let picks: Vec<Option<NodeId>> =
        (0..net.len()).filter(|i| i % POPS == pop).map(|i| net.engine(i).ack_relay_for(origin)).collect();
    assert!(picks.iter().all(|p| *p == picks[0] && p.is_some()), "PoP {pop} disagrees on its relay: {picks:?}");
    let Some(relay) = picks[0] else { unreachable!() };
    (0..net.len()).find(|i| net.id(*i) == relay).unwrap_or_else(|| panic!("relay {relay:?} is not a node"))
}

fn applied_by(net: &Net, id: PurgeId) -> Vec<NodeId> {
    net.engine(0).status(id).map(|s| s.applied.iter().map(|(n, _)| *n).collect()).unwrap_or_default()
}

#[test]
fn a_relay_dying_with_its_batch_loses_no_member_of_its_pop() {
    // A long flush holds the batch at the relay when it dies. SWIM runs:
    // the origin chases owed acks of reachable members only, and would
    // knock on the dead relay for good.
    let cfg = Config { ack_flush: Duration::from_millis(50), ..Config::default() };
    let mut net = Net::new(members(), cfg, 13);
    let relay = relay_of(&net, 1);
    let first = match net.originate(
        0,
        vec![Selector::url("https://a.example/1").unwrap_or(Selector::Everything)],
        Mode::Hard,
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    net.run_for(Duration::from_millis(10), STEP);
    let pop1: Vec<usize> = (0..net.len()).filter(|i| i % POPS == 1).collect();
    assert!(
        pop1.iter().all(|i| net.applied(*i, first.id) == 1),
        "PoP 1 has not applied yet: the test would prove nothing"
    );
    net.crash(relay);
    // The PoP still thinks it alive: the next purge's acks go to it too.
    let second = match net.originate(
        0,
        vec![Selector::url("https://a.example/2").unwrap_or(Selector::Everything)],
        Mode::Hard,
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    net.run_for(Duration::from_millis(100), STEP);
    for id in [first.id, second.id] {
        let got = applied_by(&net, id);
        assert!(
            pop1.iter().filter(|i| **i != relay).any(|i| !got.contains(&net.id(*i))),
            "PoP 1's acks arrived anyway"
        );
    }
    // Digests repair them: the origin chases one owed member per round.
    net.run_for(Duration::from_secs(30), Duration::from_millis(10));
    for id in [first.id, second.id] {
        let got = applied_by(&net, id);
        for &i in pop1.iter().filter(|i| **i != relay) {
            assert!(got.contains(&net.id(i)), "node {i} applied {id:?} and is missing from the origin's list");
        }
        let status = net.engine(0).status(id);
        assert!(status.as_ref().is_some_and(|s| s.pending.is_empty() && s.dead == [net.id(relay)]), "{status:?}");
    }
    net.restart(relay);
    net.run_for(Duration::from_secs(30), Duration::from_millis(10));
    for id in [first.id, second.id] {
        let status = net.engine(0).status(id);
        assert!(
            status.as_ref().is_some_and(|s| s.completed.is_some() && s.applied.len() == POPS * PER_POP),
            "{status:?}"
        );
    }
}

#[test]
fn a_member_that_thinks_the_relay_dead_acks_through_the_second() {
    // Anti-entropy out of the way: only relayed acks can reach the origin.
    let quiet = Config { ae_interval: Duration::from_secs(60), ..cfg(true) };
    let mut net = Net::new(members(), quiet, 17);
    let relay = relay_of(&net, 1);
    let m = (0..net.len()).find(|i| i % POPS == 1 && *i != relay).unwrap_or(1);
    let mut dead = net.engine(relay).me().clone();
    dead.state = MemberState::Dead;
    net.inject(m, 2, Message::Members { members: vec![dead] });
    assert_ne!(net.engine(m).ack_relay_for(net.id(0)), Some(net.id(relay)), "m still routes to the relay");
    net.crash(relay);
    let purge = match net.originate(
        0,
        vec![Selector::url("https://a.example/3").unwrap_or(Selector::Everything)],
        Mode::Hard,
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    net.run_for(Duration::from_millis(100), STEP);
    assert!(applied_by(&net, purge.id).contains(&net.id(m)), "m's ack was lost on its way through the second relay");
}

#[test]
fn an_ack_that_reaches_the_relay_before_the_purge_is_relayed() {
    let quiet = Config { ae_interval: Duration::from_secs(60), ..cfg(true) };
    let mut net = Net::new(members(), quiet, 19);
    let relay = relay_of(&net, 1);
    let m = (0..net.len()).find(|i| i % POPS == 1 && *i != relay).unwrap_or(1);
    let purge = match net.originate(
        0,
        vec![Selector::url("https://a.example/4").unwrap_or(Selector::Everything)],
        Mode::Hard,
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    // The push is still in flight; m's ack gets there first, and m dies
    // before it could apply and ack for real.
    net.inject(relay, m, Message::Applied { purge_id: purge.id, node: net.id(m) });
    net.crash(m);
    net.run_for(Duration::from_millis(100), STEP);
    assert!(applied_by(&net, purge.id).contains(&net.id(m)), "the early ack was dropped");
}

#[test]
fn a_relay_does_not_pass_on_an_ack_from_another_pop() {
    let quiet = Config { ae_interval: Duration::from_secs(60), ..cfg(true) };
    let mut net = Net::new(members(), quiet, 23);
    let relay = relay_of(&net, 1);
    // Node 2 (PoP 2) is down, still expected; someone claiming to be it
    // acks to PoP 1's relay.
    net.crash(2);
    let purge = match net.originate(
        0,
        vec![Selector::url("https://a.example/5").unwrap_or(Selector::Everything)],
        Mode::Hard,
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    net.step(STEP);
    net.step(STEP);
    net.inject(relay, 2, Message::Applied { purge_id: purge.id, node: net.id(2) });
    net.run_for(Duration::from_millis(100), STEP);
    assert!(!applied_by(&net, purge.id).contains(&net.id(2)), "the relay spoke for a member of another PoP");
    assert_eq!(net.engine(0).stats().rejected, 0, "the relay sent the origin an ack it must not");
    let status = net.engine(0).status(purge.id);
    assert_eq!(status.map(|s| s.pending), Some(vec![net.id(2)]));
}

#[test]
fn an_entry_dying_with_its_batch_delays_completion_but_loses_no_member() {
    let mut net = Net::new(members(), cfg(true), 5);
    let purge = match net.originate(0, vec![Selector::tag("t").unwrap_or(Selector::Everything)], Mode::Hard) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    // Two hops: PoP 1 has applied and its entries hold the batch (due
    // `ack_flush` after the first ack). Crash the whole PoP now.
    net.step(STEP);
    net.step(STEP);
    let pop1: Vec<usize> = (0..net.len()).filter(|i| i % POPS == 1).collect();
    for &i in &pop1 {
        assert_eq!(net.applied(i, purge.id), 1, "node {i} has not applied yet: the test would prove nothing");
        net.crash(i);
    }
    for _ in 0..20 {
        net.step(Duration::from_millis(10));
    }
    let status = net.engine(0).status(purge.id);
    assert!(status.as_ref().is_some_and(|s| s.completed.is_none()), "PoP 1's acks arrived anyway: {status:?}");
    // Back up (their stores kept the apply): the origin chases one owed ack
    // per anti-entropy round (500 ms), so 16 take about 8 s.
    for &i in &pop1 {
        net.restart(i);
    }
    for _ in 0..200 {
        net.step(Duration::from_millis(100));
    }
    let status = net.engine(0).status(purge.id);
    assert!(status.as_ref().is_some_and(|s| s.completed.is_some()), "{status:?}");
    assert_eq!(status.map(|s| s.applied.len()), Some(POPS * PER_POP));
}

#[test]
fn a_relay_cannot_acknowledge_for_members_of_another_pop() {
    let mut net = Net::new(members(), cfg(true), 11);
    let purge = match net.originate(0, vec![Selector::tag("t").unwrap_or(Selector::Everything)], Mode::Hard) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    // Node 1 (PoP 1) claims node 2 (PoP 2) and itself applied it, before
    // either has heard of the purge.
    let (n1, n2) = (net.id(1), net.id(2));
    net.inject(0, 1, purgecast_core::Message::AppliedBy { acks: vec![(purge.id, vec![n1, n2])] });
    let applied: Vec<_> =
        net.engine(0).status(purge.id).map(|s| s.applied.iter().map(|(n, _)| *n).collect()).unwrap_or_default();
    assert!(applied.contains(&n1), "the relay's own PoP is taken");
    assert!(!applied.contains(&n2), "an ack for another PoP's member was taken");
    assert_eq!(net.engine(0).stats().rejected, 1);
}
