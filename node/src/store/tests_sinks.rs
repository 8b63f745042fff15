//! The sink backlog against real RocksDB.

use purgecast_core::{Mode, Selector};

use super::tests::{input, purge};
use super::*;

fn open_with_sinks(dir: &std::path::Path, sinks: &[&str]) -> Store {
    let opts = StoreOptions {
        sync: false,
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        sinks: sinks.iter().map(|s| s.to_string()).collect(),
        ..StoreOptions::default()
    };
    Store::open(dir, opts).unwrap()
}

#[test]
fn every_sink_owes_each_applied_purge_until_it_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_sinks(dir.path(), &["varnish", "webhook"]);
    s.put_entries(&[input("http://a.example/x", &["t"])]).unwrap();
    let p1 = purge(1, Mode::Hard, vec![Selector::tag("t").unwrap()]);
    let p2 = purge(2, Mode::Soft, vec![Selector::host("a.example").unwrap()]);
    s.apply_purges(&[(&p1, 10), (&p2, 11)]).unwrap();

    let owed = s.sink_backlog("varnish", 0, 10).unwrap();
    assert_eq!(owed.iter().map(|o| o.purge.clone()).collect::<Vec<_>>(), vec![p1.clone(), p2.clone()]);
    assert!(owed[0].apply_seq < owed[1].apply_seq, "in apply order");
    assert_eq!(s.sink_backlog("webhook", 0, 10).unwrap().len(), 2);
    // A reader resumes after the last row it handled.
    assert_eq!(s.sink_backlog("varnish", owed[0].apply_seq, 10).unwrap()[0].purge, p2);

    s.confirm_sink("varnish", owed[0].apply_seq).unwrap();
    assert_eq!(s.sink_backlog("varnish", 0, 10).unwrap().len(), 1);
    assert_eq!(s.sink_backlog("webhook", 0, 10).unwrap().len(), 2, "sinks are independent");
    assert_eq!(s.unconfirmed().unwrap().len(), 3);
}

#[test]
fn the_backlog_survives_a_restart_and_a_removed_sink_can_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let p = purge(1, Mode::Hard, vec![Selector::tag("t").unwrap()]);
    {
        let s = open_with_sinks(dir.path(), &["varnish", "old"]);
        s.apply_purges(&[(&p, 10)]).unwrap();
    }
    let s = open_with_sinks(dir.path(), &["varnish"]);
    let owed = s.unconfirmed().unwrap();
    let mut sinks: Vec<&str> = owed.iter().map(|o| o.sink.as_str()).collect();
    sinks.sort();
    assert_eq!(sinks, ["old", "varnish"]);
    assert!(owed.iter().all(|o| o.purge == p));
    s.forget_sink("old").unwrap();
    let owed = s.unconfirmed().unwrap();
    assert_eq!(owed.len(), 1);
    assert_eq!(owed[0].sink, "varnish");
}

#[test]
fn without_sinks_nothing_is_owed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_sinks(dir.path(), &[]);
    s.apply_purges(&[(&purge(1, Mode::Hard, vec![Selector::Everything]), 10)]).unwrap();
    assert!(s.unconfirmed().unwrap().is_empty());
}

#[test]
fn one_sink_name_is_not_a_prefix_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_sinks(dir.path(), &["v", "va"]);
    s.apply_purges(&[(&purge(1, Mode::Hard, vec![Selector::Everything]), 10)]).unwrap();
    assert_eq!(s.sink_backlog("v", 0, 10).unwrap().len(), 1);
    assert_eq!(s.sink_backlog("va", 0, 10).unwrap().len(), 1);
    s.forget_sink("v").unwrap();
    assert_eq!(s.sink_backlog("va", 0, 10).unwrap().len(), 1);
}

#[test]
fn a_flush_is_owed_to_every_sink_as_everything_and_takes_a_purge_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_sinks(dir.path(), &["varnish"]);
    s.apply_purges(&[(&purge(1, Mode::Hard, vec![Selector::tag("t").unwrap()]), 10)]).unwrap();
    let before = s.purge_seq();
    s.flush_index().unwrap();
    assert_eq!(s.purge_seq(), before + 1, "a fill that started before the flush is raced");
    let owed = s.sink_backlog("varnish", 0, 10).unwrap();
    assert_eq!(owed.len(), 2);
    assert!(is_flush(&owed[1].purge));
    assert_eq!(owed[1].purge.selectors, vec![Selector::Everything]);
    assert!(!is_flush(&owed[0].purge));
}
