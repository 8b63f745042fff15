//! What an origin's acks cost it in CPU: one origin engine of a 330 × 10
//! world, 1,000 purges originated, then every member's ack delivered the
//! way the protocol sends it, timed around `handle_message` only (no
//! decoding, no I/O). Two shapes: relayed (`AppliedBy` from one member per
//! PoP, each batch covering the purges of one `ack_spacing` window at
//! 1,000 purges/s) and direct (one `Applied` per member and purge, as with
//! `ack_relay = false`). Every purge must end complete.
//!
//! cargo bench -p purgecast-core --bench acks

use std::time::{Duration, Instant};

use purgecast_core::testing::member;
use purgecast_core::{Config, Engine, Member, Message, Mode, Output, PurgeId, Selector, Time};

const POPS: usize = 330;
const PER_POP: usize = 10;
const PURGES: usize = 1_000;
/// Purges in one relay batch: 20 ms of `ack_spacing` at 1,000 purges/s.
const WINDOW: usize = 20;
const RUNS: usize = 5;

fn origin(members: &[Member], now: Time) -> (Engine, Vec<PurgeId>) {
    let mut e = Engine::new(Config::default(), members[0].clone(), 1, 7, now);
    for m in &members[1..] {
        e.add_member(m.clone());
    }
    let mut ids = Vec::with_capacity(PURGES);
    for k in 0..PURGES {
        let url = format!("https://shop.example/item/{k}");
        let p = e.originate(now, vec![Selector::url(&url).expect("valid URL")], Mode::Hard, 0).expect("originate");
        ids.push(p.id);
        while let Some(out) = e.poll_output() {
            if let Output::Apply { ticket, .. } = out {
                e.applied(now, ticket);
            }
        }
    }
    (e, ids)
}

/// (time in handle_message, acks delivered)
fn deliver(e: &mut Engine, members: &[Member], ids: &[PurgeId], relayed: bool, now: Time) -> (Duration, usize) {
    let mut msgs = Vec::new();
    let mut acks = 0;
    for window in ids.chunks(WINDOW) {
        for pop in 0..POPS {
            let group = &members[pop * PER_POP..(pop + 1) * PER_POP];
            // The origin (member 0) acks itself; its PoP acks plainly.
            let others: Vec<&Member> = group.iter().filter(|m| m.id != members[0].id).collect();
            if relayed && pop != 0 {
                let nodes: Vec<_> = others.iter().map(|m| m.id).collect();
                let batch = window.iter().map(|id| (*id, nodes.clone())).collect();
                msgs.push((group[0].id, Message::AppliedBy { acks: batch }));
                acks += window.len() * nodes.len();
            } else {
                for id in window {
                    for m in &others {
                        msgs.push((m.id, Message::Applied { purge_id: *id, node: m.id }));
                        acks += 1;
                    }
                }
            }
        }
    }
    let t = Instant::now();
    for (from, msg) in msgs {
        e.handle_message(now, from, msg);
        while e.poll_output().is_some() {}
    }
    (t.elapsed(), acks)
}

fn main() {
    let members: Vec<Member> = (0..POPS * PER_POP).map(|i| member(i, i / PER_POP, i / PER_POP % 10)).collect();
    let now = Time::from_millis(1_000);
    println!("origin of {} members, {PURGES} purges, median of {RUNS} runs", members.len());
    for relayed in [true, false] {
        let mut times = Vec::new();
        let mut acks = 0;
        for _ in 0..RUNS {
            let (mut e, ids) = origin(&members, now);
            let (took, n) = deliver(&mut e, &members, &ids, relayed, now);
            for id in &ids {
                let s = e.status(*id).expect("tracked");
                assert!(
                    s.completed.is_some() && s.pending.is_empty(),
                    "purge {id} incomplete: {} pending",
                    s.pending.len()
                );
            }
            times.push(took);
            acks = n;
        }
        times.sort();
        let t = times[RUNS / 2];
        let per_ack = t.as_secs_f64() * 1e9 / acks as f64;
        let per_purge_ms = t.as_secs_f64() * 1e3 / PURGES as f64;
        println!(
            "{:<8} {acks} acks in {:.1} ms: {per_ack:.0} ns per ack, {per_purge_ms:.3} ms per purge, \
             {:.0}% of a core at 1,000 purges/s",
            if relayed { "relayed" } else { "direct" },
            t.as_secs_f64() * 1e3,
            per_purge_ms * 1_000.0 / 10.0
        );
    }
}
