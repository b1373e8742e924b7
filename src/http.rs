//! The HTTP server boards download from: a small, bounded HTTP/1.1 server
//! on threads of its own, so the tokio runtime stays single-threaded.
//!
//! Routes: `GET`/`HEAD` `/{channel}/{arch}/manifest.json`,
//! `/{channel}/{arch}/{file}` (streamed from disk) and `/healthz`; `404` for
//! anything else, `405` for other methods. Paths are percent-decoded once and
//! checked segment by segment: nothing with `..`, separators, NUL or
//! control characters is ever joined onto a filesystem path, and files are
//! only served if the current manifest lists them and their real path is
//! inside the artifacts root (see `manifest::Catalog::open`).
//!
//! Boards download large images over flaky links, and the server faces
//! every machine on the LAN, so it supports single `Range` requests (`206`,
//! `416`), `ETag`/`If-None-Match` (`304`), `Last-Modified` and
//! `Cache-Control`, and bounds everything a client controls. One poller
//! thread accepts connections and reads request heads for all of them
//! (`poll`, no thread per connection): a head must fit in 8 KiB and 64
//! headers (`431`) and arrive within 10 s, however slowly it trickles; at
//! most 256 connections may wait for one, the longest-waiting dropped first,
//! so idle connections (slowloris) cannot keep others out. Complete requests
//! go to 16 worker threads; when they and their queue are full, the answer
//! is `503` at once. Files are streamed from an open handle, so an artifact
//! renamed over during a download is served whole, old or new.
//!
//! (tiny_http, the first choice, reads request heads without any size
//! bound — upstream issue tiny-http#56 — which would let one client exhaust
//! a board's memory; these limits need control of the connection itself.)
//! This module does not scan or hash files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::manifest::{is_safe_file_name, Catalog, ChannelArch, MANIFEST_NAME};
use crate::record::check_name;

/// Worker threads writing responses. A download holds one for its whole
/// length, so this is how many boards download at once; further complete
/// requests wait in a short queue, then get `503`.
pub const WORKERS: usize = 16;
const QUEUE: usize = 32;

/// Connections waiting for (the rest of) a request head. They cost a file
/// descriptor and a small buffer each, no thread; when there are more, the
/// one waiting longest is dropped, so a flood of idle or trickling
/// connections (slowloris) cannot keep well-behaved clients out.
pub const MAX_PENDING: usize = 256;

/// The request line and headers together, like common servers' 8 KiB.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// The whole request head must arrive within this long (a deadline, not a
/// per-read timeout, so trickling one byte at a time does not extend it).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that stops reading for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests on one connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Stack of a worker thread: parsing and streaming need little.
const WORKER_STACK: usize = 128 * 1024;

/// The longest the poller sleeps, so it sees the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// How long `stop` waits for downloads in progress. A board fetching a
/// rootfs over a slow link must not hold the process past the 2 s shutdown
/// promise; it resumes against this or another provider.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// Longest request path we look at; anything longer is refused unread.
const MAX_PATH: usize = 1024;

/// How long clients may cache a manifest: short, it changes with the files.
const MANIFEST_CACHE: &str = "max-age=10";
/// Artifacts whose name carries their hash never change.
const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";
/// Other artifacts may be replaced: revalidate with the ETag.
const MUTABLE_CACHE: &str = "no-cache";

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    Bind(SocketAddr, String),
}

/// A running HTTP server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Option<thread::JoinHandle<()>>,
}

/// What the poller and the workers share.
struct Shared {
    catalog: Arc<Catalog>,
    stop: AtomicBool,
    /// Workers busy writing a response, for a graceful stop.
    busy: AtomicUsize,
}

/// A connection with a complete request head, for a worker.
struct Job {
    stream: TcpStream,
    head: Head,
    /// Bytes after the head (a pipelined next request).
    rest: Vec<u8>,
    /// Requests already served on this connection.
    served: usize,
}

/// A connection the poller is reading a request head from.
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When it was accepted or handed back; the oldest is dropped first.
    since: Instant,
    deadline: Instant,
    served: usize,
}

