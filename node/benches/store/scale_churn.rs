//! The scale bench's two long phases.
//!
//! The tombstone trap: scans of one host and one tag of about 10k entries
//! each, timed on the fresh store, again after deleting as many entries as
//! the store holds (each deleted entry is put back under a new URL, as a
//! re-published page or a re-fingerprinted asset is, so the scans return
//! as much as before), and again after `compact_purged_ranges`. The host
//! and the tag are purged every round, as busy ones are; other hosts and
//! random URLs make up the rest.
//!
//! The purge log: a storm of URL purges with the node's upkeep pruning it
//! every 5 s. With the node's retention (a day) nothing is pruned within a
//! storm; a 60 s retention stands in for it to show the bound, which is
//! rate x (retention + upkeep period). Restart times with each log.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use purgecast_core::{Mode, Selector};
use purgecast_node::store::{Store, StoreOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::data::{class, median, ms, per_s, quantile, tag_name, Class, Gen, REALISTIC_HOSTS, TAG_SPACE};
use super::{live, settle, Bench};

const SCAN_TARGET: u64 = 10_000;
const SCAN_LIMIT: usize = 1_000;
const SCAN_REPS: usize = 21;
const SCANS: [&str; 4] = ["list_by_host, limit 1000", "count_by_host", "list_by_tag, limit 1000", "count_by_tag"];
const ROUNDS: u64 = 10;
/// URL purges as an API takes them: many URLs in one purge, several
/// purges in one write.
const URLS_PER_PURGE: usize = 100;
const PURGES_PER_WRITE: usize = 10;
const STORM: u64 = 200_000;
/// Purges per write in the storm, about what the apply worker gathers.
const STORM_BATCH: u64 = 1_000;
/// The apply worker's upkeep period (applier.rs), in simulated time.
const UPKEEP_MS: u64 = 5_000;
const SCALED_RETENTION_MS: u64 = 60_000;
/// `Targets::host_of` for entries on a dedicated host.
const NO_HOST: u16 = u16::MAX;

/// The scans' host and tag, and what the churn needs to find entries by
/// host and tag without scanning the store.
struct Targets {
    /// Realistic host rank of each generator entry, or NO_HOST.
    host_of: Vec<u16>,
    host_count: Vec<u64>,
    scan_host: usize,
    scan_tag: usize,
    /// Generator entries carrying the scan tag (in no zone).
    tag_members: Vec<u64>,
}

impl Targets {
    fn find(gen: &Gen, n: u64) -> Targets {
        let mut host_of = Vec::with_capacity(n as usize);
        let mut host_count = vec![0u64; REALISTIC_HOSTS];
        let mut tag_count = vec![0u64; TAG_SPACE];
        for i in 0..n {
            let core = gen.core(i);
            match class(i) {
                Class::Realistic => {
                    host_of.push(core.host as u16);
                    host_count[core.host] += 1;
                }
                _ => host_of.push(NO_HOST),
            }
            // A zone's tags are its own: the scans look at zone "".
            if class(i) != Class::Zoned {
                for &t in &core.tags {
                    tag_count[t] += 1;
                }
            }
        }
        let (scan_host, scan_tag) = (nearest(&host_count), nearest(&tag_count));
        let tag_members =
            (0..n).filter(|&i| class(i) != Class::Zoned && gen.core(i).tags.contains(&scan_tag)).collect();
        Targets { host_of, host_count, scan_host, scan_tag, tag_members }
    }
}

/// The rank whose count is nearest SCAN_TARGET.
fn nearest(counts: &[u64]) -> usize {
    counts.iter().enumerate().min_by_key(|&(_, c)| c.abs_diff(SCAN_TARGET)).map_or(0, |(k, _)| k)
}

/// `curve <phase> <x> <ms of each scan> <results of each scan>`.
fn print_curve(phase: &str, x: u64, scans: &Scans) {
    let times: Vec<String> = scans.times.iter().map(|t| format!("{:.3}", ms(*t))).collect();
    let sizes: Vec<String> = scans.sizes.iter().map(u64::to_string).collect();
    println!("curve {phase} {x} {} {}", times.join(" "), sizes.join(" "));
}

/// Median time and result size of each of SCANS.
struct Scans {
    times: [Duration; 4],
    sizes: [u64; 4],
}

fn time_scans(store: &Store, host: &str, tag: &str) -> Result<Scans> {
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut sizes = [0u64; 4];
    for _ in 0..SCAN_REPS {
        for (k, (time, size)) in times.iter_mut().zip(sizes.iter_mut()).enumerate() {
            let t = Instant::now();
            *size = match k {
                0 => store.list_by_host(host, SCAN_LIMIT)?.len() as u64,
                1 => store.count_by_host(host)?,
                2 => store.list_by_tag("", tag, SCAN_LIMIT)?.len() as u64,
                _ => store.count_by_tag("", tag)?,
            };
            time.push(t.elapsed());
        }
    }
    Ok(Scans { times: times.map(median), sizes })
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

#[derive(Default)]
struct Storm {
    apply: Vec<Duration>,
    prunes: Vec<Duration>,
    pruned: u64,
    peak: u64,
    end: u64,
}

impl std::fmt::Display for Storm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut apply = self.apply.clone();
        apply.sort();
        let mut prunes = self.prunes.clone();
        prunes.sort();
        let purges = self.apply.len() as u64 * STORM_BATCH;
        write!(
            f,
            "writes of {STORM_BATCH}: median {:.1} ms, P99 {:.1} ms ({:.0} purges/s); {} prunes, median {:.1} ms, \
             max {:.1} ms, {} records pruned; log peaked at {}, ended at {}",
            ms(quantile(&apply, 0.5)),
            ms(quantile(&apply, 0.99)),
            per_s(purges, self.apply.iter().sum()),
            prunes.len(),
            ms(quantile(&prunes, 0.5)),
            ms(prunes.last().copied().unwrap_or_default()),
            self.pruned,
            self.peak,
            self.end
        )
    }
}

