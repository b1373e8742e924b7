//! Faults a fleet lives through, with real processes on 127.0.0.1 and short
//! TTLs: storage nodes dying, a provider crashing or restarting, its
//! artifacts directory vanishing and coming back.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TTL: u64 = 4;

#[test]
fn half_the_storage_nodes_die_and_the_provider_stays_discoverable() {
    let dir = TempDir::new("churn");
    let root = artifacts(dir.path());
    let mut nodes = fleet(dir.path(), 8, TTL);
    let s = serve(dir.path(), &root, &short_ttl_through(&nodes[0].1));
    discover_until(&nodes[7].1, Duration::from_secs(15), &[], |d| d.code == 0);

    // Kill nodes 0-3 (including the provider's bootstrap node) hard.
    let survivors: Vec<String> = nodes[4..].iter().map(|(_, a)| a.clone()).collect();
    for (p, _) in nodes.drain(..4) {
        p.signal(9);
        drop(p);
    }
    let published_before = s.proc.stderr().matches("DHT record published").count();
    s.proc.wait_log(
        "DHT record published",
        published_before + 1,
        Duration::from_secs(10),
    );
    // Wait past a full TTL so only refreshed copies can answer.
    std::thread::sleep(Duration::from_secs(TTL + 1));
    for addr in &survivors {
        let d = discover(addr, 10, &[]);
        assert_eq!(
            d.code, 0,
            "not found via surviving node {addr}: {}",
            d.stderr
        );
    }
}

#[test]
fn a_crashed_provider_is_gone_from_every_node_after_the_ttl() {
    let dir = TempDir::new("crash");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 5, TTL);
    let mut s = serve(dir.path(), &root, &short_ttl_through(&nodes[0].1));
    discover_until(&nodes[4].1, Duration::from_secs(15), &[], |d| d.code == 0);
    s.proc.signal(9);
    let killed = Instant::now();
    assert!(s.proc.wait_exit(Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_secs(TTL + 1).saturating_sub(killed.elapsed()));
    for (_, addr) in &nodes {
        let d = discover(addr, 2, &[]);
        assert_eq!(
            d.code, 2,
            "crashed provider's record still served via {addr}"
        );
    }
}

#[test]
fn a_restarted_provider_supersedes_its_old_record_everywhere() {
    let dir = TempDir::new("restart");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 5, 60);
    let ttl60 = ["--bootstrap", nodes[0].1.as_str(), "--record-ttl", "60"];
    let s = serve(dir.path(), &root, &ttl60);
    let first = discover_until(&nodes[4].1, Duration::from_secs(15), &["--json"], |d| {
        d.code == 0
    });
    let peer = json_field(&first.stdout, "peer_id").unwrap();
    let v1 = json_field(&first.stdout, "version").unwrap();
    drop(s); // SIGKILL: its record stays in the DHT for up to 60 s

    // Same identity (same key file in `dir`), new artifacts.
    std::fs::write(root.join("stable/arm64/vmlinuz"), b"kernel v2\n").unwrap();
    let s2 = serve(dir.path(), &root, &ttl60);
    s2.proc
        .wait_log("DHT record published", 1, Duration::from_secs(15));
    for (_, addr) in &nodes {
        // Every copy any node returns now is the new one (debug lines list
        // each copy with its source).
        let d = run_logged_discover(addr);
        assert_eq!(d.code, 0, "{}", d.stderr);
        assert_eq!(json_field(&d.stdout, "peer_id").unwrap(), peer);
        assert_ne!(
            json_field(&d.stdout, "version").unwrap(),
            v1,
            "old record won via {addr}"
        );
        let copies: Vec<&str> = d
            .stderr
            .lines()
            .filter(|l| l.contains("valid record from"))
            .collect();
        assert!(!copies.is_empty(), "{}", d.stderr);
        for c in copies {
            assert!(
                !c.contains(&format!("version {v1}")),
                "stale copy still held: {c}"
            );
        }
    }
}

fn run_logged_discover(addr: &str) -> Discovered {
    let args = [
        "--channel",
        "stable",
        "--arch",
        "arm64",
        "--bootstrap",
        addr,
        "--timeout",
        "10",
        "--json",
    ];
    run_logged(DISCOVER, &args, "warn,plasmd::discover=debug")
}

#[test]
fn the_artifacts_directory_vanishes_and_comes_back() {
    let dir = TempDir::new("vanish");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 2, TTL);
    let s = serve(dir.path(), &root, &short_ttl_through(&nodes[0].1));
    discover_until(&nodes[1].1, Duration::from_secs(15), &[], |d| d.code == 0);

    let away = dir.path().join("away");
    std::fs::rename(&root, &away).unwrap();
    s.proc.wait_log(
        "Stopped advertising manifest: stable/arm64",
        1,
        Duration::from_secs(15),
    );
    assert_eq!(http(s.http_port, "GET", "/healthz").0, 200);
    assert_eq!(
        http(s.http_port, "GET", "/stable/arm64/manifest.json").0,
        404
    );
    std::thread::sleep(Duration::from_secs(TTL + 1));
    assert_eq!(
        discover(&nodes[1].1, 2, &[]).code,
        2,
        "still advertised while gone"
    );

    std::fs::rename(&away, &root).unwrap();
    let published = s.proc.stderr().matches("Publishing boot manifest").count();
    s.proc.wait_log(
        "Publishing boot manifest",
        published + 1,
        Duration::from_secs(15),
    );
    discover_until(&nodes[1].1, Duration::from_secs(15), &[], |d| d.code == 0);
}
