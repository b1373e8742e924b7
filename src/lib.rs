//! plasmd: a netboot provider for ARM64 single-board computers.
//!
//! Serves boot artifacts over HTTP and advertises each channel/arch's
//! manifest URL in a libp2p Kademlia DHT under `/phase/{channel}/{arch}/manifest`.
//! Both binaries (`plasmd`, `phase-discover`) are thin wrappers around this
//! library. Its modules form layers, listed here bottom to top; each uses
//! only those above it in this list (README: Architecture).
//!
//! Vocabulary, depending on nothing of ours:
//! - [`channel`]: channel/arch names and their rules, safe file names
//! - [`time`]: the clock, what a reader may believe of it, RFC 3339, HTTP dates
//! - [`text`]: sha256 hex, JSON string literals, printable network text
//! - [`beneath`]: opening files below the artifacts root, never outside it
//! - [`statefile`]: state files replaced atomically (key, record seq)
//! - [`tally`]: counts per key for fairness (HTTP addresses, DHT peers)
//! - [`identity`]: the ed25519 key file behind a stable peer id
//! - [`shutdown`]: SIGTERM/SIGINT → one signal every task waits on
//!
//! Formats:
//! - [`record`]: the DHT record value and its keys, bounded decoding, validation
//! - [`minisign`]: minisign key and signature files
//! - [`manifest`]: the manifest: reading, writing, the catalog of directories
//! - [`release`]: signed releases, `release sign`, the rollback floor
//!
//! Parts:
//! - [`metrics`]: the Prometheus registry every task records into
//! - [`dht`]: the one owner of the libp2p swarm
//! - [`fetch`]: record → manifest → verified bytes, and the download client
//! - [`status`]: `/status.json`, the status page and `plasmd status`
//! - [`http`]: the event-driven, bounded HTTP/1.1 server boards download from
//! - [`board`]: partitions, the watchdog and the health checks that gate it
//! - [`discover`]: the client path (floor → lookup → choose → fetch → remember)
//!
//! Configuration: [`config`], flags + TOML file → each command's settings.
//!
//! Wiring:
//! - [`provider`]: `plasmd serve` and `plasmd node`
//! - [`boot`]: `phase-boot`, the stage 1 that finds, verifies and kexecs a release

#[cfg(test)]
mod testdir;
pub mod channel;
pub mod time;
pub mod text;
pub mod beneath;
pub mod statefile;
pub mod tally;
pub mod identity;
pub mod shutdown;

pub mod record;
pub mod minisign;
pub mod manifest;
pub mod release;

pub mod metrics;
pub mod dht;
pub mod fetch;
pub mod status;
pub mod http;
pub mod netboot;
pub mod board;
pub mod discover;

pub mod config;

pub mod provider;
pub mod boot;

/// Sets up `env_logger` on stderr, honouring `RUST_LOG`, with `default` as
/// the level when it is unset.
pub fn init_logging(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}
