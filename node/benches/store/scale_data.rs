//! The scale bench's data: a deterministic generator of index entries that
//! look like a CDN's, the fixed groups of entries the measurements purge,
//! and small measuring helpers.
//!
//! Entry `i` is a function of `i` alone (its own seeded RNG), so any entry
//! can be rebuilt at any time to be put again or looked up, without the
//! bench holding 10M URLs. Its URL also depends on a small generation
//! number, bumped when the tombstone churn replaces the entry by a new one.
//!
//! Groups by `i % 20`: 5 and 15 are on `big.example.com` (a tenth of the
//! store: 100k at 1M, 1M at 10M), 7 in zone `shop` (hosts
//! `shop{0..20}.example.org`, a twentieth), 13 on `media.example.com` (a
//! twentieth); the rest are on the 1,000 realistic hosts. Entries below 1M
//! whose index is a multiple of 10 carry `hot` as a fourth tag: exactly
//! 100k of them at either size.

use std::fmt::Write as _;
use std::time::Duration;

use purgecast_node::store::EntryInput;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const REALISTIC_HOSTS: usize = 1_000;
pub const TAG_SPACE: usize = 100_000;
/// Popularity of hosts and of tags: rank k is drawn with weight 1/k^s.
const HOST_EXPONENT: f64 = 1.0;
const TAG_EXPONENT: f64 = 1.0;
const TAGS_PER_ENTRY: usize = 3;
pub const HOT: &str = "hot";
const HOT_BELOW: u64 = 1_000_000;
pub const BIG_HOST: &str = "big.example.com";
pub const MEDIA_HOST: &str = "media.example.com";
pub const ZONE: &str = "shop";
pub const ZONE_HOSTS: u64 = 20;
/// Generator indices from here up are never loaded: URLs a node never
/// cached, which most purges name.
const MISS_BASE: u64 = 1 << 40;
const DAY_MS: u64 = 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Realistic,
    Big,
    Zoned,
    Media,
}

pub fn class(i: u64) -> Class {
    match i % 20 {
        5 | 15 => Class::Big,
        7 => Class::Zoned,
        13 => Class::Media,
        _ => Class::Realistic,
    }
}

pub fn is_hot(i: u64) -> bool {
    i < HOT_BELOW && i.is_multiple_of(10)
}

pub fn zone_host(k: u64) -> String {
    format!("shop{k}.example.org")
}

/// Generator indices `start, start + step, ...` below `end`: every group a
/// measurement purges is one, so its members are listed and counted
/// without being stored.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub start: u64,
    pub step: u64,
    pub end: u64,
}

impl Group {
    pub fn hot(n: u64) -> Group {
        Group { start: 0, step: 10, end: n.min(HOT_BELOW) }
    }

    pub fn big(n: u64) -> Group {
        Group { start: 5, step: 10, end: n }
    }

    pub fn zoned(n: u64) -> Group {
        Group { start: 7, step: 20, end: n }
    }

    pub fn media(n: u64) -> Group {
        Group { start: 13, step: 20, end: n }
    }

    pub fn all(n: u64) -> Group {
        Group { start: 0, step: 1, end: n }
    }

    pub fn count(&self) -> u64 {
        if self.end > self.start {
            (self.end - self.start).div_ceil(self.step)
        } else {
            0
        }
    }

    fn nth(&self, k: u64) -> u64 {
        self.start + k * self.step
    }

    pub fn contains(&self, i: u64) -> bool {
        i >= self.start && i < self.end && (i - self.start).is_multiple_of(self.step)
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> {
        (self.start..self.end).step_by(self.step as usize)
    }

    /// All but the last `k` members, and the last `k`.
    pub fn split_last(&self, k: u64) -> (Group, Group) {
        let cut = self.nth(self.count() - k.min(self.count()));
        (Group { end: cut, ..*self }, Group { start: cut, ..*self })
    }

    /// About `n` members spread over the group.
    pub fn sample(&self, n: u64) -> impl Iterator<Item = u64> {
        let g = *self;
        let stride = (g.count() / n.max(1)).max(1);
        (0..g.count()).step_by(stride as usize).map(move |k| g.nth(k))
    }
}

/// Zipf sampler over ranks 0..n: the CDF, searched.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// What the churn and the choice of scan targets need of an entry: its
/// realistic host rank (a dedicated entry reinterprets it) and its tags.
pub struct Core {
    pub host: usize,
    pub tags: [usize; TAGS_PER_ENTRY],
}

pub struct Gen {
    seed: u64,
    /// Stored-at of every entry; expiries are days after it, so no entry
    /// expires while the bench runs (`Store::get` would hide it).
    base_ms: u64,
    hosts: Vec<String>,
    host_pop: Zipf,
    tag_pop: Zipf,
}

impl Gen {
    pub fn new(seed: u64, base_ms: u64) -> Gen {
        Gen {
            seed,
            base_ms,
            hosts: (0..REALISTIC_HOSTS).map(realistic_host).collect(),
            host_pop: Zipf::new(REALISTIC_HOSTS, HOST_EXPONENT),
            tag_pop: Zipf::new(TAG_SPACE, TAG_EXPONENT),
        }
    }

