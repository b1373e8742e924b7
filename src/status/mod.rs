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
use serde::Serialize;

pub use client::{query, StatusError};
pub use page::refresh_from_query;

/// A status page rendered without auto-refresh (`Status::html(None)`), as
/// the one that refreshes every `refresh` seconds.
/// `3.0 MiB from peers, 1.0 MiB from origins, 1 bad chunk refused; 5.0 MiB
/// served to boards in 4 requests`: the page's and `plasmd status`'s line.
pub fn chunk_line(c: &ChunkFigures) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut line = format!(
        "{:.1} MiB from peers, {:.1} MiB from origins",
        mib(c.from_peers_bytes),
        mib(c.from_origin_bytes)
    );
    if c.bad > 0 {
        line.push_str(&format!(", {} bad chunk(s) refused", c.bad));
    }
    line.push_str(&format!(
        "; {:.1} MiB served to boards in {} request(s)",
        mib(c.served_bytes),
        c.served_requests
    ));
    line
}

pub fn page_with_refresh(page: &[u8], refresh: Option<u32>) -> Vec<u8> {
    match std::str::from_utf8(page) {
        Ok(p) => page::with_refresh(p, refresh).into_bytes(),
        Err(_) => page.to_vec(),
    }
}

/// At most this many problems are listed (the last one says how many more).
pub const MAX_PROBLEMS: usize = 32;

/// Largest `/status.json` written (`plasmd status` reads up to 64 MiB).
const MAX_STATUS_JSON: usize = 64 * 1024 * 1024;

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
    /// `plasmd serve --netboot` is on: the status says what it answered.
    pub netboot: bool,
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
    pub chunks: ChunkFigures,
    /// With `--netboot`: what firmware asked and got.
    pub netboot: Option<NetbootFigures>,
    pub channels: Vec<ChannelStatus>,
}

/// Firmware network boot (`plasmd serve --netboot`): DHCP requests
/// answered by client type, what TFTP sent, boards seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NetbootFigures {
    pub uefi_pxe: u64,
    pub uefi_http: u64,
    pub raspberry_pi: u64,
    /// DHCP requests that were not ours to answer.
    pub ignored: u64,
    pub boards: u64,
    pub tftp_transfers: u64,
    pub tftp_bytes: u64,
}

/// The netboot figures in one line, for the page and `plasmd status`.
pub fn netboot_line(n: &NetbootFigures) -> String {
    format!(
        "{} board(s) answered: {} UEFI PXE, {} UEFI HTTP, {} Raspberry Pi request(s) ({} other DHCP ignored); TFTP sent {:.1} MiB in {} transfer(s)",
        n.boards,
        n.uefi_pxe,
        n.uefi_http,
        n.raspberry_pi,
        n.ignored,
        n.tftp_bytes as f64 / 1048576.0,
        n.tftp_transfers
    )
}

/// Release chunks this plasmd downloaded (a mirror), by where they came
/// from, and served to boards (see "Boot storms").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChunkFigures {
    pub from_peers_bytes: u64,
    pub from_origin_bytes: u64,
    /// Chunks that did not verify.
    pub bad: u64,
    pub served_bytes: u64,
    pub served_requests: u64,
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
            chunks: {
                let c = &self.metrics.chunks;
                ChunkFigures {
                    from_peers_bytes: c.received_bytes(false),
                    from_origin_bytes: c.received_bytes(true),
                    bad: c.bad.get(),
                    served_bytes: c.served_bytes.get(),
                    served_requests: c.served_requests.get(),
                }
            },
            netboot: self.netboot.then(|| {
                let n = &self.metrics.netboot;
                NetbootFigures {
                    uefi_pxe: n.requests_from("uefi_pxe"),
                    uefi_http: n.requests_from("uefi_http"),
                    raspberry_pi: n.requests_from("raspberry_pi"),
                    ignored: n.requests_from(crate::metrics::NetbootMetrics::OTHER),
                    boards: n.boards.get(),
                    tftp_transfers: n.tftp_transfers.get(),
                    tftp_bytes: n.tftp_bytes.get(),
                }
            }),
            channels,
        }
    }
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// The status as a JSON object (`/status.json`), one line.
    pub fn json(&self) -> String {
        let wire = WireStatus {
            plasmd: env!("CARGO_PKG_VERSION"),
            peer_id: &self.peer_id,
            addrs: &self.addrs,
            now: self.now,
            healthy: self.healthy(),
            problems: &self.problems,
            dht: WireDht {
                routing_table_peers: self.routing_table_peers,
                records_stored: self.records_stored,
            },
            http: WireHttp {
                open_connections: self.open_connections,
                downloads: self.downloads,
            },
            chunks: self.chunks,
            netboot: self.netboot,
            channels: self
                .channels
                .iter()
                .map(|c| WireChannel {
                    channel: &c.channel,
                    arch: &c.arch,
                    version: &c.version,
                    release_seq: c.release.as_ref().map(|r| r.0),
                    release_key: c.release.as_ref().map(|r| r.1.as_str()),
                    signed: c.signed,
                    url: &c.url,
                    last_publish: c.last_publish,
                    last_put: c.last_put.map(|p| p.0),
                    last_put_ok: c.last_put.map(|p| p.1),
                    files: c
                        .files
                        .iter()
                        .map(|(name, size, sha256)| WireFile {
                            name,
                            size: *size,
                            sha256,
                        })
                        .collect(),
                })
                .collect(),
        };
        // Bounded so a runaway catalog cannot take all memory; far above
        // what 256 channel/archs of 4,096 files need.
        match crate::text::to_json(&wire, MAX_STATUS_JSON) {
            Some(json) => json + "\n",
            None => "{\"error\":\"status too large\"}\n".into(),
        }
    }

    /// The status page (`GET /`); `refresh` asks the browser to reload it
    /// every so many seconds.
    pub fn html(&self, refresh: Option<u32>) -> String {
        page::render(self, refresh)
    }
}

