//! Store throughput: URL purges applied in batches and one by one, and tag
//! purges, against an index of 100k entries. Prints medians; asserts
//! nothing about speed. `objects`: 1M cached objects and a tag purge of
//! 100k of them (see objects.rs). `scale`: 1M and 10M realistic entries,
//! large purges, the tombstone trap and the purge log (see scale.rs).
//!
//! cargo bench -p purgecast-node --bench store
//! cargo bench -p purgecast-node --bench store -- objects
//! cargo bench -p purgecast-node --bench store -- scale [--entries N] [--dir PATH]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use purgecast_core::{Mode, NodeId, Purge, PurgeId, Selector, StreamId};
use purgecast_node::store::{EntryInput, Store, StoreOptions};

// Not benches/objects.rs: cargo would take that for a bench target of its own.
#[path = "store/objects.rs"]
mod objects;
#[path = "store/scale.rs"]
mod scale;

const ENTRIES: u64 = 100_000;
const HOSTS: u64 = 100;
/// Each `t{n}` tag is carried by ENTRIES / TAGS entries.
const TAGS: u64 = 1_000;
const BATCH: u64 = 1_000;
const ROUNDS: u64 = 15;

fn url(i: u64) -> String {
    format!("https://h{}.example.com/objects/{i}/payload.bin?v=3", i % HOSTS)
}

fn fill(sync: bool) -> Result<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions { sync, ..StoreOptions::default() })?;
    for chunk in 0..ENTRIES / 10_000 {
        let inputs: Vec<EntryInput> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| EntryInput {
                key: url(i),
                tags: vec![format!("t{}", i % TAGS), format!("g{}", i % 10)],
                size: 1000 + i,
                stored_at_ms: 1,
                expires_at_ms: 0,
                zone: String::new(),
            })
            .collect();
        store.put_entries(&inputs)?;
    }
    Ok((dir, store))
}

struct Seq(u64);

impl Seq {
    fn purge(&mut self, mode: Mode, selector: Selector) -> (Purge, u64) {
        self.0 += 1;
        let p = Purge {
            id: PurgeId(u128::from(self.0)),
            stream: StreamId { origin: NodeId(1), epoch: 1 },
            seq: self.0,
            selectors: vec![selector],
            mode,
            issued_at_ms: self.0,
            zone: String::new(),
            requested_by: String::new(),
        };
        (p, self.0)
    }
}

fn url_selector(i: u64) -> Selector {
    Selector::Url(url(i))
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

fn report(name: &str, per_round: u64, unit: &str, times: Vec<Duration>, extra: &str) {
    let m = median(times);
    let rate = per_round as f64 / m.as_secs_f64().max(1e-9);
    println!("{name:<44} median {:>9.3} ms/round  {rate:>12.0} {unit}/s {extra}", m.as_secs_f64() * 1e3);
}

/// Batches of BATCH URL purges; `hit` decides whether they name cached
/// entries (deleted) or not (most purges on most nodes).
fn url_batches(sync: bool, hit: bool) -> Result<()> {
    let (_dir, store) = fill(sync)?;
    let mut seq = Seq(0);
    let mut times = Vec::new();
    let mut removed = 0;
    for round in 0..ROUNDS {
        let batch: Vec<(Purge, u64)> = (0..BATCH)
            .map(|j| {
                // Spread over the key space, as real purges are.
                let i = (round * BATCH + j) * 7 % ENTRIES;
                seq.purge(Mode::Hard, url_selector(if hit { i } else { ENTRIES + i }))
            })
            .collect();
        let t = Instant::now();
        let outs = store.apply_purges(&batch)?;
        times.push(t.elapsed());
        removed += outs.iter().map(|o| o.removed).sum::<u64>();
    }
    let name = format!("url purges, batch {BATCH}, {}, sync={sync}", if hit { "hits" } else { "misses" });
    report(&name, BATCH, "purges", times, &format!("(removed {removed}, left {})", store.count_all()));
    Ok(())
}

/// The same purges applied one call (and one write) each.
fn url_single(sync: bool) -> Result<()> {
    let (_dir, store) = fill(sync)?;
    let mut seq = Seq(0);
    let mut times = Vec::new();
    let per_round = if sync { 50 } else { 1_000 };
    for round in 0..ROUNDS {
        let purges: Vec<(Purge, u64)> = (0..per_round)
            .map(|j| seq.purge(Mode::Hard, url_selector((round * per_round + j) * 7 % ENTRIES)))
            .collect();
        let t = Instant::now();
        for (p, at) in &purges {
            store.apply_purge(p, *at)?;
        }
        times.push(t.elapsed());
    }
    report(&format!("url purges, one per write, sync={sync}"), per_round, "purges", times, "");
    Ok(())
}

/// Batches of tag purges, each tag on ENTRIES / TAGS entries.
fn tag_batches(mode: Mode, per_batch: u64) -> Result<()> {
    let (_dir, store) = fill(false)?;
    let mut seq = Seq(0);
    let mut times = Vec::new();
    let mut matched = 0;
    for round in 0..ROUNDS {
        let batch: Vec<(Purge, u64)> = (0..per_batch)
            .map(|j| seq.purge(mode, Selector::Tag(format!("t{}", (round * per_batch + j) % TAGS))))
            .collect();
        let t = Instant::now();
        let outs = store.apply_purges(&batch)?;
        times.push(t.elapsed());
        matched += outs.iter().map(|o| o.matched).sum::<u64>();
    }
    let name = format!("tag purges ({} entries each), {mode:?}, batch {per_batch}", ENTRIES / TAGS);
    let per_entry = matched as f64 / (ROUNDS * per_batch) as f64;
    report(&name, per_batch, "purges", times, &format!("({per_entry:.0} matched/purge)"));
    let t = Instant::now();
    let runs = store.compact_purged_ranges()?.runs;
    println!("{:<44} {runs} ranges in {:.1} ms", "  then compact_purged_ranges", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

/// Allocated bytes under `dir`, as `du` counts them.
pub fn disk_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        // A background compaction may delete a file between the listing
        // and this look.
        let m = match e.metadata() {
            Ok(m) => m,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        total += if m.is_dir() { disk_bytes(&e.path())? } else { m.blocks() * 512 };
    }
    Ok(total)
}

/// VmHWM (peak) and VmRSS of this process, in MiB.
pub fn rss_mib() -> Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<f64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        let kib: f64 = line.trim_start_matches(name).trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; the first other argument is the mode,
    // and `scale` takes options after it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "scale") {
        return scale::run(&args[at + 1..]);
    }
    if std::env::args().skip(1).any(|a| a == "objects") {
        return objects::run(std::env::args().any(|a| a == "--inline"));
    }
    println!("index: {ENTRIES} entries, {HOSTS} hosts, 2 tags each; {ROUNDS} rounds per case");
    url_batches(false, true)?;
    url_batches(false, false)?;
    url_batches(true, true)?;
    url_single(false)?;
    url_single(true)?;
    tag_batches(Mode::Hard, 10)?;
    tag_batches(Mode::Soft, 10)?;
    Ok(())
}
