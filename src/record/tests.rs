//! Records as publishers write them and as hostile peers bend them.
use super::*;
use crate::time::unix_now;
use std::time::UNIX_EPOCH;

const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn sample() -> ManifestRecord {
    ManifestRecord {
        url: "http://192.168.1.100:8080/stable/arm64/manifest.json".into(),
        peer_id: PEER.into(),
        provider_name: Some("lab-rack-3".into()),
        last_updated: "2026-11-22T10:00:00Z".into(),
        version: "3f9a1c2e7b6d4a10".into(),
        seq: None,
        expires_at: None,
        manifest_sha256: None,
        release_seq: None,
        release_key: None,
        sig: None,
    }
}

const KEY: &str = "/phase/stable/arm64/manifest";
const SHA: &str = "6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c";

/// A record signed by a fresh key, valid for an hour from `now`.
fn signed(now: u64) -> (ManifestRecord, libp2p::identity::Keypair) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut r = sample();
    r.peer_id = key.public().to_peer_id().to_string();
    let expires = UNIX_EPOCH + std::time::Duration::from_secs(now + 3600);
    let r = r.sign(KEY, &key, now * 1000, expires, SHA).unwrap();
    (r, key)
}

#[test]
fn test_manifest_key_format() {
    let key = manifest_dht_key("stable", "arm64");
    let key_str = std::str::from_utf8(key.as_ref()).unwrap();
    assert_eq!(key_str, "/phase/stable/arm64/manifest");
    let parsed = parse_key(key.as_ref()).unwrap();
    assert_eq!(
        (parsed.channel.as_str(), parsed.arch.as_str()),
        ("stable", "arm64")
    );
    assert_eq!(parsed.provider, None);
    let pk = provider_key("stable", "arm64", PEER);
    assert_eq!(
        parse_key(pk.as_bytes()).unwrap().provider.as_deref(),
        Some(PEER)
    );
    let sha = "ab".repeat(32);
    let rk = release_key("stable", "arm64", &sha);
    assert_eq!(rk, format!("/phase/stable/arm64/release/{sha}"));
    let parsed = parse_key(rk.as_bytes()).unwrap();
    assert_eq!(
        (parsed.release.as_deref(), parsed.provider),
        (Some(&*sha), None)
    );
    let hk = holder_key("stable", "arm64", &sha, PEER);
    let parsed = parse_key(hk.as_bytes()).unwrap();
    assert_eq!(
        (parsed.release.as_deref(), parsed.provider.as_deref()),
        (Some(&*sha), Some(PEER))
    );
    for bad in [
        format!("/phase/stable/arm64/release/{}", "AB".repeat(32)),
        format!("/phase/stable/arm64/release/{}", "ab".repeat(31)),
        format!("/phase/stable/arm64/release/{sha}/x"),
        format!("/phase/stable/arm64/release/{sha}/{PEER}/x"),
        "/phase/stable/arm64/release".to_string(),
    ] {
        assert!(parse_key(bad.as_bytes()).is_err(), "{bad}");
    }
    for bad in [
        "/phase/stable/arm64/manifest/x",
        "/phase/stable/arm64/manifest/",
        "/phase/stable/arm64",
        "/phase/stable/arm64/manifest/a/b",
    ] {
        assert!(parse_key(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn record_serializes_to_the_conventions_json_and_round_trips() {
    let r = sample();
    let bytes = r.to_bytes().unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"url":"http://192.168.1.100:8080/stable/arm64/manifest.json","peer_id":"{PEER}","provider_name":"lab-rack-3","last_updated":"2026-11-22T10:00:00Z","version":"3f9a1c2e7b6d4a10"}}"#
        )
    );
    assert_eq!(ManifestRecord::from_bytes(&bytes).unwrap(), r);
    assert!(r.validate("stable", "arm64").is_ok());
}

#[test]
fn provider_name_is_left_out_when_unset() {
    let mut r = sample();
    r.provider_name = None;
    let text = String::from_utf8(r.to_bytes().unwrap()).unwrap();
    assert!(!text.contains("provider_name"));
    assert_eq!(ManifestRecord::from_bytes(text.as_bytes()).unwrap(), r);
}

