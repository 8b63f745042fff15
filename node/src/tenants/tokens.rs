//! API tokens: a public id, a secret the node only ever sees hashed, the
//! zones and permissions it grants, and an optional expiry.
//!
//! A token as a client presents it is `<id>.<secret>`. The file stores
//! `sha256:<hex of SHA-256 of the whole token>`: the secret is 256 random
//! bits, so a fast hash is enough (no password stretching needed), and a
//! leaked file or log line gives nothing to present.

use std::collections::{BTreeSet, HashMap};

use ring::digest::{digest, SHA256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Purge URLs, hosts, prefixes and tags of its zones.
    Purge,
    /// Purge everything of one of its zones.
    PurgeEverything,
    /// Read the index (list, count) of its zones.
    #[serde(rename = "index:read")]
    IndexRead,
    /// Write the index (put) of its zones.
    #[serde(rename = "index:write")]
    IndexWrite,
    /// Everything, in every zone, including purging the whole cluster and
    /// reading the audit log of every zone.
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Purge => "purge",
            Permission::PurgeEverything => "purge_everything",
            Permission::IndexRead => "index:read",
            Permission::IndexWrite => "index:write",
            Permission::Admin => "admin",
        }
    }
}

/// Which zones a token reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneScope {
    All,
    Only(BTreeSet<String>),
}

/// One token as the node keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    /// SHA-256 of the presented token.
    pub hash: [u8; 32],
    pub zones: ZoneScope,
    pub permissions: BTreeSet<Permission>,
    /// Unix seconds after which the token is refused; None = never.
    pub expires_at: Option<u64>,
}

impl Token {
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&Permission::Admin) || self.permissions.contains(&p)
    }
}

/// Why a presented token was refused. Says nothing of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token (Authorization: Bearer <token>)")]
    Missing,
    #[error("unknown or invalid token")]
    Invalid,
    #[error("token {0} has expired")]
    Expired(String),
}

impl AuthError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Invalid => "unauthenticated",
            AuthError::Expired(_) => "expired",
        }
    }
}

/// The tokens of one tenants file, by id.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_id: HashMap<String, Token>,
}

/// The valid characters of a token id: it is shown in logs, metrics and
/// the audit log, and separated from the secret by the last '.'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn hash(token: &str) -> [u8; 32] {
    let d = digest(&SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The file's form of a hash.
pub fn hash_string(token: &str) -> String {
    format!("sha256:{}", hex::encode(hash(token)))
}

/// Parses `sha256:<64 hex>`.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex).ok()?;
    bytes.try_into().ok()
}

/// A new token for `id`: `<id>.<64 hex chars of randomness>`.
pub fn generate(id: &str) -> String {
    let secret: [u8; 32] = rand::random();
    format!("{id}.{}", hex::encode(secret))
}

/// Compares without an early exit.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens { by_id: tokens.into_iter().map(|t| (t.id.clone(), t)).collect() }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The token `presented` is, if it is one of these and not expired at
    /// `now_secs`.
    pub fn authenticate(&self, presented: &str, now_secs: u64) -> Result<&Token, AuthError> {
        let (id, _) = presented.rsplit_once('.').ok_or(AuthError::Invalid)?;
        let token = self.by_id.get(id).ok_or(AuthError::Invalid)?;
        if !constant_time_eq(&hash(presented), &token.hash) {
            return Err(AuthError::Invalid);
        }
        if token.expires_at.is_some_and(|at| now_secs >= at) {
            return Err(AuthError::Expired(token.id.clone()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, secret: &str) -> Token {
        Token {
            id: id.into(),
            hash: hash(secret),
            zones: ZoneScope::Only(["shop".to_string()].into()),
            permissions: [Permission::Purge].into(),
            expires_at: Some(100),
        }
    }

    #[test]
    fn a_token_authenticates_only_with_its_whole_secret_and_until_it_expires() {
        let secret = generate("ci");
        let tokens = Tokens::new(vec![token("ci", &secret)]);
        assert_eq!(tokens.authenticate(&secret, 99).map(|t| t.id.as_str()), Ok("ci"));
        assert_eq!(tokens.authenticate(&secret, 100), Err(AuthError::Expired("ci".into())));
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(tokens.authenticate(&wrong, 0), Err(AuthError::Invalid));
        assert_eq!(tokens.authenticate("other.abc", 0), Err(AuthError::Invalid));
        assert_eq!(tokens.authenticate("no-dot", 0), Err(AuthError::Invalid));
    }

    #[test]
    fn hashes_round_trip_through_their_file_form() {
        let s = hash_string("ci.abc");
        assert_eq!(parse_hash(&s), Some(hash("ci.abc")));
        assert_eq!(parse_hash("sha256:zz"), None);
        assert_eq!(parse_hash("md5:00"), None);
    }

    #[test]
    fn admin_allows_every_permission() {
        let mut t = token("a", "a.x");
        assert!(t.allows(Permission::Purge) && !t.allows(Permission::PurgeEverything));
        t.permissions.insert(Permission::Admin);
        assert!(t.allows(Permission::PurgeEverything) && t.allows(Permission::IndexWrite));
    }
}
