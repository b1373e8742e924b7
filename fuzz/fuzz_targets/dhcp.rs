//! DHCP messages from the LAN (ProxyDHCP for firmware network boot):
//! answering must never panic, and no answer ever gives an address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use plasmd::netboot::proxy::{answer, BootInfo, Port};

fuzz_target!(|data: &[u8]| {
    let boot = BootInfo {
        server: std::net::Ipv4Addr::new(192, 0, 2, 1),
        uefi_file: "stage1.efi".into(),
        uefi_url: "http://192.0.2.1:8080/_netboot/stage1.efi".into(),
        uefi: true,
        raspberry_pi: true,
    };
    for port in [Port::Dhcp, Port::Pxe] {
        if let Some((reply, _)) = answer(data, port, &boot) {
            // yiaddr: bytes 16..20 of a BOOTP message.
            assert_eq!(&reply[16..20], &[0, 0, 0, 0], "an answer gave an address");
        }
    }
});
