//! deploy/monitoring's Grafana dashboard and Prometheus alert rules name
//! only series a running node exports: every metric selector of every
//! expression, label values included, is checked against the /metrics of a
//! node that served through its edge, applied a purge, loaded a tenants
//! file and refused a purge over its zone's rate limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use purgecast_proto::api as pb;
use purgecast_tests::http::{self, Origin, Receiver};
use purgecast_tests::metrics::scrape;
use purgecast_tests::monitoring::{dashboard_exprs, problems, rule_exprs, Exposition};
use purgecast_tests::tenants::{write, zone};
use purgecast_tests::{tag, Cluster, Opts};

fn monitoring_file(name: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn dashboard() -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&monitoring_file("purgecast.json")?)?)
}

/// Every expression of the dashboard and the rules, with where it is.
fn all_exprs() -> Result<Vec<(String, String)>> {
    let mut exprs = dashboard_exprs(&dashboard()?);
    exprs.extend(rule_exprs(&monitoring_file("alerts.yml")?)?);
    Ok(exprs)
}

#[test]
fn every_panel_uses_the_datasource_input() -> Result<()> {
    let d = dashboard()?;
    let inputs = d["__inputs"].as_array().context("no __inputs")?;
    assert!(inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"), "{inputs:?}");
    let mut datasources = Vec::new();
    collect_datasources(&d, &mut datasources);
    assert!(datasources.len() > 20, "panels, their targets and the variable name a datasource");
    for ds in datasources {
        assert_eq!(ds["uid"], "${DS_PROMETHEUS}", "{ds}");
    }
    assert!(all_exprs()?.len() > 40, "the dashboard and the rules were read");
    Ok(())
}

fn collect_datasources<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                if k == "datasource" {
                    out.push(child);
                } else {
                    collect_datasources(child, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_datasources(c, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_series_the_dashboard_and_the_alerts_query_is_exported() -> Result<()> {
    let origin = Origin::start(&[]).await?;
    // A sink too (a webhook, the one kind that needs no cache installed),
    // so the sink panels and alerts are checked against its series.
    let hook = Receiver::start(0).await?;
    let sink = format!("[[sink]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{}/purge\"\n", hook.addr);
    // A zone whose bucket holds one purge, so a second one is refused.
    let dir = tempfile::tempdir()?;
    let tenants = dir.path().join("tenants.toml");
    write(&tenants, &zone("site", &["site.test"], Some((1, 1))))?;
    let opts = Opts {
        edge_origin: Some(origin.upstream()),
        node_extra: vec![(0, sink)],
        tenants_file: Some(tenants),
        ..Opts::default()
    };
    let c = Cluster::start(1, opts).await?;
    let edge = c.nodes[0].edge;
    let miss = http::get(edge, "site.test", "/dash/1?tags=dash", &[]).await?;
    assert!(miss.cache().contains("fwd=miss"), "{miss:?}");
    let hit = http::get(edge, "site.test", "/dash/1?tags=dash", &[]).await?;
    assert!(hit.is_hit(), "{hit:?}");
    let client = c.client(0).await?;
    let id = client.purge_in("site", vec![tag("dash")], pb::PurgeMode::Hard).await?.id;
    // The bucket holds one and refills one a second: of ten more sent back
    // to back, however slowly, some are refused.
    let mut limited = None;
    for _ in 0..10 {
        match client.purge_in("site", vec![tag("dash")], pb::PurgeMode::Hard).await {
            Ok(more) => {
                client.wait_complete(&more.id, Duration::from_secs(20), Duration::from_millis(20)).await.map(drop)?
            }
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    let limited = limited.context("ten purges over a bucket of one, none refused")?;
    assert_eq!(limited.code(), Some(tonic::Code::ResourceExhausted), "{limited}");
    client.wait_complete(&id, Duration::from_secs(20), Duration::from_millis(20)).await?;
    let after = http::get(edge, "site.test", "/dash/1?tags=dash", &[]).await?;
    assert!(after.cache().contains("fwd=miss"), "{after:?}");

    let exprs = all_exprs()?;
    // Some gauges are refreshed on the node's own schedule: wait for them,
    // bounded, then report whatever is still missing.
    let start = Instant::now();
    let (exposition, missing) = loop {
        let e = Exposition::parse(&scrape(c.nodes[0].metrics).await?)?;
        let missing = problems(&e, &exprs);
        if missing.is_empty() || start.elapsed() > Duration::from_secs(15) {
            break (e, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "series the monitoring files query but the node does not export:\n{}",
        missing.join("\n")
    );

    // The same check fails on what a mistyped panel or rule would ask for.
    let d = monitoring_file("purgecast.json")?;
    let typo: serde_json::Value =
        serde_json::from_str(&d.replacen("purgecast_edge_fills_total", "purgecast_edge_fill_total", 1))?;
    let found = problems(&exposition, &dashboard_exprs(&typo));
    assert!(found.iter().any(|p| p.contains("purgecast_edge_fill_total is not exported")), "{found:?}");
    for bad in [
        "rate(purgecast_edge_request_total[5m])",
        "histogram_quantile(0.99, rate(purgecast_purge_completion_seconds[5m]))",
        "purgecast_edge_requests_total_count",
        r#"purgecast_edge_requests_total{outcome="hti"}"#,
        r#"purgecast_edge_requests_total{outcome=~"hit|stael"}"#,
        r#"purgecast_members{stat="dead"}"#,
        "sume(rate(purgecast_edge_requests_total[5m]))",
        "1 + 1",
    ] {
        let found = problems(&exposition, &[("test".into(), bad.into())]);
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
    }
    Ok(())
}
