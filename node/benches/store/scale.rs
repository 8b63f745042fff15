//! `scale` mode (issue "Scale"): the store at 1M and at the full size (10M
//! by default) of realistic index entries (scale_data.rs). It loads 1M,
//! measures everything on that store, loads on to the full size and
//! measures again:
//!
//! - load rate per 1M, RSS, disk bytes per entry, close and reopen times;
//! - a hard tag purge of exactly 100k entries and a host purge of a tenth
//!   of the store, each as "apply" (the call returned: the purge is in
//!   effect and durable) and "settled" (apply plus its deferred sweep);
//! - URL purge latency, one synced write each, under a 5k/s fill load;
//! - a zone's everything, a host purge and the global everything, with
//!   entries written after each, restarts before and after their sweeps;
//! - scans of a host and a tag before and after deleting as many entries
//!   as the store holds (the tombstone trap), and after compaction;
//! - the purge log under a storm of URL purges, pruned as the node does,
//!   and the restart time with it.
//!
//! The purges are in scale_purges.rs, the tombstone churn and the purge
//! log in scale_churn.rs, the entries and helpers in scale_data.rs.
//!
//! Every purge is checked: what it had to remove is gone, right after the
//! apply as well as once settled, the rest is there, entries written after
//! it survive its sweep, and the entry count is exact. One line per
//! measurement on stdout; progress with timestamps on stderr. Nothing is
//! asserted about speed.
//!
//! cargo bench -p purgecast-node --bench store -- scale [--entries N] [--dir PATH] [--tombstones-only]
//!
//! The default directory is a temporary one under $TMPDIR; 10M entries
//! take several GB, so point --dir (or TMPDIR) at a disk with room.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use purgecast_core::{Mode, Purge, Selector};
use purgecast_node::store::{EntryInput, Store, StoreOptions};

use super::Seq;

#[path = "scale_churn.rs"]
mod churn;
#[path = "scale_data.rs"]
mod data;
#[path = "scale_purges.rs"]
mod purges;

use data::{ms, per_s, Gen, Group, HOT, ZONE_HOSTS};

const FIRST_SIZE: u64 = 1_000_000;
/// Smallest --entries: below it the groups are too small to time.
const MIN_ENTRIES: u64 = 100_000;
const SEED: u64 = 0x5ca1e;
const LOAD_BATCH: u64 = 10_000;
const REPORT_EVERY: u64 = 1_000_000;
const PROGRESS_EVERY: u64 = 250_000;
/// What the apply worker sweeps per slice (`SWEEP_SLICE`, applier.rs).
const SWEEP_SLICE: usize = 1024;
const MIB: f64 = (1 << 20) as f64;

pub fn run(args: &[String]) -> Result<()> {
    let args = Args::parse(args)?;
    let (_tmp, dir) = store_dir(args.dir.as_deref())?;
    let sizes = if args.entries > FIRST_SIZE && !args.tombstones_only {
        vec![FIRST_SIZE, args.entries]
    } else {
        vec![args.entries]
    };
    let mut b = Bench::new(dir, args.entries)?;
    b.header(&sizes);
    for (k, &size) in sizes.iter().enumerate() {
        b.label = short(size);
        b.load_to(size)?;
        if args.tombstones_only {
            b.space("space after the load")?;
            b.reopen(StoreOptions::default())?;
            b.tombstones()?;
        } else {
            b.measure(k + 1 == sizes.len())?;
        }
    }
    b.progress("done");
    Ok(())
}

struct Args {
    entries: u64,
    dir: Option<PathBuf>,
    /// Load, then only the tombstone case (the scans before and after
    /// deleting as many entries as are loaded): half an hour at 10M
    /// instead of over an hour.
    tombstones_only: bool,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        let mut out = Args { entries: 10_000_000, dir: None, tombstones_only: false };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                // cargo bench passes it to every bench binary.
                "--bench" => {}
                "--entries" => {
                    let v = it.next().context("--entries needs a number")?;
                    out.entries = v.replace('_', "").parse().with_context(|| format!("--entries {v}"))?;
                }
                "--dir" => out.dir = Some(it.next().context("--dir needs a path")?.into()),
                "--tombstones-only" => out.tombstones_only = true,
                other => bail!("unknown argument {other:?}: scale takes --entries N, --dir PATH and --tombstones-only"),
            }
        }
        if out.entries < MIN_ENTRIES {
            bail!("--entries {} is below {MIN_ENTRIES}", out.entries);
        }
        Ok(out)
    }
}

