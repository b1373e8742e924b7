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
//! [`Netboot`] starts them together from a [`NetbootConfig`]; the HTTP
//! server serves the same prepared files under `/_netboot/` for UEFI HTTP
//! boot. What is not here: the flags (`config`), and deciding when to
//! start and stop (`provider`).

pub mod dhcp;
pub mod proxy;
pub mod stage1;
pub mod tftp;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::channel::ChannelArch;
use crate::metrics::{ClientLabel, NetbootMetrics};
use dhcp::{DhcpListen, DhcpServer};
use proxy::{BootInfo, Firmware};
use tftp::TftpServer;

/// The stage-1 file's name, in the operator's netboot directory and in
/// the prepared tree (`{channel}/{arch}/stage1.efi`).
pub const STAGE1_NAME: &str = "stage1.efi";
/// The HTTP path the prepared tree is served under.
pub const HTTP_PREFIX: &str = "/_netboot/";
/// Boards remembered for the `boards` counter (beyond it, new boards are
/// no longer counted: the set stays bounded).
const MAX_BOARDS: usize = 4096;

/// Why netboot could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[error("netboot: {0}")]
    Stage1(#[from] stage1::Stage1Error),
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
    #[error(transparent)]
    Tftp(#[from] tftp::TftpError),
}

/// A group of boards (by hardware address) booting another channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
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
            Some(g) => ChannelArch {
                channel: g.channel.clone(),
                arch: self.default.arch.clone(),
            },
            None => self.default.clone(),
        }
    }

    /// Every channel/arch a stage-1 is prepared for.
    fn prepared(&self) -> Vec<ChannelArch> {
        let mut all = vec![self.default.clone()];
        for g in &self.groups {
            let ca = ChannelArch {
                channel: g.channel.clone(),
                arch: self.default.arch.clone(),
            };
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

/// Fills in the stage-1 of every channel/arch the configuration boots into
/// `cfg.cache`; logs what it made.
pub fn prepare(cfg: &NetbootConfig) -> Result<(), NetbootError> {
    let source = cfg.root.join(STAGE1_NAME);
    for ca in cfg.prepared() {
        let out = cfg.cache.join(stage1_path(&ca));
        let filled = stage1::prepare(&source, &out, &cfg.words(&ca))?;
        if filled {
            log::info!("netboot: stage-1 for {ca} prepared at {}", out.display());
        } else {
            log::warn!(
                "netboot: {} has no {} word: served as it is (a signed UKI?), without this provider's channel and keys",
                source.display(),
                stage1::TEMPLATE_WORD
            );
        }
    }
    Ok(())
}

/// Netboot running: the ProxyDHCP and TFTP servers.
pub struct Netboot {
    dhcp: DhcpServer,
    tftp: TftpServer,
}

/// What the ProxyDHCP tells each board, and the counters it keeps.
struct Answers {
    cfg: NetbootConfig,
    http_port: u16,
    metrics: NetbootMetrics,
    seen: Mutex<HashSet<Vec<u8>>>,
}

impl dhcp::Boards for Answers {
    fn boot_info(&self, server: Ipv4Addr, mac: &[u8]) -> BootInfo {
        let path = stage1_path(&self.cfg.channel_of(mac));
        BootInfo {
            server,
            uefi_url: format!("http://{server}:{}{HTTP_PREFIX}{path}", self.http_port),
            uefi_file: path,
        }
    }

    fn answered(&self, firmware: Firmware, mac: &[u8]) {
        self.metrics
            .requests
            .get_or_create(&ClientLabel {
                client: firmware.as_str(),
            })
            .inc();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_BOARDS && seen.insert(mac.to_vec()) {
            self.metrics.boards.inc();
        }
    }

    fn ignored(&self) {
        self.metrics
            .requests
            .get_or_create(&ClientLabel { client: "other" })
            .inc();
    }
}

impl Netboot {
    /// Prepares the stage-1s and starts answering firmware; `http_port` is
    /// the HTTP server's, for UEFI HTTP boot URLs.
    pub fn start(
        cfg: NetbootConfig,
        http_port: u16,
        metrics: NetbootMetrics,
    ) -> Result<Netboot, NetbootError> {
        prepare(&cfg)?;
        let tftp = TftpServer::start(cfg.tftp, cfg.cache.clone(), metrics.clone())?;
        let listen = cfg.dhcp;
        let dhcp = DhcpServer::start(
            listen,
            Answers {
                cfg,
                http_port,
                metrics,
                seen: Mutex::default(),
            },
        )?;
        let (d, p) = dhcp.local_addrs();
        log::info!("netboot: ProxyDHCP on {d} and {p}");
        Ok(Netboot { dhcp, tftp })
    }

    /// Where TFTP listens.
    pub fn tftp_addr(&self) -> SocketAddr {
        self.tftp.local_addr()
    }

    /// Stops answering firmware.
    pub fn stop(self) {
        self.dhcp.stop();
        self.tftp.stop();
    }
}
