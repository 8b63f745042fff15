//! What the fuzzer prints: FAIL lines, the summary, a verbose replay.

use std::fmt::Write as _;

use super::{generate, problems, run_schedule, Checked, Options, Schedule, Summary};
use crate::report::text;

/// The FAIL lines of a failed schedule.
pub fn fail_text(c: &Checked, opts: &Options) -> String {
    let mut s = String::new();
    for p in &c.problems {
        let _ = writeln!(s, "FAIL schedule seed={}: {p}", c.seed);
    }
    let _ = writeln!(s, "  replay: {}", opts.replay_command(c.seed));
    s
}

pub fn summary_text(master: u64, sum: &Summary, opts: &Options) -> String {
    let names: Vec<&str> = opts.strategies.iter().map(|s| s.name()).collect();
    let mut s = String::new();
    for c in &sum.failures {
        s.push_str(&fail_text(c, opts));
    }
    let _ = writeln!(
        s,
        "fuzz seed {master}: {} schedules x {}, {} failed",
        sum.schedules,
        names.join(","),
        sum.failures.len()
    );
    match sum.worst_settle {
        Some((d, seed)) => {
            let _ = writeln!(s, "worst completion after the last fault: {} ms (schedule seed={seed})", d.as_millis());
        }
        None => {
            let _ = writeln!(s, "worst completion after the last fault: none completed");
        }
    }
    if let Some((d, seed)) = sum.worst_status {
        let _ = writeln!(
            s,
            "worst completion reported by the origins after the last fault: {} ms (schedule seed={seed})",
            d.as_millis()
        );
    }
    if let Some((h, seed)) = sum.worst_heal_ms {
        let _ = writeln!(s, "worst full delivery after a partition heal: {h:.1} ms (schedule seed={seed})");
    }
    let _ = writeln!(
        s,
        "{} events simulated; purges refused by a down or unjoined origin: {}; accepted by restarted machines: {}; \
         dead members forgotten: {}",
        sum.events, sum.refused, sum.after_restart, sum.forgotten
    );
    s
}

/// One schedule in full: what was generated, the report, the verdict.
pub fn replay_text(seed: u64, opts: &Options) -> anyhow::Result<(String, bool)> {
    let sch = generate(seed, opts)?;
    let mut s = String::new();
    let _ =
        writeln!(s, "schedule seed={seed}{}", opts.inject.map_or(String::new(), |i| format!(" (inject {})", i.flag())));
    let wl = &sch.wl;
    s.push_str(&machines_text(&sch));
    for p in &sch.scn.run.net.partitions {
        let _ = writeln!(s, "partition region={} from {:?} to {:?}", p.region, p.start, p.heal());
    }
    let origins: Vec<String> = wl.purges.iter().map(|p| format!("{}@{:.0}", p.origin, p.at.as_millis_f64())).collect();
    let _ = writeln!(s, "purges (origin@ms): {}", origins.join(" "));
    let _ = writeln!(s, "dead members forgotten after {} ms", sch.scn.config.forget_dead_after.as_millis());
    let _ = writeln!(
        s,
        "last fault at {:.0} ms; delivery must be complete {} ms later",
        sch.quiet.as_millis_f64(),
        sch.bound.as_millis()
    );
    let mut reports = Vec::new();
    let mut verdict = Vec::new();
    let mut tail = String::new();
    for &st in &opts.strategies {
        let r = run_schedule(&sch, st, opts);
        let settle = r.settle.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
        let status = r.status.settle.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
        let _ = writeln!(
            tail,
            "{}: complete {settle} after the last fault, reported complete by the origins {status} after it \
             ({} purges checked); {} purges refused, {} accepted by restarted machines; \
             engine counters {:?}",
            st.name(),
            r.status.checked,
            r.refused,
            r.after_restart,
            r.counters
        );
        verdict.extend(problems(&sch, &r));
        reports.push(r.report);
    }
    s.push('\n');
    s.push_str(&text(&sch.echo, &reports));
    s.push('\n');
    s.push_str(&tail);
    let ok = verdict.is_empty();
    let c = Checked { problems: verdict, ..Checked::new(seed) };
    if ok {
        let _ = writeln!(s, "OK schedule seed={seed}");
    } else {
        s.push_str(&fail_text(&c, opts));
    }
    Ok((s, ok))
}

/// The machines a schedule crashes or restarts, one line each.
fn machines_text(sch: &Schedule) -> String {
    let (mut s, wl) = (String::new(), &sch.wl);
    for (m, mach) in sch.scn.topo.machines.iter().enumerate() {
        let state = if wl.crashed[m] {
            match wl.restart_at[m] {
                Some(r) => format!("dead from the start, joins at {:.0} ms", r.as_millis_f64()),
                None => "dead from the start".to_string(),
            }
        } else {
            match (wl.crash_at[m], wl.restart_at[m]) {
                (Some(c), Some(r)) => {
                    format!("crashes at {:.0} ms, restarts at {:.0} ms", c.as_millis_f64(), r.as_millis_f64())
                }
                (Some(c), None) => format!("crashes at {:.0} ms for good", c.as_millis_f64()),
                _ => continue,
            }
        };
        let bounces: Vec<String> = wl
            .bounces
            .iter()
            .filter(|b| b.machine == m)
            .map(|b| format!("{:.0}-{:.0}", b.down.as_millis_f64(), b.up.as_millis_f64()))
            .collect();
        let state = if bounces.is_empty() { state } else { format!("down {} ms, then {state}", bounces.join(", ")) };
        let _ = writeln!(s, "machine {m} ({}): {state}", mach.name);
    }
    s
}
