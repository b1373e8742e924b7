//! The DHT end to end, as a user would check it: real `plasmd node`s and a
//! real `plasmd serve` on 127.0.0.1, found with the real `phase-discover`.
//! Short TTLs (a few seconds) keep each test under half a minute.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Record TTL of the short-lived tests; `SHORT_TTL` refreshes every 2 s.
const TTL: u64 = 4;

#[test]
fn a_fleet_of_five_nodes_finds_the_provider_through_any_node() {
    let dir = TempDir::new("fleet");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 5, TTL);
    let started = Instant::now();
    let extra = short_ttl_through(&nodes[2].1);
    let s = serve(dir.path(), &root, &extra);
    let first = discover_until(&nodes[4].1, Duration::from_secs(20), &[], |d| d.code == 0);
    println!(
        "time from plasmd serve start to first successful phase-discover: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let expected_url = format!(
        "http://127.0.0.1:{}/stable/arm64/manifest.json",
        s.http_port
    );
    assert_eq!(first.stdout.trim(), expected_url);
    s.proc.wait_log(
        "DHT record published: /phase/stable/arm64/manifest",
        1,
        Duration::from_secs(10),
    );
    assert!(s.proc.stderr().contains(&format!(
        "Publishing boot manifest to DHT: /phase/stable/arm64/manifest -> {expected_url}"
    )));

    for (_, addr) in &nodes {
        let d = discover(addr, 10, &["--json"]);
        assert_eq!(d.code, 0, "via {addr}: {}", d.stderr);
        let url = json_field(&d.stdout, "url").unwrap();
        assert_eq!(url, expected_url);
        let version = json_field(&d.stdout, "version").unwrap();
        let peer = json_field(&d.stdout, "peer_id").unwrap();
        assert!(s.p2p_addr.ends_with(&format!("/p2p/{peer}")));
        let (status, body) = get_url(&url);
        assert_eq!(status, 200);
        let manifest = String::from_utf8(body).unwrap();
        assert_eq!(json_field(&manifest, "version").unwrap(), version);
    }
}

#[test]
fn a_lone_provider_is_found_through_its_own_address() {
    let dir = TempDir::new("lone");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let hint = s.proc.wait_stdout("find it with: ", Duration::from_secs(5));
    assert!(hint.contains(&s.p2p_addr), "{hint}");
    let d = discover_until(&s.p2p_addr, Duration::from_secs(10), &[], |d| d.code == 0);
    assert_eq!(
        d.stdout.trim(),
        format!(
            "http://127.0.0.1:{}/stable/arm64/manifest.json",
            s.http_port
        )
    );
    // With nobody to store it, the put "fails" and is retried.
    s.proc.wait_log("retrying in", 1, Duration::from_secs(30));
}

#[test]
fn records_stay_findable_across_refreshes_for_more_than_two_ttls() {
    let dir = TempDir::new("refresh");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 3, TTL);
    let mut extra = vec!["--bootstrap", nodes[0].1.as_str()];
    extra.extend(SHORT_TTL);
    let s = serve(dir.path(), &root, &extra);
    discover_until(&nodes[1].1, Duration::from_secs(15), &[], |d| d.code == 0);
    let first = discover(&nodes[1].1, 5, &["--json"]);
    let first_updated = json_field(&first.stdout, "last_updated").unwrap();

    let end = Instant::now() + Duration::from_secs(2 * TTL + 2);
    while Instant::now() < end {
        for (_, addr) in &nodes {
            let d = discover(addr, 5, &[]);
            assert_eq!(d.code, 0, "lost the record via {addr}: {}", d.stderr);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Refreshed at least 3 more times in 2 TTLs + 2 s at a 2 s interval.
    s.proc
        .wait_log("DHT record published", 4, Duration::from_secs(5));
    let later = discover(&nodes[2].1, 5, &["--json"]);
    let later_updated = json_field(&later.stdout, "last_updated").unwrap();
    assert!(
        later_updated > first_updated,
        "{later_updated} vs {first_updated}"
    );
}

#[test]
fn sigterm_stops_advertising_and_the_record_expires_everywhere() {
    let dir = TempDir::new("sigterm");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 5, TTL);
    let mut extra = vec!["--bootstrap", nodes[0].1.as_str()];
    extra.extend(SHORT_TTL);
    let mut s = serve(dir.path(), &root, &extra);
    discover_until(&nodes[3].1, Duration::from_secs(15), &[], |d| d.code == 0);

    let stop = Instant::now();
    s.proc.signal(15);
    let status = s
        .proc
        .wait_exit(Duration::from_secs(2))
        .expect("exited within 2 s");
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    let log = s.proc.stderr();
    assert!(
        log.contains("Stopped advertising manifest: stable/arm64"),
        "{log}"
    );

    // The last refresh may have happened just before the signal: wait a
    // full TTL from the stop, plus a margin.
    std::thread::sleep(Duration::from_secs(TTL + 1).saturating_sub(stop.elapsed()));
    for (_, addr) in &nodes {
        let d = discover(addr, 2, &[]);
        assert_eq!(
            d.code, 2,
            "record still found via {addr} after TTL: {}",
            d.stdout
        );
        assert!(d.stderr.contains("no provider found"), "{}", d.stderr);
    }
}

