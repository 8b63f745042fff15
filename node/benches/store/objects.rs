//! `objects` mode: one node's store holding 1M cached objects of 1 KiB, as
//! the edge writes them (`Store::store_object`, one batch per fill), then
//! one hard tag purge that removes 100k of them. Reports the load rate, the
//! purge time, disk bytes per object and the process's peak RSS. Then, as a
//! control, the same URLs and tags as index entries only (no objects) and
//! the same purge: the difference is what deleting the objects costs.
//!
//! The hard and soft purges are deferred (in effect when the call returns,
//! swept after, as the apply worker does in slices of 1,024 rows); the
//! time to sweep them is reported too. `--inline` applies them in their
//! own batch instead, as before deferral existed, for comparison.
//!
//! cargo bench -p purgecast-node --bench store -- objects [--inline]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use purgecast_core::{parse_url, Mode, Selector};
use purgecast_node::store::{object_id, url_hash, EntryInput, Fill, FillOutcome, ObjectRecord, Store, StoreOptions};

/// The apply worker's slice (`SWEEP_SLICE` in node/src/protocol/applier.rs).
const SWEEP_SLICE: usize = 1024;

use super::{disk_bytes, rss_mib, Seq};

const OBJECTS: u64 = 1_000_000;
const BODY: usize = 1024;
/// Every tenth object carries `hot` (the hard purge) and every tenth, offset
/// by one, `warm` (a soft purge after it).
const EVERY: u64 = 10;

fn url(i: u64) -> String {
    format!("https://h{}.example.com/objects/{i}/payload.bin", i % 100)
}

fn tags(i: u64) -> Vec<String> {
    let mut t = vec!["all".to_string(), format!("t{}", i % 1000)];
    match i % EVERY {
        0 => t.push("hot".to_string()),
        1 => t.push("warm".to_string()),
        _ => {}
    }
    t
}

/// pingora's serialized `CacheMeta` for a response like the test origin's,
/// so each record is as large as the edge would store it.
fn meta() -> Result<(Vec<u8>, Vec<u8>)> {
    let mut h = ResponseHeader::build(200, Some(8))?;
    for (k, v) in [
        ("etag", "\"v1\""),
        ("cache-control", "public, max-age=3600"),
        ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ("cache-tag", "all,objects,t123,hot"),
        ("content-type", "application/octet-stream"),
        ("content-length", "1024"),
        ("date", "Tue, 01 Dec 2026 08:00:00 GMT"),
    ] {
        h.append_header(k, v)?;
    }
    let now = SystemTime::now();
    let m = CacheMeta::new(now + Duration::from_secs(3600), now, 10, 300, h);
    Ok(m.serialize()?)
}

fn fill(store: &Store, i: u64, meta: &(Vec<u8>, Vec<u8>), body: &Bytes) -> Result<Fill> {
    let key = parse_url(&url(i))?;
    Ok(Fill {
        id: object_id(url_hash(&key.key), None),
        record: ObjectRecord {
            url: key.key.clone(),
            body_len: body.len() as u64,
            expires_at_ms: u64::MAX / 2,
            meta_internal: meta.0.clone(),
            meta_header: meta.1.clone(),
            ..ObjectRecord::default()
        },
        key,
        tags: tags(i),
        zone: String::new(),
        body: vec![body.clone()],
        started_seq: store.purge_seq(),
    })
}

fn report_space(when: &str, dir: &Path, objects: u64) -> Result<()> {
    let disk = disk_bytes(dir)?;
    let (hwm, rss) = rss_mib()?;
    println!(
        "{when:<28} disk {:>8.1} MiB ({:>6.0} B/object), VmHWM {hwm:>7.1} MiB, VmRSS {rss:>7.1} MiB",
        disk as f64 / (1 << 20) as f64,
        disk as f64 / objects.max(1) as f64,
    );
    Ok(())
}

/// Sweeps every deferred purge; returns the time and the entries swept.
fn settle(store: &Store) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let mut swept = 0;
    while store.deferred_purges() > 0 {
        swept += store.sweep_deferred(SWEEP_SLICE)?.swept;
    }
    Ok((t.elapsed(), swept))
}

fn options(inline: bool) -> StoreOptions {
    // The node's own options (server.rs): purges fsync'd, 64 MiB block cache.
    let defaults = StoreOptions::default();
    StoreOptions { defer_over: if inline { u64::MAX } else { defaults.defer_over }, ..defaults }
}

