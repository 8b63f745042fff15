//! Several frames in one stream. Under load a peer's queue holds more than
//! one frame by the time its task gets to it; sending them as one stream
//! saves a stream open, a read task and a flow-control round per frame on
//! both sides, and adds no wait: a frame alone still goes alone, as before.
//!
//! A stream holding one frame is that frame, unchanged (a protobuf
//! envelope, whose first byte is never 0). A batch starts with the byte 0,
//! then each frame as a varint length and its bytes; a lone frame that
//! starts with 0 itself (none the protocol sends) goes as a batch of one,
//! so that the two forms never read alike. A node of a build without
//! batches drops a batch as a malformed frame, counted and logged, so
//! batching is switched off (`batch_peer_frames = false`) while such nodes
//! remain.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The first byte of a batch: protobuf field number 0 does not exist, so no
/// single frame starts with it.
const BATCH: u8 = 0;
/// Most frames in one batch: bounds the delay a large batch puts on its
/// last frame, and the work one read task does.
pub(super) const MAX_FRAMES: usize = 64;

/// What a batch adds to a frame: its varint length.
pub(super) fn overhead(len: usize) -> usize {
    prost::encoding::encoded_len_varint(len as u64)
}

/// One stream's payload for `frames` (not empty).
pub(super) fn encode(frames: &[Bytes]) -> Bytes {
    if let [one] = frames {
        if one.first() != Some(&BATCH) {
            return one.clone();
        }
    }
    let len = 1 + frames.iter().map(|f| overhead(f.len()) + f.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(BATCH);
    for f in frames {
        prost::encoding::encode_varint(f.len() as u64, &mut out);
        out.put_slice(f);
    }
    out.freeze()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum BatchError {
    #[error("batch cut off inside a frame length")]
    Length,
    #[error("batch frame of {len} bytes overruns the {left} bytes left")]
    Overrun { len: u64, left: usize },
}

/// The frames of one stream's payload: a batch's, or the payload itself.
/// A malformed batch yields the frames before the fault, then the error.
pub(super) fn decode(mut payload: Bytes) -> impl Iterator<Item = Result<Bytes, BatchError>> {
    let mut single = None;
    if payload.first() == Some(&BATCH) {
        payload.advance(1);
    } else {
        single = Some(Ok(std::mem::take(&mut payload)));
    }
    let mut failed = false;
    std::iter::from_fn(move || {
        if single.is_some() {
            return single.take();
        }
        if failed || payload.is_empty() {
            return None;
        }
        let next = match prost::encoding::decode_varint(&mut payload) {
            Err(_) => Err(BatchError::Length),
            Ok(len) if len > payload.len() as u64 => Err(BatchError::Overrun { len, left: payload.len() }),
            Ok(len) => Ok(payload.split_to(len as usize)),
        };
        failed = next.is_err();
        Some(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payload: Bytes) -> Vec<Result<Bytes, BatchError>> {
        decode(payload).collect()
    }

    #[test]
    fn a_lone_frame_is_sent_as_is() {
        let f = Bytes::from_static(b"\x08\x01\x10\x02");
        assert_eq!(encode(std::slice::from_ref(&f)), f);
        assert_eq!(frames(f.clone()), vec![Ok(f)]);
    }

    #[test]
    fn a_lone_frame_that_looks_like_a_batch_goes_as_one() {
        let f = Bytes::from_static(b"\x00\x00\x01");
        let payload = encode(std::slice::from_ref(&f));
        assert_eq!(&payload[..], b"\x00\x03\x00\x00\x01");
        assert_eq!(frames(payload), vec![Ok(f)]);
    }

    #[test]
    fn a_batch_round_trips_every_frame_in_order() {
        let long = Bytes::from(vec![7u8; 300]);
        let parts = vec![Bytes::from_static(b"\x08\x01"), long.clone(), Bytes::from_static(b"\x0a")];
        let payload = encode(&parts);
        assert_eq!(payload[0], BATCH);
        assert_eq!(payload.len(), 1 + (1 + 2) + (2 + 300) + (1 + 1));
        assert_eq!(frames(payload), parts.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_batch_keeps_the_frames_before_the_damage() {
        let parts = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cdef")];
        let payload = encode(&parts);
        let cut = payload.slice(..payload.len() - 1);
        assert_eq!(frames(cut), vec![Ok(parts[0].clone()), Err(BatchError::Overrun { len: 4, left: 3 })]);
        let two = frames(Bytes::from_static(b"\x00\x02ab\x00"));
        assert_eq!(two, vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::new())]);
        assert_eq!(frames(Bytes::from_static(b"\x00\xff")), vec![Err(BatchError::Length)]);
        assert_eq!(frames(Bytes::from_static(b"\x00")), vec![]);
    }
}