#[test]
fn artifact_changes_are_republished_within_seconds() {
    let dir = TempDir::new("change");
    let root = artifacts(dir.path());
    let nodes = fleet(dir.path(), 2, 30);
    let s = serve(
        dir.path(),
        &root,
        &["--bootstrap", &nodes[0].1, "--record-ttl", "30"],
    );
    let before = discover_until(&nodes[1].1, Duration::from_secs(15), &["--json"], |d| {
        d.code == 0
    });
    let v1 = json_field(&before.stdout, "version").unwrap();

    std::fs::write(root.join("stable/arm64/vmlinuz"), b"a new kernel\n").unwrap();
    let changed = Instant::now();
    let after = discover_until(&nodes[1].1, Duration::from_secs(10), &["--json"], |d| {
        d.code == 0 && json_field(&d.stdout, "version").is_some_and(|v| v != v1)
    });
    println!(
        "artifact change to new version discoverable: {:.2} s",
        changed.elapsed().as_secs_f64()
    );
    s.proc.wait_log(
        "Re-published manifest after artifact change: stable/arm64",
        1,
        Duration::from_secs(5),
    );
    let v2 = json_field(&after.stdout, "version").unwrap();
    let (_, body) = get_url(&json_field(&after.stdout, "url").unwrap());
    let manifest = String::from_utf8(body).unwrap();
    assert_eq!(json_field(&manifest, "version").unwrap(), v2);

    // A new channel/arch directory gets published; a removed one stops.
    let testing = root.join("testing/arm64");
    std::fs::create_dir_all(&testing).unwrap();
    std::fs::write(testing.join("vmlinuz"), b"testing kernel").unwrap();
    s.proc.wait_log(
        "DHT record published: /phase/testing/arm64/manifest",
        1,
        Duration::from_secs(10),
    );
    std::fs::remove_dir_all(root.join("testing")).unwrap();
    s.proc.wait_log(
        "Stopped advertising manifest: testing/arm64",
        1,
        Duration::from_secs(5),
    );
}

#[test]
fn a_provider_started_before_its_bootstrap_node_is_found_once_the_node_is_up() {
    let dir = TempDir::new("late");
    let root = artifacts(dir.path());
    // Reserve the node's identity and port before it runs.
    let key = dir.path().join("late-node.key");
    let id = run(PLASMD, &["id", "--identity", key.to_str().unwrap()]);
    assert_eq!(id.code, 0);
    let peer = id.stdout.trim().to_string();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let node_addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}");
    let s = serve(dir.path(), &root, &["--bootstrap", &node_addr]);
    s.proc.wait_log("retrying in", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));

    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let node = Proc::spawn(
        "late-node",
        PLASMD,
        &[
            "node",
            "--p2p-listen",
            &listen,
            "--identity",
            key.to_str().unwrap(),
        ],
    );
    node.wait_stdout("p2p listening on ", Duration::from_secs(10));
    let up = Instant::now();
    s.proc
        .wait_log("DHT record published", 1, Duration::from_secs(15));
    println!(
        "node up to record published: {:.2} s",
        up.elapsed().as_secs_f64()
    );
    // Stop the provider: the node alone must now answer from its own store.
    drop(s);
    let d = discover(&node_addr, 10, &[]);
    assert_eq!(d.code, 0, "{}", d.stderr);
}

