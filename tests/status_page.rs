//! The status page as an operator sees it: a provider with a signed release,
//! a storage node and a board in the middle of a download, and the page at
//! `http://provider/` opened in a real browser (Debian's headless Chromium,
//! driven by `playwright-core` from npm; both installed by `bash tests/run`) on a
//! phone-sized screen with JavaScript off. Screenshots are kept in
//! `target/status-page-{phone,desktop}.png`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `tests/browser` with its `node_modules`, and Chromium, ready to run.
fn browser() -> PathBuf {
    need_tool("chromium", "chromium");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "this test needs playwright-core in {}: bash tests/run runs npm ci there",
        dir.display()
    );
    dir
}

/// What the browser saw: its `key=value` lines and the page's visible text.
struct Seen {
    facts: Vec<(String, String)>,
    text: String,
}

impl Seen {
    fn get(&self, key: &str) -> &str {
        self.facts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the browser script said nothing of {key}"))
    }
}

fn open_in_browser(url: &str, shots: &Path) -> Seen {
    let dir = browser();
    let out = Command::new("node")
        .arg(dir.join("status-page.mjs"))
        .arg(url)
        .arg(shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, text) = stdout
        .split_once("--- text ---\n")
        .expect("the page's text follows the facts");
    let facts = head
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Seen {
        facts,
        text: text.to_string(),
    }
}

/// Polls `/status.json` until it contains `needle`.
fn status_with(port: u16, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = http(port, "GET", "/status.json");
        let json = String::from_utf8(body).unwrap();
        if json.contains(needle) {
            return json;
        }
        assert!(Instant::now() < end, "no {needle} in {json}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "tier browser: needs Chromium and playwright-core (npm); bash tests/run installs them"]
fn the_status_page_shows_a_provider_in_a_real_browser() {
    // Installing Chromium can take a minute on a fresh machine: done before
    // the stalled download below starts its clock.
    browser();
    let dir = TempDir::new("status-page");
    let root = artifacts(dir.path());
    // A root filesystem big enough that a board which stops reading stays
    // in the middle of its download (more than the socket buffers hold).
    let rootfs = root.join("stable/arm64/rootfs.img");
    std::fs::File::create(&rootfs)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let (_, seckey) = keygen(dir.path(), "fleet");
    sign(
        &seckey,
        &root.join("stable/arm64"),
        &["--version", "2026.11.25"],
    );

    let (_node, node_addr) = node(dir.path(), "node", 60, None);
    // No minimum rate: the stalled board below must stay in the middle of
    // its download however long the browser takes.
    let s = serve(
        dir.path(),
        &root,
        &["--bootstrap", &node_addr, "--http-min-rate", "0"],
    );
    s.proc
        .wait_log("DHT record published", 1, Duration::from_secs(20));
    let peer_id = s.proc.wait_stdout("plasmd ", Duration::from_secs(1));
    let peer_id = peer_id.rsplit(' ').next().unwrap().to_string();

    // A board downloading the root filesystem, slowly: it asks, reads the
    // first bytes and then nothing.
    let mut board = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
    board
        .write_all(b"GET /stable/arm64/rootfs.img HTTP/1.1\r\nHost: provider\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let _ = board.read(&mut first).unwrap();
    let json = status_with(s.http_port, "\"downloads\":1");
    let release_seq: String = json
        .split("\"release_seq\":")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let key_id = json_field(&json, "release_key").unwrap();

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let url = format!("http://127.0.0.1:{}/", s.http_port);
    let seen = open_in_browser(&url, &target.join("status-page"));
    println!("{}", seen.text);

    assert_eq!(seen.get("status"), "200");
    assert!(seen.get("content_type").starts_with("text/html"));
    assert_eq!(seen.get("title"), "plasmd: Healthy");
    assert!(
        seen.get("other_requests").starts_with('0'),
        "the page loaded other resources: {}",
        seen.get("other_requests")
    );
    assert_eq!(seen.get("scripts"), "0");
    assert!(
        seen.get("phone_overflow").starts_with("false"),
        "wider than a phone: {}",
        seen.get("phone_overflow")
    );
    let refreshes: u32 = seen.get("refresh_loads").parse().unwrap();
    assert!(
        refreshes >= 2,
        "/?refresh=2 loaded {refreshes} time(s) in 5 s"
    );

    let text = &seen.text;
    let vmlinuz_sha = sha256sum(&root.join("stable/arm64/vmlinuz"));
    let url_line = format!(
        "http://127.0.0.1:{}/stable/arm64/manifest.json",
        s.http_port
    );
    for needle in [
        "Healthy",
        peer_id.as_str(),
        "/ip4/127.0.0.1/tcp/",
        "stable/arm64",
        "2026.11.25",
        &format!("signed release, release_seq {release_seq}, key {key_id}"),
        url_line.as_str(),
        "1 peer in the routing table",
        "1 download in progress",
        "rootfs.img",
        "256.0 MiB",
        "initrd.img",
        "97.7 KiB",
        vmlinuz_sha.as_str(),
        "worked,",
    ] {
        assert!(
            text.contains(needle),
            "the page does not show {needle:?}:\n{text}"
        );
    }
    // Nothing a board must not see: no paths, no key material.
    let (_, _, html) = http(s.http_port, "GET", "/");
    let html = String::from_utf8(html).unwrap();
    let secret = std::fs::read_to_string(&seckey).unwrap();
    let secret_line = secret.lines().nth(1).unwrap();
    for leak in [
        dir.path().to_str().unwrap(),
        root.to_str().unwrap(),
        "provider.key",
        secret_line,
    ] {
        assert!(!html.contains(leak), "the page shows {leak:?}");
    }
    drop(board);
}
