//! A rack of boards powering on at once, as the provider sees it: a
//! thousand downloads together, thousands of idle and trickling
//! connections, clients that read slowly or not at all, request-smuggling
//! forms, files swapped under the server, a flood on the p2p port, and the
//! watchdog kept fed through all of it. Real processes on 127.0.0.1; no
//! timing asserts beyond "completes" (generous deadlines).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Lets this test process (and the plasmd it starts) hold thousands of
/// sockets.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(1 << 16);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

/// Distinct, recognisable content for file `i`.
fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((j * 31 + i * 7) % 251) as u8).collect()
}

/// Starts `plasmd serve` and waits until `name` is listed in the manifest.
fn serve_listing(dir: &Path, root: &Path, extra: &[&str], name: &str) -> Serve {
    let s = serve(dir, root, extra);
    let end = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&http(s.http_port, "GET", "/stable/arm64/manifest.json").2)
        .contains(name)
    {
        assert!(Instant::now() < end, "{name} never listed");
        thread::sleep(Duration::from_millis(100));
    }
    s
}

/// GET over HTTP/1.1 with `Connection: close`: (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: boards\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, buf[end + 4..].to_vec()))
}

/// A big file nobody needs to read whole (sparse: no disk, no hashing time
/// beyond reading zeros).
fn big_file(root: &Path, name: &str, len: u64) {
    std::fs::File::create(root.join("stable/arm64").join(name))
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Connects and asks for `path`, then never reads.
fn stalled_download(port: u16, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: boards\r\n\r\n").unwrap();
    c
}

/// Whether the server still holds `s` open (nothing to read, no EOF).
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let open = matches!((&*s).read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

#[test]
fn a_thousand_boards_download_at_once_and_every_one_gets_the_right_bytes() {
    raise_fd_limit();
    let dir = TempDir::new("storm");
    let root = artifacts(dir.path());
    let files: Vec<Vec<u8>> = (0..4).map(|i| content(i, 1024 * 1024)).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(root.join(format!("stable/arm64/rootfs{i}.img")), f).unwrap();
    }
    let s = serve_listing(dir.path(), &root, &[], "rootfs3.img");
    let port = s.http_port;
    let files = Arc::new(files);
    let n = 1000;
    let go = Arc::new(Barrier::new(n));
    let start = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (files, go) = (files.clone(), go.clone());
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    go.wait();
                    let (status, body) = get(port, &format!("/stable/arm64/rootfs{}.img", i % 4))?;
                    Ok::<_, std::io::Error>(status == 200 && body == files[i % 4])
                })
                .unwrap()
        })
        .collect();
    let mut ok = 0;
    let mut failures = Vec::new();
    for c in clients {
        match c.join().unwrap() {
            Ok(true) => ok += 1,
            other => failures.push(format!("{other:?}")),
        }
    }
    println!(
        "{ok}/{n} concurrent 1 MiB downloads complete and verified in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(ok, n, "failures: {:?}", &failures[..failures.len().min(5)]);
}