#[test]
fn unknown_fields_are_ignored_and_escapes_decoded() {
    let json = format!(
        r#" {{"extra":[1,{{"a":"b"}}],"url":"http://h/stable/arm64/manifest.json","peer_id":"{PEER}","provider_name":"rack \"3\"","last_updated":"2026-11-22T10:00:00Z","version":"v1","n":5}} "#
    );
    let r = ManifestRecord::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(r.provider_name.as_deref(), Some("rack \"3\""));
    assert!(r.validate("stable", "arm64").is_ok());
}

#[test]
fn hostile_values_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{".to_vec(),
        b"{\"url\":1}".to_vec(),
        vec![0xff; 100],
        vec![b'['; 2000],
        format!("{{\"url\":\"{}\"}}", "a".repeat(1500)).into_bytes(),
        vec![b' '; MAX_RECORD_BYTES + 1],
    ];
    for case in cases {
        assert!(ManifestRecord::from_bytes(&case).is_err());
    }
}

#[test]
fn validation_ties_the_record_to_its_key() {
    let r = sample();
    assert!(matches!(
        r.validate("testing", "arm64"),
        Err(RecordError::KeyMismatch(..))
    ));
    let mut bad = sample();
    bad.peer_id = "not-a-peer".into();
    assert!(bad.validate("stable", "arm64").is_err());
    let mut bad = sample();
    bad.last_updated = "yesterday".into();
    assert!(bad.validate("stable", "arm64").is_err());
    let mut bad = sample();
    bad.url = "ftp://h/stable/arm64/manifest.json".into();
    assert!(bad.validate("stable", "arm64").is_err());
    let now = 1_795_345_200;
    let (s, _) = signed(now);
    assert!(decode_for_key(KEY.as_bytes(), &s.to_bytes().unwrap(), Now::At(now)).is_ok());
    assert!(decode_for_key(
        b"/phase/Stable/arm64/manifest",
        &s.to_bytes().unwrap(),
        Now::At(now)
    )
    .is_err());
}

#[test]
fn signed_records_verify_and_any_change_breaks_them() {
    let now = 1_795_345_200;
    let (r, _) = signed(now);
    assert_eq!(r.verify_signature(KEY, now), Ok(()));
    let bytes = r.to_bytes().unwrap();
    assert!(bytes.len() < MAX_RECORD_BYTES);
    assert_eq!(ManifestRecord::from_bytes(&bytes).unwrap(), r);

    type Change = Box<dyn Fn(&mut ManifestRecord)>;
    let tampered: Vec<Change> = vec![
        Box::new(|r| r.url = "http://evil/stable/arm64/manifest.json".into()),
        Box::new(|r| r.version = "other".into()),
        Box::new(|r| r.provider_name = None),
        Box::new(|r| r.last_updated = "2026-11-22T10:00:01Z".into()),
        Box::new(|r| r.seq = r.seq.map(|s| s + 1)),
        Box::new(|r| r.expires_at = Some("2026-11-22T11:30:00Z".into())),
        Box::new(|r| r.manifest_sha256 = Some("0".repeat(64))),
    ];
    for change in tampered {
        let mut t = r.clone();
        change(&mut t);
        assert_eq!(t.verify_signature(KEY, now), Err(RecordError::BadSignature));
    }
    // Replayed under another key: the key is inside what was signed.
    let mut other = r.clone();
    other.url = "http://192.168.1.100:8080/testing/arm64/manifest.json".into();
    assert_eq!(
        other.verify_signature("/phase/testing/arm64/manifest", now),
        Err(RecordError::BadSignature)
    );
    assert_eq!(
        r.verify_signature("/phase/testing/arm64/manifest", now),
        Err(RecordError::BadSignature)
    );
    // Signed by someone else than peer_id.
    let (forged, _) = signed(now);
    let mut f = forged.clone();
    f.peer_id = r.peer_id.clone();
    assert_eq!(f.verify_signature(KEY, now), Err(RecordError::BadSignature));
    // Unsigned and expired.
    assert_eq!(
        sample().verify_signature(KEY, now),
        Err(RecordError::Unsigned("seq"))
    );
    let late = now + 3600 + CLOCK_SKEW_SECS + 1;
    assert!(matches!(
        r.verify_signature(KEY, late),
        Err(RecordError::Expired(_))
    ));
    assert_eq!(
        r.verify_signature(KEY, now + 3600 + CLOCK_SKEW_SECS),
        Ok(())
    );
    assert_eq!(RecordError::BadSignature.kind(), RefusalKind::Forged);
}

