//! `purgectl purge`, `status` and `members`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use purgecast_client::api::{PurgeMode, PurgeStatus};
use purgecast_client::selector::SelectorSet;
use purgecast_client::{Client, ClientError};
use purgecast_core::{format_duration, parse_duration};
use serde::Serialize;

use super::output::{list, print_json, table};
use super::EXIT_INCOMPLETE;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("selector").required(true).multiple(true)
    .args(["url", "host", "prefix", "tag", "everything"])))]
pub struct PurgeArgs {
    /// Full URL (cache key); repeatable.
    #[arg(long)]
    pub url: Vec<String>,
    /// Every entry of a host; repeatable.
    #[arg(long)]
    pub host: Vec<String>,
    /// host/path-prefix or scheme://host/path-prefix; repeatable.
    #[arg(long)]
    pub prefix: Vec<String>,
    /// Surrogate key / cache tag; repeatable.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Every entry of the zone (every entry on every node where there are
    /// no zones, or with an admin token and no --zone).
    #[arg(long)]
    pub everything: bool,
    /// Zone the purge is confined to; optional when the hosts or the token
    /// name exactly one.
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Mark entries stale instead of deleting them.
    #[arg(long)]
    pub soft: bool,
    /// Wait until every live member has applied the purge.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often --wait polls the purge's status.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Cluster size you expect: --wait then says when the origin knows a
    /// different number of members, and exits 2 if it tracked fewer.
    /// Ignored without --wait.
    #[arg(long, env = "PURGECAST_EXPECT_MEMBERS")]
    pub expect_members: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Purge id, as printed by `purgectl purge`.
    pub id: String,
}

/// `purge --json` output. Fields only a status can tell are null without --wait.
#[derive(Serialize)]
struct PurgeJson {
    id: String,
    members_total: u32,
    members_applied: Option<u32>,
    complete: Option<bool>,
    completion_ms: Option<f64>,
    pending: Vec<String>,
    dead: Vec<String>,
    /// Members (any state but left) the origin knows after the wait.
    members_known: Option<u32>,
    members_expected: Option<u32>,
}

