//! Message <-> protobuf envelope. Decoding is where a peer's bytes meet
//! our types, so every field is checked and every failure is a typed error.

use std::sync::Arc;

use prost::Message as _;
use purgecast_proto::wire as pb;
use purgecast_proto::WIRE_VERSION;

use crate::id::{NodeId, PurgeId, StreamId};
use crate::member::{Location, Member, MemberState, Profile};
use crate::message::{Message, Stage, Watermark};
use crate::purge::{Mode, Purge};
use crate::selector::Selector;

/// Largest frame a node accepts from a peer.
pub const MAX_FRAME: usize = 4 << 20;

/// A frame that does not decode to a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Larger than `MAX_FRAME`.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Not valid protobuf.
    #[error("undecodable protobuf: {0}")]
    Decode(String),
    /// A protocol version this build does not speak.
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u32),
    /// A required field is missing.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// An id of the wrong length.
    #[error("purge id must be 16 bytes")]
    BadId,
}

/// Encodes a message from `from` as one frame.
pub fn encode(from: NodeId, msg: &Message) -> Vec<u8> {
    to_envelope(from, msg).encode_to_vec()
}

/// The length of `encode(from, msg)`, without encoding it.
pub fn encoded_len(from: NodeId, msg: &Message) -> usize {
    to_envelope(from, msg).encoded_len()
}

/// Decodes one frame into its sender and message.
pub fn decode(bytes: &[u8]) -> Result<(NodeId, Message), WireError> {
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let env = pb::Envelope::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    if env.version != WIRE_VERSION {
        return Err(WireError::Version(env.version));
    }
    let body = env.body.ok_or(WireError::Missing("body"))?;
    Ok((NodeId(env.from), from_body(body)?))
}

fn to_envelope(from: NodeId, msg: &Message) -> pb::Envelope {
    use pb::envelope::Body;
    let body = match msg {
        Message::Push { purge, stage } => {
            Body::Push(pb::Push { purge: Some(purge_to(purge)), stage: stage_to(*stage) as i32 })
        }
        Message::Applied { purge_id, node } => {
            Body::Applied(pb::Applied { purge_id: purge_id.to_bytes().to_vec(), node: node.0 })
        }
        Message::AppliedBy { acks } => Body::AppliedBy(pb::AppliedBy {
            acks: acks
                .iter()
                .map(|(id, nodes)| pb::PurgeAcks {
                    purge_id: id.to_bytes().to_vec(),
                    nodes: nodes.iter().map(|n| n.0).collect(),
                })
                .collect(),
        }),
        Message::Digest { watermarks, reply } => {
            Body::Digest(pb::Digest { watermarks: watermarks.iter().map(wm_to).collect(), reply: *reply })
        }
        Message::Catchup { purges, expired } => Body::Catchup(pb::Catchup {
            purges: purges.iter().map(|p| purge_to(p)).collect(),
            expired: expired.iter().map(wm_to).collect(),
        }),
        Message::Join { member } => Body::Hello(pb::Hello { member: Some(member_to(member)) }),
        Message::Members { members } => Body::Members(pb::Members { members: members.iter().map(member_to).collect() }),
        Message::Ping { probe, updates } => {
            Body::Ping(pb::Ping { probe: *probe, updates: updates.iter().map(member_to).collect() })
        }
        Message::PingAck { probe, updates } => {
            Body::PingAck(pb::PingAck { probe: *probe, updates: updates.iter().map(member_to).collect() })
        }
        Message::PingReq { probe, target, updates } => Body::PingReq(pb::PingReq {
            probe: *probe,
            target: target.0,
            updates: updates.iter().map(member_to).collect(),
        }),
        Message::Leave { member } => Body::Leave(pb::Leave { member: Some(member_to(member)) }),
    };
    pb::Envelope { version: WIRE_VERSION, from: from.0, body: Some(body) }
}

