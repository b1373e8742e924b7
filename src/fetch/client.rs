//! The small HTTP/1.1 client downloads use: plain HTTP (every byte is
//! verified instead), one request per connection, a bounded response head
//! parsed by `httparse` (the parser the server uses). It knows nothing of
//! manifests or releases.
//!
//! No server can hold a download ([`Limits`]): connecting and the whole
//! response head each have a deadline; the body must keep arriving at a
//! minimum rate, judged over a window (so a tarpit trickling a byte now and
//! then is cut off at the window's end, however often it sends), and a body
//! whose size is known has an overall deadline derived from it.

use std::io::{self, Cursor, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::FetchError;

/// Largest response head (status line and headers) we read.
const MAX_HEAD: usize = 64 * 1024;
/// At most this many response headers.
const MAX_HEADERS: usize = 100;
/// With the minimum rate turned off, a server silent for this long is
/// given up on (the partial file stays for a resume).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server may take, for every download a client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connecting, and then the whole response head, each within this long.
    pub head_timeout: Duration,
    /// The body must arrive at no less than this many bytes per second,
    /// averaged over `window`; 0 turns the rule off (a 30 s silence still
    /// ends a download).
    pub min_rate: u64,
    /// The window the minimum rate is judged over: a server may pause
    /// within it, but not for a whole window.
    pub window: Duration,
}

impl Default for Limits {
    /// 10 s for a head; at least 64 KiB/s over every 10 s of a body: a
    /// provider slower than that for a whole window is passed over for one
    /// that is not (the partial file resumes from another provider).
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            min_rate: 64 * 1024,
            window: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The longest a body of `len` bytes may take under these limits: one
    /// window of slack plus `len` at the minimum rate.
    /// `len` comes from a manifest or a response head: saturating, so a
    /// hostile size cannot overflow it.
    pub fn deadline_for(&self, len: u64) -> Option<Duration> {
        (self.min_rate > 0).then(|| {
            self.window
                .saturating_add(Duration::from_secs((len / self.min_rate).saturating_add(1)))
        })
    }
}

/// A plain-HTTP URL split into what a request needs.
pub(super) struct Url {
    pub(super) host_port: String,
    pub(super) path: String,
}

/// Splits an `http://` URL; `https://` and anything malformed are errors.
pub(super) fn parse_url(url: &str) -> Result<Url, FetchError> {
    let bad = |m: &str| FetchError::Http(url.to_string(), m.to_string());
    if url.starts_with("https://") {
        return Err(bad(
            "https is not supported: providers serve plain HTTP and every byte is verified instead",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host_port.is_empty() || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("malformed URL"));
    }
    let has_port = if host_port.starts_with('[') {
        host_port.contains("]:")
    } else {
        host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    };
    let host_port = if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:80")
    };
    Ok(Url {
        host_port,
        path: path.to_string(),
    })
}

/// A response whose head has been read; the body follows in `reader`.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_length: Option<u64>,
    /// Start offset from `Content-Range: bytes START-END/TOTAL`.
    pub(super) range_start: Option<u64>,
    /// The body, read under the limits.
    pub(super) reader: Body,
}

/// A response body: what came with the head, then the rest of the stream,
/// read under the minimum-rate rule and the overall deadline.
pub(super) struct Body {
    buffered: Cursor<Vec<u8>>,
    stream: TcpStream,
    limits: Limits,
    window_end: Instant,
    window_bytes: u64,
    deadline: Option<Instant>,
}

impl Body {
    /// Gives the body `len` bytes' worth of time from now (see
    /// [`Limits::deadline_for`]).
    pub(super) fn expect(&mut self, len: u64) {
        // Beyond what an Instant can hold means no deadline of its own; the
        // minimum rate still bounds every window.
        self.deadline = self
            .limits
            .deadline_for(len)
            .and_then(|d| Instant::now().checked_add(d));
    }

