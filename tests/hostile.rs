//! A hostile peer in the DHT, written with plasmd's own library: it joins
//! like any node and PUTs forged, replayed (also after writing a record of
//! its own in between), re-keyed, expired, future-dated, older, oversized,
//! malformed and unsigned records at the manifest key, floods a node, and
//! knocks on a closed fleet's node. None may be stored or returned by
//! `phase-discover`; nothing panics; the storage node counts the refusals
//! by kind.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use plasmd::dht;
use plasmd::record::{manifest_dht_key, ManifestRecord};

/// The kinds a storage node reports, with how many of each the test sends.
const KINDS: [&str; 9] = [
    "forged",
    "replayed",
    "older",
    "rekeyed",
    "expired",
    "future",
    "oversized",
    "malformed",
    "unsigned",
];

#[test]
fn a_hostile_peer_cannot_plant_records() {
    let dir = TempDir::new("hostile");
    let root = artifacts(dir.path());
    let (node, node_addr) = storage_node(dir.path(), 30, &[]);
    let s = serve(
        dir.path(),
        &root,
        &[
            "--bootstrap",
            &node_addr,
            "--record-ttl",
            "30",
            "--refresh-interval",
            "2",
        ],
    );
    let genuine = discover_until(&node_addr, Duration::from_secs(15), &["--json"], |d| {
        d.code == 0
    });
    let genuine_url = json_field(&genuine.stdout, "url").unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, keypair) = hostile_peer(&node_addr, 30, false).await;

        let key = manifest_dht_key("stable", "arm64");
        let ttl = Duration::from_secs(30);
        // The provider's genuine record as the DHT has it now...
        let old = newest(&client, &key).await;
        // ...and once a refresh has replaced it with a higher seq.
        let mut latest = newest(&client, &key).await;
        for _ in 0..50 {
            if latest.seq > old.seq {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            latest = newest(&client, &key).await;
        }
        assert!(latest.seq > old.seq, "no refresh seen");

        // forged: the genuine signature on an altered URL.
        let mut forged = latest.clone();
        forged.url = forged.url.replace("127.0.0.1", "127.0.0.66");
        // expired: validly signed by the hostile peer, but long expired.
        let now = SystemTime::now();
        let mut own = ManifestRecord::new(
            &genuine_url,
            &keypair.public().to_peer_id().to_string(),
            Some("hostile"),
            "evil",
        );
        own.last_updated = plasmd::time::rfc3339(now - Duration::from_secs(7200));
        let expired = own
            .clone()
            .sign(
                "/phase/stable/arm64/manifest",
                &keypair,
                1,
                now - Duration::from_secs(3600),
                &"0".repeat(64),
            )
            .unwrap();
        // future: validly signed, but dated 2099 (it would rank newest
        // forever), or made now but claiming to live until 2099.
        let year_2099 = SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800);
        let sign_own = |updated: SystemTime, expires: SystemTime| {
            let mut r = own.clone();
            r.last_updated = plasmd::time::rfc3339(updated);
            r.sign(
                "/phase/stable/arm64/manifest",
                &keypair,
                u64::MAX / 2,
                expires,
                &"0".repeat(64),
            )
            .unwrap()
        };
        let dated_2099 = sign_own(year_2099, year_2099 + Duration::from_secs(3600));
        let lives_to_2099 = sign_own(now, year_2099);
        // older: valid and signed, but dated before the genuine record the
        // node holds on the shared key.
        let older = sign_own(now - Duration::from_secs(600), now + ttl);

        // Write a valid record of our own on the shared key first, so the
        // replay below does not meet the genuine record it is older than:
        // the node must remember the genuine publisher's seq anyway.
        let mut interleaved = own.clone();
        interleaved.last_updated = plasmd::time::rfc3339(SystemTime::now());
        let interleaved = interleaved
            .sign(
                "/phase/stable/arm64/manifest",
                &keypair,
                plasmd::time::unix_now() * 1000,
                SystemTime::now() + ttl,
                &"0".repeat(64),
            )
            .unwrap();
        let _ = client
            .put(key.clone(), interleaved.to_bytes().unwrap(), ttl)
            .await;
        let attempts: Vec<(&str, libp2p::kad::RecordKey, Vec<u8>)> = vec![
            ("forged", key.clone(), forged.to_bytes().unwrap()),
            ("replayed", key.clone(), old.to_bytes().unwrap()),
            (
                "rekeyed",
                manifest_dht_key("testing", "arm64"),
                latest.to_bytes().unwrap(),
            ),
            ("expired", key.clone(), expired.to_bytes().unwrap()),
            ("future", key.clone(), dated_2099.to_bytes().unwrap()),
            ("future", key.clone(), lives_to_2099.to_bytes().unwrap()),
            ("older", key.clone(), older.to_bytes().unwrap()),
            (
                "oversized",
                key.clone(),
                format!("{{\"pad\":\"{}\"}}", "x".repeat(3000)).into_bytes(),
            ),
            ("malformed", key.clone(), b"{\"url\": [".to_vec()),
            ("unsigned", key.clone(), own.to_bytes().unwrap()),
        ];
        for (what, k, value) in attempts {
            // The put "succeeds" (nodes acknowledge before checking); what
            // matters is what they keep. A put query may end once one peer
            // answered, before the node got its copy: send again until the
            // node has seen it.
            let refused = |node: &Proc| {
                node.stderr()
                    .matches(&format!("refused {what} record"))
                    .count()
            };
            let before = refused(&node);
            let seen = |node: &Proc| refused(node) > before;
            for _ in 0..5 {
                let _ = client.put(k.clone(), value.clone(), ttl).await;
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                while !seen(&node) && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if seen(&node) {
                    break;
                }
            }
            println!("hostile peer sent a {what} record");
        }
        client.stop().await;
    });

    for kind in KINDS {
        node.wait_log(
            &format!("refused {kind} record"),
            1,
            Duration::from_secs(10),
        );
    }
    let counts: Vec<String> = KINDS
        .iter()
        .map(|k| {
            format!(
                "{k}={}",
                node.stderr()
                    .matches(&format!("refused {k} record"))
                    .count()
            )
        })
        .collect();
    println!("storage node refusals by kind: {}", counts.join(" "));

    // What the DHT hands out is still the genuine record, and the provider
    // and the node are alive and well.
    let after = discover(&node_addr, 10, &["--json"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(json_field(&after.stdout, "url").unwrap(), genuine_url);
    assert_eq!(
        json_field(&after.stdout, "peer_id"),
        json_field(&genuine.stdout, "peer_id")
    );
    let testing = run(
        DISCOVER,
        &[
            "--channel",
            "testing",
            "--arch",
            "arm64",
            "--bootstrap",
            &node_addr,
            "--timeout",
            "3",
        ],
    );
    assert_eq!(
        testing.code, 2,
        "a re-keyed record was served: {}",
        testing.stdout
    );
    for p in [&node.stderr(), &s.proc.stderr()] {
        assert!(!p.contains("panicked"), "{p}");
    }
    assert_eq!(common::http(s.http_port, "GET", "/healthz").0, 200);
}

/// A storage node logging the DHT at DEBUG (each refusal), with `extra`
/// arguments, and its address.
fn storage_node(dir: &std::path::Path, ttl: u64, extra: &[&str]) -> (Proc, String) {
    node_with(
        dir,
        "node",
        ttl,
        extra,
        Some("info,libp2p=warn,plasmd::dht=debug"),
    )
}

/// The newest valid record for `key` the DHT returns right now.
async fn newest(client: &dht::Client, key: &libp2p::kad::RecordKey) -> ManifestRecord {
    let mut found = client.get(key.clone()).await.unwrap();
    let mut best: Option<ManifestRecord> = None;
    while let Some(f) = found.recv().await {
        let Ok(r) = plasmd::record::decode_for_key(
            key.as_ref(),
            &f.record.value,
            plasmd::time::Now::At(plasmd::time::unix_now()),
        ) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| r.seq > b.seq) {
            best = Some(r);
        }
    }
    best.expect("the genuine record is in the DHT")
}

