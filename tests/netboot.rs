//! `plasmd serve --netboot` as firmware meets it, on 127.0.0.1: DHCP
//! requests from ARM64 UEFI PXE, UEFI HTTP boot and a Raspberry Pi 4 get
//! proxy answers (boot information, never an address); anything else,
//! malformed packets included, gets nothing; the files they name come
//! over TFTP and HTTP with the provider's channel, arch and key in their
//! command lines; `/metrics`, `/status.json` and `plasmd status` count it
//! all. Ports above 1024 (`[netboot] dhcp_port` and friends) so that this
//! runs as an ordinary user; firmware's own 67/69/4011 and broadcast
//! answers are in `tests/boot_qemu.rs`, with real firmware.
//!
//! The Raspberry Pi part replays the bootloader's documented DHCP options
//! and TFTP file order (Raspberry Pi documentation, rpi-eeprom issues
//! #74 and #87); it is not tested on a Pi.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

use common::*;

/// A stand-in for `image/build-stage1`'s UKI: a PE file whose `.cmdline`
/// section holds the template word, padded as the script pads it.
fn template_uki() -> Vec<u8> {
    let cmdline = format!("{:2047}", "console=ttyAMA0 plasmd.netboot=template");
    let mut f = vec![0u8; 0x400];
    f[..2].copy_from_slice(b"MZ");
    f[0x3c] = 0x40;
    f[0x40..0x44].copy_from_slice(b"PE\0\0");
    f[0x46] = 1; // one section
    let s = 0x40 + 4 + 20; // no optional header
    f[s..s + 8].copy_from_slice(b".cmdline");
    f[s + 8..s + 12].copy_from_slice(&2047u32.to_le_bytes());
    f[s + 16..s + 20].copy_from_slice(&2048u32.to_le_bytes());
    f[s + 20..s + 24].copy_from_slice(&0x400u32.to_le_bytes());
    f.extend_from_slice(cmdline.as_bytes());
    f.push(0);
    f
}

/// The Pi 4 boot file set as `image/build-boards` lays it out.
fn pi_files(rpi: &Path) {
    std::fs::create_dir_all(rpi).unwrap();
    for (name, bytes) in [
        ("start4.elf", vec![4u8; 2300]),
        ("fixup4.dat", vec![5u8; 1024]),
        ("config.txt", b"arm_64bit=1\nkernel=vmlinuz\n".to_vec()),
        ("vmlinuz", vec![6u8; 70_000]),
        ("initramfs.gz", vec![7u8; 5000]),
        ("bcm2711-rpi-4-b.dtb", vec![8u8; 900]),
        (
            "cmdline.txt",
            b"console=serial0,115200 plasmd.netboot=template\n".to_vec(),
        ),
    ] {
        std::fs::write(rpi.join(name), bytes).unwrap();
    }
}

const PXE_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x10];
const LAB_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x20];
const HTTP_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x30];
const PI_MAC: [u8; 6] = [0xdc, 0xa6, 0x32, 0x01, 0x36, 0xc2];

/// A DHCP request as the firmware named by `class` and `arch` sends it;
/// `ciaddr` 127.0.0.1 so that the answer comes back to us by unicast
/// (firmware with no address is answered by broadcast).
fn request(
    kind: MessageType,
    mac: &[u8],
    class: &[u8],
    arch: Option<u16>,
    machine: &[u8],
) -> Vec<u8> {
    let mut m = Message::default();
    m.set_xid(0x2026_1207)
        .set_ciaddr(Ipv4Addr::LOCALHOST)
        .set_chaddr(mac);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ClassIdentifier(class.to_vec()));
    if let Some(a) = arch {
        o.insert(DhcpOption::ClientSystemArchitecture(a.into()));
    }
    if !machine.is_empty() {
        o.insert(DhcpOption::ClientMachineIdentifier(machine.to_vec()));
    }
    m.to_vec().unwrap()
}

