//! Downloading from peers: `phase-discover --fetch` with `--peer` holders
//! besides the provider it found. Every chunk is checked against the
//! signed manifest, so a holder that lies is dropped and the download
//! still ends byte-exact; holders that vanish leave the provider to finish.
//! Real processes on 127.0.0.1, plus small holders written here that
//! misbehave on purpose.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const MIB: usize = 1024 * 1024;

/// An 11½ MiB artifact of distinct chunks (12 chunks, the last one
/// short): more than two holders serve in one request each.
fn rootfs(root: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..11 * MIB + MIB / 2)
        .map(|i| ((i * 7 + i / MIB * 13) % 251) as u8)
        .collect();
    std::fs::write(root.join("stable/arm64/rootfs.img"), &data).unwrap();
    data
}

/// What a hand-made holder does with the chunks it is asked for.
#[derive(Clone, Copy)]
enum Holder {
    /// Flips a byte of chunk 2.
    CorruptsChunkTwo,
    /// Serves this many range requests, then closes its port for good.
    VanishesAfter(usize),
}

/// A holder of `data` on 127.0.0.1 (it says it holds every chunk); the
/// count of range requests it answered, and its manifest URL.
fn holder(data: Vec<u8>, kind: Holder) -> (Arc<AtomicUsize>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/stable/arm64/manifest.json",
        listener.local_addr().unwrap()
    );
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if let Holder::VanishesAfter(n) = kind {
                if count.load(Ordering::SeqCst) >= n {
                    // Dropping the listener refuses every later connection.
                    return;
                }
            }
            answer(conn, &data, kind, &count);
        }
    });
    (served, url)
}

/// Answers one request: `?have` (all held) or one `Range`.
fn answer(mut conn: TcpStream, data: &[u8], kind: Holder, count: &AtomicUsize) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    if target.ends_with("?have") {
        let chunks = data.len().div_ceil(MIB);
        let mut have = vec![0xffu8; chunks.div_ceil(8)];
        if !chunks.is_multiple_of(8) {
            *have.last_mut().unwrap() = 0xff << (8 - chunks % 8);
        }
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            have.len()
        );
        let _ = conn.write_all(&have);
        return;
    }
    let range = head
        .lines()
        .find_map(|l| l.strip_prefix("Range: bytes="))
        .and_then(|r| r.trim().split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let Some((first, last)) = range else {
        let _ = write!(
            conn,
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        );
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    let mut body = data[first..=last.min(data.len() - 1)].to_vec();
    if let Holder::CorruptsChunkTwo = kind {
        let bad = 2 * MIB + 100;
        if (first..=last).contains(&bad) {
            body[bad - first] ^= 0xff;
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{}/{}\r\nContent-Length: {}\r\n\r\n",
        first + body.len() - 1,
        data.len(),
        body.len()
    );
    let _ = conn.write_all(&body);
}

/// Waits for the provider's record, then fetches `rootfs.img` into `out`
/// with `peers`.
fn fetch_with_peers(bootstrap: &str, out: &Path, peers: &[&str]) -> Discovered {
    discover_until(bootstrap, Duration::from_secs(10), &[], |d| d.code == 0);
    let mut args = vec!["--fetch", "rootfs.img", "-o", out.to_str().unwrap()];
    for p in peers {
        args.extend(["--peer", p]);
    }
    discover(bootstrap, 30, &args)
}

#[test]
fn a_second_provider_of_the_release_serves_the_chunks_it_holds() {
    let dir = TempDir::new("peers-two");
    let root = artifacts(dir.path());
    let data = rootfs(&root);
    let origin = serve(dir.path(), &root, &[]);
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = serve(&other_dir, &root, &[]);
    let peer = format!(
        "http://127.0.0.1:{}/stable/arm64/manifest.json",
        other.http_port
    );
    let out = dir.path().join("rootfs.img");
    let d = fetch_with_peers(&origin.p2p_addr, &out, &[&peer]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // The peer holds every chunk, so the provider is left alone.
    assert!(
        d.stderr
            .contains("11.5 MiB from peers, 0.0 MiB from the origin"),
        "{}",
        d.stderr
    );
}

#[test]
fn a_holder_that_sends_a_corrupted_chunk_is_dropped_and_the_chunk_fetched_elsewhere() {
    let dir = TempDir::new("peers-bad");
    let root = artifacts(dir.path());
    let data = rootfs(&root);
    let s = serve(dir.path(), &root, &[]);
    let (served, peer) = holder(data.clone(), Holder::CorruptsChunkTwo);
    let out = dir.path().join("rootfs.img");
    let d = fetch_with_peers(&s.p2p_addr, &out, &[&peer]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), data, "byte-exact");
    assert!(served.load(Ordering::SeqCst) > 0);
    assert!(
        d.stderr.contains("dropping source") && d.stderr.contains("chunk 2 did not verify"),
        "{}",
        d.stderr
    );
    assert!(d.stderr.contains("1 bad chunk(s) refused"), "{}", d.stderr);
}

#[test]
fn holders_that_vanish_mid_download_leave_the_provider_to_finish() {
    let dir = TempDir::new("peers-gone");
    let root = artifacts(dir.path());
    let data = rootfs(&root);
    let s = serve(dir.path(), &root, &[]);
    let (a_served, a) = holder(data.clone(), Holder::VanishesAfter(1));
    let (b_served, b) = holder(data.clone(), Holder::VanishesAfter(1));
    let out = dir.path().join("rootfs.img");
    let d = fetch_with_peers(&s.p2p_addr, &out, &[&a, &b]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), data, "byte-exact");
    assert!(a_served.load(Ordering::SeqCst) + b_served.load(Ordering::SeqCst) >= 1);
    // Some of it came from the holders before they went, the rest from the
    // provider.
    assert!(
        !d.stderr.contains("0.0 MiB from the origin") && !d.stderr.contains("0.0 MiB from peers"),
        "{}",
        d.stderr
    );
    assert!(!out.with_file_name(".rootfs.img.part").exists());
}

#[test]
fn a_board_that_has_the_release_serves_it_to_the_next_one_through_the_dht() {
    let dir = TempDir::new("peers-seed");
    let root = artifacts(dir.path());
    let data = rootfs(&root);
    let s = serve(dir.path(), &root, &[]);
    discover_until(&s.p2p_addr, Duration::from_secs(10), &[], |d| d.code == 0);
    // The first board downloads from the provider, then keeps serving.
    let first_dir = dir.path().join("first");
    let args = lookup_args(
        &s.p2p_addr,
        30,
        &[
            "--fetch-all",
            first_dir.to_str().unwrap(),
            "--seed",
            "127.0.0.1:0",
            "--seed-linger",
            "60",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Proc::spawn_logged("first", DISCOVER, &args, "info,libp2p=warn");
    first.wait_log("holding stable/arm64 release", 1, Duration::from_secs(30));
    let done = first_dir.join("rootfs.img");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < end,
            "the first board never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next board finds it as a holder and takes every chunk from it:
    // a holder that has it all leaves the provider alone.
    let next_dir = dir.path().join("next");
    let d = discover(
        &s.p2p_addr,
        30,
        &[
            "--fetch-all",
            next_dir.to_str().unwrap(),
            "--seed",
            "127.0.0.1:0",
            "--seed-linger",
            "0",
        ],
    );
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(next_dir.join("rootfs.img")).unwrap(), data);
    assert!(
        d.stderr.contains("MiB from peers, 0.0 MiB from the origin"),
        "{}",
        d.stderr
    );
}
