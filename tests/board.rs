//! The board layer on this machine, as far as it can run without a board:
//! a missing netboot partition and watchdog, systemd's notify protocol, and
//! the init files shipped for images.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A board profile whose partition and watchdog do not exist here.
fn absent_board(dir: &std::path::Path) -> std::path::PathBuf {
    let profile = dir.join("absent.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"absent\"\narch = \"arm64\"\n[netboot]\nlabels = [\"PLASMD-NONE\"]\nmount_point = \"{}\"\n[watchdog]\ndevice = \"{}\"\ntimeout = 6\n",
            dir.join("mnt").display(),
            dir.join("no-watchdog").display()
        ),
    )
    .unwrap();
    profile
}

#[test]
fn without_its_partition_a_board_keeps_serving_healthz_and_advertises_nothing() {
    let dir = TempDir::new("board");
    let profile = absent_board(dir.path());
    let s = start_serve(
        "serve",
        PLASMD,
        &loopback_serve_args(dir.path(), &["--board", profile.to_str().unwrap()]),
    );
    let (port, p2p) = (s.http_port, s.p2p_addr.clone());
    let s = s.proc;
    s.wait_log(
        "no partition labelled [\"PLASMD-NONE\"] found",
        1,
        Duration::from_secs(10),
    );
    s.wait_log(
        "running without a hardware watchdog",
        1,
        Duration::from_secs(1),
    );
    assert_eq!(http_get_status(port, "/healthz"), 200);
    assert_eq!(http_get_status(port, "/stable/arm64/manifest.json"), 404);
    let (_, _, metrics) = http(port, "GET", "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("plasmd_board_partition_mounted{fs_labels=\"PLASMD-NONE\"} 0"),
        "{metrics}"
    );
    let d = discover(&p2p, 3, &[]);
    assert_eq!(d.code, 2, "nothing should be advertised: {}", d.stdout);
    assert!(!s.stderr().contains("Publishing boot manifest"));
}

fn http_get_status(port: u16, path: &str) -> u16 {
    http(port, "GET", path).0
}

#[test]
fn systemd_gets_ready_watchdog_pings_and_stopping() {
    let dir = TempDir::new("notify");
    let root = artifacts(dir.path());
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(PLASMD)
        .args(loopback_serve_args(
            dir.path(),
            &["--artifacts", root.to_str().unwrap()],
        ))
        .env("NOTIFY_SOCKET", &sock_path)
        // WatchdogSec=3: pings expected every second.
        .env("WATCHDOG_USEC", "3000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    while seen.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        assert!(start.elapsed() < Duration::from_secs(15), "{seen:?}");
    }
    assert_eq!(seen[0], "READY=1", "{seen:?}");
    unsafe_term(child.id());
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
    drop(guard);
}

struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.0.to_string())
            .status();
    }
}

fn unsafe_term(pid: u32) {
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
}

#[test]
#[ignore = "tier packages: needs systemd-analyze (Debian systemd); bash tests/run installs it"]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("image/init/plasmd.service"),
    )
    .unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("WatchdogSec=")
            && unit.contains("Restart=always")
    );
    // verify checks that ExecStart's binary exists: point it at ours.
    let path = dir.path().join("plasmd.service");
    std::fs::write(&path, unit.replace("/usr/bin/plasmd", PLASMD)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) runs");
    let complaints =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

#[test]
fn the_board_config_and_profiles_shipped_for_images_are_valid() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("boardcfg");
    for config in ["image/init/plasmd.toml", "image/qemu/plasmd.toml"] {
        let path = repo.join(config);
        let r = run(
            PLASMD,
            &[
                "serve",
                "--check-config",
                "--config",
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 0, "{config}: {}", r.stderr);
        let first = r.stdout.lines().next().unwrap_or_default();
        assert!(first.ends_with(": OK"), "{}", r.stdout);
        // A board's artifacts are on its partition: nothing to list yet.
        assert!(r.stdout.contains("netboot partition"), "{}", r.stdout);
    }
    // And the check can fail: a typo in a key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[board]\nprofil = \"qemu-virt\"\n").unwrap();
    let r = run(
        PLASMD,
        &["serve", "--check-config", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("profil"), "{}", r.stderr);
    for board in ["qemu-virt", "raspberrypi4", "rock5b"] {
        let path = repo.join("board").join(format!("{board}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("name = \"{board}\"")),
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_buildroot_and_yocto_recipes_match_the_repository() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Yocto: the crate list is Cargo.lock's, and the license checksum still
    // covers Cargo.toml's license line.
    let check = Command::new("python3")
        .arg(repo.join("image/yocto/gen-crates-inc"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let recipe = std::fs::read_to_string(
        repo.join("image/yocto/meta-plasmd/recipes-core/plasmd/plasmd_0.1.0.bb"),
    )
    .unwrap();
    let cargo_toml = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let line7 = cargo_toml.lines().nth(6).unwrap();
    assert!(
        line7.starts_with("license = "),
        "Cargo.toml line 7 is {line7:?}"
    );
    let md5 = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' '{line7}' | md5sum"))
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout)[..32].to_string();
    assert!(
        recipe.contains(&format!("beginline=7;endline=7;md5={md5}")),
        "update LIC_FILES_CHKSUM to {md5}"
    );
    let version = cargo_toml
        .lines()
        .find(|l| l.starts_with("version = "))
        .unwrap();
    let version = version.trim_start_matches("version = ").trim_matches('"');
    // Buildroot: same version, and the init files it installs exist.
    let mk =
        std::fs::read_to_string(repo.join("image/buildroot/package/plasmd/plasmd.mk")).unwrap();
    assert!(mk.contains(&format!("PLASMD_VERSION = {version}")));
    assert!(mk.contains("$(eval $(cargo-package))"));
    for f in ["S50plasmd", "plasmd.service", "plasmd.toml"] {
        assert!(mk.contains(&format!("$(PLASMD_INIT_DIR)/{f}")), "{f}");
        assert!(recipe.contains(&format!("${{S}}/image/init/{f}")), "{f}");
        assert!(repo.join("image/init").join(f).exists(), "{f}");
    }
    assert!(repo
        .join("image/yocto/meta-plasmd/recipes-core/plasmd")
        .join(format!("plasmd_{version}.bb"))
        .exists());
}
