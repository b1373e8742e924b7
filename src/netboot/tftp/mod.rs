//! A read-only TFTP server for firmware (RFC 1350 with the options of
//! RFC 2347-2349 and windowsize, RFC 7440): what UEFI PXE and the
//! Raspberry Pi bootloader fetch their first file with.
//!
//! One socket takes read requests; each transfer runs from a socket of its
//! own (a new port, as RFC 1350 has it), on a thread of the server's own so
//! neither the HTTP loop nor the DHT waits on it. Files are opened beneath
//! the netboot roots (the first that has the file) exactly as HTTP opens
//! artifacts (`beneath`). Bounded:
//! [`MAX_SESSIONS`] transfers at once, [`MAX_TRIES`] sends of a window
//! (ACKs of older blocks buy no time), a whole transfer at most 30 s plus
//! its size at 64 KiB/s, and until a client has acknowledged anything it
//! gets one packet per try, so a forged source address cannot turn a
//! 20-byte request into a flood.
//!
//! The packets themselves are `packet`'s; which roots and port are the
//! provider's to say.

pub mod packet;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::beneath::{self, BeneathError};
use crate::metrics::NetbootMetrics;
use packet::{ErrorCode, Packet};

/// Transfers at once; more requests are refused with an error.
pub const MAX_SESSIONS: usize = 64;
/// Times a window is sent before the transfer is given up.
pub const MAX_TRIES: u32 = 5;
/// Sends of the first packet to a client that has acknowledged nothing
/// yet (it may not exist: a forged source address).
const UNCONFIRMED_TRIES: u32 = 2;
/// Wait for an ACK when the client set no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// A whole transfer may take 30 s plus its size at this rate (64 KiB/s;
/// firmware on a LAN does megabytes a second), then it is given up: a
/// client that only ever acknowledges old blocks cannot hold a place.
const MIN_RATE: u64 = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP: cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("TFTP: cannot start: {0}")]
    Start(std::io::Error),
}

/// A running TFTP server.
pub struct TftpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TftpServer {
    /// Serves the files beneath `roots` (a name is looked for in each in
    /// turn) on `listen` (UDP), counting what it sends in `metrics`.
    pub fn start(
        listen: SocketAddr,
        roots: Vec<PathBuf>,
        metrics: NetbootMetrics,
    ) -> Result<TftpServer, TftpError> {
        let std_socket =
            std::net::UdpSocket::bind(listen).map_err(|e| TftpError::Bind(listen, e))?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| TftpError::Bind(listen, e))?;
        let addr = std_socket
            .local_addr()
            .map_err(|e| TftpError::Bind(listen, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TftpError::Start)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("tftp".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    match UdpSocket::from_std(std_socket) {
                        Ok(socket) => serve(socket, Arc::new(roots), metrics, stop_rx).await,
                        Err(e) => log::error!("TFTP: {e}"),
                    }
                });
                drop(local);
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(TftpError::Start)?;
        log::info!("TFTP listening on {addr}");
        Ok(TftpServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address requests are taken on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests and ends the transfers under way.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    socket: UdpSocket,
    root: Arc<Vec<PathBuf>>,
    metrics: NetbootMetrics,
    mut stop: oneshot::Receiver<()>,
) {
    let sessions = Rc::new(Cell::new(0usize));
    // A request is at most 512 bytes; one more tells a larger one apart.
    let mut buf = [0u8; packet::MAX_REQUEST + 1];
    loop {
        let (n, client) = tokio::select! {
            _ = &mut stop => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    log::debug!("TFTP: {e}");
                    continue;
                }
            },
        };
        let reply = match packet::parse(&buf[..n]) {
            Ok(Packet::Read { file, asked }) if sessions.get() < MAX_SESSIONS => {
                let file = file.to_string();
                let (root, sessions, metrics) = (root.clone(), sessions.clone(), metrics.clone());
                sessions.set(sessions.get() + 1);
                let local = socket.local_addr().ok();
                tokio::task::spawn_local(async move {
                    if let Some(local) = local {
                        transfer(local, client, &file, asked, &root, &metrics).await;
                    }
                    sessions.set(sessions.get() - 1);
                });
                None
            }
            Ok(Packet::Read { .. }) => Some(packet::error(ErrorCode::NotDefined, "server busy")),
            Ok(Packet::Write) => Some(packet::error(
                ErrorCode::AccessViolation,
                "read-only server",
            )),
            // Stray ACKs and errors belong to no transfer of this port.
            Ok(_) => None,
            // Malformed: dropped. An error answer would be several times
            // the size of a forged 6-byte request.
            Err(e) => {
                log::debug!("TFTP: {client}: {e}");
                None
            }
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, client).await;
        }
    }
}