impl HttpServer {
    /// Binds `listen` and starts the poller and the workers.
    pub fn start(listen: SocketAddr, catalog: Arc<Catalog>) -> Result<Self, HttpError> {
        let bind_err = |e: io::Error| HttpError::Bind(listen, e.to_string());
        let listener = TcpListener::bind(listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            catalog,
            stop: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        });
        // Workers hand kept-alive connections back through `back_tx`, and
        // poke the poller awake through `wake`.
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(QUEUE);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (back_tx, back_rx) = mpsc::channel::<Pending>();
        let (wake_rx, wake_tx) = UnixStream::pair().map_err(bind_err)?;
        wake_rx.set_nonblocking(true).map_err(bind_err)?;
        wake_tx.set_nonblocking(true).map_err(bind_err)?;
        let wake_tx = Arc::new(wake_tx);
        for i in 0..WORKERS {
            let (shared, jobs, back, wake) = (
                shared.clone(),
                jobs_rx.clone(),
                back_tx.clone(),
                wake_tx.clone(),
            );
            thread::Builder::new()
                .name(format!("http-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || worker(&shared, &jobs, &back, &wake))
                .map_err(bind_err)?;
        }
        let s = shared.clone();
        let poller = thread::Builder::new()
            .name("http-poll".into())
            .spawn(move || poll_loop(&listener, &s, &jobs_tx, &back_rx, &wake_rx))
            .map_err(bind_err)?;
        Ok(HttpServer {
            addr,
            shared,
            poller: Some(poller),
        })
    }

    /// The address actually bound (the port is real even for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets responses being written finish for a short
    /// grace period; downloads still running after it are cut off when the
    /// process exits (clients resume them).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.shared.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if self.shared.busy.load(Ordering::SeqCst) > 0 {
            log::info!("stopping with HTTP downloads still in progress");
        }
    }
}

/// Accepts connections and reads request heads for all of them with
/// `poll`, without a thread per connection; complete requests go to the
/// workers.
fn poll_loop(
    listener: &TcpListener,
    shared: &Shared,
    jobs: &mpsc::SyncSender<Job>,
    back: &mpsc::Receiver<Pending>,
    wake: &UnixStream,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pending: Vec<Pending> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let next = pending
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or(now + POLL);
        let wait = next.saturating_duration_since(now).min(POLL);
        let timeout = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(pending.len() + 2);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            for p in &pending {
                fds.push(PollFd::new(p.stream.as_fd(), PollFlags::POLLIN));
            }
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    log::warn!("HTTP poll: {e}");
                    thread::sleep(POLL);
                }
                continue;
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };

        // Read what arrived; dispatch complete heads. Walk backwards so
        // removals keep the indices of the rest valid.
        for i in (0..pending.len()).rev() {
            if ready[i + 2] {
                if let Some(job) = read_more(&mut pending, i) {
                    dispatch(job, jobs);
                }
            }
        }
        let now = Instant::now();
        pending.retain(|p| p.deadline > now);

        if ready[1] {
            let mut sink = [0u8; 64];
            while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        while let Ok(p) = back.try_recv() {
            admit(&mut pending, p, jobs);
        }
        if ready[0] {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let now = Instant::now();
                        let p = Pending {
                            stream,
                            buf: Vec::new(),
                            since: now,
                            deadline: now + HEAD_TIMEOUT,
                            served: 0,
                        };
                        admit(&mut pending, p, jobs);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("HTTP accept: {e}");
                        thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }
}

/// Adds a connection to those awaiting a head, dropping the one that has
/// waited longest if there are too many; dispatches at once if its buffer
/// already holds a complete request.
fn admit(pending: &mut Vec<Pending>, p: Pending, jobs: &mpsc::SyncSender<Job>) {
    if find_head_end(&p.buf).is_some() || p.buf.len() > MAX_HEAD {
        pending.push(p);
        let last = pending.len() - 1;
        if let Some(job) = complete(pending, last) {
            dispatch(job, jobs);
        }
        return;
    }
    if pending.len() >= MAX_PENDING {
        if let Some((oldest, _)) = pending.iter().enumerate().min_by_key(|(_, p)| p.since) {
            log::debug!(
                "HTTP: {MAX_PENDING} connections waiting for a request; dropping the oldest"
            );
            pending.swap_remove(oldest);
        }
    }
    pending.push(p);
}

