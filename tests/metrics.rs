//! Operators' window into a provider and a storage node: `GET /metrics` in
//! the Prometheus text format, checked with `promtool check metrics` (the
//! Prometheus project's own linter, from Debian's `prometheus` package,
//! installed by `bash tests/run`), with the figures a dashboard needs present and
//! moving as the provider works.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> String {
    need_tool("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn metrics(port: u16) -> String {
    let (status, head, body) = http(port, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    String::from_utf8(body).unwrap()
}

/// The value of an unlabelled sample.
fn value_of(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Polls `/metrics` until it contains every needle.
fn metrics_with(port: u16, needles: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(port);
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "missing some of {needles:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "tier packages: needs promtool (Debian prometheus); bash tests/run installs it"]
fn a_provider_and_a_node_expose_metrics_promtool_accepts() {
    let dir = TempDir::new("metrics");
    let root = artifacts(dir.path());
    // A storage node with its metrics port.
    let mport = free_port().to_string();
    let listen = format!("127.0.0.1:{mport}");
    let (node, node_addr) = node_with(
        dir.path(),
        "node",
        3600,
        &["--metrics-listen", &listen],
        None,
    );
    node.wait_stdout("metrics on ", Duration::from_secs(10));
    let s = serve(dir.path(), &root, &["--bootstrap", &node_addr]);
    s.proc
        .wait_log("DHT record published", 1, Duration::from_secs(20));
    // Boards at work: a manifest, an artifact, a miss.
    http(s.http_port, "GET", "/stable/arm64/manifest.json");
    http(s.http_port, "GET", "/stable/arm64/vmlinuz");
    http(s.http_port, "GET", "/stable/arm64/nothing");

    let text = metrics_with(
        s.http_port,
        &[
            "plasmd_build_info{version=",
            "plasmd_http_requests_total{route=\"manifest\",status=\"200\"} 1",
            "plasmd_http_requests_total{route=\"artifact\",status=\"200\"} 1",
            "plasmd_http_requests_total{route=\"artifact\",status=\"404\"} 1",
            "plasmd_http_response_seconds_count",
            "plasmd_dht_puts_total{reason=\"ok\"}",
            "plasmd_dht_last_publish_seconds{channel=\"stable\",arch=\"arm64\"}",
            "plasmd_advertised{channel=\"stable\",arch=\"arm64\",version=",
            "libp2p_kad_",
            "libp2p_identify_",
            "libp2p_swarm_connections_established_total",
        ],
    );
    println!("{}", promtool(&text).trim());
    let sent = value_of(&text, "plasmd_http_sent_bytes_total");
    assert!(sent >= 18, "{sent}");

    // The node holds the provider's records and says so (the gauge is
    // refreshed every few seconds).
    let node_text = metrics_with(
        mport.parse().unwrap(),
        &[
            "plasmd_dht_routing_table_peers 1",
            "libp2p_kad_inbound_requests_total",
        ],
    );
    let stored = metrics_with(mport.parse().unwrap(), &["plasmd_dht_records_stored"]);
    let held = value_of(&stored, "plasmd_dht_records_stored");
    assert!(held >= 1, "{stored}");
    promtool(&node_text);

    // `plasmd status` reads /status.json: healthy, the channel, its URL.
    let url = format!("http://127.0.0.1:{}", s.http_port);
    let status = run(PLASMD, &["status", "--url", &url]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains(": healthy"), "{}", status.stdout);
    assert!(status.stdout.contains("stable/arm64"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains(&format!("{url}/stable/arm64/manifest.json")),
        "{}",
        status.stdout
    );
    // No key material or paths in what anyone can read.
    let (_, _, json) = http(s.http_port, "GET", "/status.json");
    let json = String::from_utf8(json).unwrap();
    assert!(!json.contains(dir.path().to_str().unwrap()), "{json}");

    // A provider that cannot publish (no DHT peer) is unhealthy: exit 3,
    // the problem named.
    let lone_dir = dir.path().join("lone");
    std::fs::create_dir_all(&lone_dir).unwrap();
    let lone = serve(&lone_dir, &root, &[]);
    let status = run(
        PLASMD,
        &[
            "status",
            "--url",
            &format!("http://127.0.0.1:{}", lone.http_port),
        ],
    );
    assert_eq!(status.code, 3, "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains("problem: stable/arm64: not published"),
        "{}",
        status.stdout
    );
    // Nobody there: exit 1.
    let gone = run(
        PLASMD,
        &[
            "status",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
    );
    assert_eq!(gone.code, 1, "{}", gone.stderr);
}
