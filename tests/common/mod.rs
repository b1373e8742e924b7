//! Helpers for the integration tests: start the real binaries on
//! 127.0.0.1, read what they print, and kill them on every exit path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const PLASMD: &str = env!("CARGO_BIN_EXE_plasmd");
pub const DISCOVER: &str = env!("CARGO_BIN_EXE_phase-discover");

#[path = "../../src/testdir.rs"]
mod testdir;
pub mod tftp;
#[allow(unused_imports)]
pub use testdir::TempDir;

/// A running process whose stdout and stderr are collected; killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect<R: Read + Send + 'static>(r: R, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let reader = BufReader::new(r);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl Proc {
    pub fn spawn(name: &str, bin: &str, args: &[&str]) -> Proc {
        Self::spawn_with(name, bin, args, false)
    }

    /// Like `spawn`, with a pipe to the process's stdin (see `send`).
    pub fn spawn_with(name: &str, bin: &str, args: &[&str], stdin: bool) -> Proc {
        Self::spawn_full(name, bin, args, stdin, "info,libp2p=warn", &[])
    }

    /// Like `spawn`, logging at `rust_log` (e.g. "info,plasmd=debug").
    pub fn spawn_logged(name: &str, bin: &str, args: &[&str], rust_log: &str) -> Proc {
        Self::spawn_full(name, bin, args, false, rust_log, &[])
    }

    /// Like `spawn`, with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn spawn_env(name: &str, bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Self::spawn_full(name, bin, args, false, "info,libp2p=warn", envs)
    }

    fn spawn_full(
        name: &str,
        bin: &str,
        args: &[&str],
        stdin: bool,
        rust_log: &str,
        envs: &[(&str, &str)],
    ) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().copied())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let (out, err) = (Arc::default(), Arc::default());
        collect(child.stdout.take().unwrap(), Arc::clone(&out));
        collect(child.stderr.take().unwrap(), Arc::clone(&err));
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout: out,
            stderr: err,
        }
    }

    /// Writes `text` to the process's stdin (spawned with `spawn_with`).
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("spawned with a stdin pipe");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stdout line starts with `prefix`; returns the rest.
    pub fn wait_stdout(&self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stdout().lines().find(|l| l.starts_with(prefix)) {
                return line[prefix.len()..].trim().to_string();
            }
            if Instant::now() > end {
                panic!(
                    "{}: no stdout line starting with {prefix:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stdout contains `needle`.
    pub fn wait_stdout_contains(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.stdout().contains(needle) {
            if Instant::now() > end {
                let out = self.stdout();
                let tail: String = out
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "{}: {needle:?} not on stdout within {timeout:?}\nlast output:\n{tail}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until stderr (the log) contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.stderr().matches(needle).count() < count {
            if Instant::now() > end {
                panic!(
                    "{}: log line {needle:?} not seen {count} time(s) within {timeout:?}\nstderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.pid(), sig);
    }

    /// Waits for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    if pid > 0 {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `plasmd node` on 127.0.0.1 with the given TTL; returns it and its
/// full multiaddr.
pub fn node(dir: &Path, name: &str, ttl: u64, bootstrap: Option<&str>) -> (Proc, String) {
    let extra = match bootstrap {
        Some(b) => vec!["--bootstrap", b],
        None => vec![],
    };
    node_with(dir, name, ttl, &extra, None)
}

/// A `plasmd node` on 127.0.0.1 (identity `dir/NAME.key`, record TTL
/// `ttl`) with `extra` arguments, logging at `rust_log` when given (e.g. the
/// DHT at DEBUG, to see each refusal); returns it and its full multiaddr.
pub fn node_with(
    dir: &Path,
    name: &str,
    ttl: u64,
    extra: &[&str],
    rust_log: Option<&str>,
) -> (Proc, String) {
    let key = dir.join(format!("{name}.key"));
    let ttl = ttl.to_string();
    let mut args = vec![
        "node",
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--identity",
        key.to_str().unwrap(),
        "--record-ttl",
        &ttl,
    ];
    args.extend_from_slice(extra);
    let p = match rust_log {
        Some(level) => Proc::spawn_logged(name, PLASMD, &args, level),
        None => Proc::spawn(name, PLASMD, &args),
    };
    let addr = p.wait_stdout("p2p listening on ", Duration::from_secs(10));
    (p, addr)
}

/// `plasmd serve` arguments for records that live 4 s and are refreshed
/// every 2 s, so expiry and refresh happen within a test's patience.
pub const SHORT_TTL: [&str; 4] = ["--record-ttl", "4", "--refresh-interval", "2"];

/// [`SHORT_TTL`], joining the DHT through `bootstrap`.
pub fn short_ttl_through(bootstrap: &str) -> Vec<&str> {
    let mut args = vec!["--bootstrap", bootstrap];
    args.extend(SHORT_TTL);
    args
}

/// `n` nodes, each joining through the first.
pub fn fleet(dir: &Path, n: usize, ttl: u64) -> Vec<(Proc, String)> {
    let mut nodes = vec![node(dir, "node0", ttl, None)];
    let first = nodes[0].1.clone();
    for i in 1..n {
        nodes.push(node(dir, &format!("node{i}"), ttl, Some(&first)));
    }
    nodes
}

/// A running `plasmd serve` and what it printed.
pub struct Serve {
    pub proc: Proc,
    pub http_port: u16,
    pub p2p_addr: String,
}

/// `plasmd serve` arguments that keep everything on 127.0.0.1 with ports
/// the OS picks and an identity in `dir`, followed by `extra`.
pub fn loopback_serve_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let key = dir.join("provider.key");
    let mut args: Vec<String> = [
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--identity",
        key.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `program args` (a `plasmd serve` command line, possibly behind an
/// emulator) and waits for the addresses it prints.
pub fn start_serve(name: &str, program: &str, args: &[String]) -> Serve {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::spawn(name, program, &args);
    let http = proc.wait_stdout("HTTP listening on ", Duration::from_secs(30));
    let http_port = http.rsplit(':').next().unwrap().parse().unwrap();
    let p2p_addr = proc.wait_stdout("p2p listening on ", Duration::from_secs(10));
    Serve {
        proc,
        http_port,
        p2p_addr,
    }
}

/// Starts `plasmd serve` of `artifacts` on 127.0.0.1 with an identity in
/// `dir` and the extra arguments given.
pub fn serve(dir: &Path, artifacts: &Path, extra: &[&str]) -> Serve {
    let mut all = vec!["--artifacts", artifacts.to_str().unwrap()];
    all.extend_from_slice(extra);
    let s = start_serve("serve", PLASMD, &loopback_serve_args(dir, &all));
    // The first scan of the tree runs after start-up; it is done (and the
    // manifests are served) once the first record is being published.
    s.proc.wait_log(
        "Publishing boot manifest to DHT",
        1,
        Duration::from_secs(60),
    );
    s
}

/// Hex sha256 of a file, computed by coreutils (independently of plasmd).
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Checks that the command `probe` (from Debian's `package`) is here.
/// Tests never install anything: `bash tests/run` installs what the
/// ignored tiers need before it runs them.
pub fn need_tool(probe: &str, package: &str) {
    let here = Command::new(probe).arg("--version").output().is_ok();
    assert!(
        here,
        "this test needs {probe} (Debian's {package}); bash tests/run installs it"
    );
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The result of one `phase-discover` run.
pub struct Discovered {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `phase-discover` arguments looking up stable/arm64 through `bootstrap`,
/// followed by `extra`.
pub fn lookup_args(bootstrap: &str, timeout: u64, extra: &[&str]) -> Vec<String> {
    let t = timeout.to_string();
    let mut args = vec![
        "--channel",
        "stable",
        "--arch",
        "arm64",
        "--bootstrap",
        bootstrap,
        "--timeout",
        &t,
    ];
    args.extend_from_slice(extra);
    args.iter().map(|s| s.to_string()).collect()
}

pub fn discover(bootstrap: &str, timeout: u64, extra: &[&str]) -> Discovered {
    let args = lookup_args(bootstrap, timeout, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(DISCOVER, &args)
}

/// Runs a binary to completion (killed after 60 s, so a hang fails the test).
pub fn run(bin: &str, args: &[&str]) -> Discovered {
    run_logged(bin, args, "info,libp2p=warn")
}

/// `run`, logging at `rust_log`.
pub fn run_logged(bin: &str, args: &[&str], rust_log: &str) -> Discovered {
    let mut p = Proc::spawn_logged("run", bin, args, rust_log);
    let status = p
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{bin} {args:?} did not exit within 60 s"));
    // Let the reader threads drain the pipes.
    thread::sleep(Duration::from_millis(50));
    Discovered {
        code: status.code().unwrap_or(-1),
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// Polls `phase-discover` until `pred` holds for its result.
pub fn discover_until(
    bootstrap: &str,
    timeout: Duration,
    extra: &[&str],
    pred: impl Fn(&Discovered) -> bool,
) -> Discovered {
    let end = Instant::now() + timeout;
    loop {
        let d = discover(bootstrap, 3, extra);
        if pred(&d) {
            return d;
        }
        if Instant::now() > end {
            panic!(
                "phase-discover never gave the expected result within {timeout:?}; last: code {} stdout {:?} stderr {:?}",
                d.code, d.stdout, d.stderr
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// One of the repository's scripts (e.g. `cross/build-aarch64`), to be run
/// as a user would from a shell at the repository's root.
pub fn script(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(env!("CARGO_MANIFEST_DIR"));
    // The variables cargo sets for a test (CARGO_PKG_*, CARGO_MANIFEST_*,
    // ...) would make an inner cargo rebuild ring from scratch; run as
    // from a shell instead.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "CARGO" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Runs `script` (see [`script`]) and fails the test if it fails.
pub fn run_script(name: &str) {
    let status = script(name).status().expect("bash runs");
    assert!(status.success(), "{name} failed");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 client: (status, headers, body) for a raw request
/// target, sent exactly as given (no normalisation of `..`).
pub fn http(port: u16, method: &str, target: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response has a header block");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, body)
}

/// GET an absolute `http://127.0.0.1:PORT/path` URL.
pub fn get_url(url: &str) -> (u16, Vec<u8>) {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback URL");
    let (port, path) = rest.split_once('/').unwrap();
    let (status, _, body) = http(port.parse().unwrap(), "GET", &format!("/{path}"));
    (status, body)
}

/// A JSON string field of a flat object, good enough for our records and
/// generated manifests.
pub fn json_field(json: &str, field: &str) -> Option<String> {
    let pat = format!("\"{field}\"");
    let at = json.find(&pat)? + pat.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// `<dir>/stable/arm64` with three small artifacts.
pub fn artifacts(dir: &Path) -> PathBuf {
    let root = dir.join("artifacts");
    let a = root.join("stable/arm64");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("vmlinuz"), b"test kernel image\n").unwrap();
    std::fs::write(a.join("initrd.img"), vec![7u8; 100_000]).unwrap();
    std::fs::write(a.join("board.dtb"), b"dtb").unwrap();
    root
}

/// `plasmd release keygen`: `dir/name.pub` and `dir/name.key`, as paths.
pub fn keygen(dir: &Path, name: &str) -> (String, String) {
    let (p, s) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    let (p, s) = (
        p.to_str().unwrap().to_string(),
        s.to_str().unwrap().to_string(),
    );
    let out = run(PLASMD, &["release", "keygen", "-p", &p, "-s", &s]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (p, s)
}

/// `plasmd release sign -s key [extra] dir`, which must work.
pub fn sign(key: &str, dir: &Path, extra: &[&str]) {
    let mut args = vec!["release", "sign", "-s", key];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let out = run(PLASMD, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A DHT peer of the attacker's own, built on plasmd's library with a fresh
/// key, joined to the node at `node_addr`: a DHT server, or with `client`
/// only a client (it asks, puts and announces, and answers nobody).
pub async fn hostile_peer(
    node_addr: &str,
    ttl: u64,
    client: bool,
) -> (plasmd::dht::Client, libp2p::identity::Keypair) {
    use plasmd::dht::{self, DhtConfig, Role};
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let (client, event_loop, _) = dht::start(DhtConfig {
        keypair: keypair.clone(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![node_addr.parse().unwrap()],
        // A client answers nobody; it claims an address all the same, so
        // its provider announcements are handed out like anyone's.
        announce: if client {
            vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()]
        } else {
            vec![]
        },
        record_ttl: Duration::from_secs(ttl),
        mdns: false,
        role: if client { Role::Client } else { Role::Server },
        agent: "hostile/0".into(),
        trusted_publishers: vec![],
        metrics: None,
    })
    .await
    .unwrap();
    tokio::spawn(event_loop.run());
    let mut peers = client.peers();
    peers.wait_for(|n| *n > 0).await.unwrap();
    (client, keypair)
}