pub async fn purge(client: &Client, args: PurgeArgs, json: bool) -> anyhow::Result<ExitCode> {
    let selectors = SelectorSet::new()
        .urls(&args.url)?
        .hosts(&args.host)?
        .prefixes(&args.prefix)?
        .tags(&args.tag)?
        .everything(args.everything);
    if selectors.is_empty() {
        bail!("give at least one of --url, --host, --prefix, --tag, --everything");
    }
    let mode = if args.soft { PurgeMode::Soft } else { PurgeMode::Hard };
    let resp = client.purge_in(&args.zone, selectors.build(), mode).await?;
    let mut out = PurgeJson {
        id: resp.id.clone(),
        members_total: resp.members_total,
        members_applied: None,
        complete: None,
        completion_ms: None,
        pending: Vec::new(),
        dead: Vec::new(),
        members_known: None,
        members_expected: args.expect_members,
    };
    if !args.wait {
        if json {
            print_json(&out)?;
        } else {
            println!("{}", resp.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        println!("{}", resp.id);
    }
    let (last, timed_out) = match client.wait_complete(&resp.id, args.timeout, args.poll_interval).await {
        Ok(status) => (Some(status), false),
        Err(ClientError::Timeout { last, .. }) => (last.map(|b| *b), true),
        Err(e) => return Err(e.into()),
    };
    out.complete = Some(!timed_out);
    if let Some(s) = last {
        out.members_total = s.members_total;
        out.members_applied = Some(s.members_applied);
        out.completion_ms = s.complete.then_some(s.completion_ms);
        out.pending = s.pending;
        out.dead = s.dead;
    }
    // The status counts the members the origin tracked; say so when that
    // is not the cluster the caller has in mind. Best effort: a failed
    // lookup only leaves the note out.
    let known = client.members().await.ok().map(|m| Known::count(&m));
    out.members_known = known.as_ref().map(|k| k.total);
    let note = known.as_ref().and_then(|k| scope_note(out.members_total, k, args.expect_members));
    let short = args.expect_members.is_some_and(|e| out.members_total < e);
    if json {
        print_json(&out)?;
    } else if timed_out {
        let applied = out.members_applied.map_or("?".to_string(), |n| n.to_string());
        eprintln!(
            "not complete after {}: applied by {applied}/{} members{}; pending: {}; dead: {}",
            format_duration(args.timeout),
            out.members_total,
            note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
            list(&out.pending),
            list(&out.dead)
        );
    } else {
        println!(
            "applied by {}/{} members in {:.1} ms{}",
            out.members_applied.unwrap_or(0),
            out.members_total,
            out.completion_ms.unwrap_or(0.0),
            note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
        );
        if !out.dead.is_empty() {
            println!("dead (catch up on return): {}", list(&out.dead));
        }
        if short {
            eprintln!(
                "fewer members than expected: the members the origin does not know (not joined yet, or cut off from it) did not get this purge from it"
            );
        }
    }
    Ok(if timed_out || short { ExitCode::from(EXIT_INCOMPLETE) } else { ExitCode::SUCCESS })
}

/// The origin's member table, by state.
struct Known {
    /// Every member but those that left, the origin included.
    total: u32,
    alive: u32,
    suspect: u32,
    dead: u32,
}

impl Known {
    fn count(members: &[purgecast_client::api::MemberInfo]) -> Known {
        let n = |state: &str| members.iter().filter(|m| m.state == state).count() as u32;
        Known { total: members.len() as u32 - n("left"), alive: n("alive"), suspect: n("suspect"), dead: n("dead") }
    }
}

/// What `applied by a/b` does not say: that the origin knows more members
/// than it counted (suspect or dead ones), or fewer than the caller expects.
fn scope_note(tracked: u32, known: &Known, expected: Option<u32>) -> Option<String> {
    let mut states = vec![format!("{} alive", known.alive)];
    if known.suspect > 0 {
        states.push(format!("{} suspect", known.suspect));
    }
    if known.dead > 0 {
        states.push(format!("{} dead", known.dead));
    }
    match expected {
        Some(e) if e != tracked || e != known.total => {
            Some(format!("origin knows {} of {e} expected members: {}", known.total, states.join(", ")))
        }
        None if known.total != tracked => Some(format!("origin knows {} members: {}", known.total, states.join(", "))),
        _ => None,
    }
}

#[derive(Serialize)]
struct ApplyJson {
    node: String,
    latency_ms: f64,
}

#[derive(Serialize)]
struct StatusJson {
    id: String,
    origin: String,
    members_total: u32,
    members_applied: u32,
    complete: bool,
    completion_ms: Option<f64>,
    applied: Vec<ApplyJson>,
    pending: Vec<String>,
    dead: Vec<String>,
}

pub async fn status(client: &Client, args: StatusArgs, json: bool) -> anyhow::Result<ExitCode> {
    let s = client.status(&args.id).await?;
    let view = status_view(s);
    if json {
        print_json(&view)?;
        return Ok(ExitCode::SUCCESS);
    }
    let completion = match view.completion_ms {
        Some(ms) => format!("yes, in {ms:.1} ms"),
        None => "no".to_string(),
    };
    println!("id:        {}", view.id);
    println!("origin:    {}", view.origin);
    println!("applied:   {}/{} members", view.members_applied, view.members_total);
    println!("complete:  {completion}");
    println!("pending:   {}", list(&view.pending));
    println!("dead:      {}", list(&view.dead));
    if !view.applied.is_empty() {
        let rows: Vec<Vec<String>> =
            view.applied.iter().map(|a| vec![a.node.clone(), format!("{:.1}", a.latency_ms)]).collect();
        print!("\n{}", table(&["MEMBER", "LATENCY_MS"], &rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies sorted fastest first (ties by name) so output is stable.
fn status_view(s: PurgeStatus) -> StatusJson {
    let mut applied: Vec<ApplyJson> =
        s.applied.into_iter().map(|a| ApplyJson { node: a.node, latency_ms: a.latency_ms }).collect();
    applied.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms).then_with(|| a.node.cmp(&b.node)));
    StatusJson {
        id: s.id,
        origin: s.origin,
        members_total: s.members_total,
        members_applied: s.members_applied,
        complete: s.complete,
        completion_ms: s.complete.then_some(s.completion_ms),
        applied,
        pending: s.pending,
        dead: s.dead,
    }
}

#[derive(Serialize)]
struct MemberJson {
    name: String,
    id: String,
    state: String,
    pop: String,
    region: String,
    peer_addr: String,
    api_addr: String,
    is_self: bool,
}

#[derive(Serialize)]
struct MembersJson {
    members: Vec<MemberJson>,
}

pub async fn members(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let mut members: Vec<MemberJson> = client
        .members()
        .await?
        .into_iter()
        .map(|m| MemberJson {
            name: m.name,
            id: m.id,
            state: m.state,
            pop: m.pop,
            region: m.region,
            peer_addr: m.peer_addr,
            api_addr: m.api_addr,
            is_self: m.is_self,
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    if json {
        print_json(&MembersJson { members })?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let name = if m.is_self { format!("{} *", m.name) } else { m.name.clone() };
            vec![
                name,
                m.id.clone(),
                m.state.clone(),
                m.pop.clone(),
                m.region.clone(),
                m.peer_addr.clone(),
                m.api_addr.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "ID", "STATE", "POP", "REGION", "PEER_ADDR", "API_ADDR"], &rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use purgecast_client::api::MemberApply;

    #[test]
    fn purge_requires_a_selector() {
        use clap::Parser;
        let err = super::super::Args::try_parse_from(["purgectl", "purge", "--soft"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let a = super::super::Args::try_parse_from([
            "purgectl",
            "purge",
            "--tag",
            "a",
            "--tag",
            "b",
            "--url",
            "https://x/y",
            "--wait",
            "--timeout",
            "2s",
        ])
        .unwrap();
        let super::super::Command::Purge(p) = a.command else { panic!("not purge") };
        assert_eq!(p.tag, ["a", "b"]);
        assert_eq!(p.url, ["https://x/y"]);
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert!(p.wait && !p.soft);
    }

    #[test]
    fn bad_timeout_is_a_usage_error() {
        use clap::Parser;
        let err = super::super::Args::try_parse_from(["purgectl", "purge", "--everything", "--timeout", "10"]);
        assert!(err.unwrap_err().to_string().contains("expected a number followed by a unit"));
    }

    #[test]
    fn status_view_sorts_applies_and_hides_incomplete_completion() {
        let s = PurgeStatus {
            id: "p".into(),
            members_total: 3,
            members_applied: 2,
            applied: vec![
                MemberApply { node: "b".into(), latency_ms: 5.0 },
                MemberApply { node: "a".into(), latency_ms: 9.0 },
                MemberApply { node: "c".into(), latency_ms: 5.0 },
            ],
            completion_ms: 3.0,
            complete: false,
            ..PurgeStatus::default()
        };
        let v = status_view(s);
        let order: Vec<&str> = v.applied.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(v.completion_ms, None);
    }

    #[test]
    fn scope_note_says_what_the_count_leaves_out() {
        let k = |total, alive, suspect, dead| Known { total, alive, suspect, dead };
        // The usual case: nothing to add.
        assert_eq!(scope_note(5, &k(5, 5, 0, 0), None), None);
        assert_eq!(scope_note(5, &k(5, 5, 0, 0), Some(5)), None);
        // A 5-node cluster whose origin met only 3 of them so far.
        assert_eq!(
            scope_note(3, &k(3, 3, 0, 0), Some(5)).as_deref(),
            Some("origin knows 3 of 5 expected members: 3 alive")
        );
        // Dead members are not counted in a/b; say they exist.
        assert_eq!(scope_note(4, &k(5, 4, 0, 1), None).as_deref(), Some("origin knows 5 members: 4 alive, 1 dead"));
    }

    #[test]
    fn expect_members_parses() {
        use clap::Parser;
        let ok =
            super::super::Args::try_parse_from(["purgectl", "purge", "--tag", "a", "--wait", "--expect-members", "5"]);
        let super::super::Command::Purge(p) = ok.unwrap().command else { panic!("not purge") };
        assert_eq!(p.expect_members, Some(5));
    }
}
