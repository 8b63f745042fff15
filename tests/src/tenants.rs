//! Tenants files for tests: zones and tokens, the tokens hashed by the
//! shipped tool (`purgecast tokens hash`), as an operator would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A token a test hands out: its secret and the `[[token]]` lines.
pub struct TestToken {
    pub id: String,
    pub secret: String,
    pub section: String,
}

/// The hash `purgecast tokens hash` prints for `secret`.
pub fn hash(secret: &str) -> Result<String> {
    let mut child = Command::new(crate::bin("purgecast"))
        .args(["tokens", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting purgecast tokens hash")?;
    child.stdin.take().context("stdin")?.write_all(secret.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("tokens hash failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A new token `id` for `zones` with `permissions`, expiring at `expires`
/// (RFC 3339) if given.
pub fn token(id: &str, zones: &[&str], permissions: &[&str], expires: Option<&str>) -> Result<TestToken> {
    let secret = format!("{id}.{:032x}{:032x}", rand_u128(), rand_u128());
    let list = |v: &[&str]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut section = format!(
        "[[token]]\nid = {id:?}\nhash = {:?}\nzones = [{}]\npermissions = [{}]\n",
        hash(&secret)?,
        list(zones),
        list(permissions)
    );
    if let Some(e) = expires {
        section.push_str(&format!("expires = {e:?}\n"));
    }
    Ok(TestToken { id: id.to_string(), secret, section })
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    (u128::from(a) << 64) | u128::from(h.finish())
}

/// A `[[zone]]` section.
pub fn zone(id: &str, hosts: &[&str], limit: Option<(u32, u32)>) -> String {
    let hosts = hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ");
    let limit = limit.map_or(String::new(), |(rate, burst)| format!("rate = {rate}\nburst = {burst}\n"));
    format!("[[zone]]\nid = {id:?}\nhosts = [{hosts}]\n{limit}")
}

/// Writes the file atomically (rename), as a ConfigMap update does, so a
/// node never reads half of it.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
