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
//! `Cache-Control`, and bounds everything a client controls: the request
//! head's size and header count, the time to send it (slowloris), idle
//! keep-alive time, write stalls, and the number of connections (a busy
//! server answers `503` at once). Files are streamed from an open handle, so
//! an artifact renamed over during a download is served whole, old or new.
//!
//! (tiny_http, the first choice, reads request heads without any size
//! bound — upstream issue tiny-http#56 — which would let one client exhaust
//! a board's memory; these limits need control of the connection itself.)
//! This module does not scan or hash files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::manifest::{is_safe_file_name, Catalog, ChannelArch, MANIFEST_NAME};
use crate::record::check_name;

/// Connections served at once; each holds a small thread. More are answered
/// `503` and closed, so a flood of idle connections cannot starve boards
/// (or the process) of threads and memory.
pub const MAX_CONNECTIONS: usize = 64;

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
/// Stack of a connection thread: parsing and streaming need little.
const CONNECTION_STACK: usize = 128 * 1024;

/// How often the accept loop looks at the stop flag.
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
    accept: Option<thread::JoinHandle<()>>,
}

/// What the accept loop and every connection thread share.
struct Shared {
    catalog: Arc<Catalog>,
    stop: AtomicBool,
    /// Connections open now, against `MAX_CONNECTIONS`.
    active: AtomicUsize,
}

impl HttpServer {
    /// Binds `listen` and starts accepting connections.
    pub fn start(listen: SocketAddr, catalog: Arc<Catalog>) -> Result<Self, HttpError> {
        let bind_err = |e: io::Error| HttpError::Bind(listen, e.to_string());
        let listener = TcpListener::bind(listen).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            catalog,
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(&listener, &s))
            .map_err(bind_err)?;
        Ok(HttpServer {
            addr,
            shared,
            accept: Some(accept),
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
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if self.shared.active.load(Ordering::SeqCst) > 0 {
            log::info!("stopping with HTTP downloads still in progress");
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = PollTimeout::try_from(POLL.as_millis() as i32).unwrap_or(PollTimeout::NONE);
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                log::warn!("HTTP poll: {e}");
                thread::sleep(POLL);
                continue;
            }
        }
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("HTTP accept: {e}");
                thread::sleep(POLL);
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            busy(stream);
            continue;
        }
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                if let Err(e) = connection(stream, &s) {
                    log::debug!("HTTP connection from {peer}: {e}");
                }
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            log::warn!("HTTP: cannot start a connection thread: {e}");
        }
    }
}

/// Answers `503` without reading the request, and closes.
fn busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n",
    );
    log::debug!("HTTP: {MAX_CONNECTIONS} connections open, answered 503");
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    /// The client wants the connection kept open after this response.
    keep_alive: bool,
    range: Option<String>,
    if_none_match: Option<String>,
    /// The request announces a body, which no route accepts.
    has_body: bool,
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The connection ended or went idle before a request started: close.
    Closed,
    TooLarge,
    Malformed(&'static str),
}

/// Serves requests on one connection until it closes, errs or has served
/// `MAX_REQUESTS_PER_CONNECTION`.
fn connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let peer = stream.peer_addr().ok();
    let mut buf = Vec::with_capacity(1024);
    for n in 0..MAX_REQUESTS_PER_CONNECTION {
        let idle = if n == 0 { HEAD_TIMEOUT } else { IDLE_TIMEOUT };
        let head = match read_head(&mut stream, &mut buf, idle) {
            Ok(h) => h,
            Err(HeadError::Closed) => return Ok(()),
            Err(HeadError::TooLarge) => {
                log::info!("HTTP: request head from {peer:?} over {MAX_HEAD} bytes or {MAX_HEADERS} headers");
                return write_simple(&mut stream, 431, "request head too large\n", false, false);
            }
            Err(HeadError::Malformed(why)) => {
                log::info!("HTTP: malformed request from {peer:?}: {why}");
                return write_simple(&mut stream, 400, "bad request\n", false, false);
            }
        };
        let keep = head.keep_alive
            && !head.has_body
            && n + 1 < MAX_REQUESTS_PER_CONNECTION
            && !shared.stop.load(Ordering::SeqCst);
        respond(&mut stream, &head, keep, shared, peer)?;
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one request head into `buf` (which may already hold pipelined
/// bytes), within `first_byte` for the request to start and
/// `HEAD_TIMEOUT` for all of it. Leftover bytes stay in `buf`.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    first_byte: Duration,
) -> Result<Head, HeadError> {
    let started = Instant::now();
    let mut deadline = started + first_byte;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(buf) {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end + 4);
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HeadError::Closed);
        }
        // Never wait past the deadline, however slowly bytes trickle in.
        let _ = stream.set_read_timeout(Some(deadline - now));
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => {
                if buf.is_empty() {
                    // The request has started: the whole head is due now.
                    deadline = Instant::now() + HEAD_TIMEOUT;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Closed),
        }
    }
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
    match head.range.as_deref().map(|r| parse_range(r, size)) {
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

fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    body: &str,
    head_only: bool,
    keep: bool,
) -> io::Result<()> {
    write_reply(stream, Reply::text(status, body), head_only, keep)
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
