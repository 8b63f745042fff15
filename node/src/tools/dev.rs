//! `purgecast dev`: a local cluster of separate node processes on loopback,
//! with generated certificates, for trying purgecast and for benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::certs;
use super::supervise::{die_with_parent, stop_children, wait_converged, wait_port, StopSignals};
use crate::config::{NodeConfig, TlsConfig};

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Working directory for data, certificates, configs and logs.
    #[arg(long, default_value = ".purgecast-dev")]
    pub dir: PathBuf,
    /// Node i listens on base+i (gRPC), base+1000+i (peers), base+2000+i
    /// (metrics), base+3000+i (HTTP edge), base+6000+i (HTTP purge API);
    /// the demo origin on base+4000.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Spread the nodes over this many PoPs (dev-pop-0 ...), round robin.
    #[arg(long, default_value_t = 1)]
    pub pops: usize,
    /// Where to write the cluster description (JSON).
    #[arg(long)]
    pub cluster_file: Option<PathBuf>,
    /// Delete the working directory first (data included).
    #[arg(long)]
    pub fresh: bool,
    /// Operator token (every permission) the nodes' APIs require (none by
    /// default; made up and printed when --tenants-file is given without it).
    #[arg(long)]
    pub token: Option<String>,
    /// Zones and scoped tokens every node loads (docs/tenants.md).
    #[arg(long)]
    pub tenants_file: Option<PathBuf>,
    /// The site the edges cache (`http://host[:port]`, any Host header is
    /// passed through). Default: a built-in demo origin (`purgecast origin`).
    #[arg(long)]
    pub origin: Option<String>,
    /// Purge requests a second each node takes for the default zone (no
    /// tenants file; `default_zone_rate`, bucket 10x as deep). Raise it to
    /// benchmark purge storms.
    #[arg(long, default_value_t = crate::tenants::DEFAULT_RATE)]
    pub purge_rate: u32,
    /// Acks through one relay per PoP (`protocol.ack_relay`, the default);
    /// `false`: every member acks the origin itself (to compare the two).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ack_relay: bool,
    /// Send the frames queued for a peer at once in one stream
    /// (`batch_peer_frames`, the default); `false`: a stream per frame.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_peer_frames: bool,
    /// Start the nodes without their HTTP edges.
    #[arg(long)]
    pub no_edge: bool,
    /// Also start a Varnish (`varnishd`, with the VCL of
    /// deploy/connectors/varnish) per node on base+5000+i, in front of the
    /// same origin, and purge it through a `[[sink]]` of its node.
    #[arg(long)]
    pub varnish: bool,
}

#[derive(Serialize)]
pub struct ClusterNode {
    pub name: String,
    pub id: String,
    pub grpc: String,
    pub peer: String,
    pub metrics: String,
    /// The node's HTTP cache (`http://IP:PORT`), when on.
    pub edge: Option<String>,
    /// The Varnish this node purges (`http://IP:PORT`), with `--varnish`.
    pub varnish: Option<String>,
    /// The Cloudflare- and Fastly-shaped HTTP purge API (`http://IP:PORT`).
    pub http_api: Option<String>,
    pub pid: u32,
}

#[derive(Serialize)]
pub struct ClusterFile {
    pub nodes: Vec<ClusterNode>,
    /// The origin the edges fetch from (`host:port`), when they are on.
    pub origin: Option<String>,
}

/// `http://host[:port]` to the edge's `host:port`.
fn origin_upstream(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--origin {url}: only http:// origins (the edge does not speak TLS to origins)"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    if hostport.is_empty() {
        bail!("--origin {url}: no host");
    }
    Ok(if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    })
}

