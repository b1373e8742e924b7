//! ProxyDHCP (PXE 2.1 proxy mode, RFC 4578): the answer to a network-boot
//! client's DHCP message that tells its firmware what to load and from
//! where, and never gives it an address, so it works beside whatever DHCP
//! server the LAN has (its address comes from there; firmware waits for
//! both). Only three kinds of client are answered:
//!
//! - ARM64 UEFI PXE (option 93 = 11, vendor class `PXEClient…`): the
//!   stage-1 over TFTP, with option 43 = `06 01 08` (use this file, no
//!   discovery), so no second exchange on port 4011 is needed;
//! - ARM64 UEFI HTTP boot (93 = 19, `HTTPClient…`): a URL on plasmd's HTTP
//!   server;
//! - the Raspberry Pi 4/5 bootloader (93 = 0, `PXEClient…`, option 97
//!   starting with `RPi4` or `RPi5`): option 43 naming "Raspberry Pi Boot",
//!   the TFTP server in `siaddr`.
//!
//! Everything else, and anything malformed, gets no answer. Messages are
//! read and written with `dhcproto`; this module touches no socket (which
//! port a message came on, and where the answer goes, is the caller's).

use std::net::Ipv4Addr;

use dhcproto::v4::{borrowed, DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;

/// Where firmware finds its first file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// This provider's address on the board's LAN (TFTP and HTTP server).
    pub server: Ipv4Addr,
    /// The UEFI stage-1 over TFTP, e.g. `stage1.efi`.
    pub uefi_file: String,
    /// The UEFI stage-1 over HTTP, e.g. `http://192.0.2.1:8080/_netboot/stage1.efi`.
    pub uefi_url: String,
    /// Which kinds of firmware there is something for (UEFI: a stage-1;
    /// the Raspberry Pi: its file set); the others get no answer, so that
    /// another server on the LAN may give one.
    pub uefi: bool,
    pub raspberry_pi: bool,
}

/// The kinds of firmware answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    UefiPxe,
    UefiHttp,
    RaspberryPi,
}

impl Firmware {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::UefiPxe => "uefi_pxe",
            Firmware::UefiHttp => "uefi_http",
            Firmware::RaspberryPi => "raspberry_pi",
        }
    }
}

/// Which port a message came in on: DHCP's (67) is answered for
/// DISCOVERs, PXE's (4011) for REQUESTs and INFORMs (firmware that did not
/// take the first answer asks there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Dhcp,
    Pxe,
}

/// ARM64 UEFI (RFC 4578 / IANA processor architecture types).
const ARCH_ARM64_UEFI: u16 = 0x0b;
/// ARM64 UEFI, HTTP boot.
const ARCH_ARM64_UEFI_HTTP: u16 = 0x13;
/// The x86 BIOS code, which the Raspberry Pi bootloader sends.
const ARCH_X86_BIOS: u16 = 0;
/// The longest boot file name or URL: the `file` field's 128 bytes less
/// its NUL.
pub const MAX_FILE: usize = 127;
/// The shortest BOOTP message (RFC 1542 2.1).
const MIN_REPLY: usize = 300;
/// Option 43 for UEFI PXE: PXE_DISCOVERY_CONTROL = 8, boot the file named.
const PXE_USE_FILE: [u8; 3] = [6, 1, 8];

/// The options of a request that decide the answer, read raw.
#[derive(Debug, Default)]
struct Asked {
    msg_type: Option<u8>,
    class: Vec<u8>,
    arch: Option<u16>,
    machine: Vec<u8>,
}

/// Option 53's DISCOVER, REQUEST and INFORM.
const DISCOVER: u8 = 1;
const REQUEST: u8 = 3;
const INFORM: u8 = 8;

/// Where the options start: after the 236-byte header and the magic
/// cookie (RFC 2131 3).
const OPTIONS_AT: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Reads options 53, 60, 93 and 97 from the request's raw bytes, walking
/// every option on the way: a cookie missing, an option running past the
/// end, or no end option makes the whole request malformed (`None`), so a
/// damaged packet is dropped rather than half read. (`dhcproto`'s typed
/// decoding asserts on lengths a hostile packet can get wrong, and its
/// lazy reader stops quietly at a bad one, so neither reads requests.)
fn asked(request: &[u8]) -> Option<Asked> {
    if request.get(OPTIONS_AT - 4..OPTIONS_AT) != Some(&MAGIC_COOKIE[..]) {
        return None;
    }
    let mut a = Asked::default();
    let mut at = OPTIONS_AT;
    loop {
        match *request.get(at)? {
            0 => at += 1, // pad
            255 => return Some(a),
            code => {
                let len = usize::from(*request.get(at + 1)?);
                let data = request.get(at + 2..at + 2 + len)?;
                match code {
                    53 => a.msg_type = data.first().copied(),
                    60 => a.class = data.to_vec(),
                    // A list of architectures: the first one is the client's.
                    93 => a.arch = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])),
                    97 => a.machine = data.to_vec(),
                    _ => {}
                }
                at += 2 + len;
            }
        }
    }
}