/// One file to one client, from a socket of its own; counted in
/// `metrics` once all of it is acknowledged.
async fn transfer(
    local: SocketAddr,
    client: SocketAddr,
    name: &str,
    asked: packet::Asked,
    roots: &[PathBuf],
    metrics: &NetbootMetrics,
) {
    let bind = SocketAddr::new(local.ip(), 0);
    let Ok(socket) = UdpSocket::bind(bind).await else {
        return;
    };
    if socket.connect(client).await.is_err() {
        return;
    }
    let rel = Path::new(name.trim_start_matches('/'));
    let (file, meta) = match open_first(roots, rel) {
        Ok(opened) => opened,
        Err(e) => {
            let (code, why) = match e {
                BeneathError::Outside => (ErrorCode::AccessViolation, "outside the netboot root"),
                BeneathError::NotRegular => (ErrorCode::AccessViolation, "not a regular file"),
                BeneathError::Io(_) => (ErrorCode::NotFound, "file not found"),
            };
            log::info!("TFTP: {client} asked for {name:?}: {why}");
            let _ = socket.send(&packet::error(code, why)).await;
            return;
        }
    };
    let g = packet::grant(&asked, meta.len());
    let mut t = Transfer {
        socket,
        file,
        size: meta.len(),
        g,
        timeout: g
            .timeout
            .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(u64::from(s))),
        deadline: tokio::time::Instant::now()
            + Duration::from_secs(30u64.saturating_add(meta.len() / MIN_RATE)),
        confirmed: false,
    };
    let started = Instant::now();
    match t.run().await {
        Ok(()) => {
            let secs = started.elapsed().as_secs_f64();
            log::info!(
                "TFTP: sent {name} to {client}: {} bytes in {secs:.2} s ({:.1} MB/s, blksize {}, windowsize {})",
                t.size,
                t.size as f64 / secs.max(1e-6) / 1e6,
                g.blksize,
                g.windowsize
            );
            metrics.tftp_transfers.inc();
            metrics.tftp_bytes.inc_by(t.size);
        }
        Err(why) => log::info!("TFTP: {name} to {client} ended: {why}"),
    }
}

