//! The board binaries as built for the board: cross/build-aarch64 makes
//! static aarch64-musl executables, and they run under qemu-aarch64-static
//! (`--version`, `id`, and a short `serve` that answers `/healthz`).
//!
//! Ignored by a plain `cargo test` (an LTO cross build takes minutes);
//! `bash tests/run` runs it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn aarch64_bin(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/aarch64-unknown-linux-musl/release")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
#[ignore = "tier cross: cross-builds for aarch64 and runs it under qemu-user (minutes); bash tests/run"]
fn the_static_aarch64_binaries_run_under_qemu_user() {
    run_script("cross/build-aarch64");
    need_tool("qemu-aarch64-static", "qemu-user-static");
    let (plasmd, discover) = (aarch64_bin("plasmd"), aarch64_bin("phase-discover"));
    for bin in [&plasmd, &discover] {
        let out = Command::new("file").arg("-b").arg(bin).output().unwrap();
        let desc = String::from_utf8_lossy(&out.stdout);
        assert!(
            desc.contains("ARM aarch64") && desc.contains("statically linked"),
            "{desc}"
        );
    }

    let v = run("qemu-aarch64-static", &[&plasmd, "--version"]);
    assert_eq!(
        v.stdout.trim(),
        format!("plasmd {}", env!("CARGO_PKG_VERSION"))
    );
    let v = run("qemu-aarch64-static", &[&discover, "--version"]);
    assert_eq!(
        v.stdout.trim(),
        format!("phase-discover {}", env!("CARGO_PKG_VERSION"))
    );

    let dir = TempDir::new("aarch64");
    let key = dir.path().join("id.key");
    let id = run(
        "qemu-aarch64-static",
        &[&plasmd, "id", "--identity", key.to_str().unwrap()],
    );
    assert_eq!(id.code, 0, "{}", id.stderr);
    // The same key read by the host build gives the same peer id.
    let host = run(PLASMD, &["id", "--identity", key.to_str().unwrap()]);
    assert_eq!(id.stdout, host.stdout);

    let root = artifacts(dir.path());
    let mut args = vec![plasmd.clone()];
    args.extend(loopback_serve_args(
        dir.path(),
        &["--artifacts", root.to_str().unwrap()],
    ));
    let serve = start_serve("aarch64 serve", "qemu-aarch64-static", &args);
    let (port, p2p) = (serve.http_port, serve.p2p_addr.clone());
    let (status, _, body) = common::http(port, "GET", "/healthz");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let found = discover_until(&p2p, Duration::from_secs(30), &[], |d| d.code == 0);
    assert_eq!(
        found.stdout.trim(),
        format!("http://127.0.0.1:{port}/stable/arm64/manifest.json")
    );
}