#[test]
fn two_thousand_idle_and_trickling_connections_are_held_while_boards_are_served() {
    raise_fd_limit();
    let dir = TempDir::new("idle");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let port = s.http_port;
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut trickling: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"GET /stable/arm64/vmlinuz HTTP/1.1\r\nX-Pad: ")
                .unwrap();
            c
        })
        .collect();
    let kernel = std::fs::read(root.join("stable/arm64/vmlinuz")).unwrap();
    let start = Instant::now();
    let mut served = 0;
    for round in 0..10 {
        // One more byte of an endless header from each trickler.
        for c in trickling.iter_mut() {
            c.write_all(b"a").unwrap();
        }
        for _ in 0..5 {
            let (status, body) = get(port, "/stable/arm64/vmlinuz").unwrap();
            assert_eq!((status, &body), (200, &kernel), "round {round}");
            served += 1;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // Within the 10 s head deadline nothing was dropped: the budget is far
    // from used, so nobody had to give way.
    let open = idle
        .iter()
        .chain(trickling.iter())
        .filter(|c| still_open(c))
        .count();
    println!(
        "{served} requests served in {:.2} s while {open} of 2000 idle and trickling connections were held",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(open, 2000);
}

#[test]
fn clients_that_read_too_slowly_or_never_are_cut_off_by_the_minimum_rate() {
    let dir = TempDir::new("slow");
    let root = artifacts(dir.path());
    big_file(&root, "rootfs.img", 256 * 1024 * 1024);
    // 64 KiB/s averaged over 2 s windows (production: 4 KiB/s over 30 s).
    let s = serve_listing(
        dir.path(),
        &root,
        &["--http-min-rate", "65536", "--http-rate-window", "2"],
        "rootfs.img",
    );
    let port = s.http_port;
    let start = Instant::now();
    let mut never = stalled_download(port, "/stable/arm64/rootfs.img");
    let trickle = thread::spawn(move || {
        let mut c = stalled_download(port, "/stable/arm64/rootfs.img");
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // One byte a second until the server gives up on us.
        let mut total = 0u64;
        let mut b = [0u8; 1];
        loop {
            match c.read(&mut b) {
                Ok(1) => total += 1,
                _ => return total,
            }
            if total > 30 {
                // Enough to see the rule act; then drain what is buffered.
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
                return total + rest.len() as u64;
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    s.proc
        .wait_log("cut off a response", 2, Duration::from_secs(40));
    println!(
        "both slow clients cut off after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // The client that never read now finds the end of what was sent.
    never
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = never.read_to_end(&mut got);
    assert!((got.len() as u64) < 256 * 1024 * 1024);
    let trickled = trickle.join().unwrap();
    assert!(trickled < 256 * 1024 * 1024);
    // And the server is as good as new.
    assert_eq!(get(port, "/healthz").unwrap(), (200, b"ok\n".to_vec()));
}

#[test]
fn the_watchdog_keeps_being_fed_while_64_slow_downloads_saturate_the_server() {
    raise_fd_limit();
    let dir = TempDir::new("wd");
    let root = artifacts(dir.path());
    big_file(&root, "rootfs.img", 128 * 1024 * 1024);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let args = loopback_serve_args(dir.path(), &["--artifacts", root.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // WatchdogSec=1.5: a ping expected every 0.5 s.
    let p = Proc::spawn_env(
        "serve",
        PLASMD,
        &args,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1500000"),
        ],
    );
    let port: u16 = p
        .wait_stdout("HTTP listening on ", Duration::from_secs(30))
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&http(port, "GET", "/stable/arm64/manifest.json").2)
        .contains("rootfs.img")
    {
        assert!(Instant::now() < end, "rootfs.img never listed");
        thread::sleep(Duration::from_millis(100));
    }
    let stalled: Vec<_> = (0..64)
        .map(|_| stalled_download(port, "/stable/arm64/rootfs.img"))
        .collect();
    let idle: Vec<_> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Drain what arrived before the storm, then count for 6 s.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let n = sock
            .recv(&mut buf)
            .expect("WATCHDOG=1 keeps arriving under load");
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
    println!("{pings} WATCHDOG=1 in 6 s with 64 stalled downloads and 500 idle connections");
    // One every 0.5 s would be 12; a missed one or two is not a failure.
    assert!(pings >= 8, "only {pings} watchdog pings in 6 s");
    assert!(!p.stderr().contains("unhealthy"), "{}", p.stderr());
    drop((stalled, idle));
}

#[test]
fn request_smuggling_forms_get_400_and_the_connection_closed() {
    let dir = TempDir::new("smuggle");
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &[]);
    let forms = [
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nGET /x",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nGET /",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nGET /\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\nHost: x\n\n",
        "GET /healthz HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for form in forms {
        let mut c = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(form.as_bytes()).unwrap();
        let mut buf = Vec::new();
        // read_to_end returns only once the server closed the connection.
        c.read_to_end(&mut buf)
            .unwrap_or_else(|e| panic!("{form:?}: connection not closed: {e}"));
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400 "), "{form:?}: {text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{form:?}: {text}");
    }
    // The same request, well-formed, is answered.
    assert_eq!(get(s.http_port, "/healthz").unwrap().0, 200);
}

#[test]
fn a_symlink_or_fifo_swapped_in_after_listing_is_never_served_and_never_blocks() {
    let dir = TempDir::new("swap");
    let root = artifacts(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"outside the root").unwrap();
    let a = root.join("stable/arm64");
    std::fs::write(a.join("swap.img"), b"genuine").unwrap();
    let s = serve_listing(dir.path(), &root, &[], "swap.img");
    let port = s.http_port;
    for (kind, make) in [
        (
            "symlink",
            Box::new(|p: &Path| std::os::unix::fs::symlink(&secret, p).unwrap())
                as Box<dyn Fn(&Path)>,
        ),
        (
            "fifo",
            Box::new(|p: &Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap()),
        ),
    ] {
        // Swap it in atomically, and ask at once: the manifest still lists
        // swap.img (the rescan waits for 300 ms of quiet).
        let tmp = a.join(".swap.tmp");
        make(&tmp);
        std::fs::rename(&tmp, a.join("swap.img")).unwrap();
        let t = Instant::now();
        let (status, body) = get(port, "/stable/arm64/swap.img").unwrap();
        assert_ne!(body, b"outside the root".to_vec(), "{kind} served");
        assert_ne!(status, 200, "{kind}");
        assert!(t.elapsed() < Duration::from_secs(5), "{kind} blocked");
        // Restore it and wait until it is served again.
        std::fs::remove_file(a.join("swap.img")).unwrap();
        std::fs::write(a.join("swap.img"), b"genuine").unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while get(port, "/stable/arm64/swap.img").unwrap() != (200, b"genuine".to_vec()) {
            assert!(Instant::now() < end, "swap.img not served again");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_connection_flood_on_the_p2p_port_leaves_http_and_discovery_working() {
    raise_fd_limit();
    let dir = TempDir::new("p2pflood");
    let nodes = fleet(dir.path(), 1, 30);
    let bootstrap = nodes[0].1.clone();
    let root = artifacts(dir.path());
    let s = serve(dir.path(), &root, &["--bootstrap", &bootstrap]);
    let p2p_port: u16 = s
        .p2p_addr
        .split("/tcp/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a /tcp/PORT in the p2p address");
    let flood: Vec<TcpStream> = (0..800)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", p2p_port)).ok())
        .collect();
    println!("{} TCP connections opened to the p2p port", flood.len());
    thread::sleep(Duration::from_secs(1));
    let kernel = std::fs::read(root.join("stable/arm64/vmlinuz")).unwrap();
    for _ in 0..20 {
        assert_eq!(
            get(s.http_port, "/stable/arm64/vmlinuz").unwrap(),
            (200, kernel.clone())
        );
    }
    let found = discover_until(&bootstrap, Duration::from_secs(30), &[], |d| d.code == 0);
    assert!(
        found.stdout.contains(&format!(":{}/", s.http_port)),
        "{}",
        found.stdout
    );
    drop(flood);
}
