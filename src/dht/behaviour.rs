//! The protocols our peers speak, in one `NetworkBehaviour`, and the
//! Kademlia settings that make record TTLs hold.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
use libp2p::{connection_limits, identify, mdns, ping, StreamProtocol};

use super::{Role, KAD_PROTOCOL};
use crate::record::MAX_RECORD_BYTES;

/// Identify's protocol-version string (not the protocol id, which libp2p
/// fixes at `/ipfs/id/1.0.0`).
const IDENTIFY_VERSION: &str = "/phase/1.0.0";

/// At most this many records are stored (libp2p's default): a flood of
/// junk keys cannot grow memory past ~1024 × 2 KiB.
const MAX_STORED_RECORDS: usize = 1024;

/// A query that has not finished by then is reported as failed; the
/// publisher retries. libp2p's default of 60 s would hold a retry back.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Connection limits, so a flood of TCP connects on the p2p port cannot
/// exhaust the descriptors the HTTP server and artifact opens need (they
/// fit in `http`'s reserve of 1,024). Handshakes in progress are the cheap
/// thing a flood makes; established connections are what a fleet needs:
/// every board and node may keep one or two.
const MAX_PENDING_INCOMING: u32 = 128;
const MAX_PENDING_OUTGOING: u32 = 64;
const MAX_ESTABLISHED: u32 = 640;
/// Kademlia and Identify share one connection; two peers dialling each
/// other at once make a second. More than this from one peer is abuse.
const MAX_ESTABLISHED_PER_PEER: u32 = 4;

/// Everything a plasmd peer speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Refuses connections past the limits above before any protocol runs.
    pub limits: connection_limits::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub identify: identify::Behaviour,
    /// Other Kademlia implementations ping a new contact before routing to it.
    pub ping: ping::Behaviour,
    /// Zero-config discovery on the LAN (`--mdns`), off unless asked for.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// `hide_listen`: announce only external addresses through Identify
    /// (set when the user gave `--p2p-announce`).
    pub fn new(
        key: &Keypair,
        record_ttl: Duration,
        role: Role,
        agent: String,
        hide_listen: bool,
        use_mdns: bool,
    ) -> std::io::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // Caps how long we keep any record we receive, whatever TTL the
        // sender asked for (other implementations send none). Must stay
        // `Some`: `None` would keep records forever.
        cfg.set_record_ttl(Some(record_ttl));
        // The publisher's own refresh is the only thing that extends a
        // record's life; libp2p's re-publication would re-put stale values
        // from the local store, so it is off. Replication (storage nodes
        // re-sending what they hold) keeps each record's expiry and is left on.
        cfg.set_publication_interval(None);
        // Provider announcements (several providers per channel/arch) follow
        // the same rule: they live one TTL, and only the provider renews them.
        cfg.set_provider_record_ttl(Some(record_ttl));
        cfg.set_provider_publication_interval(None);
        // Incoming PUTs are handed to us to validate before storing.
        cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        cfg.set_caching(kad::Caching::Disabled);
        cfg.set_query_timeout(QUERY_TIMEOUT);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: MAX_STORED_RECORDS,
                // Incoming values over MAX_RECORD_BYTES are refused (and
                // counted) by our own check before they reach the store;
                // this is only the store's backstop.
                max_value_bytes: 4 * MAX_RECORD_BYTES,
                ..Default::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, cfg);
        kad.set_mode(Some(match role {
            Role::Server => kad::Mode::Server,
            Role::Client => kad::Mode::Client,
        }));
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                .with_agent_version(agent)
                .with_hide_listen_addrs(hide_listen),
        );
        let mdns = if use_mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
                .with_max_established(Some(MAX_ESTABLISHED))
                .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER)),
        );
        Ok(Behaviour {
            limits,
            kad,
            identify,
            ping: ping::Behaviour::default(),
            mdns: Toggle::from(mdns),
        })
    }
}
