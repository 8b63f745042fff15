//! Command-line arguments and dispatch of `purgectl`.

mod audit;
mod bench;
mod index;
mod output;
mod purge;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use purgecast_client::Client;

/// Exit code when a purge (or a benchmark) did not complete in time.
pub const EXIT_INCOMPLETE: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "purgectl", version, about = "Client of the purgecast purge plane")]
pub struct Args {
    /// gRPC endpoint of a node ("http://host:port" or "host:port").
    #[arg(long, global = true, env = "PURGECAST_ENDPOINT", default_value = "http://127.0.0.1:7100")]
    endpoint: String,
    /// Bearer token sent with every call.
    #[arg(long, global = true, env = "PURGECAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) an https:// endpoint is verified against
    /// (default: the public web roots).
    #[arg(long, global = true, env = "PURGECAST_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Purge cached content; prints the purge id.
    Purge(purge::PurgeArgs),
    /// Show how far a purge has spread.
    Status(purge::StatusArgs),
    /// List the members of the cluster as seen by this node.
    Members,
    /// Read and write the node's cache index.
    #[command(subcommand)]
    Index(index::IndexCmd),
    /// Measure purge completion latency across a cluster.
    Bench(bench::BenchArgs),
    /// Who purged what: accepted purges from the node's purge log.
    Audit(audit::AuditArgs),
}

/// Runs the command; `Ok` carries the exit code (non-zero for
/// "did not complete in time", which is a result, not an error).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args { endpoint, token, ca_file, json, command } = args;
    let ca = ca_file.as_deref().map(read_file).transpose()?;
    let connect = || async { anyhow::Ok(Client::connect_with(&endpoint, token.clone(), ca.as_deref()).await?) };
    match command {
        Command::Bench(b) => bench::run(b, &endpoint, token.clone(), json).await,
        Command::Purge(p) => purge::purge(&connect().await?, p, json).await,
        Command::Status(s) => purge::status(&connect().await?, s, json).await,
        Command::Members => purge::members(&connect().await?, json).await,
        Command::Index(cmd) => index::run(&connect().await?, cmd, json).await,
        Command::Audit(a) => audit::run(&connect().await?, a, json).await,
    }
}

/// Reads a file with its name in the error.
fn read_file(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("purgectl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let a = parse(&["members", "--json", "--endpoint", "127.0.0.1:7101", "--token", "t"]).unwrap();
        assert!(a.json);
        assert_eq!(a.endpoint, "127.0.0.1:7101");
        assert_eq!(a.token.as_deref(), Some("t"));
        let a = parse(&["--json", "status", "abc"]).unwrap();
        assert!(a.json);
        assert!(matches!(a.command, Command::Status(_)));
    }
}
