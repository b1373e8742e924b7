//! Command-line flags and the TOML config file, turned into one validated
//! configuration per command: `serve` (`plasmd serve`, `node`, `id`),
//! `discover` (`phase-discover`; `phase-boot` reads the kernel command line
//! in `boot::cmdline`), `release` (`plasmd release`), `status`
//! (`plasmd status`), and `file`, the TOML file they share.
//!
//! Every default and every check on user input lives here, so the rest of
//! the program can trust what it is given. Flags win over the file. Errors
//! are one line naming the flag, key, file or value at fault; the binaries
//! map them to exit code 2. This module does not open sockets or read the
//! artifacts (except to check the directory exists).

use std::path::PathBuf;

use libp2p::Multiaddr;

mod discover;
mod file;
mod mirror;
mod netboot;
mod p2p;
mod release;
mod serve;
mod status;

pub use crate::release::command::ReleaseCommand;
pub use discover::{parse_boot, parse_discover, BootCommand, DiscoverCommand, DiscoverConfig};
pub use serve::{parse_plasmd, DhtTiming, MirrorConfig, NodeConfig, P2pConfig, ServeConfig};

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default p2p listen address.
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";
/// Default record TTL, from the conventions.
pub const DEFAULT_RECORD_TTL: u64 = 3600;
/// Default `phase-discover` timeout.
pub const DEFAULT_DISCOVER_TIMEOUT: u64 = 30;
/// Seconds between `phase-discover --watch` rounds.
pub const DEFAULT_WATCH_INTERVAL: u64 = 5;
/// Longest record TTL (7 days): a record meant to outlive a week is a
/// mistake, and bounding it keeps every deadline computed from it finite.
pub const MAX_RECORD_TTL: u64 = crate::record::MAX_RECORD_TTL_SECS;
/// Longest `phase-discover --timeout` (1 day); a board that must wait
/// longer runs it again.
pub const MAX_DISCOVER_TIMEOUT: u64 = 24 * 3600;
/// Longest `--http-rate-window` (1 hour).
pub const MAX_RATE_WINDOW: u64 = 3600;
/// Largest `--http-min-rate` (1 GiB/s); 0 turns the rule off.
pub const MAX_MIN_RATE: u64 = 1 << 30;

/// A bad flag, config file or value. Always the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Args(String),
    #[error("config file {0}: {1}")]
    File(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Args(e.to_string())
    }
}

/// What `plasmd` was asked to do.
#[derive(Debug)]
pub enum Command {
    Serve(Box<ServeConfig>),
    Node(NodeConfig),
    Id {
        identity: PathBuf,
    },
    /// `plasmd release keygen|sign|verify`.
    Release(ReleaseCommand),
    /// `plasmd status --url URL`: ask a running plasmd.
    Status {
        url: String,
    },
    /// `plasmd serve --check-config`: the config is valid (this line says
    /// so); show what would be advertised.
    CheckServe(Box<ServeConfig>, String),
    /// Print this text on stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

pub fn version_line(bin: &str) -> String {
    format!("{bin} {}\n", env!("CARGO_PKG_VERSION"))
}

pub(crate) fn string(p: &mut lexopt::Parser, flag: &str) -> Result<String, ConfigError> {
    p.value()?
        .into_string()
        .map_err(|v| ConfigError::Args(format!("{flag}: {v:?} is not valid UTF-8")))
}

/// `value` if it lies in `min..=max`, else an error naming the setting and
/// its bounds (never a panic, however large the number).
pub(crate) fn in_range(
    what: &str,
    value: u64,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} {value}: use {min} to {max} {unit}"
        )))
    }
}

/// A flag's value as a whole number of seconds.
pub(crate) fn secs(p: &mut lexopt::Parser, flag: &str) -> Result<u64, ConfigError> {
    whole(p, flag, "a whole number of seconds")
}

/// A flag's value as a whole number of bytes per second.
pub(crate) fn bytes_per_sec(p: &mut lexopt::Parser, flag: &str) -> Result<u64, ConfigError> {
    whole(p, flag, "a whole number of bytes per second")
}

/// A flag's value as a count.
pub(crate) fn count(p: &mut lexopt::Parser, flag: &str) -> Result<u64, ConfigError> {
    whole(p, flag, "a whole number")
}

fn whole(p: &mut lexopt::Parser, flag: &str, what: &str) -> Result<u64, ConfigError> {
    let v = string(p, flag)?;
    v.parse()
        .map_err(|_| ConfigError::Args(format!("{flag}: {v:?} is not {what}")))
}

/// `stable/arm64` → its channel/arch, both names checked; `flag` names
/// the setting in errors.
pub(crate) fn channel_arch(
    flag: &str,
    s: &str,
) -> Result<crate::channel::ChannelArch, ConfigError> {
    use crate::channel::check_name;
    let bad = |why: String| ConfigError::Invalid(format!("{flag} {s:?}: {why}"));
    let (channel, arch) = s
        .split_once('/')
        .ok_or_else(|| bad("expected CHANNEL/ARCH, e.g. stable/arm64".into()))?;
    check_name("channel", channel).map_err(|e| bad(e.to_string()))?;
    check_name("arch", arch).map_err(|e| bad(e.to_string()))?;
    Ok(crate::channel::ChannelArch {
        channel: channel.into(),
        arch: arch.into(),
    })
}

/// Peer ids from flags or the file, `what` naming where they came from.
pub(crate) fn parse_peer_ids(
    what: &str,
    ids: Vec<String>,
) -> Result<Vec<libp2p::PeerId>, ConfigError> {
    ids.iter()
        .map(|t| {
            t.parse::<libp2p::PeerId>()
                .map_err(|e| ConfigError::Invalid(format!("{what}: {t:?} is not a peer id: {e}")))
        })
        .collect()
}

pub(crate) fn parse_multiaddr(what: &str, s: &str) -> Result<Multiaddr, ConfigError> {
    s.parse::<Multiaddr>()
        .map_err(|e| ConfigError::Invalid(format!("{what}: {s:?} is not a valid multiaddr: {e}")))
}

/// Parses bootstrap multiaddrs (each must name a TCP port).
pub(crate) fn parse_bootstrap(list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|s| {
            let addr = parse_multiaddr("--bootstrap / [p2p] bootstrap", s)?;
            let has_transport = addr
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)));
            if !has_transport {
                return Err(ConfigError::Invalid(format!(
                    "--bootstrap: {s:?} has no /tcp/PORT; expected /ip4/ADDR/tcp/PORT/p2p/PEER_ID"
                )));
            }
            Ok(addr)
        })
        .collect()
}

#[cfg(test)]
mod tests;