/// Reads what connection `i` sent; returns a job when its head is complete.
/// Closed, oversized or malformed connections are answered and removed.
fn read_more(pending: &mut Vec<Pending>, i: usize) -> Option<Job> {
    let mut chunk = [0u8; 2048];
    loop {
        match (&pending[i].stream).read(&mut chunk) {
            Ok(0) => {
                pending.swap_remove(i);
                return None;
            }
            Ok(n) => {
                let p = &mut pending[i];
                if p.buf.is_empty() && p.served > 0 {
                    // A kept-alive connection starts its next request.
                    p.deadline = Instant::now() + HEAD_TIMEOUT;
                }
                // Look for the end of the head only where it can be new, so
                // a trickling client costs no rescans of its whole buffer.
                let from = p.buf.len().saturating_sub(3);
                p.buf.extend_from_slice(&chunk[..n]);
                if find_head_end(&p.buf[from..]).is_some() || p.buf.len() > MAX_HEAD {
                    return complete(pending, i);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                pending.swap_remove(i);
                return None;
            }
        }
    }
}

/// Takes connection `i` out of `pending` with its parsed head, or answers
/// 431/400 and drops it.
fn complete(pending: &mut Vec<Pending>, i: usize) -> Option<Job> {
    let mut p = pending.swap_remove(i);
    let peer = p.stream.peer_addr().ok();
    let parsed = match find_head_end(&p.buf) {
        Some(end) if end <= MAX_HEAD => parse_head(&p.buf[..end]).map(|h| (h, end)),
        _ => Err(HeadError::TooLarge),
    };
    let (status, body) = match parsed {
        Ok((head, end)) => {
            let rest = p.buf.split_off(end + 4);
            return Some(Job {
                stream: p.stream,
                head,
                rest,
                served: p.served,
            });
        }
        Err(HeadError::TooLarge) => {
            log::info!(
                "HTTP: request head from {peer:?} over {MAX_HEAD} bytes or {MAX_HEADERS} headers"
            );
            (431, "request head too large\n")
        }
        Err(HeadError::Malformed(why)) => {
            log::info!("HTTP: malformed request from {peer:?}: {why}");
            (400, "bad request\n")
        }
    };
    let _ = p.stream.set_nonblocking(false);
    let _ = p.stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_reply(&mut p.stream, Reply::text(status, body), false, false);
    close_soon(p.stream);
    None
}

/// Queues a job for the workers, or answers 503 when they are all busy and
/// the queue is full.
fn dispatch(job: Job, jobs: &mpsc::SyncSender<Job>) {
    match jobs.try_send(job) {
        Ok(()) => {}
        Err(mpsc::TrySendError::Full(mut job)) | Err(mpsc::TrySendError::Disconnected(mut job)) => {
            log::debug!("HTTP: all {WORKERS} workers busy, answered 503");
            let _ = job.stream.set_nonblocking(false);
            let _ = job.stream.set_write_timeout(Some(Duration::from_secs(1)));
            let mut r = Reply::text(503, "busy, try again\n");
            r.headers.push(("Retry-After", "2".into()));
            let _ = write_reply(&mut job.stream, r, job.head.method == "HEAD", false);
            close_soon(job.stream);
        }
    }
}

/// Closing a socket with unread input makes Linux send a reset, which can
/// destroy the response still in flight. The poller must not block, so it
/// discards what has already arrived and half-closes.
fn close_soon(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A worker's close: half-close, then read (and drop) what the client
/// still sends until it closes too, for a short while.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Writes responses until the poller shuts down (dropping the job queue).
fn worker(
    shared: &Shared,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    back: &mpsc::Sender<Pending>,
    wake: &UnixStream,
) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut job) = job else { return };
        shared.busy.fetch_add(1, Ordering::SeqCst);
        // A request with a body (never read) or another method ends the
        // connection: its unread bytes must not be taken for a request.
        let keep = job.head.keep_alive
            && !job.head.has_body
            && matches!(job.head.method.as_str(), "GET" | "HEAD")
            && job.served + 1 < MAX_REQUESTS_PER_CONNECTION
            && !shared.stop.load(Ordering::SeqCst);
        let peer = job.stream.peer_addr().ok();
        let ok = job.stream.set_nonblocking(false).is_ok()
            && job.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
        let result = if ok {
            respond(&mut job.stream, &job.head, keep, shared, peer)
        } else {
            Ok(())
        };
        shared.busy.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(()) if keep && job.stream.set_nonblocking(true).is_ok() => {
                let now = Instant::now();
                let p = Pending {
                    stream: job.stream,
                    buf: job.rest,
                    since: now,
                    deadline: now + IDLE_TIMEOUT,
                    served: job.served + 1,
                };
                if back.send(p).is_ok() {
                    let _ = (&*wake).write(&[1]);
                }
            }
            Ok(()) => linger_close(job.stream),
            Err(e) => log::debug!("HTTP response to {peer:?} not completed: {e}"),
        }
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    /// The client wants the connection kept open after this response.
    keep_alive: bool,
    range: Option<String>,
    if_range: Option<String>,
    if_none_match: Option<String>,
    /// The request announces a body, which no route accepts.
    has_body: bool,
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    TooLarge,
    Malformed(&'static str),
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses a request line and headers (without the final blank line).
fn parse_head(raw: &[u8]) -> Result<Head, HeadError> {
    if raw.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(raw).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(HeadError::Malformed("bad request line")),
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed("bad method"));
    }
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive: http11,
        range: None,
        if_range: None,
        if_none_match: None,
        has_body: false,
    };
    for (i, line) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("header without a colon"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    head.keep_alive = false;
                } else if v.contains("keep-alive") {
                    head.keep_alive = true;
                }
            }
            "range" => head.range = Some(value.to_string()),
            "if-range" => head.if_range = Some(value.to_string()),
            "if-none-match" => head.if_none_match = Some(value.to_string()),
            "content-length" => head.has_body |= value != "0",
            "transfer-encoding" => head.has_body = true,
            _ => {}
        }
    }
    Ok(head)
}

