//! `plasmd serve --mirror stable/arm64`: a second provider that follows
//! the first one's signed releases. What an operator would check by hand:
//! the mirror serves what the origin released, byte for byte; after a new
//! release, boards asking get the new one while a download of the old one
//! already under way completes; the previous release stays reachable by
//! its manifest hash, older ones are deleted; a restart serves what is on
//! disk at once. Real processes on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const MIB: usize = 1024 * 1024;

/// A new `rootfs.img` (distinct per `release`, several chunks long) moved
/// into place, then the directory signed as release `release`; returns the
/// file's bytes and the manifest's.
fn release(key: &str, dir: &Path, release: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..6 * MIB + 1000)
        .map(|i| ((i * 7 + release * 31 + i / MIB) % 251) as u8)
        .collect();
    std::fs::write(dir.join(".rootfs.tmp"), &data).unwrap();
    std::fs::rename(dir.join(".rootfs.tmp"), dir.join("rootfs.img")).unwrap();
    sign(key, dir, &["--release-seq", &release.to_string()]);
    (data, std::fs::read(dir.join("manifest.json")).unwrap())
}

fn get(port: u16, target: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http(port, "GET", target);
    (status, body)
}

fn sha256(bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("mirror-sha-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let sha = sha256sum(&path);
    std::fs::remove_file(&path).unwrap();
    sha
}

fn start_mirror(dir: &Path, root: &Path, key: &str, bootstrap: &str) -> Serve {
    let args = loopback_serve_args(
        dir,
        &[
            "--artifacts",
            root.to_str().unwrap(),
            "--mirror",
            "stable/arm64",
            "--release-key",
            key,
            "--mirror-interval",
            "1",
            "--bootstrap",
            bootstrap,
            // The test holds a download open, unread, across a switch.
            "--http-min-rate",
            "0",
        ],
    );
    start_serve("mirror", PLASMD, &args)
}

#[test]
fn a_mirror_follows_the_release_and_keeps_the_previous_one_for_boards_still_fetching_it() {
    let dir = TempDir::new("mirror");
    let (public, secret) = keygen(dir.path(), "fleet");
    let root = artifacts(dir.path());
    let released = root.join("stable/arm64");
    let (v1, m1) = release(&secret, &released, 1);
    let origin = serve(dir.path(), &root, &[]);

    let mirror_dir = dir.path().join("mirror");
    let mirror_root = mirror_dir.join("artifacts");
    std::fs::create_dir_all(&mirror_root).unwrap();
    let mut mirror = start_mirror(&mirror_dir, &mirror_root, &public, &origin.p2p_addr);
    mirror
        .proc
        .wait_log("now serving release 1", 1, Duration::from_secs(60));
    let port = mirror.http_port;
    assert_eq!(get(port, "/stable/arm64/manifest.json"), (200, m1.clone()));
    assert_eq!(get(port, "/stable/arm64/rootfs.img"), (200, v1.clone()));

    // Counted: every byte of release 1 came from the origin, in chunks the
    // origin counts as served; `plasmd status` says so.
    let release_bytes = v1.len() + 18 + 100_000 + 3;
    let metrics = String::from_utf8(get(port, "/metrics").1).unwrap();
    assert!(
        metrics.contains(&format!(
            "plasmd_chunks_received_bytes_total{{source=\"origin\"}} {release_bytes}\n"
        )),
        "{metrics}"
    );
    let origin_metrics = String::from_utf8(get(origin.http_port, "/metrics").1).unwrap();
    let served = metric(&origin_metrics, "plasmd_chunks_served_bytes_total");
    assert_eq!(served, release_bytes as u64, "{origin_metrics}");
    let status = run(
        PLASMD,
        &["status", "--url", &format!("http://127.0.0.1:{port}")],
    );
    assert!(
        status
            .stdout
            .contains("Release chunks: 0.0 MiB from peers, 6.1 MiB from origins"),
        "{}",
        status.stdout
    );

    // A board starts downloading release 1 from the mirror, and is slow.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        slow,
        "GET /stable/arm64/rootfs.img HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut started = vec![0u8; 64 * 1024];
    slow.read_exact(&mut started).unwrap();

    let (v2, m2) = release(&secret, &released, 2);
    mirror
        .proc
        .wait_log("now serving release 2", 1, Duration::from_secs(60));
    assert_eq!(get(port, "/stable/arm64/manifest.json"), (200, m2.clone()));
    assert_eq!(get(port, "/stable/arm64/rootfs.img"), (200, v2.clone()));

    // The download under way ends with release 1's bytes, whole.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    started.extend_from_slice(&rest);
    let body = started.split_off(
        started
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4,
    );
    assert!(body == v1, "the old download got other bytes");

    // Release 1 by its manifest hash; chunk requests naming release 1's
    // file on the tree are told it moved on.
    let old = format!("/_release/{}/stable/arm64/rootfs.img", sha256(&m1));
    assert_eq!(get(port, &old), (200, v1.clone()));
    let (status, _, _) = http_with(
        port,
        "/stable/arm64/rootfs.img",
        &format!("Range: bytes=0-9\r\nIf-Match: \"{}\"", sha256(&v1)),
    );
    assert_eq!(status, 412);

    // Release 3: release 1 is deleted (2 kept: the served one and the one
    // before), release 2 stays reachable.
    let (_, m3) = release(&secret, &released, 3);
    mirror
        .proc
        .wait_log("now serving release 3", 1, Duration::from_secs(60));
    assert_eq!(get(port, "/stable/arm64/manifest.json"), (200, m3.clone()));
    assert_eq!(get(port, &old).0, 404);
    let previous = format!("/_release/{}/stable/arm64/rootfs.img", sha256(&m2));
    assert_eq!(get(port, &previous), (200, v2));
    let kept = std::fs::read_dir(mirror_root.join(".mirror/stable/arm64"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(kept, 2);

    // A restart serves release 3 from disk, the origin gone.
    let gone = origin.p2p_addr.clone();
    drop(origin);
    mirror.proc.signal(15);
    mirror.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let again = start_mirror(&mirror_dir, &mirror_root, &public, &gone);
    again
        .proc
        .wait_log("serving release 3 from", 1, Duration::from_secs(30));
    assert_eq!(
        get(again.http_port, "/stable/arm64/manifest.json"),
        (200, m3)
    );
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// `GET target` with extra header lines; (status, head, body).
fn http_with(port: u16, target: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text, buf)
}
