//! The board image under QEMU arm64, as a user would try it before flashing:
//! build the image (image/build), boot it (image/run-qemu) with user-mode
//! networking restricted to forwards on 127.0.0.1, find the guest's
//! provider from the host through a `plasmd node` on the host's loopback,
//! download an artifact and check it against the manifest, freeze plasmd
//! and watch the watchdog reset the board, then boot again and power off
//! cleanly.
//!
//! Ignored by a plain `cargo test` (it builds an aarch64 image and boots it
//! twice, 1-2 minutes); `bash tests/run` runs it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The qemu-virt board profile's watchdog timeout.
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Boots the image with the guest's plasmd joining the host node.
fn boot(http_port: u16, p2p_port: u16, node_port: u16, node_id: &str) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/run-qemu");
    let args = [
        script.to_str().unwrap().to_string(),
        "--http-port".into(),
        http_port.to_string(),
        "--p2p-port".into(),
        p2p_port.to_string(),
        "--node-port".into(),
        node_port.to_string(),
        "--".into(),
        format!("plasmd.bootstrap=/ip4/10.0.2.100/tcp/4001/p2p/{node_id}"),
        format!("plasmd.external_url=http://127.0.0.1:{http_port}"),
        format!("plasmd.p2p_announce=/ip4/127.0.0.1/tcp/{p2p_port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn_with("qemu", "bash", &args, true)
}

fn sha256_of(bytes: &[u8], dir: &Path) -> String {
    let file = dir.join("download");
    std::fs::write(&file, bytes).unwrap();
    sha256sum(&file)
}

#[test]
#[ignore = "tier qemu: builds and boots an arm64 image under QEMU (1-2 min); bash tests/run"]
fn the_board_image_is_found_serves_verified_artifacts_resets_when_hung_and_unadvertises_on_poweroff(
) {
    run_script("image/build");
    let dir = TempDir::new("qemu");
    let (_node, node_addr) = node(dir.path(), "host-node", 3600, None);
    let node_port: u16 = node_addr.split('/').nth(4).unwrap().parse().unwrap();
    let node_id = node_addr.rsplit('/').next().unwrap().to_string();
    let (http_port, p2p_port) = (free_port(), free_port());

    // Boot 1: discoverable, artifacts verified, then frozen.
    let started = Instant::now();
    let mut vm = boot(http_port, p2p_port, node_port, &node_id);
    let found = discover_until(&node_addr, Duration::from_secs(150), &["--json"], |d| {
        d.code == 0
    });
    println!(
        "QEMU boot to discoverable (qemu start to first successful phase-discover): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let url = json_field(&found.stdout, "url").unwrap();
    assert_eq!(
        url,
        format!("http://127.0.0.1:{http_port}/stable/arm64/manifest.json")
    );
    assert_eq!(
        json_field(&found.stdout, "provider_name").as_deref(),
        Some("qemu-test-board")
    );
    vm.wait_stdout_contains("netboot partition /dev/vda1", Duration::from_secs(5));
    // The operator sees it in the metrics too.
    let (status, metrics) = get_url(&format!("http://127.0.0.1:{http_port}/metrics"));
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    let mounted = metrics
        .lines()
        .find(|l| l.starts_with("plasmd_board_partition_mounted{"))
        .unwrap_or_else(|| panic!("no partition state in:\n{metrics}"));
    assert!(mounted.ends_with(" 1"), "{mounted}");

    let (status, manifest) = get_url(&url);
    assert_eq!(status, 200);
    let manifest = String::from_utf8(manifest).unwrap();
    assert_eq!(
        json_field(&manifest, "version"),
        json_field(&found.stdout, "version")
    );
    let entry = manifest
        .lines()
        .find(|l| l.contains("\"rootfs.img\""))
        .unwrap_or_else(|| panic!("rootfs.img not in {manifest}"));
    let expected = json_field(entry, "sha256").unwrap();
    let (status, body) = get_url(&format!(
        "http://127.0.0.1:{http_port}/stable/arm64/rootfs.img"
    ));
    assert_eq!(status, 200);
    assert_eq!(body.len(), 2 * 1024 * 1024);
    assert_eq!(
        sha256_of(&body, dir.path()),
        expected,
        "downloaded artifact does not match the manifest"
    );

    vm.send("kill -STOP $(cat /var/run/plasmd.pid)\n");
    let frozen = Instant::now();
    let exited = vm.wait_exit(WATCHDOG_TIMEOUT + Duration::from_secs(20));
    let reset_after = frozen.elapsed();
    assert!(
        exited.is_some(),
        "the watchdog did not reset the guest within {:?}",
        WATCHDOG_TIMEOUT + Duration::from_secs(20)
    );
    println!(
        "plasmd frozen to watchdog reset: {:.1} s (watchdog timeout {} s)",
        reset_after.as_secs_f64(),
        WATCHDOG_TIMEOUT.as_secs()
    );
    // Petting stops at the freeze; the last pet was at most a third of the
    // timeout before it. A reset much sooner would be something else.
    assert!(
        reset_after >= WATCHDOG_TIMEOUT / 2,
        "reset after only {reset_after:?}"
    );
    drop(vm);

    // Boot 2: a clean poweroff un-advertises and disarms the watchdog.
    let mut vm = boot(http_port, p2p_port, node_port, &node_id);
    vm.wait_stdout_contains(
        "DHT record published: /phase/stable/arm64/manifest",
        Duration::from_secs(150),
    );
    vm.send("poweroff\n");
    let exited = vm.wait_exit(Duration::from_secs(60));
    assert!(exited.is_some(), "guest did not power off");
    let console = vm.stdout();
    assert!(
        console.contains("Stopped advertising manifest: stable/arm64"),
        "{console}"
    );
    assert!(
        console.contains("watchdog /dev/watchdog disarmed"),
        "{console}"
    );
}
