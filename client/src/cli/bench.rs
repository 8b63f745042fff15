//! `purgectl bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use purgecast_client::api::PurgeMode;
use purgecast_client::bench::{self, BenchConfig, BenchReport, BenchSelector};
use purgecast_core::parse_duration;

use super::output::print_json;
use super::EXIT_INCOMPLETE;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorKind {
    Url,
    Tag,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("targets").args(["cluster_file", "endpoints"])))]
pub struct BenchArgs {
    /// Cluster file written by `purgecast dev` (its nodes' grpc endpoints).
    #[arg(long)]
    cluster_file: Option<PathBuf>,
    /// Comma-separated gRPC endpoints. Without this or --cluster-file,
    /// only --endpoint is used. Each purge is sent to one of them, picked
    /// at random (--seed), and its status is polled there.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Number of purges to issue.
    #[arg(long, default_value_t = 100)]
    purges: usize,
    /// Purges per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// What each purge selects: unique URLs or unique tags.
    #[arg(long, value_enum, default_value_t = SelectorKind::Tag)]
    selector: SelectorKind,
    /// Selectors in each purge (1-100), each one used by no other purge.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100))]
    selectors: usize,
    /// Soft purges instead of hard ones.
    #[arg(long)]
    soft: bool,
    /// How long each purge may take to complete.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Status poll interval per purge.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Status polls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the origin choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(args: BenchArgs, endpoint: &str, token: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let endpoints = match &args.cluster_file {
        Some(path) => bench::cluster_endpoints(&super::read_file(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None if !args.endpoints.is_empty() => args.endpoints.clone(),
        None => vec![endpoint.to_string()],
    };
    let cfg = BenchConfig {
        endpoints,
        token,
        purges: args.purges,
        rate: args.rate,
        selector: match args.selector {
            SelectorKind::Url => BenchSelector::Url,
            SelectorKind::Tag => BenchSelector::Tag,
        },
        selectors: args.selectors,
        mode: if args.soft { PurgeMode::Soft } else { PurgeMode::Hard },
        timeout: args.timeout,
        poll_interval: args.poll_interval,
        max_polls: args.concurrency,
        // Purge calls are short; twice the poll budget keeps the issue
        // rate from being throttled by a few slow accepts.
        max_purges: args.concurrency.saturating_mul(2).max(1),
        seed: args.seed,
    };
    let report = bench::run(&cfg).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    let all_done = report.completed == report.purges;
    Ok(if all_done { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INCOMPLETE) })
}

fn render(r: &BenchReport) -> String {
    let mut out = format!(
        "purges:      {} issued to {} endpoints at {:.1}/s target, {} {} selector{} each\n\
         accepted:    {} ({} failed), throughput {:.1}/s over {:.2}s\n\
         completed:   {} ({} not within timeout)\n",
        r.purges,
        r.endpoints,
        r.target_rate,
        r.selectors_per_purge,
        match r.selector {
            BenchSelector::Url => "url",
            BenchSelector::Tag => "tag",
        },
        if r.selectors_per_purge == 1 { "" } else { "s" },
        r.accepted,
        r.failed,
        r.throughput_per_s,
        r.issue_secs,
        r.completed,
        r.timed_out,
    );
    match &r.completion {
        Some(c) => out.push_str(&format!(
            "completion:  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (mean {:.1} ms)\n",
            c.p50_ms, c.p90_ms, c.p99_ms, c.max_ms, c.mean_ms
        )),
        None => out.push_str("completion:  no purge completed\n"),
    }
    if r.status_errors > 0 {
        out.push_str(&format!("status errors: {}\n", r.status_errors));
    }
    if let Some(e) = &r.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Args, Command};
    use clap::Parser;
    use purgecast_client::stats::LatencySummary;

    #[test]
    fn endpoints_split_on_commas_and_exclude_cluster_file() {
        let a =
            Args::try_parse_from(["purgectl", "bench", "--endpoints", "a:1,b:2", "--selector", "url", "--rate", "5"])
                .unwrap();
        let Command::Bench(b) = a.command else { panic!("not bench") };
        assert_eq!(b.endpoints, ["a:1", "b:2"]);
        assert_eq!(b.selector, SelectorKind::Url);
        assert_eq!(b.rate, 5.0);
        let both = Args::try_parse_from(["purgectl", "bench", "--endpoints", "a:1", "--cluster-file", "c.json"]);
        assert!(both.is_err());
    }

    #[test]
    fn selectors_per_purge_default_to_one_and_stay_within_1_to_100() {
        let bench = |extra: &[&str]| {
            let argv = ["purgectl", "bench", "--endpoints", "a:1"].iter().chain(extra).copied();
            Args::try_parse_from(argv).map(|a| match a.command {
                Command::Bench(b) => b.selectors,
                _ => panic!("not bench"),
            })
        };
        assert_eq!(bench(&[]).unwrap(), 1);
        assert_eq!(bench(&["--selectors", "10"]).unwrap(), 10);
        assert_eq!(bench(&["--selectors", "100", "--selector", "url"]).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten"] {
            assert!(bench(&["--selectors", bad]).is_err(), "--selectors {bad} must be refused");
        }
    }

    #[test]
    fn the_arguments_of_tests_bench_storm_py_parse() {
        for target in [["--endpoints", "http://127.0.0.1:24100"], ["--cluster-file", "/tmp/storm.json"]] {
            let argv = ["purgectl", "--json", "bench"].into_iter().chain(target).chain([
                "--purges",
                "20000",
                "--rate",
                "2000",
                "--selector",
                "url",
                "--selectors",
                "100",
                "--timeout",
                "10s",
                "--poll-interval",
                "20ms",
                "--concurrency",
                "32",
                "--seed",
                "1",
            ]);
            let a = Args::try_parse_from(argv).unwrap();
            let Command::Bench(b) = a.command else { panic!("not bench") };
            assert!(a.json);
            assert_eq!((b.purges, b.rate, b.selector, b.selectors), (20_000, 2000.0, SelectorKind::Url, 100));
            assert_eq!(
                (b.timeout, b.poll_interval, b.concurrency),
                (Duration::from_secs(10), Duration::from_millis(20), 32)
            );
        }
    }

    #[test]
    fn render_shows_percentiles_and_errors() {
        let r = BenchReport {
            endpoints: 3,
            purges: 10,
            accepted: 9,
            failed: 1,
            completed: 8,
            timed_out: 1,
            status_errors: 2,
            target_rate: 10.0,
            selector: BenchSelector::Url,
            selectors_per_purge: 10,
            throughput_per_s: 9.5,
            issue_secs: 0.95,
            elapsed_secs: 2.0,
            completion: LatencySummary::from_samples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            first_error: Some("UNAVAILABLE: down".into()),
        };
        let text = render(&r);
        assert!(text.contains("p50 4.0 ms  p90 8.0 ms  p99 8.0 ms  max 8.0 ms"), "{text}");
        assert!(text.contains("accepted:    9 (1 failed)"), "{text}");
        assert!(text.contains("first error: UNAVAILABLE: down"), "{text}");
        assert!(text.contains("10.0/s target, 10 url selectors each"), "{text}");
    }
}
