//! The Debian package as an operator meets it: `bash pkg/build-deb` builds
//! the amd64 and arm64 packages; the amd64 one is installed on this machine
//! with `apt-get install ./plasmd_*_amd64.deb`, its unit's command line is
//! started as the package installs it (as the `plasmd` user, with the
//! default config) and answers; the man pages render with `man -l`, the
//! completions complete; a reinstall keeps the operator's changes, `dpkg -r`
//! keeps the configuration, `dpkg -P` removes it and the keys but keeps the
//! operator's releases. Needs root (it installs a package), so it is ignored
//! by plain `cargo test`; `bash tests/run` runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn must(script: &str) -> String {
    let (ok, text) = sh(script);
    assert!(ok, "{script}:\n{text}");
    text
}

/// Purges the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh("dpkg -P plasmd >/dev/null 2>&1");
        // The test's own release, which a purge keeps (it is the operator's).
        let _ = std::fs::remove_dir_all("/var/lib/plasmd");
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
#[ignore = "tier root: installs and removes a Debian package; bash tests/run runs it as root"]
fn the_package_installs_runs_and_removes_cleanly() {
    assert!(is_root(), "run as root (bash tests/run does in CI)");
    need_tool("man", "man-db");
    let out = repo().join("target/deb");
    let build = script("pkg/build-deb").arg(&out).output().unwrap();
    let printed = String::from_utf8_lossy(&build.stdout).to_string();
    assert!(
        build.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&build.stderr)
    );
    println!("{printed}");
    let deb = |arch: &str| out.join(format!("plasmd_{VERSION}_{arch}.deb"));

    // The arm64 package carries static aarch64 binaries.
    let arm = deb("arm64");
    assert_eq!(
        must(&format!("dpkg-deb -f {} Architecture", arm.display())).trim(),
        "arm64"
    );
    let x = TempDir::new("deb-arm64");
    must(&format!(
        "dpkg-deb -x {} {}",
        arm.display(),
        x.path().display()
    ));
    let file = must(&format!("file -b {}/usr/bin/plasmd", x.path().display()));
    assert!(
        file.contains("ARM aarch64") && file.contains("statically linked"),
        "{file}"
    );

    // Install the amd64 one as an operator would.
    let amd = deb("amd64");
    let _ = sh("dpkg -P plasmd >/dev/null 2>&1");
    let _installed = Installed;
    must(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} 2>&1",
        amd.display()
    ));
    assert_eq!(
        must("/usr/bin/plasmd --version").trim(),
        format!("plasmd {VERSION}")
    );
    assert_eq!(
        must("/usr/bin/phase-discover --version").trim(),
        format!("phase-discover {VERSION}")
    );
    assert!(must("/usr/bin/phase-boot --help").contains("phase.channel=C"));
    let user = must("getent passwd plasmd");
    assert!(user.trim_end().ends_with(":/usr/sbin/nologin"), "{user}");
    assert_eq!(must("stat -c %U /var/lib/plasmd").trim(), "plasmd");
    for unit in ["plasmd.service", "plasmd-node.service"] {
        let (ok, complaints) = sh(&format!(
            "systemd-analyze verify /lib/systemd/system/{unit}"
        ));
        assert!(ok && complaints.trim().is_empty(), "{unit}: {complaints}");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/plasmd.service").unwrap();
    assert!(unit.contains("\nUser=plasmd\n"), "{unit}");

    // The unit's command line, as the package installs it, as its user.
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .split_whitespace()
        .map(String::from)
        .collect();
    let check = must(&format!(
        "setpriv --reuid=plasmd --regid=plasmd --init-groups -- {} --check-config",
        exec.join(" ")
    ));
    assert!(check.contains("OK"), "{check}");
    // A release for it to serve, in the default artifacts tree.
    let ca = Path::new("/var/lib/plasmd/artifacts/stable/arm64");
    std::fs::create_dir_all(ca).unwrap();
    std::fs::write(ca.join("vmlinuz"), b"kernel from the packaged provider\n").unwrap();
    let mut args = vec!["--reuid=plasmd", "--regid=plasmd", "--init-groups", "--"];
    args.extend(exec.iter().map(String::as_str));
    let running = Proc::spawn("packaged plasmd", "setpriv", &args);
    running.wait_stdout("HTTP listening on ", Duration::from_secs(20));
    // The first scan of the tree is done once its record is being published.
    running.wait_log(
        "Publishing boot manifest to DHT",
        1,
        Duration::from_secs(30),
    );
    let (status, _, body) = http(8080, "GET", "/healthz");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let (status, _, body) = http(8080, "GET", "/stable/arm64/vmlinuz");
    assert_eq!(status, 200);
    assert_eq!(body, b"kernel from the packaged provider\n");
    let (status, _, page) = http(8080, "GET", "/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("stable/arm64"));
    running.signal(15);
    let mut running = running;
    let exit = running
        .wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", running.stderr());
    assert_eq!(
        must("stat -c '%U %a' /var/lib/plasmd/identity.key").trim(),
        "plasmd 600"
    );

    // The man pages render and document the real flags.
    for (page, needle) in [
        ("plasmd", "plasmd serve"),
        ("plasmd-serve", "--refresh-interval"),
        ("plasmd-node", "--metrics-listen"),
        ("plasmd-release", "keygen"),
        ("plasmd-status", "--url"),
        ("plasmd-id", "--identity"),
        ("phase-discover", "--watch"),
        ("phase-boot", "phase.channel"),
    ] {
        let text = must(&format!(
            "MANWIDTH=100 man -l /usr/share/man/man1/{page}.1.gz 2>&1"
        ));
        assert!(text.contains(needle), "{page}(1) lacks {needle}:\n{text}");
        assert!(!text.contains("warning"), "{page}(1):\n{text}");
    }

    // bash completes subcommands and each one's flags.
    let complete = |words: &str| {
        must(&format!(
            "bash -c 'source /usr/share/bash-completion/completions/{prog}; \
             COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _{func}; echo \"${{COMPREPLY[*]}}\"'",
            prog = words.split_whitespace().next().unwrap(),
            func = words.split_whitespace().next().unwrap().replace('-', "_"),
        ))
    };
    assert_eq!(complete("plasmd se").trim(), "serve");
    assert_eq!(complete("plasmd serve --refr").trim(), "--refresh-interval");
    assert_eq!(complete("plasmd release s").trim(), "sign");
    assert_eq!(
        complete("plasmd release sign --rel").trim(),
        "--release-seq"
    );
    assert_eq!(complete("phase-discover --wat").trim(), "--watch");
    // zsh and fish parse theirs.
    need_tool("zsh", "zsh");
    need_tool("fish", "fish");
    must("zsh -n /usr/share/zsh/vendor-completions/_plasmd");
    must("zsh -n /usr/share/zsh/vendor-completions/_phase-discover");
    must("fish --no-execute /usr/share/fish/vendor_completions.d/plasmd.fish");
    let fish = must("fish -c 'complete -C \"plasmd serve --refr\"'");
    assert!(fish.contains("--refresh-interval"), "{fish}");
    // A flag's value that happens to be a subcommand's name is not one.
    let fish = must("fish -c 'complete -C \"plasmd serve --channel sign --ke\"'");
    assert!(!fish.contains("--kernel"), "{fish}");
    assert_eq!(complete("plasmd serve --channel sign --ke").trim(), "");

    // Reinstalled (as an upgrade would): the operator's mode on the
    // artifacts tree stays.
    must("chmod 0750 /var/lib/plasmd/artifacts");
    must(&format!("dpkg -i {} 2>&1", amd.display()));
    assert_eq!(must("stat -c %a /var/lib/plasmd/artifacts").trim(), "750");

    // Removed: binaries gone, configuration and state kept.
    must("dpkg -r plasmd");
    assert!(!Path::new("/usr/bin/plasmd").exists());
    assert!(!Path::new("/usr/bin/phase-boot").exists());
    assert!(Path::new("/etc/plasmd/plasmd.toml").exists());
    assert!(Path::new("/var/lib/plasmd/identity.key").exists());
    // Purged: configuration and keys gone; the release the operator put in
    // the artifacts tree stays, and the purge says so.
    let purge = must("dpkg -P plasmd 2>&1");
    assert!(purge.contains("kept /var/lib/plasmd/artifacts"), "{purge}");
    assert!(!Path::new("/etc/plasmd").exists());
    assert!(!Path::new("/var/lib/plasmd/identity.key").exists());
    assert!(ca.join("vmlinuz").exists());
    assert_eq!(
        must("ls -A /var/lib/plasmd")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["artifacts"]
    );
    let (known, _) = sh("dpkg -s plasmd >/dev/null 2>&1");
    assert!(!known, "dpkg still knows plasmd after a purge");
}
