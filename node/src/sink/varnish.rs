//! Varnish, through the VCL in deploy/connectors/varnish/purgecast.vcl:
//! URLs by `PURGE` (soft through vmod purge), tags by xkey, hosts,
//! prefixes and everything by bans.

use async_trait::async_trait;
use purgecast_core::{parse_url, Mode, Purge, Selector};
use reqwest::Client;

use super::http::{method, send, SinkError};
use super::{Connector, Outcome};

pub struct Varnish {
    pub http: Client,
    /// `http://host:port` of varnishd.
    pub base: String,
}

impl Varnish {
    fn purge_url(&self, url: &str, soft: bool) -> Result<reqwest::RequestBuilder, SinkError> {
        let key = parse_url(url).map_err(|e| SinkError::Client(e.to_string()))?;
        let mut req = self.http.request(method("PURGE"), format!("{}{}", self.base, key.path)).header("host", key.host);
        if soft {
            req = req.header("purgecast-soft", "1");
        }
        Ok(req)
    }

    fn ban(&self) -> reqwest::RequestBuilder {
        self.http.request(method("BAN"), format!("{}/", self.base))
    }
}

#[async_trait]
impl Connector for Varnish {
    async fn apply(&self, purge: &Purge) -> Result<Outcome, SinkError> {
        let soft = purge.mode == Mode::Soft;
        let mut tags = Vec::new();
        for sel in &purge.selectors {
            match sel {
                Selector::Url(u) => send(format!("PURGE {u}"), self.purge_url(u, soft)?, |s| s.is_success()).await?,
                Selector::Tag(t) => tags.push(t.as_str()),
                // Bans are hard: Varnish has no soft ban. A soft host purge
                // therefore empties the host, which is never less safe.
                Selector::Host(h) => {
                    let req = self.ban().header("purgecast-ban-host", h);
                    send(format!("BAN host {h}"), req, |s| s.is_success()).await?
                }
                Selector::Prefix { host, path_prefix } => {
                    let req = self
                        .ban()
                        .header("purgecast-ban-host", host)
                        .header("purgecast-ban-prefix", regex::escape(path_prefix));
                    send(format!("BAN prefix {host}{path_prefix}"), req, |s| s.is_success()).await?
                }
                Selector::Everything => {
                    let req = self.ban().header("purgecast-ban-all", "1");
                    send("BAN everything".into(), req, |s| s.is_success()).await?
                }
            }
        }
        // All tags of a purge in one xkey request (xkey takes a list).
        for chunk in tags.chunks(64) {
            let mut req =
                self.http.request(method("PURGE"), format!("{}/", self.base)).header("xkey-purge", chunk.join(" "));
            if soft {
                req = req.header("purgecast-soft", "1");
            }
            send(format!("PURGE xkey {}", chunk.join(" ")), req, |s| s.is_success()).await?;
        }
        Ok(Outcome::default())
    }

    /// Tags and bans skip objects being fetched; URL purges through the
    /// shipped VCL look the object up and wait for a fetch in flight, so
    /// they need no second round.
    fn repeat_of(&self, purge: &Purge) -> Option<Purge> {
        super::only(purge, |s| !matches!(s, Selector::Url(_)))
    }
}
