//! Answering the firmware's own network boot (`plasmd serve --netboot`):
//! what a board with nothing on it asks for before any plasmd code runs
//! on it, and the stage-1 it is handed, which then boots only signed
//! releases.
//!
//! - [`proxy`]: the ProxyDHCP answer to a network-boot client (which file,
//!   from where, never an address);
//! - [`dhcp`]: the sockets that answer (UDP 67 and 4011);
//! - [`tftp`]: a read-only TFTP server (its packets in `tftp::packet`);
//! - [`stage1`]: the stage-1 UKI with this provider's settings filled in.
//!
//! [`Netboot`] (`server`) starts them together from a [`NetbootConfig`];
//! the HTTP server serves the same prepared files under `/_netboot/` for
//! UEFI HTTP boot. What is not here: the flags (`config`), and deciding
//! when to start and stop (`provider`).
//!
//! Everything but this file (the configuration's types) is built only
//! with the cargo feature `netboot` (see `Cargo.toml`: it would take the
//! aarch64 binary past its size budget); without it, the configuration
//! says what is missing.

#[cfg(feature = "netboot")]
pub mod dhcp;
#[cfg(feature = "netboot")]
pub mod proxy;
#[cfg(feature = "netboot")]
mod server;
#[cfg(feature = "netboot")]
pub mod stage1;
#[cfg(feature = "netboot")]
pub mod tftp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use crate::channel::ChannelArch;
#[cfg(feature = "netboot")]
pub use server::Netboot;

/// The word `image/build-stage1` leaves in the stage-1's command line for
/// a provider to replace (see `stage1`).
pub const TEMPLATE_WORD: &str = "plasmd.netboot=template";
/// The room for the stage-1's command line: arm64's kernel command line
/// holds 2,048 bytes with its NUL.
pub const CMDLINE_ROOM: usize = 2047;

/// Whether this plasmd answers firmware (built with the `netboot` feature).
pub const BUILT: bool = cfg!(feature = "netboot");

/// The stage-1 file's name, in the operator's netboot directory and in
/// the prepared tree (`{channel}/{arch}/stage1.efi`).
pub const STAGE1_NAME: &str = "stage1.efi";
/// The HTTP path the prepared tree is served under.
pub const HTTP_PREFIX: &str = "/_netboot/";

/// Why netboot could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[cfg(feature = "netboot")]
    #[error("netboot: {0}")]
    Stage1(#[from] stage1::Stage1Error),
    #[cfg(feature = "netboot")]
    #[error("netboot: nothing to hand firmware in {0}: put stage1.efi there (image/build-stage1) for UEFI boards, rpi/ (image/build-boards) for Raspberry Pis")]
    Nothing(PathBuf),
    #[cfg(feature = "netboot")]
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
    #[cfg(feature = "netboot")]
    #[error(transparent)]
    Tftp(#[from] tftp::TftpError),
    #[error("netboot: this plasmd was built without it (cargo feature `netboot`; the board image and the Debian package have it)")]
    NotBuilt,
}

/// Where the ProxyDHCP's two sockets listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpListen {
    /// Normally `0.0.0.0:67`.
    pub dhcp: SocketAddrV4,
    /// Normally `0.0.0.0:4011`.
    pub pxe: SocketAddrV4,
    /// Where broadcast answers go: normally port 68 (a test may move it).
    pub client_port: u16,
}

impl Default for DhcpListen {
    fn default() -> Self {
        DhcpListen {
            dhcp: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67),
            pxe: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4011),
            client_port: 68,
        }
    }
}

/// A group of boards (by hardware address) booting another channel (of
/// the default arch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub channel: String,
    pub macs: Vec<[u8; 6]>,
}

/// Everything netboot needs (built by `config` from `[netboot]` and the
/// flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootConfig {
    /// The operator's directory: [`STAGE1_NAME`] as `image/build-stage1
    /// --uki` made it.
    pub root: PathBuf,
    /// Where the stage-1s with their settings are prepared and served from
    /// (TFTP's root; HTTP's `/_netboot/`).
    pub cache: PathBuf,
    /// The channel/arch boards boot unless a group says otherwise.
    pub default: ChannelArch,
    pub groups: Vec<Group>,
    /// The release keys the stage-1 trusts (the base64 line of each).
    pub release_keys: Vec<String>,
    /// More kernel command line words for the stage-1 (e.g.
    /// `phase.bootstrap=…`).
    pub extra_words: String,
    pub dhcp: DhcpListen,
    pub tftp: SocketAddr,
}

impl NetbootConfig {
    /// The channel/arch the board with hardware address `mac` boots.
    pub fn channel_of(&self, mac: &[u8]) -> ChannelArch {
        match self.groups.iter().find(|g| g.macs.iter().any(|m| m == mac)) {
            Some(g) => self.of_group(g),
            None => self.default.clone(),
        }
    }

    fn of_group(&self, g: &Group) -> ChannelArch {
        ChannelArch {
            channel: g.channel.clone(),
            arch: self.default.arch.clone(),
        }
    }

    /// Every channel/arch a stage-1 is prepared for.
    pub fn prepared(&self) -> Vec<ChannelArch> {
        let mut all = vec![self.default.clone()];
        for g in &self.groups {
            let ca = self.of_group(g);
            if !all.contains(&ca) {
                all.push(ca);
            }
        }
        all
    }

    /// The stage-1's command line words for `ca`.
    pub fn words(&self, ca: &ChannelArch) -> String {
        let mut w = format!(
            "plasmd.netboot=1 phase.channel={} phase.arch={}",
            ca.channel, ca.arch
        );
        for k in &self.release_keys {
            w.push_str(" phase.release_key=");
            w.push_str(k);
        }
        if !self.extra_words.trim().is_empty() {
            w.push(' ');
            w.push_str(self.extra_words.trim());
        }
        w
    }
}

/// The prepared stage-1 of `ca`, relative to the cache.
pub fn stage1_path(ca: &ChannelArch) -> String {
    format!("{}/{}/{STAGE1_NAME}", ca.channel, ca.arch)
}

/// Without the `netboot` feature there is nothing to start: `config`
/// refuses `--netboot` first, so this is never made.
#[cfg(not(feature = "netboot"))]
pub struct Netboot(std::convert::Infallible);

#[cfg(not(feature = "netboot"))]
impl Netboot {
    pub fn start(
        _: NetbootConfig,
        _: u16,
        _: crate::metrics::NetbootMetrics,
    ) -> Result<Netboot, NetbootError> {
        Err(NetbootError::NotBuilt)
    }

    pub fn tftp_addr(&self) -> SocketAddr {
        match self.0 {}
    }

    pub fn stop(self) {
        match self.0 {}
    }
}
