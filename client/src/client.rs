//! The gRPC client: one channel, both services, bearer token on every call.

use std::time::Duration;

use purgecast_proto::api::{
    count_entries_request, index_client::IndexClient, list_entries_request, purger_client::PurgerClient, AuditRecord,
    CountEntriesRequest, Entry, GetEntryRequest, ListAuditRequest, ListEntriesRequest, ListMembersRequest, MemberInfo,
    PurgeMode, PurgeRequest, PurgeResponse, PurgeStatus, PurgeStatusRequest, PutEntriesRequest, Selector,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::ClientError;

/// Bounds a connect attempt so a black-holed address fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds every call; no RPC of this API does long work on the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Smallest poll interval `wait_complete` uses, so a zero cannot spin.
const MIN_POLL: Duration = Duration::from_millis(1);

/// Adds `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Auth>;

/// Which entries an index list or count covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryFilter {
    Host(String),
    Tag(String),
}

/// A connection to one node. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct Client {
    endpoint: String,
    purger: PurgerClient<Svc>,
    index: IndexClient<Svc>,
}

impl Client {
    /// Connects to `endpoint` ("http://host:port" or "host:port").
    pub async fn connect(endpoint: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::connect_with(endpoint, token, None).await
    }

    /// Connects to `endpoint`; an `https://` endpoint is verified against
    /// `ca_pem` (PEM certificates) when given, else the public web roots.
    pub async fn connect_with(
        endpoint: &str,
        token: Option<String>,
        ca_pem: Option<&str>,
    ) -> Result<Client, ClientError> {
        let endpoint = normalize_endpoint(endpoint);
        let header = match token.filter(|t| !t.is_empty()) {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| ClientError::InvalidToken)?),
            None => None,
        };
        let ep = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| ClientError::InvalidEndpoint { endpoint: endpoint.clone(), reason: e.to_string() })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        let ep = if endpoint.starts_with("https://") {
            let tls = match ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            ep.tls_config(tls)
                .map_err(|e| ClientError::InvalidEndpoint { endpoint: endpoint.clone(), reason: e.to_string() })?
        } else {
            ep
        };
        let channel = ep.connect().await.map_err(|e| ClientError::transport(&endpoint, &e))?;
        let auth = Auth { header };
        Ok(Client {
            purger: PurgerClient::with_interceptor(channel.clone(), auth.clone()),
            index: IndexClient::with_interceptor(channel, auth),
            endpoint,
        })
    }

    /// The normalised endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn purge(&self, selectors: Vec<Selector>, mode: PurgeMode) -> Result<PurgeResponse, ClientError> {
        self.purge_in("", selectors, mode).await
    }

    /// A purge confined to `zone` ("" = let the node work it out from the
    /// selectors' hosts or the token).
    pub async fn purge_in(
        &self,
        zone: &str,
        selectors: Vec<Selector>,
        mode: PurgeMode,
    ) -> Result<PurgeResponse, ClientError> {
        let req = PurgeRequest { selectors, mode: mode as i32, zone: zone.to_string() };
        Ok(self.purger.clone().purge(req).await?.into_inner())
    }

    /// Accepted purges from the node's purge log, newest first; the bool
    /// says more matched than `limit`.
    pub async fn audit(&self, zone: &str, since_ms: u64, limit: u32) -> Result<(Vec<AuditRecord>, bool), ClientError> {
        let req = ListAuditRequest { zone: zone.to_string(), since_ms, limit };
        let resp = self.purger.clone().list_audit(req).await?.into_inner();
        Ok((resp.records, resp.truncated))
    }

    pub async fn status(&self, id: &str) -> Result<PurgeStatus, ClientError> {
        let req = PurgeStatusRequest { id: id.to_string() };
        Ok(self.purger.clone().get_purge_status(req).await?.into_inner())
    }

    pub async fn members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        Ok(self.purger.clone().list_members(ListMembersRequest {}).await?.into_inner().members)
    }

    /// Stores entries in the node's index; returns how many were stored.
    pub async fn index_put(&self, entries: Vec<Entry>) -> Result<u32, ClientError> {
        Ok(self.index.clone().put(PutEntriesRequest { entries }).await?.into_inner().stored)
    }

    pub async fn index_get(&self, key: &str) -> Result<Option<Entry>, ClientError> {
        let resp = self.index.clone().get(GetEntryRequest { key: key.to_string() }).await?.into_inner();
        Ok(if resp.found { resp.entry } else { None })
    }

    pub async fn index_list(&self, filter: EntryFilter, limit: u32) -> Result<Vec<Entry>, ClientError> {
        self.index_list_in("", filter, limit).await
    }

    /// As [`Client::index_list`], with the zone of a tag filter.
    pub async fn index_list_in(&self, zone: &str, filter: EntryFilter, limit: u32) -> Result<Vec<Entry>, ClientError> {
        let filter = match filter {
            EntryFilter::Host(h) => list_entries_request::Filter::Host(h),
            EntryFilter::Tag(t) => list_entries_request::Filter::Tag(t),
        };
        let req = ListEntriesRequest { filter: Some(filter), limit, zone: zone.to_string() };
        Ok(self.index.clone().list(req).await?.into_inner().entries)
    }

    /// Counts entries matching `filter`, or all entries for `None`.
    pub async fn index_count(&self, filter: Option<EntryFilter>) -> Result<u64, ClientError> {
        self.index_count_in("", filter).await
    }

    /// As [`Client::index_count`], with the zone of a tag filter.
    pub async fn index_count_in(&self, zone: &str, filter: Option<EntryFilter>) -> Result<u64, ClientError> {
        let filter = match filter {
            Some(EntryFilter::Host(h)) => count_entries_request::Filter::Host(h),
            Some(EntryFilter::Tag(t)) => count_entries_request::Filter::Tag(t),
            None => count_entries_request::Filter::All(true),
        };
        let req = CountEntriesRequest { filter: Some(filter), zone: zone.to_string() };
        Ok(self.index.clone().count(req).await?.into_inner().count)
    }

    /// Polls the purge's status until it is complete. On timeout returns
    /// [`ClientError::Timeout`] carrying the last status seen.
    pub async fn wait_complete(
        &self,
        id: &str,
        timeout: Duration,
        poll_interval: Duration,
    ) -> Result<PurgeStatus, ClientError> {
        let poll = poll_interval.max(MIN_POLL);
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        // The deadline ends the loop; the count is a backstop against a
        // clock that does not advance.
        let max_polls = timeout.as_millis() / poll.as_millis() + 2;
        let mut last: Option<Box<PurgeStatus>> = None;
        for _ in 0..max_polls {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.status(id)).await {
                Ok(Ok(status)) if status.complete => return Ok(status),
                Ok(Ok(status)) => last = Some(Box::new(status)),
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => break,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until((now + poll).min(deadline)).await;
        }
        Err(ClientError::Timeout { id: id.to_string(), waited: start.elapsed(), last })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// Adds `http://` to a bare `host:port`.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_a_scheme() {
        assert_eq!(normalize_endpoint("127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(normalize_endpoint(" http://127.0.0.1:7100 "), "http://127.0.0.1:7100");
        assert_eq!(normalize_endpoint("https://node.example:7100"), "https://node.example:7100");
    }

    #[test]
    fn interceptor_sets_bearer_header() {
        let mut auth = Auth { header: Some("Bearer s3cret".parse().unwrap()) };
        let req = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer s3cret");
        let mut none = Auth { header: None };
        let req = none.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn bad_token_and_endpoint_are_typed_errors() {
        let err = Client::connect("127.0.0.1:1", Some("bad\ntoken".into())).await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidToken), "{err}");
        let err = Client::connect("http://[::1", None).await.err().unwrap();
        assert!(matches!(err, ClientError::InvalidEndpoint { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_a_transport_error() {
        // Port 1 on loopback: nothing listens there in the test environment.
        let err = Client::connect("127.0.0.1:1", None).await.err().unwrap();
        match err {
            ClientError::Transport { endpoint, detail } => {
                assert_eq!(endpoint, "http://127.0.0.1:1");
                assert!(!detail.is_empty());
            }
            other => panic!("unexpected {other}"),
        }
    }
}