impl Bench {
    /// One point of the scan-time curves: the four scans over a host and a
    /// tag of about SCAN_TARGET entries each, as a `curve` line on stdout
    /// (`tests/bench/scale_plot.py` draws them).
    pub(super) fn curve_point(&self, phase: &str, x: u64) -> Result<()> {
        let tg = Targets::find(&self.gen, self.loaded);
        let host = self.gen.realistic_host(tg.scan_host).to_string();
        let scans = time_scans(live(&self.store)?, &host, &tag_name(tg.scan_tag))?;
        print_curve(phase, x, &scans);
        Ok(())
    }

    pub(super) fn tombstones(&mut self) -> Result<()> {
        let t = Instant::now();
        let tg = Targets::find(&self.gen, self.loaded);
        let host = self.gen.realistic_host(tg.scan_host).to_string();
        let tag = tag_name(tg.scan_tag);
        self.progress(format!(
            "scan targets: host {host} ({} entries), tag {tag} ({}), found in {:.1} s",
            tg.host_count[tg.scan_host],
            tg.tag_members.len(),
            t.elapsed().as_secs_f64()
        ));
        // The node's upkeep compacts purged ranges every 5 s: the earlier
        // cases' purges are long compacted on a real node.
        live(&self.store)?.compact_purged_ranges()?;
        let fresh = time_scans(live(&self.store)?, &host, &tag)?;
        print_curve("churn", 0, &fresh);
        let (deleted, took) = self.churn(&tg, &host, &tag)?;
        self.say(
            &format!("churn: {deleted} entries deleted, put back"),
            format!(
                "{:.1} s ({:.0} entries/s deleted, put back under new URLs and swept), {ROUNDS} rounds of host, \
                 tag and URL purges",
                took.as_secs_f64(),
                per_s(deleted, took)
            ),
        );
        let churned = time_scans(live(&self.store)?, &host, &tag)?;
        self.space("space after the churn")?;
        let t = Instant::now();
        let done = live(&self.store)?.compact_purged_ranges()?;
        let (runs, whole) = (done.runs, if done.full { ", the index families whole" } else { "" });
        self.say(
            "  then compact_purged_ranges",
            format!("{runs} compactions{whole} in {:.1} s", t.elapsed().as_secs_f64()),
        );
        let compacted = time_scans(live(&self.store)?, &host, &tag)?;
        print_curve("compacted", deleted, &compacted);
        self.space("space after compaction")?;
        // The fresh scans ran right after a reopen too: same footing.
        let (close, open) = self.reopen(StoreOptions::default())?;
        self.say("  then close, reopen", format!("close {:.1} ms, open {:.1} ms", ms(close), ms(open)));
        let reopened = time_scans(live(&self.store)?, &host, &tag)?;
        print_curve("reopened", deleted, &reopened);
        for (when, scans) in
            [("after the churn", &churned), ("after compaction", &compacted), ("after the reopen", &reopened)]
        {
            if scans.sizes != fresh.sizes {
                bail!("scans {when} return {:?} entries, {:?} on the fresh store", scans.sizes, fresh.sizes);
            }
        }
        for (k, name) in SCANS.iter().enumerate() {
            let on = if k < 2 { &host } else { &tag };
            self.say(
                &format!("scan {name}"),
                format!(
                    "{on}, {} results: fresh {:.3} ms, after {deleted} deletes {:.3} ms ({:.2}x), \
                     compacted {:.3} ms ({:.2}x), then reopened {:.3} ms ({:.2}x)",
                    fresh.sizes[k],
                    ms(fresh.times[k]),
                    ms(churned.times[k]),
                    ratio(churned.times[k], fresh.times[k]),
                    ms(compacted.times[k]),
                    ratio(compacted.times[k], fresh.times[k]),
                    ms(reopened.times[k]),
                    ratio(reopened.times[k], fresh.times[k])
                ),
            );
        }
        Ok(())
    }

