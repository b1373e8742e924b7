//! No provider can hold a board's download. A genuine provider carries a
//! signed release; a second provider advertises the same release at the
//! URL of a tarpit, and its record is newer, so a board tries it first. The
//! tarpit sends the release's real manifest and then trickles artifact
//! bodies a byte at a time, or accepts connections and never answers, or
//! trickles the manifest itself. Each time `phase-discover --release-key
//! --fetch-all` (what a board does) must pass the tarpit over and finish
//! with the genuine files, byte for byte, within a generous bound.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// What the tarpit does with a request.
#[derive(Debug, Clone, Copy)]
enum Tarpit {
    /// Real manifest and signature, then artifact bodies a byte at a time.
    Body,
    /// Accepts the connection, never answers.
    Silent,
    /// The manifest itself a byte at a time.
    Manifest,
}

/// A tarpit on 127.0.0.1 serving the release in `release` as `mode` says;
/// returns its port. Its threads end with the test process.
fn tarpit(release: PathBuf, mode: Tarpit) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let release = release.clone();
            std::thread::spawn(move || answer(conn, &release, mode));
        }
    });
    port
}

fn answer(mut conn: TcpStream, release: &Path, mode: Tarpit) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    if let Tarpit::Silent = mode {
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let name = path.rsplit('/').next().unwrap_or("");
    let Ok(body) = std::fs::read(release.join(name)) else {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let fast = name.starts_with("manifest.json") && matches!(mode, Tarpit::Body);
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if fast {
        let _ = conn.write_all(&body);
        return;
    }
    for b in body {
        if conn.write_all(&[b]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_tarpit_provider_never_holds_a_boards_download() {
    let dir = TempDir::new("tarpit");
    let (_node, boot) = node(dir.path(), "node", 120, None);
    let (fleet_pub, fleet_key) = keygen(dir.path(), "fleet");
    let root = artifacts(dir.path());
    let release = root.join("stable/arm64");
    sign(&fleet_key, &release, &[]);
    let genuine = serve(&dir.path().join("genuine"), &root, &["--bootstrap", &boot]);
    genuine
        .proc
        .wait_log("DHT record published", 1, Duration::from_secs(20));

    let mut tarpits = Vec::new();
    for mode in [Tarpit::Body, Tarpit::Silent, Tarpit::Manifest] {
        let port = tarpit(release.clone(), mode);
        // Records are dated to the second: this one is newer, so tried first.
        std::thread::sleep(Duration::from_millis(1100));
        let url = format!("http://127.0.0.1:{port}");
        let provider_dir = dir.path().join(format!("{mode:?}"));
        let t = serve(
            &provider_dir,
            &root,
            &["--bootstrap", &boot, "--external-url", &url],
        );
        t.proc
            .wait_log("DHT record published", 1, Duration::from_secs(20));
        tarpits.push(t);

        let out = dir.path().join(format!("out-{mode:?}"));
        let started = Instant::now();
        let d = discover(
            &boot,
            20,
            &[
                "--release-key",
                &fleet_pub,
                "--rate-window",
                "2",
                "--fetch-all",
                out.to_str().unwrap(),
            ],
        );
        let took = started.elapsed();
        assert_eq!(d.code, 0, "{mode:?}: {}", d.stderr);
        for f in ["vmlinuz", "initrd.img", "board.dtb"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(release.join(f)).unwrap(),
                "{mode:?}: {f}"
            );
        }
        // The tarpit was met and passed over, saying why.
        let why = match mode {
            Tarpit::Body | Tarpit::Manifest => "stalled",
            Tarpit::Silent => "no response head within 10 s",
        };
        let line = d
            .stderr
            .lines()
            .find(|l| l.contains(&url))
            .unwrap_or_default();
        assert!(line.contains(why), "{mode:?}: {}", d.stderr);
        // Generous: the 2 s window or the 10 s head deadline, a lookup and
        // the genuine download, on a loaded machine.
        assert!(took < Duration::from_secs(60), "{mode:?} took {took:?}");
        eprintln!("{mode:?}: fetched in {took:.1?}");
    }
}
