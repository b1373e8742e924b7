//! The ProxyDHCP sockets: UDP 67, where firmware broadcasts its DISCOVER,
//! and UDP 4011, where PXE firmware that wants more asks again. What to
//! answer is `proxy`'s; this module receives, learns which interface and
//! local address a request came in on (`IP_PKTINFO`: that address is the
//! server the firmware is told to use, so one plasmd on several LANs
//! names the right one on each), and sends the answer back out of that
//! interface, where `proxy` says (broadcast to port 68 for a client with
//! no address yet, to the relay for a relayed request, back to the sender
//! for port 4011).
//!
//! Runs on a thread of its own with blocking sockets polled with a short
//! timeout, so stopping takes at most that long. Answers are capped per
//! second (a flood of DISCOVERs gets one reply each up to the cap, then
//! silence), and malformed packets are dropped by `proxy`.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};

use super::proxy::{self, Answer, BootInfo, Firmware, Port, To};
use super::DhcpListen;

/// Answers sent per second at most, all clients together: a rack powering
/// on asks a few times each; more than this is a flood.
const MAX_ANSWERS_PER_SEC: u32 = 200;
/// How often the thread looks at its stop flag, in milliseconds.
const POLL_MS: u16 = 200;
/// A DHCP message is at most 576 bytes unless the client says more
/// (EDK2: 1472); a larger datagram is read truncated and dropped.
const MAX_PACKET: usize = 1500;

/// Why the ProxyDHCP could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("ProxyDHCP: cannot listen on {0}: {1}")]
    Bind(SocketAddrV4, std::io::Error),
    #[error("ProxyDHCP: cannot set up the socket on {0}: {1}")]
    Setup(SocketAddrV4, nix::Error),
    #[error("ProxyDHCP: cannot start: {0}")]
    Start(std::io::Error),
}

/// What to tell a client: its boot information given the server address
/// its request came in on and its hardware address. Also told of each
/// answer sent (for counters).
pub trait Boards: Send + 'static {
    fn boot_info(&self, server: Ipv4Addr, mac: &[u8]) -> BootInfo;
    fn answered(&self, _firmware: Firmware, _mac: &[u8]) {}
    fn ignored(&self) {}
}

/// A running ProxyDHCP.
pub struct DhcpServer {
    addrs: (SocketAddrV4, SocketAddrV4),
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn open(addr: SocketAddrV4) -> Result<UdpSocket, DhcpError> {
    let sock = UdpSocket::bind(addr).map_err(|e| DhcpError::Bind(addr, e))?;
    sock.set_broadcast(true)
        .map_err(|e| DhcpError::Bind(addr, e))?;
    setsockopt(&sock, sockopt::Ipv4PacketInfo, &true).map_err(|e| DhcpError::Setup(addr, e))?;
    Ok(sock)
}

fn local(sock: &UdpSocket, asked: SocketAddrV4) -> SocketAddrV4 {
    match sock.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => a,
        _ => asked,
    }
}

impl DhcpServer {
    /// Binds both sockets and starts answering.
    pub fn start(listen: DhcpListen, boards: impl Boards) -> Result<DhcpServer, DhcpError> {
        let dhcp = open(listen.dhcp)?;
        let pxe = open(listen.pxe)?;
        let addrs = (local(&dhcp, listen.dhcp), local(&pxe, listen.pxe));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name("proxydhcp".into())
            .spawn(move || {
                let mut rate = Rate::default();
                let mut buf = [0u8; MAX_PACKET];
                while !stopping.load(Ordering::Relaxed) {
                    let mut fds = [
                        PollFd::new(dhcp.as_fd(), PollFlags::POLLIN),
                        PollFd::new(pxe.as_fd(), PollFlags::POLLIN),
                    ];
                    if poll(&mut fds, PollTimeout::from(POLL_MS)).unwrap_or(0) <= 0 {
                        continue;
                    }
                    let ready = [fds[0].any(), fds[1].any()].map(|r| r.unwrap_or(false));
                    if ready[0] {
                        serve(&dhcp, Port::Dhcp, &listen, &boards, &mut rate, &mut buf);
                    }
                    if ready[1] {
                        serve(&pxe, Port::Pxe, &listen, &boards, &mut rate, &mut buf);
                    }
                }
            })
            .map_err(DhcpError::Start)?;
        Ok(DhcpServer {
            addrs,
            stop,
            thread: Some(thread),
        })
    }

    /// The addresses bound: (DHCP, PXE).
    pub fn local_addrs(&self) -> (SocketAddrV4, SocketAddrV4) {
        self.addrs
    }

    /// Stops answering and waits for the thread (at most [`POLL_MS`]).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The answers-per-second cap.
#[derive(Default)]
struct Rate {
    second: Option<Instant>,
    sent: u32,
}

impl Rate {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.sent = 0;
        }
        self.sent += 1;
        self.sent <= MAX_ANSWERS_PER_SEC
    }
}

/// Reads one datagram from `sock` and answers it if it is ours to.
fn serve(
    sock: &UdpSocket,
    port: Port,
    listen: &DhcpListen,
    boards: &impl Boards,
    rate: &mut Rate,
    buf: &mut [u8; MAX_PACKET],
) {
    let fd = sock.as_raw_fd();
    let mut space = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let (len, from, info) =
        match recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT) {
            Ok(msg) => {
                if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    return;
                }
                let info = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::Ipv4PacketInfo(i) => Some(i),
                        _ => None,
                    })
                });
                (msg.bytes, msg.address, info)
            }
            Err(_) => return,
        };
    let (Some(from), Some(info)) = (from, info) else {
        return;
    };
    let request = &buf[..len];
    // The local address the request came to (for a broadcast, the
    // receiving interface's own): the server the firmware should use.
    let server = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
    let Some(Answer {
        bytes,
        firmware,
        mac,
        to,
    }) = proxy::answer_with(request, port, |mac| boards.boot_info(server, mac))
    else {
        boards.ignored();
        return;
    };
    if !rate.allow() {
        return;
    }
    // Relays listen where servers do; clients on the port above.
    let dest = match to {
        To::Sender => SocketAddrV4::new(from.ip(), from.port()),
        To::Relay(ip) => SocketAddrV4::new(ip, listen.dhcp.port()),
        To::Client(ip) => SocketAddrV4::new(ip, listen.client_port),
        To::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, listen.client_port),
    };
    // Out of the interface the request came in on, whatever the routes
    // say about 255.255.255.255.
    let out = libc::in_pktinfo {
        ipi_ifindex: info.ipi_ifindex,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(server).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsg = [ControlMessage::Ipv4PacketInfo(&out)];
    match sendmsg(
        fd,
        &[IoSlice::new(&bytes)],
        &cmsg,
        MsgFlags::empty(),
        Some(&SockaddrIn::from(dest)),
    ) {
        Ok(_) => {
            log::info!(
                "netboot: {} {} ({}) answered from {server} to {dest}",
                firmware.as_str(),
                mac_text(&mac),
                match port {
                    Port::Dhcp => "DHCP",
                    Port::Pxe => "PXE 4011",
                }
            );
            boards.answered(firmware, &mac);
        }
        Err(e) => log::warn!("netboot: cannot answer {}: {e}", mac_text(&mac)),
    }
}

/// `52:54:00:12:34:10`.
fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
