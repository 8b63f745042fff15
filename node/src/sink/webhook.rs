//! Any HTTP endpoint: the purge as a JSON document, confirmed by any 2xx.

use std::collections::BTreeMap;

use async_trait::async_trait;
use purgecast_core::{Mode, Purge, Selector};
use reqwest::{Client, Method};
use serde_json::{json, Value};

use super::http::{send, SinkError};
use super::{Connector, Outcome};

pub struct Webhook {
    pub http: Client,
    /// `{id}` is replaced by the purge id.
    pub url: String,
    pub method: Method,
    pub headers: BTreeMap<String, String>,
}

/// The body every webhook receives (documented in docs/connectors.md).
pub fn body(purge: &Purge) -> Value {
    let selectors: Vec<Value> = purge
        .selectors
        .iter()
        .map(|s| match s {
            Selector::Url(u) => json!({ "url": u }),
            Selector::Host(h) => json!({ "host": h }),
            Selector::Prefix { host, path_prefix } => json!({ "prefix": { "host": host, "path": path_prefix } }),
            Selector::Tag(t) => json!({ "tag": t }),
            Selector::Everything => json!({ "everything": true }),
        })
        .collect();
    json!({
        "id": purge.id.to_string(),
        "origin": purge.origin().to_string(),
        "seq": purge.seq,
        "mode": match purge.mode { Mode::Hard => "hard", Mode::Soft => "soft" },
        "issued_at_ms": purge.issued_at_ms,
        "selectors": selectors,
    })
}

#[async_trait]
impl Connector for Webhook {
    async fn apply(&self, purge: &Purge) -> Result<Outcome, SinkError> {
        let url = self.url.replace("{id}", &purge.id.to_string());
        let mut req = self.http.request(self.method.clone(), &url).json(&body(purge));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        send(format!("{} {url}", self.method), req, |s| s.is_success()).await?;
        Ok(Outcome::default())
    }
}
