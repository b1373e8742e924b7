//! The HTTP side of `plasmd serve`, checked with raw requests the way a
//! board (or an attacker on the LAN) would send them.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn manifest_and_artifacts_are_served_with_the_right_bytes_and_headers() {
    let dir = TempDir::new("http");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;

    let (status, head, body) = http(port, "GET", "/healthz");
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"ok\n");

    let (status, head, body) = http(port, "GET", "/stable/arm64/manifest.json");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let manifest = String::from_utf8(body).unwrap();
    for name in ["vmlinuz", "initrd.img", "board.dtb"] {
        let hash = sha256sum(&root.join("stable/arm64").join(name));
        assert!(
            manifest.contains(&hash),
            "{name} {hash} missing from {manifest}"
        );
    }

    let (status, head, body) = http(port, "GET", "/stable/arm64/initrd.img");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: 100000"), "{head}");
    assert!(
        head.contains("Content-Type: application/octet-stream"),
        "{head}"
    );
    assert_eq!(
        body,
        std::fs::read(root.join("stable/arm64/initrd.img")).unwrap()
    );

    // HTTP/1.1 clients (curl, boards) get a Content-Length too, not chunks.
    let head11 = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(
            b"GET /stable/arm64/initrd.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert_eq!(all.len() - end - 4, 100_000);
        String::from_utf8_lossy(&all[..end]).to_string()
    };
    assert!(head11.contains("Content-Length: 100000"), "{head11}");
    assert!(!head11.contains("Transfer-Encoding"), "{head11}");

    let (status, head, body) = http(port, "HEAD", "/stable/arm64/initrd.img");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: 100000"), "{head}");
    assert!(body.is_empty());

    // `/` is the status page (see tests/status_page.rs), not a file.
    let (status, head, _) = http(port, "GET", "/");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    for missing in [
        "/stable/arm64/nope",
        "/stable/riscv64/manifest.json",
        "/a/b/c/d",
    ] {
        assert_eq!(http(port, "GET", missing).0, 404, "{missing}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let (status, head, _) = http(port, method, "/stable/arm64/vmlinuz");
        assert_eq!(status, 405, "{method}");
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
    }
}

#[test]
fn paths_cannot_escape_the_artifacts_root() {
    let dir = TempDir::new("traversal");
    let root = artifacts(dir.path());
    std::fs::write(dir.path().join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("secret"),
        root.join("stable/arm64/link-out"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("stable/arm64/passwd")).unwrap();
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;

    for target in [
        "/stable/arm64/../../secret",
        "/stable/arm64/%2e%2e/%2e%2e/secret",
        "/stable/arm64/..%2f..%2fsecret",
        "/stable/arm64/%2E%2E%2F%2E%2E%2Fsecret",
        "/stable/arm64/..%5c..%5csecret",
        "/stable/arm64/a%00b",
        "/../../../../etc/passwd",
        "/stable/arm64/%",
    ] {
        let (status, _, body) = http(port, "GET", target);
        assert!((400..500).contains(&status), "{target} gave {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("top secret"),
            "{target}"
        );
    }
    for target in ["/stable/arm64/link-out", "/stable/arm64/passwd"] {
        let (status, _, body) = http(port, "GET", target);
        assert_eq!(status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&body).contains("root:"));
    }
    let long = format!("/stable/arm64/{}", "a".repeat(4000));
    assert!((400..500).contains(&http(port, "GET", &long).0));
    // Still serving after all that.
    assert_eq!(http(port, "GET", "/stable/arm64/vmlinuz").0, 200);
    s.proc
        .wait_log("refused request", 1, Duration::from_secs(2));
}

#[test]
fn a_shipped_manifest_is_served_as_is_and_its_version_advertised() {
    let dir = TempDir::new("shipped");
    let root = artifacts(dir.path());
    let body = "{\"version\": \"2026.11.0-lab\", \"note\": \"hand-written\"}\n";
    std::fs::write(root.join("stable/arm64/manifest.json"), body).unwrap();
    let s = serve(dir.path(), &root, &[]);
    let (status, _, got) = http(s.http_port, "GET", "/stable/arm64/manifest.json");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(got).unwrap(), body);
    let d = discover_until(&s.p2p_addr, Duration::from_secs(10), &["--json"], |d| {
        d.code == 0
    });
    assert_eq!(json_field(&d.stdout, "version").unwrap(), "2026.11.0-lab");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// `GET` each of `targets` on kept-alive connections (a new one every 50,
/// below the server's per-connection limit); every answer must be 200.
fn get_all(port: u16, targets: impl Iterator<Item = String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let targets: Vec<String> = targets.collect();
    for batch in targets.chunks(50) {
        let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        conn.set_nodelay(true).unwrap();
        for t in batch {
            // One write per request: split ones would wait on delayed ACKs.
            let req = format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n");
            conn.write_all(req.as_bytes()).unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{t}: {status}");
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
        }
    }
}

#[test]
fn ten_thousand_distinct_refresh_queries_leave_memory_flat() {
    let dir = TempDir::new("refresh");
    let root = artifacts(dir.path());
    // A catalog like a real release's, so each page is tens of KiB.
    for i in 0..300 {
        std::fs::write(
            root.join(format!("stable/arm64/module-{i:03}.ko")),
            [i as u8],
        )
        .unwrap();
    }
    let s = serve(dir.path(), &root, &[]);
    // Idle: after the status page has been made a few times.
    get_all(s.http_port, (0..100).map(|_| "/".to_string()));
    let idle = rss_kib(s.proc.pid());
    // 10,000 distinct queries (3,599 distinct periods, the rest spelled
    // with leading zeros or out of range), as fast as one client can ask.
    get_all(
        s.http_port,
        (0..10_000).map(|i| format!("/?refresh={:0w$}", 2 + i % 3599, w = 1 + i / 3599)),
    );
    let after = rss_kib(s.proc.pid());
    assert!(
        after <= idle * 2,
        "RSS grew from {idle} KiB to {after} KiB serving distinct ?refresh= pages"
    );
    // And the page still says what it was asked.
    let (code, _, body) = http(s.http_port, "GET", "/?refresh=42");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("content=\"42\""));
}

#[test]
fn absolute_form_targets_are_served_like_paths() {
    // RFC 9112 3.2.2: a server must accept `GET http://host/path`.
    let dir = TempDir::new("absolute");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let (code, _, body) = http(
        s.http_port,
        "GET",
        "http://boot.lab:8080/stable/arm64/vmlinuz",
    );
    assert_eq!(code, 200);
    assert_eq!(
        body,
        std::fs::read(root.join("stable/arm64/vmlinuz")).unwrap()
    );
    assert_eq!(http(s.http_port, "GET", "http://boot.lab/healthz").0, 200);
    assert_eq!(
        http(
            s.http_port,
            "GET",
            "http://boot.lab/stable/../../etc/passwd"
        )
        .0,
        400
    );
}
