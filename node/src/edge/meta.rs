//! A stored object's pingora `CacheMeta`, decoded without repeating the
//! costly part on every hit.
//!
//! `CacheMeta::deserialize` zstd-decompresses and parses the response head
//! each time (with a dictionary: a fixed cost of several microseconds even
//! for a tiny head), and `CacheMeta` is not `Clone`. So the first hit on a
//! copy in the hot tier decodes it once and keeps the head and the few
//! fields of the internal part; later hits rebuild the `CacheMeta` from
//! them with `CacheMeta::new`. That is only done when the rebuilt meta
//! serializes to exactly the stored internal bytes (a fill's meta, never
//! revalidated, with or without a variance); any other (a revalidated one,
//! whose `updated` differs from `created`) is decoded in full every time.

use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_error::Result;
use pingora_http::ResponseHeader;

use crate::store::{Head, ObjectRecord};

/// What `CacheMeta::new` needs besides the head.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Parts {
    fresh_until: SystemTime,
    created: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    variance: Option<HashBinary>,
}

impl Parts {
    fn of(meta: &CacheMeta) -> Parts {
        Parts {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
        }
    }

    fn rebuild(&self, header: ResponseHeader) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            header,
        );
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        meta
    }
}

/// Kept with a copy in the hot tier (see `Head::decoded`).
#[derive(Debug, Clone)]
struct Decoded {
    header: ResponseHeader,
    /// None: not rebuildable exactly; decode in full.
    parts: Option<Parts>,
}

fn decode_once(rec: &ObjectRecord) -> Result<Decoded> {
    let full = CacheMeta::deserialize(&rec.meta_internal, &rec.meta_header)?;
    let parts = Parts::of(&full);
    let header = full.response_header_copy();
    let (internal, _) = parts.rebuild(header.clone()).serialize()?;
    Ok(Decoded { header, parts: (internal == rec.meta_internal).then_some(parts) })
}

/// The `CacheMeta` of `head`.
pub(crate) fn decode(head: &Head) -> Result<CacheMeta> {
    let d: Decoded = head.decoded(decode_once)?;
    match d.parts {
        Some(parts) => Ok(parts.rebuild(d.header)),
        None => CacheMeta::deserialize(&head.rec.meta_internal, &head.rec.meta_header),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn head_of(meta: &CacheMeta) -> Head {
        let (meta_internal, meta_header) = meta.serialize().unwrap();
        let rec = ObjectRecord {
            url: "http://a.com/x".into(),
            body_len: 1,
            meta_internal,
            meta_header,
            ..Default::default()
        };
        Head::new(rec, Some(Bytes::from_static(b"x")))
    }

    fn meta() -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.insert_header("cache-tag", "a,b").unwrap();
        header.insert_header("X-Mixed-Case", "v").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        CacheMeta::new(now + Duration::from_secs(60), now, 10, 300, header)
    }

    #[test]
    fn a_fill_meta_is_rebuilt_exactly_and_a_revalidated_one_decoded_in_full() {
        let mut varied = meta();
        varied.set_variance([7; 16]);
        let mut revalidated = meta();
        revalidated.update_freshness(SystemTime::now() + Duration::from_secs(60), 1, 2);
        for (m, fast) in [(meta(), true), (varied, true), (revalidated, false)] {
            let head = head_of(&m);
            assert_eq!(decode_once(&head.rec).unwrap().parts.is_some(), fast);
            for _ in 0..2 {
                let got = decode(&head).unwrap();
                assert_eq!(got.serialize().unwrap(), m.serialize().unwrap(), "the same meta, head included");
                assert_eq!(got.updated(), m.updated());
                assert_eq!(got.variance(), m.variance());
            }
        }
    }
}