#[test]
fn records_dated_ahead_or_living_too_long_are_refused_as_future() {
    let now = 1_795_345_200;
    let key = libp2p::identity::Keypair::generate_ed25519();
    let sign = |updated: u64, expires: u64| {
        let mut r = sample();
        r.peer_id = key.public().to_peer_id().to_string();
        r.last_updated = rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(updated));
        let expires = UNIX_EPOCH + std::time::Duration::from_secs(expires);
        r.sign(KEY, &key, updated * 1000, expires, SHA).unwrap()
    };
    // In bounds: a little ahead (skew), and the longest TTL.
    assert_eq!(
        sign(now + 60, now + 3600).verify_signature(KEY, now),
        Ok(())
    );
    let longest = now + MAX_RECORD_TTL_SECS;
    assert_eq!(sign(now, longest).verify_signature(KEY, now), Ok(()));
    let year_2099 = 4_070_908_800;
    for (updated, expires) in [
        // Both dated 2099: would win "newest" forever.
        (year_2099, year_2099 + 3600),
        // Realistic date, 70-year expiry.
        (now, year_2099),
        // Beyond the skew.
        (now + CLOCK_SKEW_SECS + 1, now + 3600),
        // Expires before it was made.
        (now, now - 10),
    ] {
        let e = sign(updated, expires)
            .verify_signature(KEY, now)
            .unwrap_err();
        assert_eq!(e.kind(), RefusalKind::Future, "{updated} {expires}: {e}");
    }
    // A board whose clock is known to be wrong cannot tell "ahead"; it
    // still refuses what expired before the newest time it trusts.
    let fresh = sign(now + 86_400, now + 90_000);
    assert_eq!(fresh.verify_signature_at(KEY, Now::NotBefore(now)), Ok(()));
    let stale = sign(now - 7200, now - 3600);
    assert!(matches!(
        stale.verify_signature_at(KEY, Now::NotBefore(now)),
        Err(RecordError::Expired(_))
    ));
}

#[test]
fn per_provider_keys_bind_the_record_to_its_publisher() {
    let now = 1_795_345_200;
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id().to_string();
    let pk = provider_key("stable", "arm64", &peer);
    let mut r = sample();
    r.peer_id = peer.clone();
    let expires = UNIX_EPOCH + std::time::Duration::from_secs(now + 3600);
    let own = r.clone().sign(&pk, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(pk.as_bytes(), &own.to_bytes().unwrap(), Now::At(now)).is_ok());
    // Signed for the spec key: refused under the provider key, and back.
    let spec = r.sign(KEY, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(pk.as_bytes(), &spec.to_bytes().unwrap(), Now::At(now)).is_err());
    assert!(decode_for_key(KEY.as_bytes(), &own.to_bytes().unwrap(), Now::At(now)).is_err());
    // Under another provider's key: re-keyed.
    let other = provider_key("stable", "arm64", PEER);
    let e = decode_for_key(other.as_bytes(), &own.to_bytes().unwrap(), Now::At(now)).unwrap_err();
    assert_eq!(e.kind(), RefusalKind::Rekeyed);
}

