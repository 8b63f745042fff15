//! Reads a node's Prometheus metrics over plain HTTP/1.0.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.context("connecting to the metrics port")?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut body = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_string(&mut body)).await??;
    Ok(body)
}

/// Sum of every sample of `name` (all label sets); 0 if absent.
pub fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `path` on the metrics port: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.context("connecting to the metrics port")?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no HTTP status line")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((code, body))
}

/// Sum of the samples of `name` whose labels include every `(key, value)`.
pub fn labelled(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            let set = l.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or("", |(s, _)| s);
            labels.iter().all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