/// The store's directory, and the temporary directory to remove after.
fn store_dir(arg: Option<&Path>) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    let Some(d) = arg else {
        let t = tempfile::tempdir()?;
        let p = t.path().to_path_buf();
        return Ok((Some(t), p));
    };
    if d.exists() && std::fs::read_dir(d)?.next().is_some() {
        bail!("{} is not empty: the bench needs a new store", d.display());
    }
    std::fs::create_dir_all(d)?;
    Ok((None, d.to_path_buf()))
}

fn load_options() -> StoreOptions {
    StoreOptions { sync: false, ..StoreOptions::default() }
}

fn short(n: u64) -> String {
    match n {
        0 => "0".to_string(),
        _ if n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        _ if n >= 1_000_000 && n.is_multiple_of(100_000) => format!("{:.1}M", n as f64 / 1e6),
        _ if n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        _ => n.to_string(),
    }
}

/// The open store. A function of the field, not a method, so the other
/// fields of `Bench` stay free to borrow mutably meanwhile.
fn live(slot: &Option<Store>) -> Result<&Store> {
    slot.as_ref().context("the store is closed")
}

/// Builds purges. Their applied-at times come from a simulated clock, one
/// millisecond per purge: the storm runs at 1,000 purges a second of it,
/// and retention can be driven faster than real time.
struct Clock {
    seq: Seq,
    now_ms: u64,
}

impl Clock {
    fn purge(&mut self, mode: Mode, zone: &str, selectors: Vec<Selector>) -> (Purge, u64) {
        let (mut p, _) = self.seq.purge(mode, Selector::Everything);
        p.selectors = selectors;
        p.zone = zone.to_string();
        self.now_ms += 1;
        (p, self.now_ms)
    }
}

struct Bench {
    dir: PathBuf,
    /// None only while reopening.
    store: Option<Store>,
    gen: Gen,
    /// URL generation of each generator entry (see scale_data.rs).
    gens: Vec<u8>,
    /// Generator entries 0..loaded are stored, every one of them between
    /// measurements (each case puts back what it purged)...
    loaded: u64,
    /// ...and this many other entries (the fill load's), so `count_all`
    /// can be checked exactly.
    extra: u64,
    fill_next: u64,
    after_next: u64,
    miss_next: u64,
    clock: Clock,
    started: Instant,
    /// The size being measured, at the start of each line.
    label: String,
}

struct Settled {
    took: Duration,
    slices: u64,
    swept: u64,
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sweep {:.1} ms: {} slices of {SWEEP_SLICE} rows, {} swept", ms(self.took), self.slices, self.swept)
    }
}

/// Sweeps until no deferred purge is left, as an idle apply worker does.
fn settle(store: &Store) -> Result<Settled> {
    let t = Instant::now();
    let (mut slices, mut swept) = (0u64, 0u64);
    // Each slice walks up to SWEEP_SLICE index rows: far more slices than
    // rows to walk means the sweep is not advancing.
    let cap = 1_000 + 16 * store.count_all() / SWEEP_SLICE as u64;
    while store.deferred_purges() > 0 {
        let out = store.sweep_deferred(SWEEP_SLICE)?;
        slices += 1;
        swept += out.swept;
        if out.remaining == 0 {
            break;
        }
        if slices > cap {
            bail!("the sweep has not ended after {slices} slices ({} purges left)", out.remaining);
        }
    }
    if store.deferred_purges() > 0 {
        bail!("the sweep reported none left, yet {} purges are deferred", store.deferred_purges());
    }
    Ok(Settled { took: t.elapsed(), slices, swept })
}

impl Bench {
    fn new(dir: PathBuf, entries: u64) -> Result<Bench> {
        let base_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let store = Store::open(&dir, load_options())?;
        Ok(Bench {
            dir,
            store: Some(store),
            gen: Gen::new(SEED, base_ms),
            gens: vec![0; entries as usize],
            loaded: 0,
            extra: 0,
            fill_next: 0,
            after_next: 0,
            miss_next: 0,
            clock: Clock { seq: Seq(0), now_ms: base_ms },
            started: Instant::now(),
            label: String::new(),
        })
    }

