//! Harness for the integration tests: real `purgecast` node processes on
//! loopback ports, each with its own data directory and CA-signed
//! certificate, driven through the real gRPC API.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use purgecast_client::{selector, Client, EntryFilter};
use purgecast_proto::api::{self as pb};
use tonic::transport::Channel;

/// How often the harness polls a purge's status while waiting for it.
pub const POLL: Duration = Duration::from_millis(20);

pub mod caches;
pub mod fidelity;
pub mod http;
pub mod metrics;
pub mod monitoring;
pub mod tenants;

/// Path of a binary built from this workspace, next to the test binary's
/// directory (target/<profile>/). `cargo build --bins` must have run.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // A binary of this crate sits in target/<profile>/ itself.
    if let Some(here) = exe.parent().map(|d| d.join(name)).filter(|p| p.is_file()) {
        return here;
    }
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    dir.join(name)
}

/// Ports handed to nodes come from below the kernel's ephemeral range
/// (32768..), in order, from a start that depends on the process id.
/// Asking the kernel for port 0 and closing it again is racy: the tests
/// of one binary run in parallel and two nodes could be handed the same
/// port (CI once saw a node's API port answer with another node's
/// metrics server), and any outgoing connection may take a port before
/// its node binds it. A counter cannot repeat within a process, and no
/// outgoing connection is given a port below the ephemeral range.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

fn next_port(bindable: impl Fn(u16) -> bool) -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = PORTS.start + u16::try_from(offset)?;
        if bindable(port) {
            return Ok(port);
        }
    }
    bail!("no free port in {PORTS:?}")
}

