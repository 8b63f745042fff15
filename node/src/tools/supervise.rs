//! Process control for `purgecast dev`: stop signals, start-up checks that
//! tell the truth (API up, then membership converged), and stopping every
//! child on the way out, whatever ended the run.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// The signals that end a dev run: Ctrl-C (SIGINT), `kill`/`timeout`
/// (SIGTERM) and a closed terminal (SIGHUP). Created before any child
/// starts, so none of them can kill this process and orphan the nodes.
pub(crate) struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    pub(crate) fn install() -> anyhow::Result<StopSignals> {
        let on = |kind: SignalKind| signal(kind).context("installing a signal handler");
        Ok(StopSignals {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// Resolves with the name of the first signal received.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Makes a child get SIGTERM when this process dies, even by SIGKILL, so a
/// killed `purgecast dev` leaves no node behind (Linux only).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Waits until a TCP port accepts connections, the child exits, or `limit` passes.
pub(crate) async fn wait_port(addr: std::net::SocketAddr, child: &mut Child, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let attempt = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await;
        if matches!(attempt, Ok(Ok(_))) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("node listening on {addr} exited during start-up ({status}); see its log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("node on {addr} did not start within {limit:?}")
}

/// Waits until every node lists all `endpoints.len()` nodes alive, so the
/// cluster announced is the cluster a purge reaches.
pub(crate) async fn wait_converged(endpoints: &[String], token: Option<&str>, limit: Duration) -> anyhow::Result<()> {
    let n = endpoints.len();
    let deadline = Instant::now() + limit;
    let mut clients: Vec<Option<purgecast_client::Client>> = vec![None; n];
    let mut lagging = String::new();
    while Instant::now() < deadline {
        lagging.clear();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match alive_seen(&mut clients[i], endpoint, token).await {
                Ok(alive) if alive == n => {}
                Ok(alive) => lagging.push_str(&format!(" node-{i} sees {alive} of {n} alive;")),
                Err(e) => lagging.push_str(&format!(" node-{i}: {e};")),
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("membership did not converge within {limit:?}:{lagging} see the node logs")
}

async fn alive_seen(
    client: &mut Option<purgecast_client::Client>,
    endpoint: &str,
    token: Option<&str>,
) -> Result<usize, purgecast_client::ClientError> {
    if client.is_none() {
        *client = Some(purgecast_client::Client::connect(endpoint, token.map(str::to_string)).await?);
    }
    let Some(c) = client.as_ref() else { return Ok(0) };
    Ok(c.members().await?.iter().filter(|m| m.state == "alive").count())
}

/// SIGTERM to every child still running (a node leaves the cluster
/// cleanly on it), SIGKILL to any still there after `grace`, and reaps all.
pub(crate) async fn stop_children<'a>(children: impl Iterator<Item = &'a mut Child>, grace: Duration) {
    let mut running: Vec<&mut Child> = children.filter_map(|c| matches!(c.try_wait(), Ok(None)).then_some(c)).collect();
    for child in &running {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet,
            // so it cannot name another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + grace;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for child in running {
        let _ = child.kill();
        let _ = child.wait();
    }
}