fn from_body(body: pb::envelope::Body) -> Result<Message, WireError> {
    use pb::envelope::Body;
    Ok(match body {
        Body::Push(p) => Message::Push {
            purge: Arc::new(purge_from(p.purge.ok_or(WireError::Missing("push.purge"))?)?),
            stage: stage_from(p.stage),
        },
        Body::Applied(a) => Message::Applied {
            purge_id: PurgeId::from_slice(&a.purge_id).ok_or(WireError::BadId)?,
            node: NodeId(a.node),
        },
        Body::AppliedBy(a) => Message::AppliedBy {
            acks: a
                .acks
                .into_iter()
                .map(|p| {
                    let id = PurgeId::from_slice(&p.purge_id).ok_or(WireError::BadId)?;
                    Ok((id, p.nodes.into_iter().map(NodeId).collect()))
                })
                .collect::<Result<_, WireError>>()?,
        },
        Body::Digest(d) => Message::Digest { watermarks: d.watermarks.iter().map(wm_from).collect(), reply: d.reply },
        Body::Catchup(c) => Message::Catchup {
            purges: c.purges.into_iter().map(|p| purge_from(p).map(Arc::new)).collect::<Result<_, _>>()?,
            expired: c.expired.iter().map(wm_from).collect(),
        },
        Body::Hello(h) => Message::Join { member: member_from(h.member.ok_or(WireError::Missing("hello.member"))?) },
        Body::Members(m) => Message::Members { members: m.members.into_iter().map(member_from).collect() },
        Body::Ping(p) => Message::Ping { probe: p.probe, updates: p.updates.into_iter().map(member_from).collect() },
        Body::PingAck(p) => {
            Message::PingAck { probe: p.probe, updates: p.updates.into_iter().map(member_from).collect() }
        }
        Body::PingReq(p) => Message::PingReq {
            probe: p.probe,
            target: NodeId(p.target),
            updates: p.updates.into_iter().map(member_from).collect(),
        },
        Body::Leave(l) => Message::Leave { member: member_from(l.member.ok_or(WireError::Missing("leave.member"))?) },
    })
}

fn stage_to(s: Stage) -> pb::Stage {
    match s {
        Stage::Gossip => pb::Stage::Gossip,
        Stage::PopEntry => pb::Stage::PopEntry,
        Stage::PopLocal => pb::Stage::PopLocal,
        Stage::PopGossip => pb::Stage::PopGossip,
    }
}

/// Unknown stages (from a newer peer) degrade to "apply, forward nowhere":
/// anti-entropy still gets the purge everywhere.
fn stage_from(v: i32) -> Stage {
    match pb::Stage::try_from(v) {
        Ok(pb::Stage::Gossip) => Stage::Gossip,
        Ok(pb::Stage::PopEntry) => Stage::PopEntry,
        Ok(pb::Stage::PopGossip) => Stage::PopGossip,
        _ => Stage::PopLocal,
    }
}

fn wm_to(w: &Watermark) -> pb::Watermark {
    pb::Watermark { origin: w.stream.origin.0, epoch: w.stream.epoch, seq: w.seq }
}

fn wm_from(w: &pb::Watermark) -> Watermark {
    Watermark { stream: StreamId { origin: NodeId(w.origin), epoch: w.epoch }, seq: w.seq }
}

/// A selector in its protobuf form.
pub fn selector_to(s: &Selector) -> pb::Selector {
    use pb::selector::Kind;
    let kind = match s {
        Selector::Url(u) => Kind::Url(u.clone()),
        Selector::Host(h) => Kind::Host(h.clone()),
        Selector::Prefix { host, path_prefix } => Kind::Prefix(format!("{host}{path_prefix}")),
        Selector::Tag(t) => Kind::Tag(t.clone()),
        Selector::Everything => Kind::Everything(true),
    };
    pb::Selector { kind: Some(kind) }
}

/// Decodes without judging: [`Purge::validate`] decides if it is acceptable,
/// so the refusal is counted and logged with its reason.
fn selector_from(s: pb::Selector) -> Selector {
    use pb::selector::Kind;
    match s.kind {
        Some(Kind::Url(u)) => Selector::Url(u),
        Some(Kind::Host(h)) => Selector::Host(h),
        Some(Kind::Prefix(p)) => match p.find('/') {
            Some(i) => Selector::Prefix { host: p[..i].to_string(), path_prefix: p[i..].to_string() },
            None => Selector::Prefix { host: p, path_prefix: String::new() },
        },
        Some(Kind::Tag(t)) => Selector::Tag(t),
        Some(Kind::Everything(true)) => Selector::Everything,
        // An absent or false kind must not widen into "everything".
        Some(Kind::Everything(false)) | None => Selector::Tag(String::new()),
    }
}

/// A purge in its protobuf form (also the store's record).
pub fn purge_to(p: &Purge) -> pb::Purge {
    pb::Purge {
        id: p.id.to_bytes().to_vec(),
        origin: p.stream.origin.0,
        epoch: p.stream.epoch,
        seq: p.seq,
        selectors: p.selectors.iter().map(selector_to).collect(),
        mode: match p.mode {
            Mode::Hard => pb::Mode::Hard as i32,
            Mode::Soft => pb::Mode::Soft as i32,
        },
        issued_at_ms: p.issued_at_ms,
        zone: p.zone.clone(),
        requested_by: p.requested_by.clone(),
    }
}

