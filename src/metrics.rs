//! Prometheus metrics: one registry per process, filled by the tasks that
//! see what happens (the HTTP loop, the DHT task, the publisher) and
//! written out in the Prometheus text format for `GET /metrics`.
//!
//! Names follow the Prometheus conventions: a `plasmd_` prefix, base units
//! (seconds, bytes), `_total` on counters, `plasmd_build_info` as an info
//! gauge. libp2p's own swarm, Kademlia, Identify and Ping figures are
//! registered by `libp2p-metrics` under `libp2p_`. Recording is lock-free
//! (atomics); this module does no I/O.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `manifest`, `signature`, `artifact`, `healthz`, `metrics`, `status`
    /// (`/status.json` and the page), `other`.
    pub route: &'static str,
    pub status: u16,
}

/// A one-word label (`reason`, `kind`, `result`, `check`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Always one of a fixed set of words: no allocation per event, and
    /// nothing from the network can grow the family.
    pub reason: &'static str,
}

/// A channel/arch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelArchLabels {
    pub channel: String,
    pub arch: String,
}

/// What is advertised for a channel/arch (an info gauge, value 1).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdvertLabels {
    pub channel: String,
    pub arch: String,
    pub version: String,
    /// Empty when the manifest is not a signed release.
    pub release_seq: String,
}

/// Where verified chunk bytes came from: `origin` or `peer`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// Chunks of releases (see "Boot storms"): those this process downloaded,
/// verified, by where they came from, and those it served to other boards.
#[derive(Default)]
pub struct ChunkMetrics {
    pub received: Family<SourceLabel, Counter>,
    pub received_bytes: Family<SourceLabel, Counter>,
    /// Chunks that did not verify (each dropped its source).
    pub bad: Counter,
    /// Chunk requests answered (a `Range` of the chunk engine, on the tree
    /// or under `/_release/`), and their body bytes.
    pub served_requests: Counter,
    pub served_bytes: Counter,
}

impl ChunkMetrics {
    fn label(origin: bool) -> SourceLabel {
        SourceLabel {
            source: if origin { "origin" } else { "peer" },
        }
    }

    /// Counts one verified chunk of `bytes` from an origin or a peer.
    pub fn received(&self, origin: bool, bytes: u64) {
        self.received.get_or_create(&Self::label(origin)).inc();
        self.received_bytes
            .get_or_create(&Self::label(origin))
            .inc_by(bytes);
    }

    /// Verified bytes received so far from origins (`true`) or peers.
    pub fn received_bytes(&self, origin: bool) -> u64 {
        self.received_bytes
            .get(&Self::label(origin))
            .map_or(0, |c| c.get())
    }

    /// Counts one chunk request answered with `bytes` of body.
    pub fn served(&self, bytes: u64) {
        self.served_requests.inc();
        self.served_bytes.inc_by(bytes);
    }
}

/// A netboot client's kind (`netboot::proxy::Firmware`, or `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabel {
    pub client: &'static str,
}

/// Firmware network boot (`plasmd serve --netboot`): the ProxyDHCP's
/// answers by client type, what TFTP sent, and the boards that came.
#[derive(Default, Clone)]
pub struct NetbootMetrics {
    /// DHCP requests answered, by client type; `other`: not ours, ignored.
    pub requests: Family<ClientLabel, Counter>,
    /// TFTP transfers finished, and the bytes TFTP sent.
    pub tftp_transfers: Counter,
    pub tftp_bytes: Counter,
    /// Distinct boards (hardware addresses) answered since start.
    pub boards: Counter,
}

impl NetbootMetrics {
    /// The `client` label of requests not answered.
    pub const OTHER: &'static str = "other";

    /// Counts one DHCP request from `client` (a firmware kind, or
    /// [`Self::OTHER`]).
    pub fn request(&self, client: &'static str) {
        self.requests.get_or_create(&ClientLabel { client }).inc();
    }

    /// DHCP requests counted from `client` so far.
    pub fn requests_from(&self, client: &'static str) -> u64 {
        self.requests
            .get(&ClientLabel { client })
            .map_or(0, |c| c.get())
    }
}

/// The netboot partition a board profile looks for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The filesystem labels it is found by, comma-separated.
    pub fs_labels: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The HTTP server's figures.
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub sent_bytes: Counter,
    pub open_connections: Gauge,
    /// Responses being sent now: downloads in progress.
    pub responses_in_progress: Gauge,
    /// Connections refused or dropped, by reason (`budget_full`, `evicted`,
    /// `cut_off`, `bad_request`, `out_of_descriptors`).
    pub dropped: Family<ReasonLabel, Counter>,
    pub response_seconds: Histogram,
}