/// `rel` beneath the first of `roots` that has it. A path that leaves a
/// root is refused at once; a file missing from every root is the last
/// root's error.
fn open_first(
    roots: &[PathBuf],
    rel: &Path,
) -> Result<(std::fs::File, std::fs::Metadata), BeneathError> {
    let mut last = BeneathError::Io(std::io::ErrorKind::NotFound.into());
    for root in roots {
        match beneath::open_regular(root, rel) {
            Ok(opened) => return Ok(opened),
            Err(BeneathError::Outside) => return Err(BeneathError::Outside),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The state of one transfer.
struct Transfer {
    socket: UdpSocket,
    file: std::fs::File,
    size: u64,
    g: packet::Granted,
    timeout: Duration,
    /// When the whole transfer is given up (see [`MIN_RATE`]).
    deadline: tokio::time::Instant,
    /// The client acknowledged something: it is really there.
    confirmed: bool,
}

/// What came back while a window was out.
enum Heard {
    Ack(u16),
    Gone(String),
    Nothing,
}

impl Transfer {
    async fn run(&mut self) -> Result<(), String> {
        if self.g.oack {
            let oack = packet::oack(&self.g);
            self.until_acked(&[oack], 0).await?;
        }
        let blksize = u64::from(self.g.blksize);
        // The last block is short, and empty when the size is a multiple.
        let blocks = self.size / blksize + 1;
        let mut next = 0u64;
        let mut buf = vec![0u8; self.g.blksize as usize];
        while next < blocks {
            let window = if self.confirmed {
                u64::from(self.g.windowsize)
            } else {
                1
            };
            let end = (next + window).min(blocks);
            let mut packets = Vec::new();
            for i in next..end {
                let len = blksize.min(self.size - i * blksize) as usize;
                self.file
                    .read_exact_at(&mut buf[..len], i * blksize)
                    .map_err(|e| format!("reading: {e}"))?;
                let mut p = Vec::with_capacity(len + 4);
                packet::data(block_number(i), &buf[..len], &mut p);
                packets.push(p);
            }
            let acked = self.until_acked_any(&packets, next, end).await?;
            next = acked + 1;
        }
        Ok(())
    }

    /// Sends `packets` until block number `block` is acknowledged.
    async fn until_acked(&mut self, packets: &[Vec<u8>], block: u16) -> Result<(), String> {
        let mut tries = 0;
        let mut due = self.send_all(packets, &mut tries).await?;
        loop {
            match self.hear(due).await {
                Heard::Ack(n) if n == block => {
                    self.confirmed = true;
                    return Ok(());
                }
                Heard::Gone(why) => return Err(why),
                // Another ACK waits out the same timeout: it buys no time.
                Heard::Ack(_) => {}
                Heard::Nothing => due = self.send_all(packets, &mut tries).await?,
            }
        }
    }

    /// Sends the window of blocks `first..end` (`packets`) until one of
    /// them is acknowledged; returns the index of the last one acked.
    async fn until_acked_any(
        &mut self,
        packets: &[Vec<u8>],
        first: u64,
        end: u64,
    ) -> Result<u64, String> {
        let mut tries = 0;
        let mut due = self.send_all(packets, &mut tries).await?;
        loop {
            match self.hear(due).await {
                Heard::Ack(n) => {
                    // The newest block of this window with that number; an
                    // ACK of an older block waits out the same timeout.
                    if let Some(i) = (first..end).rev().find(|i| block_number(*i) == n) {
                        self.confirmed = true;
                        return Ok(i);
                    }
                }
                Heard::Gone(why) => return Err(why),
                // RFC 7440: after a timeout, the window is sent again from
                // the first block not acknowledged.
                Heard::Nothing => due = self.send_all(packets, &mut tries).await?,
            }
        }
    }

    /// Sends `packets` (one more try); returns when to stop waiting for
    /// their ACK.
    async fn send_all(
        &self,
        packets: &[Vec<u8>],
        tries: &mut u32,
    ) -> Result<tokio::time::Instant, String> {
        *tries += 1;
        let most = if self.confirmed {
            MAX_TRIES
        } else {
            UNCONFIRMED_TRIES
        };
        if *tries > most {
            return Err(format!("no answer after {most} tries"));
        }
        let now = tokio::time::Instant::now();
        if now > self.deadline {
            return Err(format!("slower than {} KiB/s: given up", MIN_RATE / 1024));
        }
        for p in packets {
            self.socket
                .send(p)
                .await
                .map_err(|e| format!("sending: {e}"))?;
        }
        Ok(now + self.timeout)
    }

    /// Waits until `due` for an ACK or an error from the client.
    async fn hear(&self, due: tokio::time::Instant) -> Heard {
        let mut buf = [0u8; 516];
        loop {
            let got = tokio::time::timeout_at(due, self.socket.recv(&mut buf)).await;
            let n = match got {
                Err(_) => return Heard::Nothing,
                Ok(Err(e)) => return Heard::Gone(format!("receiving: {e}")),
                Ok(Ok(n)) => n,
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack(b)) => return Heard::Ack(b),
                Ok(Packet::Error { code, message }) => {
                    return Heard::Gone(format!("the client stopped it ({code}: {message})"))
                }
                _ => continue,
            }
        }
    }
}

/// The block number of the `i`-th block (from 0): numbers start at 1 and
/// wrap to 0 after 65535, as common clients expect.
fn block_number(i: u64) -> u16 {
    ((i + 1) % 65536) as u16
}
