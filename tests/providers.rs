//! Several providers serving one channel/arch: all discoverable, one
//! picked by default, and `--fetch` falling back to the next when one fails.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn every_provider_of_a_channel_is_found_and_fetch_falls_back() {
    let dir = TempDir::new("providers");
    let nodes = fleet(dir.path(), 3, 60);
    let boot = ["--bootstrap", nodes[0].1.as_str()];

    // Provider B: a working one.
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_root = artifacts(&b_dir);
    std::fs::write(b_root.join("stable/arm64/vmlinuz"), b"kernel from B\n").unwrap();
    let b = serve(&b_dir, &b_root, &boot);
    b.proc
        .wait_log("DHT record published", 1, Duration::from_secs(15));
    // A publishes a second later, so its record is the newest: picked first.
    std::thread::sleep(Duration::from_millis(1100));
    // Provider A: valid records, but its advertised HTTP address is dead.
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a_root = artifacts(&a_dir);
    std::fs::write(a_root.join("stable/arm64/vmlinuz"), b"kernel from A\n").unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let a = serve(
        &a_dir,
        &a_root,
        &["--bootstrap", nodes[0].1.as_str(), "--external-url", &dead],
    );
    for p in [&a, &b] {
        p.proc
            .wait_log("DHT record published", 1, Duration::from_secs(15));
    }
    let peer = |s: &Serve| s.p2p_addr.rsplit('/').next().unwrap().to_string();

    let all = discover_until(&nodes[2].1, Duration::from_secs(20), &["--all"], |d| {
        d.code == 0 && d.stdout.lines().count() == 2
    });
    let urls: Vec<&str> = all.stdout.lines().collect();
    assert!(
        urls.contains(
            &format!(
                "http://127.0.0.1:{}/stable/arm64/manifest.json",
                b.http_port
            )
            .as_str()
        ),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("{dead}/stable/arm64/manifest.json").as_str()),
        "{urls:?}"
    );
    let json = discover(&nodes[1].1, 10, &["--all", "--json"]);
    assert!(
        json.stdout.trim().starts_with('[')
            && json.stdout.contains(&peer(&a))
            && json.stdout.contains(&peer(&b))
    );

    // The default picks one of them.
    let one = discover(&nodes[1].1, 10, &[]);
    assert_eq!(one.code, 0);
    assert!(urls.contains(&one.stdout.trim()), "{}", one.stdout);

    // The default picks the newest: A.
    assert_eq!(
        one.stdout.trim(),
        format!("{dead}/stable/arm64/manifest.json")
    );

    // Fetch tries A first, fails to reach it, and gets verified bytes from B.
    let out = dir.path().join("vmlinuz");
    let f = discover(
        &nodes[2].1,
        10,
        &["--fetch", "vmlinuz", "-o", out.to_str().unwrap()],
    );
    assert_eq!(f.code, 0, "{}", f.stderr);
    let tried_a = format!("from {dead}/stable/arm64/manifest.json");
    assert!(f.stderr.contains(&tried_a), "{}", f.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"kernel from B\n");
}

/// `phase-discover --watch` as an operator runs it: a signed provider and
/// an unsigned one, both listed round after round with whether they
/// verify; plain lines into a pipe, one JSON array per round with `--json`,
/// a redrawn table on a terminal (under `script`); a provider that stops
/// drops out of the rounds.
#[test]
fn watch_lists_every_provider_and_whether_it_verifies() {
    let dir = TempDir::new("watch");
    let (_node, node_addr) = node(dir.path(), "node", 4, None);
    let (pubkey, seckey) = keygen(dir.path(), "fleet");
    let provider = |name: &str, signed: bool| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let root = artifacts(&d);
        if signed {
            sign(
                &seckey,
                &root.join("stable/arm64"),
                &["--version", "2026.11"],
            );
        }
        let extra = [
            "--bootstrap",
            node_addr.as_str(),
            "--record-ttl",
            "4",
            "--refresh-interval",
            "2",
        ];
        let s = serve(&d, &root, &extra);
        s.proc
            .wait_log("DHT record published", 1, Duration::from_secs(15));
        s
    };
    let signed = provider("signed", true);
    let mut unsigned = provider("unsigned", false);
    let url = |s: &Serve| {
        format!(
            "http://127.0.0.1:{}/stable/arm64/manifest.json",
            s.http_port
        )
    };
    let watch = |extra: &[&str]| {
        let mut args = vec!["--watch", "--interval", "1", "--release-key", &pubkey];
        args.extend_from_slice(extra);
        lookup_args(&node_addr, 5, &args)
    };

    // Into a pipe: a line per provider per round.
    let args = watch(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let plain = Proc::spawn("watch", DISCOVER, &args);
    plain.wait_stdout_contains(&url(&signed), Duration::from_secs(30));
    plain.wait_stdout_contains(&url(&unsigned), Duration::from_secs(30));
    let out = plain.stdout();
    let line_of = |u: &str| {
        out.lines()
            .find(|l| l.contains(u))
            .unwrap_or_else(|| panic!("no line for {u} in:\n{out}"))
            .to_string()
    };
    let good = line_of(&url(&signed));
    assert!(
        good.contains(" 2026.11 ") && good.contains(" ok release verified (key "),
        "{good}"
    );
    let bad = line_of(&url(&unsigned));
    assert!(
        bad.contains(" refused ") && bad.contains("not signed"),
        "{bad}"
    );
    let peer = |s: &Serve| s.p2p_addr.rsplit('/').next().unwrap().to_string();
    assert!(good.contains(&peer(&signed)), "{good}");
    assert!(
        !out.contains('\x1b'),
        "escape sequences into a pipe:\n{out}"
    );
    // It keeps going, round after round.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while plain.stdout().matches(&url(&signed)).count() < 3 {
        assert!(
            std::time::Instant::now() < end,
            "fewer than 3 rounds:\n{}\n{}",
            plain.stdout(),
            plain.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // On a terminal: the table, redrawn.
    let args = watch(&[]);
    let tty = Proc::spawn(
        "watch-tty",
        "script",
        &[
            "-qfec",
            &format!("{DISCOVER} {}", args.join(" ")),
            "/dev/null",
        ],
    );
    tty.wait_stdout_contains("2 provider(s), 1 verified", Duration::from_secs(30));
    let screen = tty.stdout();
    assert!(screen.contains("\x1b[H\x1b[2J"), "{screen}");
    assert!(
        screen.contains("URL") && screen.contains("RELEASE_SEQ"),
        "{screen}"
    );
    assert!(screen.contains("REFUSED: "), "{screen}");
    drop(tty);

    // JSON rounds; then the unsigned provider stops and drops out.
    let args = watch(&["--json"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let json = Proc::spawn("watch-json", DISCOVER, &args);
    json.wait_stdout_contains(&peer(&unsigned), Duration::from_secs(30));
    let rounds = json.stdout();
    assert!(rounds.lines().all(|r| r.starts_with('[')), "{rounds}");
    json.wait_stdout_contains("\"ok\":true", Duration::from_secs(30));
    let seen = json.stdout().lines().count();
    unsigned.proc.signal(15);
    unsigned
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("stopped");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rounds: Vec<String> = json.stdout().lines().skip(seen).map(String::from).collect();
        if rounds
            .iter()
            .any(|r| r.contains(&peer(&signed)) && !r.contains(&peer(&unsigned)))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the stopped provider is still listed:\n{}\nall:\n{}\nstderr:\n{}",
            rounds.join("\n"),
            json.stdout(),
            json.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