/// `/status.json` as written: field names and order are its wire format
/// (`plasmd status`, dashboards and scripts read it).
#[derive(Serialize)]
struct WireStatus<'a> {
    plasmd: &'static str,
    peer_id: &'a str,
    addrs: &'a [String],
    now: i64,
    healthy: bool,
    problems: &'a [String],
    dht: WireDht,
    http: WireHttp,
    chunks: ChunkFigures,
    #[serde(skip_serializing_if = "Option::is_none")]
    netboot: Option<NetbootFigures>,
    channels: Vec<WireChannel<'a>>,
}

#[derive(Serialize)]
struct WireDht {
    routing_table_peers: i64,
    records_stored: i64,
}

#[derive(Serialize)]
struct WireHttp {
    open_connections: i64,
    downloads: i64,
}

#[derive(Serialize)]
struct WireChannel<'a> {
    channel: &'a str,
    arch: &'a str,
    version: &'a str,
    release_seq: Option<u64>,
    release_key: Option<&'a str>,
    signed: bool,
    url: &'a str,
    last_publish: Option<i64>,
    last_put: Option<i64>,
    last_put_ok: Option<bool>,
    files: Vec<WireFile<'a>>,
}

#[derive(Serialize)]
struct WireFile<'a> {
    name: &'a str,
    size: u64,
    sha256: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_keeps_its_wire_form() {
        let mut s = Status {
            peer_id: "12D3KooW".into(),
            addrs: vec!["/ip4/192.0.2.1/tcp/4001".into()],
            now: 1_795_345_200,
            problems: vec![],
            routing_table_peers: 3,
            records_stored: 2,
            open_connections: 5,
            downloads: 1,
            chunks: ChunkFigures {
                from_peers_bytes: 3 << 20,
                from_origin_bytes: 1 << 20,
                bad: 1,
                served_bytes: 5 << 20,
                served_requests: 4,
            },
            netboot: Some(NetbootFigures {
                uefi_pxe: 2,
                uefi_http: 1,
                raspberry_pi: 0,
                ignored: 9,
                boards: 3,
                tftp_transfers: 2,
                tftp_bytes: 7,
            }),
            channels: vec![
                ChannelStatus {
                    channel: "stable".into(),
                    arch: "arm64".into(),
                    version: "2026.11 \"lts\"".into(),
                    release: Some((7, "0123456789abcdef".into())),
                    signed: true,
                    url: "http://192.0.2.1:8080/stable/arm64/manifest.json".into(),
                    last_publish: Some(1_795_345_100),
                    last_put: Some((1_795_345_150, false)),
                    files: vec![("vmlinuz".into(), 6, "ab".repeat(32))],
                },
                ChannelStatus {
                    channel: "beta".into(),
                    arch: "arm64".into(),
                    version: "v".into(),
                    release: None,
                    signed: false,
                    url: "u".into(),
                    last_publish: None,
                    last_put: None,
                    files: vec![],
                },
            ],
        };
        let expected = format!(
            "{{\"plasmd\":\"{}\",\"peer_id\":\"12D3KooW\",\"addrs\":[\"/ip4/192.0.2.1/tcp/4001\"],\
             \"now\":1795345200,\"healthy\":true,\"problems\":[],\
             \"dht\":{{\"routing_table_peers\":3,\"records_stored\":2}},\
             \"http\":{{\"open_connections\":5,\"downloads\":1}},\
             \"chunks\":{{\"from_peers_bytes\":3145728,\"from_origin_bytes\":1048576,\"bad\":1,\
             \"served_bytes\":5242880,\"served_requests\":4}},\
             \"netboot\":{{\"uefi_pxe\":2,\"uefi_http\":1,\"raspberry_pi\":0,\"ignored\":9,\
             \"boards\":3,\"tftp_transfers\":2,\"tftp_bytes\":7}},\"channels\":[\
             {{\"channel\":\"stable\",\"arch\":\"arm64\",\"version\":\"2026.11 \\\"lts\\\"\",\
             \"release_seq\":7,\"release_key\":\"0123456789abcdef\",\"signed\":true,\
             \"url\":\"http://192.0.2.1:8080/stable/arm64/manifest.json\",\
             \"last_publish\":1795345100,\"last_put\":1795345150,\"last_put_ok\":false,\
             \"files\":[{{\"name\":\"vmlinuz\",\"size\":6,\"sha256\":\"{}\"}}]}},\
             {{\"channel\":\"beta\",\"arch\":\"arm64\",\"version\":\"v\",\"release_seq\":null,\
             \"release_key\":null,\"signed\":false,\"url\":\"u\",\"last_publish\":null,\
             \"last_put\":null,\"last_put_ok\":null,\"files\":[]}}]}}\n",
            env!("CARGO_PKG_VERSION"),
            "ab".repeat(32)
        );
        assert_eq!(s.json(), expected);
        // Without --netboot, no netboot object at all.
        s.netboot = None;
        assert!(!s.json().contains("netboot"));
    }
}