/// The kind of firmware a request comes from, if it is one we answer.
fn firmware_of(a: &Asked) -> Option<Firmware> {
    let pxe = a.class.starts_with(b"PXEClient");
    let machine = a.machine.as_slice();
    match a.arch? {
        ARCH_ARM64_UEFI if pxe => Some(Firmware::UefiPxe),
        ARCH_ARM64_UEFI_HTTP if a.class.starts_with(b"HTTPClient") => Some(Firmware::UefiHttp),
        ARCH_X86_BIOS if pxe && (machine.starts_with(b"RPi4") || machine.starts_with(b"RPi5")) => {
            Some(Firmware::RaspberryPi)
        }
        _ => None,
    }
}

/// Where an answer goes, decided from the request (RFC 2131 4.1); the
/// ports are the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// A relay agent (`giaddr`): it carries the answer to the client's LAN.
    Relay(Ipv4Addr),
    /// A client that has an address (`ciaddr`).
    Client(Ipv4Addr),
    /// Broadcast: firmware has no address yet.
    Broadcast,
    /// Back to where the request came from (port 4011).
    Sender,
}

/// An answer, and what the caller needs to send and count it.
#[derive(Debug)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub firmware: Firmware,
    /// The client's hardware address.
    pub mac: Vec<u8>,
    pub to: To,
}

/// The answer to `request` (a DHCP message that came in on `port`), or
/// `None` when it is not ours to answer or does not parse.
pub fn answer(request: &[u8], port: Port, boot: &BootInfo) -> Option<(Vec<u8>, Firmware)> {
    answer_with(request, port, |_| boot.clone()).map(|a| (a.bytes, a.firmware))
}

/// [`answer`], with the boot information chosen by the client's hardware
/// address (`boot` is called only for a request we answer); also says
/// where the answer goes.
pub fn answer_with(
    request: &[u8],
    port: Port,
    boot: impl FnOnce(&[u8]) -> BootInfo,
) -> Option<Answer> {
    let msg = borrowed::Message::new(request).ok()?;
    // The hardware address is at most 16 bytes; a larger length is a lie
    // (and would read past the field).
    if msg.opcode() != Opcode::BootRequest || msg.hlen() > 16 {
        return None;
    }
    let a = asked(request)?;
    let kind = match (a.msg_type?, port) {
        (DISCOVER, Port::Dhcp) => MessageType::Offer,
        (REQUEST | INFORM, Port::Pxe) => MessageType::Ack,
        _ => return None,
    };
    let firmware = firmware_of(&a)?;
    let mac = msg.chaddr().get(..usize::from(msg.hlen()))?.to_vec();
    let boot = &boot(&mac);
    let served = match firmware {
        Firmware::UefiPxe | Firmware::UefiHttp => boot.uefi,
        Firmware::RaspberryPi => boot.raspberry_pi,
    };
    if !served {
        return None;
    }
    let file = match firmware {
        Firmware::UefiPxe => boot.uefi_file.as_str(),
        Firmware::UefiHttp => boot.uefi_url.as_str(),
        Firmware::RaspberryPi => "",
    };
    // The file field holds 128 bytes with its NUL (`dhcproto` would panic
    // on a longer one); the names plasmd makes always fit (`server`).
    if file.len() > MAX_FILE {
        return None;
    }
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_xid(msg.xid())
        .set_flags(msg.flags())
        .set_giaddr(msg.giaddr())
        .set_chaddr(msg.chaddr())
        // No address: that is the LAN's DHCP server's to give.
        .set_yiaddr(Ipv4Addr::UNSPECIFIED)
        .set_siaddr(boot.server)
        .set_sname_str(boot.server.to_string())
        .set_fname_str(file);
    let (class, vendor) = match firmware {
        Firmware::UefiPxe => (&b"PXEClient"[..], Some(PXE_USE_FILE.to_vec())),
        Firmware::UefiHttp => (&b"HTTPClient"[..], None),
        Firmware::RaspberryPi => (&b"PXEClient"[..], Some(raspberry_pi_menu())),
    };
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(boot.server));
    opts.insert(DhcpOption::ClassIdentifier(class.to_vec()));
    if let Some(v) = vendor {
        opts.insert(DhcpOption::VendorExtensions(v));
    }
    // The client's machine id back, as PXE servers do.
    if !a.machine.is_empty() {
        opts.insert(DhcpOption::ClientMachineIdentifier(a.machine.clone()));
    }
    let mut bytes = reply.to_vec().ok()?;
    // RFC 1542 2.1: a BOOTP message is at least 300 bytes; some PXE ROMs
    // drop shorter ones (bytes after the end option are padding).
    if bytes.len() < MIN_REPLY {
        bytes.resize(MIN_REPLY, 0);
    }
    let to = match port {
        Port::Pxe => To::Sender,
        Port::Dhcp if !msg.giaddr().is_unspecified() => To::Relay(msg.giaddr()),
        Port::Dhcp if !msg.ciaddr().is_unspecified() => To::Client(msg.ciaddr()),
        Port::Dhcp => To::Broadcast,
    };
    Some(Answer {
        bytes,
        firmware,
        mac,
        to,
    })
}

