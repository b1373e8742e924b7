//! Flags, files and their checks, as a user would get them wrong.
use super::*;
use crate::http::HttpLimits;
use std::time::Duration;

fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
    let mut all = vec!["serve", "--identity", "/tmp/x.key"];
    all.extend_from_slice(args);
    match parse_plasmd(all)? {
        Command::Serve(c) => Ok(*c),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn defaults_follow_the_conventions() {
    let c = serve(&["--artifacts", "/"]).unwrap();
    assert_eq!(c.http_listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.p2p.listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
    assert_eq!(c.dht.record_ttl, Duration::from_secs(3600));
    assert_eq!(c.dht.refresh_interval, Duration::from_secs(2400));
    assert_eq!(c.http_limits, HttpLimits::default());
}

#[test]
fn http_limits_from_flags_and_file() {
    let c = serve(&[
        "--artifacts",
        "/",
        "--http-min-rate",
        "65536",
        "--http-rate-window",
        "2",
    ])
    .unwrap();
    assert_eq!(c.http_limits.min_rate, 65536);
    assert_eq!(c.http_limits.rate_window, Duration::from_secs(2));
    for bad in [
        &["--http-min-rate", "fast"][..],
        &["--http-min-rate", "-1"],
        &["--http-rate-window", "0"],
        &["--http-rate-window", "3601"],
    ] {
        let mut args = vec!["--artifacts", "/"];
        args.extend_from_slice(bad);
        assert!(serve(&args).is_err(), "{bad:?}");
    }
    let path = std::env::temp_dir().join(format!("plasmd-http-{}.toml", std::process::id()));
    std::fs::write(&path, "[http]\nmin_rate = 1000\nrate_window = 10\n").unwrap();
    let c = serve(&["--artifacts", "/", "--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(c.http_limits.min_rate, 1000);
    assert_eq!(c.http_limits.rate_window, Duration::from_secs(10));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_timing_is_refused() {
    assert!(serve(&["--artifacts", "/", "--record-ttl", "0"]).is_err());
    let e = serve(&[
        "--artifacts",
        "/",
        "--record-ttl",
        "6",
        "--refresh-interval",
        "6",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("shorter than the record TTL"), "{e}");
    assert!(serve(&["--artifacts", "/", "--record-ttl", "1"]).is_err());
    assert!(serve(&["--artifacts", "/", "--record-ttl", "x"]).is_err());
}

#[test]
fn every_duration_has_a_maximum() {
    let max_ttl = MAX_RECORD_TTL.to_string();
    let c = serve(&["--artifacts", "/", "--record-ttl", &max_ttl]).unwrap();
    assert_eq!(c.dht.record_ttl, Duration::from_secs(MAX_RECORD_TTL));
    for (flag, beyond) in [
        ("--record-ttl", (MAX_RECORD_TTL + 1).to_string()),
        ("--record-ttl", u64::MAX.to_string()),
        ("--refresh-interval", u64::MAX.to_string()),
        ("--http-rate-window", (MAX_RATE_WINDOW + 1).to_string()),
        ("--http-min-rate", (MAX_MIN_RATE + 1).to_string()),
    ] {
        let e = serve(&["--artifacts", "/", flag, &beyond]).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{flag} {beyond}: {e}");
    }
    let e = serve(&["--artifacts", "/", "--record-ttl", &u64::MAX.to_string()]).unwrap_err();
    assert!(e.to_string().contains("use 1 to 604800 seconds"), "{e}");
    let node = |ttl: &str| parse_plasmd(["node", "--identity", "/tmp/x.key", "--record-ttl", ttl]);
    assert!(node(&max_ttl).is_ok());
    assert!(node(&u64::MAX.to_string()).is_err());
}

#[test]
fn bad_values_name_the_culprit() {
    let e = serve(&["--artifacts", "/nonexistent-dir"]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir"));
    let e = serve(&["--artifacts", "/", "--channel", "Bad"]).unwrap_err();
    assert!(e.to_string().contains("\"Bad\""));
    let e = serve(&["--artifacts", "/", "--bootstrap", "nope"]).unwrap_err();
    assert!(e.to_string().contains("nope"));
    let e = serve(&["--artifacts", "/", "--external-url", "ftp://x"]).unwrap_err();
    assert!(e.to_string().contains("http://"));
    let e = serve(&["--artifacts", "/", "--http-listen", "8080"]).unwrap_err();
    assert!(e.to_string().contains("IP:PORT"));
    let e = serve(&["--frobnicate"]).unwrap_err();
    assert!(e.to_string().contains("frobnicate"));
    assert!(parse_plasmd(["id", "--artifacts", "/"]).is_err());
}

#[test]
fn flags_win_over_the_file() {
    let dir = std::env::temp_dir().join(format!("plasmd-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plasmd.toml");
    std::fs::write(
        &file,
        "[provider]\nartifacts = \"/\"\nname = \"rack\"\nchannels = [\"stable\"]\n\
         [provider.dht]\nrecord_ttl = 60\nrefresh_interval = 30\n[http]\nlisten = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = serve(&["--config", path]).unwrap();
    assert_eq!(c.provider_name.as_deref(), Some("rack"));
    assert_eq!(c.channels, vec!["stable"]);
    assert_eq!(c.dht.refresh_interval, Duration::from_secs(30));
    assert_eq!(c.http_listen.to_string(), "127.0.0.1:9");
    let c = serve(&["--config", path, "--http-listen", "127.0.0.1:10"]).unwrap();
    assert_eq!(c.http_listen.to_string(), "127.0.0.1:10");

    std::fs::write(&file, "[provider]\nartifacts = \"/\"\nbogus = 1\n").unwrap();
    let e = serve(&["--config", path]).unwrap_err().to_string();
    assert!(e.contains("bogus") && !e.contains('\n'), "{e}");
    std::fs::write(&file, "[provider.dht]\nrecord_ttl = \"long\"\n").unwrap();
    let e = serve(&["--config", path]).unwrap_err().to_string();
    assert!(e.contains("record_ttl"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn discover_timeout_is_bounded() {
    let with = |t: &str| lookup(&["--timeout", t]);
    assert!(with(&MAX_DISCOVER_TIMEOUT.to_string()).is_ok());
    for bad in ["0", "86401", "18446744073709551615"] {
        let e = with(bad).unwrap_err();
        assert!(
            e.to_string().contains("use 1 to 86400 seconds"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn discover_needs_channel_arch_and_a_peer() {
    assert!(parse_discover(["--arch", "arm64", "--bootstrap", "/ip4/127.0.0.1/tcp/1"]).is_err());
    assert!(parse_discover(["--channel", "stable", "--arch", "arm64"]).is_err());
    let ok = lookup(&["--timeout", "5"]).unwrap();
    assert!(matches!(ok, DiscoverCommand::Run(c) if c.query.timeout == Duration::from_secs(5)));
}

/// `phase-discover` of stable/arm64 through one peer, and `extra`.
fn lookup(extra: &[&str]) -> Result<DiscoverCommand, ConfigError> {
    let mut a = vec![
        "--channel",
        "stable",
        "--arch",
        "arm64",
        "--bootstrap",
        "/ip4/127.0.0.1/tcp/4001",
    ];
    a.extend_from_slice(extra);
    parse_discover(a)
}

#[test]
fn watch_leaves_a_config_files_state_alone() {
    // A board's config names its state directory (and would need a
    // release key for it); a watch with that config only looks.
    let path = std::env::temp_dir().join(format!("plasmd-watch-{}.toml", std::process::id()));
    std::fs::write(&path, "[discover]\nstate = \"/var/lib/phase\"\n").unwrap();
    let config = ["--config", path.to_str().unwrap()];
    let watch = lookup(&[&config[..], &["--watch"]].concat());
    let plain = lookup(&config);
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(watch, Ok(DiscoverCommand::Run(ref c)) if c.query.state.is_none() && c.watch.is_some()),
        "{watch:?}"
    );
    assert!(plain
        .unwrap_err()
        .to_string()
        .contains("needs --release-key"));
}

#[test]
fn phase_boot_takes_only_help_and_a_command_line() {
    assert_eq!(
        parse_boot(["--cmdline", "phase.channel=stable"]).unwrap(),
        BootCommand::Run(Some("phase.channel=stable".into()))
    );
    assert_eq!(
        parse_boot(Vec::<String>::new()).unwrap(),
        BootCommand::Run(None)
    );
    assert!(
        matches!(parse_boot(["--help"]), Ok(BootCommand::Print(t)) if t.contains("phase.channel=C"))
    );
    for bad in [&["--cmdline"][..], &["--fetch", "x"], &["extra"]] {
        let e = parse_boot(bad.iter().copied()).unwrap_err().to_string();
        assert!(
            e.contains("--help") || e.contains("missing"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn discover_takes_a_minimum_rate_and_its_window() {
    let Ok(DiscoverCommand::Run(c)) = lookup(&["--min-rate", "1000", "--rate-window", "3"]) else {
        panic!("--min-rate 1000 --rate-window 3 refused");
    };
    assert_eq!(c.query.limits.min_rate, 1000);
    assert_eq!(c.query.limits.window, Duration::from_secs(3));
    let Ok(DiscoverCommand::Run(d)) = lookup(&[]) else {
        panic!("defaults refused");
    };
    assert_eq!(d.query.limits, crate::fetch::Limits::default());
    for bad in [
        &["--min-rate", "x"][..],
        &["--rate-window", "0"],
        &["--min-rate", "9999999999999"],
    ] {
        let e = lookup(bad).unwrap_err().to_string();
        assert!(
            e.contains("--min-rate") || e.contains("--rate-window"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn a_mirror_needs_a_release_key_and_an_artifacts_root() {
    let dir = std::env::temp_dir().join(format!("plasmd-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public, secret) = (dir.join("fleet.pub"), dir.join("fleet.key"));
    crate::minisign::keygen(&public, &secret).unwrap();
    let key = public.to_str().unwrap();
    let root = dir.to_str().unwrap();

    let c = serve(&[
        "--artifacts",
        root,
        "--mirror",
        "stable/arm64",
        "--release-key",
        key,
    ]);
    let m = c.unwrap().mirror.expect("mirrored");
    assert_eq!(m.channel_archs[0].to_string(), "stable/arm64");
    assert_eq!((m.keep, m.interval), (2, Duration::from_secs(15)));
    assert_eq!(m.dir, dir.join(".mirror"));

    let refused = |args: &[&str], why: &str| {
        let e = serve(args).unwrap_err().to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    };
    refused(
        &["--artifacts", root, "--mirror", "stable/arm64"],
        "--release-key",
    );
    refused(
        &[
            "--artifacts",
            root,
            "--mirror",
            "stable",
            "--release-key",
            key,
        ],
        "CHANNEL/ARCH",
    );
    refused(
        &[
            "--artifacts",
            root,
            "--mirror",
            "../x",
            "--release-key",
            key,
        ],
        "--mirror",
    );
    for keep in ["0", "9", "many"] {
        let args = [
            "--artifacts",
            root,
            "--mirror",
            "stable/arm64",
            "--release-key",
            key,
        ];
        refused(
            &[&args[..], &["--mirror-keep", keep]].concat(),
            "--mirror-keep",
        );
    }
    refused(
        &["--artifacts", root, "--mirror-keep", "3"],
        "only go with --mirror",
    );
    refused(
        &[
            "--board",
            "qemu-virt",
            "--mirror",
            "stable/arm64",
            "--release-key",
            key,
        ],
        "needs --artifacts",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(not(feature = "netboot"))]
fn netboot_is_refused_by_a_build_without_it() {
    let e = serve(&["--artifacts", "/", "--netboot"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("built without it"), "{e}");
    // A [netboot] section too: whatever it says, this build cannot honour it.
    let path = std::env::temp_dir().join(format!("plasmd-nonb-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[netboot]\nenabled = true\nchannel = \"stable/arm64\"\n",
    )
    .unwrap();
    let e = serve(&["--artifacts", "/", "--config", path.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("built without it"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
#[cfg(feature = "netboot")]
fn netboot_needs_a_key_and_a_channel_and_takes_groups_from_the_file() {
    let dir = std::env::temp_dir().join(format!("plasmd-netboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public, secret) = (dir.join("fleet.pub"), dir.join("fleet.key"));
    crate::minisign::keygen(&public, &secret).unwrap();
    let key = public.to_str().unwrap();
    let root = dir.to_str().unwrap();
    let base = ["--artifacts", root, "--netboot", "--release-key", key];

    // One channel and arch served: the stage-1 boots that one.
    let c = serve(&[&base[..], &["--channel", "stable", "--arch", "arm64"]].concat()).unwrap();
    let n = c.netboot.expect("netboot on");
    assert_eq!(n.default.to_string(), "stable/arm64");
    assert_eq!(n.root, std::path::Path::new("/var/lib/plasmd/netboot"));
    assert_eq!(n.cache, n.root.join(".prepared"));
    assert_eq!(n.dhcp.dhcp.port(), 67);
    assert_eq!(n.dhcp.client_port, 68);
    assert_eq!(n.tftp.port(), 69);
    let words = n.words(&n.default);
    let line = std::fs::read_to_string(&public).unwrap();
    assert!(
        words.contains(&format!(
            "phase.release_key={}",
            line.lines().nth(1).unwrap()
        )),
        "{words}"
    );
    assert!(words.contains("phase.channel=stable phase.arch=arm64"));

    let refused = |args: &[&str], why: &str| {
        let e = serve(args).unwrap_err().to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    };
    refused(&base, "--netboot-channel");
    refused(
        &[
            "--artifacts",
            root,
            "--netboot",
            "--netboot-channel",
            "stable/arm64",
        ],
        "--release-key",
    );
    refused(
        &[&base[..], &["--netboot-channel", "stable"]].concat(),
        "CHANNEL/ARCH",
    );
    refused(
        &["--artifacts", root, "--netboot-channel", "stable/arm64"],
        "only go with --netboot",
    );
    refused(
        &["--artifacts", root, "--release-key", key],
        "--mirror C/A or --netboot",
    );
    let long = "x".repeat(2100);
    refused(
        &[
            &base[..],
            &["--netboot-channel", "a/b", "--netboot-cmdline", &long],
        ]
        .concat(),
        "over the kernel's",
    );

    let file = dir.join("netboot.toml");
    std::fs::write(
        &file,
        format!(
            "[provider]\nrelease_keys = [{key:?}]\n[netboot]\nenabled = true\nchannel = \"stable/arm64\"\ndir = {root:?}\ncmdline = \"phase.mdns=0\"\n\n[[netboot.group]]\nname = \"lab\"\nchannel = \"testing\"\nmacs = [\"52:54:00:12:34:10\"]\n"
        ),
    )
    .unwrap();
    let c = serve(&["--artifacts", root, "--config", file.to_str().unwrap()]).unwrap();
    let n = c.netboot.expect("enabled in the file");
    assert_eq!(n.root, dir);
    assert_eq!(
        n.channel_of(&[0x52, 0x54, 0, 0x12, 0x34, 0x10]).to_string(),
        "testing/arm64"
    );
    assert_eq!(
        n.channel_of(&[0x52, 0x54, 0, 0x12, 0x34, 0x11]).to_string(),
        "stable/arm64"
    );
    assert!(n.words(&n.default).ends_with(" phase.mdns=0"));
    std::fs::write(
        &file,
        "[netboot]\nenabled = true\n[[netboot.group]]\nname = \"lab\"\nchannel = \"testing\"\nmacs = [\"52:54:00:12:34\"]\n",
    )
    .unwrap();
    refused(
        &[
            &base[..],
            &[
                "--netboot-channel",
                "a/b",
                "--config",
                file.to_str().unwrap(),
            ],
        ]
        .concat(),
        "not a MAC address",
    );
    // Answers go to the port above the DHCP port: 65535 has none.
    std::fs::write(&file, "[netboot]\nenabled = true\ndhcp_port = 65535\n").unwrap();
    let with_file = [
        &base[..],
        &[
            "--netboot-channel",
            "a/b",
            "--config",
            file.to_str().unwrap(),
        ],
    ]
    .concat();
    refused(&with_file, "dhcp_port 65535");
    std::fs::remove_dir_all(&dir).unwrap();
}