    /// Fails once the deadline passed, or a window ended with too little.
    fn check(&mut self, now: Instant) -> io::Result<()> {
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole answer within the time its size allows",
            ));
        }
        if self.limits.min_rate > 0 && now >= self.window_end {
            let secs = self.limits.window.as_secs_f64();
            if (self.window_bytes as f64) < self.limits.min_rate as f64 * secs {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "stalled: {} bytes in {secs:.0} s, under the minimum of {} bytes/s",
                        self.window_bytes, self.limits.min_rate
                    ),
                ));
            }
            self.window_bytes = 0;
            self.window_end = now + self.limits.window;
        }
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.buffered.read(buf)?;
        if n > 0 || buf.is_empty() {
            self.window_bytes += n as u64;
            return Ok(n);
        }
        loop {
            let now = Instant::now();
            self.check(now)?;
            // Wake at the window's end (or the deadline) to judge it, even
            // if the server sends nothing at all.
            let until = match (self.limits.min_rate > 0, self.deadline) {
                (true, Some(d)) => self.window_end.min(d),
                (true, None) => self.window_end,
                (false, Some(d)) => d.min(now + IO_TIMEOUT),
                (false, None) => now + IO_TIMEOUT,
            };
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait))?;
            match self.stream.read(buf) {
                Ok(n) => {
                    self.window_bytes += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.limits.min_rate == 0 && self.deadline.is_none_or(|d| Instant::now() < d)
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("silent for {} s", IO_TIMEOUT.as_secs()),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends `GET url` (from byte `range_from` on, if given) and reads the
/// response head, each within `limits.head_timeout`.
pub(super) fn get(
    url: &str,
    range_from: Option<u64>,
    limits: &Limits,
) -> Result<Response, FetchError> {
    request(
        url,
        range_from.map(|from| format!("Range: bytes={from}-\r\n")),
        limits,
    )
}

/// Sends `GET url` for bytes `first..=last` only (`Range`), like [`get`],
/// of the file whose sha256 is `sha256` only (`If-Match`: a server whose
/// file by that name changed answers `412`).
pub(super) fn get_span(
    url: &str,
    (first, last): (u64, u64),
    sha256: &str,
    limits: &Limits,
) -> Result<Response, FetchError> {
    let headers = format!("Range: bytes={first}-{last}\r\nIf-Match: \"{sha256}\"\r\n");
    request(url, Some(headers), limits)
}

/// `extra`: whole header lines (each ending in CRLF) added to the request.
fn request(url: &str, extra: Option<String>, limits: &Limits) -> Result<Response, FetchError> {
    let u = parse_url(url)?;
    let err = |m: String| FetchError::Http(url.to_string(), m);
    let addr = u
        .host_port
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address for host".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, limits.head_timeout).map_err(|e| err(e.to_string()))?;
    stream
        .set_write_timeout(Some(limits.head_timeout))
        .map_err(|e| err(e.to_string()))?;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: phase-discover/{}\r\n",
        u.path,
        u.host_port,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(extra) = extra {
        req.push_str(&extra);
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    read_head(stream, limits).map_err(err)
}

/// Reads and parses the response head from `stream` within the head
/// deadline (a deadline, not a per-read timeout: trickling does not extend
/// it), keeping whatever of the body arrived with it.
fn read_head(mut stream: TcpStream, limits: &Limits) -> Result<Response, String> {
    let deadline = Instant::now() + limits.head_timeout;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no response head within {} s",
                limits.head_timeout.as_secs()
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            return Err("connection closed before the response head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, len)) = parse_head(&buf)? {
            let body = buf.split_off(len);
            let now = Instant::now();
            return Ok(Response {
                status: head.status,
                content_length: head.content_length,
                range_start: head.range_start,
                reader: Body {
                    buffered: Cursor::new(body),
                    stream,
                    limits: *limits,
                    window_end: now + limits.window,
                    window_bytes: 0,
                    deadline: None,
                },
            });
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
    }
}

/// What a download needs from a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    range_start: Option<u64>,
}

/// Parses a response head from the start of `buf`: `None` while it is
/// incomplete, else the head and its length in bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("more than {MAX_HEADERS} headers"))
        }
        Err(e) => {
            let first = buf.split(|b| *b == b'\n').next().unwrap_or_default();
            let first = String::from_utf8_lossy(&first[..first.len().min(80)]).into_owned();
            return Err(format!("not an HTTP response ({e}): {first:?}"));
        }
    };
    let status = resp.code.ok_or("response without a status code")?;
    let mut head = Head {
        status,
        content_length: None,
        range_start: None,
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| format!("header {} is not UTF-8", h.name))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| "bad Content-Length".to_string())?;
            if head.content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers".into());
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("content-range") {
            head.range_start = value
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err("chunked responses are not supported".into());
        }
    }
    Ok(Some((head, len)))
}

