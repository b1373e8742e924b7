//! Netboot running: the ProxyDHCP (`dhcp`, answering with `proxy`) and
//! TFTP (`tftp`) servers started together from a [`NetbootConfig`], the
//! stage-1s prepared first (`prepare`), and the counters operators see.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use super::dhcp::{self, DhcpServer};
use super::proxy::{BootInfo, Firmware};
use super::tftp::TftpServer;
use super::{prepare, stage1_path, NetbootConfig, NetbootError, Prepared, HTTP_PREFIX, RPI_DIR};
use crate::metrics::{ClientLabel, NetbootMetrics};

/// Boards remembered for the `boards` counter (beyond it, new boards are
/// no longer counted: the set stays bounded).
const MAX_BOARDS: usize = 4096;

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
