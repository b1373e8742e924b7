//! plasmd's TFTP server (for firmware network boot) against a client no one
//! here wrote, curl's `tftp://`, with the block sizes firmware uses; and
//! against small raw clients that lose an ACK or vanish. Files outside the
//! root and missing files are refused. Real UDP on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tftp::{ack, request};
use common::*;
use plasmd::netboot::tftp::TftpServer;

/// A 3.2 MB file of distinct blocks: more than 65535 blocks at 8 bytes
/// would be too slow, but it crosses many windows at every size.
fn stage1(root: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..3_200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("uki.efi"), &data).unwrap();
    data
}

fn curl(port: u16, path: &str, extra: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30"])
        .args(extra)
        .arg(format!("tftp://127.0.0.1:{port}/{path}"))
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TFTP server on a port of its own, serving a netboot root holding a
/// stage-1 (whose bytes are returned), with its counters.
fn serving(
    name: &str,
) -> (
    TempDir,
    std::path::PathBuf,
    Vec<u8>,
    plasmd::metrics::NetbootMetrics,
    TftpServer,
) {
    let dir = TempDir::new(name);
    let root = dir.path().join("netboot");
    std::fs::create_dir_all(&root).unwrap();
    let data = stage1(&root);
    let metrics = plasmd::metrics::NetbootMetrics::default();
    let server = TftpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![root.clone()],
        metrics.clone(),
    )
    .unwrap();
    (dir, root, data, metrics, server)
}

#[test]
#[ignore = "tier packages: needs curl; bash tests/run installs it"]
fn curl_fetches_byte_exact_at_every_block_size_and_is_refused_outside_the_root() {
    let (dir, root, data, metrics, server) = serving("tftp-curl");
    let port = server.local_addr().port();
    std::fs::write(dir.path().join("secret"), b"not for tftp").unwrap();

    for blksize in [None, Some("512"), Some("1468"), Some("8192")] {
        let extra: Vec<&str> = blksize.map_or(vec![], |b| vec!["--tftp-blksize", b]);
        let (ok, got, err) = curl(port, "uki.efi", &extra);
        assert!(ok, "blksize {blksize:?}: {err}");
        assert!(got == data, "blksize {blksize:?}: {} bytes", got.len());
    }
    // A file whose size is a multiple of the block: it ends with an empty
    // block.
    std::fs::write(root.join("even"), vec![5u8; 1024]).unwrap();
    let (ok, got, err) = curl(port, "even", &[]);
    assert!(ok && got == vec![5u8; 1024], "{err}");
    // Counted for /metrics: the five whole transfers and their bytes (the
    // last ACK may still be on its way when curl exits).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.tftp_transfers.get() < 5 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.tftp_transfers.get(), 5);
    assert_eq!(metrics.tftp_bytes.get(), 4 * data.len() as u64 + 1024);

    for path in ["../secret", "missing.efi", "%2e%2e/secret"] {
        let (ok, got, _) = curl(port, path, &[]);
        assert!(!ok && got.is_empty(), "{path} was served");
    }
}

#[test]
fn a_lost_ack_is_made_up_for_and_a_vanished_client_costs_little() {
    let (_dir, _root, data, _metrics, server) = serving("tftp-raw");
    let port = server.local_addr().port();

    // The window and block firmware asks for; the client's first ACK of
    // data is "lost" (never sent): the window comes again.
    let opts = [("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")];
    let (s, oack, tid) = request(port, "uki.efi", &opts);
    assert_eq!(&oack[..2], &[0, 6], "an OACK first");
    assert!(String::from_utf8_lossy(&oack).contains("3200000"), "tsize");
    ack(&s, tid, 0);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut expected: u16 = 1;
    let mut dropped = false;
    loop {
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 3]);
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        if block != expected {
            continue; // a block sent again
        }
        got.extend_from_slice(&buf[4..n]);
        expected = expected.wrapping_add(1);
        let last = n - 4 < 1468;
        if block.is_multiple_of(4) || last {
            if block == 8 && !dropped {
                // Pretend this ACK was lost: nothing is sent back, and the
                // blocks after 4 come again once the server times out.
                dropped = true;
                expected = 5;
                got.truncate(4 * 1468);
                continue;
            }
            ack(&s, tid, block);
        }
        if last {
            break;
        }
    }
    assert!(dropped);
    assert!(got == data, "{} bytes", got.len());

    // A client that asks and vanishes: the server gives up after a couple
    // of sends of one small packet, and serves the next client.
    let (_gone, first, _) = request(port, "uki.efi", &[]);
    assert_eq!(
        first.len(),
        4 + 512,
        "one block, nothing more, before an ACK"
    );
    let (s, first, tid) = request(port, "uki.efi", &[]);
    assert_eq!(&first[4..], &data[..512]);
    ack(&s, tid, 1);
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[4..n], &data[512..1024]);

    // A client that acknowledged block 1 and then only ever says so again
    // (three times a second): that buys no time. Block 2 comes once a
    // second, five times in all, and then the transfer is given up.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut block_2 = 1; // the one just received
    while started.elapsed() < Duration::from_secs(9) {
        ack(&s, tid, 1);
        if let Ok(n) = s.recv(&mut buf) {
            if n >= 4 && buf[..4] == [0, 3, 0, 2] {
                block_2 += 1;
            }
        }
    }
    assert_eq!(block_2, plasmd::netboot::tftp::MAX_TRIES);
}