    /// Deletes about as many entries as are loaded, in ROUNDS rounds, each
    /// putting its victims back under new URLs and sweeping; returns how
    /// many were deleted and the time taken.
    fn churn(&mut self, tg: &Targets, host: &str, tag: &str) -> Result<(u64, Duration)> {
        let n = self.loaded;
        let quota = (n / ROUNDS).max(1);
        let mut rng = StdRng::seed_from_u64(super::SEED ^ n ^ 0xc4);
        let mut order: Vec<usize> = (0..REALISTIC_HOSTS).filter(|&h| h != tg.scan_host).collect();
        order.shuffle(&mut rng);
        let mut next_host = 0;
        let mut deleted = 0;
        let started = Instant::now();
        for round in 1..=ROUNDS {
            let mut chosen = vec![false; REALISTIC_HOSTS];
            chosen[tg.scan_host] = true;
            let mut big = vec![
                self.clock.purge(Mode::Hard, "", vec![Selector::Host(host.to_string())]),
                self.clock.purge(Mode::Hard, "", vec![Selector::Tag(tag.to_string())]),
            ];
            let other = quota.saturating_sub(tg.host_count[tg.scan_host] + tg.tag_members.len() as u64);
            // Half of the rest by host purges, the next hosts in turn that
            // fit in it; the other half by URL.
            let mut by_host = 0;
            for _ in 0..order.len() {
                let h = order[next_host % order.len()];
                next_host += 1;
                let c = tg.host_count[h];
                if c == 0 || by_host + c > other / 2 {
                    continue;
                }
                by_host += c;
                chosen[h] = true;
                big.push(self.clock.purge(
                    Mode::Hard,
                    "",
                    vec![Selector::Host(self.gen.realistic_host(h).to_string())],
                ));
            }
            let mut urls: Vec<u64> = (0..other - by_host).map(|_| rng.random_range(0..n)).collect();
            urls.sort_unstable();
            urls.dedup();
            let mut url_purges = Vec::new();
            for chunk in urls.chunks(URLS_PER_PURGE) {
                let selectors = chunk.iter().map(|&i| Selector::Url(self.url(i))).collect();
                url_purges.push(self.clock.purge(Mode::Hard, "", selectors));
            }
            let store = live(&self.store)?;
            store.apply_purges(&big)?;
            for write in url_purges.chunks(PURGES_PER_WRITE) {
                store.apply_purges(write)?;
            }
            let mut victims: Vec<u64> = (0..n)
                .filter(|&i| {
                    let h = tg.host_of[i as usize];
                    h != NO_HOST && chosen[h as usize]
                })
                .collect();
            victims.extend_from_slice(&tg.tag_members);
            victims.extend_from_slice(&urls);
            victims.sort_unstable();
            victims.dedup();
            for &i in &victims {
                let g = &mut self.gens[i as usize];
                *g = g.checked_add(1).with_context(|| format!("entry {i} was replaced 255 times"))?;
            }
            // Before the sweep: it must leave the new entries alone.
            self.put(victims.iter().copied())?;
            let settled = settle(live(&self.store)?)?;
            deleted += victims.len() as u64;
            self.check_count(&format!("after churn round {round}"))?;
            // Uncompacted: the worst a node sees between two upkeeps.
            print_curve("churn", deleted, &time_scans(live(&self.store)?, host, tag)?);
            self.progress(format!(
                "churn round {round}/{ROUNDS}: {} deleted and put back ({} host purges, {} URLs); {settled}",
                victims.len(),
                big.len() - 1,
                urls.len()
            ));
        }
        Ok((deleted, started.elapsed()))
    }

