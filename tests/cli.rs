//! Bad input on the command line or in the config file: one clear line on
//! stderr and exit code 2, never a panic or a backtrace.

mod common;

use common::*;

/// Runs plasmd and checks it failed with exit 2 and a one-line message
/// containing `needle`.
fn fails_with<S: AsRef<str>>(args: &[S], needle: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let r = run(PLASMD, &args);
    assert_eq!(
        r.code, 2,
        "{args:?}: stdout {:?} stderr {:?}",
        r.stdout, r.stderr
    );
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or("");
    assert!(
        last.starts_with("plasmd: error: "),
        "{args:?}: {:?}",
        r.stderr
    );
    assert!(last.contains(needle), "{args:?}: {last:?} lacks {needle:?}");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_a_message_naming_it() {
    let dir = TempDir::new("cli");
    let root = artifacts(dir.path());
    let root = root.to_str().unwrap();
    let key = dir.path().join("k.key");
    let key = key.to_str().unwrap();
    let base = ["serve", "--identity", key, "--artifacts", root];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    fails_with(&["serve", "--frobnicate"], "frobnicate");
    fails_with(&["launch"], "unknown command");
    fails_with::<&str>(&[], "missing command");
    fails_with(
        &["serve", "--identity", key, "--artifacts", "/no/such/dir"],
        "/no/such/dir",
    );
    fails_with(&with(&["--record-ttl", "0"]), "use 1 to 604800 seconds");
    // Past every maximum: a message, never an overflow panic at run time.
    fails_with(
        &with(&["--record-ttl", "18446744073709551615", "--check-config"]),
        "use 1 to 604800 seconds",
    );
    fails_with(
        &with(&["--http-rate-window", "18446744073709551615"]),
        "use 1 to 3600 seconds",
    );
    fails_with(
        &with(&["--record-ttl", "10", "--refresh-interval", "10"]),
        "shorter than the record TTL",
    );
    fails_with(&with(&["--record-ttl", "ten"]), "--record-ttl");
    fails_with(
        &with(&["--bootstrap", "/ip4/127.0.0.1/udp"]),
        "not a valid multiaddr",
    );
    fails_with(&with(&["--p2p-listen", "localhost:4001"]), "localhost:4001");
    fails_with(&with(&["--external-url", "boot.lab:8080"]), "http://");
    fails_with(&with(&["--channel", "Stable"]), "\"Stable\"");
    fails_with(&with(&["--arch", "arm/64"]), "\"arm/64\"");
    fails_with(&with(&["--http-listen", "8080"]), "IP:PORT");

    // Config file problems name the file and the key.
    let cfg = dir.path().join("plasmd.toml");
    let cfg_s = cfg.to_str().unwrap();
    fails_with(
        &["serve", "--identity", key, "--config", "/no/such.toml"],
        "/no/such.toml",
    );
    std::fs::write(&cfg, "[provider]\nartifacts = 3\n").unwrap();
    fails_with(
        &["serve", "--identity", key, "--config", cfg_s],
        "artifacts",
    );
    std::fs::write(
        &cfg,
        format!("[provider]\nartifacts = \"{root}\"\ncolour = \"blue\"\n"),
    )
    .unwrap();
    fails_with(&["serve", "--identity", key, "--config", cfg_s], "colour");
    std::fs::write(&cfg, format!("[provider]\nartifacts = \"{root}\"\n[provider.dht]\nrecord_ttl = 60\nrefresh_interval = 90\n")).unwrap();
    fails_with(
        &["serve", "--identity", key, "--config", cfg_s],
        "shorter than the record TTL",
    );
    std::fs::write(&cfg, "this is not toml").unwrap();
    fails_with(&["serve", "--identity", key, "--config", cfg_s], cfg_s);

    // An identity file that is not a key.
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, b"not a key").unwrap();
    fails_with(
        &[
            "serve",
            "--identity",
            junk.to_str().unwrap(),
            "--artifacts",
            root,
        ],
        "junk.key",
    );
    fails_with(
        &["id", "--identity", dir.path().to_str().unwrap()],
        "identity file",
    );

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    fails_with(&with(&["--http-listen", &busy_addr]), &busy_addr);
    let busy_p2p = format!("/ip4/127.0.0.1/tcp/{}", busy.local_addr().unwrap().port());
    fails_with(
        &with(&["--http-listen", "127.0.0.1:0", "--p2p-listen", &busy_p2p]),
        "cannot listen",
    );
    // A record seq file that lost its number (empty after a torn write by
    // an older version): refused, not silently restarted from the clock.
    let seq = dir.path().join("k.seq");
    std::fs::write(&seq, b"").unwrap();
    fails_with(
        &with(&[
            "--http-listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ]),
        "delete the file",
    );
    std::fs::remove_file(&seq).unwrap();
}

#[test]
fn release_commands_refuse_bad_input_with_exit_2() {
    let dir = TempDir::new("cli-release");
    let root = artifacts(dir.path());
    let rel = root.join("stable/arm64");
    let rel = rel.to_str().unwrap();
    let (p, k) = (dir.path().join("f.pub"), dir.path().join("f.key"));
    let (p, k) = (p.to_str().unwrap(), k.to_str().unwrap());
    fails_with(&["release", "frob"], "keygen, sign or verify");
    fails_with(&["release", "keygen", "-p", p], "-s SECFILE");
    fails_with(&["release", "sign", rel], "-s SECFILE");
    fails_with(
        &["release", "sign", "-s", "/nonexistent.key", rel],
        "/nonexistent.key",
    );
    fails_with(&["release", "sign", "-s", "/etc/hostname", rel], "minisign");
    assert_eq!(
        run(PLASMD, &["release", "keygen", "-p", p, "-s", k]).code,
        0
    );
    fails_with(
        &["release", "sign", "-s", k],
        "<artifacts>/<channel>/<arch>",
    );
    fails_with(
        &[
            "release",
            "sign",
            "-s",
            k,
            "--release-seq",
            "18446744073709551616",
            rel,
        ],
        "--release-seq",
    );
    fails_with(
        &["release", "sign", "-s", k, "--version", "a\tb", rel],
        "--version",
    );
    fails_with(
        &["release", "sign", "-s", k, "/nonexistent/stable/arm64"],
        "/nonexistent",
    );
    fails_with(&["release", "verify", "-p", p], "directory");
    fails_with(
        &[
            "serve",
            "--artifacts",
            root.to_str().unwrap(),
            "--sign-key",
            "/nonexistent.key",
            "--check-config",
        ],
        "--sign-key",
    );
    fails_with(
        &["node", "--trust", "not-a-peer"],
        "[p2p] trusted_publishers",
    );
    fails_with(&["id", "--identity", k, "--trust", "x"], "--trust");
}

#[test]
fn phase_discover_refuses_bad_usage_with_exit_2() {
    // A valid lookup with `extra` on the end.
    let lookup = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "--channel",
            "stable",
            "--arch",
            "arm64",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1",
        ];
        v.extend_from_slice(extra);
        v
    };
    for (args, needle) in [
        (
            vec!["--arch", "arm64", "--bootstrap", "/ip4/127.0.0.1/tcp/1"],
            "--channel",
        ),
        (
            vec!["--channel", "stable", "--arch", "arm64"],
            "--bootstrap",
        ),
        (lookup(&["--channel", "../x"]), "\"../x\""),
        (lookup(&["--bootstrap", "nope"]), "nope"),
        (lookup(&["--timeout", "0"]), "--timeout"),
        (
            lookup(&["--timeout", "18446744073709551615"]),
            "use 1 to 86400 seconds",
        ),
        (vec!["--what"], "what"),
        (
            lookup(&["--release-key", "/nonexistent/fleet.pub"]),
            "/nonexistent/fleet.pub",
        ),
        (lookup(&["--release-key", "/etc/hostname"]), "minisign"),
        (lookup(&["--state", "/tmp"]), "needs --release-key"),
        (lookup(&["--allow-downgrade"]), "--state"),
        (lookup(&["--interval", "5"]), "--interval goes with --watch"),
        (
            lookup(&["--watch", "--interval", "0"]),
            "use 1 to 3600 seconds",
        ),
        (
            lookup(&["--watch", "--fetch", "vmlinuz"]),
            "--watch only looks",
        ),
        (
            lookup(&["--watch", "--fetch-all", "/tmp/x"]),
            "--watch only looks",
        ),
    ] {
        let r = run(DISCOVER, &args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.starts_with("phase-discover: error: "),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn nothing_found_is_exit_2_with_a_message() {
    // A port nobody listens on: the lookup finds nothing and times out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run(
        DISCOVER,
        &[
            "--channel",
            "stable",
            "--arch",
            "arm64",
            "--bootstrap",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
            "--timeout",
            "2",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("no provider found for stable/arm64 within 2s"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

#[test]
fn help_and_version_tell_the_truth() {
    for (bin, args, needle) in [
        (PLASMD, vec!["--help"], "plasmd serve"),
        (PLASMD, vec!["serve", "--help"], "--refresh-interval"),
        (PLASMD, vec!["node", "--help"], "--record-ttl"),
        (PLASMD, vec!["id", "--help"], "--identity"),
        (DISCOVER, vec!["--help"], "--timeout"),
        (DISCOVER, vec!["--help"], "--watch"),
    ] {
        let r = run(bin, &args);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains(needle), "{args:?}: {}", r.stdout);
    }
    let v = run(PLASMD, &["--version"]);
    assert_eq!(
        v.stdout.trim(),
        format!("plasmd {}", env!("CARGO_PKG_VERSION"))
    );
    let v = run(DISCOVER, &["--version"]);
    assert_eq!(
        v.stdout.trim(),
        format!("phase-discover {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn id_creates_a_private_key_and_prints_a_stable_peer_id() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("id");
    let key = dir.path().join("state/id.key");
    let a = run(PLASMD, &["id", "--identity", key.to_str().unwrap()]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.trim().starts_with("12D3KooW"), "{}", a.stdout);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b = run(PLASMD, &["id", "--identity", key.to_str().unwrap()]);
    assert_eq!(a.stdout, b.stdout);
}