/// A response about to be written.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from offset `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(body.as_bytes().to_vec()),
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    head: &Head,
    keep: bool,
    shared: &Shared,
    peer: Option<SocketAddr>,
) -> io::Result<()> {
    let reply = if head.method != "GET" && head.method != "HEAD" {
        let mut r = Reply::text(405, "method not allowed\n");
        r.headers.push(("Allow", "GET, HEAD".into()));
        r
    } else if head.has_body {
        Reply::text(400, "request bodies are not accepted\n")
    } else {
        let route = route(&head.target);
        log::debug!(
            "{} {} from {peer:?}: {route:?}",
            head.method,
            head.target.get(..200).unwrap_or("(long)")
        );
        match route {
            Route::Health => Reply::text(200, "ok\n"),
            Route::Refused(why) => {
                log::info!(
                    "refused request {:?} from {peer:?}: {why}",
                    head.target.get(..200).unwrap_or("(long path)")
                );
                Reply::text(400, "bad request path\n")
            }
            Route::NotFound => Reply::text(404, "not found\n"),
            Route::File(ca, name) if name == MANIFEST_NAME => {
                manifest_reply(&shared.catalog, &ca, head)
            }
            Route::File(ca, name) => artifact_reply(&shared.catalog, &ca, &name, head),
        }
    };
    write_reply(stream, reply, head.method == "HEAD", keep)
}

fn manifest_reply(catalog: &Catalog, ca: &ChannelArch, head: &Head) -> Reply {
    let Some(m) = catalog.manifest(ca) else {
        return Reply::text(404, "not found\n");
    };
    let etag = format!("\"{}\"", m.sha256);
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("ETag", etag.clone()),
        ("Cache-Control", MANIFEST_CACHE.into()),
    ];
    if etag_matches(head.if_none_match.as_deref(), &etag) {
        return Reply {
            status: 304,
            headers,
            body: Body::Empty,
        };
    }
    headers.push(("Accept-Ranges", "none".into()));
    Reply {
        status: 200,
        headers,
        body: Body::Bytes(m.json.clone()),
    }
}

