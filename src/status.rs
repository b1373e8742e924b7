//! `GET /status.json` and `plasmd status`: what a running plasmd
//! advertises and how it is doing, for people (the command line) and
//! pages. Nothing a board must not see: no key material (only the release
//! key's public id), no filesystem paths (only channel/arch and file names).
//!
//! The figures come from the catalog (what is served) and the metrics
//! registry (what happened); this module only reads them.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::manifest::{json_string, Catalog};
use crate::metrics::{ChannelArchLabels, Metrics};

/// What `/status.json` is made from.
pub struct StatusSource {
    pub peer_id: String,
    /// The advertised base URL, e.g. `http://192.0.2.1:8080`.
    pub base_url: String,
    /// A channel/arch not published within twice this (and a minute) is a
    /// problem.
    pub refresh_interval: Duration,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

impl StatusSource {
    /// The status as a JSON object.
    pub fn json(&self) -> String {
        let now = crate::record::unix_now() as i64;
        let late = (self.refresh_interval.as_secs() * 2 + 60) as i64;
        let mut problems = Vec::new();
        let mut channels = Vec::new();
        // From the catalog's cache: this runs on the HTTP loop, which must
        // not wait on the disk (a directory that failed to scan is in the log).
        let manifests = self.catalog.manifests();
        if manifests.is_empty() {
            problems.push("nothing to advertise".to_string());
        }
        for (ca, m) in manifests {
            let published = self
                .metrics
                .dht
                .last_publish_seconds
                .get(&ChannelArchLabels {
                    channel: ca.channel.clone(),
                    arch: ca.arch.clone(),
                })
                .map(|g| g.get());
            match published {
                None => problems.push(format!("{ca}: not published in the DHT yet")),
                Some(t) if now - t > late => {
                    problems.push(format!("{ca}: last published {} s ago", now - t))
                }
                Some(_) => {}
            }
            let files: Vec<String> = m
                .artifacts
                .values()
                .map(|a| {
                    format!(
                        "{{\"name\":{},\"size\":{},\"sha256\":\"{}\"}}",
                        json_string(&a.name),
                        a.size,
                        a.sha256
                    )
                })
                .collect();
            let (seq, key) = match &m.release {
                Some(r) => (r.release_seq.to_string(), json_string(&r.key_id)),
                None => ("null".into(), "null".into()),
            };
            channels.push(format!(
                "{{\"channel\":{},\"arch\":{},\"version\":{},\"release_seq\":{seq},\"release_key\":{key},\
                 \"signed\":{},\"url\":{},\"last_publish\":{},\"files\":[{}]}}",
                json_string(&ca.channel),
                json_string(&ca.arch),
                json_string(&m.version),
                m.signature.is_some(),
                json_string(&crate::publisher::Publisher::url(&self.base_url, &ca)),
                published.map_or("null".into(), |t| t.to_string()),
                files.join(",")
            ));
        }
        let d = &self.metrics.dht;
        let problems: Vec<String> = problems.iter().map(|p| json_string(p)).collect();
        format!(
            "{{\"plasmd\":\"{}\",\"peer_id\":{},\"healthy\":{},\"problems\":[{}],\
             \"dht\":{{\"routing_table_peers\":{},\"records_stored\":{}}},\
             \"http\":{{\"open_connections\":{}}},\"channels\":[{}]}}\n",
            env!("CARGO_PKG_VERSION"),
            json_string(&self.peer_id),
            problems.is_empty(),
            problems.join(","),
            d.routing_table_peers.get(),
            d.records_stored.get(),
            self.metrics.http.open_connections.get(),
            channels.join(",")
        )
    }
}

/// Errors of `plasmd status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("{0}: not a plasmd status ({1})")]
    Parse(String, String),
}

#[derive(Deserialize)]
struct WireStatus {
    plasmd: heapless::String<32>,
    peer_id: heapless::String<128>,
    healthy: bool,
    problems: heapless::Vec<heapless::String<256>, 64>,
    dht: WireDht,
    http: WireHttp,
    channels: Channels,
}

/// The channel list, read one element at a time onto the heap (a fixed
/// array of 256 would not fit a thread's stack), at most 256.
struct Channels(Vec<WireChannel>);

impl<'de> Deserialize<'de> for Channels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Channels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of channels")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Channels, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = seq.next_element()? {
                    if out.len() == 256 {
                        return Err(serde::de::Error::custom("more than 256 channels"));
                    }
                    out.push(c);
                }
                Ok(Channels(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct WireDht {
    routing_table_peers: i64,
    records_stored: i64,
}

#[derive(Deserialize)]
struct WireHttp {
    open_connections: i64,
}

#[derive(Deserialize)]
struct WireChannel {
    channel: heapless::String<64>,
    arch: heapless::String<64>,
    version: heapless::String<128>,
    release_seq: Option<u64>,
    url: heapless::String<1024>,
    last_publish: Option<i64>,
}

/// `plasmd status`: asks the plasmd at `base` (e.g. `http://127.0.0.1:8080`)
/// and returns the table to print and whether it is healthy.
pub fn query(base: &str) -> Result<(String, bool), StatusError> {
    let url = format!("{}/status.json", base.trim_end_matches('/'));
    let body = crate::fetch::get_text(&url, 1024 * 1024)?;
    let mut unescape = vec![0u8; 4096];
    let (s, _): (WireStatus, usize) = serde_json_core::from_slice_escaped(&body, &mut unescape)
        .map_err(|e| StatusError::Parse(url.clone(), e.to_string()))?;
    let now = crate::record::unix_now() as i64;
    let mut out = format!(
        "plasmd {} at {base}, peer {}: {}\nDHT: {} peer(s) in the routing table, {} record(s) stored; HTTP: {} connection(s) open\n",
        s.plasmd,
        s.peer_id,
        if s.healthy { "healthy" } else { "UNHEALTHY" },
        s.dht.routing_table_peers,
        s.dht.records_stored,
        s.http.open_connections
    );
    out.push_str(&format!(
        "{:<24} {:<18} {:>12} {:>14}  {}\n",
        "CHANNEL/ARCH", "VERSION", "RELEASE_SEQ", "PUBLISHED", "URL"
    ));
    for c in &s.channels.0 {
        let published = c
            .last_publish
            .map_or_else(|| "never".to_string(), |t| format!("{} s ago", now - t));
        out.push_str(&format!(
            "{:<24} {:<18} {:>12} {:>14}  {}\n",
            format!("{}/{}", c.channel, c.arch),
            c.version.as_str(),
            c.release_seq
                .map_or_else(|| "unsigned".into(), |n| n.to_string()),
            published,
            c.url
        ));
    }
    for p in &s.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    Ok((out, s.healthy))
}
