//! Hostile peers who cannot forge anything try to hide the genuine
//! provider instead: a captured-key peer re-dating its own record on the
//! spec key just inside the clock skew, a flood of sybil provider ids (each
//! with a validly signed record of its own) spread over the storing nodes
//! before and after the genuine provider starts, and an honestly dated
//! record whose URL trickles a byte every 3 s; and a client asking for the
//! status page with 10,000 distinct `?refresh=` values. The attacker's
//! records point at a release signed by the attacker's own key. Each time a
//! board with the fleet's release key (`phase-discover --release-key
//! --fetch-all`) must fetch the genuine release, byte for byte, within 30 s,
//! and the genuine provider's memory stays within twice what it uses idle.
//!
//! On loopback every peer reaches the storing nodes from 127.0.0.1, so
//! the nodes' address-fair provider lists (which let a provider on its own
//! address into a list a flood filled first) are not what saves the board
//! here; `dht::hygiene`'s unit tests cover them. What does: a date ahead of
//! the clock no longer holds the spec key against the genuine refreshes,
//! and the board samples every announced provider fairly and keeps looking
//! while what it found does not verify.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use plasmd::record::{manifest_dht_key, manifest_key, provider_key, ManifestRecord};

const TTL: Duration = Duration::from_secs(120);

/// A tiny HTTP server for the attacker: the files of `dir` by name, each
/// byte after `per_byte` (none: at once). Its threads end with the test.
fn attacker_http(dir: PathBuf, per_byte: Option<Duration>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let dir = dir.clone();
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let body = std::fs::read(dir.join(path.rsplit('/').next().unwrap_or("")));
                let Ok(body) = body else {
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                match per_byte {
                    None => {
                        let _ = conn.write_all(&body);
                    }
                    Some(pause) => {
                        for b in body {
                            if conn.write_all(&[b]).is_err() {
                                return;
                            }
                            thread::sleep(pause);
                        }
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/stable/arm64/manifest.json")
}

/// The attacker's own release of stable/arm64, signed by its own key: what
/// every hostile record points at. Returns its directory.
fn attacker_release(dir: &Path) -> PathBuf {
    let root = artifacts(&dir.join("attacker"));
    let release = root.join("stable/arm64");
    std::fs::write(release.join("vmlinuz"), b"the attacker's kernel\n").unwrap();
    let (_, key) = keygen(dir, "attacker");
    sign(&key, &release, &[]);
    release
}

/// A validly signed record of `keypair`'s under `key` (a spec or provider
/// key string) for the manifest at `url`, dated `ahead` seconds from now.
fn hostile_record(
    keypair: &libp2p::identity::Keypair,
    key: &str,
    url: &str,
    manifest_sha: &str,
    seq: u64,
    ahead: u64,
) -> Vec<u8> {
    let peer = keypair.public().to_peer_id().to_string();
    let mut r = ManifestRecord::new(url, &peer, Some("hostile"), "evil");
    r.last_updated = plasmd::time::rfc3339(SystemTime::now() + Duration::from_secs(ahead));
    let expires = SystemTime::now() + Duration::from_secs(ahead) + TTL;
    r.sign(key, keypair, seq, expires, manifest_sha)
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// What the attacker does, on a thread of its own: with `spec_ahead`, puts
/// a record on the spec key every 2 s dated that many seconds ahead (290:
/// a capture re-dated just inside the skew; 0: honestly dated); `sybils` ids (DHT clients,
/// each joined through a different node, in turn) announce themselves as
/// providers and put a record at their own provider key, half of them at
/// once and the other half once `second_wave` is set.
struct Attack {
    stop: Arc<AtomicBool>,
    second_wave: Arc<AtomicBool>,
    ready: std::sync::mpsc::Receiver<&'static str>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Attack {
    fn start(
        nodes: Vec<String>,
        url: String,
        sha: String,
        spec_ahead: Option<u64>,
        sybils: usize,
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let second_wave = Arc::new(AtomicBool::new(false));
        let (tx, ready) = std::sync::mpsc::channel();
        let (s, w) = (stop.clone(), second_wave.clone());
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let spec = manifest_key("stable", "arm64");
                let spec_dht = manifest_dht_key("stable", "arm64");
                let mut joined = 0;
                let mut peers = Vec::new();
                let mut waves = [sybils / 2, sybils - sybils / 2].into_iter();
                let mut seq = plasmd::time::unix_now() * 1000;
                let mut next_wave = waves.next();
                let mut last_capture = Instant::now() - Duration::from_secs(10);
                let (capturer, capture_key) = hostile_peer(&nodes[0], TTL.as_secs(), false).await;
                while !s.load(Ordering::SeqCst) {
                    if let Some(n) = next_wave {
                        if joined == 0 || w.load(Ordering::SeqCst) {
                            let first = joined;
                            let joins = (0..n).map(|i| {
                                let node = nodes[(first + i) % nodes.len()].clone();
                                let (url, sha, spec_dht) =
                                    (url.clone(), sha.clone(), spec_dht.clone());
                                async move {
                                    let (c, k) = hostile_peer(&node, TTL.as_secs(), true).await;
                                    let own = provider_key(
                                        "stable",
                                        "arm64",
                                        &k.public().to_peer_id().to_string(),
                                    );
                                    let value = hostile_record(&k, &own, &url, &sha, 1, 0);
                                    let _ =
                                        c.put(libp2p::kad::RecordKey::new(&own), value, TTL).await;
                                    let _ = c.provide(spec_dht).await;
                                    c
                                }
                            });
                            peers.extend(libp2p::futures::future::join_all(joins).await);
                            joined += n;
                            let _ = tx.send(if joined >= sybils {
                                "second wave"
                            } else {
                                "first wave"
                            });
                            next_wave = waves.next();
                        }
                    }
                    if let Some(ahead) =
                        spec_ahead.filter(|_| last_capture.elapsed() >= Duration::from_secs(2))
                    {
                        seq += 1;
                        let value = hostile_record(&capture_key, &spec, &url, &sha, seq, ahead);
                        let _ = capturer.put(spec_dht.clone(), value, TTL).await;
                        last_capture = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for c in peers.iter().chain([&capturer]) {
                    c.stop().await;
                }
            });
        });
        Attack {
            stop,
            second_wave,
            ready,
            thread: Some(thread),
        }
    }

    fn wait(&self, what: &str) {
        let got = self.ready.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(got, what);
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A fleet: nodes, the fleet's signed release, the attacker's release and
/// an attacker server for it.
struct Scene {
    dir: TempDir,
    nodes: Vec<(Proc, String)>,
    fleet_pub: String,
    root: PathBuf,
    attacker_dir: PathBuf,
    attacker_sha: String,
}

impl Scene {
    fn new(tag: &str, n: usize) -> Scene {
        let dir = TempDir::new(tag);
        // DEBUG for the DHT: each refusal, should a test fail.
        let level = Some("info,libp2p=warn,plasmd::dht=debug");
        let mut nodes = vec![node_with(dir.path(), "node0", TTL.as_secs(), &[], level)];
        let first = nodes[0].1.clone();
        for i in 1..n {
            let extra = ["--bootstrap", &first];
            nodes.push(node_with(
                dir.path(),
                &format!("node{i}"),
                TTL.as_secs(),
                &extra,
                level,
            ));
        }
        let (fleet_pub, fleet_key) = keygen(dir.path(), "fleet");
        let root = artifacts(dir.path());
        sign(&fleet_key, &root.join("stable/arm64"), &[]);
        let attacker_dir = attacker_release(dir.path());
        let attacker_sha = sha256sum(&attacker_dir.join("manifest.json"));
        Scene {
            dir,
            nodes,
            fleet_pub,
            root,
            attacker_dir,
            attacker_sha,
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|(_, a)| a.clone()).collect()
    }

    fn release(&self) -> PathBuf {
        self.root.join("stable/arm64")
    }

    /// The genuine provider of the fleet's signed release, listening on
    /// its own loopback address (127.0.0.2); with its memory use once idle,
    /// in KiB.
    fn genuine(&self) -> (Serve, u64) {
        let key = self.dir.path().join("genuine.key");
        let args: Vec<String> = [
            "serve",
            "--artifacts",
            self.root.to_str().unwrap(),
            "--http-listen",
            "127.0.0.2:0",
            "--p2p-listen",
            "/ip4/127.0.0.2/tcp/0",
            "--identity",
            key.to_str().unwrap(),
            "--bootstrap",
            &self.nodes[0].1,
            "--record-ttl",
            "120",
            "--refresh-interval",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = start_serve("genuine", PLASMD, &args);
        // Publishing has begun; whether the put's quorum completes soon
        // depends on the attacker's peers answering, which is up to them.
        s.proc.wait_log(
            "Publishing boot manifest to DHT",
            1,
            Duration::from_secs(30),
        );
        thread::sleep(Duration::from_secs(2));
        let idle = rss_kib(s.proc.pid());
        (s, idle)
    }

    /// A board with the fleet's key, joining through node `via`, fetches
    /// the genuine release within 30 s, byte for byte, and the provider's
    /// memory stays within 2× idle.
    fn board_fetches_the_genuine_release(&self, via: usize, provider: &Serve, idle_kib: u64) {
        let out = self.dir.path().join(format!("out-{}", rand_suffix()));
        let started = Instant::now();
        let d = discover(
            &self.nodes[via].1,
            30,
            &[
                "--release-key",
                &self.fleet_pub,
                "--fetch-all",
                out.to_str().unwrap(),
            ],
        );
        let took = started.elapsed();
        assert_eq!(d.code, 0, "after {took:?}: {}", d.stderr);
        for f in ["vmlinuz", "initrd.img", "board.dtb"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(self.release().join(f)).unwrap(),
                "{f}"
            );
        }
        assert!(took < Duration::from_secs(35), "took {took:?}");
        let rss = rss_kib(provider.proc.pid());
        assert!(
            rss <= 2 * idle_kib,
            "provider RSS {rss} KiB, idle {idle_kib} KiB"
        );
        eprintln!(
            "fetched the genuine release in {took:.1?}; provider RSS {rss} KiB (idle {idle_kib} KiB)\n{}",
            d.stderr
        );
    }
}

#[test]
fn a_future_dated_capture_of_the_spec_key_does_not_hide_the_genuine_provider() {
    let scene = Scene::new("capture", 3);
    let url = attacker_http(scene.attacker_dir.clone(), None);
    let (s, idle) = scene.genuine();
    let attack = Attack::start(scene.addrs(), url, scene.attacker_sha.clone(), Some(290), 0);
    attack.wait("second wave");
    // Let the capture and the genuine refreshes (every 5 s) contend.
    thread::sleep(Duration::from_secs(6));
    scene.board_fetches_the_genuine_release(1, &s, idle);
}

#[test]
fn a_capture_and_a_sybil_flood_before_and_after_the_genuine_provider_starts() {
    let scene = Scene::new("sybils", 5);
    let url = attacker_http(scene.attacker_dir.clone(), None);
    let attack = Attack::start(
        scene.addrs(),
        url,
        scene.attacker_sha.clone(),
        Some(290),
        80,
    );
    attack.wait("first wave");
    let (s, idle) = scene.genuine();
    attack.second_wave.store(true, Ordering::SeqCst);
    attack.wait("second wave");
    scene.board_fetches_the_genuine_release(2, &s, idle);
}

#[test]
fn a_record_whose_url_trickles_does_not_stall_a_board() {
    let scene = Scene::new("trickle", 3);
    // The genuine release's own files, a byte every 3 s.
    let url = attacker_http(scene.release(), Some(Duration::from_secs(3)));
    let sha = sha256sum(&scene.release().join("manifest.json"));
    let (s, idle) = scene.genuine();
    // Honestly dated, on the spec key and as 6 providers of their own.
    let attack = Attack::start(scene.addrs(), url, sha, Some(0), 6);
    attack.wait("first wave");
    attack.second_wave.store(true, Ordering::SeqCst);
    attack.wait("second wave");
    scene.board_fetches_the_genuine_release(1, &s, idle);
}

#[test]
fn ten_thousand_distinct_status_page_queries_while_a_board_boots() {
    let scene = Scene::new("refresh", 3);
    let (s, idle) = scene.genuine();
    let port = s.http_port;
    // A client asking for the status page with 10,000 distinct `?refresh=`
    // values, as fast as it can, while the board looks up and downloads.
    let asking = thread::spawn(move || {
        let mut answered = 0;
        for i in 0..10_000 {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.2", port)) else {
                continue;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!("GET /?refresh={} HTTP/1.0\r\nHost: p\r\n\r\n", 2 + i);
            let mut answer = Vec::new();
            if c.write_all(req.as_bytes()).is_ok() && c.read_to_end(&mut answer).is_ok() {
                answered += usize::from(answer.starts_with(b"HTTP/1.1 200"));
            }
        }
        answered
    });
    scene.board_fetches_the_genuine_release(1, &s, idle);
    let answered = asking.join().unwrap();
    assert_eq!(answered, 10_000, "status pages answered");
    let rss = rss_kib(s.proc.pid());
    assert!(rss <= 2 * idle, "provider RSS {rss} KiB, idle {idle} KiB");
}
