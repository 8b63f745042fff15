//! The purge service: purges, their status and membership.

use purgecast_core::MAX_SELECTORS;
use purgecast_core::{Member, Mode, PurgeId, Selector};
use purgecast_proto::api::{self as pb, purger_server::Purger};
use tonic::{Request, Response, Status};

use crate::health::{Health, STORE};
use crate::protocol::{Command, DriverError, Handle};

pub struct PurgerService {
    pub driver: Handle,
    pub health: Health,
}

fn driver_status(e: DriverError) -> Status {
    match e {
        DriverError::Invalid(e) => Status::invalid_argument(e.to_string()),
        DriverError::Store(e) => Status::unavailable(format!("purge not stored on this node yet: {e}")),
        DriverError::Stopped => Status::unavailable("node is shutting down"),
        e @ DriverError::NotJoined => Status::unavailable(e.to_string()),
    }
}

pub fn selector_from_api(i: usize, s: &pb::Selector) -> Result<Selector, Status> {
    use pb::selector::Kind;
    let parsed = match &s.kind {
        Some(Kind::Url(u)) => Selector::url(u),
        Some(Kind::Host(h)) => Selector::host(h),
        Some(Kind::Prefix(p)) => Selector::prefix(p),
        Some(Kind::Tag(t)) => Selector::tag(t),
        Some(Kind::Everything(true)) => Ok(Selector::Everything),
        Some(Kind::Everything(false)) | None => {
            return Err(Status::invalid_argument(format!(
                "selector {i}: no kind set (url, host, prefix, tag or everything)"
            )))
        }
    };
    parsed.map_err(|e| Status::invalid_argument(format!("selector {i}: {e}")))
}

fn mode_from_api(m: i32) -> Result<Mode, Status> {
    match pb::PurgeMode::try_from(m) {
        Ok(pb::PurgeMode::Hard) => Ok(Mode::Hard),
        Ok(pb::PurgeMode::Soft) => Ok(Mode::Soft),
        Err(_) => Err(Status::invalid_argument(format!("unknown purge mode {m}"))),
    }
}

fn member_name(members: &[Member], id: purgecast_core::NodeId) -> String {
    members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.profile.name.clone())
}

#[tonic::async_trait]
impl Purger for PurgerService {
    #[tracing::instrument(skip_all, fields(selectors = req.get_ref().selectors.len()))]
    async fn purge(&self, req: Request<pb::PurgeRequest>) -> Result<Response<pb::PurgeResponse>, Status> {
        let req = req.into_inner();
        if req.selectors.is_empty() {
            return Err(Status::invalid_argument("a purge needs at least one selector"));
        }
        if req.selectors.len() > MAX_SELECTORS {
            return Err(Status::invalid_argument(format!(
                "too many selectors: {} (at most {MAX_SELECTORS} in one purge)",
                req.selectors.len()
            )));
        }
        let selectors =
            req.selectors.iter().enumerate().map(|(i, s)| selector_from_api(i, s)).collect::<Result<Vec<_>, _>>()?;
        let mode = mode_from_api(req.mode)?;
        // Accepting would spread the purge to peers while this node cannot
        // store it: send the client to a healthy node instead.
        if let Some(why) = self.health.failing(STORE) {
            return Err(Status::unavailable(format!(
                "this node cannot store purges right now (store: {why}); retry on another node"
            )));
        }
        let accepted = self
            .driver
            .call(|reply| Command::Purge { selectors, mode, reply })
            .await
            .map_err(driver_status)?
            .map_err(driver_status)?;
        Ok(Response::new(pb::PurgeResponse {
            id: accepted.purge.id.to_string(),
            accepted_at_ms: accepted.purge.issued_at_ms,
            members_total: accepted.members_total as u32,
        }))
    }

    async fn get_purge_status(
        &self,
        req: Request<pb::PurgeStatusRequest>,
    ) -> Result<Response<pb::PurgeStatus>, Status> {
        let id: PurgeId = req
            .get_ref()
            .id
            .parse()
            .map_err(|e: purgecast_core::BadPurgeId| Status::invalid_argument(e.to_string()))?;
        let found = self.driver.call(|reply| Command::Status { id, reply }).await.map_err(driver_status)?;
        let Some((s, members)) = found else {
            return Err(Status::not_found(format!(
                "purge {id} is not tracked here: ask the node that accepted it (status is kept for an hour)"
            )));
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        Ok(Response::new(pb::PurgeStatus {
            id: id.to_string(),
            members_total: s.expected as u32,
            members_applied: s.applied.len() as u32,
            applied: s
                .applied
                .iter()
                .map(|(n, d)| pb::MemberApply { node: member_name(&members, *n), latency_ms: ms(*d) })
                .collect(),
            pending: s.pending.iter().map(|n| member_name(&members, *n)).collect(),
            dead: s.dead.iter().map(|n| member_name(&members, *n)).collect(),
            complete: s.completed.is_some(),
            completion_ms: s.completed.map_or(0.0, ms),
            origin: self.driver.me.profile.name.clone(),
        }))
    }

    async fn list_members(
        &self,
        _req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let members = self.driver.call(|reply| Command::Members { reply }).await.map_err(driver_status)?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members
                .iter()
                .map(|m| pb::MemberInfo {
                    name: m.profile.name.clone(),
                    id: m.id.to_string(),
                    peer_addr: m.profile.peer_addr.clone(),
                    api_addr: m.profile.api_addr.clone(),
                    pop: m.profile.location.pop.clone(),
                    region: m.profile.location.region.clone(),
                    state: m.state.as_str().into(),
                    is_self: m.id == self.driver.me.id,
                })
                .collect(),
        }))
    }
}
