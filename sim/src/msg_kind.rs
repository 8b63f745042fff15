//! Message kinds, so that what a strategy sends is counted per kind.

use std::fmt;

use purgecast_core::Message;
use serde::Serialize;

/// One per [`Message`] variant; the baselines send only `Push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgKind {
    Push,
    Applied,
    AppliedBy,
    Digest,
    Catchup,
    Join,
    Members,
    Ping,
    PingAck,
    PingReq,
    Leave,
}

impl MsgKind {
    /// In declaration order, which is the order reports list kinds in.
    pub const ALL: [MsgKind; 11] = [
        MsgKind::Push,
        MsgKind::Applied,
        MsgKind::AppliedBy,
        MsgKind::Digest,
        MsgKind::Catchup,
        MsgKind::Join,
        MsgKind::Members,
        MsgKind::Ping,
        MsgKind::PingAck,
        MsgKind::PingReq,
        MsgKind::Leave,
    ];

    pub fn of(msg: &Message) -> MsgKind {
        match msg {
            Message::Push { .. } => MsgKind::Push,
            Message::Applied { .. } => MsgKind::Applied,
            Message::AppliedBy { .. } => MsgKind::AppliedBy,
            Message::Digest { .. } => MsgKind::Digest,
            Message::Catchup { .. } => MsgKind::Catchup,
            Message::Join { .. } => MsgKind::Join,
            Message::Members { .. } => MsgKind::Members,
            Message::Ping { .. } => MsgKind::Ping,
            Message::PingAck { .. } => MsgKind::PingAck,
            Message::PingReq { .. } => MsgKind::PingReq,
            Message::Leave { .. } => MsgKind::Leave,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MsgKind::Push => "push",
            MsgKind::Applied => "applied",
            MsgKind::AppliedBy => "applied_by",
            MsgKind::Digest => "digest",
            MsgKind::Catchup => "catchup",
            MsgKind::Join => "join",
            MsgKind::Members => "members",
            MsgKind::Ping => "ping",
            MsgKind::PingAck => "ping_ack",
            MsgKind::PingReq => "ping_req",
            MsgKind::Leave => "leave",
        }
    }
}

impl fmt::Display for MsgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Messages of one kind and their encoded bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub msgs: u64,
    pub bytes: u64,
}

/// What was sent, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentByKind([Tally; MsgKind::ALL.len()]);

impl SentByKind {
    pub fn add(&mut self, kind: MsgKind, bytes: usize) {
        // The array follows the declaration order, as ALL does.
        let t = &mut self.0[kind as usize];
        t.msgs += 1;
        t.bytes += bytes as u64;
    }

    pub fn get(&self, kind: MsgKind) -> Tally {
        self.0[kind as usize]
    }

    /// Every kind in the order of [`MsgKind::ALL`], unsent ones included.
    pub fn iter(&self) -> impl Iterator<Item = (MsgKind, Tally)> + '_ {
        MsgKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }

    pub fn total(&self) -> Tally {
        self.0.iter().fold(Tally::default(), |a, t| Tally { msgs: a.msgs + t.msgs, bytes: a.bytes + t.bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_own_slot_and_serialise_as_their_name() {
        let mut sent = SentByKind::default();
        for (i, k) in MsgKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::from(k.name()));
            for _ in 0..=i {
                sent.add(k, 10);
            }
        }
        let got: Vec<u64> = sent.iter().map(|(_, t)| t.msgs).collect();
        assert_eq!(got, (1..=11).collect::<Vec<u64>>());
        assert_eq!(sent.total(), Tally { msgs: 66, bytes: 660 });
        assert_eq!(format!("{:<9}|", MsgKind::PingAck), "ping_ack |");
    }

    /// The node labels its metrics with core's `Message::kind()`: the
    /// simulator's names must be the same.
    #[test]
    fn names_match_the_cores_message_kinds() {
        use std::sync::Arc;

        use purgecast_core::{Member, Mode, NodeId, Profile, Purge, PurgeId, Stage, StreamId};

        let id = NodeId::from_name("a");
        let member = Member::new(id, Profile::default());
        let purge = Purge {
            id: PurgeId(1),
            stream: StreamId { origin: id, epoch: 1 },
            seq: 1,
            selectors: Vec::new(),
            mode: Mode::Hard,
            issued_at_ms: 0,
            zone: String::new(),
            requested_by: String::new(),
        };
        let msgs = [
            Message::Push { purge: Arc::new(purge), stage: Stage::PopLocal },
            Message::Applied { purge_id: PurgeId(1), node: id },
            Message::AppliedBy { acks: vec![(PurgeId(1), vec![id])] },
            Message::Digest { watermarks: Vec::new(), reply: false },
            Message::Catchup { purges: Vec::new(), expired: Vec::new() },
            Message::Join { member: member.clone() },
            Message::Members { members: Vec::new() },
            Message::Ping { probe: 1, updates: Vec::new() },
            Message::PingAck { probe: 1, updates: Vec::new() },
            Message::PingReq { probe: 1, target: id, updates: Vec::new() },
            Message::Leave { member },
        ];
        let kinds: Vec<MsgKind> = msgs.iter().map(MsgKind::of).collect();
        assert_eq!(kinds, MsgKind::ALL);
        for m in &msgs {
            assert_eq!(MsgKind::of(m).name(), m.kind());
        }
    }
}