/// Downloads a small body (a manifest, a signature) whole, at most `max`
/// bytes, under `limits`. `Ok(None)` on 404.
pub(super) fn get_small(
    url: &str,
    max: u64,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, FetchError> {
    let mut resp = get(url, None, limits)?;
    match resp.status {
        200 => {}
        404 => return Ok(None),
        status => {
            return Err(FetchError::Http(
                url.to_string(),
                format!("status {status}"),
            ))
        }
    }
    resp.reader
        .expect(resp.content_length.unwrap_or(max).min(max));
    let mut body = Vec::new();
    (&mut resp.reader)
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Http(url.to_string(), e.to_string()))?;
    if body.len() as u64 > max {
        return Err(FetchError::Mismatch(format!(
            "{url} is larger than the {max} bytes it can be"
        )));
    }
    Ok(Some(body))
}

/// GETs a small text body (e.g. `/status.json`), at most `max` bytes,
/// under the default limits.
pub fn get_text(url: &str, max: u64) -> Result<Vec<u8>, FetchError> {
    get_small(url, max, &Limits::default())?
        .ok_or_else(|| FetchError::Http(url.to_string(), "status 404".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_what_a_download_needs() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\
                    Content-Range: bytes 10-14/15\r\n\r\nhello";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 206,
                content_length: Some(5),
                range_start: Some(10)
            }
        );
        assert_eq!(&raw[len..], b"hello");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
    }

    /// A server on 127.0.0.1 that reads each request and answers it with
    /// `serve` (a server that closes with the request unread would reset
    /// the connection).
    fn server(serve: fn(TcpStream)) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                        req.push(b[0]);
                    }
                    serve(s)
                });
            }
        });
        format!("http://{addr}/x")
    }

    fn quick() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(1),
            min_rate: 1000,
            window: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_server_that_never_answers_costs_the_head_deadline() {
        let url = server(|s| {
            std::thread::sleep(Duration::from_secs(30));
            drop(s);
        });
        let start = Instant::now();
        let e = get(&url, None, &quick()).err().unwrap().to_string();
        assert!(e.contains("no response head within 1 s"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_trickling_body_is_cut_off_at_the_end_of_a_window() {
        let url = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            // A byte every 100 ms: never silent, far too slow.
            for _ in 0..300 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let start = Instant::now();
        let mut resp = get(&url, None, &quick()).unwrap();
        let mut body = Vec::new();
        let e = resp.reader.read_to_end(&mut body).unwrap_err().to_string();
        assert!(e.contains("stalled"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(body.len() < 100, "{}", body.len());
    }

    #[test]
    fn a_steady_body_is_read_whole_and_its_size_bounds_its_time() {
        let url = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
            for _ in 0..5 {
                let _ = s.write_all(&[b'y'; 1000]);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut resp = get(&url, None, &quick()).unwrap();
        resp.reader.expect(5000);
        let mut body = Vec::new();
        resp.reader.read_to_end(&mut body).unwrap();
        assert_eq!(body.len(), 5000);
        // 5000 bytes at 1000 B/s: a window of slack plus six seconds.
        assert_eq!(quick().deadline_for(5000), Some(Duration::from_secs(7)));
        // A hostile size (a manifest may list any u64) neither overflows
        // nor panics.
        assert!(quick().deadline_for(u64::MAX).is_some());
        let mut again = get(&url, None, &quick()).unwrap();
        again.reader.expect(u64::MAX);
        let off = Limits {
            min_rate: 0,
            ..quick()
        };
        assert_eq!(off.deadline_for(5000), None);
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            format!("more than {MAX_HEADERS} headers")
        );
    }
}
