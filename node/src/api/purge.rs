//! The purge service: purges, their status and membership.

use std::sync::Arc;

use purgecast_core::{Member, Mode, Purge, Selector};
use purgecast_proto::api::{self as pb, purger_server::Purger};
use tonic::{Request, Response, Status};

use super::front::{Front, PurgeCall};
use crate::store::Store;
use crate::tenants::{Identity, Permission, Refusal};

pub struct PurgerService {
    pub front: Front,
    pub store: Arc<Store>,
}

/// The bearer token of a gRPC call, if any.
pub(crate) fn bearer<T>(req: &Request<T>) -> Option<String> {
    let v = req.metadata().get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

pub(crate) fn refusal_status(r: Refusal) -> Status {
    let msg = r.to_string();
    let retry = r.retry_after_secs();
    match r {
        Refusal::Unauthenticated(_) => Status::unauthenticated(msg),
        Refusal::Denied(_) => Status::permission_denied(msg),
        Refusal::Invalid(_) => Status::invalid_argument(msg),
        Refusal::UnknownZone(_) => Status::not_found(msg),
        Refusal::Limited { .. } => {
            let mut s = Status::resource_exhausted(msg);
            if let Some(Ok(v)) = retry.map(|secs| secs.to_string().parse()) {
                s.metadata_mut().insert("retry-after", v);
            }
            s
        }
        Refusal::Unavailable(_) => Status::unavailable(msg),
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

fn selector_to_api(s: &Selector) -> pb::Selector {
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

/// Most audit records one call returns.
const MAX_AUDIT: u32 = 10_000;

fn audit_record(p: &Purge, members: &[Member]) -> pb::AuditRecord {
    pb::AuditRecord {
        id: p.id.to_string(),
        zone: p.zone.clone(),
        token_id: p.requested_by.clone(),
        selectors: p.selectors.iter().map(selector_to_api).collect(),
        mode: match p.mode {
            Mode::Hard => pb::PurgeMode::Hard as i32,
            Mode::Soft => pb::PurgeMode::Soft as i32,
        },
        accepted_at_ms: p.issued_at_ms,
        origin: member_name(members, p.origin()),
    }
}

/// Which zones' records `who` may read: admin all, else its own zones.
fn may_read(who: &Identity, zone: &str) -> bool {
    who.admin || (!zone.is_empty() && who.reaches(zone))
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
        let token = bearer(&req);
        let req = req.into_inner();
        if req.selectors.len() > purgecast_core::MAX_SELECTORS {
            return Err(Status::invalid_argument(format!(
                "too many selectors: {} (at most {} in one purge)",
                req.selectors.len(),
                purgecast_core::MAX_SELECTORS
            )));
        }
        let selectors =
            req.selectors.iter().enumerate().map(|(i, s)| selector_from_api(i, s)).collect::<Result<Vec<_>, _>>()?;
        let mode = mode_from_api(req.mode)?;
        let zone = Some(req.zone).filter(|z| !z.is_empty());
        let accepted =
            self.front.purge(token.as_deref(), PurgeCall::new(zone, selectors, mode)).await.map_err(refusal_status)?;
        Ok(Response::new(pb::PurgeResponse {
            id: accepted.id.to_string(),
            accepted_at_ms: accepted.accepted_at_ms,
            members_total: accepted.members_total as u32,
            zone: accepted.zone,
        }))
    }

    async fn get_purge_status(
        &self,
        req: Request<pb::PurgeStatusRequest>,
    ) -> Result<Response<pb::PurgeStatus>, Status> {
        let token = bearer(&req);
        let id = req.into_inner().id;
        let found = self.front.status(token.as_deref(), &id).await.map_err(refusal_status)?;
        let Some(found) = found else {
            return Err(Status::not_found(format!(
                "purge {id} is not tracked here: ask the node that accepted it (status is kept for an hour)"
            )));
        };
        let (s, members) = (found.status, found.members);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        Ok(Response::new(pb::PurgeStatus {
            id: s.id.to_string(),
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
            origin: found.origin,
        }))
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let who = self.front.identify(bearer(&req).as_deref()).map_err(refusal_status)?;
        let req = req.into_inner();
        let zone = if req.zone.is_empty() {
            None
        } else {
            Some(self.front.tenants.snapshot().resolve_zone(&req.zone).map_err(refusal_status)?)
        };
        if let Some(z) = &zone {
            if !may_read(&who, z) {
                return Err(refusal_status(Refusal::Denied(format!("token {} may not read zone {z:?}", who.token_id))));
            }
        }
        let limit = match req.limit {
            0 => 1000,
            n if n > MAX_AUDIT => return Err(Status::invalid_argument(format!("limit {n} exceeds {MAX_AUDIT}"))),
            n => n as usize,
        };
        if !(who.admin || who.allows(Permission::Purge) || who.allows(Permission::PurgeEverything)) {
            return Err(refusal_status(Refusal::Denied(format!("token {} may not read the audit log", who.token_id))));
        }
        let store = self.store.clone();
        let since = req.since_ms;
        let keep = move |p: &Purge| {
            p.issued_at_ms >= since && zone.as_ref().is_none_or(|z| p.zone == *z) && may_read(&who, &p.zone)
        };
        let (purges, truncated) = tokio::task::spawn_blocking(move || store.newest_purges(keep, limit))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let members = self.front.driver.call(|reply| crate::protocol::Command::Members { reply }).await;
        let members = members.unwrap_or_default();
        Ok(Response::new(pb::ListAuditResponse {
            records: purges.iter().map(|p| audit_record(p, &members)).collect(),
            truncated,
        }))
    }

    async fn list_members(
        &self,
        _req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.front.identify(bearer(&_req).as_deref()).map_err(refusal_status)?;
        let members = self
            .front
            .driver
            .call(|reply| crate::protocol::Command::Members { reply })
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
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
                    is_self: m.id == self.front.driver.me.id,
                })
                .collect(),
        }))
    }
}