#[test]
fn trust_pinning_accepts_only_the_pinned_publisher() {
    let dir = TempDir::new("trust");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let provider = s.p2p_addr.rsplit('/').next().unwrap().to_string();
    let stranger = run(
        PLASMD,
        &[
            "id",
            "--identity",
            dir.path().join("stranger.key").to_str().unwrap(),
        ],
    )
    .stdout
    .trim()
    .to_string();

    let open = discover_until(&s.p2p_addr, Duration::from_secs(10), &[], |d| d.code == 0);
    assert!(
        open.stderr
            .contains(&format!("record signed by {provider}")),
        "{}",
        open.stderr
    );
    let pinned = discover(&s.p2p_addr, 5, &["--trust", &provider]);
    assert_eq!(pinned.code, 0, "{}", pinned.stderr);
    assert!(!pinned.stderr.contains("record signed by"));
    let wrong = discover(&s.p2p_addr, 3, &["--trust", &stranger]);
    assert_eq!(wrong.code, 2, "{}", wrong.stdout);
    assert!(
        wrong.stderr.contains("untrusted publisher"),
        "{}",
        wrong.stderr
    );

    // The same pin from a config file.
    let cfg = dir.path().join("discover.toml");
    std::fs::write(
        &cfg,
        format!("[discover]\ntrusted_providers = [\"{stranger}\"]\n"),
    )
    .unwrap();
    let from_file = discover(&s.p2p_addr, 3, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(from_file.code, 2);
    let bad = discover(&s.p2p_addr, 3, &["--trust", "not-a-peer"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("not a peer id"), "{}", bad.stderr);
}

#[test]
fn a_rack_of_thirty_holders_is_found_past_the_twenty_kept_per_key() {
    use plasmd::record::{release_key, release_shard_key, shard_of, RELEASE_SHARDS};
    let dir = TempDir::new("shards");
    let (_node, node_addr) = node(dir.path(), "node", 60, None);
    let sha = "ab".repeat(32);
    let key = |k: String| libp2p::kad::RecordKey::new(&k);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 30 boards announce themselves as holders, as `share` does: under
        // the release key and under their shard of it.
        let mut holders = Vec::new();
        for _ in 0..30 {
            let (client, keypair) = hostile_peer(&node_addr, 60, true).await;
            let me = keypair.public().to_peer_id();
            let at = vec!["/ip4/127.0.0.1/tcp/9/http".parse().unwrap()];
            let shard = release_shard_key("stable", "arm64", &sha, shard_of(&me.to_string()));
            for k in [release_key("stable", "arm64", &sha), shard] {
                client.provide_at(key(k), at.clone()).await.unwrap();
            }
            holders.push((client, me));
        }
        let (asker, _) = hostile_peer(&node_addr, 60, true).await;
        let found = |k: String| {
            let asker = asker.clone();
            async move {
                let mut rx = asker.get_providers(key(k)).await.unwrap();
                let mut all = std::collections::HashSet::new();
                while let Ok(Some(p)) =
                    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
                {
                    all.insert(p);
                }
                all
            }
        };
        let base = found(release_key("stable", "arm64", &sha)).await;
        assert_eq!(base.len(), 20, "the storage node keeps 20 per key");
        let mut every = base.clone();
        for s in 0..RELEASE_SHARDS {
            every.extend(found(release_shard_key("stable", "arm64", &sha, s)).await);
        }
        assert_eq!(every.len(), 30, "every holder is found through the shards");
        assert!(holders.iter().all(|(_, me)| every.contains(me)));
    });
}
