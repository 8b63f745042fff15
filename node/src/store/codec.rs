//! Byte layouts of every key and value the store writes.
//!
//! Values start with a format byte so a later build can read old rows or
//! refuse them with a clear error instead of misreading them. Index keys are
//! `component \0 component \0 ...`: selector validation rejects control
//! characters in hosts, paths and tags, so `\0` never occurs inside one, and
//! `"a.com\0"` can never be a prefix of `"a.com:8080\0"`.

use prost::Message as _;
use purgecast_core::wire::{purge_from, purge_to};
use purgecast_core::Purge;
use purgecast_proto::wire as pb;

use super::objects::{ObjectId, ObjectRecord};
use super::Entry;

/// Format byte of every value this build writes.
pub(crate) const VALUE_V1: u8 = 1;
const SEP: u8 = 0;

/// Above every key the store writes: keys are UTF-8 text (which never
/// contains 0xff), 24-byte purge-log keys or object keys of at most 36
/// bytes (all shorter than this).
const TOP: [u8; 40] = [0xff; 40];

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown value format {0} (this build reads format {VALUE_V1})")]
    Format(u8),
    #[error("undecodable value: {0}")]
    Decode(String),
    #[error("key is not UTF-8")]
    Utf8,
    #[error("malformed key of {0} bytes")]
    Key(usize),
    #[error("stored purge is invalid: {0}")]
    Purge(String),
    #[error("purge log record has no purge")]
    NoPurge,
}

/// Everything of an entry except its key, which is the row key.
///
/// Host and path are stored even though they derive from the key: deleting
/// an entry must remove exactly the index rows written for it, even if URL
/// normalisation changes in a later build.
#[derive(Clone, PartialEq, prost::Message)]
struct EntryRecord {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(string, tag = "2")]
    path: String,
    #[prost(string, repeated, tag = "3")]
    tags: Vec<String>,
    #[prost(uint64, tag = "4")]
    size: u64,
    #[prost(uint64, tag = "5")]
    stored_at_ms: u64,
    #[prost(uint64, tag = "6")]
    expires_at_ms: u64,
    #[prost(bool, tag = "7")]
    stale: bool,
    #[prost(uint64, tag = "8")]
    stale_since_ms: u64,
    #[prost(string, tag = "9")]
    zone: String,
    /// Absent (0) in entries written before deferred purges existed: any
    /// deferred purge reaches them, as it should.
    #[prost(uint64, tag = "10")]
    stored_seq: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PurgeRecord {
    #[prost(message, optional, tag = "1")]
    purge: Option<pb::Purge>,
    #[prost(uint64, tag = "2")]
    applied_at_ms: u64,
}

fn versioned(body: impl prost::Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.encoded_len());
    out.push(VALUE_V1);
    body.encode_raw(&mut out);
    out
}

fn unversioned(value: &[u8]) -> Result<&[u8], CodecError> {
    match value.split_first() {
        None => Err(CodecError::Empty),
        Some((&VALUE_V1, body)) => Ok(body),
        Some((v, _)) => Err(CodecError::Format(*v)),
    }
}

pub(crate) fn encode_entry(e: &Entry) -> Vec<u8> {
    versioned(EntryRecord {
        host: e.host.clone(),
        path: e.path.clone(),
        tags: e.tags.clone(),
        size: e.size,
        stored_at_ms: e.stored_at_ms,
        expires_at_ms: e.expires_at_ms,
        stale: e.stale,
        stale_since_ms: e.stale_since_ms,
        zone: e.zone.clone(),
        stored_seq: e.stored_seq,
    })
}

pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, CodecError> {
    let key = std::str::from_utf8(key).map_err(|_| CodecError::Utf8)?.to_string();
    let r = EntryRecord::decode(unversioned(value)?).map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(Entry {
        key,
        host: r.host,
        path: r.path,
        tags: r.tags,
        size: r.size,
        stored_at_ms: r.stored_at_ms,
        expires_at_ms: r.expires_at_ms,
        stale: r.stale,
        stale_since_ms: r.stale_since_ms,
        zone: r.zone,
        stored_seq: r.stored_seq,
    })
}

pub(crate) fn encode_purge_record(p: &Purge, applied_at_ms: u64) -> Vec<u8> {
    versioned(PurgeRecord { purge: Some(purge_to(p)), applied_at_ms })
}

pub(crate) fn decode_purge_record(value: &[u8]) -> Result<(Purge, u64), CodecError> {
    let r = PurgeRecord::decode(unversioned(value)?).map_err(|e| CodecError::Decode(e.to_string()))?;
    let purge = purge_from(r.purge.ok_or(CodecError::NoPurge)?).map_err(|e| CodecError::Purge(e.to_string()))?;
    Ok((purge, r.applied_at_ms))
}

