//! `purgectl index put|get|list|count`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use purgecast_client::api::Entry;
use purgecast_client::jsonl::parse_entries;
use purgecast_client::{Client, EntryFilter};
use purgecast_core::parse_duration;
use serde::Serialize;

use super::output::{list, print_json, table, EntryView};

/// Entries per Put call, well under gRPC's 4 MiB default message limit.
const PUT_BATCH: usize = 1_000;

#[derive(clap::Subcommand, Debug)]
pub enum IndexCmd {
    /// Store one entry (--key) or many (--file, JSON lines).
    Put(PutArgs),
    /// Show one entry.
    Get {
        /// Cache key (full URL).
        key: String,
    },
    /// List entries of a host or a tag.
    List(ListArgs),
    /// Count entries of a host, a tag, or all.
    Count(CountArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["key", "file"])))]
pub struct PutArgs {
    /// Cache key (full URL).
    #[arg(long)]
    key: Option<String>,
    /// Tag of the entry; repeatable.
    #[arg(long, conflicts_with = "file")]
    tag: Vec<String>,
    /// Size in bytes.
    #[arg(long, conflicts_with = "file")]
    size: Option<u64>,
    /// Time to live (e.g. 60s); with --file, for lines without expires_at_ms.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// JSON lines, one entry per line: {"key":..,"tags":[..],"size":..}.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("filter").required(true).args(["host", "tag"])))]
pub struct ListArgs {
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// Zone of --tag (tags are per zone).
    #[arg(long, default_value = "")]
    zone: String,
    /// Most entries to return.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("filter").args(["host", "tag"])))]
pub struct CountArgs {
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// Zone of --tag (tags are per zone).
    #[arg(long, default_value = "")]
    zone: String,
}

pub async fn run(client: &Client, cmd: IndexCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        IndexCmd::Put(args) => put(client, args, json).await,
        IndexCmd::Get { key } => get(client, &key, json).await,
        IndexCmd::List(args) => {
            let Some(f) = filter(args.host, args.tag) else { anyhow::bail!("give --host or --tag") };
            print_entries(client.index_list_in(&args.zone, f, args.limit).await?, json)
        }
        IndexCmd::Count(args) => {
            let count = client.index_count_in(&args.zone, filter(args.host, args.tag)).await?;
            if json {
                print_json(&serde_json::json!({ "count": count }))?;
            } else {
                println!("{count}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn filter(host: Option<String>, tag: Option<String>) -> Option<EntryFilter> {
    host.map(EntryFilter::Host).or(tag.map(EntryFilter::Tag))
}

async fn put(client: &Client, args: PutArgs, json: bool) -> anyhow::Result<ExitCode> {
    let expires_at_ms = match args.ttl {
        Some(ttl) => unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        None => 0,
    };
    let entries = match (&args.file, args.key) {
        (Some(path), _) => parse_entries(&super::read_file(path)?, expires_at_ms)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        (None, Some(key)) => {
            vec![Entry { key, tags: args.tag, size: args.size.unwrap_or(0), expires_at_ms, ..Entry::default() }]
        }
        (None, None) => anyhow::bail!("give --key or --file"),
    };
    let mut stored: u64 = 0;
    for batch in entries.chunks(PUT_BATCH) {
        stored += u64::from(client.index_put(batch.to_vec()).await?);
    }
    if json {
        print_json(&serde_json::json!({ "stored": stored }))?;
    } else {
        println!("stored {stored} entries");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct GetJson {
    found: bool,
    entry: Option<EntryView>,
}

async fn get(client: &Client, key: &str, json: bool) -> anyhow::Result<ExitCode> {
    let entry = client.index_get(key).await?;
    if json {
        let found = entry.is_some();
        print_json(&GetJson { found, entry: entry.map(EntryView::from) })?;
        // Not found fails in both modes so scripts can test the exit code.
        return Ok(if found { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let Some(e) = entry else {
        anyhow::bail!("no entry for {key:?}");
    };
    println!("key:        {}", e.key);
    println!("host:       {}", e.host);
    println!("path:       {}", e.path);
    println!("tags:       {}", list(&e.tags));
    println!("size:       {}", e.size);
    println!("stored_at:  {} (unix ms)", e.stored_at_ms);
    println!(
        "expires_at: {}",
        if e.expires_at_ms == 0 { "never".to_string() } else { format!("{} (unix ms)", e.expires_at_ms) }
    );
    println!(
        "stale:      {}",
        if e.stale { format!("since {} (unix ms)", e.stale_since_ms) } else { "no".to_string() }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct EntriesJson {
    entries: Vec<EntryView>,
}

fn print_entries(entries: Vec<Entry>, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&EntriesJson { entries: entries.into_iter().map(EntryView::from).collect() })?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![e.key.clone(), e.size.to_string(), if e.stale { "yes".into() } else { "no".into() }, list(&e.tags)]
        })
        .collect();
    print!("{}", table(&["KEY", "SIZE", "STALE", "TAGS"], &rows));
    Ok(ExitCode::SUCCESS)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Args, Command};
    use clap::Parser;

    fn index(args: &[&str]) -> Result<IndexCmd, clap::Error> {
        let a = Args::try_parse_from(["purgectl", "index"].into_iter().chain(args.iter().copied()))?;
        match a.command {
            Command::Index(cmd) => Ok(cmd),
            other => panic!("not index: {other:?}"),
        }
    }

    #[test]
    fn put_takes_key_or_file_not_both() {
        let IndexCmd::Put(p) =
            index(&["put", "--key", "https://a/x", "--tag", "t", "--tag", "u", "--ttl", "60s"]).unwrap()
        else {
            panic!("not put")
        };
        assert_eq!(p.tag, ["t", "u"]);
        assert_eq!(p.ttl, Some(Duration::from_secs(60)));
        assert!(index(&["put", "--file", "x.jsonl"]).is_ok());
        assert!(index(&["put"]).is_err());
        assert!(index(&["put", "--key", "k", "--file", "f"]).is_err());
        assert!(index(&["put", "--file", "f", "--tag", "t"]).is_err());
    }

    #[test]
    fn list_needs_exactly_one_filter_count_at_most_one() {
        assert!(index(&["list"]).is_err());
        assert!(index(&["list", "--host", "h", "--tag", "t"]).is_err());
        let IndexCmd::List(l) = index(&["list", "--tag", "t", "--limit", "5"]).unwrap() else { panic!("not list") };
        assert_eq!(filter(l.host, l.tag), Some(EntryFilter::Tag("t".into())));
        assert_eq!(l.limit, 5);
        let IndexCmd::Count(c) = index(&["count"]).unwrap() else { panic!("not count") };
        assert_eq!(filter(c.host, c.tag), None);
        assert!(index(&["count", "--host", "h", "--tag", "t"]).is_err());
    }
}