/// Sends `packet` to the provider's `port` and waits up to `wait` for an
/// answer on the client's socket.
fn ask(client: &UdpSocket, port: u16, packet: &[u8], wait: Duration) -> Option<Message> {
    client.set_read_timeout(Some(wait)).unwrap();
    client.send_to(packet, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 1500];
    let n = client.recv(&mut buf).ok()?;
    Some(Message::from_bytes(&buf[..n]).expect("a DHCP answer parses"))
}

/// The boot file an answer names (up to the NUL).
fn file(m: &Message) -> String {
    let f = m.fname_str().and_then(|f| f.ok()).unwrap_or_default();
    f.split('\0').next().unwrap_or("").to_string()
}

fn vendor(m: &Message) -> Vec<u8> {
    match m.opts().get(OptionCode::VendorExtensions) {
        Some(DhcpOption::VendorExtensions(v)) => v.clone(),
        _ => vec![],
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn firmware_gets_boot_answers_and_files_and_everything_else_nothing() {
    let dir = TempDir::new("netboot");
    let artifacts = artifacts(dir.path());
    let (key, _) = keygen(dir.path(), "fleet");
    let key_line = std::fs::read_to_string(&key).unwrap();
    let key_line = key_line.lines().nth(1).unwrap().to_string();
    let nb = dir.path().join("netboot");
    std::fs::create_dir_all(&nb).unwrap();
    std::fs::write(nb.join("stage1.efi"), template_uki()).unwrap();
    pi_files(&nb.join("rpi"));
    // The client's port is the one above the server's, as 68 is above 67.
    let (dhcp, pxe, tftp) = (free_udp(), free_udp(), free_udp());
    let client = UdpSocket::bind(("127.0.0.1", dhcp + 1)).unwrap();
    let config = dir.path().join("plasmd.toml");
    std::fs::write(
        &config,
        format!(
            "[netboot]\nenabled = true\ndir = {nb:?}\nchannel = \"stable/arm64\"\n\
             dhcp_port = {dhcp}\npxe_port = {pxe}\ntftp_port = {tftp}\n\n\
             [[netboot.group]]\nname = \"lab\"\nchannel = \"testing\"\nmacs = [\"52:54:00:12:34:20\"]\n"
        ),
    )
    .unwrap();
    let s = serve(
        dir.path(),
        &artifacts,
        &["--config", config.to_str().unwrap(), "--release-key", &key],
    );
    s.proc
        .wait_stdout("netboot: answering firmware", Duration::from_secs(10));
    let quick = Duration::from_millis(700);
    let answer = Duration::from_secs(5);

    // Not network boot, or not ours: no answer. An ordinary DHCP client,
    // an x86 PXE client, a PXE class without an architecture.
    for (class, arch) in [
        (&b"android-dhcp-13"[..], None),
        (b"PXEClient:Arch:00007:UNDI:003016", Some(7)),
        (b"PXEClient:Arch:00011:UNDI:003000", None),
    ] {
        let r = request(MessageType::Discover, &PXE_MAC, class, arch, b"");
        assert!(
            ask(&client, dhcp, &r, quick).is_none(),
            "{class:?} answered"
        );
    }
    // Malformed: truncated, an option running past the end, option 55
    // of 255 bytes with no end, ten zero bytes, a lie about the hardware
    // address length. Dropped, and the server keeps answering.
    let good = request(
        MessageType::Discover,
        &PXE_MAC,
        b"PXEClient:Arch:00011:UNDI:003000",
        Some(11),
        &[0; 17],
    );
    let mut bad: Vec<Vec<u8>> = vec![good[..100].to_vec(), good[..241].to_vec(), vec![0; 10]];
    // The last option before the end (97, the machine id) claims 250
    // bytes: it runs past the packet.
    let mut past_end = good.clone();
    let at = past_end.len() - 1 - 17 - 1;
    assert_eq!((past_end[at - 1], past_end[at]), (97, 17));
    past_end[at] = 250;
    bad.push(past_end);
    // No end option.
    bad.push(good[..good.len() - 1].to_vec());
    let mut huge_55 = good[..240].to_vec();
    huge_55.extend_from_slice(&[53, 1, 1, 55, 255]);
    huge_55.extend(std::iter::repeat_n(1u8, 255));
    bad.push(huge_55);
    let mut hlen = good.clone();
    hlen[2] = 200;
    bad.push(hlen);
    for (i, b) in bad.iter().enumerate() {
        assert!(
            ask(&client, dhcp, b, quick).is_none(),
            "malformed packet {i} answered"
        );
    }

    // ARM64 UEFI PXE: a proxy offer, no address, the stage-1 by TFTP.
    let offer = ask(&client, dhcp, &good, answer).expect("a proxy offer");
    assert_eq!(offer.xid(), 0x2026_1207);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "never an address");
    assert_eq!(offer.siaddr(), Ipv4Addr::LOCALHOST, "the server it came to");
    assert_eq!(file(&offer), "stable/arm64/stage1.efi");
    assert_eq!(
        vendor(&offer),
        vec![6, 1, 8],
        "boot this file, no discovery"
    );
    // A board of the lab group gets the testing channel's stage-1.
    let lab = request(
        MessageType::Discover,
        &LAB_MAC,
        b"PXEClient:Arch:00011:UNDI:003000",
        Some(11),
        b"",
    );
    let offer = ask(&client, dhcp, &lab, answer).expect("lab offer");
    assert_eq!(file(&offer), "testing/arm64/stage1.efi");
    // Firmware that asks again on 4011 gets an ACK there.
    let again = request(
        MessageType::Request,
        &PXE_MAC,
        b"PXEClient:Arch:00011:UNDI:003000",
        Some(11),
        b"",
    );
    let ack = ask(&client, pxe, &again, answer).expect("an ACK on the PXE port");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(file(&ack), "stable/arm64/stage1.efi");

    // The stage-1 over TFTP, as EDK2 fetches it (a size probe it aborts,
    // then the file): its command line now says this provider's channel,
    // arch and key, and only that changed.
    let uki = template_uki();
    assert_eq!(
        common::tftp::probe(tftp, "stable/arm64/stage1.efi"),
        Ok(uki.len() as u64)
    );
    let got = common::tftp::get(tftp, "stable/arm64/stage1.efi", 1468).unwrap();
    assert_eq!(got.len(), uki.len());
    assert_eq!(got[..0x400], uki[..0x400]);
    let cmdline = String::from_utf8_lossy(&got[0x400..0x400 + 2047]).to_string();
    assert_eq!(
        cmdline.trim_end(),
        format!(
            "console=ttyAMA0 plasmd.netboot=1 phase.channel=stable phase.arch=arm64 phase.release_key={key_line}"
        )
    );
    let lab_uki = common::tftp::get(tftp, "testing/arm64/stage1.efi", 512).unwrap();
    assert!(String::from_utf8_lossy(&lab_uki).contains("phase.channel=testing phase.arch=arm64"));
    // Nothing outside the prepared tree and the Pi's files.
    for outside in [
        "../plasmd.toml",
        "stable/arm64/../../../fleet.key",
        "stage1.efi",
    ] {
        assert!(common::tftp::get(tftp, outside, 512).is_err(), "{outside}");
    }

    // UEFI HTTP boot: a URL on the HTTP server, serving the same file.
    let http_boot = request(
        MessageType::Discover,
        &HTTP_MAC,
        b"HTTPClient:Arch:00019:UNDI:003000",
        Some(19),
        b"",
    );
    let offer = ask(&client, dhcp, &http_boot, answer).expect("an HTTP boot offer");
    let url = file(&offer);
    assert_eq!(
        url,
        format!(
            "http://127.0.0.1:{}/_netboot/stable/arm64/stage1.efi",
            s.http_port
        )
    );
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    let (status, head, body) = http(s.http_port, "HEAD", "/_netboot/stable/arm64/stage1.efi");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/efi"), "{head}");
    assert!(body.is_empty());
    let (status, body) = get_url(&url);
    assert_eq!((status, body == got), (200, true));

    // The Raspberry Pi 4 bootloader: option 93 = 0, its vendor class, and
    // option 97 starting "RPi4"; the answer's option 43 names "Raspberry
    // Pi Boot" and siaddr the TFTP server.
    let mut machine = b"RPi4".to_vec();
    machine.extend_from_slice(&[
        0x00, 0x31, 0x14, 0x03, 0x32, 0x01, 0x36, 0xc2, 0x9f, 0xfe, 0xfd, 0xef,
    ]);
    let pi = request(
        MessageType::Discover,
        &PI_MAC,
        b"PXEClient:Arch:00000:UNDI:002001",
        Some(0),
        &machine,
    );
    let offer = ask(&client, dhcp, &pi, answer).expect("a Pi offer");
    let menu = vendor(&offer);
    assert!(
        menu.windows(17).any(|w| w == b"Raspberry Pi Boot"),
        "{menu:?}"
    );
    assert_eq!(offer.siaddr(), Ipv4Addr::LOCALHOST);
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    // Its TFTP requests in the documented order: the serial-prefixed
    // start files first (absent: it drops the prefix), config.txt, the
    // recovery files (absent), the start files, fixup, config.txt again,
    // the initramfs, the DTB, cmdline.txt, the kernel; each probed for
    // its size first and then fetched with blksize 1024.
    let rpi = nb.join("rpi");
    for name in [
        "9ffefdef/start4.elf",
        "9ffefdef/start.elf",
        "config.txt",
        "recover4.elf",
        "recovery.elf",
        "start4.elf",
        "start.elf",
        "fixup4.dat",
        "config.txt",
        "initramfs.gz",
        "bcm2711-rpi-4-b.dtb",
        "cmdline.txt",
        "vmlinuz",
    ] {
        let probed = common::tftp::probe(tftp, name);
        let got = common::tftp::get(tftp, name, 1024);
        if name == "cmdline.txt" {
            let text = String::from_utf8(got.unwrap()).unwrap();
            assert_eq!(
                text,
                format!(
                    "console=serial0,115200 plasmd.netboot=1 phase.channel=stable phase.arch=arm64 phase.release_key={key_line}\n"
                )
            );
        } else if rpi.join(name).is_file() {
            let want = std::fs::read(rpi.join(name)).unwrap();
            assert_eq!(probed, Ok(want.len() as u64), "{name}");
            assert!(got.unwrap() == want, "{name}");
        } else {
            assert!(probed.is_err() && got.is_err(), "{name} served");
        }
    }

    // What operators see: requests by client type, TFTP bytes, boards.
    let (_, _, metrics) = http(s.http_port, "GET", "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        value("plasmd_netboot_requests_total{client=\"uefi_pxe\"}"),
        3
    );
    assert_eq!(
        value("plasmd_netboot_requests_total{client=\"uefi_http\"}"),
        1
    );
    assert_eq!(
        value("plasmd_netboot_requests_total{client=\"raspberry_pi\"}"),
        1
    );
    assert!(value("plasmd_netboot_requests_total{client=\"other\"}") >= 3);
    assert_eq!(value("plasmd_netboot_boards_total"), 4);
    assert!(value("plasmd_netboot_tftp_bytes_total") > 2 * uki.len() as u64);
    let (_, _, status) = http(s.http_port, "GET", "/status.json");
    let status = String::from_utf8_lossy(&status);
    assert!(
        status.contains("\"netboot\":{\"uefi_pxe\":3,\"uefi_http\":1,\"raspberry_pi\":1"),
        "{status}"
    );
    let out = run(
        PLASMD,
        &[
            "status",
            "--url",
            &format!("http://127.0.0.1:{}", s.http_port),
        ],
    );
    assert!(
        out.stdout
            .contains("Netboot: 4 board(s) answered: 3 UEFI PXE, 1 UEFI HTTP, 1 Raspberry Pi"),
        "{}",
        out.stdout
    );
    // Still serving after all of that.
    assert!(ask(&client, dhcp, &good, answer).is_some());
}
