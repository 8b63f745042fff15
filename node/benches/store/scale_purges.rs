//! The scale bench's large purges and URL purges: each applied, checked
//! right after the apply and again once settled, with entries written
//! after it and restarts, then undone so the next case finds the store as
//! loaded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use purgecast_core::{Mode, Purge, Selector, MAX_SELECTORS};
use purgecast_node::store::{ApplyOutcome, EntryInput, Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::data::{
    class, is_hot, ms, per_s, quantile, tag_name, zone_host, Class, Gen, Group, BIG_HOST, HOT, MEDIA_HOST, ZONE,
    ZONE_HOSTS,
};
use super::{live, settle, short, Bench, SEED};

/// Entries looked up to check a purge: of what it removed, and of the rest.
const SAMPLE: u64 = 1_000;
/// Entries written after a purge: this many of those it removed, put again
/// under the same URLs, and this many new ones.
const AFTER: u64 = 500;
const URL_PURGES: usize = 2_000;
/// The fill load: 50 entries every 10 ms.
const FILL_BATCH: u64 = 50;
const FILL_EVERY: Duration = Duration::from_millis(10);

/// One large purge and what it must do.
struct Case {
    what: String,
    purge: (Purge, u64),
    /// The generator entries it removes...
    victims: Group,
    /// ...and the number of entries it removes in all (everything also
    /// takes the fill load's).
    removes: u64,
    /// Index scopes it empties (not `All`: the count includes entries a
    /// pending sweep has not deleted yet).
    empties: Vec<Scope>,
}

#[derive(Debug, Clone)]
enum Scope {
    Host(String),
    Tag { zone: String, tag: String },
    All,
}

impl Scope {
    fn count(&self, store: &Store) -> Result<u64> {
        Ok(match self {
            Scope::Host(h) => store.count_by_host(h)?,
            Scope::Tag { zone, tag } => store.count_by_tag(zone, tag)?,
            Scope::All => store.count_all(),
        })
    }

    /// Entries a listing of one returns.
    fn listed(&self, store: &Store) -> Result<usize> {
        Ok(match self {
            Scope::Host(h) => store.list_by_host(h, 1)?.len(),
            Scope::Tag { zone, tag } => store.list_by_tag(zone, tag, 1)?.len(),
            Scope::All => usize::from(store.count_all() > 0),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Host(h) => write!(f, "host {h}"),
            Scope::Tag { zone, tag } => write!(f, "tag {tag} of zone {zone:?}"),
            Scope::All => write!(f, "the store"),
        }
    }
}

/// Entries written after a purge: the last of those it removed, put again
/// under the same URLs, and new URLs in its scope.
struct After {
    reput: Group,
    urls: Vec<String>,
    new_urls: Vec<String>,
}

impl After {
    fn none() -> After {
        After { reput: Group { start: 0, step: 1, end: 0 }, urls: Vec::new(), new_urls: Vec::new() }
    }
}

struct Fill {
    puts: u64,
    elapsed: Duration,
    batches: Vec<Duration>,
}

/// Puts FILL_BATCH new entries every FILL_EVERY until `stop`.
fn fill_load(store: &Store, gen: &Gen, first: u64, stop: &AtomicBool) -> Result<Fill> {
    let started = Instant::now();
    let mut next = started;
    let mut k = first;
    let mut batches = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let inputs: Vec<EntryInput> = (k..k + FILL_BATCH).map(|j| gen.fill_entry(j)).collect();
        let t = Instant::now();
        store.put_entries(&inputs)?;
        batches.push(t.elapsed());
        k += FILL_BATCH;
        next += FILL_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(Fill { puts: k - first, elapsed: started.elapsed(), batches })
}

impl Bench {
    fn expect_gone(&self, indices: impl Iterator<Item = u64>, what: &str, when: &str) -> Result<()> {
        let store = live(&self.store)?;
        for i in indices {
            let url = self.url(i);
            if store.get(&url)?.is_some() {
                bail!("{what}, {when}: {url} (entry {i}) is still there");
            }
        }
        Ok(())
    }

    /// A sample across the store of the entries outside `victims`.
    fn expect_kept(&self, victims: Group, what: &str, when: &str) -> Result<()> {
        let store = live(&self.store)?;
        // Odd and prime to 5, so the stride visits every residue mod 20:
        // every group of entries.
        let mut stride = (self.loaded / (4 * SAMPLE)).max(1) | 1;
        if stride.is_multiple_of(5) {
            stride += 2;
        }
        for i in (0..self.loaded).step_by(stride as usize).filter(|&i| !victims.contains(i)).take(SAMPLE as usize) {
            let url = self.url(i);
            if store.get(&url)?.is_none() {
                bail!("{what}, {when}: {url} (entry {i}) is gone, and no purge named it");
            }
        }
        Ok(())
    }

    fn expect_urls(&self, urls: &[String], what: &str, when: &str) -> Result<()> {
        let store = live(&self.store)?;
        for url in urls {
            if store.get(url)?.is_none() {
                bail!("{what}, {when}: {url}, written after the purge, is gone");
            }
        }
        Ok(())
    }

    /// Applies a case's purge and checks it is in effect before any sweep.
    fn apply_checked(&self, case: &Case) -> Result<(Duration, ApplyOutcome)> {
        let store = live(&self.store)?;
        let t = Instant::now();
        let outs = store.apply_purges(std::slice::from_ref(&case.purge))?;
        let took = t.elapsed();
        for s in &case.empties {
            let (n, listed) = (s.count(store)?, s.listed(store)?);
            if n != 0 || listed != 0 {
                bail!("{}: {s} still counts {n} entries (lists {listed}) right after the apply", case.what);
            }
        }
        self.expect_gone(case.victims.sample(SAMPLE), &case.what, "right after the apply")?;
        self.expect_kept(case.victims, &case.what, "right after the apply")?;
        Ok((took, outs.first().copied().unwrap_or_default()))
    }

    /// What a case removed is gone but for what was put again, the rest is
    /// there, what was written after it is there and `scopes` hold just
    /// that; and `count`, once nothing is left to sweep.
    fn verify(&self, case: &Case, after: &After, scopes: &[Scope], count: Option<u64>, when: &str) -> Result<()> {
        let (gone, _) = case.victims.split_last(after.reput.count());
        self.expect_gone(gone.sample(SAMPLE), &case.what, when)?;
        self.expect_kept(case.victims, &case.what, when)?;
        self.expect_urls(&after.urls, &case.what, when)?;
        let store = live(&self.store)?;
        let exact = store.deferred_purges() == 0 || !scopes.iter().any(|s| matches!(s, Scope::All));
        if !scopes.is_empty() && exact {
            let mut n = 0;
            for s in scopes {
                n += s.count(store)?;
            }
            if n != after.urls.len() as u64 {
                bail!("{}, {when}: its scope holds {n} entries, {} were written after it", case.what, after.urls.len());
            }
        }
        if let Some(want) = count {
            let n = store.count_all();
            if n != want {
                bail!("{}, {when}: the store counts {n} entries, expected {want}", case.what);
            }
        }
        Ok(())
    }

    /// Puts back a case's victims and purges the new entries written after
    /// it, so the store holds what the bench expects again.
    fn restore(&mut self, victims: Group, new_urls: &[String]) -> Result<Duration> {
        let t = Instant::now();
        self.put(victims.iter())?;
        if !new_urls.is_empty() {
            let purges: Vec<(Purge, u64)> = new_urls
                .chunks(MAX_SELECTORS)
                .map(|c| self.clock.purge(Mode::Hard, "", c.iter().map(|u| Selector::Url(u.clone())).collect()))
                .collect();
            let outs = live(&self.store)?.apply_purges(&purges)?;
            let removed: u64 = outs.iter().map(|o| o.removed).sum();
            if removed != new_urls.len() as u64 {
                bail!("removing the {} entries written after a purge removed {removed}", new_urls.len());
            }
        }
        Ok(t.elapsed())
    }

    /// Apply, check, settle, check, put back.
    fn big_purge(&mut self, case: Case) -> Result<()> {
        let before = live(&self.store)?.count_all();
        let (apply, out) = self.apply_checked(&case)?;
        let settled = settle(live(&self.store)?)?;
        self.verify(&case, &After::none(), &[], Some(before - case.removes), "settled")?;
        self.say(
            &format!("{} ({} entries)", case.what, case.removes),
            format!(
                "apply {:.1} ms, settled {:.1} ms ({settled}; {} removed inline)",
                ms(apply),
                ms(apply + settled.took),
                out.removed
            ),
        );
        let took = self.restore(case.victims, &[])?;
        self.progress(format!("put the {} entries back in {:.1} s", case.removes, took.as_secs_f64()));
        self.check_count("after putting them back")
    }

    pub(super) fn tag_purge(&mut self) -> Result<()> {
        let victims = Group::hot(self.loaded);
        let case = Case {
            what: format!("hard tag purge {HOT}"),
            purge: self.clock.purge(Mode::Hard, "", vec![Selector::Tag(HOT.to_string())]),
            victims,
            removes: victims.count(),
            empties: vec![Scope::Tag { zone: String::new(), tag: HOT.to_string() }],
        };
        self.big_purge(case)
    }

    pub(super) fn host_purge(&mut self) -> Result<()> {
        let victims = Group::big(self.loaded);
        let case = Case {
            what: format!("hard host purge {BIG_HOST}"),
            purge: self.clock.purge(Mode::Hard, "", vec![Selector::Host(BIG_HOST.to_string())]),
            victims,
            removes: victims.count(),
            empties: vec![Scope::Host(BIG_HOST.to_string())],
        };
        self.big_purge(case)
    }

    /// URL purges of stored entries, one write (and fsync) each, while
    /// another thread fills at 5,000 entries a second.
    pub(super) fn url_purges_under_fill(&mut self) -> Result<()> {
        let n = self.loaded;
        let mut rng = StdRng::seed_from_u64(SEED ^ n);
        let mut picked = HashSet::new();
        let mut victims = Vec::with_capacity(URL_PURGES);
        while victims.len() < URL_PURGES {
            let i = rng.random_range(0..n);
            if class(i) == Class::Realistic && !is_hot(i) && picked.insert(i) {
                victims.push(i);
            }
        }
        let mut purges = Vec::with_capacity(URL_PURGES);
        for &i in &victims {
            let url = self.url(i);
            purges.push(self.clock.purge(Mode::Hard, "", vec![Selector::Url(url)]));
        }
        let store = live(&self.store)?;
        let (gen, first_fill, stop) = (&self.gen, self.fill_next, AtomicBool::new(false));
        let (mut times, fill) = std::thread::scope(|s| -> Result<(Vec<Duration>, Fill)> {
            let filler = s.spawn(|| fill_load(store, gen, first_fill, &stop));
            let mut times = Vec::with_capacity(purges.len());
            let mut failed = None;
            for p in &purges {
                let t = Instant::now();
                if let Err(e) = store.apply_purges(std::slice::from_ref(p)) {
                    failed = Some(e);
                    break;
                }
                times.push(t.elapsed());
            }
            stop.store(true, Ordering::Relaxed);
            let fill = filler.join().map_err(|_| anyhow!("the fill thread panicked"))??;
            match failed {
                Some(e) => Err(e.into()),
                None => Ok((times, fill)),
            }
        })?;
        self.fill_next += fill.puts;
        self.extra += fill.puts;
        self.expect_gone(victims.iter().copied(), "url purges under fill", "after them")?;
        times.sort();
        let mut puts = fill.batches;
        puts.sort();
        self.say(
            &format!("{URL_PURGES} url purges under a 5k/s fill"),
            format!(
                "one synced write each: P50 {:.2} ms, P99 {:.2} ms, max {:.2} ms; fill {:.0} entries/s, \
                 put of {FILL_BATCH} P99 {:.2} ms",
                ms(quantile(&times, 0.5)),
                ms(quantile(&times, 0.99)),
                ms(times.last().copied().unwrap_or_default()),
                per_s(fill.puts, fill.elapsed),
                ms(quantile(&puts, 0.99)),
            ),
        );
        self.put(victims.iter().copied())?;
        self.check_count("after the url purges and the fill load")
    }

    /// Writes, after a purge, the last AFTER of its victims again and
    /// AFTER new URLs on `hosts`.
    fn write_after(&mut self, reput: Group, hosts: &[String], zone: &str) -> Result<After> {
        let mut inputs: Vec<EntryInput> = reput.iter().map(|i| self.entry(i)).collect();
        let mut new_urls = Vec::new();
        for k in 0..AFTER as usize {
            let e = self.gen.after_entry(self.after_next, &hosts[k % hosts.len()], zone);
            self.after_next += 1;
            new_urls.push(e.key.clone());
            inputs.push(e);
        }
        live(&self.store)?.put_entries(&inputs)?;
        Ok(After { reput, urls: inputs.into_iter().map(|e| e.key).collect(), new_urls })
    }

    /// A large purge, entries written after it, a restart before its sweep
    /// (if `restart_first`) and one after; checked at every step. Returns
    /// what was written after it.
    fn purge_then_write(
        &mut self,
        case: &Case,
        hosts: &[String],
        zone: &str,
        scopes: &[Scope],
        restart_first: bool,
    ) -> Result<After> {
        let before = live(&self.store)?.count_all();
        let (apply, _) = self.apply_checked(case)?;
        let after = self.write_after(case.victims.split_last(AFTER).1, hosts, zone)?;
        self.verify(case, &after, scopes, None, "with entries written after it")?;
        let settled_count = before - case.removes + after.urls.len() as u64;
        let mut first = String::new();
        if restart_first {
            let (close, open) = self.reopen(StoreOptions::default())?;
            let pending = live(&self.store)?.deferred_purges();
            self.verify(case, &after, scopes, None, "restarted before its sweep")?;
            first = format!(
                "restart before the sweep ({pending} deferred): close {:.1} ms, open {:.1} ms; ",
                ms(close),
                ms(open)
            );
        }
        let settled = settle(live(&self.store)?)?;
        self.verify(case, &after, scopes, Some(settled_count), "settled")?;
        let (close, open) = self.reopen(StoreOptions::default())?;
        self.verify(case, &after, scopes, Some(settled_count), "settled and restarted")?;
        self.say(
            &format!("{} ({} entries)", case.what, case.removes),
            format!(
                "apply {:.1} ms, settled {:.1} ms ({settled}); {first}restart after: close {:.1} ms, open {:.1} ms; \
                 the {} entries written after it stay",
                ms(apply),
                ms(apply + settled.took),
                ms(close),
                ms(open),
                after.urls.len()
            ),
        );
        Ok(after)
    }

    pub(super) fn zone_purge(&mut self) -> Result<()> {
        let victims = Group::zoned(self.loaded);
        let hosts: Vec<String> = (0..ZONE_HOSTS).map(zone_host).collect();
        let scopes: Vec<Scope> = hosts.iter().map(|h| Scope::Host(h.clone())).collect();
        let mut empties = scopes.clone();
        empties.push(Scope::Tag { zone: ZONE.to_string(), tag: tag_name(0) });
        let case = Case {
            what: format!("everything in zone {ZONE}"),
            purge: self.clock.purge(Mode::Hard, ZONE, vec![Selector::Everything]),
            victims,
            removes: victims.count(),
            empties,
        };
        let after = self.purge_then_write(&case, &hosts, ZONE, &scopes, false)?;
        self.restore(victims, &after.new_urls)?;
        self.check_count("after putting the zone back")
    }

    pub(super) fn media_purge(&mut self) -> Result<()> {
        let victims = Group::media(self.loaded);
        let scopes = vec![Scope::Host(MEDIA_HOST.to_string())];
        let case = Case {
            what: format!("hard host purge {MEDIA_HOST}"),
            purge: self.clock.purge(Mode::Hard, "", vec![Selector::Host(MEDIA_HOST.to_string())]),
            victims,
            removes: victims.count(),
            empties: scopes.clone(),
        };
        let after = self.purge_then_write(&case, &[MEDIA_HOST.to_string()], "", &scopes, true)?;
        self.restore(victims, &after.new_urls)?;
        self.check_count("after putting the host back")
    }

    /// The global everything; then, unless this is the last size, the
    /// store is loaded again for the next one.
    pub(super) fn everything(&mut self, last: bool) -> Result<()> {
        let victims = Group::all(self.loaded);
        let mut empties = vec![
            Scope::Host(BIG_HOST.to_string()),
            Scope::Host(MEDIA_HOST.to_string()),
            Scope::Host(zone_host(0)),
            Scope::Host(self.gen.realistic_host(0).to_string()),
        ];
        if Group::hot(self.loaded).count() > 0 {
            empties.push(Scope::Tag { zone: String::new(), tag: HOT.to_string() });
        }
        let case = Case {
            what: "everything".to_string(),
            purge: self.clock.purge(Mode::Hard, "", vec![Selector::Everything]),
            victims,
            removes: live(&self.store)?.count_all(),
            empties,
        };
        let after = self.purge_then_write(&case, &[BIG_HOST.to_string()], "", &[Scope::All], true)?;
        self.extra = 0;
        let t = Instant::now();
        let runs = live(&self.store)?.compact_purged_ranges()?.runs;
        self.say("  then compact_purged_ranges", format!("{runs} compactions in {:.1} ms", ms(t.elapsed())));
        if !last {
            let took = self.restore(victims, &after.new_urls)?;
            self.say(
                &format!("load {} again", short(self.loaded)),
                format!("{:.0} entries/s", per_s(self.loaded, took)),
            );
            self.check_count("after loading again")?;
        }
        Ok(())
    }
}
