//! Netboot running: the ProxyDHCP (`dhcp`, answering with `proxy`) and
//! TFTP (`tftp`) servers started together from a [`NetbootConfig`], the
//! stage-1s prepared first (`prepare`), and the counters operators see.

use std::collections::HashSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;

use super::dhcp::{self, DhcpServer};
use super::proxy::{BootInfo, Firmware};
use super::tftp::TftpServer;
use super::{stage1, stage1_path, NetbootConfig, NetbootError, HTTP_PREFIX, STAGE1_NAME};
use crate::metrics::NetbootMetrics;

// The longest HTTP boot URL (the longest address and port, channel and
// arch names of the longest kind) fits a DHCP answer's file field, so no
// configuration can make `proxy` refuse to answer.
const _: () = assert!(
    "http://255.255.255.255:65535".len()
        + HTTP_PREFIX.len()
        + 2 * crate::channel::MAX_NAME
        + 1
        + STAGE1_NAME.len()
        <= super::proxy::MAX_FILE
);

/// Boards remembered for the `boards` counter (beyond it, new boards are
/// no longer counted: the set stays bounded).
const MAX_BOARDS: usize = 4096;

/// The Raspberry Pi boot file set's directory in the operator's netboot
/// directory (`image/build-boards` makes it), served from TFTP's root.
pub const RPI_DIR: &str = "rpi";
/// The Pi bootloader's command line file, filled in like the UKI's.
const RPI_CMDLINE: &str = "cmdline.txt";

/// What [`prepare`] found to hand firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// A stage-1 for UEFI boards.
    pub uefi: bool,
    /// A file set for Raspberry Pi boards.
    pub raspberry_pi: bool,
}

/// Fills in what firmware gets, into `cfg.cache`: the UEFI stage-1 of
/// every channel/arch the configuration boots (from `DIR/stage1.efi`) and
/// the Raspberry Pi's `cmdline.txt` (from `DIR/rpi/`, default channel);
/// logs what it made. Either may be missing, not both.
pub fn prepare(cfg: &NetbootConfig) -> Result<Prepared, NetbootError> {
    let source = cfg.root.join(STAGE1_NAME);
    let uefi = source.is_file();
    if uefi {
        for ca in cfg.prepared() {
            let out = cfg.cache.join(stage1_path(&ca));
            if stage1::prepare(&source, &out, &cfg.words(&ca))? {
                log::info!("netboot: stage-1 for {ca} prepared at {}", out.display());
            } else {
                log::warn!(
                    "netboot: {} has no {} word: served as it is (a signed UKI?), without this provider's channel and keys",
                    source.display(),
                    stage1::TEMPLATE_WORD
                );
            }
        }
    }
    let rpi = cfg.root.join(RPI_DIR);
    let raspberry_pi = rpi.is_dir();
    if raspberry_pi {
        let template = rpi.join(RPI_CMDLINE);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| NetbootError::Stage1(stage1::Stage1Error::Io(p, e))
        };
        // A kernel command line: a few hundred bytes; one over 4 KiB is
        // not one.
        let mut text = Vec::new();
        std::fs::File::open(&template)
            .and_then(|f| std::io::Read::take(f, 4097).read_to_end(&mut text))
            .map_err(io(&template))?;
        if text.len() > 4096 {
            return Err(NetbootError::Stage1(stage1::Stage1Error::TooLong {
                path: template,
                need: text.len(),
                room: 4096,
            }));
        }
        let text = String::from_utf8_lossy(&text);
        let filled = stage1::fill(&text, &cfg.words(&cfg.default))
            .unwrap_or_else(|| text.trim_end().to_string());
        let out = cfg.cache.join(RPI_CMDLINE);
        crate::statefile::write_atomic(&out, format!("{filled}\n").as_bytes(), 0o644)
            .map_err(io(&out))?;
        log::info!(
            "netboot: Raspberry Pi file set from {} with {} ({})",
            rpi.display(),
            out.display(),
            cfg.default
        );
    }
    if !uefi && !raspberry_pi {
        return Err(NetbootError::Nothing(cfg.root.clone()));
    }
    Ok(Prepared { uefi, raspberry_pi })
}

/// Netboot running: the ProxyDHCP and TFTP servers.
pub struct Netboot {
    dhcp: DhcpServer,
    tftp: TftpServer,
}

/// What the ProxyDHCP tells each board, and the counters it keeps.
struct Answers {
    cfg: NetbootConfig,
    prepared: Prepared,
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
            uefi: self.prepared.uefi,
            raspberry_pi: self.prepared.raspberry_pi,
        }
    }

    fn answered(&self, firmware: Firmware, mac: &[u8]) {
        self.metrics.request(firmware.as_str());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_BOARDS && seen.insert(mac.to_vec()) {
            self.metrics.boards.inc();
        }
    }

    fn ignored(&self) {
        self.metrics.request(NetbootMetrics::OTHER);
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
        let prepared = prepare(&cfg)?;
        // The prepared tree first (the stage-1s, the Pi's cmdline.txt),
        // then the Pi's file set as the operator gave it.
        let roots = vec![cfg.cache.clone(), cfg.root.join(RPI_DIR)];
        let tftp = TftpServer::start(cfg.tftp, roots, metrics.clone())?;
        let listen = cfg.dhcp;
        let dhcp = DhcpServer::start(
            listen,
            Answers {
                cfg,
                prepared,
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
