//! `GET /status.json`, the status page at `GET /`, and `plasmd status`:
//! what a running plasmd advertises and how it is doing, for pages, people
//! and scripts. Nothing a board must not see: no key material (only the
//! release key's public id), no filesystem paths (only channel/arch and
//! file names).
//!
//! The figures come from the catalog (what is served) and the metrics
//! registry (what happened); this module only reads them, into one
//! [`Status`] that the JSON and the page are both written from.
//!
//! - `page`: the HTML status page;
//! - `client`: `plasmd status`, which reads `/status.json` of a running plasmd.

mod client;
mod page;

use std::sync::Arc;
use std::time::Duration;

use crate::manifest::Catalog;
use crate::metrics::{ChannelArchLabels, Metrics};
use crate::text::json_string;

pub use client::{query, StatusError};
pub use page::refresh_from_query;

/// At most this many problems are listed (the last one says how many more).
pub const MAX_PROBLEMS: usize = 32;

/// What `/status.json` and the page are made from.
pub struct StatusSource {
    pub peer_id: String,
    /// The libp2p addresses peers can reach this plasmd at.
    pub addrs: Vec<String>,
    /// The advertised base URL, e.g. `http://192.0.2.1:8080`.
    pub base_url: String,
    /// A channel/arch not published within twice this (and a minute) is a
    /// problem.
    pub refresh_interval: Duration,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

/// A plasmd's status at one moment.
pub struct Status {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Unix time the status was taken.
    pub now: i64,
    /// Empty when healthy.
    pub problems: Vec<String>,
    pub routing_table_peers: i64,
    pub records_stored: i64,
    pub open_connections: i64,
    /// Responses being sent now.
    pub downloads: i64,
    pub channels: Vec<ChannelStatus>,
}

/// One advertised channel/arch.
pub struct ChannelStatus {
    pub channel: String,
    pub arch: String,
    pub version: String,
    /// With the release key's id, when the manifest is a signed release.
    pub release: Option<(u64, String)>,
    /// A `manifest.json.minisig` is served.
    pub signed: bool,
    /// The manifest URL the DHT record points at.
    pub url: String,
    /// Unix time of the last successful publish.
    pub last_publish: Option<i64>,
    /// Unix time and result (`true`: it worked) of the last put.
    pub last_put: Option<(i64, bool)>,
    /// Name, size and sha256 of each file.
    pub files: Vec<(String, u64, String)>,
}

impl StatusSource {
    /// Reads the status now. Runs on the HTTP loop: it reads the catalog's
    /// cache and atomics only, never the disk.
    pub fn status(&self) -> Status {
        let now = crate::time::unix_now() as i64;
        let late = (self.refresh_interval.as_secs() * 2 + 60) as i64;
        let d = &self.metrics.dht;
        let mut problems = Vec::new();
        let mut channels = Vec::new();
        let manifests = self.catalog.manifests();
        if manifests.is_empty() {
            problems.push("nothing to advertise".to_string());
        }
        for (ca, m) in manifests {
            let labels = ChannelArchLabels {
                channel: ca.channel.clone(),
                arch: ca.arch.clone(),
            };
            let last_publish = d.last_publish_seconds.get(&labels).map(|g| g.get());
            let last_put = d
                .last_put_seconds
                .get(&labels)
                .map(|g| g.get())
                .zip(d.last_put_ok.get(&labels).map(|g| g.get() == 1));
            match last_publish {
                None => problems.push(format!("{ca}: not published in the DHT yet")),
                Some(t) if now - t > late => {
                    problems.push(format!("{ca}: last published {} s ago", now - t))
                }
                Some(_) => {}
            }
            channels.push(ChannelStatus {
                url: crate::manifest::url(&self.base_url, &ca),
                channel: ca.channel,
                arch: ca.arch,
                version: m.version.clone(),
                release: m
                    .release
                    .as_ref()
                    .map(|r| (r.release_seq, r.key_id.clone())),
                signed: m.signature.is_some(),
                last_publish,
                last_put,
                files: m
                    .artifacts
                    .values()
                    .map(|a| (a.name.clone(), a.size, a.sha256.clone()))
                    .collect(),
            });
        }
        // A long list helps nobody and must fit `plasmd status`'s reader.
        if problems.len() > MAX_PROBLEMS {
            let more = problems.len() - (MAX_PROBLEMS - 1);
            problems.truncate(MAX_PROBLEMS - 1);
            problems.push(format!("and {more} more"));
        }
        Status {
            peer_id: self.peer_id.clone(),
            addrs: self.addrs.clone(),
            now,
            problems,
            routing_table_peers: d.routing_table_peers.get(),
            records_stored: d.records_stored.get(),
            open_connections: self.metrics.http.open_connections.get(),
            downloads: self.metrics.http.responses_in_progress.get(),
            channels,
        }
    }
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// The status as a JSON object (`/status.json`).
    pub fn json(&self) -> String {
        let opt = |v: Option<i64>| v.map_or("null".into(), |t| t.to_string());
        let channels: Vec<String> = self
            .channels
            .iter()
            .map(|c| {
                let files: Vec<String> = c
                    .files
                    .iter()
                    .map(|(name, size, sha256)| {
                        format!(
                            "{{\"name\":{},\"size\":{size},\"sha256\":\"{sha256}\"}}",
                            json_string(name)
                        )
                    })
                    .collect();
                let (seq, key) = match &c.release {
                    Some((seq, key)) => (seq.to_string(), json_string(key)),
                    None => ("null".into(), "null".into()),
                };
                format!(
                    "{{\"channel\":{},\"arch\":{},\"version\":{},\"release_seq\":{seq},\"release_key\":{key},\
                     \"signed\":{},\"url\":{},\"last_publish\":{},\"last_put\":{},\"last_put_ok\":{},\
                     \"files\":[{}]}}",
                    json_string(&c.channel),
                    json_string(&c.arch),
                    json_string(&c.version),
                    c.signed,
                    json_string(&c.url),
                    opt(c.last_publish),
                    opt(c.last_put.map(|p| p.0)),
                    c.last_put.map_or("null".into(), |p| p.1.to_string()),
                    files.join(",")
                )
            })
            .collect();
        let list = |v: &[String]| {
            v.iter()
                .map(|p| json_string(p))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{{\"plasmd\":\"{}\",\"peer_id\":{},\"addrs\":[{}],\"now\":{},\"healthy\":{},\"problems\":[{}],\
             \"dht\":{{\"routing_table_peers\":{},\"records_stored\":{}}},\
             \"http\":{{\"open_connections\":{},\"downloads\":{}}},\"channels\":[{}]}}\n",
            env!("CARGO_PKG_VERSION"),
            json_string(&self.peer_id),
            list(&self.addrs),
            self.now,
            self.healthy(),
            list(&self.problems),
            self.routing_table_peers,
            self.records_stored,
            self.open_connections,
            self.downloads,
            channels.join(",")
        )
    }

    /// The status page (`GET /`); `refresh` asks the browser to reload it
    /// every so many seconds.
    pub fn html(&self, refresh: Option<u32>) -> String {
        page::render(self, refresh)
    }
}