    fn header(&self, sizes: &[u64]) {
        let (mean, p50, p99, max) = data::url_lengths(&self.gen, 100_000);
        let sizes: Vec<String> = sizes.iter().map(|&s| short(s)).collect();
        println!("scale: measured at {} entries; store in {}", sizes.join(" and "), self.dir.display());
        let hot = Group::hot(self.gens.len() as u64).count();
        println!(
            "entries: {} realistic hosts (Zipf 1.0) + big/media/{ZONE_HOSTS} zone hosts, 3 tags of {} (Zipf 1.0), \
             {HOT} on {hot}; URL bytes mean {mean:.0}, median {p50}, P99 {p99}, max {max}",
            data::REALISTIC_HOSTS,
            data::TAG_SPACE,
        );
        println!(
            "loaded in batches of {LOAD_BATCH} with sync off; measured with the node's StoreOptions::default() \
             (sync on); sweeps in slices of {SWEEP_SLICE} rows, as the apply worker's"
        );
    }

    fn say(&self, what: &str, details: impl std::fmt::Display) {
        println!("[{:>4}] {what:<44} {details}", self.label);
    }

    fn progress(&self, what: impl std::fmt::Display) {
        eprintln!("[{:>8.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn entry(&self, i: u64) -> EntryInput {
        self.gen.entry(i, self.gens[i as usize])
    }

    fn url(&self, i: u64) -> String {
        self.gen.url(i, self.gens[i as usize])
    }

    /// Puts generator entries in batches; returns the time spent in the store.
    fn put(&self, indices: impl IntoIterator<Item = u64>) -> Result<Duration> {
        let store = live(&self.store)?;
        let mut took = Duration::ZERO;
        let mut it = indices.into_iter();
        loop {
            let batch: Vec<EntryInput> = it.by_ref().take(LOAD_BATCH as usize).map(|i| self.entry(i)).collect();
            if batch.is_empty() {
                return Ok(took);
            }
            let t = Instant::now();
            store.put_entries(&batch)?;
            took += t.elapsed();
        }
    }

    fn load_to(&mut self, to: u64) -> Result<()> {
        let (mut from, mut wall, mut in_store) = (self.loaded, Instant::now(), Duration::ZERO);
        let mut i = self.loaded;
        while i < to {
            let end = (i + LOAD_BATCH).min(to);
            in_store += self.put(i..end)?;
            i = end;
            if i.is_multiple_of(PROGRESS_EVERY) {
                self.progress(format!("loaded {i} of {to}"));
            }
            if i.is_multiple_of(REPORT_EVERY) || i == to {
                let n = i - from;
                self.say(
                    &format!("load {}..{}", short(from), short(i)),
                    format!(
                        "{:>8.0} entries/s in put_entries ({:.0}/s counting their generation)",
                        per_s(n, in_store),
                        per_s(n, wall.elapsed())
                    ),
                );
                self.loaded = i;
                self.curve_point("load", i)?;
                (from, wall, in_store) = (i, Instant::now(), Duration::ZERO);
            }
        }
        self.loaded = to;
        self.check_count("after the load")
    }

    fn check_count(&self, when: &str) -> Result<()> {
        let n = live(&self.store)?.count_all();
        let want = self.loaded + self.extra;
        if n != want {
            bail!(
                "{when}: the store counts {n} entries, the bench put {want} ({} generated, {} others)",
                self.loaded,
                self.extra
            );
        }
        Ok(())
    }

    fn reopen(&mut self, opts: StoreOptions) -> Result<(Duration, Duration)> {
        let t = Instant::now();
        drop(self.store.take());
        let close = t.elapsed();
        let t = Instant::now();
        self.store = Some(Store::open(&self.dir, opts)?);
        Ok((close, t.elapsed()))
    }

    fn space(&self, what: &str) -> Result<()> {
        let entries = live(&self.store)?.count_all();
        let disk = data::disk_bytes(&self.dir)?;
        let (hwm, rss) = data::rss_mib()?;
        self.say(
            what,
            format!(
                "{entries} entries, disk {:.1} MiB ({:.0} B/entry), VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB",
                disk as f64 / MIB,
                disk as f64 / entries.max(1) as f64
            ),
        );
        Ok(())
    }

    fn measure(&mut self, last: bool) -> Result<()> {
        self.space("space after the load")?;
        let (close, open) = self.reopen(StoreOptions::default())?;
        self.say(
            "close, reopen with the node's options",
            format!("close {:.1} ms, open {:.1} ms", ms(close), ms(open)),
        );
        self.check_count("after reopening")?;
        self.tag_purge()?;
        self.host_purge()?;
        self.url_purges_under_fill()?;
        self.zone_purge()?;
        self.media_purge()?;
        self.tombstones()?;
        self.purge_log()?;
        self.everything(last)?;
        if !last {
            // The load goes on as it started.
            self.reopen(load_options())?;
        }
        Ok(())
    }
}
