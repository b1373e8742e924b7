//! Boards booting from what they discover, under QEMU arm64: the board
//! image serves a release signed by a test key, a second guest boots the
//! phase-boot stage 1 with only its channel, arch and the release key on
//! the kernel command line, and must kexec into the release (its stage 2
//! prints a marker chosen at random) or refuse it and say why. Each case
//! is one run of `image/try-boot`, the script a user runs to try this by
//! hand; the two guests share a virtual LAN inside a network namespace the
//! script creates and removes, so nothing leaves the machine.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// One `image/try-boot` run; stopped with SIGTERM (so the script removes
/// its guests and namespace) if the test ends first.
struct TryBoot(Proc);

/// Held by each test for its runs: they share the images and the work
/// directory, and 2 cores carry one set of guests at a time.
static GUESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TryBoot {
    fn run(args: &[&str]) -> (i32, String) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/image/try-boot");
        let mut all = vec![script];
        all.extend_from_slice(args);
        let mut t = TryBoot(Proc::spawn_env(
            "try-boot",
            "bash",
            &all,
            &[("PLASMD", PLASMD)],
        ));
        let status = t.0.wait_exit(Duration::from_secs(700));
        thread_sleep_ms(100);
        let out = format!("{}{}", t.0.stdout(), t.0.stderr());
        let code = status.and_then(|s| s.code()).unwrap_or(-1);
        (code, out)
    }
}

impl Drop for TryBoot {
    fn drop(&mut self) {
        if self.0.wait_exit(Duration::ZERO).is_none() {
            self.0.signal(15);
            let _ = self.0.wait_exit(Duration::from_secs(10));
        }
    }
}

fn thread_sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The line of `out` containing `needle`, for the report.
fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines().find(|l| l.contains(needle)).unwrap_or("")
}

#[test]
#[ignore = "tier qemu: boots two arm64 guests in a network namespace, as root (3-4 min); bash tests/run"]
fn boards_find_verify_and_kexec_into_the_signed_release_and_refuse_anything_else() {
    let _guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(is_root(), "needs root for its network namespace");
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "needs iproute2"
    );

    // Zero-config: mDNS on the LAN, nothing but channel, arch and key given.
    let (code, out) = TryBoot::run(&["--marker", "zero-config-boot-ok", "--timeout", "180"]);
    assert_eq!(code, 0, "{out}");
    for step in [
        "found 1 provider",
        "verified",
        "kexec into stable/arm64",
        "stage 2 up: zero-config-boot-ok",
    ] {
        assert!(out.contains(step), "{step:?} missing:\n{out}");
    }
    println!("mDNS: {}", line_with(&out, "marker seen"));

    // The DHT path: no mDNS anywhere; the provider publishes through a
    // `plasmd node` guest and the board bootstraps from it.
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--dht",
        "--marker",
        "dht-boot-ok",
        "--timeout",
        "180",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("mDNS off, 1 bootstrap peer"), "{out}");
    println!("DHT: {}", line_with(&out, "marker seen"));

    // Refusals, each said on the console. A release signed by another key
    // only: nothing is booted.
    let expect = "which is not a release key";
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--other-key",
        "--expect",
        expect,
        "--timeout",
        "120",
    ]);
    assert_eq!(code, 0, "other key: {out}");
    println!("other key: {}", line_with(&out, expect).trim());
    // A provider serving a newer release with one byte changed, up first;
    // a good one joins 10 s later: the bad one is refused, the good booted.
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--bad-provider",
        "tamper",
        "--provider-delay",
        "10",
        "--marker",
        "good-provider-ok",
        "--timeout",
        "180",
    ]);
    assert_eq!(code, 0, "{out}");
    let refused = line_with(&out, "verification failed: stage2.img");
    assert!(refused.contains("192.0.2.3"), "{out}");
    // Its server names the file it has by content (`ETag`), so the chunk
    // request naming the signed one is refused (412) before any byte.
    assert!(refused.contains("412"), "{out}");
    // Not downloaded from again every round.
    assert!(out.contains("skipping http://192.0.2.3:8080/"), "{out}");
    println!("tampered provider: {}", refused.trim());
    println!("then: {}", line_with(&out, "marker seen"));
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--state-floor",
        "99999999999",
        "--expect",
        "is older than 99999999999",
        "--timeout",
        "120",
    ]);
    assert_eq!(code, 0, "rollback: {out}");
    assert!(out.contains("rollback floor on"), "{out}");

    // The provider appears 20 s after the board: the board keeps looking.
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--provider-delay",
        "20",
        "--marker",
        "late-provider-ok",
        "--timeout",
        "200",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no provider of stable/arm64 found yet"),
        "{out}"
    );
    println!("late provider: {}", line_with(&out, "marker seen"));

    // A rack: three boards power on together next to the provider; each
    // serves the chunks it verified to the others while it downloads.
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--boards",
        "3",
        "--marker",
        "rack-boot-ok",
        "--timeout",
        "600",
    ]);
    assert_eq!(code, 0, "{out}");
    // One line per board: "try-boot: board2: phase-boot: verified (19.4
    // MiB from peers, 12.9 MiB from the origin)".
    let shares: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("try-boot: board") && l.contains(": phase-boot: verified ("))
        .collect();
    assert_eq!(shares.len(), 3, "{out}");
    let from_peers = |l: &str| -> f64 {
        let mib = l
            .split("verified (")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        mib.and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no share in {l:?}"))
    };
    assert!(
        shares.iter().any(|l| from_peers(l) > 0.0),
        "no board took chunks from another:\n{out}"
    );
    println!("rack: {}", line_with(&out, "marker seen"));
    for l in shares {
        println!("{l}");
    }

    // The images for real boards are packed from the same stage 1; the
    // Pi's boot.img signed with a key of the operator's (whose public half
    // would be in the Pi's EEPROM), as its HTTP boot needs.
    let work = concat!(env!("CARGO_MANIFEST_DIR"), "/target/try-boot");
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let (rpi_key, rpi_pub) = (format!("{work}/rpi.pem"), format!("{work}/rpi-public.pem"));
    openssl(&["genrsa", "-out", &rpi_key, "2048"]);
    openssl(&["rsa", "-in", &rpi_key, "-pubout", "-out", &rpi_pub]);
    let out = script("image/build-boards")
        .args(["--channel", "stable", "--key", "target/try-boot/fleet.pub"])
        .args(["--rpi-key", &rpi_key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let boards = concat!(env!("CARGO_MANIFEST_DIR"), "/target/boards");
    let mtype = |img: &str, file: &str| {
        let o = std::process::Command::new("mtype")
            .args(["-i", &format!("{boards}/{img}"), file])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/try-boot/fleet.pub"
    ))
    .unwrap();
    let key = key.lines().nth(1).unwrap();
    let cmdline = mtype("rpi/boot.img", "::/cmdline.txt");
    assert!(
        cmdline.contains("phase.channel=stable") && cmdline.contains(key),
        "{cmdline}"
    );
    assert!(mtype("rpi/boot.img", "::/config.txt").contains("initramfs initramfs.gz followkernel"));
    // boot.sig as rpi-eeprom-digest writes it: the image's sha256, ts:,
    // then an RSA-SHA256 signature that openssl checks with the public key.
    let sig = std::fs::read_to_string(format!("{boards}/rpi/boot.sig")).unwrap();
    let lines: Vec<&str> = sig.lines().collect();
    assert_eq!(lines.len(), 3, "{sig}");
    assert_eq!(
        lines[0],
        sha256sum(Path::new(&format!("{boards}/rpi/boot.img")))
    );
    assert!(lines[1].starts_with("ts: "), "{sig}");
    let hex = lines[2].strip_prefix("rsa2048: ").expect("an rsa2048 line");
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(raw.len(), 256, "a 2048-bit signature");
    let sig_bin = format!("{work}/boot.sig.bin");
    std::fs::write(&sig_bin, raw).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &rpi_pub,
        "-signature",
        &sig_bin,
        &format!("{boards}/rpi/boot.img"),
    ]);
    // And the directory `plasmd serve --netboot` takes: the UKI and the
    // Pi's files, its command line left for the provider to fill in.
    assert!(Path::new(&format!("{boards}/netboot/stage1.efi")).is_file());
    let pi_cmdline = std::fs::read_to_string(format!("{boards}/netboot/rpi/cmdline.txt")).unwrap();
    assert!(
        pi_cmdline.contains("plasmd.netboot=template"),
        "{pi_cmdline}"
    );
    assert!(Path::new(&format!("{boards}/netboot/rpi/config.txt")).is_file());
    let extlinux = mtype("extlinux.img", "::/extlinux/extlinux.conf");
    assert!(
        extlinux.contains("initrd /initramfs.gz") && extlinux.contains(key),
        "{extlinux}"
    );
}

