//! Signed releases, as an operator and a board use them: a fleet key made
//! with `plasmd release keygen` (or the `minisign` CLI), releases signed
//! offline, any provider carrying them, and `phase-discover --release-key`
//! accepting only what the key signed, for the channel/arch it asked for,
//! never older than what it already accepted (`--state`).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

fn plasmd(args: &[&str]) -> Discovered {
    run(PLASMD, args)
}

fn minisign(args: &[&str]) -> std::process::Output {
    need_tool("minisign", "minisign");
    std::process::Command::new("minisign")
        .args(args)
        .output()
        .expect("minisign runs")
}

#[test]
#[ignore = "tier packages: needs the minisign CLI; bash tests/run installs it"]
fn release_signatures_interoperate_with_the_minisign_cli() {
    let dir = TempDir::new("release-cli");
    let root = artifacts(dir.path());
    let rel = root.join("stable/arm64");
    let (plasmd_pub, plasmd_key) = keygen(dir.path(), "fleet");
    // keygen never overwrites a key.
    let again = plasmd(&["release", "keygen", "-p", &plasmd_pub, "-s", &plasmd_key]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    // Signed by plasmd, verified by minisign.
    sign(&plasmd_key, &rel, &["--version", "2026.11"]);
    let manifest = fs::read_to_string(rel.join("manifest.json")).unwrap();
    for field in [
        "\"channel\": \"stable\"",
        "\"arch\": \"arm64\"",
        "\"release_seq\"",
        "\"created\"",
        "\"version\": \"2026.11\"",
    ] {
        assert!(manifest.contains(field), "{field} missing in {manifest}");
    }
    let m = rel.join("manifest.json");
    let out = minisign(&["-V", "-p", &plasmd_pub, "-m", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Signed by minisign (a passwordless key of its own), verified by plasmd.
    let (m_pub, m_key) = (dir.path().join("m.pub"), dir.path().join("m.key"));
    let out = minisign(&[
        "-G",
        "-W",
        "-p",
        m_pub.to_str().unwrap(),
        "-s",
        m_key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = minisign(&[
        "-S",
        "-s",
        m_key.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel_s = rel.to_str().unwrap();
    let ok = plasmd(&["release", "verify", "-p", m_pub.to_str().unwrap(), rel_s]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.starts_with("OK: stable/arm64 version 2026.11"),
        "{}",
        ok.stdout
    );
    // The fleet key did not sign this one: refused, naming both keys.
    let wrong = plasmd(&["release", "verify", "-p", &plasmd_pub, rel_s]);
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("not a release key"),
        "{}",
        wrong.stderr
    );
    // And plasmd signs with minisign's passwordless key file too.
    sign(m_key.to_str().unwrap(), &rel, &[]);
    assert_eq!(
        plasmd(&["release", "verify", "-p", m_pub.to_str().unwrap(), rel_s]).code,
        0
    );

    // One byte changed after signing: refused.
    let text = fs::read_to_string(&m)
        .unwrap()
        .replacen("\"arm64\"", "\"arm65\"", 1);
    fs::write(&m, text).unwrap();
    let tampered = plasmd(&["release", "verify", "-p", m_pub.to_str().unwrap(), rel_s]);
    assert_eq!(tampered.code, 3);
    assert!(
        tampered.stderr.contains("does not verify"),
        "{}",
        tampered.stderr
    );
    // A changed artifact: the signature is fine, the file is not.
    sign(&plasmd_key, &rel, &[]);
    fs::write(rel.join("vmlinuz"), b"another kernel\n").unwrap();
    let changed = plasmd(&["release", "verify", "-p", &plasmd_pub, rel_s]);
    assert_eq!(changed.code, 3);
    assert!(changed.stderr.contains("vmlinuz"), "{}", changed.stderr);
    // A lower --release-seq than the directory's is refused.
    let low = plasmd(&[
        "release",
        "sign",
        "-s",
        &plasmd_key,
        "--release-seq",
        "5",
        rel_s,
    ]);
    assert_eq!(low.code, 2);
    assert!(low.stderr.contains("not above"), "{}", low.stderr);
}

#[test]
#[ignore = "tier packages: needs the minisign CLI; bash tests/run installs it"]
fn a_provider_signing_its_own_manifests_serves_a_signature_minisign_accepts() {
    let dir = TempDir::new("release-sign-key");
    let root = artifacts(dir.path());
    let (pub_file, key) = keygen(dir.path(), "lab");
    let s = serve(dir.path(), &root, &["--sign-key", &key]);
    let (status, _, json) = http(s.http_port, "GET", "/stable/arm64/manifest.json");
    assert_eq!(status, 200);
    let (status, _, sig) = http(s.http_port, "GET", "/stable/arm64/manifest.json.minisig");
    assert_eq!(status, 200);
    let (m, x) = (
        dir.path().join("got.json"),
        dir.path().join("got.json.minisig"),
    );
    fs::write(&m, &json).unwrap();
    fs::write(&x, &sig).unwrap();
    let out = minisign(&["-V", "-p", &pub_file, "-m", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&json).contains("\"release_seq\""));
    // An unsigned tree has no signature to serve.
    let plain_dir = dir.path().join("plain");
    fs::create_dir_all(&plain_dir).unwrap();
    let plain = serve(&plain_dir, &artifacts(&plain_dir), &[]);
    let (status, _, _) = http(
        plain.http_port,
        "GET",
        "/stable/arm64/manifest.json.minisig",
    );
    assert_eq!(status, 404);
}

/// Copies a signed `<channel>/<arch>` directory's manifest and signature.
fn save_release(rel: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in ["manifest.json", "manifest.json.minisig"] {
        fs::copy(rel.join(f), to.join(f)).unwrap();
    }
}

/// Puts a saved release back (as an attacker replaying it would).
fn restore_release(from: &Path, rel: &Path) {
    for f in ["manifest.json.minisig", "manifest.json"] {
        let tmp = rel.join(format!(".{f}.tmp"));
        fs::copy(from.join(f), &tmp).unwrap();
        fs::rename(&tmp, rel.join(f)).unwrap();
    }
}

#[test]
fn boards_take_only_signed_releases_for_their_channel_and_never_go_back() {
    let dir = TempDir::new("release-boards");
    let nodes = fleet(dir.path(), 2, 60);
    let boot = nodes[0].1.clone();
    let (fleet_pub, fleet_key) = keygen(dir.path(), "fleet");
    let (other_pub, _) = keygen(dir.path(), "other");

    // Provider S carries a signed release; provider U an unsigned tree.
    let s_dir = dir.path().join("s");
    let s_root = artifacts(&s_dir);
    let s_rel = s_root.join("stable/arm64");
    sign(&fleet_key, &s_rel, &["--release-seq", "10"]);
    let old = dir.path().join("release-10");
    save_release(&s_rel, &old);
    sign(&fleet_key, &s_rel, &["--release-seq", "11"]);
    // Before starting: what would be advertised, signature state included.
    let check = plasmd(&[
        "serve",
        "--artifacts",
        s_root.to_str().unwrap(),
        "--external-url",
        "http://boot.lab:8080",
        "--check-config",
    ]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains("stable/arm64: version "),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("release_seq 11 signed by"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("-> http://boot.lab:8080/stable/arm64/manifest.json"),
        "{}",
        check.stdout
    );
    let s = serve(&s_dir, &s_root, &["--bootstrap", &boot]);
    let u_dir = dir.path().join("u");
    let u_root = artifacts(&u_dir);
    fs::write(u_root.join("stable/arm64/vmlinuz"), b"unsigned kernel\n").unwrap();
    let u = serve(&u_dir, &u_root, &["--bootstrap", &boot]);
    for p in [&s, &u] {
        p.proc
            .wait_log("DHT record published", 1, Duration::from_secs(20));
    }
    let s_url = format!(
        "http://127.0.0.1:{}/stable/arm64/manifest.json",
        s.http_port
    );
    let u_url = format!(
        "http://127.0.0.1:{}/stable/arm64/manifest.json",
        u.http_port
    );
    // Both are found without a release key...
    discover_until(&nodes[1].1, Duration::from_secs(20), &["--all"], |d| {
        d.stdout.lines().count() == 2
    });

    // ...but with one, only the signed release is a candidate.
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap();
    let with_key = ["--release-key", fleet_pub.as_str(), "--state", state_s];
    let mut args = vec!["--all"];
    args.extend_from_slice(&with_key);
    let d = discover(&boot, 20, &args);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.stdout.trim(), s_url, "{}", d.stderr);
    assert!(
        d.stderr.contains(&format!(
            "refusing {u_url}: release at {u_url} refused: the manifest is not signed"
        )),
        "{}",
        d.stderr
    );
    let floor = fs::read_to_string(state.join("rollback-floor")).unwrap();
    assert!(floor.contains("release stable/arm64 11\n"), "{floor}");

    // --fetch-all falls back past the unsigned provider and writes only
    // verified files of the signed release.
    let out = dir.path().join("boot");
    let mut args = vec!["--fetch-all", out.to_str().unwrap()];
    args.extend_from_slice(&with_key);
    let d = discover(&boot, 20, &args);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(
        fs::read(out.join("vmlinuz")).unwrap(),
        b"test kernel image\n"
    );

    // A key the board does not trust: exit 3, the cause named.
    let d = discover(&boot, 10, &["--release-key", &other_pub]);
    assert_eq!(d.code, 3, "{}", d.stderr);
    assert!(
        d.stderr.contains("which is not a release key"),
        "{}",
        d.stderr
    );

    // A release for another channel, served as stable/arm64: refused.
    let t_rel = s_root.join("testing/arm64");
    fs::create_dir_all(&t_rel).unwrap();
    fs::write(t_rel.join("vmlinuz"), b"testing kernel\n").unwrap();
    sign(&fleet_key, &t_rel, &["--release-seq", "50"]);
    let current = dir.path().join("release-11");
    save_release(&s_rel, &current);
    restore_release(&t_rel, &s_rel);
    let d = discover_until(&boot, Duration::from_secs(20), &with_key, |d| {
        d.stderr
            .contains("the signed release is for testing/arm64, not stable/arm64")
    });
    assert_eq!(d.code, 3, "{}", d.stderr);

    // One byte changed after signing: refused.
    restore_release(&current, &s_rel);
    let m = fs::read_to_string(s_rel.join("manifest.json")).unwrap();
    let forged = dir.path().join("forged.json");
    fs::write(
        &forged,
        m.replacen("\"release_seq\": 11", "\"release_seq\": 91", 1),
    )
    .unwrap();
    fs::rename(&forged, s_rel.join("manifest.json")).unwrap();
    // Its signature names the genuine manifest: the provider keeps the
    // previous pair for a few seconds (a release being switched), then
    // serves the files as they are, and the board refuses them.
    let d = discover_until(&boot, Duration::from_secs(40), &with_key, |d| {
        d.stderr.contains("does not verify")
    });
    assert_eq!(d.code, 3, "{}", d.stderr);

    // One chunk hash changed after signing (the signature covers them with
    // the rest): refused, and nothing written.
    restore_release(&current, &s_rel);
    let m = fs::read_to_string(s_rel.join("manifest.json")).unwrap();
    let at = m
        .find("\"chunks\": [\"")
        .expect("a signed release lists chunk hashes")
        + "\"chunks\": [\"".len();
    let flipped = if &m[at..at + 1] == "0" { "1" } else { "0" };
    fs::write(&forged, format!("{}{flipped}{}", &m[..at], &m[at + 1..])).unwrap();
    fs::rename(&forged, s_rel.join("manifest.json")).unwrap();
    let out = dir.path().join("chunk-forged");
    let mut args = with_key.to_vec();
    args.extend_from_slice(&["--fetch-all", out.to_str().unwrap()]);
    let d = discover_until(&boot, Duration::from_secs(40), &args, |d| {
        d.stderr.contains("does not verify")
    });
    assert_eq!(d.code, 3, "{}", d.stderr);
    assert!(
        fs::read_dir(&out).map_or(true, |mut e| e.next().is_none()),
        "files written from a forged manifest"
    );

    // The old release 10 replayed: below the floor of 11, refused...
    restore_release(&old, &s_rel);
    let d = discover_until(&boot, Duration::from_secs(20), &with_key, |d| {
        d.stderr.contains("release_seq 10 is older than 11")
    });
    assert_eq!(d.code, 3, "{}", d.stderr);
    // ...unless the operator says so, which lowers the floor.
    let mut args = with_key.to_vec();
    args.push("--allow-downgrade");
    let d = discover(&boot, 20, &args);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(d.stderr.contains("below the floor 11"), "{}", d.stderr);
    let floor = fs::read_to_string(state.join("rollback-floor")).unwrap();
    assert!(floor.contains("release stable/arm64 10\n"), "{floor}");

    // A damaged state file is refused, never read as "no floor".
    for damage in [&b""[..], b"\x00garbage\xff"] {
        fs::write(state.join("rollback-floor"), damage).unwrap();
        let d = discover(&boot, 10, &with_key);
        assert_eq!(d.code, 2, "{}", d.stderr);
        assert!(d.stderr.contains("is damaged"), "{}", d.stderr);
    }
}
