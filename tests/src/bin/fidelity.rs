//! Real cluster vs purgesim on the same topology: see docs/sim.md,
//! "Fidelity: real cluster vs simulator".
//!
//! ```sh
//! cargo build --workspace --all-targets
//! target/debug/fidelity --nodes 12 --purges 200 --rate 10 --seed 1
//! ```

use anyhow::Result;
use clap::Parser;
use purgecast_tests::fidelity::{run_real, run_sim, summarize, table, to_json, Params, Plan};

#[derive(Parser)]
#[command(about = "Run a real loopback cluster under purgesim's latency matrix and compare it with purgesim")]
struct Args {
    /// Nodes, one per PoP; purgesim picks the cities.
    #[arg(long, default_value_t = 12)]
    nodes: usize,
    #[arg(long, default_value_t = 200)]
    purges: usize,
    /// Purges per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seeds the origins (and purgesim's engines).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let plan = Plan::new(Params { nodes: a.nodes, purges: a.purges, rate: a.rate, seed: a.seed })?;
    let (sim_out, rep) = run_sim(&plan)?;
    let real_out = run_real(&plan, &|m| eprintln!("fidelity: {m}")).await?;
    let (real, sim) = (summarize(&plan, &real_out, true), summarize(&plan, &sim_out, false));
    if a.json {
        println!("{}", to_json(&plan, &real, &sim, &rep));
        return Ok(());
    }
    let pops: Vec<String> = plan.locations().into_iter().map(|(c, r)| format!("{c} ({r})")).collect();
    println!("fidelity: {} nodes, {} purges at {}/s, seed {}", a.nodes, a.purges, a.rate, a.seed);
    println!("PoPs: {}", pops.join(", "));
    print!("{}", table(&real, &sim, &rep));
    if real.below_floor > 0 {
        println!(
            "WARNING: {} real purges beat the emulated floor: the WAN emulation was not applied",
            real.below_floor
        );
    }
    Ok(())
}
