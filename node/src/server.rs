//! Starting a node: store, transport, engine, apply worker, gRPC and
//! metrics servers, wired together; and stopping it cleanly.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use purgecast_core::{ApplyTicket, Engine, Location, Member, NodeId, Profile, Purge, PurgeId, Time};
use purgecast_proto::api::index_server::IndexServer;
use purgecast_proto::api::purger_server::PurgerServer;
use tokio::sync::{mpsc, watch};

use crate::api::{Front, IndexService, PurgerService};
use crate::config::{ConfigError, NodeConfig};
use crate::edge;
use crate::health::{Health, SERVING};
use crate::metrics as node_metrics;
use crate::protocol::{self, applier, Channels, Driver, Parts};
use crate::sink;
use crate::store::{spawn_compactor, Store, StoreOptions};
use crate::tenants::Tenants;
use crate::tls;
use crate::transport::{Transport, TransportOptions, WanHandle};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("transport: {0}")]
    Transport(#[from] crate::transport::TransportError),
    #[error("metrics: {0}")]
    Metrics(#[from] node_metrics::MetricsError),
    #[cfg(feature = "wan-emulation")]
    #[error("wan emulation: {0}")]
    Wan(#[from] crate::transport::wan::WanError),
    #[error("grpc server: {0}")]
    Grpc(String),
    #[error("edge: {0}")]
    Edge(#[from] crate::edge::EdgeError),
    #[error("sink: {0}")]
    Sink(#[from] crate::sink::SinkError),
    #[error("tenants file: {0}")]
    Tenants(#[from] crate::tenants::FileError),
    #[error("http api: cannot listen on {addr}: {source}")]
    HttpApi { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the compaction thread: {0}")]
    Thread(std::io::Error),
}

/// Pause between two rounds of the store's compaction of purged ranges.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// Runs a node until `shutdown` turns true.
pub async fn run(cfg: NodeConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), NodeError> {
    cfg.validate()?;
    let protocol = cfg.protocol.clone();
    let started = Instant::now();
    let prometheus = node_metrics::install()?;
    let tenants = Tenants::load(
        cfg.tenants_file.as_deref(),
        cfg.api_tokens.clone(),
        (cfg.default_zone_rate, cfg.default_zone_burst),
    )?;
    tenants.spawn_watcher(Duration::from_secs(1), shutdown.clone());
    let health = Health::default();
    node_metrics::serve(cfg.listen_metrics, prometheus, health.clone()).await?;

    let sink_names: Vec<String> = cfg.sink.iter().map(|s| s.name.clone()).collect();
    let hot_bytes = if cfg.edge.listen.is_some() { cfg.edge.memory_bytes } else { 0 };
    let store_opts = StoreOptions { sinks: sink_names.clone(), hot_bytes, ..StoreOptions::default() };
    let store = Arc::new(Store::open(&cfg.data_dir.join("index"), store_opts)?);
    let epoch = store.next_boot_epoch()?;
    flush_if_down_too_long(&store, protocol.retention)?;
    let identity = tls::load_identity(&cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?;
    let wan_handle = wan_layer(cfg.wan_emulation.as_deref()).await?;
    let (transport, inbound) = Transport::bind(
        cfg.listen_peer,
        &identity,
        TransportOptions { batch: cfg.batch_peer_frames, ..TransportOptions::default() },
        wan_handle,
    )
    .await?;

    let me = Member::new(
        NodeId::from_name(&cfg.name),
        Profile {
            name: cfg.name.clone(),
            peer_addr: cfg.advertise(),
            api_addr: cfg.advertise_api(),
            location: Location { pop: cfg.pop.clone(), region: cfg.region.clone() },
        },
    );
    let seed = rand::random::<u64>() ^ me.id.0 ^ epoch;
    let mut engine = Engine::new(protocol.clone(), me.clone(), epoch, seed, Time::ZERO);
    let (restored, unfinished) = restore(&store, &mut engine, &sink_names)?;
    tracing::info!(node = %cfg.name, id = %me.id, epoch, restored, unconfirmed = unfinished.len(), entries = store.count_all(), "node starting");

    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let apply = applier::spawn(store.clone(), protocol.retention, done_tx, health.clone());
    // Held until the node stops; compaction runs beside the applies.
    let _compactor = spawn_compactor(&store, COMPACT_EVERY).map_err(NodeError::Thread)?;
    let (handle, commands) = protocol::command_channel(me.clone());
    // A node with nothing stored, or no cluster to hear from, has nothing
    // it could serve that the cluster purged while it was away.
    let (caught_up_tx, caught_up) = watch::channel(cfg.seeds.is_empty() || store.object_stats().0 == 0);
    let (confirmed_tx, confirmed) = mpsc::unbounded_channel();
    let sinks = sink::start(&cfg.sink, store.clone(), confirmed_tx, health.clone(), shutdown.clone())?;
    let parts = Parts {
        transport: transport.clone(),
        apply,
        started,
        seeds: cfg.seeds.clone(),
        caught_up: caught_up_tx,
        sinks,
        unfinished,
    };
    let driver = Driver::new(engine, parts);
    let channels = Channels { inbound, done: done_rx, commands, confirmed, shutdown: shutdown.clone() };
    let driver_task = tokio::spawn(driver.run(channels));

    let front = Front { driver: handle, health: health.clone(), tenants: tenants.clone() };
    let edge = edge::start(&cfg.edge, store.clone(), caught_up, front.clone(), shutdown.clone()).await?;
    let http_api = start_http_api(&cfg, front.clone(), shutdown.clone()).await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health.spawn_grpc_mirror(health_reporter, vec![purger_name(), index_name()]);
    // v1 and v1alpha: grpcurl and Postman speak v1, while Python's
    // grpcio-reflection, older grpcurl and Evans speak only v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(purgecast_proto::api::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Grpc(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(purgecast_proto::api::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| NodeError::Grpc(e.to_string()))?;
    let purger = PurgerServer::new(PurgerService { front, store: store.clone() });
    let index = IndexServer::new(IndexService { store: store.clone(), tenants });
    let mut stop = shutdown.clone();
    let stopping = health.clone();
    let mut builder = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&cfg.api_tls.cert, &cfg.api_tls.key) {
        let id = tonic::transport::Identity::from_pem(tls::read_file(cert)?, tls::read_file(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(id))
            .map_err(|e| NodeError::Grpc(format!("api_tls: {e}")))?;
    }
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(purger)
        .add_service(index)
        .serve_with_shutdown(cfg.listen_api, async move {
            let _ = stop.wait_for(|s| *s).await;
            stopping.set_condition(SERVING, Err("shutting down".into()));
        });
    health.set_condition(SERVING, Ok(()));
    let edge = edge.map_or_else(|| "off".to_string(), |a| a.to_string());
    let http_api = http_api.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(api = %cfg.listen_api, peer = %cfg.listen_peer, metrics = %cfg.listen_metrics, %edge, %http_api, "node ready");
    let served = grpc.await;
    health.set_condition(SERVING, Err("stopped".into()));
    let _ = shutdown.wait_for(|s| *s).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), driver_task).await;
    transport.close().await;
    served.map_err(|e| NodeError::Grpc(e.to_string()))
}

fn purger_name() -> &'static str {
    <PurgerServer<PurgerService> as tonic::server::NamedService>::NAME
}

fn index_name() -> &'static str {
    <IndexServer<IndexService> as tonic::server::NamedService>::NAME
}

/// The test-only WAN emulation layer, when the config asks for it.
#[cfg(feature = "wan-emulation")]
async fn wan_layer(path: Option<&std::path::Path>) -> Result<Option<WanHandle>, NodeError> {
    use crate::transport::wan;
    let Some(path) = path else { return Ok(None) };
    let handle = WanHandle::new(wan::WanConfig::load(path).await?);
    wan::spawn_reloader(path.to_path_buf(), handle.clone());
    tracing::warn!(file = %path.display(), "WAN emulation is ON: peer traffic is delayed/dropped on purpose");
    Ok(Some(handle))
}

/// Production builds carry no WAN emulation: a config that asks for it is
/// refused rather than silently run without it.
#[cfg(not(feature = "wan-emulation"))]
async fn wan_layer(path: Option<&std::path::Path>) -> Result<Option<WanHandle>, NodeError> {
    match path {
        None => Ok(None),
        Some(_) => Err(NodeError::Config(ConfigError::Invalid {
            key: "wan_emulation",
            reason: "this build has no WAN emulation (a test-only cargo feature, `wan-emulation`)".into(),
        })),
    }
}

/// Re-teaches the engine what this node applied before it stopped, so it
/// neither applies those purges again nor asks peers for them. Engine time
/// starts at zero with this process: restored purges count as seen at zero
/// (the store prunes its log by wall-clock age independently).
///
/// Purges a configured sink has not confirmed are restored unfinished: their
/// tickets (with how many sinks owe each) go to the driver, which acks them
/// once the sinks catch up. The backlog of a sink no longer configured is
/// dropped, loudly.
fn restore(store: &Store, engine: &mut Engine, sinks: &[String]) -> Result<Restored, NodeError> {
    let mut owed: HashMap<PurgeId, (Purge, usize)> = HashMap::new();
    let mut gone = BTreeSet::new();
    for o in store.unconfirmed()? {
        if crate::store::is_flush(&o.purge) {
            continue;
        }
        if sinks.contains(&o.sink) {
            owed.entry(o.purge.id).or_insert_with(|| (o.purge, 0)).1 += 1;
        } else {
            gone.insert(o.sink);
        }
    }
    for sink in gone {
        tracing::warn!(%sink, "a sink that is no longer configured owed purges: dropping its backlog");
        store.forget_sink(&sink)?;
    }
    let purges = store.applied_purges()?;
    let n = purges.len();
    for (purge, _) in purges {
        if !owed.contains_key(&purge.id) {
            engine.restore(Time::ZERO, Arc::new(purge));
        }
    }
    // A purge the log has pruned but a sink still owes is restored from
    // its backlog row.
    let unfinished =
        owed.into_values().map(|(purge, n)| (engine.restore_unfinished(Time::ZERO, Arc::new(purge)), n)).collect();
    Ok((n, unfinished))
}

/// Purges restored, and the unfinished ones' tickets with the sinks owing.
type Restored = (usize, Vec<(ApplyTicket, usize)>);

/// A node that was down longer than the retention window may have missed
/// purges that no peer can send it any more, and peers may even have
/// forgotten the streams they came in: it cannot know what it missed, so it
/// starts empty rather than serve what should have been purged.
fn flush_if_down_too_long(store: &Store, retention: Duration) -> Result<(), NodeError> {
    let Some(raw) = store.get_meta(applier::LAST_ALIVE)? else { return Ok(()) };
    let last = raw.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
    let down = Duration::from_millis(crate::clock::now_ms().saturating_sub(last));
    if down > retention {
        let removed = store.flush_index()?;
        metrics::counter!("purgecast_flushes_total").increment(1);
        tracing::error!(
            down_secs = down.as_secs(),
            retention_secs = retention.as_secs(),
            removed,
            "FLUSHED the whole local index: this node was down longer than the purge retention window"
        );
    }
    Ok(())
}

/// Starts the HTTP purge APIs when `http_api.listen` is set.
async fn start_http_api(
    cfg: &NodeConfig,
    front: Front,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<std::net::SocketAddr>, NodeError> {
    let Some(addr) = cfg.http_api.listen else { return Ok(None) };
    let tls = match (&cfg.http_api.tls_cert, &cfg.http_api.tls_key) {
        (Some(cert), Some(key)) => Some(tls::https_server_config(cert, key, &[b"http/1.1"])?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| NodeError::HttpApi { addr, source })?;
    let bound = listener.local_addr().map_err(|source| NodeError::HttpApi { addr, source })?;
    tokio::spawn(crate::api::http::serve(listener, crate::api::http::router(front), tls, shutdown));
    Ok(Some(bound))
}
