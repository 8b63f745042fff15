//! `purgecast`: run a node, generate certificates, start a local cluster,
//! or serve a test origin.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use purgecast_node::config::NodeConfig;
use purgecast_node::server;
use purgecast_node::tools::{certs, dev, origin, tokens};

#[derive(Parser)]
#[command(name = "purgecast", version, about = "Coreless peer-to-peer CDN purge node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start-up: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Run(RunArgs),
    /// Generate a cluster CA and node certificates.
    Certs(CertsArgs),
    /// Start a local N-node cluster on loopback (separate processes).
    Dev(dev::DevArgs),
    /// Serve versioned, tagged test objects over HTTP, with a control API.
    Origin(origin::OriginArgs),
    /// Create API tokens for the tenants file, or hash one.
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
}

/// Every flag overrides the config file; each has a PURGECAST_* variable.
#[derive(Args)]
struct RunArgs {
    /// TOML config file.
    #[arg(long, short, env = "PURGECAST_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "PURGECAST_NAME")]
    name: Option<String>,
    #[arg(long, env = "PURGECAST_LISTEN_PEER")]
    listen_peer: Option<std::net::SocketAddr>,
    #[arg(long, env = "PURGECAST_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    #[arg(long, env = "PURGECAST_LISTEN_API")]
    listen_api: Option<std::net::SocketAddr>,
    #[arg(long, env = "PURGECAST_ADVERTISE_API")]
    advertise_api: Option<String>,
    #[arg(long, env = "PURGECAST_LISTEN_METRICS")]
    listen_metrics: Option<std::net::SocketAddr>,
    #[arg(long, env = "PURGECAST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Comma-separated peer addresses to join through.
    #[arg(long, env = "PURGECAST_SEEDS", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    #[arg(long, env = "PURGECAST_POP")]
    pop: Option<String>,
    #[arg(long, env = "PURGECAST_REGION")]
    region: Option<String>,
    #[arg(long, env = "PURGECAST_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, env = "PURGECAST_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "PURGECAST_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Comma-separated bearer tokens the API accepts.
    #[arg(long, env = "PURGECAST_API_TOKENS", value_delimiter = ',')]
    api_tokens: Option<Vec<String>>,
    /// Zones and scoped tokens (TOML); re-read on change and on SIGHUP.
    #[arg(long, env = "PURGECAST_TENANTS_FILE")]
    tenants_file: Option<PathBuf>,
    /// The Cloudflare- and Fastly-shaped HTTP purge API's address.
    #[arg(long, env = "PURGECAST_LISTEN_HTTP_API")]
    listen_http_api: Option<std::net::SocketAddr>,
    #[arg(long, env = "PURGECAST_LOG_FORMAT")]
    log_format: Option<String>,
    /// Test only: per-destination delay/loss for peer traffic (JSON file).
    #[arg(long, env = "PURGECAST_WAN_EMULATION")]
    wan_emulation: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct CertsArgs {
    /// Output directory (ca.pem, ca-key.pem, <node>.pem, <node>-key.pem).
    #[arg(long)]
    out: PathBuf,
    /// Node names; each may add subject names after a colon:
    /// `node-1:node-1.purgecast,10.0.0.5`.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Reuse the CA already in --out instead of creating one.
    #[arg(long)]
    reuse_ca: bool,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::load(p)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => { $(if let Some(v) = self.$field { $target = v; })* };
        }
        set!(name => c.name, listen_peer => c.listen_peer, listen_api => c.listen_api,
             listen_metrics => c.listen_metrics, data_dir => c.data_dir, seeds => c.seeds, pop => c.pop,
             region => c.region, tls_ca => c.tls.ca, tls_cert => c.tls.cert, tls_key => c.tls.key,
             api_tokens => c.api_tokens, log_format => c.log_format);
        if self.advertise_peer.is_some() {
            c.advertise_peer = self.advertise_peer;
        }
        if self.advertise_api.is_some() {
            c.advertise_api = self.advertise_api;
        }
        if self.wan_emulation.is_some() {
            c.wan_emulation = self.wan_emulation;
        }
        if self.tenants_file.is_some() {
            c.tenants_file = self.tenants_file;
        }
        if self.listen_http_api.is_some() {
            c.http_api.listen = self.listen_http_api;
        }
        c.seeds.retain(|s| !s.is_empty());
        c.api_tokens.retain(|s| !s.is_empty());
        Ok(c)
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,rustls=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let print = args.print_config;
            let cfg = args.into_config()?;
            if print {
                print!("{}", toml::to_string(&cfg)?);
                cfg.validate()?;
                return Ok(());
            }
            init_logs(&cfg.log_format);
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    let _ = tx.send(true);
                });
                server::run(cfg, rx).await
            })?;
            Ok(())
        }
        Cmd::Certs(args) => {
            let ca =
                if args.reuse_ca { certs::read_ca(&args.out)? } else { certs::generate_ca("purgecast cluster CA")? };
            let mut nodes = Vec::new();
            for spec in &args.nodes {
                let (name, extra) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
                let mut sans = certs::dev_sans(name);
                sans.extend(extra.split(',').filter(|s| !s.is_empty()).map(str::to_string));
                nodes.push((name.to_string(), certs::issue_node_cert(&ca, name, &sans)?));
            }
            certs::write_certs(&args.out, &ca, &nodes)?;
            println!("wrote CA and {} node certificate(s) to {}", nodes.len(), args.out.display());
            Ok(())
        }
        Cmd::Dev(args) => {
            init_logs("text");
            dev::run(args)
        }
        Cmd::Origin(args) => {
            init_logs("text");
            origin::run(args, wait_for_signal())
        }
        Cmd::Tokens(cmd) => tokens::run(cmd),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