fn node_config(args: &DevArgs, i: usize, certs: &Path, origin: Option<&str>) -> anyhow::Result<NodeConfig> {
    let name = format!("node-{i}");
    let port = |offset: u16| -> anyhow::Result<u16> {
        let p = usize::from(args.base_port) + usize::from(offset) + i;
        u16::try_from(p).with_context(|| format!("port {p} out of range: lower --base-port"))
    };
    let paths = certs::cert_paths(certs, &name)?;
    let seeds = (0..args.nodes.min(3))
        .filter(|j| *j != i)
        .map(|j| port(1000).map(|_| format!("127.0.0.1:{}", usize::from(args.base_port) + 1000 + j)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut edge = crate::config::EdgeConfig::default();
    if let Some(origin) = origin {
        edge.listen = Some(([127, 0, 0, 1], port(3000)?).into());
        edge.default_origin = Some(origin.to_string());
    }
    let mut sink = Vec::new();
    if args.varnish {
        let toml = format!("name = \"varnish\"\nkind = \"varnish\"\naddress = \"127.0.0.1:{}\"", port(5000)?);
        sink.push(toml::from_str(&toml).context("the dev Varnish sink")?);
    }
    Ok(NodeConfig {
        name,
        edge,
        sink,
        listen_peer: ([127, 0, 0, 1], port(1000)?).into(),
        listen_api: ([127, 0, 0, 1], port(0)?).into(),
        listen_metrics: ([127, 0, 0, 1], port(2000)?).into(),
        data_dir: args.dir.join(format!("node-{i}")).join("data"),
        seeds,
        pop: format!("dev-pop-{}", i % args.pops.max(1)),
        region: "dev".into(),
        tls: TlsConfig { ca: paths.ca, cert: paths.cert, key: paths.key },
        api_tokens: args.token.iter().cloned().collect(),
        tenants_file: args.tenants_file.clone(),
        default_zone_rate: args.purge_rate.max(1),
        default_zone_burst: args.purge_rate.max(1).saturating_mul(10),
        protocol: purgecast_core::Config { ack_relay: args.ack_relay, ..Default::default() },
        batch_peer_frames: args.batch_peer_frames,
        http_api: crate::config::HttpApiConfig {
            listen: Some(([127, 0, 0, 1], port(6000)?).into()),
            ..Default::default()
        },
        ..NodeConfig::default()
    })
}

fn ensure_certs(dir: &Path, nodes: usize) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    let ca =
        if certs.join("ca.pem").exists() { certs::read_ca(&certs)? } else { certs::generate_ca("purgecast dev CA")? };
    let mut issued = Vec::new();
    for i in 0..nodes {
        let name = format!("node-{i}");
        if !certs.join(format!("{name}.pem")).exists() {
            issued.push((name.clone(), certs::issue_node_cert(&ca, &name, &certs::dev_sans(&name))?));
        }
    }
    certs::write_certs(&certs, &ca, &issued)?;
    Ok(certs)
}

pub fn run(mut args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 200 {
        bail!("--nodes must be between 1 and 200");
    }
    if let Some(file) = &args.tenants_file {
        // Nodes read it from their own working directories.
        args.tenants_file = Some(std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?);
        if args.token.is_none() {
            let token = crate::tenants::tokens::generate("operator");
            println!("operator token (every permission, this run only): {token}");
            args.token = Some(token);
        }
    }
    if args.fresh && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("removing {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let certs = ensure_certs(&args.dir, args.nodes)?;
    let exe = std::env::current_exe().context("locating the purgecast binary")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        // Before any child exists: from here on no signal ends this process
        // without it stopping the nodes first.
        let mut stop = StopSignals::install()?;
        let mut children: Vec<(NodeConfig, Child)> = Vec::new();
        // The edges' upstream, and the processes beside the nodes (the demo
        // origin when it is ours, the Varnish caches).
        let mut origin: (Option<String>, Vec<Child>) = (None, Vec::new());
        let started = tokio::select! {
            r = start_all(&args, &certs, &exe, &mut children, &mut origin) => r.map(|()| true),
            s = stop.recv() => {
                eprintln!("{s}: stopping before the cluster was up");
                Ok(false)
            }
        };
        let result = match started {
            Ok(true) => match announce(&args, &children, origin.0.as_deref()) {
                Ok(()) => supervise(&mut children, &mut stop).await,
                Err(e) => Err(e),
            },
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        stop_children(children.iter_mut().map(|(_, c)| c), Duration::from_secs(5)).await;
        stop_children(origin.1.iter_mut(), Duration::from_secs(5)).await;
        result
    })
}

/// Writes the cluster file and tells the user, once the cluster is whole.
fn announce(args: &DevArgs, children: &[(NodeConfig, Child)], origin: Option<&str>) -> anyhow::Result<()> {
    let file = ClusterFile {
        nodes: children
            .iter()
            .map(|(c, child)| ClusterNode {
                name: c.name.clone(),
                id: purgecast_core::NodeId::from_name(&c.name).to_string(),
                grpc: format!("http://{}", c.listen_api),
                peer: c.listen_peer.to_string(),
                metrics: format!("http://{}/metrics", c.listen_metrics),
                edge: c.edge.listen.map(|a| format!("http://{a}")),
                varnish: c.sink.first().and_then(|s| s.address.as_ref()).map(|a| format!("http://{a}")),
                http_api: c.http_api.listen.map(|a| format!("http://{a}")),
                pid: child.id(),
            })
            .collect(),
        origin: origin.map(str::to_string),
    };
    let path = args.cluster_file.clone().unwrap_or_else(|| args.dir.join("cluster.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&file)?)?;
    let n = file.nodes.len();
    println!("purgecast dev cluster: {n} nodes, every one sees all {n} alive (Ctrl-C or SIGTERM stops them)");
    for node in &file.nodes {
        let edge = node.edge.as_deref().map(|e| format!("  edge {e}")).unwrap_or_default();
        let varnish = node.varnish.as_deref().map(|v| format!("  varnish {v}")).unwrap_or_default();
        let http = node.http_api.as_deref().map(|h| format!("  http-api {h}")).unwrap_or_default();
        println!(
            "  {:<10} grpc {}  peer {}  metrics {}{edge}{varnish}{http}  pid {}",
            node.name, node.grpc, node.peer, node.metrics, node.pid
        );
    }
    if let (Some(origin), Some(edge)) = (origin, file.nodes[0].edge.as_deref()) {
        if args.tenants_file.is_some() {
            println!("edges cache origin {origin} for the hosts of the tenants file's zones (others get 421)");
        } else {
            println!("edges cache origin {origin}; try: curl -si -H 'Host: demo.test' {edge}/products/1");
        }
    }
    println!("cluster file: {}", path.display());
    println!("logs: {}/node-*/node.log", args.dir.display());
    println!("try: purgectl --endpoint {} purge --tag x --wait --expect-members {n}", file.nodes[0].grpc);
    Ok(())
}

/// Starts every node, then waits for each API and for membership to
/// converge: the cluster is announced only when a purge reaches all of it.
async fn start_all(
    args: &DevArgs,
    certs: &Path,
    exe: &Path,
    children: &mut Vec<(NodeConfig, Child)>,
    origin: &mut (Option<String>, Vec<Child>),
) -> anyhow::Result<()> {
    let upstream = match (&args.origin, args.no_edge) {
        (_, true) => None,
        (Some(url), false) => Some(origin_upstream(url)?),
        (None, false) => {
            let port = usize::from(args.base_port) + 4000;
            let addr: std::net::SocketAddr =
                ([127, 0, 0, 1], u16::try_from(port).context("demo origin port out of range: lower --base-port")?)
                    .into();
            let log = std::fs::File::create(args.dir.join("origin.log"))?;
            let mut cmd = Command::new(exe);
            cmd.arg("origin").arg("--listen").arg(addr.to_string()).stdin(Stdio::null()).stdout(log.try_clone()?);
            cmd.stderr(log);
            die_with_parent(&mut cmd);
            origin.1.push(cmd.spawn().context("starting the demo origin")?);
            if let Some(child) = origin.1.last_mut() {
                wait_port(addr, child, Duration::from_secs(30)).await?;
            }
            Some(addr.to_string())
        }
    };
    origin.0.clone_from(&upstream);
    if args.varnish {
        let Some(upstream) = upstream.as_deref() else { bail!("--varnish needs an origin (not --no-edge)") };
        for i in 0..args.nodes {
            start_varnish(args, i, upstream, &mut origin.1).await?;
        }
    }
    for i in 0..args.nodes {
        let cfg = node_config(args, i, certs, upstream.as_deref())?;
        let node_dir = args.dir.join(&cfg.name);
        std::fs::create_dir_all(&node_dir)?;
        let cfg_path = node_dir.join("config.toml");
        std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
        let log = std::fs::File::create(node_dir.join("node.log"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("run").arg("--config").arg(&cfg_path).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {}", cfg.name))?;
        children.push((cfg, child));
    }
    for (cfg, child) in children.iter_mut() {
        wait_port(cfg.listen_api, child, Duration::from_secs(60)).await?;
    }
    eprintln!("{} APIs up; waiting until every node sees every other alive", children.len());
    let endpoints: Vec<String> = children.iter().map(|(c, _)| format!("http://{}", c.listen_api)).collect();
    wait_converged(&endpoints, args.token.as_deref(), Duration::from_secs(60)).await
}

/// The VCL the Varnish sink expects, shipped in deploy/connectors.
const VCL: &str = include_str!("../../../deploy/connectors/varnish/purgecast.vcl");

async fn start_varnish(args: &DevArgs, i: usize, origin: &str, children: &mut Vec<Child>) -> anyhow::Result<()> {
    let port = u16::try_from(usize::from(args.base_port) + 5000 + i).context("varnish port: lower --base-port")?;
    let (host, origin_port) = origin.rsplit_once(':').context("origin must be host:port")?;
    let dir = std::fs::canonicalize(&args.dir)?.join(format!("varnish-{i}"));
    std::fs::create_dir_all(&dir)?;
    let vcl = dir.join("purgecast.vcl");
    std::fs::write(&vcl, VCL.replace("{{ORIGIN_HOST}}", host).replace("{{ORIGIN_PORT}}", origin_port))?;
    let log = std::fs::File::create(dir.join("varnish.log"))?;
    let mut cmd = Command::new(varnishd());
    cmd.args(["-F", "-j", "none"]).arg("-n").arg(dir.join("work")).arg("-a").arg(format!("127.0.0.1:{port}"));
    cmd.arg("-f").arg(&vcl).args(["-s", "malloc,64m", "-T", "none"]);
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().context("starting varnishd (apt-get install varnish varnish-modules)")?;
    children.push(child);
    if let Some(child) = children.last_mut() {
        wait_port(([127, 0, 0, 1], port).into(), child, Duration::from_secs(30))
            .await
            .with_context(|| format!("varnish {i}; see {}", dir.join("varnish.log").display()))?;
    }
    Ok(())
}

/// Runs until a stop signal. A node that exits (or is killed, to try a
/// failure) is reported once; the rest of the cluster keeps running.
async fn supervise(children: &mut [(NodeConfig, Child)], stop: &mut StopSignals) -> anyhow::Result<()> {
    let mut reported = vec![false; children.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            s = stop.recv() => {
                eprintln!("{s}: stopping {} nodes", children.len());
                return Ok(());
            }
            _ = tick.tick() => {
                for (k, (cfg, child)) in children.iter_mut().enumerate() {
                    if !reported[k] {
                        if let Some(status) = child.try_wait()? {
                            reported[k] = true;
                            eprintln!("{} exited ({status}); restart it with: purgecast run --config {}",
                                cfg.name, cfg.data_dir.parent().map(|d| d.join("config.toml").display().to_string()).unwrap_or_default());
                        }
                    }
                }
            }
        }
    }
}

/// `varnishd` from PATH, else where Debian puts it (`/usr/sbin`, which a
/// non-root user's PATH often lacks).
fn varnishd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("varnishd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("varnishd"))
}

#[cfg(test)]
mod tests {
    use super::origin_upstream;

    #[test]
    fn an_origin_url_becomes_the_edges_upstream() {
        assert_eq!(origin_upstream("http://example.com").unwrap(), "example.com:80");
        assert_eq!(origin_upstream("http://127.0.0.1:8000/some/path").unwrap(), "127.0.0.1:8000");
        assert!(origin_upstream("https://example.com").is_err(), "no TLS to origins");
        assert!(origin_upstream("http:///x").is_err());
    }
}