/// Hot objects 0, 10, 20, ... must miss and the others hit, whatever the
/// rows on disk say yet.
fn check_hits(store: &Store, sample: u64) -> Result<()> {
    for i in (0..OBJECTS).step_by((OBJECTS / sample) as usize).flat_map(|i| [i, i + 3]) {
        let id = object_id(url_hash(&parse_url(&url(i))?.key), None);
        let hit = store.object_head(&id)?.is_some();
        if hit == (i % EVERY == 0) {
            bail!("object {i}: hit {hit} after the purge of hot");
        }
    }
    Ok(())
}

pub fn run(inline: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), options(inline))?;
    let meta = meta()?;
    let body = Bytes::from(vec![b'.'; BODY]);
    println!(
        "objects: {OBJECTS} of {BODY} B, record meta {} + {} B, 1 in {EVERY} tagged hot",
        meta.0.len(),
        meta.1.len()
    );

    let t = Instant::now();
    for i in 0..OBJECTS {
        if store.store_object(fill(&store, i, &meta, &body)?)? != (FillOutcome::Stored { replaced: None }) {
            bail!("object {i} was not stored as new");
        }
        if (i + 1) % 200_000 == 0 {
            eprintln!("  {} stored, {:.1} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    let load = t.elapsed();
    println!(
        "{:<28} {:.1} s ({:.0} objects/s)",
        "load (store_object each)",
        load.as_secs_f64(),
        OBJECTS as f64 / load.as_secs_f64()
    );
    report_space("after load", dir.path(), OBJECTS)?;

    let mut seq = Seq(0);
    let hot = [seq.purge(Mode::Hard, Selector::Tag("hot".into()))];
    let t = Instant::now();
    let out = store.apply_purges(&hot)?;
    let took = t.elapsed();
    check_hits(&store, 1000)?;
    println!(
        "{:<28} {:.1} ms (in effect: sampled hot objects miss, others hit){}",
        "hard tag purge of hot",
        took.as_secs_f64() * 1e3,
        if out.iter().any(|o| o.deferred) { ", deferred" } else { ", inline" }
    );
    let (sweep, swept) = settle(&store)?;
    let removed = out.iter().map(|o| o.removed).sum::<u64>() + swept;
    let (left, _) = store.object_stats();
    println!(
        "{:<28} {:.1} ms, {removed} entries removed, {left} objects left",
        "  its sweep",
        sweep.as_secs_f64() * 1e3
    );
    check_hits(&store, 1000)?;
    if removed != OBJECTS / EVERY || left != OBJECTS - OBJECTS / EVERY {
        bail!("the hot purge removed {removed} entries and left {left} objects");
    }

    let warm = [seq.purge(Mode::Soft, Selector::Tag("warm".into()))];
    let t = Instant::now();
    let out = store.apply_purges(&warm)?;
    let took = t.elapsed();
    let (sweep, swept) = settle(&store)?;
    let marked = out.iter().map(|o| o.marked_stale).sum::<u64>() + swept;
    println!(
        "{:<28} {:.1} ms, then {:.1} ms of sweep, {marked} entries marked stale",
        "soft tag purge of warm",
        took.as_secs_f64() * 1e3,
        sweep.as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let ranges = store.compact_purged_ranges()?.runs;
    println!("{:<28} {ranges} ranges in {:.1} ms", "compact_purged_ranges", t.elapsed().as_secs_f64() * 1e3);
    report_space("after the purges", dir.path(), left)?;

    // A restart counts the stored objects (Store::open scans them).
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path(), options(inline))?;
    println!("{:<28} {:.1} ms, {} objects", "reopen", t.elapsed().as_secs_f64() * 1e3, store.object_stats().0);
    drop(store);
    drop(dir);
    index_only(inline)
}

fn index_only(inline: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), options(inline))?;
    for chunk in 0..OBJECTS / 10_000 {
        let inputs: Vec<EntryInput> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| EntryInput {
                key: url(i),
                tags: tags(i),
                size: BODY as u64,
                stored_at_ms: 1,
                expires_at_ms: 0,
                zone: String::new(),
            })
            .collect();
        store.put_entries(&inputs)?;
    }
    let hot = [Seq(0).purge(Mode::Hard, Selector::Tag("hot".into()))];
    let t = Instant::now();
    let out = store.apply_purges(&hot)?;
    let took = t.elapsed();
    let (sweep, swept) = settle(&store)?;
    let removed = out.iter().map(|o| o.removed).sum::<u64>() + swept;
    println!(
        "{:<28} {:.1} ms, then {:.1} ms of sweep, {removed} entries removed (control: {OBJECTS} index entries, no objects)",
        "hard tag purge of hot",
        took.as_secs_f64() * 1e3,
        sweep.as_secs_f64() * 1e3
    );
    Ok(())
}