fn artifact_reply(catalog: &Catalog, ca: &ChannelArch, name: &str, head: &Head) -> Reply {
    let Some(open) = catalog.open(ca, name) else {
        return Reply::text(404, "not found\n");
    };
    let mut headers = vec![
        ("Content-Type", content_type(name).to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if let Some(t) = open.modified {
        headers.push(("Last-Modified", http_date(t)));
    }
    if let Some(sha) = &open.sha256 {
        let etag = format!("\"{sha}\"");
        let named_by_content = name.contains(&sha[..16]);
        headers.push(("ETag", etag.clone()));
        headers.push((
            "Cache-Control",
            if named_by_content {
                IMMUTABLE_CACHE
            } else {
                MUTABLE_CACHE
            }
            .into(),
        ));
        if etag_matches(head.if_none_match.as_deref(), &etag) {
            return Reply {
                status: 304,
                headers,
                body: Body::Empty,
            };
        }
    } else {
        headers.push(("Cache-Control", MUTABLE_CACHE.into()));
    }
    let size = open.size;
    // If-Range: resume only if the file is still the one the client has
    // part of (RFC 9110 13.1.5); otherwise send it whole.
    let etag_now = open.sha256.as_ref().map(|s| format!("\"{s}\""));
    let modified_now = open.modified.map(http_date);
    let range_valid = match head.if_range.as_deref() {
        None => true,
        Some(v) => Some(v) == etag_now.as_deref() || Some(v) == modified_now.as_deref(),
    };
    let range = head.range.as_deref().filter(|_| range_valid);
    match range.map(|r| parse_range(r, size)) {
        Some(RangeSpec::Unsatisfiable) => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            Reply {
                status: 416,
                headers,
                body: Body::Empty,
            }
        }
        Some(RangeSpec::Bytes(start, end)) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            Reply {
                status: 206,
                headers,
                body: Body::File {
                    file: open.file,
                    start,
                    len: end - start + 1,
                },
            }
        }
        Some(RangeSpec::Ignore) | None => Reply {
            status: 200,
            headers,
            body: Body::File {
                file: open.file,
                start: 0,
                len: size,
            },
        },
    }
}

fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*")
    })
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Inclusive byte positions.
    Bytes(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, other units,
    /// garbage): answer with the whole file, as RFC 9110 allows.
    Ignore,
}

fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n), size - 1),
            None => RangeSpec::Ignore,
        },
        // bytes=A- or bytes=A-B
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Ignore;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match num(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeSpec::Ignore,
                }
            };
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, end)
            }
        }
        (true, true) => RangeSpec::Ignore,
    }
}

