//! A provider on a slow, cold disk still answers `/healthz` at once: the
//! artifacts sit on an ext4 filesystem on a loop device whose reads are
//! throttled (cgroup v1 blkio, or v2 io.max where the io controller is
//! there) for the provider's cgroup, their pages are dropped from the page
//! cache, and several boards download at once while a health checker asks
//! `/healthz` over and over. Before the loop kept the disk off itself, each
//! probe in such a storm waited seconds. Needs root, e2fsprogs and a free
//! loop device (tests/run installs and runs it). The figures live in
//! `bench/cold`; the margins here are generous.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Bytes per second the provider's cgroup may read from the loop device.
const RATE: u64 = 4_000_000;
const CLIENTS: usize = 4;
const FILE_BYTES: usize = 4 << 20;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A throttled filesystem: image, loop device, mount and cgroup, all
/// undone on drop (after the provider in it has been dropped).
struct SlowDisk {
    mnt: PathBuf,
    dev: String,
    cgroup: PathBuf,
}

impl SlowDisk {
    fn new(dir: &Path) -> SlowDisk {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
        let dev = sh("losetup", &["-f", "--show", img.to_str().unwrap()]);
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mut disk = SlowDisk {
            mnt,
            dev,
            cgroup: PathBuf::new(),
        };
        sh("mount", &[&disk.dev, disk.mnt.to_str().unwrap()]);
        let majmin = sh("lsblk", &["-dno", "MAJ:MIN", &disk.dev]);
        let id = std::process::id();
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        if std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "io")) {
            disk.cgroup = PathBuf::from(format!("/sys/fs/cgroup/plasmd-cold-{id}"));
            std::fs::create_dir(&disk.cgroup).unwrap();
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+io");
            std::fs::write(disk.cgroup.join("io.max"), format!("{majmin} rbps={RATE}")).unwrap();
        } else {
            let v1 = Path::new("/sys/fs/cgroup/blkio");
            assert!(
                v1.join("blkio.throttle.read_bps_device").exists(),
                "this test throttles a disk with cgroup v2 io.max or v1 blkio; this machine has neither"
            );
            disk.cgroup = v1.join(format!("plasmd-cold-{id}"));
            std::fs::create_dir(&disk.cgroup).unwrap();
            std::fs::write(
                disk.cgroup.join("blkio.throttle.read_bps_device"),
                format!("{majmin} {RATE}"),
            )
            .unwrap();
        }
        disk
    }

    /// `argv` as a command line that first moves itself into the cgroup.
    fn run_inside(&self, argv: &[String]) -> Vec<String> {
        let mut all = vec![
            "-c".to_string(),
            r#"echo $$ >"$0/cgroup.procs" && exec "$@""#.to_string(),
            self.cgroup.to_str().unwrap().to_string(),
        ];
        all.extend_from_slice(argv);
        all
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        if !self.cgroup.as_os_str().is_empty() {
            let _ = std::fs::remove_dir(&self.cgroup);
        }
    }
}

/// Drops a file's pages from the page cache (clean pages go at once).
fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    nix::fcntl::posix_fadvise(
        f.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
}

#[test]
#[ignore = "tier root: a throttled loop device and a cgroup; bash tests/run runs it as root"]
fn healthz_answers_at_once_while_boards_download_from_a_cold_slow_disk() {
    assert!(
        is_root(),
        "this test mounts a loop device and must run as root (CI does)"
    );
    need_tool("mkfs.ext4", "e2fsprogs");
    let dir = TempDir::new("cold");
    let disk = SlowDisk::new(dir.path());
    let arch = disk.mnt.join("stable/arm64");
    std::fs::create_dir_all(&arch).unwrap();
    let mut sums = Vec::new();
    for i in 0..CLIENTS {
        let path = arch.join(format!("f{i}.bin"));
        // Different bytes in every file, so no download is served from
        // another's pages.
        let bytes: Vec<u8> = (0..FILE_BYTES)
            .map(|n| {
                (n as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(i as u32) as u8
            })
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        sums.push(sha256sum(&path));
    }
    sh("sync", &[]);

    let mut argv = vec![PLASMD.to_string()];
    argv.extend(loopback_serve_args(
        dir.path(),
        &["--artifacts", disk.mnt.to_str().unwrap()],
    ));
    let serve = start_serve("serve", "sh", &disk.run_inside(&argv));
    serve.proc.wait_log(
        "Publishing boot manifest to DHT",
        1,
        Duration::from_secs(30),
    );
    for i in 0..CLIENTS {
        evict(&arch.join(format!("f{i}.bin")));
    }

    // A health checker probing every 50 ms, each probe timed on its own.
    let port = serve.http_port;
    let downloading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probing = {
        let downloading = downloading.clone();
        thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while downloading.load(std::sync::atomic::Ordering::SeqCst) {
                let t0 = Instant::now();
                let (status, _, body) = http(port, "GET", "/healthz");
                assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
                worst = worst.max(t0.elapsed());
                probes += 1;
                thread::sleep(Duration::from_millis(50));
            }
            (worst, probes)
        })
    };
    let t0 = Instant::now();
    let downloads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let out = dir.path().join(format!("got{i}"));
            thread::spawn(move || {
                let url = format!("http://127.0.0.1:{port}/stable/arm64/f{i}.bin");
                let ok = Command::new("curl")
                    .args([
                        "-sf",
                        "--max-time",
                        "120",
                        "-o",
                        out.to_str().unwrap(),
                        &url,
                    ])
                    .status()
                    .unwrap()
                    .success();
                (ok, out)
            })
        })
        .collect();
    let got: Vec<_> = downloads.into_iter().map(|d| d.join().unwrap()).collect();
    let took = t0.elapsed();
    downloading.store(false, std::sync::atomic::Ordering::SeqCst);
    let (worst, probes) = probing.join().unwrap();

    for (i, (ok, out)) in got.iter().enumerate() {
        assert!(ok, "download {i} failed");
        assert_eq!(sha256sum(out), sums[i], "download {i} is not byte-exact");
    }
    // The disk really was the bottleneck: the bytes cannot have come
    // faster than the throttle lets them (else this tested nothing).
    let floor = Duration::from_secs_f64((CLIENTS * FILE_BYTES) as f64 / RATE as f64 * 0.8);
    assert!(
        took >= floor,
        "{CLIENTS} downloads took {took:?}, faster than the throttled disk allows ({floor:?}): was it cold?"
    );
    // The board's health check deadline is 2 s; a loop that waited on the
    // disk held every probe for seconds. 500 ms leaves a slow CI machine
    // plenty.
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?} at worst ({probes} probes) while {CLIENTS} boards downloaded from a cold disk"
    );
    drop(serve);
}
