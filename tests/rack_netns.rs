//! A small rack booting at once, as `bench/storm` builds it: 8 boards in
//! network namespaces on a bridge, every link shaped to 100 Mbit/s both
//! ways, one provider of a signed 16-chunk release. Every board downloads
//! it with `phase-discover --release-key --fetch-all --seed` (the engine
//! `phase-boot` uses) and ends with the release byte for byte (the script
//! checks each file's sha256); the provider sends less than half of what
//! eight copies would be, and boards took chunks from each other. Needs
//! root (tests/run runs it). No timing asserts: the figures are the
//! benchmark's.

mod common;

use common::*;

const BOARDS: usize = 8;
const SIZE_MIB: u64 = 16;

#[test]
#[ignore = "tier root: creates network namespaces; bash tests/run runs it as root"]
fn a_rack_of_boards_shares_a_signed_release_and_the_provider_sends_it_about_once() {
    assert!(is_root(), "needs root: run bash tests/run");
    need_tool("tc", "iproute2");
    let dir = TempDir::new("rack");
    let work = dir.path().join("storm");
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/storm.py"))
        .args([PLASMD, DISCOVER])
        .env("BOARDS", BOARDS.to_string())
        .env("SIZE_MIB", SIZE_MIB.to_string())
        .env("SKIP_ORIGIN", "1")
        .env("LINGER", "10")
        .env("CAP", "300")
        .env("WORK", &work)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("storm: boards={BOARDS} ")))
        .unwrap_or_else(|| panic!("no storm: line in {stdout}"));
    let origin_bytes: u64 = line
        .rsplit("origin_bytes=")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("no origin_bytes in {line}"));
    let copies = BOARDS as u64 * (SIZE_MIB << 20);
    assert!(
        origin_bytes < copies / 2,
        "the provider sent {origin_bytes} bytes, {BOARDS} copies are {copies}"
    );
    // Each board says where its bytes came from.
    let mut from_peers = 0;
    for i in 0..BOARDS {
        let log = std::fs::read_to_string(work.join(format!("b{i}-peer-{BOARDS}.log")))
            .unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("MiB from peers") && !l.contains(": 0.0 MiB from peers"))
        {
            from_peers += 1;
        }
    }
    assert!(from_peers >= 1, "no board took chunks from another");
    println!("{from_peers} of {BOARDS} boards took chunks from others");
}
