//! `purgectl audit`: who purged what, from a node's purge log.

use std::process::ExitCode;

use anyhow::Context;
use purgecast_client::Client;
use purgecast_proto::api::{selector::Kind, AuditRecord, PurgeMode, Selector};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only this zone.
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Only purges accepted at or after this RFC 3339 time
    /// (2026-12-01T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Most records, newest first.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

#[derive(Serialize)]
struct Row {
    id: String,
    zone: String,
    token: String,
    mode: &'static str,
    accepted_at: String,
    origin: String,
    selectors: Vec<String>,
}

fn selector(s: &Selector) -> String {
    match &s.kind {
        Some(Kind::Url(u)) => format!("url:{u}"),
        Some(Kind::Host(h)) => format!("host:{h}"),
        Some(Kind::Prefix(p)) => format!("prefix:{p}"),
        Some(Kind::Tag(t)) => format!("tag:{t}"),
        Some(Kind::Everything(_)) | None => "everything".into(),
    }
}

fn time_of(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    t.ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_else(|| ms.to_string())
}

fn row(r: AuditRecord) -> Row {
    Row {
        mode: if r.mode == PurgeMode::Soft as i32 { "soft" } else { "hard" },
        accepted_at: time_of(r.accepted_at_ms),
        selectors: r.selectors.iter().map(selector).collect(),
        id: r.id,
        zone: r.zone,
        token: r.token_id,
        origin: r.origin,
    }
}

pub async fn run(client: &Client, args: AuditArgs, json: bool) -> anyhow::Result<ExitCode> {
    let since_ms = match &args.since {
        None => 0,
        Some(s) => {
            let t = OffsetDateTime::parse(s, &Rfc3339).with_context(|| format!("--since {s:?}: not RFC 3339"))?;
            u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        }
    };
    let (records, truncated) = client.audit(&args.zone, since_ms, args.limit).await?;
    let rows: Vec<Row> = records.into_iter().map(row).collect();
    if json {
        println!("{}", serde_json::json!({ "records": rows, "truncated": truncated }));
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        let zone = if r.zone.is_empty() { "-" } else { &r.zone };
        println!(
            "{}  {}  zone={}  token={}  {}  via={}  {}",
            r.accepted_at,
            r.id,
            zone,
            r.token,
            r.mode,
            r.origin,
            r.selectors.join(" ")
        );
    }
    if truncated {
        eprintln!("(more records matched; raise --limit or narrow with --zone/--since)");
    }
    Ok(ExitCode::SUCCESS)
}