    fn rng(&self, i: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Drawn first from an entry's RNG, so `core` and `entry` agree.
    fn draw_core(&self, rng: &mut StdRng) -> Core {
        let host = self.host_pop.sample(rng);
        let mut tags = [0; TAGS_PER_ENTRY];
        let mut n = 0;
        while n < TAGS_PER_ENTRY {
            let t = self.tag_pop.sample(rng);
            if !tags[..n].contains(&t) {
                tags[n] = t;
                n += 1;
            }
        }
        Core { host, tags }
    }

    pub fn core(&self, i: u64) -> Core {
        self.draw_core(&mut self.rng(i))
    }

    pub fn realistic_host(&self, rank: usize) -> &str {
        &self.hosts[rank]
    }

    pub fn entry(&self, i: u64, generation: u8) -> EntryInput {
        let mut rng = self.rng(i);
        let core = self.draw_core(&mut rng);
        let host = match class(i) {
            Class::Realistic => self.hosts[core.host].clone(),
            Class::Big => BIG_HOST.to_string(),
            Class::Media => MEDIA_HOST.to_string(),
            Class::Zoned => zone_host(core.host as u64 % ZONE_HOSTS),
        };
        let mut key = format!("https://{host}{}", path(&mut rng, i));
        if generation > 0 {
            let sep = if key.contains('?') { '&' } else { '?' };
            let _ = write!(key, "{sep}v={generation}");
        }
        let mut tags: Vec<String> = core.tags.iter().map(|&t| tag_name(t)).collect();
        if is_hot(i) {
            tags.push(HOT.to_string());
        }
        let size = 2f64.powf(rng.random_range(9.0..22.0)) as u64;
        let ttl_days: u64 = rng.random_range(1..=30);
        EntryInput {
            key,
            tags,
            size,
            stored_at_ms: self.base_ms,
            expires_at_ms: self.base_ms + ttl_days * DAY_MS,
            zone: if class(i) == Class::Zoned { ZONE.to_string() } else { String::new() },
        }
    }

    pub fn url(&self, i: u64, generation: u8) -> String {
        self.entry(i, generation).key
    }

    /// A URL on a realistic host that is never loaded.
    pub fn miss_url(&self, k: u64) -> String {
        self.url(MISS_BASE + k, 0)
    }

    /// Entries of the fill load: hosts and tags of their own, so they
    /// change no count a measurement checks.
    pub fn fill_entry(&self, k: u64) -> EntryInput {
        EntryInput {
            key: format!("https://fill{}.example.net/fill/{k}/index.html", k % 10),
            tags: vec!["fill".to_string(), format!("fill-{}", k % 100)],
            size: 20_000,
            stored_at_ms: self.base_ms,
            expires_at_ms: self.base_ms + DAY_MS,
            zone: String::new(),
        }
    }

    /// A new URL written on `host` after a purge of it.
    pub fn after_entry(&self, k: u64, host: &str, zone: &str) -> EntryInput {
        EntryInput {
            key: format!("https://{host}/after/{k}/index.html"),
            tags: vec!["after".to_string()],
            size: 20_000,
            stored_at_ms: self.base_ms,
            expires_at_ms: self.base_ms + DAY_MS,
            zone: zone.to_string(),
        }
    }
}

fn realistic_host(rank: usize) -> String {
    match rank % 6 {
        0 => format!("www.site{rank}.com"),
        1 => format!("cdn{rank}.example.net"),
        2 => format!("shop.brand{rank}.co.uk"),
        3 => format!("static.news{rank}.org"),
        4 => format!("img{rank}.media-cdn.com"),
        _ => format!("api.app{rank}.io"),
    }
}

pub fn tag_name(t: usize) -> String {
    const KINDS: [&str; 6] = ["product", "category", "article", "author", "collection", "page"];
    format!("{}-{t}", KINDS[t % KINDS.len()])
}

// URL shapes. Every URL holds `i` (or a bijection of it) at a place its
// shape fixes, and the shapes differ in their first segment, so no two
// entries share a URL.
const SECTIONS: &[&str] = &[
    "news", "blog", "world", "sport", "tech", "business", "culture", "recipes", "travel", "help", "docs", "guides",
    "reviews", "en", "de", "fr", "video", "opinion", "science", "local",
];
const WORDS: &[&str] = &[
    "the",
    "best",
    "new",
    "how",
    "to",
    "guide",
    "summer",
    "sale",
    "review",
    "cheap",
    "home",
    "garden",
    "running",
    "shoe",
    "black",
    "leather",
    "jacket",
    "phone",
    "case",
    "recipe",
    "easy",
    "chicken",
    "pasta",
    "travel",
    "tips",
    "city",
    "weekend",
    "top",
    "ideas",
    "update",
    "release",
    "notes",
    "market",
    "report",
    "election",
    "results",
    "football",
    "match",
    "highlights",
    "winter",
    "kids",
    "organic",
    "coffee",
    "beans",
    "wireless",
    "headphones",
    "europe",
    "budget",
    "family",
    "online",
];
const LOCALES: &[&str] = &["en-us", "en-gb", "de-de", "fr-fr", "es-es", "it-it", "ja-jp", "nl-nl"];
const ASSET_ROOTS: &[&str] = &["static", "assets", "_next/static", "wp-content/uploads", "dist"];
const ASSET_KINDS: &[&str] = &["js", "css", "chunks", "media", "fonts", "img"];
const ASSET_NAMES: &[&str] =
    &["main", "app", "vendor", "runtime", "polyfills", "styles", "index", "framework", "commons", "logo", "hero"];
const ASSET_EXTS: &[&str] = &["js", "css", "woff2", "svg", "png", "webp", "json", "js.map"];
const IMAGE_EXTS: &[&str] = &["jpg", "webp", "png", "avif"];
const RESOURCES: &[&str] = &["products", "articles", "users", "search", "inventory", "prices", "reviews"];
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn slug(rng: &mut StdRng, p: &mut String, words: std::ops::RangeInclusive<usize>) {
    let n = rng.random_range(words);
    for w in 0..n {
        if w > 0 {
            p.push('-');
        }
        p.push_str(pick(rng, WORDS));
    }
}

/// splitmix64's finaliser: a bijection, so asset hashes are unique.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 2 to 6 segments. The mix of shapes and the campaign tail give URLs of
/// about 85 bytes on average, 75 median, 280 at P99 (a run prints its own).
fn path(rng: &mut StdRng, i: u64) -> String {
    let mut p = String::with_capacity(160);
    let shape = rng.random_range(0..100);
    if shape < 35 {
        // An article or page: sections, maybe a date, a slug with its id.
        for _ in 0..rng.random_range(1..=3) {
            p.push('/');
            p.push_str(pick(rng, SECTIONS));
        }
        if rng.random_bool(0.4) {
            let _ = write!(p, "/{}/{:02}", rng.random_range(2015..=2025), rng.random_range(1..=12));
        }
        p.push('/');
        slug(rng, &mut p, 2..=7);
        let _ = write!(p, "-{i}");
        if rng.random_bool(0.6) {
            p.push_str(".html");
        }
    } else if shape < 55 {
        // A product page, sometimes a variant.
        let _ = write!(p, "/{}", pick(rng, LOCALES));
        if rng.random_bool(0.5) {
            let _ = write!(p, "/{}", pick(rng, WORDS));
        }
        p.push_str("/products/");
        slug(rng, &mut p, 1..=4);
        let _ = write!(p, "-{i}");
        if rng.random_bool(0.4) {
            let _ = write!(p, "?variant={}", rng.random_range(1..100_000));
        }
    } else if shape < 85 {
        // A fingerprinted static asset.
        let _ = write!(
            p,
            "/{}/{}/{}.{:016x}.{}",
            pick(rng, ASSET_ROOTS),
            pick(rng, ASSET_KINDS),
            pick(rng, ASSET_NAMES),
            mix(i),
            pick(rng, ASSET_EXTS)
        );
    } else if shape < 95 {
        // An image in sharded directories, usually resized by query.
        let h = mix(i);
        let _ = write!(p, "/images/{:02x}/{:02x}/{h:016x}.{}", h >> 56, (h >> 48) & 0xff, pick(rng, IMAGE_EXTS));
        if rng.random_bool(0.7) {
            let _ = write!(
                p,
                "?w={}&q={}",
                [320, 640, 960, 1280, 1920][rng.random_range(0..5usize)],
                rng.random_range(60..=90)
            );
            if rng.random_bool(0.3) {
                p.push_str("&fit=crop&auto=format");
            }
        }
    } else {
        // An API read.
        let _ = write!(
            p,
            "/api/v{}/{}/{i}?fields=id,name,price,updated_at&page={}&limit=50",
            rng.random_range(1..=3),
            pick(rng, RESOURCES),
            rng.random_range(1..20)
        );
    }
    // Campaign links: the long tail.
    if rng.random_bool(0.08) {
        p.push(if p.contains('?') { '&' } else { '?' });
        let _ = write!(p, "utm_source={}&utm_medium={}&utm_campaign=", pick(rng, WORDS), pick(rng, WORDS));
        slug(rng, &mut p, 2..=4);
        if rng.random_bool(0.5) {
            p.push_str("&gclid=");
            for _ in 0..rng.random_range(40..160) {
                p.push(ALNUM[rng.random_range(0..ALNUM.len())] as char);
            }
        }
    }
    p
}

pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    let k = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(k.min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
pub use crate::{disk_bytes, rss_mib};

/// Mean, median, P99 and longest URL of the first `n` entries.
pub fn url_lengths(gen: &Gen, n: u64) -> (f64, usize, usize, usize) {
    let mut lens: Vec<usize> = (0..n).map(|i| gen.url(i, 0).len()).collect();
    lens.sort_unstable();
    let mean = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
    let at = |p: f64| lens.get(((lens.len() as f64 * p) as usize).min(lens.len().saturating_sub(1))).copied();
    (mean, at(0.5).unwrap_or(0), at(0.99).unwrap_or(0), lens.last().copied().unwrap_or(0))
}
