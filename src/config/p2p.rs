//! The libp2p settings `plasmd serve` and `plasmd node` share: listen,
//! bootstrap and announced addresses, mDNS, the identity key file, the
//! record TTL cap and trusted publishers (flags, then `[p2p]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;

use super::file::FileConfig;
use super::serve::Flags;
use super::{
    in_range, parse_bootstrap, parse_multiaddr, parse_peer_ids, ConfigError, DEFAULT_P2P_LISTEN,
    DEFAULT_RECORD_TTL, MAX_RECORD_TTL,
};

/// The libp2p side, shared by `serve` and `node`.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses announced to peers instead of the listen addresses.
    pub announce: Vec<Multiaddr>,
    /// Find and be found by peers on the LAN with mDNS.
    pub mdns: bool,
    pub identity: PathBuf,
    /// Cap on how long this node keeps any record, its own or received.
    pub record_ttl: Duration,
    /// `--trust` / `[p2p] trusted_publishers`: store only their records.
    pub trusted_publishers: Vec<libp2p::PeerId>,
}

pub(super) fn build_p2p(f: &Flags, file: &FileConfig) -> Result<P2pConfig, ConfigError> {
    let listen_src: Vec<String> = if !f.p2p_listen.is_empty() {
        f.p2p_listen.clone()
    } else {
        file.p2p
            .listen
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_P2P_LISTEN.to_string()])
    };
    if listen_src.is_empty() {
        return Err(ConfigError::Invalid(
            "[p2p] listen is empty: give at least one address".into(),
        ));
    }
    let listen = listen_src
        .iter()
        .map(|s| parse_multiaddr("--p2p-listen / [p2p] listen", s))
        .collect::<Result<Vec<_>, _>>()?;
    let bootstrap_src = if !f.bootstrap.is_empty() {
        f.bootstrap.clone()
    } else {
        file.p2p.bootstrap.clone().unwrap_or_default()
    };
    let bootstrap = parse_bootstrap(&bootstrap_src)?;
    let announce_src = if !f.announce.is_empty() {
        f.announce.clone()
    } else {
        file.p2p.announce.clone().unwrap_or_default()
    };
    let announce = announce_src
        .iter()
        .map(|s| parse_multiaddr("--p2p-announce / [p2p] announce", s))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = match f.identity.clone().or_else(|| file.p2p.identity.clone()) {
        Some(p) => p,
        None => default_identity_path()?,
    };
    let ttl = in_range(
        "record TTL (--record-ttl / [provider.dht] record_ttl)",
        f.record_ttl
            .or(file.provider.dht.record_ttl)
            .unwrap_or(DEFAULT_RECORD_TTL),
        1,
        MAX_RECORD_TTL,
        "seconds",
    )?;
    Ok(P2pConfig {
        listen,
        bootstrap,
        announce,
        mdns: f.mdns || file.p2p.mdns.unwrap_or(false),
        identity,
        record_ttl: Duration::from_secs(ttl),
        trusted_publishers: parse_peer_ids(
            "--trust / [p2p] trusted_publishers",
            if f.trust.is_empty() {
                file.p2p.trusted_publishers.clone().unwrap_or_default()
            } else {
                f.trust.clone()
            },
        )?,
    })
}

/// `/var/lib/plasmd/identity.key` when that directory is (or can be made)
/// writable, else under `$XDG_STATE_HOME` or `~/.local/state`.
fn default_identity_path() -> Result<PathBuf, ConfigError> {
    let system = Path::new("/var/lib/plasmd");
    if std::fs::create_dir_all(system).is_ok() && dir_writable(system) {
        return Ok(system.join("identity.key"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            ConfigError::Invalid(
                "no place for the identity key: /var/lib/plasmd is not writable and neither XDG_STATE_HOME nor HOME is set; give --identity FILE".into(),
            )
        })?;
    Ok(state.join("plasmd").join("identity.key"))
}

fn dir_writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}