/// A purge from its protobuf form, validated.
pub fn purge_from(p: pb::Purge) -> Result<Purge, WireError> {
    Ok(Purge {
        id: PurgeId::from_slice(&p.id).ok_or(WireError::BadId)?,
        stream: StreamId { origin: NodeId(p.origin), epoch: p.epoch },
        seq: p.seq,
        mode: if p.mode == pb::Mode::Soft as i32 { Mode::Soft } else { Mode::Hard },
        selectors: p.selectors.into_iter().map(selector_from).collect(),
        issued_at_ms: p.issued_at_ms,
        zone: p.zone,
        requested_by: p.requested_by,
    })
}

fn member_to(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id.0,
        name: m.profile.name.clone(),
        peer_addr: m.profile.peer_addr.clone(),
        location: Some(pb::Location { pop: m.profile.location.pop.clone(), region: m.profile.location.region.clone() }),
        incarnation: m.incarnation,
        state: match m.state {
            MemberState::Alive => pb::MemberState::Alive,
            MemberState::Suspect => pb::MemberState::Suspect,
            MemberState::Dead => pb::MemberState::Dead,
            MemberState::Left => pb::MemberState::Left,
        } as i32,
        api_addr: m.profile.api_addr.clone(),
    }
}

fn member_from(m: pb::Member) -> Member {
    let loc = m.location.unwrap_or_default();
    Member {
        id: NodeId(m.id),
        profile: Arc::new(Profile {
            name: m.name,
            peer_addr: m.peer_addr,
            api_addr: m.api_addr,
            location: Location { pop: loc.pop, region: loc.region },
        }),
        incarnation: m.incarnation,
        state: match pb::MemberState::try_from(m.state) {
            Ok(pb::MemberState::Suspect) => MemberState::Suspect,
            Ok(pb::MemberState::Dead) => MemberState::Dead,
            Ok(pb::MemberState::Left) => MemberState::Left,
            _ => MemberState::Alive,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_kind_round_trips() {
        let purge = Purge {
            id: PurgeId(42),
            stream: StreamId { origin: NodeId(7), epoch: 3 },
            seq: 9,
            selectors: vec![
                Selector::url("https://a.com/x").unwrap(),
                Selector::host("a.com").unwrap(),
                Selector::prefix("a.com/static/").unwrap(),
                Selector::tag("t").unwrap(),
                Selector::Everything,
            ],
            mode: Mode::Soft,
            issued_at_ms: 123,
            zone: "shop".into(),
            requested_by: "ci".into(),
        };
        let profile = Profile {
            name: "n5".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            location: Location { pop: "ams".into(), region: "eu".into() },
        };
        let member = Member { incarnation: 4, state: MemberState::Suspect, ..Member::new(NodeId(5), profile) };
        let wm = Watermark { stream: purge.stream, seq: 8 };
        let msgs = vec![
            Message::Push { purge: Arc::new(purge.clone()), stage: Stage::PopEntry },
            Message::Applied { purge_id: PurgeId(42), node: NodeId(1) },
            Message::AppliedBy { acks: vec![(PurgeId(43), vec![NodeId(1), NodeId(2)]), (PurgeId(44), vec![])] },
            Message::Digest { watermarks: vec![wm], reply: true },
            Message::Catchup { purges: vec![Arc::new(purge.clone())], expired: vec![wm] },
            Message::Join { member: member.clone() },
            Message::Members { members: vec![member.clone()] },
            Message::Ping { probe: 1, updates: vec![member.clone()] },
            Message::PingAck { probe: 2, updates: vec![] },
            Message::PingReq { probe: 3, target: NodeId(9), updates: vec![] },
            Message::Leave { member },
        ];
        for m in msgs {
            let bytes = encode(NodeId(1), &m);
            assert_eq!(bytes.len(), encoded_len(NodeId(1), &m));
            assert_eq!(decode(&bytes), Ok((NodeId(1), m)));
        }
    }

    #[test]
    fn garbage_and_wrong_versions_are_typed_errors() {
        assert!(matches!(decode(&[0xff, 0xff, 0xff]), Err(WireError::Decode(_))));
        assert_eq!(decode(&[]), Err(WireError::Version(0)));
        let env = pb::Envelope { version: 99, from: 1, body: None };
        assert_eq!(decode(&env.encode_to_vec()), Err(WireError::Version(99)));
        let env = pb::Envelope { version: WIRE_VERSION, from: 1, body: None };
        assert_eq!(decode(&env.encode_to_vec()), Err(WireError::Missing("body")));
        assert!(matches!(decode(&vec![0; MAX_FRAME + 1]), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn a_selector_without_kind_is_not_everything() {
        let s = selector_from(pb::Selector { kind: None });
        assert!(s.validate().is_err());
    }
}
