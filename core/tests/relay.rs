//! Ack relays (`Config::ack_relay`): the origin gets a PoP's acks in a few
//! batches, still learns every member, and loses nothing when an entry
//! dies holding a batch (anti-entropy credits the applies).

use std::time::Duration;

use purgecast_core::testing::{member, Net};
use purgecast_core::{Config, Member, Mode, Selector};

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
fn the_origin_gets_acks_per_pop_entry_not_per_member_and_still_every_member() {
    let (plain, relayed, applied, complete) = one_purge(false);
    assert!(complete);
    assert_eq!(applied, POPS * PER_POP);
    assert_eq!((plain, relayed), ((POPS * PER_POP - 1) as u64, 0), "one ack per other member without relays");

    let (plain, relayed, applied, complete) = one_purge(true);
    assert!(complete, "relayed acks never completed the purge");
    assert_eq!(applied, POPS * PER_POP, "a member is missing from the origin's list");
    let remote_entries = ((POPS - 1) * Config::default().pop_entry) as u64;
    // An entry flushes `ack_flush` after its first ack; a straggler's ack
    // makes a second batch, no more.
    assert!(relayed >= 1 && relayed <= 2 * remote_entries, "{relayed} batches for {remote_entries} entries");
    assert!(plain + relayed < (POPS * PER_POP / 2) as u64, "{plain} + {relayed} ack messages at the origin");
    // The origin's own PoP acks it directly (it is their entry); every
    // remote member's ack arrives in a batch.
    assert_eq!(plain, (PER_POP - 1) as u64, "remote members acked the origin directly");
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
