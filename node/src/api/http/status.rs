//! A purge's status as JSON, with the fields and meanings of the gRPC
//! `GetPurgeStatus` (`api/purge.rs`), so one script can read either.

use std::time::Duration;

use purgecast_core::{Member, NodeId};
use serde_json::{json, Value};

use crate::api::front::Status;

fn member_name(members: &[Member], id: NodeId) -> String {
    members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.profile.name.clone())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `completion_ms` is null until the purge completes (gRPC says 0, for
/// want of a null).
pub(crate) fn status_json(s: &Status) -> Value {
    let st = &s.status;
    let name = |id: &NodeId| member_name(&s.members, *id);
    json!({
        "id": st.id.to_string(),
        "members_total": st.expected,
        "members_applied": st.applied.len(),
        "applied": st.applied.iter().map(|(n, d)| json!({ "node": name(n), "latency_ms": ms(*d) })).collect::<Vec<_>>(),
        "pending": st.pending.iter().map(name).collect::<Vec<_>>(),
        "dead": st.dead.iter().map(name).collect::<Vec<_>>(),
        "complete": st.completed.is_some(),
        "completion_ms": st.completed.map(ms),
        "origin": s.origin,
    })
}

#[cfg(test)]
mod tests {
    use purgecast_core::{PurgeId, PurgeStatus, Time};

    use super::*;

    #[test]
    fn status_has_the_grpc_fields_and_names_unknown_members_by_id() {
        let s = Status {
            status: PurgeStatus {
                id: PurgeId(0xab),
                accepted: Time::ZERO,
                expected: 3,
                applied: vec![(NodeId(1), Duration::from_micros(2500))],
                pending: vec![NodeId(2)],
                dead: vec![NodeId(3)],
                completed: None,
            },
            members: Vec::new(),
            origin: "n1".into(),
        };
        let v = status_json(&s);
        assert_eq!(v["id"], json!(PurgeId(0xab).to_string()));
        assert_eq!(v["members_total"], json!(3));
        assert_eq!(v["members_applied"], json!(1));
        assert_eq!(v["applied"], json!([{ "node": NodeId(1).to_string(), "latency_ms": 2.5 }]));
        assert_eq!(v["pending"], json!([NodeId(2).to_string()]));
        assert_eq!(v["dead"], json!([NodeId(3).to_string()]));
        assert_eq!(v["complete"], json!(false));
        assert_eq!(v["completion_ms"], Value::Null);
        assert_eq!(v["origin"], json!("n1"));
    }

    #[test]
    fn a_complete_purge_has_its_completion_time() {
        let s = Status {
            status: PurgeStatus {
                id: PurgeId(1),
                accepted: Time::ZERO,
                expected: 1,
                applied: vec![(NodeId(1), Duration::from_millis(4))],
                pending: vec![],
                dead: vec![],
                completed: Some(Duration::from_millis(4)),
            },
            members: Vec::new(),
            origin: "n1".into(),
        };
        let v = status_json(&s);
        assert_eq!(v["complete"], json!(true));
        assert_eq!(v["completion_ms"], json!(4.0));
    }
}