/// Big-endian, so the log iterates in (origin, epoch, seq) order.
pub(crate) fn purge_key(p: &Purge) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&p.stream.origin.0.to_be_bytes());
    k[8..16].copy_from_slice(&p.stream.epoch.to_be_bytes());
    k[16..].copy_from_slice(&p.seq.to_be_bytes());
    k
}

/// Objects: fixed-width numbers first, so a start-up scan reads the size
/// without decoding the rest.
/// `V1 | body_len | stale_since_ms | stored_seq | expires_at_ms` (u64 BE)
/// `| url_len (u32 BE) | url | internal_len (u32 BE) | internal | header`.
pub(crate) fn encode_object(r: &ObjectRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(41 + 8 + r.url.len() + r.meta_internal.len() + r.meta_header.len());
    out.push(VALUE_V1);
    for n in [r.body_len, r.stale_since_ms, r.stored_seq, r.expires_at_ms] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    for part in [r.url.as_bytes(), &r.meta_internal] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&r.meta_header);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Decode(format!("object record truncated (wanted {n} more bytes)")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| CodecError::Key(8))?;
        Ok(u64::from_be_bytes(b))
    }

    fn sized(&mut self) -> Result<&'a [u8], CodecError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| CodecError::Key(4))?;
        self.take(u32::from_be_bytes(b) as usize)
    }
}

pub(crate) fn decode_object(value: &[u8]) -> Result<ObjectRecord, CodecError> {
    let mut r = Reader(unversioned(value)?);
    let (body_len, stale_since_ms, stored_seq, expires_at_ms) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let url = std::str::from_utf8(r.sized()?).map_err(|_| CodecError::Utf8)?.to_string();
    let meta_internal = r.sized()?.to_vec();
    let meta_header = r.0.to_vec();
    Ok(ObjectRecord { url, body_len, stale_since_ms, stored_seq, expires_at_ms, meta_internal, meta_header })
}

/// Only the body size of an object record.
pub(crate) fn decode_object_len(value: &[u8]) -> Result<u64, CodecError> {
    Reader(unversioned(value)?).u64()
}

pub(crate) fn chunk_key(id: &ObjectId, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(id);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, CodecError> {
    let arr: [u8; 8] = value.try_into().map_err(|_| CodecError::Key(value.len()))?;
    Ok(u64::from_be_bytes(arr))
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(p);
    }
    out
}

pub(crate) fn host_row(host: &str, path: &str, key: &str) -> Vec<u8> {
    join(&[host.as_bytes(), path.as_bytes(), key.as_bytes()])
}

/// The tag an entry of `zone` is indexed under for `tag`: tags are per
/// zone, so zone A's tag `x` and zone B's are different rows. Zone ids and
/// tags hold no control characters, so `\x1f` cannot be forged by either.
/// No zone: the tag itself (stores from before zones read the same).
pub(crate) fn zoned_tag(zone: &str, tag: &str) -> String {
    if zone.is_empty() {
        tag.to_string()
    } else {
        format!("{zone}\x1f{tag}")
    }
}

/// The row every entry of a named zone has, so the zone's everything is
/// one range scan.
pub(crate) fn zone_marker(zone: &str) -> String {
    format!("{zone}\x1f")
}

/// The tag rows of an entry: its tags in its zone, and its zone's marker.
pub(crate) fn entry_tag_rows(e: &Entry) -> Vec<Vec<u8>> {
    let mut rows: Vec<Vec<u8>> = e.tags.iter().map(|t| tag_row(&zoned_tag(&e.zone, t), &e.key)).collect();
    if !e.zone.is_empty() {
        rows.push(tag_row(&zone_marker(&e.zone), &e.key));
    }
    rows
}

pub(crate) fn tag_row(tag: &str, key: &str) -> Vec<u8> {
    join(&[tag.as_bytes(), key.as_bytes()])
}

/// The entry key at the end of an index row that has `fields` components
/// before it (2 in by_host, 1 in by_tag).
pub(crate) fn row_entry_key(row: &[u8], fields: usize) -> Result<&[u8], CodecError> {
    row.splitn(fields + 1, |b| *b == SEP).nth(fields).ok_or(CodecError::Key(row.len()))
}

/// A half-open key range `[lower, upper)`: the explicit bounds every
/// iterator and range deletion in the store uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Range {
    pub lower: Vec<u8>,
    pub upper: Vec<u8>,
}

impl Range {
    /// Every key the store can write.
    pub fn all() -> Range {
        Range { lower: Vec::new(), upper: TOP.to_vec() }
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: Vec<u8>) -> Range {
        // Prefixes are built from text, so a successor exists; an empty
        // range is the safe answer should one ever not.
        let upper = successor(&prefix).unwrap_or_else(|| prefix.clone());
        Range { lower: prefix, upper }
    }

