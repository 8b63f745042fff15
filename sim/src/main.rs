use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use purgesim::cli::{strategies, Cli, Cmd, RunArgs, SweepArgs};
use purgesim::scenario::{run_all, Strategy};
use purgesim::{fuzz, plot, report, sweep};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Sweep(a)) => run_sweep(a),
        Some(Cmd::Fuzz(a)) => run_fuzz(a),
    }
}

fn run_fuzz(a: fuzz::FuzzArgs) -> anyhow::Result<()> {
    let opts = fuzz::Options { strategies: strategies(&a.strategies)?, inject: a.inject, vary_config: a.vary_config };
    if let Some(bad) = opts.strategies.iter().find(|s| !matches!(s, Strategy::Topology | Strategy::Gossip)) {
        anyhow::bail!("fuzz runs the engines only (topology, gossip), not {}", bad.name());
    }
    let wall = Instant::now();
    let ok = match a.replay {
        Some(seed) => {
            let (text, ok) = fuzz::replay_text(seed, &opts)?;
            print!("{text}");
            ok
        }
        None => {
            let sum = fuzz::fuzz(a.seed, a.schedules, &opts, a.threads);
            print!("{}", fuzz::summary_text(a.seed, &sum, &opts));
            let secs = wall.elapsed().as_secs_f64();
            eprintln!("{} schedules in {secs:.1} s wall: {:.0} events/s", sum.schedules, sum.events as f64 / secs);
            sum.failures.is_empty()
        }
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let (scn, echo) = a.common.scenario()?;
    let strategies = strategies(&a.strategies)?;
    let wall = Instant::now();
    let outcomes = run_all(&scn, &strategies, a.common.threads);
    let secs = wall.elapsed().as_secs_f64();
    let reports: Vec<_> = outcomes.iter().map(|o| o.report.clone()).collect();
    if a.json {
        println!("{}", report::json(&echo, &reports)?);
    } else {
        print!("{}", report::text(&echo, &reports));
    }
    let events: u64 = reports.iter().map(|r| r.events).sum();
    // Wall-clock figures go to stderr only, so stdout stays reproducible.
    eprintln!(
        "{events} events in {secs:.1} s wall: {:.0} events/s ({} threads)",
        events as f64 / secs,
        a.common.threads
    );
    for (o, r) in outcomes.iter().zip(&reports) {
        if let Some(c) = &o.engine {
            eprintln!("{}: engine counters {:?}", r.strategy, c);
        }
    }
    if let Some(dir) = &a.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let series: Vec<plot::CdfSeries> = outcomes
            .into_iter()
            .map(|o| plot::CdfSeries { name: o.report.strategy.clone(), samples: o.samples })
            .collect();
        let title = format!(
            "delivery latency CDF: {} PoPs x {}, loss {}% ({}), {}% crashed, seed {}",
            echo.pops,
            echo.machines_per_pop,
            echo.loss * 100.0,
            echo.loss_model,
            (a.common.crashed * 100.0).round(),
            echo.seed
        );
        plot::cdf(&dir.join("cdf.svg"), &title, &series)?;
    }
    Ok(())
}

fn run_sweep(a: SweepArgs) -> anyhow::Result<()> {
    let (scn, echo) = a.common.scenario()?;
    let wall = Instant::now();
    let rows = sweep::sweep(&scn, &a.fanouts, &a.pop_entries, a.common.threads);
    let secs = wall.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "params": echo, "sweep": rows }))?);
    } else {
        print!("{}", report::scenario_lines(&echo));
        print!("{}", sweep::text(&rows));
    }
    let events: u64 = rows.iter().map(|r| r.report.events).sum();
    eprintln!("{events} events in {secs:.1} s wall: {:.0} events/s", events as f64 / secs);
    if let Some(dir) = &a.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let title = format!(
            "sweep: {} PoPs x {}, loss {}% ({})",
            echo.pops,
            echo.machines_per_pop,
            echo.loss * 100.0,
            echo.loss_model
        );
        plot::sweep(&dir.join("sweep.svg"), &title, &sweep::lines(&rows))?;
    }
    Ok(())
}
