//! The client side: what a board (or `phase-discover`, or a mirror) looks
//! for ([`Query`]), and the one path from there to verified files
//! ([`client`]: rollback floor → lookup → choose → fetch → remember).
//!
//! - [`session`]: a DHT client joined once and asked as often as needed;
//! - [`choose`]: with release keys, which found providers may be used;
//! - [`client`]: the path itself, used by `phase-discover` and `phase-boot`;
//! - [`share`]: serving a release to other boards while downloading it;
//! - [`watch`]: `phase-discover --watch`, the live table of every provider.
//!
//! Downloading and verifying bytes is `fetch`'s job, the floor file
//! `release::floor`'s; parsing flags into a [`Query`] is `config`'s.

pub mod choose;
pub mod client;
pub mod session;
pub mod share;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::dht::DhtError;
use crate::fetch;
use crate::release::ReleaseKeys;

pub use session::Session;

/// What a client looks for, which keys it trusts and where it looks.
#[derive(Debug, Clone)]
pub struct Query {
    pub channel: String,
    pub arch: String,
    /// DHT peers to ask.
    pub bootstrap: Vec<Multiaddr>,
    /// Find DHT peers on the LAN with mDNS (no bootstrap peer needed).
    pub mdns: bool,
    /// One lookup gives up after this long.
    pub timeout: Duration,
    /// Accept records only from these publishers (`--trust`); empty: any
    /// validly signed record.
    pub trusted: Vec<PeerId>,
    /// Release keys: when set, only providers serving a release signed by
    /// one of them are used, whoever published the record.
    pub release_keys: ReleaseKeys,
    /// Where the rollback floor is kept (`--state`), if anywhere.
    pub state: Option<PathBuf>,
    /// Accept a release below the floor (and lower it).
    pub allow_downgrade: bool,
    /// A time known to have passed (the build, or the newest time the
    /// rollback floor saw): a clock reading earlier is treated as unknown.
    pub trusted_time: u64,
    /// How long a provider may take to answer and to send (every manifest,
    /// signature and artifact download).
    pub limits: fetch::Limits,
}

impl Query {
    /// Downloads and checks what `record` points at under this query's
    /// release keys, channel/arch and limits (see `fetch::check_provider`).
    pub fn check(
        &self,
        record: &crate::record::ManifestRecord,
    ) -> Result<fetch::Checked, fetch::FetchError> {
        fetch::check_provider(
            record,
            &self.release_keys,
            &self.channel,
            &self.arch,
            &self.limits,
        )
    }
}

/// Errors of a lookup (finding nothing is not an error: an empty list).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Dht(#[from] DhtError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}