    pub fn host(host: &str) -> Range {
        Range::prefix(join(&[host.as_bytes(), b""]))
    }

    pub fn host_path(host: &str, path_prefix: &str) -> Range {
        Range::prefix(join(&[host.as_bytes(), path_prefix.as_bytes()]))
    }

    pub fn tag(tag: &str) -> Range {
        Range::prefix(join(&[tag.as_bytes(), b""]))
    }

    /// From `lower` (inclusive) to the end of the key space.
    pub fn from(lower: Vec<u8>) -> Range {
        Range { lower, upper: TOP.to_vec() }
    }

    /// The rest of this range after `row` (a scan in slices resumes there).
    pub fn past(&self, row: &[u8]) -> Range {
        Range { lower: [row, &[0]].concat(), upper: self.upper.clone() }
    }

    /// The smallest range covering both.
    pub fn span(&self, other: &Range) -> Range {
        Range { lower: self.lower.clone().min(other.lower.clone()), upper: self.upper.clone().max(other.upper.clone()) }
    }

    pub fn overlaps_or_touches(&self, other: &Range) -> bool {
        self.lower <= other.upper && other.lower <= self.upper
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Half-open range holding exactly one key.
pub(crate) fn point(key: &[u8]) -> Range {
    let mut upper = key.to_vec();
    upper.push(0);
    Range { lower: key.to_vec(), upper }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purgecast_core::{Mode, NodeId, PurgeId, Selector, StreamId};

    fn entry() -> Entry {
        Entry {
            key: "https://a.com/x?q".into(),
            host: "a.com".into(),
            path: "/x?q".into(),
            tags: vec!["t1".into(), "t2".into()],
            size: 10,
            stored_at_ms: 5,
            expires_at_ms: 0,
            stale: true,
            stale_since_ms: 7,
            zone: "shop".into(),
            stored_seq: 42,
        }
    }

    #[test]
    fn entries_and_purges_round_trip() {
        let e = entry();
        let bytes = encode_entry(&e);
        assert_eq!(bytes[0], VALUE_V1);
        assert_eq!(decode_entry(e.key.as_bytes(), &bytes), Ok(e));
        let p = Purge {
            id: PurgeId(99),
            stream: StreamId { origin: NodeId(u64::MAX), epoch: 2 },
            seq: 3,
            selectors: vec![Selector::Everything, Selector::tag("x").unwrap()],
            mode: Mode::Soft,
            issued_at_ms: 11,
            zone: String::new(),
            requested_by: String::new(),
        };
        assert_eq!(decode_purge_record(&encode_purge_record(&p, 12)), Ok((p.clone(), 12)));
        assert!(purge_key(&p).as_slice() < TOP.as_slice());
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert_eq!(decode_entry(b"k", &[]), Err(CodecError::Empty));
        assert_eq!(decode_entry(b"k", &[9, 1]), Err(CodecError::Format(9)));
        assert!(matches!(decode_entry(b"k", &[VALUE_V1, 0xff, 0xff]), Err(CodecError::Decode(_))));
        assert_eq!(decode_entry(&[0xc3], &encode_entry(&entry())), Err(CodecError::Utf8));
        assert_eq!(decode_purge_record(&[VALUE_V1]), Err(CodecError::NoPurge));
        assert_eq!(decode_u64(&[1, 2]), Err(CodecError::Key(2)));
    }

    #[test]
    fn index_rows_split_back_into_entry_keys() {
        let row = host_row("a.com", "/p", "https://a.com/p");
        assert_eq!(row_entry_key(&row, 2), Ok(b"https://a.com/p".as_slice()));
        assert_eq!(row_entry_key(&tag_row("t", "http://b/"), 1), Ok(b"http://b/".as_slice()));
        assert_eq!(row_entry_key(b"no-separator", 1), Err(CodecError::Key(12)));
    }

    #[test]
    fn ranges_hold_exactly_their_prefix() {
        let r = Range::host("a.com");
        let inside = host_row("a.com", "/", "k");
        let other_port = host_row("a.com:8080", "/", "k");
        assert!(r.lower <= inside && inside < r.upper);
        assert!(!(r.lower <= other_port && other_port < r.upper));
        let p = Range::host_path("a.com", "/st");
        assert!(p.lower <= host_row("a.com", "/static", "k") && host_row("a.com", "/static", "k") < p.upper);
        assert!(host_row("a.com", "/su", "k") >= p.upper);
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff]), None);
        assert_eq!(Range::prefix(vec![0xff]).upper, vec![0xff]);
    }
}
