//! `phase-discover --fetch`: from the signed record to verified bytes on
//! disk, and refusals when anything in the chain was altered.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;

fn find_and_fetch(bootstrap: &str, extra: &[&str]) -> Discovered {
    // Wait until the record is there, then fetch.
    discover_until(bootstrap, Duration::from_secs(10), &[], |d| d.code == 0);
    discover(bootstrap, 10, extra)
}

#[test]
fn fetch_writes_verified_artifacts_and_nothing_else() {
    let dir = TempDir::new("fetch");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let out = dir.path().join("out/initrd");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();

    let d = find_and_fetch(
        &s.p2p_addr,
        &["--fetch", "initrd.img", "-o", out.to_str().unwrap()],
    );
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.stdout.trim(), out.to_str().unwrap());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(root.join("stable/arm64/initrd.img")).unwrap()
    );
    assert!(!dir.path().join("out/.initrd.part").exists());

    // A partial download resumes with a Range request and still verifies
    // the whole file.
    let initrd = std::fs::read(root.join("stable/arm64/initrd.img")).unwrap();
    let out2 = dir.path().join("out/resumed");
    let part2 = dir.path().join("out/.resumed.part");
    std::fs::write(&part2, &initrd[..40_000]).unwrap();
    let d = discover(
        &s.p2p_addr,
        10,
        &["--fetch", "initrd.img", "-o", out2.to_str().unwrap()],
    );
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(&out2).unwrap(), initrd);
    assert!(!part2.exists());

    // A partial file that is not a prefix of the artifact: its chunk does
    // not verify, so it is fetched again; the garbage never reaches the
    // output.
    let out3 = dir.path().join("out/vmlinuz");
    let part3 = dir.path().join("out/.vmlinuz.part");
    std::fs::write(&part3, b"garbage").unwrap();
    let args = ["--fetch", "vmlinuz", "-o", out3.to_str().unwrap()];
    let d = discover(&s.p2p_addr, 10, &args);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read(&out3).unwrap(), b"test kernel image\n");
    assert!(!part3.exists());

    let all = dir.path().join("all");
    let d = discover(&s.p2p_addr, 10, &["--fetch-all", all.to_str().unwrap()]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    for name in ["vmlinuz", "initrd.img", "board.dtb"] {
        assert_eq!(
            std::fs::read(all.join(name)).unwrap(),
            std::fs::read(root.join("stable/arm64").join(name)).unwrap(),
            "{name}"
        );
    }
    let missing = discover(
        &s.p2p_addr,
        10,
        &[
            "--fetch",
            "nope.img",
            "-o",
            dir.path().join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not listed"), "{}", missing.stderr);
}

/// What the rogue server changes in what it relays.
#[derive(Clone, Copy)]
enum Tamper {
    Manifest,
    Artifact,
}

/// An HTTP server on 127.0.0.1 that relays the real provider at
/// `upstream` but alters manifests or artifacts.
fn rogue(upstream: u16, tamper: Tamper) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, _, mut body) = http(upstream, "GET", &path);
            let is_manifest = path.ends_with("manifest.json");
            match tamper {
                Tamper::Manifest if is_manifest => body.extend_from_slice(b" "),
                Tamper::Artifact if !is_manifest && !body.is_empty() => body[0] ^= 1,
                _ => {}
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status} OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    port
}

fn refused_by_fetch(tamper: Tamper, what: &str) {
    let dir = TempDir::new("rogue");
    let root = artifacts(dir.path());
    // Reserve the provider's HTTP port so the rogue server can relay to it.
    let http_port = free_port();
    let rogue_port = rogue(http_port, tamper);
    let key = dir.path().join("provider.key");
    let listen = format!("127.0.0.1:{http_port}");
    let external = format!("http://127.0.0.1:{rogue_port}");
    let s = start_serve(
        "serve",
        PLASMD,
        &[
            "serve",
            "--artifacts",
            root.to_str().unwrap(),
            "--http-listen",
            &listen,
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--identity",
            key.to_str().unwrap(),
            "--external-url",
            &external,
        ]
        .map(String::from),
    );
    let out = dir.path().join("initrd.img");
    let d = find_and_fetch(
        &s.p2p_addr,
        &["--fetch", "initrd.img", "-o", out.to_str().unwrap()],
    );
    assert_eq!(d.code, 3, "{what}: {} {}", d.stdout, d.stderr);
    assert!(d.stderr.contains("verification failed"), "{}", d.stderr);
    assert!(d.stderr.contains(what), "{}", d.stderr);
    assert!(!out.exists() && !dir.path().join(".initrd.img.part").exists());
}

#[test]
fn an_altered_manifest_behind_a_valid_record_is_refused() {
    refused_by_fetch(Tamper::Manifest, "the signed record says");
}

#[test]
fn an_altered_artifact_behind_a_valid_record_is_refused() {
    refused_by_fetch(Tamper::Artifact, "chunk 0 did not verify");
}

#[test]
fn a_release_without_chunk_hashes_is_fetched_whole_as_before() {
    // A manifest as older plasmds wrote it: names, sizes and whole-file
    // hashes, no `chunk_size` and no `chunks`.
    let dir = TempDir::new("fetch-whole");
    let root = artifacts(dir.path());
    let release = root.join("stable/arm64");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(release.join("rootfs.img"), &big).unwrap();
    let listed: Vec<String> = ["vmlinuz", "initrd.img", "board.dtb", "rootfs.img"]
        .iter()
        .map(|name| {
            let path = release.join(name);
            format!(
                r#"{{"name": "{name}", "size": {}, "sha256": "{}"}}"#,
                std::fs::metadata(&path).unwrap().len(),
                sha256sum(&path)
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"version": "old-style", "artifacts": [{}]}}"#,
        listed.join(", ")
    );
    std::fs::write(release.join("manifest.json"), &manifest).unwrap();
    let s = serve(dir.path(), &root, &[]);

    // Resumed from a prefix, as before: a Range request, the whole file
    // verified at the end.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".rootfs.img.part"), &big[..1_000_000]).unwrap();
    let d = discover(&s.p2p_addr, 10, &["--fetch-all", out.to_str().unwrap()]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(std::fs::read(out.join("rootfs.img")).unwrap() == big);
    assert_eq!(
        std::fs::read(out.join("vmlinuz")).unwrap(),
        b"test kernel image\n"
    );
    assert!(!out.join(".rootfs.img.part").exists());
    // The 1 MB already there was not sent again.
    let (_, _, metrics) = http(s.http_port, "GET", "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    let sent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("plasmd_http_sent_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent < 2_500_000, "sent {sent} bytes for a 3.1 MB release");
    // Nothing of chunks or peers was said: there were none to use.
    assert!(!d.stderr.contains("from peers"), "{}", d.stderr);
}