/// A flood of validly signed records under 2,000 distinct keys from one
/// peer (more than a node's 1,024-record store) must not keep a new honest
/// provider's record off the node, nor flood the node's log.
#[test]
fn a_record_flood_from_one_peer_does_not_keep_a_new_provider_out() {
    const FLOOD: usize = 2000;
    let dir = TempDir::new("flood");
    // DEBUG for the DHT, to count the quota refusals (INFO only sums them
    // up once a minute).
    let (node, node_addr) = storage_node(dir.path(), 600, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    rt.block_on(async {
        let (client, keypair) = hostile_peer(&node_addr, 600, false).await;
        let peer = keypair.public().to_peer_id().to_string();
        let ttl = Duration::from_secs(600);
        let expires = SystemTime::now() + ttl;
        for i in 0..FLOOD {
            let channel = format!("flood{i}");
            let key = manifest_dht_key(&channel, "arm64");
            let url = format!("http://127.0.0.1:9/{channel}/arm64/manifest.json");
            let record = ManifestRecord::new(&url, &peer, None, "v")
                .sign(
                    &format!("/phase/{channel}/arm64/manifest"),
                    &keypair,
                    1,
                    expires,
                    &"0".repeat(64),
                )
                .unwrap();
            let _ = client
                .put(key.clone(), record.to_bytes().unwrap(), ttl)
                .await;
            // libp2p keeps every put in the sender's own store first; an
            // attacker does not, so neither does this one (its store would
            // fill at 1,024 and stop the flood).
            let _ = client.remove_local(key).await;
        }
        client.stop().await;
    });
    let quota = node.stderr().matches("refused quota record").count();
    println!(
        "flooded the node with {FLOOD} signed records in {:.1} s; {quota} refused for quota",
        start.elapsed().as_secs_f64()
    );
    assert!(quota > 0, "the flood never filled the store");

    // A new honest provider of a new channel publishes through the node...
    let root = dir.path().join("artifacts");
    std::fs::create_dir_all(root.join("late/arm64")).unwrap();
    std::fs::write(root.join("late/arm64/vmlinuz"), b"late kernel").unwrap();
    let t = std::time::Instant::now();
    let s = serve(
        dir.path(),
        &root,
        &["--bootstrap", &node_addr, "--record-ttl", "60"],
    );
    s.proc
        .wait_log("DHT record published", 1, Duration::from_secs(60));
    let published_after = t.elapsed();
    // ...and the node holds its record: with the provider gone (SIGKILL, no
    // un-advertising), it is still found through the node.
    let url = format!(":{}/late/arm64/", s.http_port);
    drop(s);
    let found = discover(&node_addr, 10, &["--channel", "late"]);
    assert!(
        found.code == 0 && found.stdout.contains(&url),
        "the node did not keep the honest record: {}",
        found.stderr
    );
    assert!(node.stderr().contains("made room"));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", node.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    let loud = node
        .stderr()
        .lines()
        .filter(|l| l.starts_with("[WARN") || l.starts_with("[INFO") || l.starts_with("[ERROR"))
        .count();
    println!(
        "honest record published {:.1} s after its provider started and kept by the node; node {rss}; {loud} INFO/WARN lines",
        published_after.as_secs_f64()
    );
    // No line per refused PUT at INFO or above: they are summed up.
    assert!(loud < 20, "{}", node.stderr());
}

/// A closed fleet: a node started with `--trust` stores its provider's
/// records and refuses a validly signed record of anyone else.
#[test]
fn a_closed_fleet_node_stores_only_trusted_publishers() {
    let dir = TempDir::new("closed-fleet");
    let root = artifacts(dir.path());
    // The provider's peer id, known before it starts (as an operator would
    // read it with `plasmd id`).
    let provider_key = dir.path().join("provider.key");
    let id = run(
        PLASMD,
        &["id", "--identity", provider_key.to_str().unwrap()],
    );
    let provider_id = id.stdout.trim().to_string();
    let (node, node_addr) = storage_node(dir.path(), 60, &["--trust", &provider_id]);
    let s = serve(dir.path(), &root, &["--bootstrap", &node_addr]);
    s.proc
        .wait_log("DHT record published", 1, Duration::from_secs(20));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, keypair) = hostile_peer(&node_addr, 60, false).await;
        let me = keypair.public().to_peer_id().to_string();
        let record = ManifestRecord::new(
            "http://127.0.0.1:9/stable/arm64/manifest.json",
            &me,
            None,
            "evil",
        )
        .sign(
            "/phase/stable/arm64/manifest",
            &keypair,
            plasmd::time::unix_now() * 1000,
            SystemTime::now() + Duration::from_secs(60),
            &"0".repeat(64),
        )
        .unwrap();
        for _ in 0..5 {
            let _ = client
                .put(
                    manifest_dht_key("stable", "arm64"),
                    record.to_bytes().unwrap(),
                    Duration::from_secs(60),
                )
                .await;
            if node.stderr().contains("refused untrusted record") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        client.stop().await;
    });
    node.wait_log("refused untrusted record", 1, Duration::from_secs(10));
    // The provider's record is held by the node: found with the provider gone.
    let url = format!(":{}/stable/arm64/", s.http_port);
    drop(s);
    let found = discover(&node_addr, 10, &["--all"]);
    assert_eq!(found.code, 0, "{}", found.stderr);
    assert_eq!(found.stdout.lines().count(), 1, "{}", found.stdout);
    assert!(found.stdout.contains(&url), "{}", found.stdout);
}