    pub(super) fn purge_log(&mut self) -> Result<()> {
        let retention = purgecast_core::Config::default().retention.as_millis() as u64;
        let store = live(&self.store)?;
        let before = store.purge_log_len()?;
        // A quiet day later, the first upkeep finds every record so far
        // past the retention (cutoff = now - retention, applier.rs).
        self.clock.now_ms += retention + UPKEEP_MS;
        let t = Instant::now();
        let pruned = store.prune_purge_log(self.clock.now_ms - retention)?;
        let took = t.elapsed();
        self.say(
            "purge log, a day after the churn",
            format!(
                "{before} records; the upkeep prunes {pruned} in {:.1} ms, {} left",
                ms(took),
                store.purge_log_len()?
            ),
        );
        let s = self.storm(STORM, retention)?;
        self.say(&format!("storm of {STORM} url purges, retention {} h", retention / 3_600_000), &s);
        self.restart_with_log("restart with that log")?;
        let store = live(&self.store)?;
        let t = Instant::now();
        let pruned = store.prune_purge_log(self.clock.now_ms - SCALED_RETENTION_MS)?;
        let took = t.elapsed();
        self.say(
            &format!("prune to a {} s retention", SCALED_RETENTION_MS / 1000),
            format!("{pruned} records in {:.1} ms, {} left", ms(took), store.purge_log_len()?),
        );
        self.restart_with_log("restart with the pruned log")?;
        let s = self.storm(STORM, SCALED_RETENTION_MS)?;
        self.say(
            &format!("storm of {STORM}, retention {} s", SCALED_RETENTION_MS / 1000),
            format!(
                "{s}; bound 1000/s x {} s = {}",
                (SCALED_RETENTION_MS + UPKEEP_MS) / 1000,
                SCALED_RETENTION_MS + UPKEEP_MS
            ),
        );
        self.restart_with_log("restart with the log at its bound")
    }

    /// `count` purges of URLs never cached, STORM_BATCH per write, with
    /// the upkeep's prune every UPKEEP_MS of simulated time.
    fn storm(&mut self, count: u64, retention_ms: u64) -> Result<Storm> {
        let mut s = Storm::default();
        let mut last_upkeep = self.clock.now_ms;
        let mut done = 0;
        while done < count {
            let k = STORM_BATCH.min(count - done);
            let mut batch = Vec::with_capacity(k as usize);
            for _ in 0..k {
                let url = self.gen.miss_url(self.miss_next);
                self.miss_next += 1;
                batch.push(self.clock.purge(Mode::Hard, "", vec![Selector::Url(url)]));
            }
            let store = live(&self.store)?;
            let t = Instant::now();
            let outs = store.apply_purges(&batch)?;
            s.apply.push(t.elapsed());
            if outs.iter().any(|o| o.matched > 0) {
                bail!("a storm purge of a URL never stored matched an entry");
            }
            done += k;
            if self.clock.now_ms - last_upkeep >= UPKEEP_MS {
                last_upkeep = self.clock.now_ms;
                s.peak = s.peak.max(store.purge_log_len()?);
                let t = Instant::now();
                s.pruned += store.prune_purge_log(self.clock.now_ms.saturating_sub(retention_ms))?;
                s.prunes.push(t.elapsed());
            }
        }
        s.end = live(&self.store)?.purge_log_len()?;
        s.peak = s.peak.max(s.end);
        Ok(s)
    }

    /// Close and open, then read the log as the node does at start
    /// (`server::restore`): Store::open alone does not read it.
    fn restart_with_log(&mut self, what: &str) -> Result<()> {
        let (close, open) = self.reopen(StoreOptions::default())?;
        let t = Instant::now();
        let records = live(&self.store)?.applied_purges()?.len();
        self.say(
            what,
            format!(
                "{records} records: close {:.1} ms, open {:.1} ms, applied_purges {:.1} ms",
                ms(close),
                ms(open),
                ms(t.elapsed())
            ),
        );
        Ok(())
    }
}
