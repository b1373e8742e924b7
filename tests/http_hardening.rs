//! The HTTP server under conditions boards and LANs produce: ranges and
//! resumes, revalidation, oversized and idle connections, a busy server,
//! files replaced mid-download. Checked from Rust and with curl.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Sends a raw request and returns (status, head, body).
fn raw(port: u16, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[end + 4..].to_vec())
}

fn get_with(port: u16, path: &str, header: &str) -> (u16, String, Vec<u8>) {
    raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n"),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l.split_once(':').unwrap().1.trim())
}

/// curl's stdout for a silent request with `args`.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl runs");
    out.stdout
}

#[test]
#[ignore = "tier packages: needs curl; bash tests/run installs it"]
fn ranges_etags_and_cache_headers() {
    let dir = TempDir::new("range");
    let root = artifacts(dir.path());
    let data = std::fs::read(root.join("stable/arm64/initrd.img")).unwrap();
    let sha = sha256sum(&root.join("stable/arm64/initrd.img"));
    let by_content = format!("rootfs-{}.img", &sha[..16]);
    std::fs::write(root.join("stable/arm64").join(&by_content), &data).unwrap();
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    let file = "/stable/arm64/initrd.img";

    let (st, head, body) = get_with(port, file, "Range: bytes=0-9");
    assert_eq!(st, 206, "{head}");
    assert_eq!(header(&head, "Content-Range"), Some("bytes 0-9/100000"));
    assert_eq!(body, &data[..10]);
    let (st, _, body) = get_with(port, file, "Range: bytes=99990-");
    assert_eq!((st, body.as_slice()), (206, &data[99_990..]));
    let (st, _, body) = get_with(port, file, "Range: bytes=-5");
    assert_eq!((st, body.len()), (206, 5));
    let (st, head, body) = get_with(port, file, "Range: bytes=100000-");
    assert_eq!(st, 416);
    assert_eq!(header(&head, "Content-Range"), Some("bytes */100000"));
    assert!(body.is_empty());
    // If-Range: the range only if the file is still the one named.
    let (st, _, body) = get_with(
        port,
        file,
        &format!("Range: bytes=0-9\r\nIf-Range: \"{sha}\""),
    );
    assert_eq!((st, body.len()), (206, 10));
    let (st, _, body) = get_with(port, file, "Range: bytes=0-9\r\nIf-Range: \"stale\"");
    assert_eq!(
        (st, body.len()),
        (200, 100_000),
        "a changed file is sent whole"
    );
    // If-Match: bytes of that file only; another one's are refused (412).
    let (st, _, body) = get_with(
        port,
        file,
        &format!("Range: bytes=0-9\r\nIf-Match: \"{sha}\""),
    );
    assert_eq!((st, body.len()), (206, 10));
    let (st, _, body) = get_with(port, file, "Range: bytes=0-9\r\nIf-Match: \"stale\"");
    assert_eq!(st, 412, "{}", String::from_utf8_lossy(&body));
    let (st, _, body) = get_with(port, file, "Range: bytes=0-1,5-6");
    assert_eq!(
        (st, body.len()),
        (200, 100_000),
        "several ranges: whole file"
    );

    let (st, head, _) = get_with(port, file, "Accept: */*");
    assert_eq!(st, 200);
    assert_eq!(header(&head, "Accept-Ranges"), Some("bytes"));
    assert_eq!(header(&head, "ETag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(header(&head, "Cache-Control"), Some("no-cache"));
    assert!(
        header(&head, "Last-Modified").is_some_and(|v| v.ends_with(" GMT")),
        "{head}"
    );
    let (st, head, body) = get_with(port, file, &format!("If-None-Match: \"{sha}\""));
    assert_eq!((st, body.len()), (304, 0), "{head}");
    let (st, _, _) = get_with(port, file, "If-None-Match: \"other\"");
    assert_eq!(st, 200);
    let (_, head, _) = get_with(port, &format!("/stable/arm64/{by_content}"), "Accept: */*");
    assert_eq!(
        header(&head, "Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );

    let (st, head, _) = get_with(port, "/stable/arm64/manifest.json", "Accept: */*");
    assert_eq!(st, 200);
    assert_eq!(header(&head, "Cache-Control"), Some("max-age=10"));
    let etag = header(&head, "ETag").unwrap().to_string();
    let (st, _, body) = get_with(
        port,
        "/stable/arm64/manifest.json",
        &format!("If-None-Match: {etag}"),
    );
    assert_eq!((st, body.len()), (304, 0));

    // The same with curl, as a user would check it.
    need_tool("curl", "curl");
    let url = format!("http://127.0.0.1:{port}{file}");
    assert_eq!(curl(&["-r", "10-19", &url]), &data[10..20]);
    let inm = format!("If-None-Match: \"{sha}\"");
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &inm, &url]),
        b"304"
    );
    let escape = format!("http://127.0.0.1:{port}/stable/arm64/../../../etc/passwd");
    assert_eq!(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--path-as-is",
            &escape
        ]),
        b"400"
    );
}