fn write_reply(
    stream: &mut TcpStream,
    reply: Reply,
    head_only: bool,
    keep: bool,
) -> io::Result<()> {
    let len = match &reply.body {
        Body::Empty => 0,
        Body::Bytes(b) => b.len() as u64,
        Body::File { len, .. } => *len,
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: plasmd/{}\r\nDate: {}\r\n",
        reply.status,
        reason(reply.status),
        env!("CARGO_PKG_VERSION"),
        http_date(SystemTime::now())
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.status != 304 {
        out.push_str(&format!("Content-Length: {len}\r\n"));
    }
    out.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    stream.write_all(out.as_bytes())?;
    if head_only {
        return Ok(());
    }
    match reply.body {
        Body::Empty => Ok(()),
        Body::Bytes(b) => stream.write_all(&b),
        Body::File {
            mut file,
            start,
            len,
        } => {
            file.seek(SeekFrom::Start(start))?;
            // std copies file → socket with sendfile where it can.
            let sent = io::copy(&mut file.take(len), stream)?;
            if sent < len {
                // The file shrank under us: the client sees a short body and
                // must not take it for the whole file.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while serving",
                ));
            }
            Ok(())
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for HTTP headers.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Reuse the RFC 3339 formatter for the calendar arithmetic.
    let iso = crate::record::rfc3339(t);
    let (y, mo, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let month = MONTHS[mo.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    let weekday = DAYS[((secs / 86_400) % 7) as usize];
    format!("{weekday}, {d} {month} {y} {} GMT", &iso[11..19])
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("txt") | Some("cfg") | Some("conf") => "text/plain; charset=utf-8",
        Some("gz") | Some("tgz") => "application/gzip",
        Some("xz") => "application/x-xz",
        Some("zst") => "application/zstd",
        Some("tar") => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// Runs the request parsers on untrusted bytes, as the server does: for the
/// fuzz targets in `fuzz/` only. Must never panic.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    if let Ok(head) = parse_head(data) {
        let _ = route(&head.target);
        if let Some(r) = &head.range {
            for size in [0, 1, 100, u64::MAX] {
                if let RangeSpec::Bytes(a, b) = parse_range(r, size) {
                    assert!(a <= b && b < size, "range {a}-{b} outside 0..{size}");
                }
            }
        }
    }
    let _ = route(&String::from_utf8_lossy(data));
}

/// What a request asks for, once its path is understood.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    File(ChannelArch, String),
    /// A path that tries to leave the tree or is malformed: 400, logged.
    Refused(&'static str),
    NotFound,
}

/// Maps a request target to a route without touching the filesystem.
fn route(url: &str) -> Route {
    if url.len() > MAX_PATH {
        return Route::Refused("path too long");
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    if path == "/healthz" {
        return Route::Health;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Refused("not an absolute path");
    };
    let mut segments = Vec::with_capacity(3);
    for raw in rest.split('/') {
        let Some(seg) = percent_decode(raw) else {
            return Route::Refused("bad percent-encoding");
        };
        if seg == ".." || seg == "." || seg.contains(['/', '\\', '\0']) {
            return Route::Refused("path traversal attempt");
        }
        if seg.chars().any(char::is_control) {
            return Route::Refused("control characters in path");
        }
        segments.push(seg);
    }
    match segments.as_slice() {
        [channel, arch, file] => {
            if check_name("channel", channel).is_err()
                || check_name("arch", arch).is_err()
                || !is_safe_file_name(file)
                || file.starts_with('.')
            {
                return Route::NotFound;
            }
            Route::File(
                ChannelArch {
                    channel: channel.clone(),
                    arch: arch.clone(),
                },
                file.clone(),
            )
        }
        _ => Route::NotFound,
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(c: &str, a: &str, f: &str) -> Route {
        Route::File(
            ChannelArch {
                channel: c.into(),
                arch: a.into(),
            },
            f.into(),
        )
    }

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(
            route("/stable/arm64/manifest.json"),
            file("stable", "arm64", "manifest.json")
        );
        assert_eq!(
            route("/stable/arm64/vmlinuz?x=1"),
            file("stable", "arm64", "vmlinuz")
        );
        assert_eq!(
            route("/stable/arm64/my%20file"),
            file("stable", "arm64", "my file")
        );
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/stable/arm64"), Route::NotFound);
        assert_eq!(route("/stable/arm64/a/b"), Route::NotFound);
        assert_eq!(route("/Stable/arm64/x"), Route::NotFound);
    }

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored, 100), Ignore, "{ignored}");
        }
    }

    #[test]
    fn heads() {
        let h = parse_head(b"GET /x HTTP/1.1\r\nRange: bytes=0-1\r\nConnection: close").unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.keep_alive),
            ("GET", "/x", false)
        );
        assert_eq!(h.range.as_deref(), Some("bytes=0-1"));
        assert!(parse_head(b"GET /x HTTP/1.0").is_ok_and(|h| !h.keep_alive));
        assert!(parse_head(b"GET /x HTTP/1.1").is_ok_and(|h| h.keep_alive));
        for bad in [
            &b"GET /x"[..],
            b"GET  /x HTTP/1.1",
            b"get /x HTTP/1.1",
            b"GET /x HTTP/1.1\r\nNoColon",
            b"\xff",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(etag_matches(Some("W/\"a\", \"b\""), "\"a\""));
        assert!(!etag_matches(Some("\"c\""), "\"a\""));
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn traversal_is_refused() {
        for bad in [
            "/stable/arm64/..",
            "/stable/../../etc/passwd",
            "/stable/arm64/%2e%2e",
            "/stable/arm64/..%2fetc%2fpasswd",
            "/stable/arm64/%2Fetc%2Fpasswd",
            "/stable/arm64/a%5cb",
            "/stable/arm64/a%00b",
            "/stable/arm64/%zz",
            "/stable/arm64/%ff",
            "stable/arm64/x",
        ] {
            assert!(matches!(route(bad), Route::Refused(_)), "{bad}");
        }
        assert!(matches!(
            route(&format!("/{}", "a".repeat(2000))),
            Route::Refused(_)
        ));
        assert_eq!(route("/stable/arm64/.hidden"), Route::NotFound);
    }
}