/// The DHT's figures (ours; libp2p's are in `p2p`).
#[derive(Default)]
pub struct DhtMetrics {
    /// Puts of our records, by `result` (`ok`, `error`).
    pub puts: Family<ReasonLabel, Counter>,
    pub refreshes: Counter,
    /// Unix time of the last successful publish, per channel/arch.
    pub last_publish_seconds: Family<ChannelArchLabels, Gauge>,
    /// Unix time of the last put, whatever its result, per channel/arch.
    pub last_put_seconds: Family<ChannelArchLabels, Gauge>,
    /// 1 when the last put of a channel/arch worked, 0 when it failed.
    pub last_put_ok: Family<ChannelArchLabels, Gauge>,
    pub routing_table_peers: Gauge,
    pub records_stored: Gauge,
    /// Incoming PUTs refused, by `kind` (the refusal kinds of `record`).
    pub refused: Family<ReasonLabel, Counter>,
}

impl DhtMetrics {
    /// Counts one finished put of `ca`'s record: its result, its time, and
    /// for a successful one the last publish (and a refresh, if it was one).
    pub fn put_done(&self, ca: &crate::channel::ChannelArch, ok: bool, refresh: bool) {
        self.puts
            .get_or_create(&ReasonLabel {
                reason: if ok { "ok" } else { "error" },
            })
            .inc();
        let labels = ChannelArchLabels {
            channel: ca.channel.clone(),
            arch: ca.arch.clone(),
        };
        let unix = crate::time::unix_now() as i64;
        self.last_put_seconds.get_or_create(&labels).set(unix);
        self.last_put_ok.get_or_create(&labels).set(ok as i64);
        if ok {
            if refresh {
                self.refreshes.inc();
            }
            self.last_publish_seconds.get_or_create(&labels).set(unix);
        }
    }

    /// Drops a channel/arch that is no longer advertised, so its last
    /// publish does not linger on dashboards.
    pub fn forget(&self, ca: &crate::channel::ChannelArch) {
        let labels = ChannelArchLabels {
            channel: ca.channel.clone(),
            arch: ca.arch.clone(),
        };
        self.last_publish_seconds.remove(&labels);
        self.last_put_seconds.remove(&labels);
        self.last_put_ok.remove(&labels);
    }
}