/// Option 43 as the Raspberry Pi bootloader looks for it: a PXE boot menu
/// whose one entry is "Raspberry Pi Boot" (dnsmasq's
/// `pxe-service=0,"Raspberry Pi Boot"`, the form the Pi documentation
/// uses).
fn raspberry_pi_menu() -> Vec<u8> {
    const LABEL: &[u8] = b"Raspberry Pi Boot";
    let mut v = vec![6, 1, 3]; // discovery control
    v.extend_from_slice(&[10, 4, 0]); // menu prompt: no timeout …
    v.extend_from_slice(b"PXE"); // … and its text
    v.extend_from_slice(&[9, (LABEL.len() + 3) as u8, 0, 0, LABEL.len() as u8]);
    v.extend_from_slice(LABEL); // boot menu: type 0, the label
    v.push(255);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, Flags, OptionCode};
    use dhcproto::Decodable;

    fn boot() -> BootInfo {
        BootInfo {
            server: Ipv4Addr::new(192, 0, 2, 1),
            uefi_file: "stage1.efi".into(),
            uefi_url: "http://192.0.2.1:8080/_netboot/stage1.efi".into(),
            uefi: true,
            raspberry_pi: true,
        }
    }

    /// A DISCOVER as EDK2 sends it (firmware-netboot-notes), or another
    /// client's.
    fn discover(class: &[u8], arch: u16, machine: &[u8]) -> Vec<u8> {
        let mut m = Message::default();
        m.set_xid(0x1234_5678)
            .set_flags(Flags::default().set_broadcast())
            .set_chaddr(&[0x52, 0x54, 0, 0x12, 0x34, 0x10]);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Discover));
        o.insert(DhcpOption::ClassIdentifier(class.to_vec()));
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )));
        o.insert(DhcpOption::ClientMachineIdentifier(machine.to_vec()));
        m.to_vec().unwrap()
    }

    fn reply(bytes: &[u8]) -> Message {
        Message::from_bytes(bytes).unwrap()
    }

    /// The file field as firmware reads it: up to the first NUL.
    fn file(m: &Message) -> &str {
        let f = m.fname_str().unwrap().unwrap();
        f.split('\0').next().unwrap()
    }

    #[test]
    fn uefi_pxe_gets_the_file_and_no_address() {
        let req = discover(b"PXEClient:Arch:00011:UNDI:003000", 11, &[0; 17]);
        let (bytes, fw) = answer(&req, Port::Dhcp, &boot()).expect("answered");
        assert_eq!(fw, Firmware::UefiPxe);
        assert!(bytes.len() >= 300, "at least a BOOTP message's 300 bytes");
        let r = reply(&bytes);
        assert_eq!(r.opcode(), Opcode::BootReply);
        assert_eq!(r.xid(), 0x1234_5678);
        assert_eq!(r.chaddr(), &[0x52, 0x54, 0, 0x12, 0x34, 0x10]);
        assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED, "never an address");
        assert_eq!(r.siaddr(), boot().server);
        assert_eq!(file(&r), "stage1.efi");
        assert_eq!(r.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            r.opts().get(OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8]))
        );
        assert_eq!(
            r.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        // The same client asking on 4011 gets an ACK; a DISCOVER there,
        // or a REQUEST on 67 (meant for the LAN's DHCP server), nothing.
        assert!(answer(&req, Port::Pxe, &boot()).is_none());
        let mut request = Message::from_bytes(&req).unwrap();
        request
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        let request = request.to_vec().unwrap();
        let (bytes, _) = answer(&request, Port::Pxe, &boot()).expect("ACK on 4011");
        assert_eq!(reply(&bytes).opts().msg_type(), Some(MessageType::Ack));
        assert!(answer(&request, Port::Dhcp, &boot()).is_none());

        // Where each answer goes (RFC 2131 4.1).
        let to = |req: &[u8], port| answer_with(req, port, |_| boot()).unwrap().to;
        assert_eq!(to(&req, Port::Dhcp), To::Broadcast);
        assert_eq!(to(&request, Port::Pxe), To::Sender);
        let relay = Ipv4Addr::new(192, 0, 2, 254);
        let mut relayed = Message::from_bytes(&req).unwrap();
        relayed.set_giaddr(relay);
        assert_eq!(to(&relayed.to_vec().unwrap(), Port::Dhcp), To::Relay(relay));
        let client = Ipv4Addr::new(192, 0, 2, 77);
        let mut addressed = Message::from_bytes(&req).unwrap();
        addressed.set_ciaddr(client);
        assert_eq!(
            to(&addressed.to_vec().unwrap(), Port::Dhcp),
            To::Client(client)
        );
    }

    #[test]
    fn http_boot_gets_a_url_and_the_pi_its_menu() {
        let req = discover(b"HTTPClient:Arch:00019:UNDI:003000", 19, &[0; 17]);
        let (bytes, fw) = answer(&req, Port::Dhcp, &boot()).unwrap();
        assert_eq!(fw, Firmware::UefiHttp);
        let r = reply(&bytes);
        assert_eq!(file(&r), boot().uefi_url);
        assert_eq!(
            r.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );

        let pi = discover(
            b"PXEClient:Arch:00000:UNDI:002001",
            0,
            b"RPi4\x00\x03\x11\x12",
        );
        let (bytes, fw) = answer(&pi, Port::Dhcp, &boot()).unwrap();
        assert_eq!(fw, Firmware::RaspberryPi);
        let r = reply(&bytes);
        let Some(DhcpOption::VendorExtensions(menu)) = r.opts().get(OptionCode::VendorExtensions)
        else {
            panic!("no option 43");
        };
        assert_eq!(
            menu.as_slice(),
            b"\x06\x01\x03\x0a\x04\x00PXE\x09\x14\x00\x00\x11Raspberry Pi Boot\xff"
        );
        assert_eq!(r.siaddr(), boot().server);
    }

    #[test]
    fn everything_else_gets_no_answer() {
        // An ordinary DHCP client, an x86 PXE client, an x86 BIOS client
        // that is not a Pi, an HTTP class with a PXE arch.
        for (class, arch, machine) in [
            (&b"android-dhcp-13"[..], 11, &b""[..]),
            (b"PXEClient:Arch:00007:UNDI:003016", 7, b""),
            (b"PXEClient:Arch:00000:UNDI:002001", 0, b"XYZ1"),
            (b"HTTPClient:Arch:00011:UNDI:003000", 11, b""),
        ] {
            let req = discover(class, arch, machine);
            assert!(answer(&req, Port::Dhcp, &boot()).is_none(), "{class:?}");
        }
        // Malformed: truncated, an option longer than the packet, garbage.
        let good = discover(b"PXEClient:Arch:00011:UNDI:003000", 11, &[0; 17]);
        for n in 0..good.len() {
            let _ = answer(&good[..n], Port::Dhcp, &boot());
        }
        // The last option (97) claims more bytes than there are; no end.
        let mut bad_len = good.clone();
        let at = bad_len.len() - 1 - 17 - 1;
        assert_eq!((bad_len[at - 1], bad_len[at]), (97, 17));
        bad_len[at] = 250;
        assert!(answer(&bad_len, Port::Dhcp, &boot()).is_none());
        assert!(answer(&good[..good.len() - 1], Port::Dhcp, &boot()).is_none());
        let mut huge_55 = good[..240].to_vec();
        huge_55.extend_from_slice(&[53, 1, 1, 55, 255]);
        huge_55.extend(std::iter::repeat_n(1u8, 255));
        huge_55.push(255);
        assert!(answer(&huge_55, Port::Dhcp, &boot()).is_none());
        assert!(answer(&[0u8; 10], Port::Dhcp, &boot()).is_none());
        // A hardware address length past its 16-byte field.
        let mut lie = good.clone();
        lie[2] = 255;
        assert!(answer(&lie, Port::Dhcp, &boot()).is_none());
        assert!(answer(&good, Port::Dhcp, &boot()).is_some());
        // Nothing for UEFI here: another server may answer it.
        let no_uefi = BootInfo {
            uefi: false,
            ..boot()
        };
        assert!(answer(&good, Port::Dhcp, &no_uefi).is_none());
    }
}
