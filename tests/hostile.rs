//! A hostile peer in the DHT, written with plasmd's own library: it joins
//! like any node and PUTs forged, replayed, re-keyed, expired, future-dated,
//! oversized, malformed and unsigned records at the manifest key. None may be stored or
//! returned by `phase-discover`; nothing panics; the storage node counts the
//! refusals by kind.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use plasmd::dht::{self, DhtConfig, Role};
use plasmd::record::{manifest_dht_key, ManifestRecord};

/// The kinds a storage node reports, with how many of each the test sends.
const KINDS: [&str; 8] = [
    "forged",
    "replayed",
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
    let key_file = dir.path().join("node.key");
    let node = Proc::spawn_logged(
        "node",
        PLASMD,
        &[
            "node",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--identity",
            key_file.to_str().unwrap(),
            "--record-ttl",
            "30",
        ],
        "info,libp2p=warn,plasmd=debug",
    );
    let node_addr = node.wait_stdout("p2p listening on ", Duration::from_secs(10));
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
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let (client, event_loop, _) = dht::start(DhtConfig {
            keypair: keypair.clone(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![node_addr.parse().unwrap()],
            announce: vec![],
            record_ttl: Duration::from_secs(30),
            mdns: false,
            role: Role::Server,
            agent: "hostile/0".into(),
        })
        .await
        .unwrap();
        tokio::spawn(event_loop.run());
        let mut peers = client.peers();
        peers.wait_for(|n| *n > 0).await.unwrap();

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
        own.last_updated = plasmd::record::rfc3339(now - Duration::from_secs(7200));
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
            r.last_updated = plasmd::record::rfc3339(updated);
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

/// The newest valid record for `key` the DHT returns right now.
async fn newest(client: &dht::Client, key: &libp2p::kad::RecordKey) -> ManifestRecord {
    let mut found = client.get(key.clone()).await.unwrap();
    let mut best: Option<ManifestRecord> = None;
    while let Some(f) = found.recv().await {
        let Ok(r) = plasmd::record::decode_for_key(
            key.as_ref(),
            &f.record.value,
            plasmd::record::unix_now(),
        ) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| r.seq > b.seq) {
            best = Some(r);
        }
    }
    best.expect("the genuine record is in the DHT")
}
