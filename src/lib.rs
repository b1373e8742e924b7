//! plasmd: a netboot provider for ARM64 single-board computers.
//!
//! Serves boot artifacts over HTTP and advertises each channel/arch's
//! manifest URL in a libp2p Kademlia DHT under `/phase/{channel}/{arch}/manifest`.
//! Both binaries (`plasmd`, `phase-discover`) are thin wrappers around this
//! library. Data flows down this list and out through `http` and `dht`:
//!
//! - [`config`]: flags + TOML file → one validated configuration
//! - [`identity`]: the ed25519 key file behind a stable peer id
//! - [`manifest`]: scanning `<channel>/<arch>` trees into manifests
//! - [`beneath`]: opening files below the artifacts root, never outside it
//! - [`watch`]: inotify → rescans → catalog snapshots
//! - [`record`]: the DHT record value, bounded decoding and validation
//! - [`release`]: signed releases (minisign), `release sign`, the rollback floor
//! - [`publisher`]: when to put, refresh, re-publish and un-publish
//! - [`dht`]: the one owner of the libp2p swarm
//! - [`http`]: the event-driven, bounded HTTP/1.1 server boards download from
//! - [`metrics`]: the Prometheus registry every task records into
//! - [`shutdown`]: SIGTERM/SIGINT → one signal every task waits on
//! - [`status`]: `/status.json`, the status page and `plasmd status`
//! - [`statefile`]: state files replaced atomically (key, record seq)
//! - [`tally`]: counts per key for fairness (HTTP addresses, DHT peers)
//! - [`fetch`]: `phase-discover --fetch`, record → manifest → verified bytes
//! - [`choose`]: with release keys, which found providers a board may use
//! - [`provider`], [`discover`]: the commands, wiring the above together
//!   (`discover::watch`: `phase-discover --watch`)
//! - [`boot`]: `phase-boot`, the stage 1 that finds, verifies and kexecs a release

pub mod beneath;
pub mod board;
pub mod boot;
pub mod channel;
pub mod config;
pub mod dht;
pub mod discover;
pub mod fetch;
pub mod http;
pub mod identity;
pub mod manifest;
pub mod metrics;
pub mod minisign;
pub mod provider;
pub mod record;
pub mod release;
pub mod shutdown;
pub mod statefile;
pub mod status;
pub mod tally;
pub mod text;
pub mod time;

/// Sets up `env_logger` on stderr, honouring `RUST_LOG`, with `default` as
/// the level when it is unset.
pub fn init_logging(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}
