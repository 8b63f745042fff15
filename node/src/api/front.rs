//! The front door every purge API goes through (gRPC, the Cloudflare- and
//! Fastly-shaped HTTP APIs, `PURGE` at the edge): authenticate, confine to
//! one zone, rate-limit, accept. Each API only translates its own shapes
//! to and from these.

use std::sync::Arc;

use purgecast_core::{Member, Mode, PurgeId, PurgeStatus, Selector, Tenant};

use crate::health::{Health, STORE};
use crate::protocol::{Command, DriverError, Handle};
use crate::tenants::{Identity, Permission, Refusal, Snapshot, Tenants, MAX_NAMED};

/// A purge as any API asks for it, selectors already parsed.
#[derive(Debug, Clone)]
pub(crate) struct PurgeCall {
    /// The zone the client named (a URL path segment or a field), if any.
    pub zone: Option<String>,
    pub selectors: Vec<Selector>,
    pub mode: Mode,
    /// Most tags, hosts and prefixes together ([`MAX_NAMED`] but where a
    /// dialect allows more, as Fastly's 256-key batches).
    pub max_named: usize,
}

impl PurgeCall {
    pub fn new(zone: Option<String>, selectors: Vec<Selector>, mode: Mode) -> Self {
        PurgeCall { zone, selectors, mode, max_named: MAX_NAMED }
    }
}

/// An accepted purge: applied and durable on this node, spreading.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub id: PurgeId,
    pub accepted_at_ms: u64,
    pub members_total: usize,
    /// The zone it is confined to (empty: none).
    pub zone: String,
}

/// A purge's completion as the accepting node tracks it.
pub(crate) struct Status {
    pub status: PurgeStatus,
    pub members: Vec<Member>,
    pub origin: String,
}

#[derive(Clone)]
pub(crate) struct Front {
    pub driver: Handle,
    pub health: Health,
    pub tenants: Arc<Tenants>,
}

fn driver_refusal(e: DriverError) -> Refusal {
    match e {
        DriverError::Invalid(e) => Refusal::Invalid(e.to_string()),
        DriverError::Store(e) => Refusal::Unavailable(format!("purge not stored on this node yet: {e}")),
        DriverError::Stopped => Refusal::Unavailable("node is shutting down".into()),
        e @ DriverError::NotJoined => Refusal::Unavailable(e.to_string()),
    }
}

impl Front {
    /// Who presents `token`; refusals are counted.
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, Refusal> {
        self.identify_in(&self.tenants.snapshot(), token)
    }

    fn identify_in(&self, snap: &Snapshot, token: Option<&str>) -> Result<Identity, Refusal> {
        snap.authenticate(token, crate::tenants::now_secs()).map_err(|e| {
            let r = Refusal::Unauthenticated(e);
            self.tenants.refused("", &r);
            r
        })
    }

    /// Checks, limits and accepts a purge. One snapshot of the tenants
    /// file serves the whole check, so a reload cannot split it.
    pub async fn purge(&self, token: Option<&str>, call: PurgeCall) -> Result<Accepted, Refusal> {
        let snap = self.tenants.snapshot();
        let who = self.identify_in(&snap, token)?;
        let named = call.zone.as_deref().unwrap_or("");
        let zone = snap
            .authorize_purge(&who, call.zone.as_deref(), &call.selectors, call.max_named)
            .inspect_err(|r| self.tenants.refused(named, r))?;
        self.tenants.take(&snap, &zone).inspect_err(|r| self.tenants.refused(&zone, r))?;
        // Accepting would spread the purge to peers while this node cannot
        // store it: send the client to a healthy node instead.
        if let Some(why) = self.health.failing(STORE) {
            return Err(Refusal::Unavailable(format!(
                "this node cannot store purges right now (store: {why}); retry on another node"
            )));
        }
        let tenant = Tenant { zone: zone.clone(), requested_by: who.token_id.clone() };
        let (selectors, mode) = (call.selectors, call.mode);
        let accepted = self
            .driver
            .call(|reply| Command::Purge { tenant, selectors, mode, reply })
            .await
            .map_err(driver_refusal)?
            .map_err(driver_refusal)?;
        tracing::info!(id = %accepted.purge.id, zone = %zone, token = %who.token_id, "purge accepted");
        Ok(Accepted {
            id: accepted.purge.id,
            accepted_at_ms: accepted.purge.issued_at_ms,
            members_total: accepted.members_total,
            zone,
        })
    }

    /// A purge's status, for any caller with a purge permission (ids are
    /// 128 random bits: knowing one is the capability to read it).
    pub async fn status(&self, token: Option<&str>, id: &str) -> Result<Option<Status>, Refusal> {
        let who = self.identify(token)?;
        if !(who.allows(Permission::Purge) || who.allows(Permission::PurgeEverything)) {
            return Err(Refusal::Denied(format!("token {} may not read purge status", who.token_id)));
        }
        let id: PurgeId = id.parse().map_err(|e: purgecast_core::BadPurgeId| Refusal::Invalid(e.to_string()))?;
        let found = self.driver.call(|reply| Command::Status { id, reply }).await.map_err(driver_refusal)?;
        Ok(found.map(|(status, members)| Status { status, members, origin: self.driver.me.profile.name.clone() }))
    }
}