/// Every metric of the process, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub dht: DhtMetrics,
    pub chunks: ChunkMetrics,
    pub netboot: NetbootMetrics,
    /// What each channel/arch advertises.
    pub adverts: Family<AdvertLabels, Gauge>,
    /// Watchdog pets, and health-check failures by `check`.
    pub watchdog_pets: Counter,
    pub health_failures: Family<ReasonLabel, Counter>,
    /// 1 while the netboot partition is mounted and served, 0 while it is
    /// missing (only on boards that look for one).
    pub partition_mounted: Family<PartitionLabels, Gauge>,
    /// libp2p's swarm, Kademlia, Identify and Ping metrics.
    pub p2p: libp2p::metrics::Metrics,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let ours = registry.sub_registry_with_prefix("plasmd");
        let http = HttpMetrics {
            requests: Family::default(),
            sent_bytes: Counter::default(),
            open_connections: Gauge::default(),
            responses_in_progress: Gauge::default(),
            dropped: Family::default(),
            // 1 ms to about 65 s: a manifest to a slow rootfs download.
            response_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
        };
        let dht = DhtMetrics::default();
        let adverts = Family::<AdvertLabels, Gauge>::default();
        let (pets, health) = (Counter::default(), Family::default());
        let partition = Family::<PartitionLabels, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        ours.register("build_info", "plasmd's version (value 1)", build);
        let h = ours.sub_registry_with_prefix("http");
        h.register(
            "requests",
            "HTTP requests answered, by route class and status",
            http.requests.clone(),
        );
        h.register(
            "sent_bytes",
            "HTTP response body bytes sent",
            http.sent_bytes.clone(),
        );
        h.register(
            "open_connections",
            "HTTP connections open now",
            http.open_connections.clone(),
        );
        h.register(
            "responses_in_progress",
            "HTTP responses being sent now (downloads in progress)",
            http.responses_in_progress.clone(),
        );
        h.register(
            "dropped_connections",
            "HTTP connections refused or dropped, by reason",
            http.dropped.clone(),
        );
        h.register(
            "response_seconds",
            "time from a request's head to its response's last byte",
            http.response_seconds.clone(),
        );
        let d = ours.sub_registry_with_prefix("dht");
        d.register(
            "puts",
            "puts of our own records, by result",
            dht.puts.clone(),
        );
        d.register(
            "refreshes",
            "refreshes of our own records",
            dht.refreshes.clone(),
        );
        d.register(
            "last_publish_seconds",
            "Unix time of the last successful publish, per channel/arch",
            dht.last_publish_seconds.clone(),
        );
        d.register(
            "last_put_seconds",
            "Unix time of the last put, whatever its result, per channel/arch",
            dht.last_put_seconds.clone(),
        );
        d.register(
            "last_put_ok",
            "1 when the last put of a channel/arch worked, 0 when it failed",
            dht.last_put_ok.clone(),
        );
        d.register(
            "routing_table_peers",
            "peers in the Kademlia routing table",
            dht.routing_table_peers.clone(),
        );
        d.register(
            "records_stored",
            "records held in the local store (own and others')",
            dht.records_stored.clone(),
        );
        d.register(
            "refused_records",
            "incoming record PUTs refused, by kind",
            dht.refused.clone(),
        );
        ours.register(
            "advertised",
            "what each channel/arch advertises (value 1)",
            adverts.clone(),
        );
        let chunks = ChunkMetrics::default();
        let c = ours.sub_registry_with_prefix("chunks");
        c.register(
            "received",
            "release chunks downloaded and verified, by source (origin or peer)",
            chunks.received.clone(),
        );
        c.register(
            "received_bytes",
            "bytes of release chunks downloaded and verified, by source",
            chunks.received_bytes.clone(),
        );
        c.register(
            "bad",
            "release chunks that did not verify (each dropped its source)",
            chunks.bad.clone(),
        );
        c.register(
            "served_requests",
            "chunk requests of other boards answered",
            chunks.served_requests.clone(),
        );
        c.register(
            "served_bytes",
            "bytes of chunks sent to other boards",
            chunks.served_bytes.clone(),
        );
        let netboot = NetbootMetrics::default();
        let n = ours.sub_registry_with_prefix("netboot");
        n.register(
            "requests",
            "firmware DHCP requests answered by client type (uefi_pxe, uefi_http, raspberry_pi); other: ignored",
            netboot.requests.clone(),
        );
        n.register(
            "tftp_transfers",
            "TFTP transfers finished",
            netboot.tftp_transfers.clone(),
        );
        n.register(
            "tftp_bytes",
            "bytes sent over TFTP",
            netboot.tftp_bytes.clone(),
        );
        n.register(
            "boards",
            "distinct boards (hardware addresses) answered since start",
            netboot.boards.clone(),
        );
        let b = ours.sub_registry_with_prefix("board");
        b.register("watchdog_pets", "hardware watchdog pets", pets.clone());
        b.register(
            "health_check_failures",
            "failed health checks, by check",
            health.clone(),
        );
        b.register(
            "partition_mounted",
            "1 while the netboot partition is mounted and served, 0 while it is missing",
            partition.clone(),
        );
        let p2p = libp2p::metrics::Metrics::new(&mut registry);
        Arc::new(Metrics {
            registry,
            http,
            dht,
            chunks,
            netboot,
            adverts,
            watchdog_pets: pets,
            health_failures: health,
            partition_mounted: partition,
            p2p,
        })
    }

    /// The Prometheus text format (`text/plain; version=0.0.4`), which
    /// every scraper and `promtool` reads.
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry);
        to_prometheus_text(&open_metrics)
    }

    /// Counts one refused incoming record.
    pub fn refused(&self, kind: crate::record::RefusalKind) {
        self.dht
            .refused
            .get_or_create(&ReasonLabel {
                reason: kind.as_str(),
            })
            .inc();
    }

    /// Counts a dropped or refused HTTP connection.
    pub fn dropped(&self, reason: &'static str) {
        self.http
            .dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

/// The client writes OpenMetrics, where a counter family `x` has samples
/// `x_total`; the Prometheus text format names the family `x_total` in its
/// `# HELP`/`# TYPE` lines, and has no `# UNIT` or `# EOF` lines.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_our_names_and_libp2ps() {
        let m = Metrics::new();
        m.http
            .requests
            .get_or_create(&RequestLabels {
                route: "manifest",
                status: 200,
            })
            .inc();
        m.refused(crate::record::RefusalKind::Forged);
        let text = m.encode();
        for needle in [
            "plasmd_build_info{version=",
            "plasmd_http_requests_total{route=\"manifest\",status=\"200\"} 1",
            "plasmd_dht_refused_records_total{reason=\"forged\"} 1",
            "plasmd_http_response_seconds_bucket",
            "libp2p_",
            "# TYPE plasmd_http_requests_total counter",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