#[test]
fn oversized_and_malformed_requests_are_refused() {
    let dir = TempDir::new("limits");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(raw(port, &big).0, 431);
    let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        raw(port, &format!("GET /healthz HTTP/1.1\r\n{many}\r\n")).0,
        431
    );
    assert_eq!(raw(port, "GET /healthz HTTP/2.0\r\n\r\n").0, 400);
    assert_eq!(raw(port, "BLAH\r\n\r\n").0, 400);
    assert_eq!(
        raw(
            port,
            "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        )
        .0,
        400
    );
    // A header line that never ends is cut off, not buffered forever.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nX: ");
    let junk = vec![b'a'; 64 * 1024];
    for _ in 0..16 {
        if c.write_all(&junk).is_err() {
            break;
        }
    }
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply[..reply.len().min(100)])
    );
    assert_eq!(http(port, "GET", "/healthz").0, 200);
}

#[test]
fn well_behaved_clients_are_served_while_200_idle_connections_are_held() {
    let dir = TempDir::new("slowloris");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    // 200 connections: half silent, half trickling a head that never ends.
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 2 == 1 {
            let _ = c.write_all(b"GET /stable/arm64/initrd.img HTTP/1.1\r\nX-Slow: ");
        }
        idle.push(c);
    }
    let start = Instant::now();
    let (mut served, total) = (0, 20);
    for _ in 0..total {
        for c in idle.iter_mut().skip(1).step_by(2) {
            let _ = c.write_all(b"a");
        }
        let (st, _, body) = raw(
            port,
            "GET /stable/arm64/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if st == 200 && body == b"test kernel image\n" {
            served += 1;
        }
    }
    println!(
        "slowloris: {served}/{total} well-behaved requests served in {:.2} s while 200 idle connections were held open",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(served, total);
    drop(idle);
}

#[test]
fn downloads_nobody_reads_do_not_delay_health_or_other_clients() {
    let dir = TempDir::new("busy");
    let root = artifacts(dir.path());
    // Large enough that a client that never reads fills its socket.
    let big = root.join("stable/arm64/rootfs.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    // Wait for the manifest to list it (hashing 64 MiB takes a moment).
    let end = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&http(port, "GET", "/stable/arm64/manifest.json").2)
        .contains("rootfs.img")
    {
        assert!(Instant::now() < end, "rootfs.img never listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old server had 16 workers + 32 queued and then answered 503:
    // hold three times that many downloads that nobody reads.
    let mut stuck = Vec::new();
    for _ in 0..150 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /stable/arm64/rootfs.img HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        stuck.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..20 {
        let (st, head, body) = raw(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((st, body.as_slice()), (200, &b"ok\n"[..]), "{head}");
        let (st, _, body) = http(port, "GET", "/stable/arm64/vmlinuz");
        assert_eq!(st, 200);
        assert_eq!(
            body,
            std::fs::read(root.join("stable/arm64/vmlinuz")).unwrap()
        );
    }
    drop(stuck);
}

#[test]
fn an_artifact_replaced_during_a_download_is_never_torn() {
    let dir = TempDir::new("torn");
    let root = artifacts(dir.path());
    let path = root.join("stable/arm64/rootfs.img");
    let old: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = old.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(&path, &old).unwrap();
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    let end = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/stable/arm64/rootfs.img").0 != 200 {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /stable/arm64/rootfs.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read a little, replace the file the way deployments should (rename
    // over it), then read the rest.
    let mut first = vec![0u8; 4096];
    c.read_exact(&mut first).unwrap();
    let tmp = root.join("stable/arm64/.rootfs.img.new");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let end = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let body = &first[end + 4..];
    assert!(
        body == old.as_slice() || body == new.as_slice(),
        "torn: {} bytes, neither old nor new",
        body.len()
    );
}

#[test]
fn an_upload_cap_holds_every_response_together_to_its_rate() {
    let dir = TempDir::new("http-cap");
    let root = artifacts(dir.path());
    let data: Vec<u8> = (0..1_500_000).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("stable/arm64/rootfs.img"), &data).unwrap();
    // 1 MB/s in all: two boards fetching 1.5 MB each take about 3 s.
    let s = serve(dir.path(), &root, &["--http-max-rate", "1000000"]);
    let port = s.http_port;
    let started = Instant::now();
    let boards: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || http(port, "GET", "/stable/arm64/rootfs.img")))
        .collect();
    // Small answers are not held back by the cap.
    let (status, _, _) = http(port, "GET", "/healthz");
    assert_eq!(status, 200);
    for b in boards {
        let (status, _, body) = b.join().unwrap();
        assert_eq!(status, 200);
        assert!(body == data, "byte-exact under the cap");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "3 MB went out in {took:?} under a 1 MB/s cap"
    );
}