#[test]
fn holder_records_name_the_release_of_their_key() {
    let now = 1_795_345_200;
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id().to_string();
    let mut r = sample();
    r.peer_id = peer.clone();
    r.url = format!("http://192.0.2.7:8090/_release/{SHA}/stable/arm64/manifest.json");
    let expires = UNIX_EPOCH + std::time::Duration::from_secs(now + 3600);
    let hk = holder_key("stable", "arm64", SHA, &peer);
    let own = r.clone().sign(&hk, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(hk.as_bytes(), &own.to_bytes().unwrap(), Now::At(now)).is_ok());
    // Another release's hash in the record: refused under this key.
    let other_sha = "cd".repeat(32);
    let hk2 = holder_key("stable", "arm64", &other_sha, &peer);
    let wrong = r.clone().sign(&hk2, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(hk2.as_bytes(), &wrong.to_bytes().unwrap(), Now::At(now)).is_err());
    // Nothing is stored under the release key itself, nor its shards.
    let rk = release_key("stable", "arm64", SHA);
    let bare = r.clone().sign(&rk, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(rk.as_bytes(), &bare.to_bytes().unwrap(), Now::At(now)).is_err());
    let sk = release_shard_key("stable", "arm64", SHA, 3);
    let sharded = r.sign(&sk, &keypair, 1, expires, SHA).unwrap();
    assert!(decode_for_key(sk.as_bytes(), &sharded.to_bytes().unwrap(), Now::At(now)).is_err());
}

#[test]
fn release_shards_are_announcement_keys_of_their_release() {
    let parsed = parse_key(release_shard_key("stable", "arm64", SHA, 7).as_bytes()).unwrap();
    assert_eq!(
        (parsed.shard, parsed.provider, parsed.release.as_deref()),
        (Some(7), None, Some(SHA))
    );
    for bad in ["8", "x", "-1"] {
        let key = format!("{}/{bad}", release_key("stable", "arm64", SHA));
        assert!(parse_key(key.as_bytes()).is_err(), "{key}");
    }
    // Every peer id lands in a shard, and ids spread over all of them.
    let shards: std::collections::HashSet<u8> = (0..200)
        .map(|_| {
            let id = libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id();
            shard_of(&id.to_string())
        })
        .collect();
    assert_eq!(shards.len(), RELEASE_SHARDS as usize);
}

#[test]
fn release_fields_are_signed_and_absent_ones_keep_the_v1_form() {
    let now = unix_now();
    let (r, kp) = signed(now);
    assert!(!String::from_utf8(r.signing_bytes(KEY))
        .unwrap()
        .contains("release"));
    let mut rel = r.clone();
    rel.release_seq = Some(42);
    rel.release_key = Some("0F47C07A52FB44EE".into());
    let rel = rel
        .sign(
            KEY,
            &kp,
            7,
            SystemTime::now() + std::time::Duration::from_secs(60),
            SHA,
        )
        .unwrap();
    let decoded = ManifestRecord::from_bytes(&rel.to_bytes().unwrap()).unwrap();
    assert_eq!(decoded.release_seq, Some(42));
    decoded.verify_signature(KEY, now).unwrap();
    decoded.validate("stable", "arm64").unwrap();
    // Raising the advertised release breaks the record signature.
    let mut forged = decoded.clone();
    forged.release_seq = Some(43);
    assert_eq!(
        forged.verify_signature(KEY, now),
        Err(RecordError::BadSignature)
    );
    let mut bad_id = decoded;
    bad_id.release_key = Some("not-hex".into());
    assert!(bad_id.validate("stable", "arm64").is_err());
}

#[test]
fn signing_bytes_are_the_documented_canonical_form() {
    let mut r = sample();
    r.seq = Some(7);
    r.expires_at = Some("2026-11-22T11:00:00Z".into());
    r.manifest_sha256 = Some(SHA.into());
    let text = String::from_utf8(r.signing_bytes(KEY)).unwrap();
    assert_eq!(
        text,
        format!(
            "plasmd-record-v1\nkey={KEY}\nurl=http://192.168.1.100:8080/stable/arm64/manifest.json\npeer_id={PEER}\nprovider_name=lab-rack-3\nlast_updated=2026-11-22T10:00:00Z\nversion=3f9a1c2e7b6d4a10\nseq=7\nexpires_at=2026-11-22T11:00:00Z\nmanifest_sha256={SHA}\n"
        )
    );
}
