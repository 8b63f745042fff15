//! Real caches the sink tests purge: `varnishd`, `nginx` and Apache Traffic
//! Server from their Debian packages, each started on its own loopback port
//! with the configuration shipped in deploy/connectors, in front of a test
//! origin.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Varnish,
    Nginx,
    Ats,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Varnish => "varnishd",
            Kind::Nginx => "nginx",
            Kind::Ats => "traffic_server",
        }
    }

    fn packages(self) -> &'static str {
        match self {
            Kind::Varnish => "varnish varnish-modules",
            Kind::Nginx => "nginx libnginx-mod-http-cache-purge",
            Kind::Ats => "trafficserver",
        }
    }

    pub fn sink_kind(self) -> &'static str {
        match self {
            Kind::Varnish => "varnish",
            Kind::Nginx => "nginx",
            Kind::Ats => "ats",
        }
    }
}

/// Whether `kind` is installed. Outside CI a missing cache skips its tests
/// with a message; in CI (`CI` set) it is an error, since .ci/run installs
/// them.
pub fn available(kind: Kind) -> Result<bool> {
    if locate(kind).is_some() {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!("{} is not installed (apt-get install {}); .ci/run installs it", kind.program(), kind.packages());
    }
    eprintln!("SKIPPED: {} is not installed (apt-get install {})", kind.program(), kind.packages());
    Ok(false)
}

/// The cache's program: on the PATH, or in /usr/sbin (varnishd lives there
/// and a non-login PATH may lack it).
fn locate(kind: Kind) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d: PathBuf| d.join(kind.program()))
        .find(|p| p.is_file())
}

fn template(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/connectors").join(rel)
}

fn render(rel: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut text = std::fs::read_to_string(template(rel)).with_context(|| format!("reading {rel}"))?;
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    Ok(text)
}

/// One running cache process (its own process group, so a freeze or kill
/// reaches its workers too).
pub struct Cache {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    command: (PathBuf, Vec<String>),
    child: Option<Child>,
}

impl Cache {
    /// Starts `kind` in `dir` in front of `origin` (`host:port`).
    pub async fn start(kind: Kind, dir: &Path, origin: &str) -> Result<Cache> {
        // A port can be taken by another process between `free_port` and
        // the cache's bind: the cache then exits, while `wait_listening`
        // may already have reached the other listener. A cache that dies
        // right after it seemed to listen is started again on a new port.
        let mut last = None;
        for _ in 0..3 {
            let mut cache = Cache::start_on(kind, dir, origin, free_port()?).await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
            match cache.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => last = Some(format!("exited ({status}): {}", cache.log())),
                _ => return Ok(cache),
            }
        }
        bail!("{kind:?} did not stay up on three ports: {}", last.unwrap_or_default())
    }

    async fn start_on(kind: Kind, dir: &Path, origin: &str, port: u16) -> Result<Cache> {
        std::fs::create_dir_all(dir)?;
        let (origin_host, origin_port) = origin.rsplit_once(':').context("origin must be host:port")?;
        let vars = [
            ("PORT", port.to_string()),
            ("ORIGIN_HOST", origin_host.to_string()),
            ("ORIGIN_PORT", origin_port.to_string()),
            ("DIR", dir.display().to_string()),
        ];
        let (_, args) = match kind {
            Kind::Varnish => varnish(dir, port, &vars)?,
            Kind::Nginx => nginx(dir, &vars)?,
            Kind::Ats => ats(dir, &vars)?,
        };
        let program = locate(kind).with_context(|| format!("{} is not installed", kind.program()))?;
        let command = (program, args);
        let mut cache = Cache {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            command,
            child: None,
        };
        cache.spawn().await?;
        Ok(cache)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("process.log"))?;
        let (program, args) = &self.command;
        let child = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.child = Some(child);
        self.wait_listening(Duration::from_secs(30)).await
    }

    async fn wait_listening(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!("{:?} exited ({status}): {}", self.kind, self.log());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{:?} did not listen on {} within {limit:?}: {}", self.kind, self.addr, self.log())
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("process.log")).unwrap_or_default();
        text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect()
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the whole process group: a hung
    /// cache that keeps its objects.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let Some(child) = &self.child else { bail!("not running") };
        signal_group(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT })
    }

    /// Kills the cache (its whole process group): connections are refused
    /// until [`Cache::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen group must run again to die.
            let _ = signal_group(&c, libc::SIGCONT);
            let _ = signal_group(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Starts the cache again on the same port, empty.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    /// The `[[sink]]` section that points a node at this cache.
    pub fn sink_toml(&self, name: &str, extra: &[(&str, &str)]) -> String {
        let mut s =
            format!("[[sink]]\nname = \"{name}\"\nkind = \"{}\"\naddress = \"{}\"\n", self.kind.sink_kind(), self.addr);
        if self.kind != Kind::Varnish {
            s.push_str("unsupported = \"skip\"\n");
        }
        for (k, v) in extra {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to the process group `child` leads (it was started with
/// `process_group(0)`, so workers the cache forked are in it too).
fn signal_group(child: &Child, signal: libc::c_int) -> Result<()> {
    let pgid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) with a negative pid signals that process group; it
    // touches no memory of ours.
    if unsafe { libc::kill(-pgid, signal) } != 0 {
        bail!("signal {signal} to process group {pgid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn varnish(dir: &Path, port: u16, vars: &[(&str, String)]) -> Result<(PathBuf, Vec<String>)> {
    let vcl = dir.join("purgecast.vcl");
    std::fs::write(&vcl, render("varnish/purgecast.vcl", vars)?)?;
    let args = [
        "-F".to_string(),
        // No jail: as root varnishd would switch users and then could not
        // read the VCL from a private temporary directory.
        "-j".into(),
        "none".into(),
        "-n".into(),
        dir.join("varnish").display().to_string(),
        "-a".into(),
        format!("127.0.0.1:{port}"),
        "-f".into(),
        vcl.display().to_string(),
        "-s".into(),
        "malloc,64m".into(),
        // No management CLI port: nothing else may listen.
        "-T".into(),
        "none".into(),
    ];
    Ok((PathBuf::from("varnishd"), args.to_vec()))
}

fn nginx(dir: &Path, vars: &[(&str, String)]) -> Result<(PathBuf, Vec<String>)> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, render("nginx/purgecast.conf", vars)?)?;
    let args = [
        "-p".to_string(),
        dir.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        // Before the config is read nginx logs to its compiled-in path.
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-g".into(),
        "daemon off;".into(),
    ];
    Ok((PathBuf::from("nginx"), args.to_vec()))
}

/// Every file of deploy/connectors/ats, rendered into `dir/etc`; the run
/// root (`runroot.yaml`) points every ATS directory into `dir`.
fn ats(dir: &Path, vars: &[(&str, String)]) -> Result<(PathBuf, Vec<String>)> {
    for sub in ["etc", "log", "run", "var", "cache", "data"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for entry in std::fs::read_dir(template("ats"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let text = render(&format!("ats/{name}"), vars)?;
        let to = if name == "runroot.yaml" { dir.join(&name) } else { dir.join("etc").join(&name) };
        std::fs::write(to, text)?;
    }
    let args = [format!("--run-root={}", dir.join("runroot.yaml").display())];
    Ok((PathBuf::from("traffic_server"), args.to_vec()))
}
