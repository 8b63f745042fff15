//! HTTP for the edge tests: a small HTTP/1.1 client that speaks over a raw
//! socket (so tests can also send what a real client never would), and the
//! `purgecast origin` test origin as a child process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest any single request may take in a test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Cache-Status` header, or "" when absent.
    pub fn cache(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    pub fn is_hit(&self) -> bool {
        self.cache().split(';').any(|p| p.trim() == "hit") && !self.cache().contains("fwd=")
    }
}

/// Sends raw bytes and reads one response (the connection is closed
/// after it).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Result<Response> {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        s.write_all(request).await?;
        read_response(&mut BufReader::new(s)).await
    })
    .await
    .map_err(|_| anyhow!("no response from {addr} within {TIMEOUT:?}"))?
}

/// GET `path` with a Host header and extra headers.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(addr, "GET", host, path, headers).await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

async fn read_response(r: &mut BufReader<TcpStream>) -> Result<Response> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..200 {
        line.clear();
        r.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| anyhow!("bad header line {l:?}"))?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        headers.entry(k).and_modify(|old| *old = format!("{old}, {v}")).or_insert(v);
    }
    let mut body = Vec::new();
    let chunked = headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked"));
    if chunked {
        for _ in 0..100_000 {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    } else if status != 304 && status != 204 {
        r.read_to_end(&mut body).await?;
    }
    Ok(Response { status, headers, body })
}

/// `purgecast origin` on a free loopback port, killed on drop.
pub struct Origin {
    pub addr: SocketAddr,
    child: Child,
}

impl Origin {
    pub async fn start(args: &[&str]) -> Result<Origin> {
        let mut child = Command::new(crate::bin("purgecast"))
            .arg("origin")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning purgecast origin")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("origin has no stdout"))?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(20), line).await.context("origin did not start")???;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("origin printed {line:?}"))?;
        Ok(Origin { addr, child })
    }

    /// `host:port` for the edge's `default_origin`.
    pub fn upstream(&self) -> String {
        self.addr.to_string()
    }

    async fn control(&self, method: &str, path: &str) -> Result<serde_json::Value> {
        let r = request(self.addr, method, "origin.test", path, &[]).await?;
        if r.status != 200 {
            bail!("origin {method} {path}: {} {}", r.status, r.text());
        }
        Ok(serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
    }

    /// Requests the origin got for `path` (and how many were conditional).
    pub async fn hits(&self, path: &str) -> Result<(u64, u64)> {
        let v = self.control("GET", &format!("/__origin/hits?path={path}")).await?;
        Ok((v["hits"].as_u64().unwrap_or(0), v["conditional"].as_u64().unwrap_or(0)))
    }

    pub async fn bump(&self) -> Result<()> {
        self.control("POST", "/__origin/bump").await.map(drop)
    }

    pub async fn gate(&self, closed: bool) -> Result<()> {
        self.control("POST", if closed { "/__origin/gate/close" } else { "/__origin/gate/open" }).await.map(drop)
    }

    /// Requests held at the closed gate.
    pub async fn waiting(&self) -> Result<u64> {
        Ok(self.control("GET", "/__origin/gate").await?["waiting"].as_u64().unwrap_or(0))
    }

    /// Waits until a request is held at the closed gate.
    pub async fn wait_held(&self, limit: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        while self.waiting().await? == 0 {
            if start.elapsed() > limit {
                bail!("no request reached the origin within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Every object request answers `status` (0 = normal again).
    pub async fn fail(&self, status: u16) -> Result<()> {
        self.control("POST", &format!("/__origin/fail?status={status}")).await.map(drop)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook endpoint that records the requests it is sent (head and JSON
/// body); it refuses the first
/// `refuse` requests with 503, so the sink must retry.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Receiver {
    pub async fn start(refuse: usize) -> Result<Receiver> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        tokio::spawn(async move {
            let mut served = 0usize;
            while let Ok((sock, _)) = listener.accept().await {
                let mut r = BufReader::new(sock);
                // One request per connection is enough: answer and close.
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; len.min(1 << 20)];
                if r.read_exact(&mut body).await.is_err() {
                    continue;
                }
                served += 1;
                let status = if served <= refuse { "503 Service Unavailable" } else { "200 OK" };
                if served > refuse {
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    seen.lock().unwrap().push((head, json));
                }
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = r.get_mut().write_all(reply.as_bytes()).await;
            }
        });
        Ok(Receiver { addr, got })
    }
}
