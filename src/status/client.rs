//! `plasmd status`: reads `/status.json` of a running plasmd (this version
//! or an older one: fields added later are optional) and prints a compact
//! table. The answer is untrusted input: sizes are bounded by the types.

use serde::Deserialize;

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
    problems: heapless::Vec<heapless::String<256>, { super::MAX_PROBLEMS }>,
    dht: WireDht,
    http: WireHttp,
    #[serde(default)]
    chunks: Option<super::ChunkFigures>,
    #[serde(default)]
    netboot: Option<super::NetbootFigures>,
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
    #[serde(default)]
    downloads: i64,
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
    // Each file of each channel/arch is listed (about 150 bytes each): room
    // for a large catalog.
    let body = crate::fetch::get_text(&url, 64 * 1024 * 1024)?;
    let mut unescape = vec![0u8; 4096];
    let (s, _): (WireStatus, usize) = serde_json_core::from_slice_escaped(&body, &mut unescape)
        .map_err(|e| StatusError::Parse(url.clone(), e.to_string()))?;
    let now = crate::time::unix_now() as i64;
    let mut out = format!(
        "plasmd {} at {base}, peer {}: {}\nDHT: {} peer(s) in the routing table, {} record(s) stored; \
         HTTP: {} connection(s) open, {} download(s) in progress\n",
        s.plasmd,
        s.peer_id,
        if s.healthy { "healthy" } else { "UNHEALTHY" },
        s.dht.routing_table_peers,
        s.dht.records_stored,
        s.http.open_connections,
        s.http.downloads
    );
    out.push_str(&format!(
        "{:<24} {:<18} {:>12} {:>14}  {}\n",
        "CHANNEL/ARCH", "VERSION", "RELEASE_SEQ", "PUBLISHED", "URL"
    ));
    for c in &s.channels.0 {
        let published = c.last_publish.map_or_else(
            || "never".to_string(),
            |t| format!("{} s ago", now.saturating_sub(t)),
        );
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
    // Older plasmds say nothing of chunks.
    if let Some(c) = &s.chunks {
        out.push_str(&format!("Release chunks: {}\n", super::chunk_line(c)));
    }
    if let Some(n) = &s.netboot {
        out.push_str(&format!("Netboot: {}\n", super::netboot_line(n)));
    }
    for p in &s.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    // Every string came from the network: nothing in it may drive the
    // terminal.
    let out = out
        .lines()
        .map(|l| crate::text::printable(l) + "\n")
        .collect();
    Ok((out, s.healthy))
}
