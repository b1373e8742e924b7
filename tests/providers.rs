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