#[test]
#[ignore = "tier qemu: boots three arm64 guests in a network namespace, as root (2 min); bash tests/run"]
fn a_board_with_nothing_on_it_boots_through_its_firmware_from_plasmd_serve_netboot() {
    let _guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(is_root(), "needs root for its network namespace");
    // No disk and no kernel: Debian's EDK2 alone, on a LAN whose DHCP
    // server (busybox udhcpd) knows nothing of netboot. PXE first: the
    // provider's ProxyDHCP names the stage-1, its TFTP server sends it.
    let (code, out) = TryBoot::run(&[
        "--netboot",
        "pxe",
        "--marker",
        "netboot-pxe-ok",
        "--timeout",
        "240",
    ]);
    assert_eq!(code, 0, "{out}");
    for step in [
        // The address from the LAN's server, the file from plasmd.
        "Station IP address is 192.0.2.1",
        "NBP filename is stable/arm64/stage1.efi",
        "netboot: uefi_pxe 52:54:00:12:34:10 (DHCP) answered from 192.0.2.1",
        "TFTP: sent stable/arm64/stage1.efi",
        // The stage-1 with the provider's settings, then as any board.
        "looking for stable/arm64",
        "verified",
        "stage 2 up: netboot-pxe-ok",
    ] {
        assert!(out.contains(step), "{step:?} missing:\n{out}");
    }
    println!("PXE: {}", line_with(&out, "marker seen"));
    println!("{}", line_with(&out, "TFTP: sent").trim());

    // UEFI HTTP boot (PXE turned off in the firmware): a URL on the
    // provider's HTTP server instead.
    let (code, out) = TryBoot::run(&[
        "--no-build",
        "--netboot",
        "http",
        "--marker",
        "netboot-http-ok",
        "--timeout",
        "240",
    ]);
    assert_eq!(code, 0, "{out}");
    for step in [
        "netboot: uefi_http 52:54:00:12:34:10 (DHCP) answered",
        "URI: http://192.0.2.1:8080/_netboot/stable/arm64/stage1.efi",
        "stage 2 up: netboot-http-ok",
    ] {
        assert!(out.contains(step), "{step:?} missing:\n{out}");
    }
    assert!(!out.contains("TFTP: sent"), "{out}");
    println!("HTTP boot: {}", line_with(&out, "marker seen"));
}