fn free_tcp() -> Result<u16> {
    next_port(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// A loopback TCP port no other test of this process is handed.
pub fn free_port() -> Result<u16> {
    free_tcp()
}

fn free_udp() -> Result<u16> {
    next_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// Extra `key = value` lines for a node's `[protocol]` section, and more.
#[derive(Clone, Debug)]
pub struct Opts {
    pub pops: usize,
    pub tokens: Vec<String>,
    pub protocol: Vec<(String, String)>,
    /// Give every node a WAN emulation file (`<node dir>/wan.json`).
    pub wan: bool,
    /// (pop, region) of node `i`; when empty, node `i` is in PoP
    /// `pop-{i % pops}`, region `test`.
    pub locations: Vec<(String, String)>,
    /// Data directory of node `i` when not `<node dir>/data` (e.g. on a
    /// small filesystem the test fills up).
    pub data_dirs: Vec<(usize, PathBuf)>,
    /// Turn every node's edge on, in front of this origin (`host:port`).
    pub edge_origin: Option<String>,
    /// Extra `key = value` lines for the `[edge]` section.
    pub edge: Vec<(String, String)>,
    /// TOML appended to node `i`'s config (e.g. its `[[sink]]` sections).
    pub node_extra: Vec<(usize, String)>,
    /// Every node's `tenants_file`.
    pub tenants_file: Option<PathBuf>,
    /// Give every node the HTTP purge API (`[http_api]`) on a port of its own.
    pub http_api: bool,
    /// Serve the gRPC API (and the HTTP API, when on) over TLS with the
    /// node's certificate; clients verify it against the cluster CA.
    pub api_tls: bool,
}

impl Default for Opts {
    fn default() -> Self {
        // Fast failure detection and anti-entropy keep the tests short.
        let protocol = [
            ("ae_interval", "\"200ms\""),
            ("probe_interval", "\"200ms\""),
            ("probe_timeout", "\"100ms\""),
            ("suspect_timeout", "\"1s\""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Opts {
            pops: 1,
            tokens: Vec::new(),
            protocol,
            wan: false,
            locations: Vec::new(),
            data_dirs: Vec::new(),
            edge_origin: None,
            edge: Vec::new(),
            node_extra: Vec::new(),
            tenants_file: None,
            http_api: false,
            api_tls: false,
        }
    }
}

pub struct Node {
    pub name: String,
    pub api: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    /// The HTTP edge's address (listening only when the test turns it on).
    pub edge: SocketAddr,
    /// The HTTP purge API's address (listening only when the test turns it on).
    pub http_api: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The CA its API's certificate is checked against, when it speaks TLS.
    pub api_ca: Option<PathBuf>,
    child: Option<Child>,
}

impl Node {
    /// Picks free loopback ports and a directory under `root`.
    pub fn new(root: &Path, name: &str) -> Result<Node> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(Node {
            name: name.to_string(),
            api: SocketAddr::from(([127, 0, 0, 1], free_tcp()?)),
            peer: SocketAddr::from(([127, 0, 0, 1], free_udp()?)),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_tcp()?)),
            edge: SocketAddr::from(([127, 0, 0, 1], free_tcp()?)),
            http_api: SocketAddr::from(([127, 0, 0, 1], free_tcp()?)),
            config: dir.join("config.toml"),
            dir,
            api_ca: None,
            child: None,
        })
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.api_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    pub fn spawn(&mut self) -> Result<()> {
        let node = self;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("node.log"))?;
        let child = Command::new(bin("purgecast"))
            .arg("run")
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,quinn=warn,rustls=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", node.name))?;
        node.child = Some(child);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub opts: Opts,
}

/// Runs `purgecast certs` to make a CA and node certificates in `out`.
pub fn make_certs(out: &Path, names: &[String]) -> Result<()> {
    let mut cmd = Command::new(bin("purgecast"));
    cmd.arg("certs").arg("--out").arg(out);
    for n in names {
        cmd.arg("--node").arg(n);
    }
    let status = cmd.stdout(Stdio::null()).status().context("running purgecast certs")?;
    if !status.success() {
        bail!("purgecast certs failed: {status}");
    }
    Ok(())
}

impl Cluster {
    /// Starts `n` nodes and waits until every one sees all the others alive.
    pub async fn start(n: usize, opts: Opts) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        let certs = dir.path().join("certs");
        make_certs(&certs, &names)?;
        let mut nodes = Vec::new();
        for name in &names {
            let mut node = Node::new(dir.path(), name)?;
            node.api_ca = opts.api_tls.then(|| certs.join("ca.pem"));
            nodes.push(node);
        }
        let seeds: Vec<SocketAddr> = nodes.iter().take(2).map(|n| n.peer).collect();
        for (i, node) in nodes.iter().enumerate() {
            std::fs::write(&node.config, config_text(node, &certs, &seeds, &opts, i))?;
        }
        let mut cluster = Cluster { dir, nodes, opts };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_ready(i).await?;
        }
        cluster.wait_members(n, Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn spawn(&mut self, i: usize) -> Result<()> {
        self.nodes[i].spawn()
    }

    /// SIGKILL: no graceful leave, no flush.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    pub async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if tokio::net::TcpStream::connect(self.nodes[i].api).await.is_ok() {
                return Ok(());
            }
            if !self.nodes[i].is_running() {
                bail!("{} exited during start-up:\n{}", self.nodes[i].name, self.nodes[i].log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not start", self.nodes[i].name)
    }

    /// Waits until every running node lists `alive` alive members.
    pub async fn wait_members(&mut self, alive: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut ok = true;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                let m = self.client(i).await?.members().await?;
                if m.iter().filter(|m| m.state == "alive").count() != alive {
                    ok = false;
                }
            }
            if ok {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("members did not converge to {alive} alive within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A raw channel, for requests the client library would not send
    /// (malformed input the node must refuse).
    pub async fn channel(&self, i: usize) -> Result<Channel> {
        Ok(Channel::from_shared(self.nodes[i].endpoint())?.connect().await?)
    }

    /// The client `purgectl` uses, with the cluster's token.
    pub async fn client(&self, i: usize) -> Result<Client> {
        let ca = match &self.nodes[i].api_ca {
            Some(path) => Some(std::fs::read_to_string(path)?),
            None => None,
        };
        let token = self.opts.tokens.first().cloned();
        Ok(Client::connect_with(&self.nodes[i].endpoint(), token, ca.as_deref()).await?)
    }

    /// Puts the same entries on every node.
    pub async fn put_everywhere(&self, entries: &[(&str, &[&str])]) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.client(i).await?.index_put(entries.iter().map(|(k, t)| entry(k, t)).collect()).await?;
        }
        Ok(())
    }

    /// Purges through node `i` and waits until every live member applied it.
    pub async fn purge_and_wait(&self, i: usize, selectors: Vec<pb::Selector>, soft: bool) -> Result<pb::PurgeStatus> {
        let mode = if soft { pb::PurgeMode::Soft } else { pb::PurgeMode::Hard };
        let c = self.client(i).await?;
        let id = c.purge(selectors, mode).await?.id;
        Ok(c.wait_complete(&id, Duration::from_secs(20), POLL).await?)
    }

    pub async fn get(&self, i: usize, key: &str) -> Result<Option<pb::Entry>> {
        Ok(self.client(i).await?.index_get(key).await?)
    }
}

pub fn entry(key: &str, tags: &[&str]) -> pb::Entry {
    pb::Entry { key: key.into(), tags: tags.iter().map(|t| t.to_string()).collect(), size: 100, ..Default::default() }
}

// Selectors through the client library; a test that needs one it would
// refuse (empty, malformed) builds the `pb::Selector` itself.
pub fn url(u: &str) -> pb::Selector {
    selector::url(u).expect("test selector")
}
pub fn host(h: &str) -> pb::Selector {
    selector::host(h).expect("test selector")
}
pub fn prefix(p: &str) -> pb::Selector {
    selector::prefix(p).expect("test selector")
}
pub fn tag(t: &str) -> pb::Selector {
    selector::tag(t).expect("test selector")
}
pub fn everything() -> pb::Selector {
    selector::everything()
}

/// A node's TOML config; `i` places it in `opts.locations[i]`, else in PoP `i % opts.pops`.
pub fn config_text(node: &Node, certs: &Path, seeds: &[SocketAddr], opts: &Opts, i: usize) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let tokens: Vec<String> = opts.tokens.iter().map(|t| format!("\"{t}\"")).collect();
    let protocol: String = opts.protocol.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let (pop, region) =
        opts.locations.get(i).cloned().unwrap_or_else(|| (format!("pop-{}", i % opts.pops.max(1)), "test".into()));
    let wan = if opts.wan {
        let path = node.dir.join("wan.json");
        let _ = std::fs::write(&path, "{}");
        format!("wan_emulation = \"{}\"\n", path.display())
    } else {
        String::new()
    };
    let edge = match &opts.edge_origin {
        Some(origin) => {
            let extra: String = opts.edge.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            // An empty origin: no default, only the hosts `edge` lists.
            let default = if origin.is_empty() { String::new() } else { format!("default_origin = \"{origin}\"\n") };
            format!("[edge]\nlisten = \"{}\"\n{default}{extra}", node.edge)
        }
        None => String::new(),
    };
    let tenants = opts.tenants_file.as_ref().map_or(String::new(), |f| format!("tenants_file = \"{}\"\n", f.display()));
    let (cert, key) = (certs.join(format!("{}.pem", node.name)), certs.join(format!("{}-key.pem", node.name)));
    let http_tls = if opts.api_tls {
        format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display())
    } else {
        String::new()
    };
    let mut http_api =
        if opts.http_api { format!("\n[http_api]\nlisten = \"{}\"\n{http_tls}", node.http_api) } else { String::new() };
    if opts.api_tls {
        http_api.push_str(&format!("\n[api_tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display()));
    }
    format!(
        "name = \"{name}\"\nlisten_peer = \"{peer}\"\nlisten_api = \"{api}\"\nlisten_metrics = \"{metrics}\"\n\
         data_dir = \"{data}\"\nseeds = [{seeds}]\npop = \"{pop}\"\nregion = \"{region}\"\napi_tokens = [{tokens}]\n{tenants}{wan}\
         [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n[protocol]\n{protocol}{edge}{http_api}{extra}",
        name = node.name,
        peer = node.peer,
        api = node.api,
        metrics = node.metrics,
        data = opts.data_dirs.iter().find(|(n, _)| *n == i).map_or_else(|| node.dir.join("data"), |(_, d)| d.clone()).display(),
        seeds = seeds.join(", "),
        tokens = tokens.join(", "),
        extra = opts.node_extra.iter().filter(|(n, _)| *n == i).map(|(_, t)| format!("\n{t}")).collect::<String>(),
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("{}.pem", node.name)).display(),
        key = certs.join(format!("{}-key.pem", node.name)).display(),
    )
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// Cuts every link between `a` and `b` (both directions) through the
    /// nodes' WAN emulation files, or heals them (`cut = false`).
    pub fn partition(&self, a: &[usize], b: &[usize], cut: bool) -> Result<()> {
        for (side, other) in [(a, b), (b, a)] {
            for &i in side {
                let rules: Vec<String> = if cut {
                    other
                        .iter()
                        .map(|&j| format!("{{\"dest\":\"{}\",\"link\":{{\"blocked\":true}}}}", self.nodes[j].peer))
                        .collect()
                } else {
                    Vec::new()
                };
                std::fs::write(self.nodes[i].dir.join("wan.json"), format!("{{\"rules\":[{}]}}", rules.join(",")))?;
            }
        }
        Ok(())
    }

    /// Count of index entries carrying `tag` on node `i`.
    pub async fn count_tag(&self, i: usize, tag: &str) -> Result<u64> {
        Ok(self.client(i).await?.index_count(Some(EntryFilter::Tag(tag.into()))).await?)
    }

    pub async fn count_all(&self, i: usize) -> Result<u64> {
        Ok(self.client(i).await?.index_count(None).await?)
    }
}
