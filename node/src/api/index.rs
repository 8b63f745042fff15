//! The index half of the API: how a cache server reports what it stores.

use std::sync::Arc;

use purgecast_proto::api::{self as pb, index_server::Index};
use tonic::{Request, Response, Status};

use super::purge::{bearer, refusal_status};
use super::{MAX_LIST, MAX_PUT};
use crate::store::{Entry, EntryInput, Store, StoreError};
use crate::tenants::{Identity, Permission, Refusal, Snapshot, Tenants};

pub struct IndexService {
    pub store: Arc<Store>,
    pub tenants: Arc<Tenants>,
}

/// [`IndexService::host_zone`] against a snapshot taken once per request.
fn host_zone_in(snap: &Snapshot, who: &Identity, host: &str, p: Permission) -> Result<String, Status> {
    let zone = snap.zone_of_host(host).map_err(refusal_status)?;
    snap.authorize_zone(who, &zone, p).map_err(refusal_status)?;
    Ok(zone)
}

impl IndexService {
    fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let snap = self.tenants.snapshot();
        snap.authenticate(bearer(req).as_deref(), crate::tenants::now_secs()).map_err(|e| {
            let r = Refusal::Unauthenticated(e);
            self.tenants.refused("", &r);
            refusal_status(r)
        })
    }

    /// The zone of `host`, once `who` may use it with `p`.
    fn host_zone(&self, who: &Identity, host: &str, p: Permission) -> Result<String, Status> {
        host_zone_in(&self.tenants.snapshot(), who, host, p)
    }

    /// The zone a tag query is about: named, or the token's only zone, or
    /// none where the node has no zones.
    fn tag_zone(&self, who: &Identity, named: &str) -> Result<String, Status> {
        let snap = self.tenants.snapshot();
        let zone = match (named, &who.zones) {
            ("", crate::tenants::ZoneScope::Only(z)) if z.len() == 1 => z.iter().next().cloned().unwrap_or_default(),
            (n, _) => n.to_string(),
        };
        let zone = snap.resolve_zone(&zone).map_err(refusal_status)?;
        if snap.tenancy.is_some() && zone.is_empty() {
            return Err(Status::invalid_argument("name the zone of the tag (tags are per zone)"));
        }
        snap.authorize_zone(who, &zone, Permission::IndexRead).map_err(refusal_status)?;
        Ok(zone)
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::BadEntry { .. }
        | StoreError::TooManyTags { .. }
        | StoreError::BadQuery(_)
        | StoreError::BadZone(_) => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, "store error");
            Status::internal(other.to_string())
        }
    }
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Status::internal(format!("store task failed: {e}")))?
        .map_err(store_status)
}

fn entry_to_api(e: Entry) -> pb::Entry {
    pb::Entry {
        key: e.key,
        tags: e.tags,
        size: e.size,
        stored_at_ms: e.stored_at_ms,
        expires_at_ms: e.expires_at_ms,
        stale: e.stale,
        stale_since_ms: e.stale_since_ms,
        host: e.host,
        path: e.path,
        zone: e.zone,
    }
}

fn need_filter(what: &str) -> Status {
    Status::invalid_argument(format!("{what} needs a filter: host or tag"))
}

fn non_empty<'a>(field: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.is_empty() {
        Err(Status::invalid_argument(format!("{field} must not be empty")))
    } else {
        Ok(v)
    }
}

#[tonic::async_trait]
impl Index for IndexService {
    async fn put(&self, req: Request<pb::PutEntriesRequest>) -> Result<Response<pb::PutEntriesResponse>, Status> {
        let who = self.identify(&req)?;
        let entries = req.into_inner().entries;
        if entries.is_empty() {
            return Err(Status::invalid_argument("put needs at least one entry"));
        }
        if entries.len() > MAX_PUT {
            return Err(Status::invalid_argument(format!("too many entries: {} (at most {MAX_PUT})", entries.len())));
        }
        let now = crate::clock::now_ms();
        let snap = self.tenants.snapshot();
        let mut inputs = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let key = purgecast_core::parse_url(&e.key)
                .map_err(|err| Status::invalid_argument(format!("entry {i}: {err}")))?;
            let zone = host_zone_in(&snap, &who, &key.host, Permission::IndexWrite)?;
            inputs.push(EntryInput {
                key: e.key,
                tags: e.tags,
                size: e.size,
                stored_at_ms: if e.stored_at_ms == 0 { now } else { e.stored_at_ms },
                expires_at_ms: e.expires_at_ms,
                zone,
            });
        }
        let stored = blocking(&self.store, move |s| s.put_entries(&inputs)).await?;
        Ok(Response::new(pb::PutEntriesResponse { stored: stored as u32 }))
    }

    async fn get(&self, req: Request<pb::GetEntryRequest>) -> Result<Response<pb::GetEntryResponse>, Status> {
        let who = self.identify(&req)?;
        let key = non_empty("key", &req.get_ref().key)?.to_string();
        let key = purgecast_core::parse_url(&key).map_err(|e| Status::invalid_argument(format!("key: {e}")))?;
        self.host_zone(&who, &key.host, Permission::IndexRead)?;
        let key = key.key;
        let found = blocking(&self.store, move |s| s.get(&key)).await?;
        Ok(Response::new(pb::GetEntryResponse { found: found.is_some(), entry: found.map(entry_to_api) }))
    }

    async fn list(&self, req: Request<pb::ListEntriesRequest>) -> Result<Response<pb::ListEntriesResponse>, Status> {
        use pb::list_entries_request::Filter;
        let who = self.identify(&req)?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 1000,
            n if n > MAX_LIST => return Err(Status::invalid_argument(format!("limit {n} exceeds {MAX_LIST}"))),
            n => n,
        } as usize;
        let entries = match req.filter {
            Some(Filter::Host(h)) => {
                let h = purgecast_core::normalize_host(&h).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.host_zone(&who, &h, Permission::IndexRead)?;
                blocking(&self.store, move |s| s.list_by_host(&h, limit)).await?
            }
            Some(Filter::Tag(t)) => {
                non_empty("tag", &t)?;
                let zone = self.tag_zone(&who, &req.zone)?;
                blocking(&self.store, move |s| s.list_by_tag(&zone, &t, limit)).await?
            }
            None => return Err(need_filter("list")),
        };
        Ok(Response::new(pb::ListEntriesResponse { entries: entries.into_iter().map(entry_to_api).collect() }))
    }

    async fn count(&self, req: Request<pb::CountEntriesRequest>) -> Result<Response<pb::CountEntriesResponse>, Status> {
        use pb::count_entries_request::Filter;
        let who = self.identify(&req)?;
        let req = req.into_inner();
        let count = match req.filter {
            Some(Filter::Host(h)) => {
                let h = purgecast_core::normalize_host(&h).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.host_zone(&who, &h, Permission::IndexRead)?;
                blocking(&self.store, move |s| s.count_by_host(&h)).await?
            }
            Some(Filter::Tag(t)) => {
                non_empty("tag", &t)?;
                let zone = self.tag_zone(&who, &req.zone)?;
                blocking(&self.store, move |s| s.count_by_tag(&zone, &t)).await?
            }
            Some(Filter::All(true)) | None => {
                // Every zone's entries together: an operator's figure.
                if self.tenants.snapshot().tenancy.is_some() && !who.admin {
                    return Err(Status::permission_denied("counting every entry needs the admin permission"));
                }
                self.store.count_all()
            }
            Some(Filter::All(false)) => return Err(need_filter("count")),
        };
        Ok(Response::new(pb::CountEntriesResponse { count }))
    }
}
