//! `purgecast tokens`: make a token and the tenants-file lines that grant
//! it, or hash one an operator already has. The secret is printed once and
//! stored nowhere.

use std::io::Read as _;

use clap::{Args, Subcommand};

use crate::tenants::{parse_time, tokens, Permission};

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Generate a token: prints it once on standard output, and the
    /// [[token]] section to add to the tenants file on standard error.
    Create(CreateArgs),
    /// Print the hash of a token read from standard input.
    Hash,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Public token id (a-z, 0-9, '-', '_'): shown in logs and the audit log.
    #[arg(long)]
    pub id: String,
    /// Zone the token reaches (repeat for several; `*` = every zone).
    #[arg(long = "zone", required = true)]
    pub zones: Vec<String>,
    /// purge, purge_everything, index:read, index:write or admin (repeatable).
    #[arg(long = "permission", required = true)]
    pub permissions: Vec<String>,
    /// RFC 3339 time after which the token is refused.
    #[arg(long)]
    pub expires: Option<String>,
}

fn permission(s: &str) -> anyhow::Result<Permission> {
    let quoted = format!("{s:?}");
    serde_json::from_str(&quoted).map_err(|_| {
        anyhow::anyhow!("unknown permission {s:?} (purge, purge_everything, index:read, index:write, admin)")
    })
}

/// The `[[token]]` section for a token with this hash.
pub fn section(args: &CreateArgs, hash: &str) -> anyhow::Result<String> {
    if !tokens::valid_id(&args.id) {
        anyhow::bail!("token id {:?} must be 1 to 64 of a-z, 0-9, '-', '_'", args.id);
    }
    let perms = args.permissions.iter().map(|p| permission(p)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(e) = &args.expires {
        parse_time(e).ok_or_else(|| anyhow::anyhow!("--expires {e:?} is not an RFC 3339 time"))?;
    }
    let list = |v: Vec<String>| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "[[token]]\nid = {:?}\nhash = {hash:?}\nzones = [{}]\npermissions = [{}]\n",
        args.id,
        list(args.zones.clone()),
        list(perms.iter().map(|p| p.as_str().to_string()).collect())
    );
    if let Some(e) = &args.expires {
        out.push_str(&format!("expires = {e:?}\n"));
    }
    Ok(out)
}

pub fn run(cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create(args) => {
            // The token on stdout, the section for the tenants file on
            // stderr: `> token 2>> tenants.toml` files each where it goes.
            let token = tokens::generate(&args.id);
            let section = section(&args, &tokens::hash_string(&token))?;
            println!("{token}");
            eprint!("# made by `purgecast tokens create`; the token itself is stored nowhere\n{section}");
            Ok(())
        }
        TokensCmd::Hash => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!("no token on standard input");
            }
            println!("{}", tokens::hash_string(token));
            Ok(())
        }
    }
}
